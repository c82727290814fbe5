"""What the risk center keeps of a business cluster's Nodes: one NodeInfo per Node, updated by the informer's
events; only a change of what decisions read (labels, Ready, cordoned) wakes a decision pass."""

from __future__ import annotations

from typing import Any

from kokpit.operators.risk._decide import NodeInfo
from kokpit.operators.risk._observe import ClusterObserver, _Business

Obj = dict[str, Any]


class _SyncedInformer:
    has_synced = True


def _node(name: str, *, ready: bool = True, cordoned: bool = False, kubelet: str = "v1", rv: str = "1") -> Obj:
    return {"metadata": {"name": name, "labels": {"zone": "a"}, "resourceVersion": rv},
            "spec": {"unschedulable": cordoned},
            "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                       "nodeInfo": {"kubeletVersion": kubelet}}}


def test_only_a_change_decisions_read_wakes_the_center_and_passes_share_one_snapshot() -> None:
    wakes = 0

    def woke() -> None:
        nonlocal wakes
        wakes += 1

    obs = ClusterObserver(None, woke)  # type: ignore[arg-type]
    b = _Business("d", None, _SyncedInformer())  # type: ignore[arg-type]
    obs._clusters["ns/c1"] = b
    for i in range(3):
        obs._seen(b, _node(f"n{i}"))
    assert wakes == 3
    first = obs.nodes("ns/c1")
    assert first == {f"n{i}": NodeInfo(f"n{i}", {"zone": "a"}, True) for i in range(3)}
    # a kubelet upgrade rewrites the Node's status: nothing a decision reads, no wake, the same snapshot
    obs._updated(b, _node("n0"), _node("n0", kubelet="v2", rv="2"))
    assert wakes == 3 and obs.nodes("ns/c1") is first
    # cordoned: a wake and a new snapshot (the old one is left as a pass read it)
    obs._updated(b, _node("n1"), _node("n1", cordoned=True, rv="3"))
    assert wakes == 4
    now = obs.nodes("ns/c1")
    assert now is not first and now is not None and now["n1"].available is False and first["n1"].available
    obs._updated(b, _node("n2"), _node("n2", ready=False, rv="4"))
    assert wakes == 5 and obs.nodes("ns/c1")["n2"].available is False  # type: ignore[index]
    obs._gone(b, _node("n0"))
    assert wakes == 6 and set(obs.nodes("ns/c1") or {}) == {"n1", "n2"}
    assert obs.nodes("ns/other") is None


class _Unsynced:
    has_synced = False


def test_a_cluster_is_warming_until_its_first_look_and_first_list_but_not_for_ever() -> None:
    now = [100.0]
    obs = ClusterObserver(None, lambda: None, warmup=30.0, monotonic=lambda: now[0])  # type: ignore[arg-type]
    assert obs.warming("ns/any")  # nothing looked at yet: nobody is known to be unobservable
    obs._looked = True
    assert not obs.warming("ns/missing")  # no kubeconfig after the first look: unobservable, denied as before
    obs._clusters["ns/slow"] = _Business("d", None, _Unsynced(), started=95.0)  # type: ignore[arg-type]
    obs._clusters["ns/ok"] = _Business("d", None, _SyncedInformer(), started=95.0)  # type: ignore[arg-type]
    assert obs.warming("ns/slow") and not obs.warming("ns/ok")
    now[0] = 125.1  # its first list did not finish within warmup: unobservable after all
    assert not obs.warming("ns/slow")
