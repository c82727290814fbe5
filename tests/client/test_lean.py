"""The lean keep-alive path against the real server: auth and TLS from the kubeconfig, connection reuse,
error statuses, and recovery after the server drops connections."""

from __future__ import annotations

import orjson

from kokpit.apiserver.testing import ApiServerProcess
from kokpit.client import LEASE, Client, ClientMetrics, LeanPool


async def test_lean_pool_requests(apiserver: ApiServerProcess) -> None:
    async with Client.from_kubeconfig(apiserver.kubeconfig) as client:
        await client.create(LEASE, {"metadata": {"name": "hb"}, "spec": {"holderIdentity": "a"}}, "default")
        metrics = ClientMetrics()
        pool = LeanPool.for_config(client.config, size=2, metrics=metrics)
        assert pool is not None
        try:
            path = LEASE.object_path("hb", "default")
            for i in range(5):
                code, data = await pool.request("PATCH", path, orjson.dumps({"spec": {"holderIdentity": f"h{i}"}}),
                                                "application/merge-patch+json")
                assert code == 200 and orjson.loads(data)["spec"]["holderIdentity"] == f"h{i}"
            assert len(pool._idle) == 1  # sequential requests reuse one connection
            code, data = await pool.request("GET", LEASE.object_path("missing", "default"))
            assert code == 404 and orjson.loads(data)["reason"] == "NotFound"
            assert metrics.requests.labels("patch", "200")._value.get() == 5

            apiserver.restart()  # the pooled connection is now dead: retried on a fresh one
            code, data = await pool.request("GET", path)
            assert code == 200 and orjson.loads(data)["spec"]["holderIdentity"] == "h4"
        finally:
            await pool.close()
