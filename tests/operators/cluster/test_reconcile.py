"""The cluster reconcile over in-memory stores: provisioning order, release, rollback, repair, bad input,
deletion.  The kubelet and the business API server's answers are fakes the test drives."""

from __future__ import annotations

import base64

import yaml

from kokpit.operators.cluster import Names
from kokpit.runtime import Store

from .conftest import CPV_COMPONENTS, Harness


def _setup(h: Harness, nodes: int = 3) -> None:
    h.cpv("v1", "v1.30.0")
    h.cpv("v2", "v1.31.0")
    h.cluster(cpv="v1", nodes=nodes)


async def test_provisioning_starts_the_api_server_first_then_the_rest(harness: Harness) -> None:
    h = harness
    _setup(h)
    await h.run()
    # first step: PKI, Service, and only the API server Pod
    assert h.pod_names() == ["c1-kube-apiserver-0"]
    assert h.secrets.get_by_name("c1-pki", "default") is not None
    svc = h.services.get_by_name("c1-apiserver", "default")
    assert svc is not None and svc["spec"]["type"] == "NodePort"
    assert {p["name"] for p in svc["spec"]["ports"]} == {"https", "driver", "sim-metrics", "mo-metrics", "sched-metrics",
                                                     "kcm-metrics"}
    assert h.cond("Ready")["status"] == "False" and h.status()["phase"] == "Provisioning"
    assert h.clusters.get_by_name("c1", "default")["metadata"]["finalizers"] == ["kokpit.io/cluster-operator"]
    api = h.pods.get_by_name("c1-kube-apiserver-0", "default")
    args = api["spec"]["containers"][0]["args"]
    assert args[0] == "apiserver" and args[args.index("--version-label") + 1] == "v1.30.0"
    assert args[args.index("--port") + 1] == str(svc["spec"]["ports"][0]["nodePort"])
    assert api["metadata"]["ownerReferences"][0]["kind"] == "Cluster"
    assert any(v.get("hostPath", {}).get("path") == "/var/lib/kokpit/clusters/default/c1/apiserver"
               for v in api["spec"]["volumes"])

    await h.converge()
    assert h.pod_names() == ["c1-kube-apiserver-0", "c1-machine-operator-0", "c1-simulator-0"]
    st = h.status()
    assert h.cond("Ready")["status"] == "True" and h.cond("ControlPlaneReady")["status"] == "True"
    assert st["packageVersion"] == "v1" and st["lastGoodPackageVersion"] == "v1" and st["phase"] == "Ready"
    port = svc["spec"]["ports"][0]["nodePort"]
    assert st["endpoint"] == f"https://127.0.0.1:{port}"
    assert {c["name"]: (c["readyReplicas"], c["healthy"]) for c in st["components"]} == {
        "kube-apiserver": (1, True), "machine-operator": (1, True), "simulator": (1, True)}
    kc = yaml.safe_load(base64.b64decode(h.secrets.get_by_name("c1-kubeconfig", "default")["data"]["value"]))
    assert kc["clusters"][0]["cluster"]["server"] == st["endpoint"]
    tokens = base64.b64decode(h.secrets.get_by_name("c1-pki", "default")["data"]["tokens.json"])
    assert kc["users"][0]["user"]["token"].encode() in tokens
    mo = h.pods.get_by_name("c1-machine-operator-0", "default")["spec"]["containers"][0]["args"]
    drv = next(p["nodePort"] for p in svc["spec"]["ports"] if p["name"] == "driver")
    assert mo[mo.index("--driver-url") + 1] == f"https://127.0.0.1:{drv}"
    pki_data = h.secrets.get_by_name("c1-pki", "default")["data"]
    assert {"driver-ca.crt", "driver-ca.key", "driver.crt", "driver.key", "driver-client.crt",
            "driver-client.key"} <= set(pki_data)  # the node driver's mutual TLS
    # settled: another reconcile writes nothing
    before = len(h.client.writes())
    await h.run()
    assert len(h.client.writes()) == before


async def test_without_simulation_no_simulator_or_machine_operator(harness: Harness) -> None:
    h = harness
    _setup(h, nodes=0)
    await h.converge()
    assert h.pod_names() == ["c1-kube-apiserver-0"]
    assert h.cond("Ready")["status"] == "True"


async def test_release_replaces_one_pod_at_a_time_api_server_first(harness: Harness) -> None:
    h = harness
    _setup(h)
    await h.converge()
    h.cluster(cpv="v2", nodes=3)
    await h.run()
    # only the API server Pod went; the others still run v1
    assert h.pod_versions() == {"c1-machine-operator-0": "v1", "c1-simulator-0": "v1"}
    assert h.cond("Upgrading")["status"] == "True"
    await h.run()
    assert h.pod_versions()["c1-kube-apiserver-0"] == "v2"
    assert h.pod_versions()["c1-simulator-0"] == "v1"  # waits for the API server's post-check
    await h.converge()
    assert set(h.pod_versions().values()) == {"v2"}
    st = h.status()
    assert st["packageVersion"] == "v2" and st["lastGoodPackageVersion"] == "v2"
    assert h.cond("Upgrading")["reason"] == "UpToDate" and h.cond("Ready")["status"] == "True"
    # the simulator went before the machine operator (one at a time: never two deleted in one reconcile)
    deletes = [c[2] for c in h.client.writes("delete", "pods")]
    assert deletes == ["c1-kube-apiserver-0", "c1-simulator-0", "c1-machine-operator-0"]
    # rollback is the same path
    h.cluster(cpv="v1", nodes=3)
    await h.converge()
    assert set(h.pod_versions().values()) == {"v1"} and h.status()["packageVersion"] == "v1"


async def test_a_component_the_same_in_both_releases_is_relabelled_not_restarted(harness: Harness) -> None:
    h = harness
    same = [{"name": n, "image": "kokpit:dev", "args": [n]} for n in ("simulator", "machine-operator")]
    h.cpv("v1", "v1.30.0", [{"name": "kube-apiserver", "args": ["apiserver"]}, *same])
    h.cpv("v2", "v1.31.0", [{"name": "kube-apiserver", "args": ["apiserver"]}, *same])  # only the API server differs
    h.cluster(cpv="v1")
    await h.converge()
    h.cluster(cpv="v2")
    await h.converge()
    assert h.pod_versions() == {"c1-kube-apiserver-0": "v2", "c1-simulator-0": "v2", "c1-machine-operator-0": "v2"}
    assert [c[2] for c in h.client.writes("delete", "pods")] == ["c1-kube-apiserver-0"]
    assert {r["name"]: r["version"] for r in h.status()["components"]} == {
        "kube-apiserver": "v2", "simulator": "v2", "machine-operator": "v2"}
    assert h.status()["packageVersion"] == "v2"


async def test_failed_release_rolls_back_and_says_why(harness: Harness) -> None:
    h = harness
    _setup(h)
    h.cpv("bad", "v1.99.0")
    h.unready_images.add("kokpit:v1.99.0")
    await h.converge()
    h.cluster(cpv="bad", nodes=3)
    await h.converge()  # the new API server Pod never gets ready: in flight until the deadline
    assert h.pod_versions()["c1-kube-apiserver-0"] == "bad"
    assert h.cond("Upgrading")["reason"] == "UpgradeInProgress"
    await h.clock.advance(25)
    await h.run()
    assert h.status()["failedPackageVersion"] == "bad"
    assert h.cond("Upgrading")["reason"] == "RollingBack"
    assert "post-check" in h.cond("Upgrading")["message"]
    assert h.events("ReleaseFailed")
    await h.converge()
    st = h.status()
    assert set(h.pod_versions().values()) == {"v1"}
    assert st["packageVersion"] == "v1" and st["lastGoodPackageVersion"] == "v1"
    up = h.cond("Upgrading")
    assert (up["status"], up["reason"]) == ("False", "RolledBack") and "bad" in up["message"]
    assert h.cond("Ready")["status"] == "True" and h.clusters.get_by_name("c1", "default")["spec"][
        "packageVersion"] == "bad"
    # an operator restart does not retry the failed release
    h.new_reconciler()
    await h.converge()
    assert set(h.pod_versions().values()) == {"v1"}
    # a new pointer clears the failure
    h.cluster(cpv="v2", nodes=3)
    await h.converge()
    assert "failedPackageVersion" not in h.status() and h.status()["packageVersion"] == "v2"


async def test_broken_component_is_replaced_with_backoff_then_degraded(harness: Harness) -> None:
    h = harness
    _setup(h)
    await h.converge()
    sim = h.pods.get_by_name("c1-simulator-0", "default")
    sim["status"]["phase"] = "Failed"
    h.pods.put(sim)
    await h.run()
    assert h.pods.get_by_name("c1-simulator-0", "default") is None  # replaced at once
    # a repair of a broken control plane is no routine step: a Warning naming the Pod and why
    repairs = [e for e in h.events("ComponentReplaced") if e["type"] == "Warning"]
    assert len(repairs) == 1 and repairs[0]["message"].startswith("replaced c1-simulator-0: "), h.events()
    await h.converge()
    assert h.cond("Degraded")["status"] == "False"
    # keeps failing: replaced after backoff, Degraded after max_failures
    for _ in range(3):
        sim = h.pods.get_by_name("c1-simulator-0", "default")
        sim["status"]["phase"] = "Failed"
        h.pods.put(sim)
        await h.run()
        if h.pods.get_by_name("c1-simulator-0", "default") is not None:  # backing off: not yet replaced
            deletes = len(h.client.writes("delete", "pods"))
            await h.run()
            assert len(h.client.writes("delete", "pods")) == deletes
            await h.clock.advance(60)
            await h.run()
        assert h.pods.get_by_name("c1-simulator-0", "default") is None
        await h.converge()
    # third replacement in a row: Degraded with the reason (it was failing when last seen)
    sim = h.pods.get_by_name("c1-simulator-0", "default")
    sim["status"]["phase"] = "Failed"
    h.pods.put(sim)
    await h.clock.advance(120)
    await h.run()
    deg = h.cond("Degraded")
    assert deg["status"] == "True" and deg["reason"] == "ComponentFailing" and "c1-simulator-0" in deg["message"]
    # the replacement runs again: Degraded stays until it has been healthy past its backoff
    await h.converge()
    assert h.cond("Degraded")["status"] == "True"
    await h.clock.advance(200)
    await h.converge()
    assert h.cond("Degraded")["status"] == "False" and h.status()["phase"] == "Ready"


async def test_unready_api_server_pod_is_replaced_after_the_timeout(harness: Harness) -> None:
    h = harness
    _setup(h, nodes=0)
    await h.converge()
    api = h.pods.get_by_name("c1-kube-apiserver-0", "default")
    api["status"]["conditions"][0] = {"type": "Ready", "status": "False", "lastTransitionTime":
                                      "2026-01-01T00:00:00Z"}
    h.pods.put(api)
    h.prober.version = None
    await h.run()
    assert h.pods.get_by_name("c1-kube-apiserver-0", "default") is not None
    assert h.cond("ControlPlaneReady")["status"] == "False"
    await h.clock.advance(11)
    await h.run()
    assert h.pods.get_by_name("c1-kube-apiserver-0", "default") is None
    await h.converge()
    assert h.cond("Ready")["status"] == "True"


async def test_bad_input_sets_conditions_and_tears_nothing_down(harness: Harness) -> None:
    h = harness
    h.cluster(cpv="missing")
    await h.run()
    assert h.cond("Ready")["reason"] == "PackageVersionNotFound" and h.status()["phase"] == "Invalid"
    assert h.pod_names() == [] and not h.secrets.list()
    h.cpv("noapi", "v1.30.0", [{"name": "simulator", "image": "kokpit:x", "args": []}])
    h.cluster(cpv="noapi")
    await h.run()
    assert h.cond("Ready")["reason"] == "InvalidPackageVersion" and h.pod_names() == []
    # a running cluster pointed at a missing release keeps running its last good one
    h.cpv("v1", "v1.30.0")
    h.cluster(cpv="v1")
    await h.converge()
    pods = h.pod_versions()
    h.cluster(cpv="nope")
    await h.converge()
    assert h.pod_versions() == pods
    up = h.cond("Upgrading")
    assert up["reason"] == "PackageVersionNotFound" and "still running v1" in up["message"]
    assert h.cond("Ready")["status"] == "True"
    # issue 13: serving and at the wanted version are separate answers, and a person is told
    assert h.cond("Available")["status"] == "True"
    utd = h.cond("UpToDate")
    assert (utd["status"], utd["reason"]) == ("False", "PackageVersionNotFound") and "still running v1" in utd["message"]
    def warnings() -> list[str]:
        return [e["message"] for e in h.events("PackageVersionNotFound")
                if e["type"] == "Warning" and "nope" in e["message"]]
    assert len(warnings()) == 1 and "still running v1" in warnings()[0], h.events()
    await h.run()
    assert len(warnings()) == 1, "warned once, not on every reconcile"


async def test_status_never_claims_healthy_without_a_release_to_verify(harness: Harness) -> None:
    """Issue 13: a Cluster whose wanted and last good ClusterPackageVersions are both gone (restored from a
    backup, created with --validate=false) stayed Ready with "simulator 1/1 healthy" while nothing was
    verified or repaired."""
    h = harness
    _setup(h)
    await h.converge()
    assert h.cond("Ready")["status"] == "True"
    pods = h.pod_versions()
    h.cpvs.delete("v1")  # gone anyway (the protection finalizer is a controller's, not a law of nature)
    h.cluster(cpv="nope", nodes=3)
    await h.converge()
    assert h.pod_versions() == pods, "nothing is torn down"
    r = h.cond("Ready")
    assert (r["status"], r["reason"]) == ("False", "PackageVersionNotFound")
    assert "neither verified nor repaired" in r["message"]
    assert not any(c["healthy"] for c in h.status()["components"]), h.status()["components"]
    assert h.cond("UpToDate")["status"] == "False"


async def test_ready_does_not_flip_true_before_a_release_has_finished(harness: Harness) -> None:
    """Issue 13: READY flipped to True mid-release; RollingOut and UpToDate say where a release stands."""
    h = harness
    _setup(h)
    await h.converge()
    assert (h.cond("UpToDate")["status"], h.cond("RollingOut")["status"]) == ("True", "False")
    h.cluster(cpv="v2", nodes=3)
    seen: list[tuple[str, str, str, str]] = []
    for _ in range(20):
        await h.run()
        h.kubelet()
        row = (h.cond("Ready")["status"], h.cond("RollingOut")["status"], h.cond("UpToDate")["status"],
               h.status().get("packageVersion", ""))
        seen.append(row)
        if row[2] == "True":
            break
    assert seen[-1] == ("True", "False", "True", "v2"), seen
    mid = seen[:-1]
    assert mid and all(r[0] == "False" for r in mid if r[1] == "True"), f"Ready True while rolling out: {seen}"
    assert any(r[1] == "True" for r in mid), seen
    assert h.cond("Available")["status"] == "True" and h.cond("Paused")["status"] == "False"


async def test_paused_cluster_is_observed_not_acted_on(harness: Harness) -> None:
    h = harness
    _setup(h)
    await h.converge()
    h.cluster(cpv="v2", paused=True)
    await h.converge()
    assert set(h.pod_versions().values()) == {"v1"}
    assert h.status()["phase"] == "Paused" and h.cond("Ready")["reason"] == "Paused"


async def test_delete_tears_down_removes_data_and_retain_keeps_it(harness: Harness) -> None:
    h = harness
    h.cpv("v1", "v1.30.0")
    for name, policy in (("c1", "Delete"), ("c2", "Retain")):
        h.cluster(name, cpv="v1", policy=policy)
        await h.converge(name)
        assert h.status(name)["dataNodes"] == ["node-a"]  # where its host folders are
    for name in ("c1", "c2"):
        c = h.clusters.get_by_name(name, "default")
        c["metadata"]["deletionTimestamp"] = "2026-01-01T00:10:00Z"
        h.clusters.put(c)
        await h.run(name)
    # Retain: gone once its Pods are, no cleanup
    await h.run("c2")
    assert h.clusters.get_by_name("c2", "default") is None
    # Delete: a Pod on the data's node removes the folder; the Cluster waits for it and says so
    await h.run("c1")
    cleanup = h.pods.get_by_name("c1-data-cleanup-0", "default")
    assert cleanup is not None and h.pod_names() == ["c1-data-cleanup-0"]
    spec = cleanup["spec"]
    assert spec["nodeName"] == "node-a" and spec["restartPolicy"] == "OnFailure"
    assert spec["containers"][0]["image"] == h.options.tools_image
    args = spec["containers"][0]["args"]
    assert args[0] == "remove-cluster-data" and args[args.index("--name") + 1] == "c1"
    mount = spec["containers"][0]["volumeMounts"][0]["mountPath"]
    assert args[args.index("--root") + 1] == mount
    assert spec["volumes"][0]["hostPath"]["path"] == "/var/lib/kokpit/clusters/default"
    ready = h.cond("Ready", "c1")
    assert ready["reason"] == "RemovingData" and "c1-data-cleanup-0 on node-a" in ready["message"]
    assert h.events("RemovingData")
    h.unready_images.add(h.options.tools_image)  # the cleanup cannot run yet: the finalizer holds
    h.kubelet()
    await h.run("c1")
    assert h.clusters.get_by_name("c1", "default") is not None
    h.unready_images.clear()
    h.kubelet()  # it ran to completion
    await h.run("c1")
    assert h.clusters.get_by_name("c1", "default") is None
    assert h.pod_names() == [] and h.services.list() == []
    assert [s["metadata"]["name"] for s in h.secrets.list()] == ["c2-pki"]


async def test_delete_does_not_wait_for_a_node_that_is_gone(harness: Harness) -> None:
    h = harness
    h.cpv("v1", "v1.30.0")
    h.cluster(cpv="v1", nodes=0)
    await h.converge()
    c = h.clusters.get_by_name("c1", "default")
    c["metadata"]["deletionTimestamp"] = "2026-01-01T00:10:00Z"
    h.clusters.put(c)
    h.unready_images.add(h.options.tools_image)  # stays Pending, as on a node that died
    await h.run()
    await h.run()
    assert h.pod_names() == ["c1-data-cleanup-0"]
    h.client.extra["nodes"].delete("node-a")
    await h.run()
    assert h.clusters.get_by_name("c1", "default") is None and h.pod_names() == []
    assert any("node-a no longer exists" in e["message"] for e in h.events("RemovingData"))


async def test_two_api_server_replicas_are_released_one_at_a_time(harness: Harness) -> None:
    """Replicas share one data dir: one serves, the other stands by.  A release replaces one, which stands
    by (the old one still serves, reporting the old version), then the other, whose going hands over."""
    h = harness
    h.cpv("v1", "v1.30.0")
    h.cpv("v2", "v1.31.0")
    h.cluster(cpv="v1", nodes=0, replicas=2)
    await h.run()
    assert h.pod_names() == ["c1-kube-apiserver-0"]  # one at a time from the start
    await h.converge()
    assert h.pod_names() == ["c1-kube-apiserver-0", "c1-kube-apiserver-1"]
    assert h.status()["components"][0]["readyReplicas"] == 2 and h.cond("Ready")["status"] == "True"
    assert h.status()["components"][0]["message"].startswith("c1-kube-apiserver-0 serving")
    api = h.pods.get_by_name("c1-kube-apiserver-1", "default")["spec"]
    args = api["containers"][0]["args"]
    assert "--standby" in args and args[args.index("--instance-name") + 1] == "c1-kube-apiserver-1"
    assert "ports" not in api["containers"][0]
    assert api["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0][
        "topologyKey"] == "kubernetes.io/hostname"
    h.cluster(cpv="v2", nodes=0, replicas=2)
    for _ in range(12):
        await h.run()
        assert h.pod_names(), "both replicas gone at once"
        h.kubelet()
    assert h.pod_versions() == {"c1-kube-apiserver-0": "v2", "c1-kube-apiserver-1": "v2"}
    assert h.prober.version == "v1.31.0"
    st = h.status()
    assert st["packageVersion"] == "v2" and "failedPackageVersion" not in st
    assert h.cond("Upgrading")["reason"] == "UpToDate" and h.cond("Ready")["status"] == "True"
    assert [c[2] for c in h.client.writes("delete", "pods")] == ["c1-kube-apiserver-0", "c1-kube-apiserver-1"]
    assert h.status()["components"][0]["message"].startswith("c1-kube-apiserver-0 serving")  # took over


async def test_scaling_the_api_server_adds_and_removes_standbys_without_touching_the_serving_one(
        harness: Harness) -> None:
    h = harness
    h.cpv("v1", "v1.30.0")
    h.cluster(cpv="v1", nodes=0)
    await h.converge()
    h.cluster(cpv="v1", nodes=0, replicas=3)
    await h.converge()
    assert h.pod_names() == [f"c1-kube-apiserver-{i}" for i in range(3)]
    assert h.status()["components"][0]["readyReplicas"] == 3 and h.cond("Ready")["status"] == "True"
    h.cluster(cpv="v1", nodes=0, replicas=1)
    await h.converge()
    assert h.pod_names() == ["c1-kube-apiserver-0"]
    assert [c[2] for c in h.client.writes("delete", "pods")] == ["c1-kube-apiserver-1", "c1-kube-apiserver-2"]
    assert h.cond("Ready")["status"] == "True" and h.cond("Upgrading")["reason"] == "UpToDate"


async def test_a_broken_new_replica_never_costs_the_serving_one(harness: Harness) -> None:
    h = harness
    h.cpv("v1", "v1.30.0")
    h.cpv("bad", "v1.99.0")
    h.unready_images.add("kokpit:v1.99.0")
    h.cluster(cpv="v1", nodes=0, replicas=2)
    await h.converge()
    h.cluster(cpv="bad", nodes=0, replicas=2)
    await h.converge()
    assert h.pod_versions() == {"c1-kube-apiserver-0": "bad", "c1-kube-apiserver-1": "v1"}
    await h.clock.advance(25)
    await h.converge()
    assert h.status()["failedPackageVersion"] == "bad" and h.cond("Upgrading")["reason"] == "RolledBack"
    assert set(h.pod_versions().values()) == {"v1"}
    assert "c1-kube-apiserver-1" not in [c[2] for c in h.client.writes("delete", "pods")]


async def test_a_port_something_else_listens_on_is_not_chosen() -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("0.0.0.0", 0))
        port = probe.getsockname()[1]
        probe.listen(1)
        h = Harness(port_range=(port, port))
        try:
            await h.rec.ports.allocate("default/c1", "https")
            raise AssertionError("chose a port in use")
        except RuntimeError as e:
            assert "no free port" in str(e)
    assert await Harness(port_range=(port, port)).rec.ports.allocate("default/c1", "https") == port  # free again


async def test_operator_restart_mid_release_continues_where_the_pods_say(harness: Harness) -> None:
    h = harness
    _setup(h)
    await h.converge()
    h.cluster(cpv="v2", nodes=3)
    await h.run()
    await h.run()
    h.kubelet()
    assert h.pod_versions()["c1-kube-apiserver-0"] == "v2"
    h.new_reconciler()  # kill -9: all memory gone; the Pods' labels and hashes are the truth
    await h.converge()
    assert set(h.pod_versions().values()) == {"v2"} and h.status()["packageVersion"] == "v2"
    creates = [c[2] for c in h.client.writes("create", "pods")]
    assert creates.count("c1-kube-apiserver-0") == 2  # v1, then v2 once: nothing redone after the restart


async def test_stale_cache_service_create_reuses_the_existing_ports(harness: Harness) -> None:
    h = harness
    _setup(h)
    await h.run()
    svc = h.services.get_by_name("c1-apiserver", "default")
    port = svc["spec"]["ports"][0]["nodePort"]
    server = Store()  # the server has the Service; the operator's cache does not have it yet
    server.put(svc)
    h.client.stores["services"] = server
    h.services.delete("default/c1-apiserver")
    api_port, _ = await h.rec.resources.ensure_service(Names("default", "c1"),
                                                      h.clusters.get_by_name("c1", "default"), True)
    assert api_port == port


async def test_concurrent_port_allocations_never_race_for_one_port() -> None:
    """Workers allocating at once each get their own port at the first try (a create per port, no
    AlreadyExists storm), and the records say whose each port is."""
    import asyncio

    h = Harness(port_range=(43000, 43007))
    h.rec.ports.is_free = lambda port: True  # what listens on this shared host is not the point here
    create = h.client.create

    async def slow_create(*a: object, **kw: object) -> dict[str, object]:
        await asyncio.sleep(0)  # a round trip: the other workers run meanwhile
        return await create(*a, **kw)  # type: ignore[arg-type]

    h.client.create = slow_create  # type: ignore[method-assign]
    ports = await asyncio.gather(*(h.rec.ports.allocate(f"default/c{i}", "https") for i in range(8)))
    assert sorted(ports) == list(range(43000, 43008))
    assert len(h.client.writes("create", "configmaps")) == 8
    assert {h.rec.ports.held(f"default/c{i}")["https"] for i in range(8)} == set(ports)
    assert await h.rec.ports.release("default/c3") == 1 and not h.rec.ports.held("default/c3")


async def test_a_good_pki_secret_is_not_verified_again_until_it_changes(harness: Harness, monkeypatch) -> None:
    """Parsing and verifying the six certificates of a PKI Secret on every reconcile was a third of the
    operator's CPU at 3,000 Clusters: a Secret found good is checked again only when it changes (a new
    resourceVersion) or after PKI_RECHECK."""
    from kokpit._lib import pki
    from kokpit.operators.cluster import _resources

    h = harness
    _setup(h)
    await h.converge()
    checks: list[int] = []
    real = pki.driver_pki

    def counting(*a, **kw):  # type: ignore[no-untyped-def]
        checks.append(1)
        return real(*a, **kw)

    monkeypatch.setattr(pki, "driver_pki", counting)
    for _ in range(3):
        await h.run()
    assert checks == []
    secret = h.secrets.get_by_name("c1-pki", "default")
    h.secrets.put({**secret, "metadata": {**secret["metadata"], "resourceVersion": "9999"}})
    await h.run()
    assert len(checks) == 1  # a changed Secret is checked again
    await h.run()
    assert len(checks) == 1
    await h.clock.advance(_resources.PKI_RECHECK.total_seconds() + 1)
    await h.run()
    assert len(checks) == 2  # and any Secret after PKI_RECHECK


async def test_a_release_whose_api_server_serves_another_version_rolls_back(harness: Harness) -> None:
    """Ready, answering /readyz, but reporting a version other than the release's: that is a failed
    post-check with its own failing-since timer in status (the probe's is cleared while /readyz answers),
    so the release rolls back after the timeout instead of waiting forever."""
    h = harness
    _setup(h)
    await h.converge()
    h.cpv("liar", "v1.40.0", components=[{**c, "image": "kokpit:v1.30.1"} for c in CPV_COMPONENTS])
    h.cluster(cpv="liar", nodes=3)
    await h.converge()
    assert h.pod_versions()["c1-kube-apiserver-0"] == "liar"
    assert h.prober.version == "v1.30.1"
    assert "failedPackageVersion" not in h.status()
    assert any(f["name"] == "probe/apiserver-version" for f in h.status()["failures"])
    h.new_reconciler()  # the timer is in status: a restarted operator keeps it
    await h.clock.advance(25)
    await h.run()
    assert h.status()["failedPackageVersion"] == "liar"
    assert "reports v1.30.1, want v1.40.0" in h.cond("Upgrading")["message"]
    await h.converge()
    assert set(h.pod_versions().values()) == {"v1"} and h.status()["packageVersion"] == "v1"
    assert not any(f["name"] == "probe/apiserver-version" for f in h.status().get("failures") or [])
