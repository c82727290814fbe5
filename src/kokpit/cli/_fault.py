"""`kokpit fault resolve|retry NODE`: a person finishes or restarts the repair of a node (issue 15).

Both act on the node's open MaintenanceFlow in a business cluster: ``$KUBECONFIG`` (or ``--kubeconfig``)
pointing at that cluster, or ``--cluster NAME`` found through the meta cluster of a running ``kokpit up``
(``--data-dir``).  The request goes to the flow's ``spec.request`` with who asked — the user the API server
authenticates these credentials as (a SelfSubjectReview, not a name the caller types) — when, and the note;
the flow controller applies it once and records it in ``status.humanActions``.

- ``resolve``: the node was repaired by a person (a replaced disk, a closed IDC ticket): the flow verifies
  it and gives it back;
- ``retry``: automatic repair starts again from the flow's first repair.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import typer

from kokpit.cli._common import fail

__all__ = ["fault_app"]

Obj = dict[str, Any]
fault_app = typer.Typer(add_completion=False, no_args_is_help=True,
                        help="Node faults and their maintenance flows (resolve, retry).")

_KUBECONFIG = typer.Option(None, "--kubeconfig", help="Kubeconfig of the business cluster (default $KUBECONFIG).")
_CLUSTER = typer.Option("", "--cluster", "-c", help="Business cluster of a running kokpit up (found through the "
                        "meta cluster instead of a kubeconfig).")
_NAMESPACE = typer.Option("default", "--namespace", "-n", help="The Cluster's namespace (with --cluster).")
_DATA_DIR = typer.Option(Path(".kokpit"), "--data-dir", help="The data dir of the kokpit up (with --cluster).")
_NOTE = typer.Option("", "--note", help="What was done or why (recorded on the flow).")
_WAIT = typer.Option(30.0, "--wait", min=0.0, help="Seconds to wait for the flow controller to record it (0: "
                     "do not wait).")


def _check_target(kubeconfig: Path | None, cluster: str, data_dir: Path) -> None:
    if cluster:
        if not (data_dir / "kubeconfig").is_file():
            fail(f"{data_dir / 'kubeconfig'} not found: is kokpit up running with --data-dir {data_dir}?")
        return
    if kubeconfig is not None and not kubeconfig.is_file():
        fail(f"kubeconfig {kubeconfig} not found")
    if kubeconfig is None and not os.environ.get("KUBECONFIG") and not Path("~/.kube/config").expanduser().is_file():
        fail("no business cluster: set KUBECONFIG (kokpit kubeconfig CLUSTER > c.kubeconfig), pass --kubeconfig, "
             "or --cluster NAME of a running kokpit up")


async def _business(kubeconfig: Path | None, cluster: str, namespace: str, data_dir: Path, tmp: Path) -> Any:
    """A client of the business cluster: the kubeconfig given, or the one the meta cluster keeps for it."""
    from kokpit.client import Client, NotFoundError
    from kokpit.up import read_kubeconfig

    if not cluster:
        return Client.from_kubeconfig(kubeconfig, field_manager="kokpit-fault-cli", max_retries=1, timeout=10.0)
    meta = Client.from_kubeconfig(data_dir / "kubeconfig", field_manager="kokpit-fault-cli", max_retries=1,
                                  timeout=10.0)
    try:
        raw = await read_kubeconfig(meta, cluster, namespace)
    except NotFoundError:
        fail(f"no business cluster {namespace}/{cluster} (kokpit status lists them)")
    finally:
        await meta.close()
    path = tmp / "business.kubeconfig"
    await asyncio.to_thread(path.write_bytes, raw)
    return Client.from_kubeconfig(path, field_manager="kokpit-fault-cli", max_retries=1, timeout=10.0)


async def whoami(c: Any) -> str:
    """The user the API server authenticates these credentials as (SelfSubjectReview)."""
    from kokpit.client import ApiError, Kind

    ssr = Kind("authentication.k8s.io", "v1", "SelfSubjectReview", "selfsubjectreviews", namespaced=False)
    try:
        out = await c.create(ssr, {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
    except ApiError as e:
        return f"unknown (SelfSubjectReview refused: {e.code})"
    return str(((out.get("status") or {}).get("userInfo") or {}).get("username") or "unknown")


def _open_flow(flows: list[Obj], node: str) -> Obj | None:
    from kokpit.runtime import is_true

    mine = [f for f in flows if (f.get("spec") or {}).get("nodeName") == node
            and not is_true((f.get("status") or {}).get("conditions"), "Completed")]
    return sorted(mine, key=lambda f: str(f["metadata"].get("creationTimestamp")))[-1] if mine else None


async def request(c: Any, node: str, action: str, note: str, wait: float) -> Obj:
    """Put the request on the node's open flow; wait until the controller recorded it (returns the flow)."""
    from kokpit.operators.maintenance import FLOW

    flow = _open_flow((await c.list(FLOW)).items, node)
    if flow is None:
        fail(f"node {node} has no open maintenance flow (kubectl get maintenanceflows)")
    assert flow is not None
    rid = uuid.uuid4().hex[:12]
    body = {"spec": {"request": {"id": rid, "action": action, "user": await whoami(c), "note": note,
                                 "requestedAt": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}}}
    name = flow["metadata"]["name"]
    flow = await c.patch(FLOW, name, body)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if any(a.get("id") == rid for a in (flow.get("status") or {}).get("humanActions") or []):
            return dict(flow)
        await asyncio.sleep(0.2)
        flow = await c.get(FLOW, name)
    return dict(flow)


def _act(action: str, node: str, note: str, wait: float, kubeconfig: Path | None, cluster: str, namespace: str,
         data_dir: Path) -> None:
    from kokpit.client import ApiError, TransportError

    _check_target(kubeconfig, cluster, data_dir)

    async def go(tmp: Path) -> Obj:
        c = await _business(kubeconfig, cluster, namespace, data_dir, tmp)
        try:
            return await request(c, node, action, note, wait)
        finally:
            await c.close()

    with tempfile.TemporaryDirectory(prefix="kokpit-fault-") as tmp:
        try:
            flow = asyncio.run(go(Path(tmp)))
        except (ApiError, TransportError, OSError) as e:
            fail(f"business cluster: {e}")
    st = flow.get("status") or {}
    recorded = next((a for a in st.get("humanActions") or [] if a.get("action") == action), None)
    what = "recorded" if recorded else "requested (the flow controller has not recorded it yet)"
    typer.echo(f"{action} of node {node} {what} on maintenance flow {flow['metadata']['name']}: "
               f"flow {st.get('currentFlow')}, step {st.get('step')}, state {st.get('phase')}")


@fault_app.command("resolve")
def resolve(node: str = typer.Argument(..., help="The node a person repaired."), note: str = _NOTE,
            wait: float = _WAIT, kubeconfig: Path | None = _KUBECONFIG, cluster: str = _CLUSTER,
            namespace: str = _NAMESPACE, data_dir: Path = _DATA_DIR) -> None:
    """The node was repaired by a person: verify it and give it back (closes a hardware repair ticket)."""
    _act("Resolve", node, note, wait, kubeconfig, cluster, namespace, data_dir)


@fault_app.command("retry")
def retry(node: str = typer.Argument(..., help="The node to repair again."), note: str = _NOTE,
          wait: float = _WAIT, kubeconfig: Path | None = _KUBECONFIG, cluster: str = _CLUSTER,
          namespace: str = _NAMESPACE, data_dir: Path = _DATA_DIR) -> None:
    """Start automatic repair of the node again, from its flow's first repair."""
    _act("Retry", node, note, wait, kubeconfig, cluster, namespace, data_dir)
