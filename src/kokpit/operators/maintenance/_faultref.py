"""What the flows read of a NodeFault (``kokpit.api.fault``, the event center's kind): names only, so the flow
controller depends on the wire shape (``spec.nodeName``, ``spec.type``, ``spec.component``; ``status.state``,
``status.flow``, ``status.lastSeen``, ``status.maintenanceFlow``, ``status.resolution``, condition
``Accepted``), not on the event center's code."""

from __future__ import annotations

from typing import Final

from kokpit.api.machine import GROUP, VERSION
from kokpit.client import Kind

__all__ = ["ACCEPTED", "ACTIVE", "NODE_FAULT", "OBSERVE_ONLY", "RESOLVED"]

NODE_FAULT: Final = Kind(GROUP, VERSION, "NodeFault", "nodefaults", namespaced=False)
ACTIVE: Final = "Active"
RESOLVED: Final = "Resolved"
ACCEPTED: Final = "Accepted"
OBSERVE_ONLY: Final = "none"  # a fault type whose flow is "none" is recorded, never repaired
