"""`kokpit risk-center` (run it) and `kokpit risk status|pause|resume|reset` (look at it, stop everything).

The operator commands find the meta cluster from ``--kubeconfig``, else ``--data-dir`` of a running
``kokpit up`` (DATA_DIR/kubeconfig), else ``$KUBECONFIG``.  ``pause`` is an emergency stop: it creates the
RiskPolicy ``kokpit-emergency-stop`` (every operation type, every cluster, ``paused: true``), so it is
visible to kubectl, survives every restart and is undone only by ``resume``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from pathlib import Path
from typing import Any

import typer

from kokpit.cli._common import (
    METRICS_HOST,
    METRICS_PORT,
    METRICS_TOKEN_FILE,
    fail,
    metrics_tokens,
    serve,
)

__all__ = ["PAUSE_POLICY", "register"]

PAUSE_POLICY = "kokpit-emergency-stop"
risk_app = typer.Typer(add_completion=False, no_args_is_help=True,
                       help="The risk center: budgets, gates and breakers of every risky operation.")

Obj = dict[str, Any]


def _kubeconfig(kubeconfig: Path | None, data_dir: Path | None) -> Path | None:
    if kubeconfig is not None:
        if not kubeconfig.is_file():
            fail(f"kubeconfig {kubeconfig} not found")
        return kubeconfig
    if data_dir is not None:
        path = data_dir / "kubeconfig"
        if not path.is_file():
            fail(f"{path} not found: is `kokpit up --data-dir {data_dir}` running?")
        return path
    if os.environ.get("KUBECONFIG") or Path("~/.kube/config").expanduser().is_file():
        return None
    default = Path(".kokpit/kubeconfig")
    if default.is_file():
        return default
    fail("no meta cluster: pass --kubeconfig, or --data-dir of a running `kokpit up`, or set KUBECONFIG")


_KUBECONFIG = typer.Option(None, "--kubeconfig", help="Kubeconfig of the meta cluster.")
_DATA_DIR = typer.Option(None, "--data-dir", help="The data dir of a running `kokpit up`.")


def _run(coro: Any) -> Any:
    from kokpit.client import ApiError, TransportError

    try:
        return asyncio.run(coro)
    except (ApiError, TransportError, OSError) as e:
        fail(f"meta cluster: {e}")


async def _client(path: Path | None) -> Any:
    from kokpit.client import Client

    return Client.from_kubeconfig(path, field_manager="kokpit-risk-cli", max_retries=1, timeout=10.0)


# ------------------------------------------------------------------------------------------ status
def _limit(v: Any) -> str:
    return "-" if v is None else str(v)


def status_rows(policies: list[Obj]) -> list[list[str]]:
    """One row per policy budget: policy, scope, in use/limit, unavailable, window, gates, breakers."""
    rows = []
    for p in sorted(policies, key=lambda o: o["metadata"]["name"]):
        spec, st = p.get("spec") or {}, p.get("status") or {}
        name = p["metadata"]["name"] + (" (PAUSED)" if spec.get("paused") else "")
        scope = spec.get("scope") or {}
        gates = st.get("gates") or []
        breakers = [b for b in st.get("breakers") or [] if b.get("tripped")]
        valid = next((c for c in st.get("conditions") or [] if c.get("type") == "Valid"), None)
        budgets = st.get("budgets") or [{"scope": "*" if scope.get("perCluster") is False else "-"}]
        for b in budgets:
            where = b.get("scope", "-")
            use = f"{b.get('inFlight', 0)}/{_limit(b.get('maxConcurrent'))}" \
                if spec.get("maxConcurrent") is not None else f"{b.get('inFlight', 0)}/-"
            unav = f"{b.get('unavailable', 0)}/{_limit(b.get('maxUnavailable'))}" \
                if spec.get("maxUnavailable") is not None else "-"
            window = f"{b.get('windowCount', 0)}/{_limit(b.get('maxPerWindow'))} per " \
                     f"{spec['maxPerWindow']['window']}" if spec.get("maxPerWindow") else "-"
            g = ", ".join(f"{x['name']}={x['value']:.3g}{'' if x.get('passing') else ' FAILING'}"
                          if x.get("value") is not None else f"{x['name']}: {x.get('message') or 'FAILING'}"
                          for x in gates if x.get("scope") == where or where in ("*", "-")) or "-"
            br = ", ".join(f"{x['operation']} OPEN" for x in breakers if x.get("scope") == where) or "-"
            if valid is not None and valid.get("status") == "False":
                br = f"INVALID: {valid.get('message')}"
            rows.append([name, ",".join(spec.get("operations") or []), where, use, unav, window, g, br])
    return rows


@risk_app.command("status")
def status(kubeconfig: Path | None = _KUBECONFIG, data_dir: Path | None = _DATA_DIR) -> None:
    """A table of every policy budget: in use / limit, unavailable, window count, gates, open breakers."""
    from rich.console import Console
    from rich.table import Table

    from kokpit.runtime.permits import PERMIT, RISK_POLICY

    path = _kubeconfig(kubeconfig, data_dir)

    async def go() -> tuple[list[Obj], list[Obj]]:
        async with await _client(path) as c:
            return (await c.list(RISK_POLICY)).items, (await c.list(PERMIT)).items

    policies, permits = _run(go())
    table = Table(title="kokpit risk center", title_justify="left")
    for col in ("POLICY", "OPERATIONS", "SCOPE", "IN USE", "UNAVAILABLE", "WINDOW", "GATES", "BREAKERS"):
        table.add_column(col, overflow="fold")
    for row in status_rows(policies):
        table.add_row(*row)
    Console(width=200).print(table)
    states: dict[str, int] = {}
    for p in permits:
        s = (p.get("status") or {}).get("state") or "Pending"
        states[s] = states.get(s, 0) + 1
    typer.echo("permits: " + (", ".join(f"{k} {v}" for k, v in sorted(states.items())) or "none"))
    if any(p["metadata"]["name"] == PAUSE_POLICY for p in policies):
        typer.echo(f"PAUSED: every risky operation is stopped (policy {PAUSE_POLICY}); `kokpit risk resume` "
                   "lifts it")


# ------------------------------------------------------------------------------------------ pause/resume/reset
@risk_app.command("pause")
def pause(kubeconfig: Path | None = _KUBECONFIG, data_dir: Path | None = _DATA_DIR,
          reason: str = typer.Option("", "--reason", help="Why (kept on the policy).")) -> None:
    """Emergency stop: deny every risky operation fleet-wide until `kokpit risk resume`."""
    from kokpit.api.risk import OperationType
    from kokpit.client import AlreadyExistsError
    from kokpit.runtime.permits import RISK_POLICY

    path = _kubeconfig(kubeconfig, data_dir)
    ops = [o.value for o in OperationType]
    body: Obj = {"apiVersion": "kokpit.io/v1alpha1", "kind": "RiskPolicy",
            "metadata": {"name": PAUSE_POLICY, "annotations": {"kokpit.io/reason": reason or "kokpit risk pause"}},
            "spec": {"operations": ops, "scope": {"allClusters": True},
                     "paused": True}}

    async def go() -> None:
        async with await _client(path) as c:
            try:
                await c.create(RISK_POLICY, body)
            except AlreadyExistsError:
                await c.patch(RISK_POLICY, PAUSE_POLICY, {"spec": {"paused": True, "operations": ops}})

    _run(go())
    typer.echo(f"paused: every risky operation is denied (RiskPolicy {PAUSE_POLICY}); running operations "
               "finish, new permits wait. Undo with `kokpit risk resume`.")


@risk_app.command("resume")
def resume(kubeconfig: Path | None = _KUBECONFIG, data_dir: Path | None = _DATA_DIR) -> None:
    """Lift `kokpit risk pause`."""
    from kokpit.client import NotFoundError
    from kokpit.runtime.permits import RISK_POLICY

    path = _kubeconfig(kubeconfig, data_dir)

    async def go() -> bool:
        async with await _client(path) as c:
            try:
                await c.delete(RISK_POLICY, PAUSE_POLICY)
                return True
            except NotFoundError:
                return False

    typer.echo("resumed: risky operations are decided by the policies again" if _run(go())
               else "not paused (nothing to resume)")


@risk_app.command("reset")
def reset(breaker: str = typer.Argument(..., help="The RiskPolicy whose failure breakers to reset."),
          kubeconfig: Path | None = _KUBECONFIG, data_dir: Path | None = _DATA_DIR) -> None:
    """Close the tripped failure breakers of a policy (failures before now no longer count)."""
    from kokpit.client import NotFoundError
    from kokpit.operators.risk import RESET_ANNOTATION
    from kokpit.runtime.permits import RISK_POLICY

    path = _kubeconfig(kubeconfig, data_dir)
    name = breaker.split("/", 1)[0]
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    async def go() -> list[Obj]:
        async with await _client(path) as c:
            try:
                p = await c.patch(RISK_POLICY, name, {"metadata": {"annotations": {RESET_ANNOTATION: now}}})
            except NotFoundError:
                names = [x["metadata"]["name"] for x in (await c.list(RISK_POLICY)).items]
                fail(f"no RiskPolicy {name!r}; policies: {', '.join(names) or 'none'}")
            return [b for b in (p.get("status") or {}).get("breakers") or [] if b.get("tripped")]

    open_ = _run(go())
    what = ", ".join(f"{b['operation']} in {b['scope']}" for b in open_) or "no breaker was open"
    typer.echo(f"reset requested at {now} for policy {name} ({what}); the risk center closes them and records "
               "a BreakerReset event")


# ------------------------------------------------------------------------------------------ the controller
def risk_center(
    kubeconfig: Path | None = typer.Option(None, "--kubeconfig", help="Kubeconfig of the meta cluster."),
    metrics_port: int | None = METRICS_PORT,
    metrics_host: str = METRICS_HOST,
    metrics_token_file: Path | None = METRICS_TOKEN_FILE,
    default_policies: bool = typer.Option(False, "--default-policies",
                                          help="Create the shipped RiskPolicies that are missing."),
    leader_elect: bool = typer.Option(True, "--leader-elect/--no-leader-elect",
                                      help="Decide only while holding the kokpit-risk-center Lease."),
    gate_interval: float = typer.Option(5.0, "--gate-interval", min=0.1, help="Seconds between gate checks."),
    probe_interval: float = typer.Option(5.0, "--probe-interval", min=0.1,
                                         help="Seconds between synthetic probe Pods per cluster."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Run the risk center: decide Permits against the RiskPolicies (kill -9 safe: budgets live in the API)."""
    from kokpit.operators.risk import CenterOptions, run_center

    opts = CenterOptions(gate_interval=gate_interval, probe_interval=probe_interval)
    serve(lambda: run_center(kubeconfig, opts, http_port=metrics_port, http_host=metrics_host,
                             leader_election=leader_elect, defaults=default_policies,
                             metrics_tokens=metrics_tokens(metrics_port, metrics_token_file)), kubeconfig, verbose)


def register(app: typer.Typer) -> None:
    app.command("risk-center")(risk_center)
    app.add_typer(risk_app, name="risk")
