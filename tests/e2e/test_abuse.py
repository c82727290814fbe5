"""Abuse of the real server by an authenticated user: nothing may crash it, hang it or get a 5xx.

Each case found by fuzzing (issue 13, item 8) answers as kube-apiserver does, and the hand-written abuse
cases cover what a hostile or broken client can send: bodies too deep, too large, not UTF-8, of the wrong
media type, alias bombs, numbers the stored form cannot hold, garbage in every patch type and in list
parameters. Every answer is a `Status` naming the problem, and the server still answers /readyz after each
test (the read-only viewer token is enough to reach the body decoder: it may POST a SelfSubjectAccessReview).
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

from kokpit.apiserver.decoding import MAX_BODY
from kokpit.apiserver.safeload import MAX_ALIASES, MAX_DEPTH
from kokpit.apiserver.testing import ApiServerProcess

pytestmark = pytest.mark.e2e

NS = "abuse"
CM = f"/api/v1/namespaces/{NS}/configmaps"
SSAR = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"


def raw(srv: ApiServerProcess, method: str, path: str, body: bytes | None = None,
        headers: dict[str, str] | None = None, token: str | None = None,
        chunks: list[bytes] | None = None) -> tuple[int, Any]:
    """One request with exactly the headers given (no Content-Type unless asked), a 30 s deadline (a hang
    fails the test), the body decoded as JSON when it is JSON."""
    conn = http.client.HTTPSConnection("127.0.0.1", srv.port, context=srv.ssl_context(), timeout=30)
    try:
        hdrs = {"Authorization": f"Bearer {token or srv.admin_token}", **(headers or {})}
        if chunks is not None:
            conn.putrequest(method, path)
            for k, v in {**hdrs, "Transfer-Encoding": "chunked"}.items():
                conn.putheader(k, v)
            conn.endheaders()
            for c in chunks:
                conn.send(f"{len(c):x}\r\n".encode() + c + b"\r\n")
            conn.send(b"0\r\n\r\n")
        else:
            conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        data = resp.read()
    finally:
        conn.close()
    try:
        return resp.status, json.loads(data)
    except ValueError:
        return resp.status, data


def status(code: int, body: Any, want: int, reason: str, *words: str) -> dict[str, Any]:
    """`body` is a Failure Status with this code and reason whose message holds every word."""
    assert code == want, (code, body)
    assert isinstance(body, dict) and body.get("kind") == "Status", body
    assert body["status"] == "Failure" and body["code"] == want and body["reason"] == reason, body
    for w in words:
        assert w in body["message"], (w, body["message"])
    return body


def cm(name: str, **extra: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, **extra}


def post_json(srv: ApiServerProcess, path: str, obj: Any) -> tuple[int, Any]:
    return raw(srv, "POST", path, json.dumps(obj).encode(), {"Content-Type": "application/json"})


def absent(srv: ApiServerProcess, path: str) -> None:
    code, body = raw(srv, "GET", path)
    assert code == 404, (code, body)


@pytest.fixture(scope="module")
def srv(shared_apiserver: ApiServerProcess) -> ApiServerProcess:
    code, body = post_json(shared_apiserver, "/api/v1/namespaces",
                           {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    assert code == 201, body
    return shared_apiserver


@pytest.fixture(autouse=True)
def alive(srv: ApiServerProcess) -> Iterator[None]:
    yield
    assert srv.proc is not None and srv.proc.poll() is None, srv.log_tail()
    assert srv.request("GET", "/readyz", auth=False) == (200, b"ok")


# ------------------------------------------------------------------------------------------ nesting
def nested_yaml_flow(levels: int) -> bytes:
    return b"spec:\n  resourceAttributes: " + b"[" * levels + b"]" * levels + b"\n"


@pytest.mark.parametrize("levels", [5_000, 100_000])
def test_deep_yaml_from_the_viewer_does_not_kill_the_server(srv: ApiServerProcess, levels: int) -> None:
    """100,000 levels (200 KB) once segfaulted the process in PyYAML's C composer; 5,000 gave a 500."""
    code, body = raw(srv, "POST", SSAR, nested_yaml_flow(levels), {"Content-Type": "application/yaml"},
                     token=srv.readonly_token)
    status(code, body, 400, "BadRequest", f"nested more than {MAX_DEPTH} levels")


@pytest.mark.parametrize("shape", ["block-mappings", "block-sequences", "flow-mappings"])
def test_deep_yaml_in_every_shape(srv: ApiServerProcess, shape: str) -> None:
    n = 3_000
    doc = {"block-mappings": "".join(" " * i + "a:\n" for i in range(1000)) + " " * 1000 + "x\n",
           "block-sequences": "- " * n + "x\n",
           "flow-mappings": "data: " + "{a: " * n + "x" + "}" * n + "\n"}[shape]
    code, body = raw(srv, "POST", CM, doc.encode(), {"Content-Type": "application/yaml"})
    status(code, body, 400, "BadRequest", "nested")


def test_deep_json(srv: ApiServerProcess) -> None:
    deep = b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"deep"},"x":' + b'{"a":' * 5000 + \
        b"1" + b"}" * 5001
    code, body = raw(srv, "POST", CM, deep, {"Content-Type": "application/json"})
    status(code, body, 400, "BadRequest", f"nested more than {MAX_DEPTH} levels")
    absent(srv, f"{CM}/deep")


def test_nesting_up_to_the_limit_is_served(srv: ApiServerProcess) -> None:
    """The control: an object exactly at the limit is stored and read back (no recursion error anywhere)."""
    inner: Any = "leaf"
    for _ in range(MAX_DEPTH - 1):  # the object itself is level 1
        inner = {"a": inner}
    crd_like = cm("at-limit", data={"k": "v"})
    crd_like["metadata"]["annotations"] = {"x": "y"}
    crd_like["extra"] = inner  # an unknown field: dropped with a warning, but parsed and walked
    code, body = post_json(srv, CM, crd_like)
    assert code == 201, body
    assert "extra" not in body


def test_brackets_inside_strings_are_not_nesting(srv: ApiServerProcess) -> None:
    code, body = post_json(srv, CM, cm("brackets", data={"k": "[" * 5000 + "{" * 5000}))
    assert code == 201, body
    assert body["data"]["k"].startswith("[[[")


# ------------------------------------------------------------------------------------------ YAML aliases
BOMB = b"""apiVersion: v1
kind: ConfigMap
metadata: {name: bomb}
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f,*f]
"""


def test_yaml_alias_bomb(srv: ApiServerProcess) -> None:
    """504 bytes that expand to 10^7 items were accepted after seconds of CPU; now refused up front."""
    code, body = raw(srv, "POST", CM, BOMB, {"Content-Type": "application/yaml"})
    status(code, body, 400, "BadRequest", "aliases", str(MAX_ALIASES))
    absent(srv, f"{CM}/bomb")
    code, body = raw(srv, "PATCH", f"{CM}/bomb?fieldManager=t", BOMB,
                     {"Content-Type": "application/apply-patch+yaml"})
    status(code, body, 400, "BadRequest", "aliases")
    absent(srv, f"{CM}/bomb")


def test_few_aliases_are_fine(srv: ApiServerProcess) -> None:
    doc = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: aliased\n  labels: &l {app: web}\n" \
          b"  annotations: *l\ndata:\n  a: &v hello\n  b: *v\n"
    code, body = raw(srv, "POST", CM, doc, {"Content-Type": "application/yaml"})
    assert code == 201, body
    assert body["metadata"]["annotations"] == {"app": "web"} and body["data"] == {"a": "hello", "b": "hello"}


def test_deep_through_aliases(srv: ApiServerProcess) -> None:
    half = MAX_DEPTH // 2 + 5
    doc = (b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: via-alias}\nx: &x " + b"[" * half + b"]" * half
           + b"\ny: " + b"[" * half + b"*x" + b"]" * half + b"\n")
    code, body = raw(srv, "POST", CM, doc, {"Content-Type": "application/yaml"})
    status(code, body, 400, "BadRequest", "nested", "alias")


# ------------------------------------------------------------------------------------------ numbers
def test_integer_beyond_64_bits_in_yaml_create(srv: ApiServerProcess) -> None:
    doc = b"apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: huge}\nspec:\n" \
          b"  replicas: 123456789012345678901234567890\n"
    code, body = raw(srv, "POST", f"/apis/apps/v1/namespaces/{NS}/deployments", doc,
                     {"Content-Type": "application/yaml"})
    st = status(code, body, 422, "Invalid", "spec.replicas", "64 bits")
    assert st["details"]["causes"][0]["field"] == "spec.replicas"
    assert st["details"]["kind"] == "Deployment" and st["details"]["name"] == "huge"
    absent(srv, f"/apis/apps/v1/namespaces/{NS}/deployments/huge")


def test_integer_beyond_64_bits_in_apply_patch(srv: ApiServerProcess) -> None:
    doc = b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: huge-apply}\nextra:\n  list: [1, 2, 36893488147419103232]\n"
    code, body = raw(srv, "PATCH", f"{CM}/huge-apply?fieldManager=t", doc,
                     {"Content-Type": "application/apply-patch+yaml"})
    st = status(code, body, 422, "Invalid", "extra.list[2]")
    assert st["details"]["causes"][0]["field"] == "extra.list[2]"
    absent(srv, f"{CM}/huge-apply")


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan"])
def test_non_finite_yaml_numbers(srv: ApiServerProcess, value: str) -> None:
    doc = f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: nonfinite}}\nx: {value}\n".encode()
    code, body = raw(srv, "POST", CM, doc, {"Content-Type": "application/yaml"})
    status(code, body, 422, "Invalid", "x: Invalid value", "finite")


def test_integer_with_too_many_digits(srv: ApiServerProcess) -> None:
    doc = b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: digits}\nx: " + b"9" * 5000 + b"\n"
    code, body = raw(srv, "POST", CM, doc, {"Content-Type": "application/yaml"})
    assert 400 <= code < 500, body
    status(code, body, code, body["reason"])


def test_yaml_timestamps_and_keys_as_kube_reads_them(srv: ApiServerProcess) -> None:
    """sigs.k8s.io/yaml keeps timestamps as written and turns number keys into strings."""
    doc = b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ts}\ndata: {when: 2026-01-01T00:00:00Z, 8080: http}\n"
    code, body = raw(srv, "POST", CM, doc, {"Content-Type": "application/yaml"})
    assert code == 201, body
    assert body["data"] == {"when": "2026-01-01T00:00:00Z", "8080": "http"}


# ------------------------------------------------------------------------------------------ media types
@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", "application/xml",
                                   "application/cbor", "*/*"])
def test_object_body_of_another_media_type_is_415(srv: ApiServerProcess, ctype: str) -> None:
    obj = json.dumps(cm("wrong-type")).encode()
    code, body = raw(srv, "POST", CM, obj, {"Content-Type": ctype})
    status(code, body, 415, "UnsupportedMediaType", ctype)
    absent(srv, f"{CM}/wrong-type")


def test_put_and_delete_bodies_of_another_media_type_are_415(srv: ApiServerProcess) -> None:
    code, created = post_json(srv, CM, cm("typed-target", data={"k": "v"}))
    assert code == 201, created
    changed = dict(created, data={"k": "changed"})
    code, body = raw(srv, "PUT", f"{CM}/typed-target", json.dumps(changed).encode(), {"Content-Type": "text/plain"})
    status(code, body, 415, "UnsupportedMediaType", "text/plain")
    opts = json.dumps({"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}).encode()
    code, body = raw(srv, "DELETE", f"{CM}/typed-target", opts, {"Content-Type": "text/plain"})
    status(code, body, 415, "UnsupportedMediaType")
    code, now = raw(srv, "GET", f"{CM}/typed-target")
    assert code == 200 and now["data"] == {"k": "v"}


def test_no_content_type_means_json_as_in_kube(srv: ApiServerProcess) -> None:
    """kube-apiserver's NegotiateInputSerializer takes the first supported type (JSON) when there is none."""
    code, body = raw(srv, "POST", CM, json.dumps(cm("no-ctype")).encode())
    assert code == 201, body
    code, body = raw(srv, "POST", CM, b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: no-ctype-yaml}\n")
    status(code, body, 400, "BadRequest", "JSON")


def test_invalid_utf8(srv: ApiServerProcess) -> None:
    for ctype, payload in [("application/json", b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"u8"},'
                                                b'"data":{"k":"\xff\xfe"}}'),
                           ("application/yaml", b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: u8}\n"
                                                b"data: {k: \"\xc3\x28\"}\n")]:
        code, body = raw(srv, "POST", CM, payload, {"Content-Type": ctype})
        status(code, body, 400, "BadRequest", "UTF-8")
    absent(srv, f"{CM}/u8")


# ------------------------------------------------------------------------------------------ size
def test_oversized_body_by_content_length(srv: ApiServerProcess) -> None:
    big = json.dumps(cm("big", data={"k": "x" * (MAX_BODY + 1)})).encode()
    code, body = raw(srv, "POST", CM, big, {"Content-Type": "application/json"})
    status(code, body, 413, "RequestEntityTooLarge", str(MAX_BODY))
    absent(srv, f"{CM}/big")


def test_oversized_body_chunked(srv: ApiServerProcess) -> None:
    """No Content-Length to check up front: the limit holds while the body streams in."""
    head = json.dumps(cm("big-chunked"))[:-1].encode() + b', "data": {"k": "'
    chunks = [head] + [b"x" * (256 * 1024)] * 13 + [b'"}}']
    code, body = raw(srv, "POST", CM, headers={"Content-Type": "application/json"}, chunks=chunks)
    status(code, body, 413, "RequestEntityTooLarge")
    absent(srv, f"{CM}/big-chunked")


# ------------------------------------------------------------------------------------------ bodies
@pytest.mark.parametrize("payload", [b"{", b"}", b'{"a":}', b"[1,", b"\x00\x01\x02", b'{"a": 1e400}', b"nul",
                                     b'"\\ud800"', b"{" * 3])
def test_malformed_json(srv: ApiServerProcess, payload: bytes) -> None:
    code, body = raw(srv, "POST", CM, payload, {"Content-Type": "application/json"})
    status(code, body, 400, "BadRequest", "JSON")


@pytest.mark.parametrize("method", ["POST", "PUT"])
@pytest.mark.parametrize("payload", [b"[]", b"[{}]", b"42", b'"str"', b"null", b"true", b"-1.5"])
def test_non_object_json(srv: ApiServerProcess, method: str, payload: bytes) -> None:
    path = CM if method == "POST" else f"{CM}/non-object"
    code, body = raw(srv, method, path, payload, {"Content-Type": "application/json"})
    assert 400 <= code < 500, (code, body)
    status(code, body, code, body["reason"])


@pytest.mark.parametrize("payload", [b"- a\n- b\n", b"just a string\n", b"42\n", b"~\n", b"a: [b\n", b"{a: 1\n",
                                     b"a: *undefined\n", b"? [a, b]\n: c\n", b"a: !!set {x}\n",
                                     b"a: 1\n---\nb: 2\n", b"\t- tab\n", b"a: !!python/object:os.system x\n"])
def test_garbage_yaml(srv: ApiServerProcess, payload: bytes) -> None:
    code, body = raw(srv, "POST", CM, payload, {"Content-Type": "application/yaml"})
    assert 400 <= code < 500, (code, body)
    status(code, body, code, body["reason"])


# ------------------------------------------------------------------------------------------ patches
@pytest.fixture
def target(srv: ApiServerProcess, request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    name = "p-" + str(abs(hash(request.node.name)) % 10**8)
    code, body = post_json(srv, CM, cm(name, data={"k": "v"}))
    assert code in (201, 409), body
    code, body = raw(srv, "GET", f"{CM}/{name}")
    return f"{CM}/{name}", body


GARBAGE_PATCHES: dict[str, list[bytes]] = {
    "application/json-patch+json": [
        b"{}", b"[1]", b'[{"op": "add"}]', b'[{"op": "nope", "path": "/data"}]', b'[{"path": "/data"}]',
        b'[{"op": "add", "path": "data", "value": 1}]', b'[{"op": "move", "from": "/nope", "path": "/data/x"}]',
        b'[{"op": "add", "path": "/data/k/deeper", "value": 1}]', b'[{"op": "replace", "path": 5, "value": 1}]',
        b'[{"op": "copy", "from": "/data", "path": "/data/k/x"}]', b'[{"op": "remove", "path": "/metadata/name"}]',
        b'[{"op": "add", "path": "/data/k", "value": ' + b"[" * 200 + b"]" * 200 + b"}]", b"[" + b"[" * 500,
    ],
    "application/merge-patch+json": [
        b"[]", b"1", b'"s"', b'{"data": 5}', b'{"metadata": []}', b'{"metadata": {"name": 7}}',
        b'{"kind": "Secret"}', b'{"data": {"k": {"nested": 1}}}', b"{" + b'"a":{' * 300 + b"}" * 301,
    ],
    "application/strategic-merge-patch+json": [
        b"[]", b'{"$patch": "nonsense"}', b'{"data": {"$patch": "replace", "k": 1}}', b'{"$retainKeys": 5}',
        b'{"metadata": {"$deleteFromPrimitiveList/finalizers": 7}}', b'{"$setElementOrder/data": {}}',
        b'{"metadata": {"labels": {"$patch": "delete"}, "name": null}}', b'{"data": null, "metadata": 3}',
    ],
    "application/apply-patch+yaml": [
        b"[]", b"- a\n", b"{}", b"apiVersion: v1\n", b"kind: ConfigMap\n", b"apiVersion: v1\nkind: Secret\n",
        b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: other}\n", b"a: [\n",
        b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, managedFields: 5}\n",
    ],
}


@pytest.mark.parametrize(("ctype", "index"), [(c, i) for c, ps in GARBAGE_PATCHES.items() for i in range(len(ps))])
def test_garbage_in_every_patch_type(srv: ApiServerProcess, target: tuple[str, dict[str, Any]], ctype: str,
                                     index: int) -> None:
    path, before = target
    query = "?fieldManager=abuse" if "apply" in ctype else ""
    code, body = raw(srv, "PATCH", path + query, GARBAGE_PATCHES[ctype][index], {"Content-Type": ctype})
    assert 400 <= code < 500 or code == 200, (code, body)
    if code >= 400:
        status(code, body, code, body["reason"])
        code, now = raw(srv, "GET", path)
        assert now["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


@pytest.mark.parametrize("ctype", ["application/json", "text/plain", "application/yaml", ""])
def test_patch_of_a_non_patch_media_type(srv: ApiServerProcess, target: tuple[str, dict[str, Any]],
                                         ctype: str) -> None:
    path, before = target
    code, body = raw(srv, "PATCH", path, b'{"data": {"k": "changed"}}', {"Content-Type": ctype} if ctype else {})
    status(code, body, 415, "UnsupportedMediaType")
    assert raw(srv, "GET", path)[1]["data"] == before["data"]


# ------------------------------------------------------------------------------------------ list parameters
def test_negative_limit_is_no_limit(srv: ApiServerProcess) -> None:
    """limit=-1 returned an empty page and a continue token leading back to it forever; kube's store pages
    only when limit > 0."""
    for i in range(3):
        post_json(srv, CM, cm(f"page-{i}"))
    code, full = raw(srv, "GET", CM)
    assert code == 200
    for limit in ("-1", "-9999", "0"):
        code, body = raw(srv, "GET", f"{CM}?limit={limit}")
        assert code == 200, body
        assert "continue" not in body["metadata"], body["metadata"]
        assert [i["metadata"]["name"] for i in body["items"]] == [i["metadata"]["name"] for i in full["items"]]


def test_following_continue_tokens_ends(srv: ApiServerProcess) -> None:
    for i in range(5):
        post_json(srv, CM, cm(f"follow-{i}"))
    names: list[str] = []
    url = f"{CM}?limit=2"
    for _ in range(100):
        code, body = raw(srv, "GET", url)
        assert code == 200, body
        names += [i["metadata"]["name"] for i in body["items"]]
        cont = body["metadata"].get("continue")
        if not cont:
            break
        url = f"{CM}?limit=2&continue={quote(cont)}"
    else:
        pytest.fail("continue tokens never ended")
    assert len(names) == len(set(names)) and {f"follow-{i}" for i in range(5)} <= set(names)


@pytest.mark.parametrize(("query", "field", "words"), [
    ("resourceVersionMatch=bogus&resourceVersion=1", "resourceVersionMatch", ['Unsupported value: "bogus"']),
    ("resourceVersionMatch=Exact", "resourceVersionMatch", ["forbidden unless resourceVersion is provided"]),
    ("resourceVersionMatch=Exact&resourceVersion=0", "resourceVersionMatch", ['"exact" is forbidden']),
])
def test_resource_version_match_garbage(srv: ApiServerProcess, query: str, field: str, words: list[str]) -> None:
    """kube's ValidateListOptions: 422 Invalid on ListOptions.meta.k8s.io (the issue said 400; kube says 422)."""
    code, body = raw(srv, "GET", f"{CM}?{query}")
    st = status(code, body, 422, "Invalid", 'ListOptions.meta.k8s.io "" is invalid', *words)
    assert st["details"]["causes"][0]["field"] == field


@pytest.mark.parametrize("rv", ["abc", "-1", "1.5", "1e3", "²"])
def test_resource_version_garbage(srv: ApiServerProcess, rv: str) -> None:
    code, body = raw(srv, "GET", f"{CM}?resourceVersion={quote(rv)}")
    status(code, body, 400, "BadRequest", "resourceVersion")
    code, body = raw(srv, "GET", f"{CM}?watch=true&resourceVersion={quote(rv)}&timeoutSeconds=1")
    assert 400 <= code < 500 or (code == 200 and b"ERROR" in (body if isinstance(body, bytes) else b"ERROR")), body


@pytest.mark.parametrize("token", ["x", "e30", "eyJydiI6ICJhIn0", "eyJydiI6MSwic3RhcnQiOltdfQ", "%%%", "=" * 9])
def test_continue_garbage(srv: ApiServerProcess, token: str) -> None:
    code, body = raw(srv, "GET", f"{CM}?limit=1&continue={quote(token)}")
    status(code, body, 400, "BadRequest", "continue")


@pytest.mark.parametrize("selector", ["a===b", "a in (b", "!!", "a=b,,=c", "=", "a in b", "a notin", "(a)",
                                      "a!", "a>b", "a<1x", "x=" + "v" * 64, "-a=b", "a/b/c=d"])
def test_label_selector_garbage(srv: ApiServerProcess, selector: str) -> None:
    code, body = raw(srv, "GET", f"{CM}?labelSelector={quote(selector)}")
    status(code, body, 400, "BadRequest")


def test_empty_value_selector_as_in_kube(srv: ApiServerProcess) -> None:
    """`a==` is valid in kube (labels.Parser.parseExactValue takes end of input as the empty value): it
    selects objects whose label `a` is "" (the issue expected a 400; kube-apiserver answers 200)."""
    empty = cm("sel-empty")
    empty["metadata"]["labels"] = {"sel": ""}
    full = cm("sel-full")
    full["metadata"]["labels"] = {"sel": "x"}
    for o in (empty, full):
        post_json(srv, CM, o)
    code, body = raw(srv, "GET", f"{CM}?labelSelector={quote('sel==')}")
    assert code == 200, body
    assert [i["metadata"]["name"] for i in body["items"]] == ["sel-empty"]


@pytest.mark.parametrize("selector", ["metadata.nam=x", "metadata.name", "=x", "data.k=v", "metadata.name!"])
def test_field_selector_garbage(srv: ApiServerProcess, selector: str) -> None:
    code, body = raw(srv, "GET", f"{CM}?fieldSelector={quote(selector)}")
    status(code, body, 400, "BadRequest")


@pytest.mark.parametrize("param", ["limit=1.5", "limit=ten", "watch=perhaps", "timeoutSeconds=-x&watch=1",
                                   "allowWatchBookmarks=maybe&watch=1", "fieldValidation=Loose", "dryRun=Some"])
def test_other_parameter_garbage(srv: ApiServerProcess, param: str) -> None:
    method = "POST" if param.startswith(("fieldValidation", "dryRun")) else "GET"
    code, body = raw(srv, method, f"{CM}?{param}", json.dumps(cm("params")).encode() if method == "POST" else None,
                     {"Content-Type": "application/json"})
    status(code, body, 400, "BadRequest", param.split("=")[0])


# ------------------------------------------------------------------------------------------ names
@pytest.mark.parametrize("name", ["UPPER", "a_b", "a" * 254, "-a", "a-", "a..b", "sp ace", "ümlaut", "a/b", "..",
                                  "%2e%2e", "\u0000"])
@pytest.mark.parametrize("path", [CM, "/api/v1/namespaces", f"/apis/apps/v1/namespaces/{NS}/deployments"])
def test_invalid_names(srv: ApiServerProcess, name: str, path: str) -> None:
    obj: dict[str, Any] = {"metadata": {"name": name}}
    if "deployments" in path:
        obj["spec"] = {"selector": {"matchLabels": {"a": "b"}}, "template": {
            "metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}
    code, body = post_json(srv, path, obj)
    assert 400 <= code < 500, (code, body)
    status(code, body, code, body["reason"])
    if code == 422:
        assert "metadata.name" in body["message"]


@pytest.mark.parametrize("name", ["UPPER", "a_b", "%20", "a" * 300])
def test_invalid_names_in_the_url(srv: ApiServerProcess, name: str) -> None:
    code, body = raw(srv, "GET", f"{CM}/{name}")
    assert code in (400, 404), (code, body)
    code, body = raw(srv, "PUT", f"{CM}/{name}", json.dumps(cm(name)).encode(), {"Content-Type": "application/json"})
    assert 400 <= code < 500, (code, body)
    status(code, body, code, body["reason"])


# ------------------------------------------------------------------------------------------ system namespaces
@pytest.mark.parametrize("name", ["default", "kube-system", "kube-public"])
def test_system_namespaces_cannot_be_deleted(srv: ApiServerProcess, name: str) -> None:
    """kube's NamespaceLifecycle admission: same code, reason, message and details."""
    code, _ = raw(srv, "GET", f"/api/v1/namespaces/{name}")
    if code == 404:
        assert post_json(srv, "/api/v1/namespaces", {"metadata": {"name": name}})[0] == 201
    for q in ("", "?dryRun=All"):
        code, body = raw(srv, "DELETE", f"/api/v1/namespaces/{name}{q}")
        st = status(code, body, 403, "Forbidden", f'namespaces "{name}" is forbidden: this namespace may not be deleted')
        assert st["details"] == {"name": name, "kind": "namespaces"}
    code, body = raw(srv, "GET", f"/api/v1/namespaces/{name}")
    assert code == 200 and "deletionTimestamp" not in body["metadata"], body


def test_deleting_all_namespaces_spares_the_system_ones(tmp_path: Any) -> None:
    """deletecollection deletes the others and answers the refusal, as kube's store does."""
    with ApiServerProcess(tmp_path / "dc") as own:
        assert post_json(own, "/api/v1/namespaces", {"metadata": {"name": "user-ns"}})[0] == 201
        code, body = raw(own, "DELETE", "/api/v1/namespaces")
        status(code, body, 403, "Forbidden", "this namespace may not be deleted")
        code, body = raw(own, "GET", "/api/v1/namespaces/user-ns")
        assert code == 404 or "deletionTimestamp" in body["metadata"], body
        code, body = raw(own, "GET", "/api/v1/namespaces/default")
        assert code == 200 and "deletionTimestamp" not in body["metadata"], body


# ------------------------------------------------------------------------------------------ typed bodies
# Bodies decode as plain JSON; handlers that read fields of fixed types check them (found by schemathesis:
# DeleteOptions.preconditions as a number gave a 500).
@pytest.mark.parametrize("opts", [{"preconditions": -7.4e-205}, {"preconditions": {"uid": 5}}, {"dryRun": 3},
                                  {"dryRun": [1]}, {"gracePeriodSeconds": "soon"}, {"gracePeriodSeconds": [1]},
                                  {"propagationPolicy": 7}, {"orphanDependents": "yes"}, [], "x", 5])
def test_delete_options_of_the_wrong_types(srv: ApiServerProcess, target: tuple[str, dict[str, Any]],
                                           opts: Any) -> None:
    path, before = target
    code, body = raw(srv, "DELETE", path, json.dumps(opts).encode(), {"Content-Type": "application/json"})
    status(code, body, 400, "BadRequest")
    assert raw(srv, "GET", path)[1]["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


def _pod(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}


@pytest.mark.parametrize("sub", [
    {"metadata": "x"}, {"deleteOptions": []}, {"deleteOptions": {"preconditions": 1}}, [1], "evict-me"])
def test_eviction_of_the_wrong_shape(srv: ApiServerProcess, sub: Any) -> None:
    pods = f"/api/v1/namespaces/{NS}/pods"
    post_json(srv, pods, _pod("evictee"))
    code, body = post_json(srv, f"{pods}/evictee/eviction", sub)
    status(code, body, 400, "BadRequest")
    assert raw(srv, "GET", f"{pods}/evictee")[0] == 200


@pytest.mark.parametrize("sub", [{"target": "node-1"}, {"target": {"name": 5}}, [], 3])
def test_binding_of_the_wrong_shape(srv: ApiServerProcess, sub: Any) -> None:
    pods = f"/api/v1/namespaces/{NS}/pods"
    post_json(srv, pods, _pod("bindee"))
    code, body = post_json(srv, f"{pods}/bindee/binding", sub)
    status(code, body, 400, "BadRequest")
    assert "nodeName" not in raw(srv, "GET", f"{pods}/bindee")[1]["spec"]


@pytest.mark.parametrize("review", [{"spec": {"resourceAttributes": [1]}}, {"spec": {"nonResourceAttributes": "x"}},
                                    {"spec": {"resourceAttributes": {"verb": "get"}}, "metadata": "m"}])
def test_access_review_of_the_wrong_shape_from_the_viewer(srv: ApiServerProcess, review: Any) -> None:
    code, body = raw(srv, "POST", SSAR, json.dumps(review).encode(), {"Content-Type": "application/json"},
                     token=srv.readonly_token)
    status(code, body, 400, "BadRequest", "SelfSubjectAccessReview")
