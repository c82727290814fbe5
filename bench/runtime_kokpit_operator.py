"""The benchmark's trivial operator written with kokpit.runtime: copy ``spec.value`` into ``status.value``.

Why a file of its own: bench/runtime.py runs it as a subprocess so its peak RSS is the operator's alone,
measured the same way as the kopf twin (bench/runtime_kopf_operator.py). It is also the smallest real
example of a kokpit operator: a shared informer, a level-triggered controller reading only from the cache,
and one status merge patch per object that needs it (none for objects already converged).

    python bench/runtime_kokpit_operator.py KUBECONFIG NAMESPACE [--workers N] [--report FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from pathlib import Path

from kokpit.client import Client, Kind
from kokpit.runtime import Manager, Request, Result, strip_managed_fields

__all__ = ["THING", "main"]

THING = Kind("bench.kokpit.io", "v1", "Thing", "things")


async def run(kubeconfig: str, namespace: str, workers: int, report: Path | None) -> None:
    client = Client.from_kubeconfig(kubeconfig, field_manager="bench-kokpit")
    # reconciles never read managedFields: keeping them out of the cache saves ~2.5 KB per object
    mgr = Manager(client, http_port=None, cache_transform=strip_managed_fields)
    things = mgr.informers.informer(THING, namespace)

    async def reconcile(req: Request) -> Result | None:
        obj = things.store.get_by_name(req.name, req.namespace)
        if obj is None:  # deleted: nothing to converge
            return None
        value = (obj.get("spec") or {}).get("value")
        if (obj.get("status") or {}).get("value") == value:
            return None
        await client.patch_status(THING, req.name, {"status": {"value": value}}, req.namespace)
        return None

    ctl = mgr.controller("copy", reconcile, workers=workers, needs_leader_election=False)
    ctl.for_(things)
    try:
        await mgr.run()
    finally:
        if report is not None:
            reg = client.metrics.registry
            out = {
                "reconciles": sum(
                    s.value
                    for m in reg.collect()
                    if m.name == "kokpit_reconcile"
                    for s in m.samples
                    if s.name == "kokpit_reconcile_total"
                ),
                "requests": {
                    f"{s.labels['verb']} {s.labels['code']}": s.value
                    for m in reg.collect()
                    if m.name == "kokpit_client_requests"
                    for s in m.samples
                    if s.name == "kokpit_client_requests_total"
                },
                "lists": things.lists,
            }
            await asyncio.to_thread(report.write_text, json.dumps(out))
        await client.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kubeconfig")
    p.add_argument("namespace")
    p.add_argument("--workers", type=int, default=32)
    p.add_argument("--report", type=Path, help="write reconcile/request counts here as JSON on exit")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency, but the operator does not need it
        pass
    asyncio.run(run(args.kubeconfig, args.namespace, args.workers, args.report))


if __name__ == "__main__":
    main()
