"""The component walk: every control-plane Pod of the target release brought to run it, one step at a time.

Components go in release order (API server first); within the walk at most one step is taken — a Pod
created or an outdated one replaced — and everything after it waits for it to be healthy, so a release
never has two components changing at once.  A broken Pod is replaced with backoff (counted in the
Cluster's ``status.failures``, so a restart resumes the same backoff and Degraded state); a release step
that stays broken past the release timeout turns the release back.  The walk only acts and reports; the
conditions are written by :mod:`kokpit.operators.cluster._status`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from kokpit.api.cluster import (
    APISERVER_COMPONENT,
    MACHINE_OPERATOR_COMPONENT,
    SIMULATOR_COMPONENT,
    ClusterComponentStatus,
    ClusterSpec,
)
from kokpit.api.risk import OperationType, PermitOutcome
from kokpit.client import POD, AlreadyExistsError, NotFoundError, ObjectClient
from kokpit.operators.cluster._options import OperatorOptions
from kokpit.operators.cluster._plan import (
    COMPONENT_LABEL,
    HASH_ANNOTATION,
    RESTARTED_ANNOTATION,
    VERSION_LABEL,
    Names,
    PodHealth,
    Wiring,
    component_order,
    desired_pod,
    pod_health,
    pod_ready,
    restarted,
)
from kokpit.operators.cluster._probes import Probe
from kokpit.runtime import FailureMemory

__all__ = ["POD_FAILURE", "PROBE_FAILURE", "VERSION_FAILURE", "Walk", "Walker", "observe_only", "replicas_of"]

Obj = dict[str, Any]

POD_FAILURE = "pod/"  # failure records of Pods replaced because they broke: pod/<pod name>
PROBE_FAILURE = "probe/apiserver"  # since when the business API server fails its probe
VERSION_FAILURE = "probe/apiserver-version"  # since when it answers, but with another version than the release's


@dataclass
class Walk:
    """What the component walk found and did."""

    rows: list[Obj] = field(default_factory=list)
    converged: bool = True  # every component of the target release current and healthy
    busy: bool = False  # something in flight: poll soon
    all_ready: bool = True  # every component has its replicas ready (whatever release)
    rollback: str = ""  # why the release step failed (the operator turns back)
    degraded: list[str] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    repairs: list[str] = field(default_factory=list)  # broken Pods replaced: a person should see (Warning)
    risk: tuple[str, str] | None = None  # (RiskQueued | RiskDenied | RiskPending, why) while a step waits for it


def replicas_of(comp: Obj, spec: ClusterSpec, driver: bool) -> int:
    name = str(comp.get("name"))
    if name == APISERVER_COMPONENT:
        return spec.control_plane.replicas
    if name == SIMULATOR_COMPONENT and spec.simulation.nodes == 0:
        return 0
    if name == MACHINE_OPERATOR_COMPONENT and not driver:
        return 0  # no node driver to reach (today only the simulator is one)
    return int(comp.get("replicas", 1))


def _labels(p: Obj) -> dict[str, str]:
    return dict((p.get("metadata") or {}).get("labels") or {})


def _pod_hash(pod: Obj | None) -> str | None:
    return ((pod or {}).get("metadata", {}).get("annotations") or {}).get(HASH_ANNOTATION)


def _restart_of(pod: Obj | None) -> str:
    return str(((pod or {}).get("metadata", {}).get("annotations") or {}).get(RESTARTED_ANNOTATION) or "")


def _versions(pods: list[Obj]) -> str:
    return ",".join(sorted({_labels(p).get(VERSION_LABEL, "") for p in pods} - {""}))


def _restarts(pods: list[Obj]) -> int:
    return sum(int(c.get("restartCount") or 0) for p in pods
               for c in (p.get("status") or {}).get("containerStatuses") or [])


def _operation(view: Any) -> str:
    return str(((view.obj.get("spec") or {}).get("operation")) or "")


def observe_only(pods: list[Obj], target: Obj, spec: ClusterSpec) -> Walk:
    """A paused Cluster: its rows say what runs; nothing is done."""
    walk = Walk(converged=False)
    for comp in component_order(target):
        name = str(comp["name"])
        mine = [p for p in pods if _labels(p).get(COMPONENT_LABEL) == name]
        ready = [p for p in mine if pod_ready(p)]
        want = replicas_of(comp, spec, True)
        walk.all_ready &= len(ready) >= want
        walk.rows.append(ClusterComponentStatus(
            name=name, version=_versions(mine), replicas=want, ready_replicas=len(ready),
            restarts=_restarts(mine), healthy=len(ready) >= want, message="paused").to_wire())
    return walk


@dataclass
class _Component:
    """The walk's view of one component: its Pods, how many are ready and healthy, what to say about it."""

    name: str
    replicas: int
    mine: list[Obj]
    stale: set[str]
    restart: str = ""  # spec.controlPlane.restartedAt of this component ("" when none was asked)
    ready: int = 0
    healthy: int = 0
    messages: list[str] = field(default_factory=list)


class Walker:
    """One walk over a Cluster's components (built per reconcile: it carries that reconcile's view)."""

    def __init__(self, client: ObjectClient, opts: OperatorOptions, *, names: Names, obj: Obj, spec: ClusterSpec,
                 target: Obj, wiring: Wiring, pods: list[Obj], probe: Probe, memory: FailureMemory,
                 now: dt.datetime, rendered: dict[str, list[Obj]] | None = None,
                 skip: frozenset[str] = frozenset(), may_act: bool = True) -> None:
        self.client, self.opts = client, opts
        self.names, self.obj, self.spec, self.target, self.wiring = names, obj, spec, target, wiring
        self.pods = {str(p["metadata"]["name"]): p for p in pods}
        self.probe, self.memory, self.now = probe, memory, now
        self.target_name = str(target["metadata"]["name"])
        status = obj.get("status") or {}
        self.last_good = status.get("lastGoodPackageVersion")
        self.releasing = bool(self.last_good) and self.target_name != self.last_good
        self.timeout = opts.release_timeout if self.releasing else opts.unhealthy_timeout
        self.kv = str((target.get("spec") or {}).get("kubernetesVersion"))
        self.may_act = may_act  # one step at a time, in order: a component waits for the ones before it
        # the Upstream flavor: the wanted Pods per component, rendered by _upstreamops (None: kokpit's own)
        self.rendered = rendered
        self.skip = skip  # components walked elsewhere (the Upstream flavor's etcd members)
        self.wanted: set[str] = set()
        self.walk = Walk()

    async def run(self, driver: bool) -> Walk:
        for comp in component_order(self.target):
            if str(comp.get("name")) in self.skip:
                self.wanted |= {n for n, p in self.pods.items() if _labels(p).get(COMPONENT_LABEL) == comp["name"]}
                continue
            if not await self._component(comp, driver):
                return self.walk  # the release turns back: nothing after this runs
        if self.walk.converged:
            await self._remove_pods_outside_the_release()
        return self.walk

    async def _component(self, comp: Obj, driver: bool) -> bool:
        name = str(comp["name"])
        mine = [p for p in self.pods.values() if _labels(p).get(COMPONENT_LABEL) == name]
        wants: dict[str, Obj | None]
        if self.rendered is not None:
            wants = {str(p["metadata"]["name"]): p for p in self.rendered.get(name, [])}
            replicas = len(wants)
        else:
            replicas = replicas_of(comp, self.spec, driver)
            wants = {self.names.pod(name, i): desired_pod(self.names, self.target, comp, i, self.wiring, self.obj)
                     for i in range(replicas)}
        stamp = self.spec.control_plane.restarted_at.get(name, "")
        if stamp:  # a restart asked (spec.controlPlane.restartedAt): part of what every replica should be
            wants = {n: restarted(w, stamp) if w is not None else None for n, w in wants.items()}
        # Pods of this component that run something else than wanted (an older release, a dropped replica,
        # a restart asked since it started)
        stale = {str(p["metadata"]["name"]) for p in mine
                 if _pod_hash(p) != _pod_hash(wants.get(str(p["metadata"]["name"])))}
        c = _Component(name, replicas, mine, stale, stamp)
        for pod_name, want in wants.items():
            self.wanted.add(pod_name)
            if not await self._pod(c, pod_name, want):
                return False
        if name == APISERVER_COMPONENT and self.probe.serving and replicas > 1:
            c.messages.insert(0, f"{self.probe.serving} serving, the others standing by")
        ok = c.healthy >= replicas
        self.walk.converged &= ok
        self.walk.all_ready &= c.ready >= replicas
        if not ok:
            self.may_act = False
        self.walk.rows.append(ClusterComponentStatus(
            name=name, version=_versions(c.mine) or self.target_name, replicas=replicas, ready_replicas=c.ready,
            restarts=_restarts(c.mine), healthy=ok, message="; ".join(m for m in c.messages if m),
            restarted_at=stamp if stamp and all(_restart_of(self.pods.get(n)) == stamp and n not in stale
                                                for n in wants) else None).to_wire())
        return True

    async def _pod(self, c: _Component, pod_name: str, want: Obj | None) -> bool:
        """One wanted Pod: created, replaced, relabelled, judged; False when the release must turn back."""
        cur = self.pods.get(pod_name)
        if cur is not None and pod_ready(cur):
            c.ready += 1
        if want is None:
            self._wait(c, "waiting for the API server's address")
        elif cur is None:
            await self._start(c, pod_name, want)
        elif cur["metadata"].get("deletionTimestamp"):
            self.may_act = False  # a replacement in flight (graceful deletion): the Pods after it wait for it
            self._wait(c, f"{pod_name} terminating")
        elif pod_name in c.stale:
            await self._replace_outdated(c, pod_name, cur, want)
        else:
            cur = await self._label_release(c, pod_name, cur)
            if not await self._judge(c, pod_name, cur):
                return False
        # replaced too often: Degraded until a replacement has stayed healthy (starting, not ready yet or
        # being replaced again proves nothing)
        f = self.memory.get(POD_FAILURE + pod_name)
        if f is not None and f.count >= self.opts.max_failures:
            self.walk.degraded.append(f"{pod_name} replaced {f.count} times: {f.message}")
        return True

    def _wait(self, c: _Component, message: str) -> None:
        c.messages.append(message)
        self.walk.busy = True

    async def _start(self, c: _Component, pod_name: str, want: Obj) -> None:
        if not self.may_act:
            self._wait(c, f"{pod_name} waits for the Pods before it")
            return
        try:
            await self.client.create(POD, want, self.names.namespace)
            self.walk.actions.append(f"created {pod_name} ({self.target_name})")
        except AlreadyExistsError:
            pass
        self.may_act = False  # one step at a time: the next waits for this one to be healthy
        self._wait(c, f"{pod_name} starting")

    async def _replace_outdated(self, c: _Component, pod_name: str, cur: Obj, want: Obj) -> None:
        """Outdated Pods are replaced one at a time (a broken one at once: it serves nothing anyway); a
        release or a restart replaces a running one only with the risk center's permit."""
        restart = c.restart if c.restart and _restart_of(cur) != c.restart and not self.releasing else ""
        if self.may_act or not pod_ready(cur):
            if (self.releasing or restart) and pod_ready(cur) and not await self._permitted(c, pod_name, restart):
                return
            await self._delete(pod_name)
            self.walk.actions.append(f"replacing {pod_name} with {self.target_name}" + (
                f" (restart asked at {restart})" if restart else ""))
            self.may_act = False
            self._wait(c, f"{pod_name} being replaced")
        else:
            self._wait(c, f"{pod_name} to be replaced")

    async def _permitted(self, c: _Component, pod_name: str, restart: str = "") -> bool:
        """A release replaces a running component only with a control-plane-release Permit (issue 14); so does
        a restart (one permit per Pod and restart: intent ``restart-<time>``)."""
        if self.opts.risk is None:
            return True
        gate = self.opts.risk(self.names.namespace, self.names.cluster)
        intent, why = (f"restart-{restart}", f"restart {c.name} of {self.names.cluster} (asked at {restart})") \
            if restart else (self.target_name, f"release {self.target_name} of {self.names.cluster}")
        adm = await gate.admit(OperationType.CONTROL_PLANE_RELEASE, [pod_name], intent, reason=why)
        if adm.granted:
            return True
        self.walk.risk = (adm.reason, adm.message)
        self.may_act = False
        self._wait(c, f"{pod_name} waits for the risk center: {adm.message}")
        return False

    async def _repair_permitted(self, c: _Component, pod_name: str, f: Any) -> bool:
        """A broken Pod is replaced only with a control-plane-repair Permit (``repair``: its pre-check may
        fail — it is the very failure being repaired).  One permit per attempt (``repair-<n>``); a replacement
        that broke again ends the previous attempt's permit Failed (the breaker counts it)."""
        if self.opts.risk is None:
            return True
        gate = self.opts.risk(self.names.namespace, self.names.cluster)
        intent = f"repair-{(f.count if f is not None else 0) + 1}"
        for view in gate.open_for(pod_name):
            if view.granted and _operation(view) == OperationType.CONTROL_PLANE_REPAIR and \
                    gate.intent(view) != intent:
                await gate.finish(view, PermitOutcome.FAILED, f"{pod_name} broke again after its replacement")
        adm = await gate.admit(OperationType.CONTROL_PLANE_REPAIR, [pod_name], intent, repair=True,
                               reason=f"replace broken {pod_name} of {self.names.cluster}")
        if adm.granted:
            return True
        self.walk.risk = (adm.reason, adm.message)
        c.messages.append(f"{pod_name} waits for the risk center to be replaced: {adm.message}")
        return False

    async def _repaired(self, pod_name: str) -> None:
        """The replacement of a broken Pod is healthy: its repair permit is released Succeeded."""
        if self.opts.risk is None:
            return
        gate = self.opts.risk(self.names.namespace, self.names.cluster)
        for view in gate.open_for(pod_name):
            if view.granted and _operation(view) == OperationType.CONTROL_PLANE_REPAIR:
                await gate.finish(view, PermitOutcome.SUCCEEDED, f"the replacement of {pod_name} is healthy")

    async def _label_release(self, c: _Component, pod_name: str, cur: Obj) -> Obj:
        """The same Pod in both releases: nothing to restart, but it must say which release it runs."""
        if _labels(cur).get(VERSION_LABEL) == self.target_name:
            return cur
        await self.client.patch(POD, pod_name, {"metadata": {"labels": {VERSION_LABEL: self.target_name}}},
                                self.names.namespace)
        cur = {**cur, "metadata": {**cur["metadata"], "labels": {**_labels(cur), VERSION_LABEL: self.target_name}}}
        self.pods[pod_name] = cur
        c.mine = [cur if p["metadata"]["name"] == pod_name else p for p in c.mine]
        return cur

    def _health(self, c: _Component, cur: Obj) -> PodHealth:
        """The Pod's readiness; for the API server also the probe through the endpoint and its version."""
        health = pod_health(cur, self.now, self.timeout)
        if not health.ready or c.name != APISERVER_COMPONENT:
            return health
        probe, ok = self.probe, True
        if not probe.ready:
            ok, health.message = False, f"API server not ready: {probe.message}"
        elif probe.version and probe.version != self.kv:
            if c.stale:  # an older replica still holds the data; this one stands by until it goes
                c.messages.append(f"{cur['metadata']['name']} standing by (the serving replica runs "
                                  f"{probe.version})")
            else:
                ok, health.message = False, f"API server reports {probe.version}, want {self.kv}"
                # ready, but not the release: a failure with its own timer (the probe's is cleared while
                # /readyz answers), so a release that serves the wrong version rolls back too
                self.memory.since(VERSION_FAILURE, health.message, self.now)
        if not ok:
            since = self.memory.get(PROBE_FAILURE if not probe.ready else VERSION_FAILURE)
            health.ready = False
            health.broken = (since.age(self.now) if since else 0.0) > self.timeout
        return health

    async def _judge(self, c: _Component, pod_name: str, cur: Obj) -> bool:
        health = self._health(c, cur)
        key = POD_FAILURE + pod_name
        f = self.memory.get(key)
        if health.ready:
            c.healthy += 1
            await self._repaired(pod_name)
            # a replacement counts as a fix once it has stayed healthy past its backoff and a timeout
            if f is not None and (self.now - f.retry_at).total_seconds() >= self.opts.unhealthy_timeout:
                self.memory.clear(key)
            return True
        self.walk.busy = True
        self.may_act = False  # the replicas after an unhealthy one keep running what they run
        c.messages.append(health.message)
        if health.broken:
            if self.releasing and self.target_name == (self.obj.get("spec") or {}).get("packageVersion"):
                self.walk.rollback = (f"release {self.target_name} failed its post-check ({health.message}); "
                                      f"rolling back to {self.last_good}")
                return False
            if (f is None or f.retry_in(self.now) <= 0) and await self._repair_permitted(c, pod_name, f):
                await self._delete(pod_name)
                self.memory.record(key, health.message, self.now)
                self.walk.repairs.append(f"replaced {pod_name}: {health.message}")
        return True

    async def _remove_pods_outside_the_release(self) -> None:
        """Pods no release component wants any more (a dropped component, fewer replicas): last, once settled."""
        for pod_name, p in self.pods.items():
            if pod_name not in self.wanted and not p["metadata"].get("deletionTimestamp"):
                await self._delete(pod_name)
                self.walk.actions.append(f"removed {pod_name} (not in {self.target_name})")

    async def _delete(self, pod: str) -> None:
        try:
            await self.client.delete(POD, pod, self.names.namespace)
        except NotFoundError:
            pass
