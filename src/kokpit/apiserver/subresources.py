"""Subresources with their own semantics: pods/eviction, pods/binding, pods/log and ``scale`` (``status`` is
an ordinary write with a field filter, in :mod:`rest`; serviceaccounts/token and the review kinds are
answered by :mod:`rbac_requests`).

pods/log is a proxy: the server imports no kubelet code, it reads the Pod's Node for the kubelet's endpoint
and streams its answer through :class:`kokpit._lib.http1.Http1Pool`, kokpit's one low-level HTTP client.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from kokpit._lib.aio import cancel_and_wait
from kokpit._lib.http1 import ConnectError, Http1Pool, StreamedResponse, TransportError
from kokpit.apiserver import errors, eviction
from kokpit.apiserver.decoding import as_object, options_of, typed
from kokpit.apiserver.patch import json_merge_patch, json_patch
from kokpit.apiserver.resources import ResourceType
from kokpit.apiserver.responses import Receive, Response, Send, json_response, status_ok
from kokpit.apiserver.rest import Rest, WriteOptions
from kokpit.apiserver.storage.store import Entry, Store

__all__ = ["bind", "evict", "get_scale", "kubelet_client_context", "patch_scale", "pod_log", "update_scale"]

_LOG_CONNECT_TIMEOUT = 5.0
_LOG_HEAD_TIMEOUT = 10.0


async def evict(rest: Rest, rt: ResourceType, ns: str | None, name: str, body: Any,
                pdb_rt: ResourceType | None = None) -> Response:
    """pods/eviction: a delete that PodDisruptionBudgets may refuse (:mod:`kokpit.apiserver.eviction`)."""
    if rt.kind != "Pod":
        raise errors.not_found(rt.plural, name, rt.group)
    body = as_object(body, "Eviction")
    if (typed(body, "metadata", dict, "Eviction") or {}).get("name") not in (None, name):
        raise errors.bad_request("name in URL does not match name in Eviction object")
    opts = typed(body, "deleteOptions", dict, "Eviction") or {}
    checked = options_of(opts, {}, "Eviction.deleteOptions")  # the field types, as kube's decoder checks them
    await eviction.evict(rest, rt, pdb_rt, ns or "", name, opts, dry_run=checked.dry_run)
    return json_response(status_ok(), 201)


async def bind(rest: Rest, rt: ResourceType, ns: str | None, name: str, body: Any, opts: WriteOptions) -> Response:
    if rt.kind != "Pod":
        raise errors.not_found(rt.plural, name, rt.group)
    target = typed(as_object(body, "Binding"), "target", dict, "Binding") or {}
    node = typed(target, "name", str, "Binding.target")
    if not node:
        raise errors.invalid("Binding", name, [errors.Cause("target.name", "Required value",
                                                            "FieldValueRequired")])
    cur = rest.get(rt, ns, name)
    spec = cur.obj.get("spec") or {}
    if spec.get("nodeName"):
        raise errors.conflict(rt.plural, name, rt.group, f"pod {name} is already assigned to node "
                              f"\"{spec['nodeName']}\"")
    pod = cur.copy()
    pod.setdefault("spec", {})["nodeName"] = node
    conds = pod.setdefault("status", {}).setdefault("conditions", [])
    conds[:] = [c for c in conds if c.get("type") != "PodScheduled"]
    conds.append({"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                  "lastTransitionTime": rest.now()})
    opts.subresource = ""
    await rest._write_update(rt, rt.key(ns, name), cur, pod, opts)
    return json_response(status_ok(), 201)


def get_scale(rest: Rest, rt: ResourceType, ns: str | None, name: str) -> dict[str, Any]:
    """The autoscaling/v1 Scale view of a scalable object."""
    obj = rest.get(rt, ns, name).obj
    return _scale_of(obj)


def _scale_of(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata", {})
    sel = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return {"kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {k: meta.get(k) for k in ("name", "namespace", "uid", "resourceVersion",
                                                  "creationTimestamp") if k in meta},
            "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 0)},
            "status": {"replicas": (obj.get("status") or {}).get("replicas", 0),
                       "selector": ",".join(f"{k}={v}" for k, v in sel.items())}}


async def update_scale(rest: Rest, rt: ResourceType, ns: str | None, name: str, body: Any,
                       opts: WriteOptions) -> Response:
    try:
        # Go clients omit `replicas: 0` (omitempty): kubectl scale --replicas=0 PUTs {"spec":{}}
        replicas = int((body.get("spec") or {}).get("replicas", 0))
    except (AttributeError, TypeError, ValueError):
        raise errors.invalid("Scale", name, [errors.Cause("spec.replicas", "Required value: an integer",
                                                          "FieldValueRequired")], "autoscaling") from None
    opts.subresource = ""
    e, _ = await rest.patch(rt, ns, name, "merge", {"spec": {"replicas": replicas}}, opts)
    assert isinstance(e, Entry)
    return json_response(_scale_of(e.obj))


async def patch_scale(rest: Rest, rt: ResourceType, ns: str | None, name: str, ptype: str, data: Any,
                      opts: WriteOptions) -> Response:
    """kubectl scale (1.37) sends a merge patch {"spec":{"replicas":N}} to /scale: apply it to the current
    Scale view and write it like a PUT (a Scale has no lists, so strategic == merge)."""
    if ptype == "apply":
        raise errors.method_not_allowed("server-side apply to the scale subresource is not supported")
    scale = get_scale(rest, rt, ns, name)
    scale = json_patch(scale, data) if ptype == "json" else json_merge_patch(scale, data)
    return await update_scale(rest, rt, ns, name, scale, opts)


def kubelet_client_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """How this server calls kubelets: TLS presenting its kubelet client certificate (kube-apiserver
    --kubelet-client-certificate/--kubelet-client-key).  The kubelet's self-signed serving certificate is not
    verified, as kube-apiserver does not without --kubelet-certificate-authority; the kubelet is the side
    that authenticates (logs may hold secrets, the caller's identity is what matters)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.load_cert_chain(cert_file, key_file)
    return ctx


async def pod_log(rest: Rest, store: Store, rt: ResourceType, ns: str | None, name: str, query: dict[str, str],
                  receive: Receive, send: Send, tls: ssl.SSLContext | None = None) -> None:
    """pods/log, proxied from the Pod's kubelet.  The contract (the server imports no kubelet code): the
    kubelet publishes its port as the Node's status.daemonEndpoints.kubeletEndpoint.Port and serves
    ``GET /containerLogs/<ns>/<pod>/<container>?tailLines=&follow=&previous=&limitBytes=`` over HTTPS on the
    Node's InternalIP to the client certificate ``tls`` presents (see :func:`kubelet_client_context`; None:
    plain HTTP, for a server without a CA key); a non-200 answer's text becomes a 400 (as kube relays
    kubelet errors)."""
    if rt.kind != "Pod" or rt.group != "":
        raise errors.not_found(rt.plural, name, rt.group)
    pod = rest.get(rt, ns, name).obj
    spec = pod.get("spec") or {}
    mains = [str(c.get("name")) for c in spec.get("containers") or []]
    container = query.get("container") or ""
    if not container:
        if len(mains) != 1:
            raise errors.bad_request(f"a container name must be specified for pod {name}, "
                                     f"choose one of: [{' '.join(mains)}]")
        container = mains[0]
    elif container not in mains + [str(c.get("name")) for c in spec.get("initContainers") or []]:
        raise errors.bad_request(f"container {container} is not valid for pod {name}")
    node_name = spec.get("nodeName")
    if not node_name:
        raise errors.bad_request(f"pod {name} does not have a host assigned")
    node = store.get(f"/core/nodes/{node_name}")
    nstatus = (node.obj.get("status") or {}) if node is not None else {}
    port = ((nstatus.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}).get("Port")
    host = next((a.get("address") for a in nstatus.get("addresses") or []
                 if a.get("type") == "InternalIP"), "127.0.0.1")
    if not port:
        raise errors.bad_request(f"node {node_name} publishes no kubelet endpoint for logs")
    params = {k: query[k] for k in ("follow", "previous", "tailLines", "limitBytes") if query.get(k)}
    target = "/containerLogs/" + "/".join(quote(str(x), safe="") for x in (ns, name, container))
    if params:
        target += "?" + urlencode(params)
    kubelet = Http1Pool(host, int(port), size=1, ssl_context=tls)
    try:
        async with kubelet.stream("GET", target, connect_timeout=_LOG_CONNECT_TIMEOUT,
                                  timeout=_LOG_HEAD_TIMEOUT) as answer:
            if answer.status != 200:
                async with asyncio.timeout(_LOG_HEAD_TIMEOUT):
                    text = (await answer.read()).decode(errors="replace").strip()
                raise errors.bad_request(text or f"the kubelet answered {answer.status}")
            await _relay(answer, receive, send)
    except ConnectError as e:
        raise errors.bad_request(f"cannot reach the kubelet of node {node_name} at {host}:{port}: "
                                 f"{e.__cause__ or e}") from None
    except (TransportError, OSError, TimeoutError, asyncio.IncompleteReadError, ssl.SSLError) as e:
        raise errors.bad_request(f"reading logs from the kubelet of node {node_name} failed: "
                                 f"{e.__cause__ or e}") from None


async def _relay(answer: StreamedResponse, receive: Receive, send: Send) -> None:
    """Copy the kubelet's body to the client as it arrives, until either side ends it."""
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"cache-control", b"no-cache, private")]})

    async def disconnected() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    dtask = asyncio.ensure_future(disconnected())
    chunks = answer.chunks()
    try:
        while True:
            rtask: asyncio.Task[bytes] = asyncio.ensure_future(anext(chunks, b""))
            done, _ = await asyncio.wait({rtask, dtask}, return_when=asyncio.FIRST_COMPLETED)
            if rtask not in done:
                await cancel_and_wait([rtask])
                break
            chunk = rtask.result()
            if not chunk:
                break
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    except (OSError, ValueError, asyncio.IncompleteReadError):
        pass  # the kubelet went away mid-stream: end the response like the stream ended
    finally:
        dtask.cancel()
        await chunks.aclose()
        with contextlib.suppress(Exception):
            await send({"type": "http.response.body", "body": b"", "more_body": False})
