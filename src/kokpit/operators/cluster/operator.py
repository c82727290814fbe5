"""The cluster operator: runs each business cluster's control plane as Pods of the meta cluster (Kube on Kube).

Like CloudNativePG it owns Pods directly, so it alone decides isolation, replacement and the one-at-a-time
order of a release.  One level-triggered reconcile per Cluster (on :class:`kokpit.runtime.StepReconciler`)
reads only informer caches (Clusters, ClusterPackageVersions, and the Pods, Services and Secrets labelled
``kokpit.io/cluster``) and reads top to bottom as its steps: the target release is chosen, the PKI Secret,
the Service with its recorded ports and the kubeconfig exist, the API server is probed, and the components
run the target release.  Status is written once, the phase derived last.  Everything it must remember across
restarts lives in the API: which release a Pod runs (a label and a spec hash), when a step began (the Pod's
creationTimestamp), which release failed (``status.failedPackageVersion``), how often a Pod was replaced and
since when the endpoint fails (``status.failures``), and which NodePorts are whose (port records).

The parts live in modules named for them: ``_release`` (which release runs), ``_resources`` (PKI, Secrets,
Service, ports), ``_walk`` (the components, one step at a time), ``_probes``, ``_status`` (conditions and
phase), ``_teardown`` (deletion).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from kokpit._lib import pki
from kokpit._lib.backoff import ExponentialBackoff
from kokpit._lib.clock import Clock
from kokpit.api.cluster import (
    SIMULATOR_COMPONENT,
    ClusterConditionType,
    ClusterReason,
    ClusterSpec,
    DeletionPolicy,
)
from kokpit.api.machine import GROUP, VERSION
from kokpit.api.risk import RISK_ACTOR_COMPONENTS, PermitOutcome
from kokpit.client import CONFIGMAP, NODE, POD, SECRET, ApiError, Kind, ObjectClient, TransportError
from kokpit.operators.cluster._etcd import ETCD_COMPONENT, EtcdApi, EtcdWalker, HttpEtcdApi
from kokpit.operators.cluster._identity import IDENTITY_KINDS, ActorIdentity
from kokpit.operators.cluster._options import OperatorOptions
from kokpit.operators.cluster._plan import (
    CLUSTER_LABEL,
    COMPONENT_LABEL,
    DATA_COMPONENTS,
    Names,
    Wiring,
    component_order,
)
from kokpit.operators.cluster._probes import HttpsProber, PodReadinessProber, Probe, Prober
from kokpit.operators.cluster._release import Release, choose_release, record_outcome
from kokpit.operators.cluster._resources import INDEXERS_PORTS, PORT_LABEL, SERVICE, PortAllocator, Resources
from kokpit.operators.cluster._status import cluster_conditions, cluster_phase, invalid_conditions
from kokpit.operators.cluster._teardown import Teardown
from kokpit.operators.cluster._upstreamops import UpstreamPlane, is_upstream
from kokpit.operators.cluster._walk import PROBE_FAILURE, VERSION_FAILURE, Walk, Walker, observe_only
from kokpit.runtime import (
    EventRecorder,
    FailureMemory,
    Manager,
    ReconcileContext,
    Request,
    Result,
    Step,
    StepReconciler,
    StepResult,
    Store,
    act,
    add_finalizer,
    done,
    find_condition,
    has_finalizer,
    is_deleting,
    named_steps,
    wait,
)
from kokpit.runtime.protection import InUseProtector

__all__ = [
    "CLUSTER",
    "CPV",
    "FINALIZER",
    "SERVICE",
    "ClusterOperator",
    "ClusterReconciler",
    "HttpsProber",
    "OperatorOptions",
    "PodReadinessProber",
    "Probe",
    "Prober",
]

log = logging.getLogger("kokpit.operators.cluster")

Obj = dict[str, Any]

CLUSTER = Kind(GROUP, VERSION, "Cluster", "clusters")
CPV = Kind(GROUP, VERSION, "ClusterPackageVersion", "clusterpackageversions", namespaced=False)
FINALIZER = "kokpit.io/cluster-operator"

CT = ClusterConditionType
OperatorClient = ObjectClient  # what a reconcile needs of kokpit.client.Client (a fake in unit tests)


def cluster_key(obj: Obj) -> list[str]:
    """Index of the objects a Cluster owns: ``<namespace>/<cluster>`` from the ``kokpit.io/cluster`` label."""
    meta = obj.get("metadata") or {}
    c = (meta.get("labels") or {}).get(CLUSTER_LABEL)
    return [f"{meta.get('namespace') or ''}/{c}"] if c else []


def _cpv_refs(obj: Obj) -> list[str]:
    """The ClusterPackageVersions a Cluster uses: the one it asks for, the one it runs, its rollback target."""
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    return sorted(str(v) for v in {spec.get("packageVersion"), status.get("packageVersion"),
                                   status.get("lastGoodPackageVersion")} if v)


def _node_ports(obj: Obj) -> list[str]:
    """Index of Services by the NodePorts they hold (a free port is then one lookup, not a scan of all)."""
    return [str(p["nodePort"]) for p in ((obj.get("spec") or {}).get("ports") or [])
            if isinstance(p, dict) and p.get("nodePort")]


def _hash_of(data: Obj) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


INDEXERS_OWNED: dict[str, Callable[[Obj], list[str]]] = {"cluster": cluster_key, "nodeport": _node_ports}
INDEXERS_CLUSTER: dict[str, Callable[[Obj], list[str]]] = {"cpv": _cpv_refs}


@dataclass
class ClusterCtx(ReconcileContext):
    """One reconcile of one Cluster: what its steps found, for the status."""

    names: Names = field(default_factory=lambda: Names("", ""))
    spec: ClusterSpec | None = None
    memory: FailureMemory | None = None  # status.failures: pod/<pod>, probe/apiserver
    release: Release | None = None
    pki: Obj = field(default_factory=dict)
    api_port: int = 0
    driver_port: int | None = None
    want_driver: bool = False
    endpoint: str | None = None
    probe: Probe = field(default_factory=lambda: Probe(False, None, "not probed"))
    walk: Walk = field(default_factory=Walk)
    plane: UpstreamPlane | None = None  # the Upstream flavor (etcd, kube-apiserver, ...); None: kokpit's own


class ClusterReconciler(StepReconciler[ClusterCtx]):
    """The reconcile of one Cluster; stores are informer caches (plain :class:`Store` in unit tests)."""

    kind = CLUSTER
    spec_model = ClusterSpec

    def __init__(self, client: OperatorClient, *, clusters: Store, cpvs: Store, pods: Store, services: Store,
                 secrets: Store, recorder: EventRecorder, prober: Prober | None = None,
                 options: OperatorOptions | None = None, clock: Clock | None = None,
                 ports: Store | None = None, nodes: Store | None = None, etcd: EtcdApi | None = None,
                 identities: dict[str, Store] | None = None) -> None:
        super().__init__(client, recorder, clock)
        self.client: OperatorClient = client
        self.clusters, self.cpvs, self.pods, self.services, self.secrets = clusters, cpvs, pods, services, secrets
        self.opts = options or OperatorOptions()
        self.prober: Prober = prober or (PodReadinessProber() if self.opts.trust_pod_readiness
                                         else HttpsProber(self.opts.probe_timeout))
        self._backoff = ExponentialBackoff(base=self.opts.retry_base, cap=self.opts.retry_cap)
        self.ports = PortAllocator(client, ports if ports is not None else Store(INDEXERS_PORTS), services, self.opts)
        self.nodes = nodes if nodes is not None else Store()  # where etcd members can be placed
        self.etcd: EtcdApi = etcd or HttpEtcdApi(self.opts.probe_timeout)
        self.resources = Resources(client, pods=pods, services=services, secrets=secrets, ports=self.ports,
                                   opts=self.opts)
        self.identity = ActorIdentity(client, identities or {k.plural: Store() for k in IDENTITY_KINDS})
        self.teardown = Teardown(client, CLUSTER, FINALIZER, resources=self.resources, ports=self.ports,
                                 recorder=recorder, opts=self.opts, clock=self.clock)

    # ------------------------------------------------------------------------------ the skeleton's parts
    def get(self, req: Request) -> Obj | None:
        return self.clusters.get_by_name(req.name, req.namespace)

    async def before(self, req: Request, raw: Obj) -> tuple[Obj | None, Result | None]:
        if is_deleting(raw):
            return None, await self.teardown.run(raw, Names(req.namespace, req.name))
        if not has_finalizer(raw, FINALIZER):
            raw = await add_finalizer(self.client, CLUSTER, raw, FINALIZER)
        return raw, None

    def context(self, req: Request, obj: Obj, spec: Any, now: dt.datetime, mono: float) -> ClusterCtx:
        return ClusterCtx(req, obj, now, mono, names=Names(req.namespace, req.name), spec=spec,
                          memory=FailureMemory(obj, self._backoff))

    def invalid(self, ctx: ReconcileContext, reason: str, message: str) -> bool:
        return invalid_conditions(ctx, reason, message)

    def steps(self, ctx: ClusterCtx) -> Sequence[Step[ClusterCtx]]:
        return named_steps(
            self.target_release_is_chosen,
            self.paused_cluster_is_left_alone,
            self.pki_secret_exists,
            self.service_holds_recorded_ports,
            self.kubeconfig_points_at_the_endpoint,
            self.api_server_is_probed,
            self.risk_actor_identities_exist,
            self.components_run_the_target_release,
        )

    def observe(self, ctx: ClusterCtx) -> None:
        assert ctx.spec is not None and ctx.release is not None
        if ctx.endpoint:
            ctx.status["endpoint"] = ctx.endpoint
        self._record_data_nodes(ctx)
        walk = ctx.walk
        ctx.status["components"] = walk.rows
        before = dict(find_condition(ctx.conditions, CT.UPGRADING) or {})
        record_outcome(ctx, ctx.release, walk, ctx.spec.paused)
        after = find_condition(ctx.conditions, CT.UPGRADING) or {}
        if ctx.release.problem is not None and (before.get("reason"), before.get("message")) != (
                after.get("reason"), after.get("message")):
            # the wanted release cannot run (a missing or invalid ClusterPackageVersion): a person must act
            ctx.warning(ctx.release.problem[0], str(after.get("message") or ctx.release.problem[1]))
        cluster_conditions(ctx, ctx.spec, walk, ctx.probe)
        for msg in walk.actions:
            ctx.normal("ControlPlane", msg)
        for msg in walk.repairs:  # a broken control plane being repaired: not routine, a person should know
            ctx.warning(ClusterReason.COMPONENT_REPLACED, msg)
        if walk.rollback:
            ctx.warning("ReleaseFailed", walk.rollback)
            ctx.requeue_after(0.01)
        elif ctx.spec.paused:
            ctx.requeue_after(self.opts.resync)
        else:
            ctx.requeue_after(self.opts.poll if walk.busy or not walk.converged else self.opts.resync)

    def phase(self, ctx: ClusterCtx) -> str:
        return cluster_phase(ctx)

    # ------------------------------------------------------------------------------ steps
    async def target_release_is_chosen(self, ctx: ClusterCtx) -> StepResult:
        """The CPV to run: the one spec names, else (missing, invalid, failed) the last good one."""
        assert ctx.spec is not None
        ctx.release = choose_release(ctx.status, ctx.spec.package_version, self.cpvs.get_by_name)
        if is_upstream(ctx.release.target):
            ctx.plane = UpstreamPlane(self.client, self.opts, self.secrets, ctx.names)
        return done()

    async def paused_cluster_is_left_alone(self, ctx: ClusterCtx) -> StepResult:
        """``spec.paused``: what runs is observed and reported; nothing is created, replaced or deleted."""
        assert ctx.spec is not None and ctx.release is not None
        if not ctx.spec.paused:
            return done()
        ctx.walk = observe_only(self.resources.owned_pods(ctx.names), ctx.release.target, ctx.spec)
        await self._probe(ctx)
        return wait("Paused", "spec.paused is true: not acting")

    async def pki_secret_exists(self, ctx: ClusterCtx) -> StepResult:
        assert ctx.spec is not None
        had = self.secrets.get_by_name(ctx.names.pki_secret, ctx.names.namespace)
        keep = ctx.spec.deletion_policy == DeletionPolicy.RETAIN
        if ctx.plane is not None:
            assert ctx.release is not None
            ctx.pki = await ctx.plane.ensure_pki(ctx.release.target, keep)
        else:
            ctx.pki = await self.resources.ensure_pki(ctx.names, keep, ctx.now)
        return done() if had is ctx.pki else act("PKI", f"wrote {ctx.names.pki_secret}")

    async def service_holds_recorded_ports(self, ctx: ClusterCtx) -> StepResult:
        """The NodePort Service, its ports allocated from (and recorded in) the API."""
        assert ctx.spec is not None and ctx.release is not None
        comps = component_order(ctx.release.target)
        ctx.want_driver = ctx.spec.simulation.nodes > 0 and any(c.get("name") == SIMULATOR_COMPONENT for c in comps)
        ctx.api_port, ctx.driver_port = await self.resources.ensure_service(ctx.names, ctx.obj, ctx.want_driver)
        return done()

    async def kubeconfig_points_at_the_endpoint(self, ctx: ClusterCtx) -> StepResult:
        host = self.resources.endpoint_host(ctx.names)
        if not host:
            return done()  # no address yet: written once the API server Pod has one
        port_host = f"[{host}]" if ":" in host else host
        if ctx.plane is not None:
            await ctx.plane.ensure_kubeconfig(f"https://{port_host}:{ctx.api_port}", ctx.pki)
            return done()
        await self.resources.ensure_kubeconfig(ctx.names, f"https://{port_host}:{ctx.api_port}", ctx.pki)
        return done()

    async def api_server_is_probed(self, ctx: ClusterCtx) -> StepResult:
        """``/readyz`` and ``/version`` through the endpoint; since when it fails is kept in status."""
        assert ctx.memory is not None
        await self._probe(ctx)
        if ctx.probe.ready:
            ctx.memory.clear(PROBE_FAILURE)
            kv = str(((ctx.release.target if ctx.release else {}).get("spec") or {}).get("kubernetesVersion"))
            if not ctx.probe.version or ctx.probe.version == kv:
                ctx.memory.clear(VERSION_FAILURE)
        else:
            ctx.memory.since(PROBE_FAILURE, ctx.probe.message, ctx.now)
        return done()

    async def risk_actor_identities_exist(self, ctx: ClusterCtx) -> StepResult:
        """When actors ask the risk center: each risk actor's own ServiceAccount (machine operator,
        controller-manager), allowed its Cluster's Permits only."""
        if self.opts.risk is None or ctx.plane is not None or ctx.release is None:
            return done()  # upstream components do not ask the risk center: no identity to hand them
        names = {str(c.get("name")) for c in (ctx.release.target.get("spec") or {}).get("components") or []}
        actors = tuple(a for a in RISK_ACTOR_COMPONENTS if a in names)
        wrote = await self.identity.ensure(ctx.names, ctx.obj, actors)
        return act("Identity", "; ".join(wrote)) if wrote else done()

    async def components_run_the_target_release(self, ctx: ClusterCtx) -> StepResult:
        """The walk: one step at a time, API server first; a failed release step turns the release back."""
        assert ctx.spec is not None and ctx.release is not None and ctx.memory is not None
        kv = str((ctx.release.target.get("spec") or {}).get("kubernetesVersion"))
        pki_data = ctx.pki.get("data") or {}
        pki_hash = _hash_of({k: v for k, v in pki_data.items() if k not in pki.DRIVER_KEYS})
        host = self.resources.endpoint_host(ctx.names)
        driver = ctx.driver_port is not None and ctx.want_driver
        wiring = Wiring(kv, ctx.api_port, ctx.driver_port if ctx.want_driver else None, host,
                        ctx.spec.simulation.nodes, self.opts.data_root, pki_hash,
                        driver_hash=_hash_of({k: pki_data.get(k) for k in pki.DRIVER_KEYS}),
                        metrics_ports=self.resources.metrics_ports(ctx.names) if ctx.want_driver else {},
                        asks_risk_center=self.opts.risk is not None)
        pods = self.resources.owned_pods(ctx.names)
        if ctx.plane is not None:
            ctx.walk = await self._upstream_walk(ctx, ctx.plane, wiring, pods)
        else:
            walker = Walker(self.client, self.opts, names=ctx.names, obj=ctx.obj, spec=ctx.spec,
                            target=ctx.release.target, wiring=wiring, pods=pods, probe=ctx.probe,
                            memory=ctx.memory, now=ctx.now)
            ctx.walk = await walker.run(driver)
        if self.opts.risk is not None:
            await self._settle_permits(ctx, ctx.walk)
        if ctx.walk.rollback:
            return wait("RollingBack", ctx.walk.rollback)
        if ctx.walk.actions or ctx.walk.repairs:
            return act("ControlPlane", "; ".join([*ctx.walk.actions, *ctx.walk.repairs]))
        return done()

    # ------------------------------------------------------------------------------ helpers
    async def _upstream_walk(self, ctx: ClusterCtx, plane: UpstreamPlane, wiring: Wiring, pods: list[Obj]) -> Walk:
        """etcd members first (their own walk: membership changes one at a time), then kube-apiserver,
        controller-manager and scheduler through the component walk, each waiting for the ones before it."""
        assert ctx.spec is not None and ctx.release is not None and ctx.memory is not None
        target = ctx.release.target
        comp = next(c for c in (target.get("spec") or {}).get("components") or [] if c.get("name") == ETCD_COMPONENT)
        last_good = (ctx.obj.get("status") or {}).get("lastGoodPackageVersion")
        releasing = bool(last_good) and ctx.release.target_name != last_good
        etcd_pods = [p for p in pods if (p["metadata"].get("labels") or {}).get(COMPONENT_LABEL) == ETCD_COMPONENT]
        # the roster decides membership changes: read it from the server, never from a cache that may lag
        # behind this process's own last write (a stale roster would add a member twice)
        ctx.pki = await self.client.get(SECRET, ctx.names.pki_secret, ctx.names.namespace)
        etcd = await EtcdWalker(
            self.client, self.opts, self.etcd, names=ctx.names, owner=ctx.obj,
            spec=plane.spec(target, ctx.api_port), component=comp, target_name=ctx.release.target_name,
            pods=etcd_pods, secret=ctx.pki, nodes=self.nodes, ports=self.ports, memory=ctx.memory, now=ctx.now,
            releasing=releasing, may_roll_back=ctx.release.target_name == ctx.spec.package_version).run()
        if etcd.rollback:
            return Walk(rows=[etcd.row], converged=False, busy=True, all_ready=False, rollback=etcd.rollback,
                        actions=etcd.actions)
        rendered = plane.desired(target, ctx.api_port, etcd.client_urls, ctx.obj, ctx.spec.control_plane.replicas)
        walker = Walker(self.client, self.opts, names=ctx.names, obj=ctx.obj, spec=ctx.spec, target=target,
                        wiring=wiring, pods=pods, probe=ctx.probe, memory=ctx.memory, now=ctx.now,
                        rendered=rendered, skip=frozenset({ETCD_COMPONENT}), may_act=etcd.converged)
        walk = await walker.run(False)
        walk.rows.insert(0, etcd.row)
        walk.actions[:0] = etcd.actions
        walk.degraded[:0] = list(etcd.degraded)
        walk.converged &= etcd.converged
        walk.all_ready &= int(etcd.row.get("readyReplicas") or 0) >= int(etcd.row.get("replicas") or 0)
        walk.busy |= etcd.busy
        walk.risk = walk.risk or etcd.risk
        return walk

    async def _settle_permits(self, ctx: ClusterCtx, walk: Walk) -> None:
        """RiskPermitted says why a release step waits; a finished release releases its permits (Succeeded),
        a release turned back releases them Failed (counted by the policies' breakers)."""
        assert self.opts.risk is not None
        if walk.risk is not None:
            ctx.condition(ClusterConditionType.RISK_PERMITTED, False, *walk.risk)
        elif (find_condition(ctx.conditions, ClusterConditionType.RISK_PERMITTED) or {}).get("status") == "False":
            ctx.condition(ClusterConditionType.RISK_PERMITTED, True, "Permitted", "no release step waits for the risk center")
        if not (walk.converged or walk.rollback):
            return
        gate = self.opts.risk(ctx.names.namespace, ctx.names.cluster)
        for view in gate.open_all():
            if view.granted:
                ok = not walk.rollback
                await gate.finish(view, PermitOutcome.SUCCEEDED if ok else PermitOutcome.FAILED,
                                  "release done" if ok else f"release turned back: {walk.rollback}")

    async def _probe(self, ctx: ClusterCtx) -> None:
        ctx.endpoint = self.resources.endpoint(ctx.names)
        if ctx.endpoint is None:
            ctx.probe = Probe(False, None, "the API server has no address yet")
            return
        ca = self.resources.ca(ctx.names)
        ctx.probe = await self.prober.check(ctx.endpoint, ca) if ca else Probe(False, None, "no CA yet")

    def _record_data_nodes(self, ctx: ClusterCtx) -> None:
        """Remember every node that ever ran a component with a host folder: deletionPolicy Delete must
        reach them even when the Pods are long gone (a foreground delete, an operator restart)."""
        known = set(ctx.status.get("dataNodes") or [])
        nodes = {str((p.get("spec") or {}).get("nodeName")) for p in self.resources.owned_pods(ctx.names)
                 if (p["metadata"].get("labels") or {}).get(COMPONENT_LABEL) in DATA_COMPONENTS
                 and (p.get("spec") or {}).get("nodeName")}
        if not nodes <= known:
            ctx.status["dataNodes"] = sorted(known | nodes)


class ClusterOperator:
    """Wires informers and the controller onto a :class:`Manager`; ``await op.run()``."""

    def __init__(self, manager: Manager, options: OperatorOptions | None = None, *, prober: Prober | None = None,
                 clock: Clock | None = None) -> None:
        self.manager = manager
        self.options = options or OperatorOptions()
        inf = manager.informers
        self.cluster_informer = inf.informer(CLUSTER)
        self.cpv_informer = inf.informer(CPV)
        self.pod_informer = inf.informer(POD, label_selector=CLUSTER_LABEL)
        self.service_informer = inf.informer(SERVICE, label_selector=CLUSTER_LABEL)
        self.secret_informer = inf.informer(SECRET, label_selector=CLUSTER_LABEL)
        self.port_informer = inf.informer(CONFIGMAP, self.options.port_namespace, label_selector=PORT_LABEL)
        self.node_informer = inf.informer(NODE)  # where an Upstream cluster's etcd members can be placed
        # the machine operators' meta-cluster identities (only watched when actors ask the risk center)
        self.identity_informers = {k.plural: inf.informer(k, label_selector=CLUSTER_LABEL) for k in IDENTITY_KINDS} \
            if self.options.risk is not None else {}
        for informer, indexers in ((self.pod_informer, INDEXERS_OWNED), (self.service_informer, INDEXERS_OWNED),
                                   (self.secret_informer, INDEXERS_OWNED),
                                   (self.cluster_informer, INDEXERS_CLUSTER), (self.port_informer, INDEXERS_PORTS)):
            for name, fn in indexers.items():
                with contextlib.suppress(ValueError):
                    informer.add_indexer(name, fn)
        # leader-only when the manager elects (--leader-elect); with no election it always runs
        self.controller = manager.controller("cluster", self._reconcile, workers=self.options.workers,
                                             needs_leader_election=True)
        self.recorder = EventRecorder(manager.client, "cluster-operator", clock=clock)
        self.reconciler = ClusterReconciler(
            manager.client, clusters=self.cluster_informer.store, cpvs=self.cpv_informer.store,
            pods=self.pod_informer.store, services=self.service_informer.store,
            secrets=self.secret_informer.store, recorder=self.recorder, prober=prober, options=self.options,
            clock=clock, ports=self.port_informer.store, nodes=self.node_informer.store,
            identities={k: i.store for k, i in self.identity_informers.items()} or None)
        clusters = self.cluster_informer.store
        self.controller.for_(self.cluster_informer)

        def owned(o: Obj) -> list[Request]:
            return [Request(*k.split("/", 1)) for k in cluster_key(o)]

        for src in (self.pod_informer, self.service_informer, self.secret_informer):
            self.controller.watches(src, owned)
        self.controller.watches(self.cpv_informer, lambda o: [
            Request.for_object(c) for c in clusters.by_index("cpv", str(o["metadata"]["name"]))])
        # a ClusterPackageVersion a Cluster asks for, runs or would roll back to cannot be deleted under it
        cpvs = self.cpv_informer.store

        def cpv_users(name: str) -> list[str]:
            return sorted(f"{c['metadata'].get('namespace')}/{c['metadata']['name']}"
                          for c in clusters.by_index("cpv", name))

        self.protection = InUseProtector(manager.client, CPV, cpvs, cpv_users, user_kind="Clusters",
                                         recorder=self.recorder, clock=clock)
        self.protector = manager.controller("cpv-protection", self.protection.reconcile, workers=2,
                                            needs_leader_election=False)
        self.protector.for_(self.cpv_informer)
        self.protector.watches(self.cluster_informer, lambda o: [  # users matter only to a held deletion
            Request("", n) for n in _cpv_refs(o)
            if (c := cpvs.get_by_name(n)) is not None and c["metadata"].get("deletionTimestamp")])

    async def _reconcile(self, req: Request) -> Result | None:
        try:
            return await self.reconciler.reconcile(req)
        except (ApiError, TransportError) as e:
            log.warning("cluster %s: %s", req, e)
            return Result(requeue=True)

    async def run(self) -> None:
        await self.manager.run()

    def stop(self) -> None:
        self.manager.stop()
