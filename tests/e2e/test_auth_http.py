"""Authentication, authorization and the unauthenticated endpoints, over raw HTTPS.

The server is reachable on a port anyone on the machine can connect to, so every API path must require the
bearer token from the kubeconfig, the read-only token must really be read-only (including watch), and the
probes a supervisor or load balancer uses (/healthz, /readyz, /livez, /version) must work without one.
"""

from __future__ import annotations

import json
import re
import ssl
import urllib.request
from typing import Any

import pytest

from kokpit.apiserver.testing import ApiServerProcess

pytestmark = pytest.mark.e2e

NS = "auth-http"
CM = f"/api/v1/namespaces/{NS}/configmaps"


def _status(code: int, raw: bytes, want: int, reason: str) -> dict[str, Any]:
    assert code == want, raw
    body = json.loads(raw)
    assert body["kind"] == "Status" and body["status"] == "Failure", body
    assert body["code"] == want and body["reason"] == reason, body
    return dict(body)


@pytest.fixture(scope="module")
def srv(shared_apiserver: ApiServerProcess) -> ApiServerProcess:
    code, raw = shared_apiserver.request("POST", "/api/v1/namespaces", json.dumps(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}).encode())
    assert code == 201, raw
    code, raw = shared_apiserver.request("POST", CM, json.dumps(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "seed"}, "data": {"a": "1"}}).encode())
    assert code == 201, raw
    return shared_apiserver


@pytest.mark.parametrize("path", [CM, f"{CM}/seed", "/api", "/apis", "/api/v1", "/openapi/v3", "/metrics",
                                  "/api/v1/nodes", "/kokpit/compact"])
def test_no_token_is_401(srv: ApiServerProcess, path: str) -> None:
    code, raw = srv.request("GET", path, auth=False)
    _status(code, raw, 401, "Unauthorized")


@pytest.mark.parametrize("header", ["Bearer wrong-token", "Bearer ", "Basic YWRtaW46YWRtaW4=", "bearer",
                                    "Token abc"])
def test_bad_credentials_are_401(srv: ApiServerProcess, header: str) -> None:
    req = urllib.request.Request(srv.url + CM, headers={"Authorization": header})
    try:
        with urllib.request.urlopen(req, context=srv.ssl_context(), timeout=10) as resp:
            code, raw = resp.status, resp.read()
    except urllib.error.HTTPError as e:
        code, raw = e.code, e.read()
    _status(code, raw, 401, "Unauthorized")


def test_wrong_token_cannot_write(srv: ApiServerProcess) -> None:
    body = json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "intruder"}}).encode()
    code, raw = srv.request("POST", CM, body, token="not-the-token")
    _status(code, raw, 401, "Unauthorized")
    assert srv.request("GET", f"{CM}/intruder")[0] == 404


def test_admin_token_prefix_is_not_enough(srv: ApiServerProcess) -> None:
    code, raw = srv.request("GET", CM, token=srv.admin_token[:-1])
    _status(code, raw, 401, "Unauthorized")


def test_readonly_token_reads(srv: ApiServerProcess) -> None:
    ro = srv.readonly_token
    code, raw = srv.request("GET", f"{CM}/seed", token=ro)
    assert code == 200 and json.loads(raw)["data"] == {"a": "1"}
    code, raw = srv.request("GET", CM, token=ro)
    assert code == 200 and "seed" in {i["metadata"]["name"] for i in json.loads(raw)["items"]}
    code, raw = srv.request("GET", "/api/v1/namespaces", token=ro)
    assert code == 200
    code, raw = srv.request("GET", "/apis", token=ro)
    assert code == 200


def test_readonly_token_watches(srv: ApiServerProcess) -> None:
    code, raw = srv.request("GET", f"{CM}?watch=true&timeoutSeconds=1", token=srv.readonly_token)
    assert code == 200
    events = [json.loads(line) for line in raw.splitlines() if line.strip()]
    assert [e["type"] for e in events][:1] == ["ADDED"]
    assert "seed" in {e["object"]["metadata"]["name"] for e in events}


@pytest.mark.parametrize(("method", "path", "verb", "body"), [
    ("POST", CM, "create", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ro"}}),
    ("PUT", f"{CM}/seed", "update", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "seed"}}),
    ("PATCH", f"{CM}/seed", "patch", {"data": {"a": "2"}}),
    ("DELETE", f"{CM}/seed", "delete", None),
    ("DELETE", CM, "deletecollection", None),
])
def test_readonly_token_cannot_write(srv: ApiServerProcess, method: str, path: str, verb: str,
                                     body: dict[str, Any] | None) -> None:
    code, raw = srv.request(method, path, None if body is None else json.dumps(body).encode(),
                            token=srv.readonly_token, content_type="application/merge-patch+json"
                            if method == "PATCH" else "application/json")
    st = _status(code, raw, 403, "Forbidden")
    name = path.rsplit("/", 1)[-1] if path != CM else None
    prefix = f'configmaps "{name}" is forbidden' if name else "configmaps is forbidden"
    assert st["message"] == (f'{prefix}: User "kokpit-viewer" cannot {verb} resource "configmaps" in API group '
                             f'"" in the namespace "{NS}"'), st["message"]
    assert st["details"]["kind"] == "configmaps"
    code, raw = srv.request("GET", f"{CM}/seed")
    assert code == 200 and json.loads(raw)["data"] == {"a": "1"}
    assert srv.request("GET", f"{CM}/ro")[0] == 404


def test_readonly_cluster_scoped_message(srv: ApiServerProcess) -> None:
    body = json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ro-ns"}}).encode()
    code, raw = srv.request("POST", "/api/v1/namespaces", body, token=srv.readonly_token)
    st = _status(code, raw, 403, "Forbidden")
    assert st["message"] == ('namespaces is forbidden: User "kokpit-viewer" cannot create resource "namespaces" '
                             'in API group "" at the cluster scope')


def test_readonly_cannot_compact(srv: ApiServerProcess) -> None:
    code, raw = srv.request("POST", "/kokpit/compact", b"{}", token=srv.readonly_token)
    _status(code, raw, 403, "Forbidden")


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/livez", "/readyz?verbose"])
def test_health_without_token(srv: ApiServerProcess, path: str) -> None:
    code, raw = srv.request("GET", path, auth=False)
    assert code == 200, raw
    assert raw == b"ok" or b"check passed" in raw


def test_version_without_token(srv: ApiServerProcess) -> None:
    code, raw = srv.request("GET", "/version", auth=False)
    assert code == 200
    v = json.loads(raw)
    assert v["major"] == "1" and re.fullmatch(r"\d+", v["minor"]) and v["gitVersion"].startswith("v1.")


def test_plain_http_is_refused(srv: ApiServerProcess) -> None:
    """The port speaks TLS only: a plain-HTTP request never reaches the API."""
    req = urllib.request.Request(srv.url.replace("https://", "http://") + "/version")
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.status != 200


def test_untrusted_ca_is_refused(srv: ApiServerProcess) -> None:
    ctx = ssl.create_default_context()  # system CAs only: the server's self-made CA is not among them
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(srv.url + "/version", context=ctx, timeout=5)


def test_metrics(srv: ApiServerProcess) -> None:
    # make sure a few labelled series exist
    assert srv.request("GET", f"{CM}/seed")[0] == 200
    assert srv.request("GET", f"{CM}/does-not-exist")[0] == 404
    assert srv.request("GET", f"{CM}?watch=true&timeoutSeconds=1")[0] == 200  # watches are counted too
    rv_before = int(json.loads(srv.request("GET", CM)[1])["metadata"]["resourceVersion"])
    code, raw = srv.request("GET", "/metrics")
    assert code == 200
    text = raw.decode()
    series: dict[str, list[tuple[dict[str, str], float]]] = {}
    for line in text.splitlines():
        m = re.fullmatch(r'(\w+)\{(.*)\} (\S+)', line)
        if m:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
            series.setdefault(m.group(1), []).append((labels, float(m.group(3))))
    reqs = series["apiserver_request_total"]
    assert any(lb["verb"] == "get" and lb["resource"] == "configmaps" and lb["code"] == "200" and v >= 1
               for lb, v in reqs), reqs
    assert any(lb["verb"] == "get" and lb["resource"] == "configmaps" and lb["code"] == "404" and v >= 1
               for lb, v in reqs), reqs
    assert any(lb["verb"] == "create" and lb["resource"] == "configmaps" and lb["code"] == "201" for lb, v in reqs)
    assert any(lb["verb"] == "watch" and lb["resource"] == "configmaps" and lb["code"] == "200" and v >= 1
               for lb, v in reqs), reqs
    rev = re.search(r"^kokpit_storage_revision (\S+)$", text, re.M)
    assert rev is not None
    rv_after = int(json.loads(srv.request("GET", CM)[1])["metadata"]["resourceVersion"])
    assert 0 < rv_before <= float(rev.group(1)) <= rv_after
    assert re.search(r"^apiserver_request_duration_seconds_bucket\{", text, re.M)
