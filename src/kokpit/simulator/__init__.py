"""kokpit.simulator: simulated hosts for embedded fleets, tests and scale measurements.

One process registers thousands of Nodes, heartbeats them like kubelet, runs their pods, installs
components when the machine operator asks through the node driver API, and fails on demand (fault API).
It reaches the API server only through :mod:`kokpit.client` and :mod:`kokpit.runtime`.
"""

from kokpit.simulator._heartbeats import LEASE_NAMESPACE, SIMULATED_LABEL
from kokpit.simulator._hosts import FAULT_TYPES, REPORTED_FAULTS, FailRule, HostBook, HostDB
from kokpit.simulator._simulator import Simulator, SimulatorOptions, node_names, run, serve

__all__ = [
    "FAULT_TYPES",
    "LEASE_NAMESPACE",
    "REPORTED_FAULTS",
    "SIMULATED_LABEL",
    "FailRule",
    "HostBook",
    "HostDB",
    "Simulator",
    "SimulatorOptions",
    "node_names",
    "run",
    "serve",
]
