"""`kokpit fault list|show` (this module joins the `kokpit fault` group of ``kokpit.cli._fault``): the event center as a person reads it (the NodeFaults of a business cluster).

The business cluster is ``--kubeconfig`` (or ``$KUBECONFIG``), or ``--cluster NAME`` of a running
``kokpit up``: its admin kubeconfig is read from the meta cluster (``--data-dir``/kubeconfig), as
``kokpit simulator fault --cluster`` finds the simulator.  ``fault_app`` is the group other commands join
(``kokpit fault resolve|retry`` of the maintenance flows register onto it); :func:`business_client` is the
shared way to reach the cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import typer

from kokpit.cli._common import fail
from kokpit.cli._fault import fault_app  # the group of the maintenance flows' resolve|retry

__all__ = ["business_client", "fault_add_ons", "fault_rows"]

Obj = dict[str, Any]

KUBECONFIG = typer.Option(None, "--kubeconfig", help="Kubeconfig of the business cluster (default: $KUBECONFIG).")
CLUSTER = typer.Option("", "--cluster", "-c", help="A business cluster of a running kokpit up (found through "
                       "its meta cluster).")
NAMESPACE = typer.Option("default", "--namespace", "-n", help="The Cluster's namespace (with --cluster).")
DATA_DIR = typer.Option(Path(".kokpit"), "--data-dir", help="The data dir of the kokpit up (with --cluster).")


def _check_target(kubeconfig: Path | None, cluster: str, data_dir: Path) -> None:
    if kubeconfig is not None and cluster:
        fail("pass either --kubeconfig (a business cluster) or --cluster NAME (through kokpit up), not both")
    if kubeconfig is not None and not kubeconfig.is_file():
        fail(f"kubeconfig {kubeconfig} not found")
    if cluster and not (data_dir / "kubeconfig").is_file():
        fail(f"{data_dir / 'kubeconfig'} not found: is kokpit up running with --data-dir {data_dir}?")


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    path.chmod(0o600)
    return path


@contextlib.asynccontextmanager
async def business_client(kubeconfig: Path | None, cluster: str, namespace: str, data_dir: Path,
                          *, field_manager: str = "kokpit-fault-cli") -> AsyncIterator[Any]:
    """A client of the business cluster: ``--kubeconfig``/$KUBECONFIG, or ``--cluster`` through the meta
    cluster of ``kokpit up --data-dir``.  Fails with a message saying what to fix."""
    from kokpit.client import ApiError, Client, NotFoundError, TransportError

    _check_target(kubeconfig, cluster, data_dir)
    with tempfile.TemporaryDirectory(prefix="kokpit-fault-") as tmp:
        path: Path | None = kubeconfig
        if cluster:
            from kokpit.up import read_kubeconfig

            meta = Client.from_kubeconfig(data_dir / "kubeconfig", field_manager=field_manager, max_retries=1,
                                          timeout=10.0)
            try:
                raw = await read_kubeconfig(meta, cluster, namespace)
            except NotFoundError:
                fail(f"no kubeconfig for Cluster {namespace}/{cluster} (no such Cluster, or not provisioned yet; "
                     "list them with: kokpit status)")
            except (ApiError, TransportError) as e:
                fail(f"cannot read Cluster {namespace}/{cluster} from the meta cluster: {e}")
            finally:
                await meta.close()
            path = _write(Path(tmp) / "kubeconfig", raw)
        try:
            client = Client.from_kubeconfig(path, field_manager=field_manager, max_retries=1, timeout=10.0)
        except Exception as e:  # lightkube's ConfigError and file errors
            fail(f"cannot load the business cluster's kubeconfig: {e}")
        try:
            yield client
        finally:
            await client.close()


def _age(ts: Any, now: dt.datetime) -> str:
    from kokpit._lib.clock import parse_time

    try:
        secs = int((now - parse_time(str(ts))).total_seconds())
    except (ValueError, TypeError):
        return "-"
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= n:
            return f"{secs // n}{unit}"
    return f"{max(secs, 0)}s"


def fault_rows(faults: list[Obj], now: dt.datetime) -> list[list[str]]:
    """The columns of `kubectl get nodefaults` (node, type, severity, state, count, first/last seen, source)."""
    rows = []
    for f in sorted(faults, key=lambda f: (str((f.get("status") or {}).get("state") != "Active"),
                                           str((f.get("spec") or {}).get("nodeName")), f["metadata"]["name"])):
        spec, st = f.get("spec") or {}, f.get("status") or {}
        ftype = str(spec.get("type", "")) + (f"/{spec['component']}" if spec.get("component") else "")
        rows.append([str(spec.get("nodeName", "")), ftype, str(st.get("severity") or "-"), str(st.get("state") or
                     "Pending"), str(st.get("count", 0)), _age(st.get("firstSeen"), now), _age(st.get("lastSeen"), now),
                     str(st.get("reporter") or "-"), str(st.get("maintenanceFlow") or "-")])
    return rows


def _print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    for line in [header, *rows]:
        typer.echo("   ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())


def _run(coro: Any) -> Any:
    from kokpit.client import ApiError, TransportError

    try:
        return asyncio.run(coro)
    except (ApiError, TransportError, OSError) as e:
        fail(f"business cluster: {e}")


@fault_app.command("list")
def list_faults(
    node: str = typer.Option("", "--node", help="Only this node's faults."),
    fault_type: str = typer.Option("", "--type", help="Only this fault type."),
    state: str = typer.Option("", "--state", help="Only this state: Active, Resolved, Expired, Invalid."),
    all_states: bool = typer.Option(False, "--all", "-a", help="Also the history (Resolved, Expired, Invalid)."),
    output: str = typer.Option("table", "--output", "-o", help="table or json."),
    kubeconfig: Path | None = KUBECONFIG,
    cluster: str = CLUSTER,
    namespace: str = NAMESPACE,
    data_dir: Path = DATA_DIR,
) -> None:
    """List the NodeFaults (active ones unless --all or --state), newest problems first."""
    from kokpit.api.fault import NODE_LABEL, STATE_LABEL, TYPE_LABEL, FaultState
    from kokpit.runtime.faultreports import NODEFAULT

    if state and state not in {s.value for s in FaultState}:
        fail(f"--state must be one of {', '.join(s.value for s in FaultState)} (got {state!r})")
    if output not in ("table", "json"):
        fail("--output must be table or json")
    selector = {k: v for k, v in ((NODE_LABEL, node), (TYPE_LABEL, fault_type),
                                  (STATE_LABEL, state or ("" if all_states else "Active"))) if v}

    async def go() -> list[Obj]:
        async with business_client(kubeconfig, cluster, namespace, data_dir) as c:
            return list((await c.list(NODEFAULT, label_selector=selector)).items)

    items = _run(go())
    if output == "json":
        typer.echo(json.dumps(items, indent=2))
        return
    if not items:
        typer.echo("no faults" + ("" if all_states or state else " active (--all shows the history)"))
        return
    _print_table(["NODE", "TYPE", "SEVERITY", "STATE", "COUNT", "FIRST SEEN", "LAST SEEN", "SOURCE", "FLOW"],
                 fault_rows(items, dt.datetime.now(dt.UTC)))


@fault_app.command("show")
def show_fault(
    name: str = typer.Argument(..., help="A NodeFault name (node.type[.component]) or a node name (all its "
                                         "faults)."),
    output: str = typer.Option("text", "--output", "-o", help="text or json."),
    kubeconfig: Path | None = KUBECONFIG,
    cluster: str = CLUSTER,
    namespace: str = NAMESPACE,
    data_dir: Path = DATA_DIR,
) -> None:
    """Everything the event center knows of a fault: sources with provenance, possible causes, the flow,
    history, conditions and Events."""
    from kokpit.api.fault import NODE_LABEL
    from kokpit.client import EVENT, NotFoundError
    from kokpit.runtime.faultreports import NODEFAULT

    async def go() -> tuple[list[Obj], list[Obj]]:
        async with business_client(kubeconfig, cluster, namespace, data_dir) as c:
            try:
                found = [await c.get(NODEFAULT, name)]
            except NotFoundError:
                found = list((await c.list(NODEFAULT, label_selector={NODE_LABEL: name})).items)
            events: list[Obj] = []
            for f in found:
                events += (await c.list(EVENT, field_selector=f"involvedObject.kind=NodeFault,"
                                                              f"involvedObject.name={f['metadata']['name']}")).items
            return found, events

    found, events = _run(go())
    if not found:
        fail(f"no NodeFault {name!r} and no faults on a node of that name (kokpit fault list --all)")
    if output == "json":
        typer.echo(json.dumps(found, indent=2))
        return
    now = dt.datetime.now(dt.UTC)
    for f in found:
        typer.echo(describe(f, [e for e in events if (e.get("involvedObject") or {}).get("name") ==
                                f["metadata"]["name"]], now))


def describe(f: Obj, events: list[Obj], now: dt.datetime) -> str:
    spec, st = f.get("spec") or {}, f.get("status") or {}
    lines = [f"Name:        {f['metadata']['name']}",
             f"Node:        {spec.get('nodeName')}",
             f"Type:        {spec.get('type')}" + (f" (component {spec['component']})" if spec.get("component") else ""),
             f"Severity:    {st.get('severity', '-')}   Category: {st.get('category', '-')}   "
             f"Flow: {st.get('flow', '-')}",
             f"State:       {st.get('state', 'Pending')}   Count: {st.get('count', 0)}",
             f"First seen:  {st.get('firstSeen', '-')} ({_age(st.get('firstSeen'), now)} ago)",
             f"Last seen:   {st.get('lastSeen', '-')} ({_age(st.get('lastSeen'), now)} ago)"]
    if st.get("expiresAt"):
        lines.append(f"Expires at:  {st['expiresAt']} unless reported again")
    if st.get("maintenanceFlow"):
        lines.append(f"Maintenance: {st['maintenanceFlow']}")
    if st.get("resolution"):
        r = st["resolution"]
        lines.append(f"Resolved:    by {r.get('by')} at {r.get('at')}: {r.get('reason', '')} {r.get('note', '')}".rstrip())
    lines.append("Sources:")
    for s in st.get("sources") or []:
        flag = " (cleared)" if s.get("cleared") else ""
        lines.append(f"  {s.get('reporter')} [{s.get('kind')}] x{s.get('count')} first {s.get('firstSeen')} "
                     f"last {s.get('lastSeen')}{flag}: {s.get('message', '')}".rstrip())
    for c in st.get("possiblyCausedBy") or []:
        lines.append(f"Possibly caused by: {c.get('kind')} {c.get('namespace', '') + '/' if c.get('namespace') else ''}"
                     f"{c.get('name')} ({c.get('operation', '')}) {c.get('detail', '')}".rstrip())
    for c in st.get("conditions") or []:
        lines.append(f"Condition:   {c.get('type')}={c.get('status')} {c.get('reason', '')}: {c.get('message', '')}")
    for h in st.get("history") or []:
        lines.append(f"History:     {h.get('state')} {h.get('firstSeen')} → {h.get('endedAt')} x{h.get('count')}"
                     + (f" flow {h['maintenanceFlow']}" if h.get("maintenanceFlow") else ""))
    for e in sorted(events, key=lambda e: str(e.get("lastTimestamp") or "")):
        lines.append(f"Event:       {e.get('type')} {e.get('reason')} x{e.get('count', 1)}: {e.get('message', '')}")
    return "\n".join(lines) + "\n"


def fault_add_ons(enabled: bool, retention: str, lease_grace: str, *, risk_cluster: str = "",
                  risk_namespace: str = "default") -> list[Any]:
    """What ``kokpit machine-operator --faults`` adds to the operator's process (``run_operator(add_ons=...)``):
    the fault controllers; with the risk center's meta cluster, granted Permits name possible causes."""
    if not enabled:
        return []
    from kokpit.operators.faults import FaultCenter, FaultOptions
    from kokpit.operators.faults.catalog import parse_duration

    try:
        opts = FaultOptions(retention=parse_duration(retention), lease_grace=parse_duration(lease_grace))
    except ValueError as e:
        fail(f"--fault-retention / --lease-grace: {e} (a duration like 30s, 5m, 24h)")
    if opts.lease_grace <= 0:
        fail("--lease-grace must be positive")

    def add(manager: Any, _driver: Any, meta: Any) -> None:
        FaultCenter(manager, opts, meta=meta, meta_namespace=risk_namespace, cluster=risk_cluster)

    return [add]
