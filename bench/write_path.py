"""Micro-benchmark of the API server's write path in process: what one PATCH costs the server, without HTTP.

Why: at 10,000 nodes the server spends its core on ~1,000 Lease renewals and ~400 Node status patches a
second; this isolates that path (decode the stored object, patch, default, validate, managedFields, store)
so a change to it can be compared back to back on the same machine — run it on the old and the new code
and compare the two lines; absolute figures alone say little on a shared machine.

It builds a server (storage with synchronous=OFF: the fsync is not what is measured) in a temporary
directory, creates N Leases and N Nodes with a realistic status, then times 20 rounds of Lease renewals
(merge patches) and 6 rounds of Node Ready-condition updates (strategic patches on /status), N at a time,
printing wall time and this process's CPU time per patch (CPU time is the steadier of the two on a shared
machine).

    .venv/bin/python bench/write_path.py            # N=500
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from kokpit.apiserver.rest import WriteOptions
from kokpit.apiserver.server import ServerOptions, build


def _node(i: int) -> dict[str, Any]:
    conds = [{"type": t, "status": "False", "reason": "KubeletHasSufficient", "message": "m" * 40}
             for t in ("MemoryPressure", "DiskPressure", "PIDPressure", "Ready")]
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": f"n{i}", "labels": {f"label-{j}": "value" for j in range(10)}},
            "status": {"conditions": conds, "nodeInfo": {"kubeletVersion": "v1.30.0", "osImage": "x" * 40},
                       "images": [{"names": [f"registry.example/image-{k}:v1"], "sizeBytes": k} for k in range(20)]}}


async def run(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        built = await build(ServerOptions(data_dir=Path(tmp)), None)
        built.store._synchronous = "OFF"
        rest, reg = built.rest, built.registry
        leases = reg.get("coordination.k8s.io", "v1", "leases")
        nodes = reg.get("", "v1", "nodes")
        assert leases is not None and nodes is not None
        opts = WriteOptions(field_manager="bench")
        status = WriteOptions(field_manager="bench", subresource="status")
        try:
            for i in range(n):
                await rest.create(leases, "kube-node-lease", {
                    "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": f"n{i}", "namespace": "kube-node-lease"},
                    "spec": {"holderIdentity": f"n{i}", "leaseDurationSeconds": 40}}, opts)
                await rest.create(nodes, None, _node(i), opts)
            t0, c0 = time.perf_counter(), time.process_time()
            for r in range(20):
                await asyncio.gather(*(rest.patch(leases, "kube-node-lease", f"n{i}", "merge", {
                    "spec": {"renewTime": f"2026-01-01T00:00:{r:02d}.000000Z"}}, opts) for i in range(n)))
            t1, c1 = time.perf_counter(), time.process_time()
            for r in range(6):
                await asyncio.gather(*(rest.patch(nodes, None, f"n{i}", "strategic", {"status": {"conditions": [
                    {"type": "Ready", "status": "True", "reason": f"r{r}", "message": "ok"}]}}, status)
                    for i in range(n)))
            t2, c2 = time.perf_counter(), time.process_time()
            print(f"N={n}: Lease renewal (merge patch) {(t1 - t0) / (20 * n) * 1e6:.0f} µs "
                  f"(CPU {(c1 - c0) / (20 * n) * 1e6:.0f} µs); Node Ready update (strategic patch on /status) "
                  f"{(t2 - t1) / (6 * n) * 1e6:.0f} µs (CPU {(c2 - c1) / (6 * n) * 1e6:.0f} µs)")
        finally:
            await built.controllers.stop()
            await built.store.close()
            built.lock.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--objects", type=int, default=500, help="Leases and Nodes (default 500)")
    asyncio.run(run(ap.parse_args().objects))


if __name__ == "__main__":
    main()
