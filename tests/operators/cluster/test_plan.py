"""Pure pieces of the cluster operator: the Pods a release wants, Pod health, release validation, and the
PKI the operator mints for a business API server."""

from __future__ import annotations

import datetime as dt
import ssl

from cryptography import x509

from kokpit._lib import pki
from kokpit.operators.cluster import (
    HASH_ANNOTATION,
    Names,
    Wiring,
    component_order,
    desired_pod,
    pod_health,
    validate_cpv,
)

NOW = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
CPV = {"metadata": {"name": "v1"},
       "spec": {"kubernetesVersion": "v1.30.0", "components": [
           {"name": "machine-operator", "image": "kokpit:1", "args": ["machine-operator"]},
           {"name": "simulator", "image": "kokpit:1", "args": ["simulator"]},
           {"name": "etcd", "image": "etcd:3", "args": ["--x"]},
           {"name": "kube-apiserver", "image": "kokpit:1", "args": ["apiserver"]}]}}
OWNER = {"apiVersion": "kokpit.io/v1alpha1", "kind": "Cluster", "metadata": {"name": "c", "uid": "u1"}}


def _wiring(**kw: object) -> Wiring:
    base: dict[str, object] = dict(kubernetes_version="v1.30.0", apiserver_port=30001, driver_port=30002,
                                   endpoint_host="10.0.0.5", nodes=7, data_root="/data", pki_hash="h1")
    base.update(kw)
    return Wiring(**base)  # type: ignore[arg-type]


def test_component_order_puts_the_api_server_first_and_the_machine_operator_last() -> None:
    assert [c["name"] for c in component_order(CPV)] == ["kube-apiserver", "etcd", "simulator",
                                                         "machine-operator"]


def test_validate_cpv() -> None:
    assert validate_cpv(None) == ("PackageVersionNotFound", "the ClusterPackageVersion does not exist")
    no_api = {"metadata": {"name": "x"}, "spec": {"kubernetesVersion": "v1", "components": [{"name": "etcd"}]}}
    assert validate_cpv(no_api) is not None and validate_cpv(no_api)[0] == "InvalidPackageVersion"  # type: ignore[index]
    assert validate_cpv(CPV) is None


def test_desired_pods_are_wired_and_hashed() -> None:
    n = Names("team-a", "c")
    comps = {c["name"]: c for c in CPV["spec"]["components"]}  # type: ignore[index]
    api = desired_pod(n, CPV, comps["kube-apiserver"], 0, _wiring(), OWNER)
    assert api is not None
    c = api["spec"]["containers"][0]
    assert c["args"][:1] == ["apiserver"] and "--token-file" in c["args"] and "30001" in c["args"]
    assert api["metadata"]["name"] == "c-kube-apiserver-0" and api["metadata"]["namespace"] == "team-a"
    assert api["spec"]["hostNetwork"] is True
    assert {v["name"] for v in api["spec"]["volumes"]} == {"data", "pki"}
    items = next(v for v in api["spec"]["volumes"] if v["name"] == "pki")["secret"]["items"]
    assert "ca.key" not in {i["key"] for i in items}  # the CA key never reaches the Pod
    # the hash moves with anything that shapes the Pod, and only then
    same = desired_pod(n, CPV, comps["kube-apiserver"], 0, _wiring(nodes=9), OWNER)
    other = desired_pod(n, CPV, comps["kube-apiserver"], 0, _wiring(kubernetes_version="v1.31.0"), OWNER)
    repki = desired_pod(n, CPV, comps["kube-apiserver"], 0, _wiring(pki_hash="h2"), OWNER)
    h = api["metadata"]["annotations"][HASH_ANNOTATION]
    assert same is not None and same["metadata"]["annotations"][HASH_ANNOTATION] == h
    assert other is not None and other["metadata"]["annotations"][HASH_ANNOTATION] != h
    assert repki is not None and repki["metadata"]["annotations"][HASH_ANNOTATION] != h
    mo = desired_pod(n, CPV, comps["machine-operator"], 0, _wiring(), OWNER)
    assert mo is not None
    args = mo["spec"]["containers"][0]["args"]
    assert args[args.index("--driver-url") + 1] == "https://10.0.0.5:30002"
    assert args[args.index("--kubeconfig") + 1] == "/etc/kokpit/kubeconfig/value"
    assert desired_pod(n, CPV, comps["machine-operator"], 0, _wiring(endpoint_host=None), OWNER) is None
    sim = desired_pod(n, CPV, comps["simulator"], 0, _wiring(), OWNER)
    assert sim is not None and "7" in sim["spec"]["containers"][0]["args"]
    etcd = desired_pod(n, CPV, comps["etcd"], 0, _wiring(), OWNER)
    assert etcd is not None and etcd["spec"]["containers"][0]["args"] == ["--x"]
    assert {"name": "KUBECONFIG", "value": "/etc/kokpit/kubeconfig/value"} in etcd["spec"]["containers"][0]["env"]


def test_servers_bind_to_their_node_and_the_driver_is_mutual_tls() -> None:
    """No component listens on a wildcard address (each binds to status.hostIP through the Downward API), and
    the node driver's two ends get their halves of the driver PKI, the CA key in neither."""
    n = Names("team-a", "c")
    comps = {c["name"]: c for c in CPV["spec"]["components"]}  # type: ignore[index]
    pods = {name: desired_pod(n, CPV, comps[name], 0, _wiring(), OWNER) for name in comps}
    for name, pod in pods.items():
        assert pod is not None
        c = pod["spec"]["containers"][0]
        assert "0.0.0.0" not in str(pod), name
        assert {"name": "HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}} in c["env"], name
    api = pods["kube-apiserver"]["spec"]["containers"][0]["args"]  # type: ignore[index]
    assert api[api.index("--host") + 1] == "$(HOST_IP)"
    sim = pods["simulator"]["spec"]["containers"][0]["args"]  # type: ignore[index]
    assert sim[sim.index("--driver-host") + 1] == "$(HOST_IP)"
    assert sim[sim.index("--client-ca-file") + 1] == "/etc/kokpit/driver/ca.crt"
    assert sim[sim.index("--tls-cert-file") + 1] == "/etc/kokpit/driver/tls.crt"
    mo = pods["machine-operator"]["spec"]["containers"][0]["args"]  # type: ignore[index]
    assert mo[mo.index("--driver-client-certificate") + 1] == "/etc/kokpit/driver/tls.crt"

    def items(name: str) -> dict[str, str]:
        vols = pods[name]["spec"]["volumes"]  # type: ignore[index]
        vol = next(v for v in vols if v["name"] == "driver-tls")
        assert vol["secret"]["secretName"] == "c-pki"
        return {i["key"]: i["path"] for i in vol["secret"]["items"]}

    assert items("simulator") == {"driver-ca.crt": "ca.crt", "driver.crt": "tls.crt", "driver.key": "tls.key"}
    assert items("machine-operator") == {"driver-ca.crt": "ca.crt", "driver-client.crt": "tls.crt",
                                         "driver-client.key": "tls.key"}
    # new driver credentials restart their users, not the API server
    h = {k: p["metadata"]["annotations"][HASH_ANNOTATION] for k, p in pods.items()}  # type: ignore[index]
    again = {name: desired_pod(n, CPV, comps[name], 0, _wiring(driver_hash="d2"), OWNER) for name in comps}
    moved = {k for k, p in again.items() if p["metadata"]["annotations"][HASH_ANNOTATION] != h[k]}  # type: ignore[index]
    assert moved == {"simulator", "machine-operator"}


def test_metrics_of_simulator_and_machine_operator_are_wired() -> None:
    """Their /metrics bind to the node's address on the port the operator chose, take the business API
    server's tokens (the same ones its own /metrics takes), and show as a containerPort named metrics."""
    n = Names("team-a", "c")
    comps = {c["name"]: c for c in CPV["spec"]["components"]}  # type: ignore[index]
    w = _wiring(metrics_ports={"simulator": 30003, "machine-operator": 30004})
    for name, port in (("simulator", 30003), ("machine-operator", 30004)):
        pod = desired_pod(n, CPV, comps[name], 0, w, OWNER)
        assert pod is not None
        c = pod["spec"]["containers"][0]
        args = c["args"]
        assert args[args.index("--metrics-port") + 1] == str(port)
        assert args[args.index("--metrics-host") + 1] == "$(HOST_IP)"
        assert args[args.index("--metrics-token-file") + 1] == "/etc/kokpit/metrics/tokens.json"
        assert {"name": "metrics", "containerPort": port, "protocol": "TCP"} in c["ports"]
        vol = next(v for v in pod["spec"]["volumes"] if v["name"] == "metrics-tokens")
        assert vol["secret"] == {"secretName": "c-pki", "items": [{"key": "tokens.json", "path": "tokens.json"}]}
    api = desired_pod(n, CPV, comps["kube-apiserver"], 0, w, OWNER)
    assert api is not None and "--metrics-port" not in api["spec"]["containers"][0]["args"]  # its API port serves


def _pod(phase: str, ready: str, created: str = "2026-01-01T11:59:50Z", ltt: str | None = None) -> dict:  # type: ignore[type-arg]
    return {"metadata": {"name": "p", "creationTimestamp": created},
            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": ready,
                                                       "lastTransitionTime": ltt or created}],
                       "containerStatuses": [{"restartCount": 4, "state": {"waiting": {
                           "reason": "CrashLoopBackOff"}}}]}}


def test_pod_health() -> None:
    ok = pod_health(_pod("Running", "True"), NOW, 30)
    assert ok.ready and not ok.broken and ok.restarts == 4
    young = pod_health(_pod("Running", "False"), NOW, 30)
    assert not young.ready and not young.broken and "CrashLoopBackOff" in young.message
    old = pod_health(_pod("Running", "False", created="2026-01-01T11:00:00Z",
                          ltt="2026-01-01T11:59:00Z"), NOW, 30)
    assert old.broken and "60s" in old.message  # counted from the last transition, not creation
    assert pod_health(_pod("Failed", "False"), NOW, 30).broken


def test_minted_pki_verifies_and_covers_hosts() -> None:
    ca = pki.new_ca("test-ca")
    hosts = ["127.0.0.1", "localhost", "c-apiserver.team-a.svc"]
    srv = pki.new_serving_cert(ca, hosts)
    cert = x509.load_pem_x509_certificate(srv.cert_pem)
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca.cert_pem))
    assert pki.serving_cert_covers(srv.cert_pem, hosts)
    assert not pki.serving_cert_covers(srv.cert_pem, [*hosts, "10.9.9.9"])
    assert not pki.serving_cert_covers(srv.cert_pem, hosts, now=dt.datetime.now(dt.UTC) + dt.timedelta(days=340))
    ctx = ssl.create_default_context(cadata=ca.cert_pem.decode())  # what the prober trusts
    assert ctx.cert_store_stats()["x509_ca"] == 1
    assert pki.new_token() != pki.new_token()


def test_business_components_get_no_meta_credential() -> None:
    """Least privilege: the API server, simulator and other business components never get a meta-cluster token
    (not even the namespace's default ServiceAccount's); only the machine operator has a meta identity."""
    n = Names("team-a", "c")
    comps = {c["name"]: c for c in CPV["spec"]["components"]}  # type: ignore[index]
    for name in ("kube-apiserver", "simulator", "etcd"):
        pod = desired_pod(n, CPV, comps[name], 0, _wiring(), OWNER)
        assert pod is not None and pod["spec"]["automountServiceAccountToken"] is False, name
    mo = desired_pod(n, CPV, comps["machine-operator"], 0, _wiring(), OWNER)
    assert mo is not None and "automountServiceAccountToken" not in mo["spec"]
