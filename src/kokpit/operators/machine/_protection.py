"""MachinePackageVersion in-use protection: a package version a Machine asks for or still runs cannot vanish.

Without it, deleting a MachinePackageVersion that Machines use leaves them unable to repair, reinstall or roll
back to it.  The machine operator keeps :data:`kokpit.runtime.protection.IN_USE_FINALIZER` on every
MachinePackageVersion; a deletion waits (condition ``Deleting``, reason InUse, naming the Machines; a Warning
Event) until no Machine lists it in ``spec.packages`` nor reports a component installed from it.
"""

from __future__ import annotations

from typing import Any

from kokpit._lib.clock import Clock, RealClock
from kokpit.client import CanPatch
from kokpit.operators.machine._reconciler import MPV
from kokpit.runtime import EventRecorder, Request, Result, Store
from kokpit.runtime.protection import protect

__all__ = ["MpvProtection", "installed_from"]

Obj = dict[str, Any]


def installed_from(machine: Obj) -> list[str]:
    """The MachinePackageVersions a Machine's node still runs components from (its status rows)."""
    rows = (machine.get("status") or {}).get("components") or []
    return sorted({str(r["packageVersion"]) for r in rows if r.get("packageVersion")})


class MpvProtection:
    """Reconciles one MachinePackageVersion's finalizer and Deleting condition against its users."""

    def __init__(self, client: CanPatch, mpvs: Store, machines: Store, recorder: EventRecorder,
                 clock: Clock | None = None) -> None:
        self.client = client
        self.mpvs = mpvs
        self.machines = machines
        self.recorder = recorder
        self.clock: Clock = clock or RealClock()

    def users(self, name: str) -> list[str]:
        found = {str(m["metadata"]["name"]) for m in self.machines.by_index("mpv", name)}
        found |= {str(m["metadata"]["name"]) for m in self.machines.by_index("mpv-installed", name)}
        return sorted(found)

    async def reconcile(self, req: Request) -> Result | None:
        obj = self.mpvs.get_by_name(req.name)
        if obj is None:
            return None
        await protect(self.client, MPV, obj, self.users(req.name), user_kind="Machines", now=self.clock.now(),
                      warn=lambda o, reason, msg: self.recorder.event(o, "Warning", reason, msg))
        return None
