"""Issue 13: a component `kokpit up` supervises that keeps failing is a Warning Event a person sees
(`kubectl get events --field-selector reason=BackOff`, `kubectl describe node local`), not only a line on
`kokpit up`'s screen.  A real supervised process that exits at once, a real API server."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from kokpit.apiserver.testing import ApiServerProcess
from kokpit.client import EVENT, Client
from kokpit.up._events import ComponentEvents
from kokpit.up._supervisor import Child


async def test_a_component_that_keeps_exiting_is_a_warning_event_on_node_local(apiserver: ApiServerProcess,
                                                                               tmp_path: Path) -> None:
    client = Client.from_kubeconfig(apiserver.kubeconfig)
    events = ComponentEvents()
    events.bind(client)
    log_file = tmp_path / "logs" / "cluster-operator.log"
    child = Child("cluster-operator", [sys.executable, "-c", "import sys; sys.exit(3)"], log_file,
                  on_exit=lambda name, code, _delay: events.exited(name, code, log_file),
                  backoff_base=0.05, backoff_cap=0.1)
    try:
        await child.start()
        deadline = time.monotonic() + 30
        while True:
            found = [e for e in (await client.list(EVENT, "default")).items if e["reason"] == "BackOff"]
            if found and found[0]["count"] >= 2:
                break
            assert time.monotonic() < deadline, f"no repeated BackOff Event: {found}"
            await asyncio.sleep(0.1)
        assert len(found) == 1, found  # repeats aggregate into one Event's count
        ev = found[0]
        assert ev["type"] == "Warning"
        assert ev["involvedObject"]["kind"] == "Node" and ev["involvedObject"]["name"] == "local"
        assert ev["message"] == f"cluster-operator exited with code 3; kokpit up restarts it with back-off (log: {log_file})"
        assert ev["source"]["component"] == "kokpit-up"
    finally:
        await child.stop()
        await events.close()
        await client.close()
