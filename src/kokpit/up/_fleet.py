"""What the fleet looks like right now, read through the API servers, and the one-screen summary of it.

`kokpit up` redraws this while the fleet comes up and runs; `kokpit status` prints it once.  It reads only
through the API (the meta cluster for Clusters and Events, each business cluster for Nodes and Machines),
so it shows what kubectl would show.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from kokpit.client import EVENT, NODE, SECRET, ApiError, Client, NotFoundError, TransportError
from kokpit.operators.cluster import CLUSTER, KUBECONFIG_KEY
from kokpit.operators.machine import MACHINE

__all__ = ["ClusterRow", "Fleet", "Snapshot", "read_kubeconfig", "render_rich", "render_text", "try_commands",
           "unreadable_reason"]

Obj = dict[str, Any]


def _cond(obj: Obj, type_: str) -> str:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return str(c.get("status") or "Unknown")
    return "Unknown"


@dataclass
class ClusterRow:
    namespace: str
    name: str
    uid: str
    version: str  # the release it runs (observed), or "-" before it runs one
    wanted: str  # spec.packageVersion
    ready: str  # the Ready condition's status
    phase: str
    endpoint: str
    nodes_total: int  # spec.simulation.nodes
    nodes_ready: int = -1  # -1: the business cluster cannot be read (yet)
    nodes_seen: int = -1
    machines: int = -1
    machines_converged: int = -1
    unreadable: str = ""  # why the business cluster could not be read (shown instead of node counts)

    @property
    def ready_fully(self) -> bool:
        n = self.nodes_total
        return self.ready == "True" and self.nodes_ready == n and self.nodes_seen == n \
            and self.machines_converged == n and self.machines == n


@dataclass
class Snapshot:
    clusters: list[ClusterRow] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    error: str = ""

    def ready(self, want_clusters: int) -> bool:
        return not self.error and len(self.clusters) >= want_clusters and all(c.ready_fully for c in self.clusters)


def unreadable_reason(cluster: Obj) -> str:
    """What to show for a business cluster whose API server does not answer: a release or a repair replacing
    it is expected (and not "0 nodes"); otherwise it is simply not answering."""
    if _cond(cluster, "RollingOut") == "True" or _cond(cluster, "Remediating") == "True":
        return "API server restarting"
    return "API server not answering"


def machine_converged(m: Obj) -> bool:
    """Ready, and the operator has seen its newest spec."""
    meta = m.get("metadata") or {}
    st = m.get("status") or {}
    return _cond(m, "Ready") == "True" and int(st.get("observedGeneration") or 0) >= int(meta.get("generation") or 0)


def _event_line(e: Obj, where: str = "meta") -> tuple[str, str]:
    when = str(e.get("lastTimestamp") or e.get("eventTime") or (e.get("metadata") or {}).get("creationTimestamp")
               or "")
    obj = e.get("involvedObject") or e.get("regarding") or {}
    hhmmss = when[11:19] if len(when) >= 19 else when
    msg = " ".join(str(e.get("message") or e.get("note") or "").split())
    if len(msg) > 90:
        msg = msg[:87] + "..."
    return when, f"{hhmmss} {where} {e.get('reason', '')} " \
                 f"{str(obj.get('kind', '')).lower()}/{obj.get('name', '')}: {msg}"


async def read_kubeconfig(meta: Client, cluster: str, namespace: str) -> bytes:
    """A business cluster's admin kubeconfig, from its ``<cluster>-kubeconfig`` Secret (NotFoundError if absent)."""
    secret = await meta.get(SECRET, f"{cluster}-kubeconfig", namespace)
    value = (secret.get("data") or {}).get(KUBECONFIG_KEY)
    if not value:
        raise NotFoundError(404, {"reason": "NotFound", "message": f"secret {cluster}-kubeconfig has no "
                                                                      f"{KUBECONFIG_KEY!r} key"})
    return base64.b64decode(value)


class Fleet:
    """Reads a fleet through its meta cluster; keeps one client per business cluster (kubeconfigs are written
    under ``kubeconfig_dir``, where people can use them too)."""

    def __init__(self, meta: Client, kubeconfig_dir: Path) -> None:
        self.meta = meta
        self.kubeconfig_dir = kubeconfig_dir
        self._business: dict[str, tuple[str, Client]] = {}

    def kubeconfig_path(self, name: str) -> Path:
        return self.kubeconfig_dir / f"{name}.kubeconfig"

    async def business(self, namespace: str, name: str) -> Client | None:
        """A client of the business cluster (None until its kubeconfig Secret exists)."""
        try:
            raw = await read_kubeconfig(self.meta, name, namespace)
        except NotFoundError:
            return None
        digest = hashlib.sha256(raw).hexdigest()
        key = f"{namespace}/{name}"
        cur = self._business.get(key)
        if cur is not None and cur[0] == digest:
            return cur[1]
        path = self.kubeconfig_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(raw)
        path.chmod(0o600)
        client = Client.from_kubeconfig(path, field_manager="kokpit-up", max_retries=0, timeout=5.0)
        if cur is not None:
            await cur[1].close()
        self._business[key] = (digest, client)
        return client

    async def snapshot(self, events: int = 6) -> Snapshot:
        snap = Snapshot()
        try:
            clusters = (await self.meta.list(CLUSTER)).items
            lines = [_event_line(e) for e in (await self.meta.list(EVENT)).items]
        except (ApiError, TransportError, OSError) as e:
            snap.error = f"meta API server not answering: {e}"
            return snap
        for c in sorted(clusters, key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"])):
            meta, spec, st = c["metadata"], c.get("spec") or {}, c.get("status") or {}
            row = ClusterRow(namespace=str(meta.get("namespace")), name=str(meta["name"]), uid=str(meta.get("uid")),
                             version=str(st.get("packageVersion") or "-"), wanted=str(spec.get("packageVersion")),
                             ready=_cond(c, "Ready"), phase=str(st.get("phase") or ""),
                             endpoint=str(st.get("endpoint") or ""),
                             nodes_total=int((spec.get("simulation") or {}).get("nodes") or 0))
            snap.clusters.append(row)
            try:
                client = await self.business(row.namespace, row.name)
            except (ApiError, TransportError, OSError):
                client = None
            if client is None:
                row.unreadable = "no kubeconfig yet"
                continue
            try:
                nodes = (await client.list(NODE)).items
                row.nodes_seen = len(nodes)
                row.nodes_ready = sum(1 for n in nodes if _cond(n, "Ready") == "True")
                machines = (await client.list(MACHINE)).items
                row.machines = len(machines)
                row.machines_converged = sum(1 for m in machines if machine_converged(m))
                lines += [_event_line(e, row.name) for e in (await client.list(EVENT)).items]
            except (ApiError, TransportError, OSError):
                # the business API server does not answer: say why rather than count zero nodes
                row.unreadable = unreadable_reason(c)
        unique = list(dict.fromkeys(line for _, line in sorted(lines)))  # repeated reports read as one
        snap.events = unique[-events:]
        return snap

    async def close(self) -> None:
        for _, c in self._business.values():
            await c.close()
        self._business.clear()


def _n(v: int) -> str:
    return "?" if v < 0 else str(v)


def _nodes(c: ClusterRow) -> str:
    """``ready/total``, or why the nodes cannot be counted (an API server being replaced is not 0 nodes)."""
    return c.unreadable if c.unreadable and c.nodes_ready < 0 and c.nodes_total else \
        f"{_n(c.nodes_ready)}/{c.nodes_total}"


def try_commands(data_dir: Path, snap: Snapshot) -> list[str]:
    """The exact commands to paste next (paths as given, quoted for the shell)."""
    dd = "" if data_dir == Path(".kokpit") else f" --data-dir {shlex.quote(str(data_dir))}"
    first = snap.clusters[0].name if snap.clusters else "cluster-1"
    kc = shlex.quote(str(data_dir / f"{first}.kubeconfig"))  # inside the data dir: nothing lands in a checkout
    return [
        f"export KUBECONFIG={shlex.quote(str(data_dir.resolve() / 'kubeconfig'))}",
        "kubectl get clusters,clusterpackageversions",
        f"kokpit kubeconfig {first}{dd} > {kc}",
        f"kubectl --kubeconfig {kc} get nodes,machines",
        f"kokpit status{dd}",
    ]


def render_text(snap: Snapshot, data_dir: Path, *, elapsed: float | None = None) -> str:
    """The summary as plain text (``kokpit status`` without a terminal, logs, tests)."""
    out: list[str] = []
    if snap.error:
        out.append(snap.error)
    head = f"{'CLUSTER':<20} {'VERSION':<10} {'WANTED':<10} {'READY':<7} {'NODES':>9} {'MACHINES':>9}  ENDPOINT"
    out.append(head)
    for c in snap.clusters:
        out.append(f"{c.namespace + '/' + c.name:<20} {c.version:<10} {c.wanted:<10} {c.ready:<7} "
                   f"{_nodes(c):>9} "
                   f"{_n(c.machines_converged) + '/' + str(c.nodes_total):>9}  {c.endpoint}")
    if not snap.clusters and not snap.error:
        out.append("(no clusters)")
    if snap.events:
        out.append("recent events:")
        out += [f"  {e}" for e in snap.events]
    out.append("try:")
    out += [f"  {cmd}" for cmd in try_commands(data_dir, snap)]
    if elapsed is not None:
        out.append(f"(up {elapsed:.0f}s; Ctrl-C stops the whole fleet)")
    return "\n".join(out)


def render_rich(snap: Snapshot, data_dir: Path, *, title: str, elapsed: float | None = None) -> RenderableType:
    """The live one-screen summary."""
    table = Table(title=title, title_justify="left", expand=False, box=box.SIMPLE_HEAD,
                  caption="nodes: Ready/total · machines: converged/total", caption_justify="left")
    rows = [(c.name if c.namespace == "default" else f"{c.namespace}/{c.name}", c.version, c.wanted, c.ready,
             _nodes(c), f"{_n(c.machines_converged)}/{c.nodes_total}", c.endpoint)
            for c in snap.clusters]
    headers = ("cluster", "version", "wanted", "ready", "nodes", "machines", "endpoint")
    for i, col in enumerate(headers):  # every column but the endpoint keeps its full width on a narrow terminal
        width = max([len(col), *(len(r[i]) for r in rows)])
        table.add_column(col, no_wrap=True, min_width=None if col == "endpoint" else width)
    for c, r in zip(snap.clusters, rows, strict=True):
        style = "green" if c.ready_fully else "yellow"
        table.add_row(r[0], r[1], r[2], Text(r[3], style=style), r[4], r[5], r[6])
    parts: list[RenderableType] = []
    if snap.error:
        parts.append(Text(snap.error, style="red"))
    parts.append(table)
    if snap.events:
        parts.append(Text("recent events", style="bold"))
        parts += [Text(f"  {e}", overflow="ellipsis", no_wrap=True) for e in snap.events]
    parts.append(Text("try", style="bold"))
    parts += [Text(f"  {cmd}", style="cyan") for cmd in try_commands(data_dir, snap)]
    stamp = dt.datetime.now().strftime("%H:%M:%S")
    if elapsed is not None:
        parts.append(Text(f"{stamp}  up {elapsed:.0f}s · Ctrl-C stops the whole fleet", style="dim"))
    return Group(*parts)
