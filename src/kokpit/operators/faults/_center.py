"""The event center: what happens to a NodeFault once reported.

One level-triggered reconcile per NodeFault, reading only caches (NodeFaults, the FaultType catalog, Nodes,
Machines) and writing the status back with the resourceVersion it read — a reporter's concurrent report wins
the race and the center looks again (nothing in memory decides anything):

1. **accepted**: the type is in the catalog, the node exists, a per-component type names its component;
   otherwise condition ``Accepted=False`` naming the field, state ``Invalid`` and a Warning Event;
2. the catalog's **severity, category and flow** are copied into the status (consumers need no lookup);
3. **announce** a new episode once (``observedEpisode``): a Warning Event on the Node and the fault;
4. **expiry**: an Active fault whose every source is older than its TTL turns ``Expired``; ``expiresAt``
   says when that will happen;
5. **possibly caused by**: an Active fault on a node a change in flight touches (a Machine upgrading a
   component; a granted risk-center Permit naming the node, when the meta cluster is known) names it;
6. **retention**: a Resolved, Expired or Invalid fault is deleted ``retention`` after it ended;
7. the **labels** (severity, state) follow the status, so watches with label selectors see the state.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kokpit._lib.clock import Clock, RealClock, format_micro_time, parse_time_or_none
from kokpit.api.fault import (
    COMPONENT_LABEL,
    MANUAL_REQUIRED_LABEL,
    SEVERITY_LABEL,
    STATE_LABEL,
    FaultConditionType,
    FaultReason,
    FaultState,
    fault_labels,
)
from kokpit.client import ApiError, ConflictError, NotFoundError
from kokpit.operators.faults._metrics import FaultMetrics
from kokpit.operators.faults.catalog import Catalog
from kokpit.runtime import EventRecorder, Request, Result, Store, find_condition, set_condition
from kokpit.runtime.faultreports import NODEFAULT

__all__ = ["CenterOptions", "EventCenter", "machine_causes"]

log = logging.getLogger("kokpit.operators.faults.center")

Obj = dict[str, Any]
_HISTORY = (FaultState.RESOLVED, FaultState.EXPIRED, FaultState.INVALID)
_CHANGING = ("Installing", "Upgrading", "Uninstalling")


@dataclass
class CenterOptions:
    retention: float = 24 * 3600.0  # seconds a Resolved/Expired/Invalid fault is kept
    cause_window: float = 600.0  # a component changed this recently still counts as "in flight"


_t = parse_time_or_none  # tolerant: these times come from reports and other writers


def machine_causes(machine: Obj | None, now: dt.datetime, window: float) -> list[Obj]:
    """Changes in flight on a Machine: components being installed, upgraded or removed, or changed within
    ``window`` seconds and not yet health-checked at their new version."""
    if not machine:
        return []
    out = []
    name = str((machine.get("metadata") or {}).get("name") or "")
    for c in (machine.get("status") or {}).get("components") or []:
        state = str(c.get("installState") or "")
        changed = _t(c.get("lastTransitionTime"))
        recent = changed is not None and (now - changed).total_seconds() <= window
        unchecked = c.get("version") and c.get("healthCheckedVersion") != c.get("version")
        if state in _CHANGING or (recent and unchecked):
            verb = state.lower() if state in _CHANGING else "changed to"
            out.append({"kind": "Machine", "name": name, "operation": "component-upgrade",
                        "detail": f"{c.get('name')} {verb} {c.get('version') or ''}".strip()[:512],
                        "since": format_micro_time(changed or now)})
    return out


@dataclass
class EventCenter:
    """The NodeFault reconciler (see the module docstring)."""

    client: Any
    faults: Store
    catalog: Callable[[], Catalog]
    nodes: Store
    machines: Store
    recorder: EventRecorder
    metrics: FaultMetrics
    options: CenterOptions = field(default_factory=CenterOptions)
    clock: Clock = field(default_factory=RealClock)
    permit_causes: Callable[[str], list[Obj]] | None = None  # node → granted Permits touching it (meta)

    def _machine_of(self, node: str) -> Obj | None:
        found = self.machines.by_index("node", node)  # FaultCenter indexes Machines by spec.nodeName
        return found[0] if found else None

    async def reconcile(self, req: Request) -> Result | None:
        raw = self.faults.get_by_name(req.name)
        if raw is None or (raw.get("metadata") or {}).get("deletionTimestamp"):
            return None
        status: Obj = dict(raw.get("status") or {})
        state = status.get("state")
        now = self.clock.now()
        if not state:  # created; the reporter's first status write is on its way — or it died in between
            created = _t((raw.get("metadata") or {}).get("creationTimestamp"))
            left = self.options.retention - ((now - created).total_seconds() if created else 0.0)
            if left > 0:
                return Result(requeue_after=left + 0.05)
            with contextlib.suppress(NotFoundError, ConflictError):
                await self.client.delete(NODEFAULT, req.name,
                                         precondition_resource_version=raw["metadata"]["resourceVersion"])
            return None
        ts = format_micro_time(now)
        spec = raw.get("spec") or {}
        node_name, ftype, component = str(spec.get("nodeName")), str(spec.get("type")), str(spec.get("component") or "")
        cat = self.catalog()
        conds: list[Obj] = [dict(c) for c in status.get("conditions") or []]
        events: list[tuple[Obj | None, str, str, str]] = []
        requeue: list[float] = []

        # 1. accepted
        ft = cat.types.get(ftype)
        node = self.nodes.get_by_name(node_name)
        if ft is None:
            reason, msg = FaultReason.UNKNOWN_FAULT_TYPE, (f"spec.type: fault type {ftype!r} is not in the catalog "
                                                           f"(kubectl get faulttypes)")
        elif node is None:
            reason, msg = FaultReason.NODE_NOT_FOUND, f"spec.nodeName: node {node_name!r} does not exist"
        elif ft.spec.per_component and not component:
            reason, msg = FaultReason.COMPONENT_REQUIRED, (f"spec.component: fault type {ftype} is per component: "
                                                           "name the component")
        else:
            reason, msg = FaultReason.ACCEPTED, "the node exists and the fault type is in the catalog"
        accepted = reason == FaultReason.ACCEPTED
        # read before set_condition, which updates the condition in place
        old_reason = (find_condition(conds, FaultConditionType.ACCEPTED) or {}).get("reason")
        set_condition(conds, FaultConditionType.ACCEPTED, accepted, reason, msg, now=now,
                      observed_generation=(raw.get("metadata") or {}).get("generation"))
        if not accepted and state == FaultState.ACTIVE:
            status["state"], status["endedAt"] = FaultState.INVALID.value, ts
            if old_reason != reason:
                events.append((raw, "Warning", reason, msg))
        elif accepted and state == FaultState.INVALID and not status.get("resolution"):
            status["state"] = FaultState.ACTIVE.value  # the node registered / the type was added: look again
            status.pop("endedAt", None)
        state = status["state"]

        # 2. the catalog's view of the type
        if ft is not None:
            for key, value in (("severity", str(ft.spec.severity)), ("category", str(ft.spec.category)),
                               ("flow", ft.spec.flow)):
                status[key] = value

        # 3. announce a new episode
        if state == FaultState.ACTIVE and accepted and status.get("observedEpisode") != status.get("firstSeen"):
            status["observedEpisode"] = status.get("firstSeen") or ts
            text = (f"{ftype}{'/' + component if component else ''} ({status.get('severity', '?')}) reported by "
                    f"{status.get('reporter', '?')}: {status.get('message', '')}".strip())[:1024]
            events.append((raw, "Warning", FaultReason.REPORTED, text))
            events.append((node, "Warning", FaultReason.REPORTED, text))
            first = _t(status.get("firstSeen"))
            self.metrics.episodes.labels(ftype, str(status.get("severity", ""))).inc()
            if first is not None:
                self.metrics.announce_latency.observe(max(0.0, (now - first).total_seconds()))

        # 4. expiry: from the sources' lastSeen, never from a timer
        if state == FaultState.ACTIVE:
            default_ttl = cat.ttl.get(ftype, 300.0)
            deadlines = [t + dt.timedelta(seconds=float(s.get("ttlSeconds") or default_ttl))
                         for s in status.get("sources") or [] if not s.get("cleared")
                         if (t := _t(s.get("lastSeen"))) is not None]
            deadline = max(deadlines) if deadlines else now
            if now >= deadline:
                status["state"], status["endedAt"] = FaultState.EXPIRED.value, ts
                status.pop("expiresAt", None)
                events.append((raw, "Normal", FaultReason.EXPIRED,
                               f"no report within the TTL since {status.get('lastSeen')}: the fault expired"))
                self.metrics.expired.labels(ftype).inc()
            else:
                status["expiresAt"] = format_micro_time(deadline)
                requeue.append((deadline - now).total_seconds() + 0.05)
        state = status["state"]

        # 5. possibly caused by a change in flight (sticky for the episode: it is evidence)
        if state == FaultState.ACTIVE and accepted:
            causes = machine_causes(self._machine_of(node_name), now, self.options.cause_window)
            if self.permit_causes is not None:
                causes += self.permit_causes(node_name)
            have = list(status.get("possiblyCausedBy") or [])
            keys = {(c.get("kind"), c.get("namespace", ""), c.get("name")) for c in have}
            new = [c for c in causes if (c["kind"], c.get("namespace", ""), c["name"]) not in keys]
            if new:
                status["possiblyCausedBy"] = (have + new)[:32]
                desc = "; ".join(f"{c['kind']} {c['name']}: {c.get('detail') or c.get('operation', '')}"
                                 for c in new)
                set_condition(conds, FaultConditionType.CAUSE_SUSPECTED, True, FaultReason.CHANGE_IN_FLIGHT,
                              desc[:1024], now=now)
                events.append((raw, "Warning", FaultReason.CHANGE_IN_FLIGHT,
                               f"possibly caused by a change in flight: {desc}"[:1024]))

        # 6. retention
        if state in _HISTORY:
            ended = _t(status.get("endedAt")) or _t(status.get("lastSeen")) or now
            if not status.get("endedAt"):
                status["endedAt"] = format_micro_time(ended)
            left = (ended - now).total_seconds() + self.options.retention
            if left <= 0:
                try:
                    await self.client.delete(NODEFAULT, req.name,
                                             precondition_resource_version=raw["metadata"]["resourceVersion"])
                    self.metrics.deleted.labels(ftype).inc()
                except NotFoundError:
                    pass
                except ConflictError:
                    return Result(requeue=True)  # reported again meanwhile: a new episode, look again
                return None
            requeue.append(left + 0.05)

        status["conditions"] = conds
        # 7. write: status (guarded by resourceVersion), then the labels, then the Events
        result = Result(requeue_after=min(requeue)) if requeue else None
        if status != (raw.get("status") or {}):
            body = {"apiVersion": NODEFAULT.api_version, "kind": NODEFAULT.kind,
                    "metadata": {"name": req.name, "resourceVersion": raw["metadata"]["resourceVersion"]},
                    "spec": spec, "status": status}
            try:
                await self.client.update_status(NODEFAULT, body)
            except ConflictError:
                return Result(requeue=True)  # a report came in: decide again from it
            except NotFoundError:
                return None
        want = fault_labels(node_name, ftype, component, severity=str(status.get("severity") or ""),
                            state=str(status.get("state") or ""),
                            manual_required=bool(status.get("manualRequired")) and state == FaultState.ACTIVE)
        have_labels = (raw.get("metadata") or {}).get("labels") or {}
        delta: dict[str, str | None] = {k: v for k, v in want.items() if have_labels.get(k) != v}
        for k in (SEVERITY_LABEL, STATE_LABEL, COMPONENT_LABEL, MANUAL_REQUIRED_LABEL):
            if k in have_labels and k not in want:
                delta[k] = None
        if delta:
            try:
                await self.client.patch(NODEFAULT, req.name, {"metadata": {"labels": delta}})
            except NotFoundError:
                return None
            except ApiError as e:
                log.warning("labels of %s: %s", req.name, e)
        for obj, type_, reason, message in events:
            if obj is not None:
                await self.recorder.event(obj, type_, reason, message)
        return result
