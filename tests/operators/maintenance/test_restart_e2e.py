"""kill -9 of the flow controller in the middle of a reboot and of a reinstall (issue 15, "Done when"): the
restarted controller finds the repair intent it wrote before calling the driver, asks the simulator about
that same request id, and finishes the flows — the host's durable action log shows one reboot and one
reinstall, never two."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from tests.operators.maintenance.conftest import Fleet, eventually, fast_policy, report_fault

Obj = dict[str, Any]


async def test_kill_9_mid_repair_resumes_without_repeating_a_reboot_or_a_reinstall(
        fleet_factory: Callable[..., Awaitable[Fleet]]) -> None:
    policy = fast_policy()
    for f in policy["spec"]["flows"]:
        f["timeout"] = "60s"  # longer than the repairs: this test is about restarts, not escalation
    # 4 nodes: node-isolate's 50% lets both flows isolate at once
    fleet = await fleet_factory(nodes=4, repair_seconds=12.0, policy=policy)
    c = fleet.c
    rb, ri = fleet.nodes[0], fleet.nodes[1]
    assert fleet.sim is not None and fleet.sim.book is not None
    book = fleet.sim.book
    try:
        book.fault(rb, "hang")
        await report_fault(c, rb, "kernel-deadlock", "reboot")
        await report_fault(c, ri, "os-corrupted", "reinstall")

        async def both_repairing() -> bool:
            acts = (await fleet.actions(rb)) + (await fleet.actions(ri))
            return "reboot-started" in acts and "reinstall-started" in acts

        await eventually(both_repairing, 60, "the reboot and the reinstall under way")
        for n in (rb, ri):  # the intent was on record before the driver was asked
            f = await fleet.flow_of(n)
            assert f is not None and f["status"]["repair"]["requestId"] in book.host(n).repairs
        assert any(book.host(n).repairing for n in (rb, ri))  # killed while a repair runs
        fleet.kill_operator()
        fleet.start_operator()
        for n in (rb, ri):
            await eventually(lambda n=n: fleet.completed(n), 90, f"{n} repaired after the restart")
        for n, verb in ((rb, "reboot"), (ri, "reinstall")):
            acts = await fleet.actions(n)
            assert acts.count(f"{verb}-started") == 1 and acts.count(f"{verb}-done") == 1, (n, acts)
            f = await fleet.flow_of(n)
            assert f is not None
            assert [h["outcome"] for h in f["status"]["history"]] == ["Succeeded"], f["status"]["history"]
        # the reinstall wiped the components; the machine operator installed them again
        acts = await fleet.actions(ri)
        after = acts[acts.index("reinstall-done") + 1:]
        assert after.count("installed") >= 2, acts
    except BaseException:
        print(fleet.operator_log())
        raise
