"""The etcd members of an Upstream control plane: bootstrap, repair and release, one membership change at a
time, never losing quorum.

A member is a Pod named after it (``<cluster>-etcd-<random>``: names are never reused, so a new member never
finds an old member's data folder) pinned to a node, with its own ports and certificates.  What the operator
provisioned is its **roster**, kept in the Cluster's PKI Secret (key ``etcd-members.json``) and written in
the same update as the member's certificates, *before* the member is added to etcd or its Pod created; a
member being removed is marked so first.  After a kill -9 at any point the next reconcile reads the roster,
etcd's own member list and the Pods, and finishes the change: a provisioned member that etcd does not know is
added, one it knows gets its Pod, a member marked ``removing`` is removed and never re-added.

The order of changes is etcd's runtime-reconfiguration rule, as Cluster API's KubeadmControlPlane follows it:

- **bootstrap**: all members of a new cluster start at once (``--initial-cluster-state=new``);
- **repair**: a member broken past the timeout is removed first (it serves nothing; removing it shrinks the
  quorum), only if the healthy members keep quorum of the smaller cluster, then a replacement is added;
- **release**: add a member of the new release (surge), wait until every member is healthy, then remove an
  outdated one; repeat.  Nothing is added or removed while a member is unhealthy, except that repair.

The operator talks to etcd through its v3 JSON gateway over mutual TLS (the health-check client
certificate of the cluster's etcd CA): member list, add, remove.

When the cluster operator asks the risk center (issue 14), every membership change it starts takes a Permit
first, granted (and so persisted) before the roster is written: the repair of a broken member a
``control-plane-repair`` (target the member, ``repair: true``, one per attempt ``repair-<n>``; the replacement
added after the removal goes under it), a release's surge-then-remove a ``control-plane-release`` (target the
outdated member being replaced, intent the release), a change of the member count a
``control-plane-release`` (target ``<cluster>-etcd``, intent ``scale-<n>``).  Finishing a change that is
already in the roster (an add or a removal cut short by a kill -9) asks nothing: it was permitted when it
began.  While a permit waits nothing changes and the outcome's ``risk`` says why; the operator releases the
permits with the rest of the release's (``_settle_permits``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import secrets
import ssl
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from kokpit._lib.pki import CertPair
from kokpit.api.cluster import ClusterComponentStatus
from kokpit.api.risk import OperationType
from kokpit.client import (
    POD,
    SECRET,
    AlreadyExistsError,
    LeanPool,
    NotFoundError,
    ObjectClient,
    TransportError,
)
from kokpit.operators.cluster._options import OperatorOptions
from kokpit.operators.cluster._plan import (
    CLUSTER_LABEL,
    COMPONENT_LABEL,
    HASH_ANNOTATION,
    VERSION_LABEL,
    Names,
    pod_ready,
)
from kokpit.operators.cluster._plan import pod_health as _pod_health
from kokpit.operators.cluster._resources import PortAllocator, b64, unb64
from kokpit.operators.cluster._upstream import (
    EtcdMember,
    UpstreamSpec,
    etcd_member_files,
    etcd_pod,
    secret_key,
)
from kokpit.runtime import FailureMemory, Store

__all__ = ["ETCD_COMPONENT", "ROSTER_KEY", "EtcdApi", "EtcdOutcome", "EtcdWalker", "HttpEtcdApi", "LiveMember",
           "RosterMember", "read_roster"]

Obj = dict[str, Any]
ETCD_COMPONENT = "etcd"
ROSTER_KEY = "etcd-members.json"
MEMBER_FAILURE = "pod/"  # the same failure records as the other components' Pods


@dataclass(frozen=True)
class RosterMember:
    """One provisioned member: where it runs and what it was started with (never changes once written,
    except ``removing``)."""

    name: str
    node: str
    host: str
    client_port: int
    peer_port: int
    metrics_port: int
    state: str  # new (bootstrap) | existing (added to a running cluster)
    initial: str  # its --initial-cluster
    removing: bool = False

    @property
    def member(self) -> EtcdMember:
        return EtcdMember(self.name, self.host, self.client_port, self.peer_port, self.metrics_port)


def read_roster(secret: Obj | None) -> dict[str, RosterMember]:
    raw = unb64(secret, ROSTER_KEY)
    if not raw:
        return {}
    return {m["name"]: RosterMember(**m) for m in json.loads(raw)}


def _roster_b64(roster: dict[str, RosterMember]) -> str:
    return b64(json.dumps([asdict(m) for m in sorted(roster.values(), key=lambda m: m.name)], sort_keys=True))


@dataclass(frozen=True)
class LiveMember:
    """A member as etcd lists it (``name`` is empty until it started)."""

    id: int
    name: str
    peer_urls: tuple[str, ...]


@dataclass(frozen=True)
class EtcdTLS:
    ca: bytes
    cert: bytes
    key: bytes


class EtcdApi(Protocol):
    async def members(self, endpoints: Sequence[str], tls: EtcdTLS) -> list[LiveMember] | None: ...
    async def add(self, endpoints: Sequence[str], tls: EtcdTLS, peer_url: str) -> None: ...
    async def remove(self, endpoints: Sequence[str], tls: EtcdTLS, member_id: int) -> None: ...


class HttpEtcdApi:
    """etcd's v3 JSON gateway (``/v3/cluster/member/*``) over mutual TLS; the first endpoint that answers."""

    def __init__(self, timeout: float = 3.0) -> None:
        self.timeout = timeout
        self._contexts: dict[str, ssl.SSLContext] = {}

    def _context(self, tls: EtcdTLS) -> ssl.SSLContext:
        key = hashlib.sha256(tls.ca + tls.cert + tls.key).hexdigest()
        ctx = self._contexts.get(key)
        if ctx is None:
            ctx = ssl.create_default_context(cadata=tls.ca.decode())
            with tempfile.TemporaryDirectory() as d:  # load_cert_chain reads files; they live only this long
                cert, pkey = os.path.join(d, "tls.crt"), os.path.join(d, "tls.key")
                with open(os.open(cert, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as f:
                    f.write(tls.cert)
                with open(os.open(pkey, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as f:
                    f.write(tls.key)
                ctx.load_cert_chain(cert, pkey)
            self._contexts[key] = ctx
        return ctx

    async def _call(self, endpoints: Sequence[str], tls: EtcdTLS, path: str, body: Obj) -> Obj:
        errors: list[str] = []
        for ep in endpoints:
            u = urlsplit(ep)
            pool = LeanPool(u.hostname or "127.0.0.1", u.port or 2379, ssl_context=self._context(tls), token=None,
                            size=1, timeout=self.timeout)
            try:
                code, data = await pool.request("POST", path, json.dumps(body).encode())
            except (TransportError, ssl.SSLError, OSError) as e:
                errors.append(f"{ep}: {e}")
                continue
            finally:
                await pool.close()
            if code == 200:
                out: Obj = json.loads(data)
                return out
            errors.append(f"{ep}: {code} {data[:200].decode(errors='replace')}")
        raise TransportError("etcd: " + "; ".join(errors or ["no endpoint"]))

    async def members(self, endpoints: Sequence[str], tls: EtcdTLS) -> list[LiveMember] | None:
        try:
            got = await self._call(endpoints, tls, "/v3/cluster/member/list", {"linearizable": True})
        except TransportError:
            return None
        return [LiveMember(int(m["ID"]), str(m.get("name") or ""), tuple(m.get("peerURLs") or ()))
                for m in got.get("members") or []]

    async def add(self, endpoints: Sequence[str], tls: EtcdTLS, peer_url: str) -> None:
        await self._call(endpoints, tls, "/v3/cluster/member/add", {"peerURLs": [peer_url]})

    async def remove(self, endpoints: Sequence[str], tls: EtcdTLS, member_id: int) -> None:
        await self._call(endpoints, tls, "/v3/cluster/member/remove", {"ID": str(member_id)})


def quorum(n: int) -> int:
    return n // 2 + 1


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def _node_address(node: Obj) -> str:
    addrs = {a.get("type"): a.get("address") for a in (node.get("status") or {}).get("addresses") or []}
    return str(addrs.get("InternalIP") or addrs.get("ExternalIP") or addrs.get("Hostname") or "")


def _node_ready(node: Obj) -> bool:
    if (node.get("spec") or {}).get("unschedulable"):
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (node.get("status") or {}).get("conditions") or [])


@dataclass
class EtcdOutcome:
    """What the etcd walk found and did (merged into the component walk by the operator)."""

    row: Obj
    converged: bool
    busy: bool
    actions: list[str]
    rollback: str = ""
    client_urls: tuple[str, ...] = ()
    degraded: tuple[str, ...] = ()
    risk: tuple[str, str] | None = None  # (RiskQueued | RiskDenied | RiskPending, why) while a change waits


class EtcdWalker:
    """One pass over a Cluster's etcd members (built per reconcile).  At most one membership change."""

    def __init__(self, client: ObjectClient, opts: OperatorOptions, api: EtcdApi, *, names: Names, owner: Obj,
                 spec: UpstreamSpec, component: Obj, target_name: str, pods: list[Obj], secret: Obj,
                 nodes: Store, ports: PortAllocator, memory: FailureMemory, now: dt.datetime, releasing: bool,
                 may_roll_back: bool) -> None:
        self.client, self.opts, self.api = client, opts, api
        self.names, self.owner, self.spec, self.component = names, owner, spec, component
        self.target_name = target_name
        self.pods = {str(p["metadata"]["name"]): p for p in pods}
        self.secret, self.nodes, self.ports, self.memory, self.now = secret, nodes, ports, memory, now
        self.releasing, self.may_roll_back = releasing, may_roll_back
        self.timeout = opts.release_timeout if releasing else opts.unhealthy_timeout
        self.replicas = max(1, int(component.get("replicas") or 1))
        self.roster = read_roster(secret)
        self.tls = EtcdTLS(unb64(secret, secret_key("etcd/ca.crt")),
                           unb64(secret, secret_key("etcd/healthcheck-client.crt")),
                           unb64(secret, secret_key("etcd/healthcheck-client.key")))
        self.actions: list[str] = []
        self.messages: list[str] = []
        self.risk: tuple[str, str] | None = None
        self.port_key = f"{names.namespace}/{names.cluster}#etcd"

    # ------------------------------------------------------------------------------ rendering
    def desired(self, m: RosterMember) -> Obj:
        pod = etcd_pod(self.spec, m.member, m.initial, m.state, image=str(self.component.get("image") or ""),
                       extra_args=tuple(str(a) for a in self.component.get("args") or ()), own_pki_only=True)
        pod["spec"]["nodeName"] = m.node
        meta = self.owner.get("metadata") or {}
        pod["metadata"]["labels"] = {CLUSTER_LABEL: self.names.cluster, COMPONENT_LABEL: ETCD_COMPONENT,
                                     VERSION_LABEL: self.target_name}
        pod["metadata"]["annotations"] = {HASH_ANNOTATION: _hash(pod["spec"])}
        pod["metadata"]["ownerReferences"] = [{
            "apiVersion": self.owner.get("apiVersion", "kokpit.io/v1alpha1"), "kind": self.owner.get("kind", "Cluster"),
            "name": meta.get("name"), "uid": meta.get("uid"), "controller": True, "blockOwnerDeletion": True}]
        return pod

    def _outdated(self, m: RosterMember) -> bool:
        cur = self.pods.get(m.name)
        have = ((cur or {}).get("metadata", {}).get("annotations") or {}).get(HASH_ANNOTATION)
        return cur is not None and have != self.desired(m)["metadata"]["annotations"][HASH_ANNOTATION]

    # ------------------------------------------------------------------------------ the pass
    async def run(self) -> EtcdOutcome:
        converged = False
        rollback = ""
        if not self.roster:
            await self._bootstrap()
        else:
            converged, rollback = await self._step()
        return self._outcome(converged, rollback)

    def _endpoints(self) -> list[str]:
        return [m.member.client_url for m in self.roster.values() if not m.removing]

    async def _step(self) -> tuple[bool, str]:
        live = await self.api.members(self._endpoints(), self.tls)
        by_peer = {u: lm for lm in (live or []) for u in lm.peer_urls}
        # a removal that was under way finishes first (marked before it began: never re-added)
        for m in sorted(self.roster.values(), key=lambda m: m.name):
            if m.removing:
                await self._finish_removal(m, by_peer.get(m.member.peer_url))
                return False, ""
        strays = sorted(set(self.pods) - set(self.roster))
        if strays:  # etcd Pods no roster entry knows (left by a removal that was cut short): removed first
            for name in strays:
                if not self.pods[name]["metadata"].get("deletionTimestamp"):
                    await self.client.delete(POD, name, self.names.namespace)
                    self.actions.append(f"removed {name}: not a provisioned etcd member")
            self.messages.append("waiting for etcd Pods outside the roster to go")
            return False, ""
        # provisioned members: added to etcd when it does not know them, then their Pods
        missing_pods = [m for m in self.roster.values() if m.name not in self.pods]
        for m in sorted(missing_pods, key=lambda m: m.name):
            if m.state == "existing" and live is not None and m.member.peer_url not in by_peer:
                await self.api.add(self._endpoints(), self.tls, m.member.peer_url)
                self.actions.append(f"added etcd member {m.name} ({m.member.peer_url})")
            await self._create(m)
        if missing_pods:
            return False, ""
        # judge the Pods
        healthy, broken = [], []
        for m in sorted(self.roster.values(), key=lambda m: m.name):
            pod = self.pods[m.name]
            if pod["metadata"].get("deletionTimestamp"):
                self.messages.append(f"{m.name} terminating")
                continue
            h = _pod_health(pod, self.now, self.timeout)
            if h.ready:
                healthy.append(m)
                f = self.memory.get(MEMBER_FAILURE + m.name)
                if f is not None and (self.now - f.retry_at).total_seconds() >= self.opts.unhealthy_timeout:
                    self.memory.clear(MEMBER_FAILURE + m.name)
            else:
                self.messages.append(h.message)
                if h.broken:
                    broken.append(m)
        n = len(self.roster)
        if broken:
            m = broken[0]
            new_release = (self.pods[m.name]["metadata"].get("labels") or {}).get(VERSION_LABEL) == self.target_name
            if self.releasing and new_release and not self._outdated(m) and self.may_roll_back:
                return False, (f"release {self.target_name} failed its post-check (etcd member {m.name}: "
                               f"{self.messages[-1] if self.messages else 'not healthy'})")
            if n == 1 or len(healthy) < quorum(n - 1):
                self.messages.append(f"cannot replace {m.name}: {len(healthy)} healthy of {n} would not keep "
                                     "quorum")
                return False, ""
            f = self.memory.get(MEMBER_FAILURE + m.name)
            if not await self._permitted(OperationType.CONTROL_PLANE_REPAIR, m.name,
                                         f"repair-{(f.count if f is not None else 0) + 1}",
                                         f"replace broken etcd member {m.name} of {self.names.cluster}"):
                return False, ""
            self.memory.record(MEMBER_FAILURE + m.name, f"etcd member {m.name} broken", self.now)
            await self._begin_removal(m, f"broken: {self.messages[-1] if self.messages else ''}")
            await self._finish_removal(m, by_peer.get(m.member.peer_url))
            return False, ""
        if len(healthy) < n:
            return False, ""  # wait: nothing changes while a member is unhealthy
        if live is None:
            self.messages.append("etcd does not answer the member list")
            return False, ""
        # strangers: members etcd lists that no roster entry knows and that never started (a lost add)
        known = {m.member.peer_url for m in self.roster.values()}
        for lm in live:
            if not any(u in known for u in lm.peer_urls) and not lm.name:
                await self.api.remove(self._endpoints(), self.tls, lm.id)
                self.actions.append(f"removed unstarted etcd member {lm.id:x} nobody provisioned")
                return False, ""
        unstarted = [m for m in self.roster.values() if not (by_peer[m.member.peer_url].name
                                                             if m.member.peer_url in by_peer else "")]
        if unstarted:
            self.messages.append(f"{unstarted[0].name} not started in etcd yet")
            return False, ""
        outdated = sorted((m for m in self.roster.values() if self._outdated(m)), key=lambda m: m.name)
        if n < self.replicas or (outdated and n == self.replicas):
            if not await self._change_permitted(outdated):
                return False, ""
            await self._add()
            return False, ""
        if n > self.replicas:
            victim = (outdated or sorted(self.roster.values(), key=lambda m: m.name))[0]
            if not await self._change_permitted(outdated):
                return False, ""
            await self._begin_removal(victim, "outdated" if outdated else "scale down")
            await self._finish_removal(victim, by_peer.get(victim.member.peer_url))
            return False, ""
        return True, ""

    # ------------------------------------------------------------------------------ the risk center
    async def _permitted(self, operation: OperationType, target: str, intent: str, why: str) -> bool:
        """A Permit granted for this membership change (True at once without a risk center)."""
        if self.opts.risk is None:
            return True
        gate = self.opts.risk(self.names.namespace, self.names.cluster)
        adm = await gate.admit(operation, [target], intent, reason=why,
                               repair=operation is OperationType.CONTROL_PLANE_REPAIR)
        if adm.granted:
            return True
        self.risk = (adm.reason, adm.message)
        self.messages.append(f"etcd: {target} waits for the risk center: {adm.message}")
        return False

    async def _change_permitted(self, outdated: list[RosterMember]) -> bool:
        """The add or removal the member count asks for: a release replaces its first outdated member (the
        surge and the removal ask the same permit); a replacement of a removed broken member goes under that
        repair's permit (still open: released when the walk converges); anything else is a change of size."""
        if outdated:
            return await self._permitted(OperationType.CONTROL_PLANE_RELEASE, outdated[0].name, self.target_name,
                                         f"release {self.target_name} of {self.names.cluster}: replace etcd "
                                         f"member {outdated[0].name}")
        if self.opts.risk is not None and len(self.roster) < self.replicas:
            gate = self.opts.risk(self.names.namespace, self.names.cluster)
            prefix = f"{self.names.cluster}-{ETCD_COMPONENT}-"
            if any(v.granted and str(v.obj["spec"].get("operation")) == OperationType.CONTROL_PLANE_REPAIR
                   and any(t.startswith(prefix) and t not in self.roster for t in v.obj["spec"].get("targets") or [])
                   for v in gate.open_all()):
                return True
        return await self._permitted(OperationType.CONTROL_PLANE_RELEASE, f"{self.names.cluster}-{ETCD_COMPONENT}",
                                     f"scale-{self.replicas}", f"etcd of {self.names.cluster} to {self.replicas} "
                                     "member(s)")

    # ------------------------------------------------------------------------------ changes
    def _pick_node(self, roster: dict[str, RosterMember]) -> tuple[str, str] | None:
        """A Ready, schedulable node with the fewest of this cluster's members (spread), then by name."""
        load: dict[str, int] = {}
        for m in roster.values():
            load[m.node] = load.get(m.node, 0) + 1
        nodes = [n for n in self.nodes.list() if _node_ready(n) and _node_address(n)]
        if not nodes:
            return None
        best = min(nodes, key=lambda n: (load.get(str(n["metadata"]["name"]), 0), str(n["metadata"]["name"])))
        return str(best["metadata"]["name"]), _node_address(best)

    async def _provision(self, count: int, state: str) -> list[RosterMember] | None:
        """Choose names, nodes and ports of `count` new members; their certificates and roster entries are
        written in one Secret update before anything else happens."""
        new: list[RosterMember] = []
        placed: dict[str, RosterMember] = dict(self.roster)
        for _ in range(count):
            node = self._pick_node(placed)
            if node is None:
                self.messages.append("no Ready schedulable node for an etcd member")
                return None
            name = f"{self.names.cluster}-etcd-{secrets.token_hex(3)}"
            client_p, peer_p, metrics_p = [await self.ports.allocate(self.port_key, f"{name}-{k}")
                                           for k in ("client", "peer", "metrics")]
            m = RosterMember(name, node[0], node[1], client_p, peer_p, metrics_p, state, "")
            placed[name] = m
            new.append(m)
        if state == "new":
            members = [m.member for m in new]
        else:
            members = [m.member for m in self.roster.values() if not m.removing] + [m.member for m in new]
        initial = ",".join(f"{x.name}={x.peer_url}" for x in members)
        new = [RosterMember(**{**asdict(m), "initial": initial}) for m in new]
        ca = CertPair(unb64(self.secret, secret_key("etcd/ca.crt")), unb64(self.secret, secret_key("etcd/ca.key")))
        data: dict[str, str] = {}
        for m in new:
            data |= {secret_key(k): b64(v) for k, v in etcd_member_files(ca, m.member).items()}
            self.roster[m.name] = m
        data[ROSTER_KEY] = _roster_b64(self.roster)
        await self._write_secret(data)
        return new

    async def _write_secret(self, data: dict[str, Any]) -> None:
        self.secret = await self.client.patch(SECRET, self.names.pki_secret, {"data": data}, self.names.namespace)

    async def _bootstrap(self) -> None:
        new = await self._provision(self.replicas, "new")
        if new is None:
            return
        for m in new:
            await self._create(m)
        self.actions.append(f"bootstrapping etcd with {len(new)} member(s)")

    async def _add(self) -> None:
        new = await self._provision(1, "existing")
        if not new:
            return
        m = new[0]
        await self.api.add(self._endpoints(), self.tls, m.member.peer_url)
        self.actions.append(f"added etcd member {m.name} ({m.member.peer_url})")
        await self._create(m)

    async def _create(self, m: RosterMember) -> None:
        try:
            await self.client.create(POD, self.desired(m), self.names.namespace)
            self.actions.append(f"created {m.name} ({self.target_name})")
        except AlreadyExistsError:
            pass
        self.messages.append(f"{m.name} starting")

    async def _begin_removal(self, m: RosterMember, why: str) -> None:
        self.roster[m.name] = RosterMember(**{**asdict(m), "removing": True})
        await self._write_secret({ROSTER_KEY: _roster_b64(self.roster)})
        self.actions.append(f"removing etcd member {m.name} ({why})")

    async def _finish_removal(self, m: RosterMember, live: LiveMember | None) -> None:
        """etcd forgets the member, its Pod goes, then its roster entry, certificates and ports."""
        if live is not None:
            others = [x.member.client_url for x in self.roster.values() if x.name != m.name and not x.removing]
            await self.api.remove(others, self.tls, live.id)
            self.actions.append(f"etcd member {m.name} removed from the cluster")
        if m.name in self.pods:
            try:
                await self.client.delete(POD, m.name, self.names.namespace)
            except NotFoundError:
                pass
        del self.roster[m.name]
        data: dict[str, Any] = {secret_key(f"etcd/{m.name}-{k}.{e}"): None for k in ("server", "peer")
                                for e in ("crt", "key")}
        data[ROSTER_KEY] = _roster_b64(self.roster)
        await self._write_secret(data)
        keep = {p for x in self.roster.values() for p in (x.client_port, x.peer_port, x.metrics_port)}
        await self.ports.release(self.port_key, keep=keep)

    # ------------------------------------------------------------------------------ report
    def _outcome(self, converged: bool, rollback: str) -> EtcdOutcome:
        mine = [p for n, p in self.pods.items() if n in self.roster]
        ready = sum(1 for p in mine if pod_ready(p))
        versions = ",".join(sorted({(p["metadata"].get("labels") or {}).get(VERSION_LABEL, "") for p in mine} - {""}))
        live = [m for m in self.roster.values() if not m.removing]
        row = ClusterComponentStatus(
            name=ETCD_COMPONENT, version=versions or self.target_name, replicas=self.replicas, ready_replicas=ready,
            restarts=sum(int(c.get("restartCount") or 0) for p in mine
                         for c in (p.get("status") or {}).get("containerStatuses") or []),
            healthy=converged, message="; ".join(self.messages)).to_wire()
        degraded = tuple(f"{f.name[len(MEMBER_FAILURE):]} replaced {f.count} times: {f.message}"
                         for f in self.memory.all(MEMBER_FAILURE + f"{self.names.cluster}-etcd-")
                         if f.count >= self.opts.max_failures)
        return EtcdOutcome(row, converged, not converged, self.actions, rollback,
                           tuple(m.member.client_url for m in sorted(live, key=lambda m: m.name)), degraded,
                           self.risk)
