"""MachinePackageVersion in-use protection: a package version a Machine asks for or still runs cannot vanish.

Without it, deleting a MachinePackageVersion that Machines use leaves them unable to repair, reinstall or roll
back to it.  The machine operator keeps :data:`kokpit.runtime.protection.IN_USE_FINALIZER` on every
MachinePackageVersion; a deletion waits (condition ``Deleting``, reason InUse, naming the Machines; a Warning
Event) until no Machine lists it in ``spec.packages`` nor reports a component installed from it.
"""

from __future__ import annotations

from typing import Any

from kokpit.runtime import Store

__all__ = ["installed_from", "machine_mpvs", "mpv_users"]

Obj = dict[str, Any]


def installed_from(machine: Obj) -> list[str]:
    """The MachinePackageVersions a Machine's node still runs components from (its status rows)."""
    rows = (machine.get("status") or {}).get("components") or []
    return sorted({str(r["packageVersion"]) for r in rows if r.get("packageVersion")})


def machine_mpvs(machine: Obj) -> list[str]:
    """Every MachinePackageVersion a Machine uses: asked for in spec, or still installed."""
    return sorted(set((machine.get("spec") or {}).get("packages") or []) | set(installed_from(machine)))


def mpv_users(machines: Store, name: str) -> list[str]:
    """The Machines using MachinePackageVersion ``name`` (machines indexed by ``mpv`` and ``mpv-installed``)."""
    found = {str(m["metadata"]["name"]) for m in machines.by_index("mpv", name)}
    found |= {str(m["metadata"]["name"]) for m in machines.by_index("mpv-installed", name)}
    return sorted(found)
