"""``kokpit node-agent``: the node driver for real Linux hosts.

The machine operator pushes work to it over mutual TLS (the node driver protocol of :mod:`kokpit.nodes`, the
same routes the simulator serves); the agent installs, upgrades, rolls back and removes components with the
host's package manager (apt/dpkg, dnf/rpm) or scripts, writes config files and sysctls, runs health checks,
and reports what it sees — component state from the host itself, faults as Node conditions and Events,
Prometheus metrics.  It never lists or watches the API server.
"""

from kokpit.agent._agent import Agent, AgentApp, AgentConfig
from kokpit.agent._components import ComponentHost
from kokpit.agent._faults import FAULT_TYPES, FaultChecker, NodeReporter
from kokpit.agent._host import HostError, HostRoot
from kokpit.agent._run import AgentOptions, run_agent

__all__ = [
    "FAULT_TYPES",
    "Agent",
    "AgentApp",
    "AgentConfig",
    "AgentOptions",
    "ComponentHost",
    "FaultChecker",
    "HostError",
    "HostRoot",
    "NodeReporter",
    "run_agent",
]
