"""Simulated repairs of whole hosts: component restart, reboot and OS reinstall (maintenance flows, issue 15).

A repair is keyed by the caller's ``requestId`` and recorded in the host's durable row *before* the driver
answers, so asking again with the same id (a maintenance flow restarted after kill -9) reports the repair
already under way or done and never starts a second one.  Like a BMC, a repair reaches a hung or
hardware-faulted host (it is how such hosts are repaired); while it runs the host is down (NotReady,
unreachable).  Effects when it completes:

- ``restart-component``: the component runs again (fails if it is not installed);
- ``reboot``: a hang is gone, stopped components run again, work frozen by the hang resumes; a hardware fault
  stays (a reboot does not replace a disk);
- ``reinstall``: a fresh OS: every component is gone (the machine operator installs each MachinePackageVersion
  again) and so is a hang; a hardware fault stays.

Injected faults the host reports (``kokpit simulator fault --type kernel-deadlock``...) go the way they would
on a real machine: a reboot ends the system-level ones a fresh boot clears (kernel deadlock, read-only
remount, clock skew), a reinstall those and a corrupted OS; hardware faults (disk, memory, NIC, GPU) and a
full disk stay until ``recover`` (someone replaced the part) — so a flow that reboots a broken disk times out
and escalates, as it must.
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING, Any

from kokpit.nodes.driver import RepairKind, RepairState, RunState

if TYPE_CHECKING:
    from kokpit.simulator._hosts import Host, HostBook

__all__ = ["REBOOT_CLEARS", "REINSTALL_CLEARS", "REPAIRS_KEPT", "complete_repair", "repair_state", "start_repair"]

REPAIRS_KEPT = 32  # repair records per host (the newest)
_VERB = {RepairKind.RESTART_COMPONENT: "restart", RepairKind.REBOOT: "reboot", RepairKind.REINSTALL: "reinstall"}
REBOOT_CLEARS = frozenset({"kernel-deadlock", "readonly-filesystem", "clock-skew"})
"""Reported (injected) fault types a reboot ends."""
REINSTALL_CLEARS = REBOOT_CLEARS | {"os-corrupted"}
"""Reported (injected) fault types a reinstall ends."""


def repair_state(rec: dict[str, Any]) -> RepairState:
    return RepairState(request_id=str(rec["requestId"]), action=str(rec["action"]), state=str(rec["state"]),
                       message=str(rec.get("message") or ""), operation_id=str(rec.get("operationId") or ""),
                       started_at=str(rec.get("startedAt") or ""), finished_at=str(rec.get("finishedAt") or ""))


def start_repair(book: HostBook, node: str, action: str, request_id: str, component: str = "",
                 reason: str = "") -> RepairState:
    """Start a repair, or report the one already known under ``request_id`` (idempotent)."""
    from kokpit.simulator._hosts import FaultError, _wall_iso

    host = book.host(node)
    if not request_id:
        raise FaultError("requestId is required (the idempotency key of a repair)")
    known = host.repairs.get(request_id)
    if known is not None:
        return repair_state(known)
    try:
        kind = RepairKind(action)
    except ValueError:
        raise FaultError(f"unknown repair {action!r}; expected one of {', '.join(k.value for k in RepairKind)}"
                         ) from None
    if kind == RepairKind.RESTART_COMPONENT and not component:
        raise FaultError("restart-component needs a component")
    if host.repairing:
        raise FaultError(f"node {node} is already being repaired ({host.repairing})")
    now = book.wall()
    at = _wall_iso(now)
    host.repair_seq += 1
    rec: dict[str, Any] = {"requestId": request_id, "action": kind.value, "component": component, "reason": reason,
                           "state": "Running", "operationId": f"{node}/{_VERB[kind]}-{host.repair_seq}",
                           "startedAt": at, "finishedAt": "", "deadline": now + book.repair_seconds,
                           "message": f"{_VERB[kind]} started" + (f" ({component})" if component else "")}
    host.repairs[request_id] = rec
    while len(host.repairs) > REPAIRS_KEPT:
        host.repairs.pop(next(iter(host.repairs)))
    host.repairing = request_id
    host.record(f"{_VERB[kind]}-started", component, request_id, at)
    book.event(node, "Normal", "RepairStarted", f"{rec['message']} (request {request_id})")
    if book.repair_seconds <= 0:
        complete_repair(book, host, request_id)
    else:
        heapq.heappush(book.repair_due, (rec["deadline"], node, request_id))
        book.wake()
    book.changed(node)
    return repair_state(host.repairs[request_id])


def complete_repair(book: HostBook, host: Host, request_id: str) -> None:
    """Apply a repair's effect (see the module docstring) and record its outcome."""
    from kokpit.simulator._hosts import _wall_iso

    rec = host.repairs.get(request_id)
    if rec is None or rec["state"] != "Running":
        return
    kind = RepairKind(rec["action"])
    at = _wall_iso(book.wall())
    state, message = "Succeeded", ""
    if kind == RepairKind.RESTART_COMPONENT:
        c = host.components.get(str(rec["component"]))
        if c is None or not c.installed:
            state, message = "Failed", f"{rec['component']} is not installed"
        else:
            c.run_state, c.message, c.last_transition = RunState.RUNNING, "restarted", at
            message = f"{c.name} {c.installed} restarted"
    else:
        host.hung = False
        book.unfreeze(host.name)
        if kind == RepairKind.REINSTALL:
            host.components.clear()
            message = "operating system reinstalled: no components installed"
        else:
            for c in host.components.values():
                if c.installed and not c.action and c.run_state == RunState.STOPPED:
                    c.run_state, c.message, c.last_transition = RunState.RUNNING, "", at
            message = "rebooted"
        gone = sorted(t for t in host.reported
                      if t in (REINSTALL_CLEARS if kind == RepairKind.REINSTALL else REBOOT_CLEARS))
        for t in gone:
            del host.reported[t]
        if gone:
            message += f"; {', '.join(gone)} gone"
        if host.hardware:
            message += f"; the hardware fault remains ({host.hardware})"
    rec.update(state=state, message=message, finishedAt=at)
    if host.repairing == request_id:
        host.repairing = ""
    host.record(f"{_VERB[kind]}-{'done' if state == 'Succeeded' else 'failed'}", str(rec["component"]),
                request_id, at)
    book.event(host.name, "Normal" if state == "Succeeded" else "Warning",
               "RepairSucceeded" if state == "Succeeded" else "RepairFailed", f"{message} (request {request_id})")
    book.changed(host.name)
