"""In-use protection: finalizer kept, a deletion held while users remain (once warned), released after."""

from __future__ import annotations

import datetime as dt
from typing import Any

from kokpit.client import Kind
from kokpit.runtime.protection import IN_USE_FINALIZER, protect, users_message

from .conftest import FakeClient

PV = Kind("kokpit.io", "v1alpha1", "ThingVersion", "thingversions", namespaced=False)
NOW = dt.datetime(2026, 12, 6, tzinfo=dt.UTC)


async def test_protect_holds_a_deletion_until_the_last_user_is_gone() -> None:
    client = FakeClient()
    warned: list[tuple[str, str]] = []

    async def warn(obj: Any, reason: str, message: str) -> None:
        warned.append((reason, message))

    async def run(users: list[str]) -> str:
        obj = await client.get(PV, "v1")
        return await protect(client, PV, obj, users, user_kind="Things", now=NOW, warn=warn)

    await client.create(PV, {"metadata": {"name": "v1"}, "spec": {}})
    assert await run([]) == "protected"
    assert (await client.get(PV, "v1"))["metadata"]["finalizers"] == [IN_USE_FINALIZER]
    assert await run(["a"]) == "", "protected already: nothing to do, used or not"
    obj = client.objects[("thingversions", "", "v1")]
    obj["metadata"]["deletionTimestamp"] = "2026-12-06T00:00:00Z"  # kubectl delete: the server marks it
    assert await run(["a", "b"]) == "held"
    c = (await client.get(PV, "v1"))["status"]["conditions"][0]
    assert (c["type"], c["status"], c["reason"]) == ("Deleting", "True", "InUse")
    assert c["message"] == "waiting for Things a, b to stop using it"
    assert warned == [("InUse", "deletion of ThingVersion v1 is held: waiting for Things a, b to stop using it")]
    assert await run(["a", "b"]) == "" and len(warned) == 1, "the same users: no second write, no second Event"
    assert await run(["b"]) == "held" and len(warned) == 2
    assert await run([]) == "released"
    assert (await client.get(PV, "v1"))["metadata"]["finalizers"] == []


def test_users_message_lists_ten_and_counts_the_rest() -> None:
    assert users_message("Machines", [f"n{i}" for i in range(12)]) == (
        "waiting for Machines n0, n1, n2, n3, n4, n5, n6, n7, n8, n9 (and 2 more) to stop using it")
