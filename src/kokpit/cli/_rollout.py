"""`kokpit rollout-controller` (run it) and `kokpit rollout create|status|pause|resume|promote|abort|undo|history`.

Every control command is a patch of the Rollout's spec (``paused``, ``promotedStep``, ``abort``, ``undo``), so
``kubectl patch`` does the same and the controller stays level-triggered; the package also installs the
``kubectl-kokpit`` plugin, so ``kubectl kokpit rollout ...`` runs these commands (the way Argo Rollouts ships
``kubectl argo rollouts``).  The meta cluster is found from ``--kubeconfig``, else ``--data-dir`` of a running
``kokpit up``, else ``$KUBECONFIG``.
"""

from __future__ import annotations

import re
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
from kokpit.cli._risk import _kubeconfig, _run

__all__ = ["parse_selector", "parse_steps", "register"]

Obj = dict[str, Any]
rollout_app = typer.Typer(add_completion=False, no_args_is_help=True,
                          help="Canary rollouts of a ClusterPackageVersion over Clusters or of a package change "
                               "over Machines.")
_KUBECONFIG = typer.Option(None, "--kubeconfig", help="Kubeconfig of the meta cluster.")
_DATA_DIR = typer.Option(None, "--data-dir", help="The data dir of a running `kokpit up`.")
_NS = typer.Option("default", "--namespace", "-n", help="Namespace of the Rollout (and of its Clusters).")
_NAME = typer.Argument(..., help="The Rollout.")


def _rollout_kind() -> Any:
    from kokpit.operators.rollout import ROLLOUT

    return ROLLOUT


async def _client(path: Path | None) -> Any:
    from kokpit.client import Client

    return Client.from_kubeconfig(path, field_manager="kokpit-rollout-cli", max_retries=1, timeout=10.0)


# ------------------------------------------------------------------------------------------ parsing
_REQ = re.compile(r"^\s*([A-Za-z0-9./_-]+)\s*(?:(==|=|!=)\s*([A-Za-z0-9._-]*)|\s+(in|notin)\s*\(([^)]*)\))?\s*$")


def parse_selector(text: str) -> Obj:
    """kubectl's label selector syntax (``env=prod,tier in (a,b),!legacy``) as a metav1.LabelSelector."""
    labels: dict[str, str] = {}
    exprs: list[Obj] = []
    for part in re.split(r",(?![^(]*\))", text.strip()) if text.strip() else []:
        part = part.strip()
        if part.startswith("!"):
            exprs.append({"key": part[1:].strip(), "operator": "DoesNotExist"})
            continue
        m = _REQ.match(part)
        if m is None:
            fail(f"cannot read selector requirement {part!r}: use key=value, key!=value, key in (a,b), key, !key")
        key, op, value, setop, values = m.groups()
        if op in ("=", "=="):
            labels[key] = value
        elif op == "!=":
            exprs.append({"key": key, "operator": "NotIn", "values": [value]})
        elif setop:
            vals = [v.strip() for v in values.split(",") if v.strip()]
            exprs.append({"key": key, "operator": "In" if setop == "in" else "NotIn", "values": vals})
        else:
            exprs.append({"key": key, "operator": "Exists"})
    out: Obj = {}
    if labels:
        out["matchLabels"] = labels
    if exprs:
        out["matchExpressions"] = exprs
    return out


def parse_steps(text: str) -> list[Obj]:
    """``1,10%,pause,pause:5m,analysis:2m,100%`` as Rollout steps (counts and percentages are canaries)."""
    out: list[Obj] = []
    for raw in (s.strip() for s in text.split(",")):
        if not raw:
            continue
        if raw.isdigit():
            out.append({"canary": int(raw)})
        elif raw.endswith("%") and raw[:-1].isdigit():
            out.append({"canary": raw})
        elif raw == "pause":
            out.append({"pause": {}})
        elif raw.startswith("pause:"):
            out.append({"pause": {"duration": raw.split(":", 1)[1]}})
        elif raw.startswith("analysis"):
            dur = raw.split(":", 1)[1] if ":" in raw else "0s"
            out.append({"analysis": {"duration": dur}})
        else:
            fail(f"cannot read step {raw!r}: use a count (1), a percentage (10%), pause, pause:5m or analysis:1m")
    return out


# ------------------------------------------------------------------------------------------ create
async def _business_mpv_components(meta: Any, namespace: str, clusters: list[str], mpv: str) -> str:
    """The component MachinePackageVersion ``mpv`` carries — checked in every business cluster of ``clusters``
    (through its kubeconfig Secret, as the controller reaches it): it must exist in each and carry the same
    component everywhere, or the rollout could not change that cluster's Machines."""
    from kokpit.client import KubeconfigUnavailable, NotFoundError, read_business_kubeconfig
    from kokpit.operators.rollout._fleet import MPV

    found: dict[str, str] = {}
    for cluster in clusters:
        try:
            kc = await read_business_kubeconfig(meta, namespace, cluster)
        except KubeconfigUnavailable as e:
            fail(f"business cluster {namespace}/{cluster} cannot be reached: {e} (does the Cluster exist and run?)")
        async with kc.client(max_retries=1, timeout=10.0) as b:
            try:
                obj = await b.get(MPV, mpv)
            except NotFoundError:
                fail(f"MachinePackageVersion {mpv} does not exist in business cluster {cluster}")
        found[cluster] = str(obj["spec"]["component"])
    if len(set(found.values())) > 1:
        fail(f"MachinePackageVersion {mpv} carries different components in the business clusters: "
             + ", ".join(f"{c}: {comp}" for c, comp in sorted(found.items())))
    return next(iter(found.values()))


@rollout_app.command("create")
def create(
    name: str = _NAME,
    namespace: str = _NS,
    cluster: list[str] = typer.Option([], "--cluster", help="A Cluster by name (repeatable)."),
    clusters: str | None = typer.Option(None, "--clusters", help="Clusters by label selector (env=prod)."),
    package_version: str | None = typer.Option(None, "--package-version",
                                               help="Release the Clusters to this ClusterPackageVersion."),
    replace: list[str] = typer.Option([], "--replace", help="OLD_MPV=NEW_MPV on the Machines (repeatable)."),
    add: list[str] = typer.Option([], "--add", help="Add this MachinePackageVersion (repeatable)."),
    remove: list[str] = typer.Option([], "--remove", help="Remove this component (repeatable)."),
    machines: str = typer.Option("", "--machines", help="Machines by label selector (default: every Machine)."),
    steps: str = typer.Option("1,10%,100%", "--steps", help="e.g. 1,10%,pause,50%,analysis:1m,100%"),
    max_unavailable: str = typer.Option("1", "--max-unavailable", help="Targets in flight at once in a batch."),
    bake_time: str = typer.Option("0s", "--bake-time", help="Wait after each canary batch."),
    max_failures: str = typer.Option("0", "--max-failures", help="Failed targets tolerated before aborting."),
    rollback: bool = typer.Option(True, "--rollback/--no-rollback", help="Roll back automatically on abort."),
    priority_label: str | None = typer.Option(None, "--priority-label", help="Take higher values first."),
    topology_label: str | None = typer.Option(None, "--topology-label", help="Spread batches across its values."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the Rollout as YAML; create nothing."),
    kubeconfig: Path | None = _KUBECONFIG, data_dir: Path | None = _DATA_DIR,
) -> None:
    """Create a Rollout: --cluster/--clusters with --package-version (control planes), or with --replace/--add/
    --remove (node components of those business clusters' Machines)."""
    import yaml

    if not cluster and clusters is None:
        fail("name the Clusters: --cluster NAME (repeatable) or --clusters SELECTOR")
    node_change = bool(replace or add or remove)
    if (package_version is None) == (not node_change):
        fail("say what to roll out: --package-version CPV (control planes) or --replace OLD=NEW / --add MPV / "
             "--remove COMPONENT (node components), not both")
    for r in replace:
        if "=" not in r or not all(r.split("=", 1)):
            fail(f"--replace {r!r}: use OLD_MPV=NEW_MPV")
    if clusters is not None and not clusters.strip():
        fail("--clusters '': an empty selector would select every Cluster of the namespace; name them with "
             "--cluster NAME or give a requirement (e.g. --clusters env=prod)")
    sel = parse_selector(clusters) if clusters is not None else None

    def num(v: str) -> int | str:
        return int(v) if v.isdigit() else v

    strategy: Obj = {"steps": parse_steps(steps), "maxUnavailable": num(max_unavailable), "bakeTime": bake_time}
    order = {k: v for k, v in (("priorityLabel", priority_label), ("topologyLabel", topology_label)) if v}
    if order:
        strategy["order"] = order
    path = _kubeconfig(kubeconfig, data_dir)

    async def go() -> Obj:
        from kokpit.api.rollout import RolloutSpec
        from kokpit.client import NotFoundError
        from kokpit.operators.rollout._targets import CLUSTER, CPV

        async with await _client(path) as c:
            target: Obj
            if package_version is not None:
                try:
                    await c.get(CPV, package_version)
                except NotFoundError:
                    fail(f"ClusterPackageVersion {package_version} does not exist (kubectl get cpv lists them)")
                target = {"clusters": {"packageVersion": package_version, **({"names": cluster} if cluster else {}),
                                       **({"selector": sel} if sel is not None else {})}}
            else:
                chosen = list(cluster) or [o["metadata"]["name"] for o in (await c.list(
                    CLUSTER, namespace, label_selector=clusters)).items]
                if not chosen:
                    fail(f"--clusters {clusters!r} selects no Cluster in namespace {namespace}")
                packages: list[Obj] = []
                for r in replace:
                    old, new = r.split("=", 1)
                    comp = await _business_mpv_components(c, namespace, chosen, old)
                    if (new_comp := await _business_mpv_components(c, namespace, chosen, new)) != comp:
                        fail(f"--replace {r}: {new} is a {new_comp} package version, {old} a {comp} one")
                    packages.append({"component": comp, "from": old, "to": new})
                for a in add:
                    packages.append({"component": await _business_mpv_components(c, namespace, chosen, a), "to": a})
                packages += [{"component": comp} for comp in remove]
                target = {"machines": {"packages": packages, "machineSelector": parse_selector(machines),
                                       **({"clusterNames": cluster} if cluster else {}),
                                       **({"clusterSelector": sel} if sel is not None else {})}}
            spec: Obj = {"target": target, "strategy": strategy,
                         "failurePolicy": {"maxFailures": num(max_failures), "rollback": rollback}}
            try:
                RolloutSpec.model_validate(spec)
            except ValueError as e:
                fail(f"invalid rollout: {e}")
            body = {"apiVersion": "kokpit.io/v1alpha1", "kind": "Rollout",
                    "metadata": {"name": name, "namespace": namespace}, "spec": spec}
            if dry_run:
                return body
            out: Obj = await c.create(_rollout_kind(), body, namespace)
            return out

    made = _run(go())
    if dry_run:
        typer.echo(yaml.safe_dump(made, sort_keys=False).rstrip())
        return
    typer.echo(f"rollout.kokpit.io/{name} created; follow it with `kokpit rollout status {name} -n {namespace}`")


# ------------------------------------------------------------------------------------------ control
def _patch(name: str, namespace: str, spec: Obj | None, path: Path | None, *, promote: bool = False) -> Obj:
    async def go() -> Obj:
        from kokpit.client import NotFoundError

        async with await _client(path) as c:
            try:
                body = spec
                if promote:
                    cur = await c.get(_rollout_kind(), name, namespace)
                    body = {"promotedStep": int((cur.get("status") or {}).get("currentStep") or 0)}
                out: Obj = await c.patch(_rollout_kind(), name, {"spec": body}, namespace)
                return out
            except NotFoundError:
                fail(f"no Rollout {namespace}/{name}")

    out: Obj = _run(go())
    return out


@rollout_app.command("pause")
def pause(name: str = _NAME, namespace: str = _NS, kubeconfig: Path | None = _KUBECONFIG,
          data_dir: Path | None = _DATA_DIR) -> None:
    """Start no new target (targets in flight finish): spec.paused=true."""
    _patch(name, namespace, {"paused": True}, _kubeconfig(kubeconfig, data_dir))
    typer.echo(f"rollout {namespace}/{name} paused")


@rollout_app.command("resume")
def resume(name: str = _NAME, namespace: str = _NS, kubeconfig: Path | None = _KUBECONFIG,
           data_dir: Path | None = _DATA_DIR) -> None:
    """Undo `pause`: spec.paused=false."""
    _patch(name, namespace, {"paused": False}, _kubeconfig(kubeconfig, data_dir))
    typer.echo(f"rollout {namespace}/{name} resumed")


@rollout_app.command("promote")
def promote(name: str = _NAME, namespace: str = _NS, kubeconfig: Path | None = _KUBECONFIG,
            data_dir: Path | None = _DATA_DIR) -> None:
    """Release the pause step the rollout waits at: spec.promotedStep = status.currentStep."""
    out = _patch(name, namespace, None, _kubeconfig(kubeconfig, data_dir), promote=True)
    typer.echo(f"rollout {namespace}/{name} promoted past step {out['spec'].get('promotedStep')}")


@rollout_app.command("abort")
def abort(name: str = _NAME, namespace: str = _NS, kubeconfig: Path | None = _KUBECONFIG,
          data_dir: Path | None = _DATA_DIR) -> None:
    """Stop; roll every touched target back if failurePolicy.rollback: spec.abort=true."""
    out = _patch(name, namespace, {"abort": True}, _kubeconfig(kubeconfig, data_dir))
    back = (out["spec"].get("failurePolicy") or {}).get("rollback", True)
    typer.echo(f"rollout {namespace}/{name} aborted" + ("; rolling back every touched target" if back else ""))


@rollout_app.command("undo")
def undo(name: str = _NAME, namespace: str = _NS, kubeconfig: Path | None = _KUBECONFIG,
         data_dir: Path | None = _DATA_DIR) -> None:
    """Roll every touched target of a completed (or aborted) rollout back to its previous version."""
    _patch(name, namespace, {"undo": True}, _kubeconfig(kubeconfig, data_dir))
    typer.echo(f"rollout {namespace}/{name}: rolling back every touched target to its previous version")


# ------------------------------------------------------------------------------------------ reading
def _get(name: str, namespace: str, path: Path | None) -> Obj:
    async def go() -> Obj:
        from kokpit.client import NotFoundError

        async with await _client(path) as c:
            try:
                out: Obj = await c.get(_rollout_kind(), name, namespace)
                return out
            except NotFoundError:
                fail(f"no Rollout {namespace}/{name}")

    out: Obj = _run(go())
    return out


def status_text(obj: Obj) -> str:
    """What `kokpit rollout status` prints: state, step, counts, per-step times, targets needing attention."""
    spec, st = obj.get("spec") or {}, obj.get("status") or {}
    steps = (spec.get("strategy") or {}).get("steps") or []
    lines = [f"Name:      {obj['metadata'].get('namespace')}/{obj['metadata']['name']}",
             f"Revision:  {st.get('revision', 0)}  ({st.get('change') or '-'})",
             f"State:     {st.get('phase') or 'Pending'}",
             f"Step:      {st.get('currentStep', 0)}/{len(steps)}",
             f"Updated:   {st.get('updated') or '-'}",
             "Targets:   " + (", ".join(f"{k} {v}" for k, v in sorted((st.get("counts") or {}).items())) or "-")]
    for c in st.get("conditions") or []:
        if c.get("status") == "True" or c.get("type") in ("Valid", "RiskPermitted", "Progressing"):
            lines.append(f"  {c['type']}={c['status']} {c.get('reason', '')}: {c.get('message', '')}".rstrip(": "))
    lines.append("Steps:")
    recs = {s.get("index"): s for s in st.get("steps") or []}
    for i, s in enumerate(steps):
        what = ", ".join(f"{k} {v if not isinstance(v, dict) else (v.get('duration') or 'until promoted')}"
                         for k, v in s.items())
        r = recs.get(i) or {}
        mark = "→" if i == st.get("currentStep") and st.get("phase") not in ("Completed", "RolledBack") else " "
        lines.append(f" {mark} {i}: {what:<28} {r.get('startedAt') or '':<21} {r.get('finishedAt') or '':<21} "
                     f"{r.get('outcome') or ''}".rstrip())
    notable = [t for t in st.get("targets") or [] if t.get("state") in ("Failed", "Modified", "Updating",
                                                                        "RollingBack")]
    if notable:
        lines.append("Targets needing attention or in flight:")
        for t in notable[:50]:
            lines.append(f"  {t['name']}: {t['state']} {t.get('message') or ''}".rstrip())
        if len(notable) > 50:
            lines.append(f"  ... {len(notable) - 50} more")
    if st.get("targetsOmitted"):
        lines.append(f"{st['targetsOmitted']} of {st.get('total')} target(s) are counted, not named, in the status; "
                     "every record: kubectl get rollouttargetsets -n "
                     f"{obj['metadata'].get('namespace')} -l kokpit.io/rollout-uid={obj['metadata'].get('uid')} "
                     "-o yaml")
    return "\n".join(lines)


@rollout_app.command("status")
def status(name: str = _NAME, namespace: str = _NS, kubeconfig: Path | None = _KUBECONFIG,
           data_dir: Path | None = _DATA_DIR) -> None:
    """The current step, per-step start/end/outcome, target counts by state and the targets in trouble."""
    typer.echo(status_text(_get(name, namespace, _kubeconfig(kubeconfig, data_dir))))


@rollout_app.command("history")
def history(name: str = _NAME, namespace: str = _NS, kubeconfig: Path | None = _KUBECONFIG,
            data_dir: Path | None = _DATA_DIR) -> None:
    """Past revisions (what each changed, how it ended) and the current one."""
    obj = _get(name, namespace, _kubeconfig(kubeconfig, data_dir))
    st = obj.get("status") or {}
    typer.echo(f"{'REVISION':<9} {'OUTCOME':<12} {'TARGETS':>7} {'UPDATED':>7} {'FAILED':>6}  CHANGE")
    for h in st.get("history") or []:
        typer.echo(f"{h['revision']:<9} {h.get('outcome', ''):<12} {h.get('targets', 0):>7} {h.get('updated', 0):>7} "
                   f"{h.get('failed', 0):>6}  {h.get('change', '')}")
    counts = st.get("counts") or {}
    typer.echo(f"{st.get('revision', 0):<9} {(st.get('phase') or 'Pending') + '*':<12} "
               f"{st.get('total') or len(st.get('targets') or []):>7} {counts.get('Updated', 0):>7} {counts.get('Failed', 0):>6}  "
               f"{st.get('change') or ''}")


# ------------------------------------------------------------------------------------------ the controller
def rollout_controller(
    kubeconfig: Path | None = typer.Option(None, "--kubeconfig", help="Kubeconfig of the meta cluster."),
    metrics_port: int | None = METRICS_PORT,
    metrics_host: str = METRICS_HOST,
    metrics_token_file: Path | None = METRICS_TOKEN_FILE,
    leader_elect: bool = typer.Option(True, "--leader-elect/--no-leader-elect",
                                      help="Act only while holding the kokpit-rollout-controller Lease."),
    lease_namespace: str | None = typer.Option(None, "--lease-namespace", help="Namespace of the Lease "
                                               "(default: the kubeconfig's, or the Pod's)."),
    workers: int = typer.Option(4, "--workers", min=1, help="Rollouts reconciled at once."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Run the rollout controller: canary waves over Clusters and Machines, batch by batch through the risk
    center (kill -9 safe: progress lives in each Rollout's status)."""
    from kokpit.operators.rollout import RolloutOptions, run_controller

    serve(lambda: run_controller(kubeconfig, RolloutOptions(workers=workers), http_port=metrics_port,
                                 http_host=metrics_host, leader_election=leader_elect, lease_namespace=lease_namespace,
                                 metrics_tokens=metrics_tokens(metrics_port, metrics_token_file)), kubeconfig, verbose)


def register(app: typer.Typer) -> None:
    app.command("rollout-controller")(rollout_controller)
    app.add_typer(rollout_app, name="rollout")
