"""kokpit.operators.faults: node fault discovery and the event center (issue 15).

The fault catalog (FaultTypes, defaults in :mod:`.catalog`), the event center that keeps NodeFaults
(acceptance, expiry, retention, possible causes), the fault detector (node-problem-detector conditions and
Events, Lease, Ready, managed components), and FaultSubscription webhooks — run inside ``kokpit
machine-operator`` (``--faults``, on by default) through :class:`FaultCenter`.
"""

from kokpit.operators.faults.catalog import DEFAULT_TYPES, Catalog, install_defaults
from kokpit.operators.faults.operator import FaultCenter, FaultOptions

__all__ = ["DEFAULT_TYPES", "Catalog", "FaultCenter", "FaultOptions", "install_defaults"]
