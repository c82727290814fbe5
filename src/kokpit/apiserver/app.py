"""The HTTP face of the embedded API server: a raw ASGI application served by uvicorn.

It turns requests into calls on :class:`~kokpit.apiserver.rest.Rest` the way kube-apiserver's handler
chain does (authentication → request info → authorization → verb handler) and converts every failure into
a `Status`.  Raw ASGI rather than a web framework: the Kubernetes URL grammar is its own, and list and watch
responses are built from pre-serialized bytes.  This module is the chain and the verb dispatch; the concepts
live beside it:

- :mod:`~kokpit.apiserver.routing` — method and path → :class:`RequestInfo` (verb, resource, name, ...);
- :mod:`~kokpit.apiserver.decoding` — request bodies, patch types, write/delete options;
- :mod:`~kokpit.apiserver.responses` — JSON / YAML / Table negotiation of answers;
- :mod:`~kokpit.apiserver.lists` and :mod:`~kokpit.apiserver.watch` — LIST paging and WATCH streaming;
- :mod:`~kokpit.apiserver.subresources` — eviction, binding, scale, access reviews, the pods/log proxy;
- :mod:`~kokpit.apiserver.nonresource` — /version, health, /metrics, discovery, OpenAPI.
"""

from __future__ import annotations

import logging
import ssl
import time
from dataclasses import dataclass
from urllib.parse import parse_qs

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from kokpit.apiserver import errors, subresources
from kokpit.apiserver.auth import Authenticator, User
from kokpit.apiserver.decoding import decode, delete_options, patch_type, read_body, write_options
from kokpit.apiserver.errors import APIError
from kokpit.apiserver.lists import list_response, matches, selectors_of
from kokpit.apiserver.nonresource import NonResourcePaths
from kokpit.apiserver.rbac_requests import Authorization
from kokpit.apiserver.registry import Registry
from kokpit.apiserver.responses import (
    Receive,
    Response,
    Scope,
    Send,
    json_response,
    object_response,
    status_ok,
    table_response,
    written_response,
)
from kokpit.apiserver.rest import Rest
from kokpit.apiserver.routing import RequestInfo, parse_bool, request_info, resource_type
from kokpit.apiserver.storage.store import Entry, Store
from kokpit.apiserver.watch import serve_watch

__all__ = ["App", "AppConfig"]

log = logging.getLogger(__name__)

_PUBLIC_PATHS = {"/healthz", "/livez", "/readyz", "/version", "/version/"}


@dataclass
class AppConfig:
    version_label: str = "v1.37.0"
    # who answers: sent as X-Kokpit-Instance on the health endpoints, so that of several replicas on one
    # data dir (one serving, the others standing by) a prober can tell which one serves
    instance: str = ""
    server_address: str = "127.0.0.1:6443"
    bookmark_interval: float = 60.0
    default_watch_timeout: tuple[float, float] = (1800.0, 3600.0)


class App:
    """The ASGI callable. Controllers inside the server share `rest`, `store` and `registry`."""

    def __init__(self, store: Store, registry: Registry, rest: Rest, auth: Authenticator | None,
                 config: AppConfig) -> None:
        self.store = store
        self.registry = registry
        self.rest = rest
        self.auth = auth
        self.config = config
        self.rbac: Authorization | None = None  # set by server.build: RBAC and the review/token APIs
        self.kubelet_tls: ssl.SSLContext | None = None  # set by server.serve: its kubelet client certificate
        self.metrics = CollectorRegistry()
        self._requests = Counter("apiserver_request_total", "API requests by verb, resource and code",
                                 ["verb", "group", "resource", "code"], registry=self.metrics)
        self._latency = Histogram("apiserver_request_duration_seconds", "API request latency",
                                  ["verb", "group", "resource"], registry=self.metrics,
                                  buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
                                           5, 10, 30, 60))
        g = Gauge("apiserver_registered_watchers", "Open watches", registry=self.metrics)
        g.set_function(lambda: float(store.watcher_count()))
        g = Gauge("kokpit_storage_revision", "Current store revision", registry=self.metrics)
        g.set_function(lambda: float(store.revision))
        g = Gauge("kokpit_storage_compacted_revision", "Compacted revision", registry=self.metrics)
        g.set_function(lambda: float(store.compact_revision))
        g = Gauge("apiserver_storage_size_bytes", "Size of the SQLite database and WAL", registry=self.metrics)
        g.set_function(lambda: float(store.size_bytes()))
        g = Gauge("kokpit_storage_commits", "Group commits so far", registry=self.metrics)
        g.set_function(lambda: float(store.commits))
        g = Gauge("kokpit_storage_rows_written", "Log rows written so far", registry=self.metrics)
        g.set_function(lambda: float(store.rows_written))
        self.ready = True
        self._non_resource = NonResourcePaths(store, registry, self.metrics, version_label=config.version_label,
                                              server_address=config.server_address, instance=config.instance,
                                              ready=lambda: self.ready)

    # ------------------------------------------------------------------ ASGI entry
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        start = time.perf_counter()
        info: RequestInfo | None = None
        code = 500
        try:
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            query = {k: v[-1] for k, v in parse_qs(scope.get("query_string", b"").decode("latin-1"),
                                                  keep_blank_values=True).items()}
            path = scope["path"]
            user = self._authenticate(path, headers)
            info = request_info(scope["method"], path, query)
            if self.rbac is not None and self.auth is not None:  # impersonation, then RBAC (rbac_requests.py)
                user = self.rbac.check(user, scope["method"], info.resource_request, info.verb, info.group,
                                       info.resource, info.subresource, info.namespace, info.name, path,
                                       headers, scope["headers"], query.get("fieldSelector", ""))
            if info.verb == "watch":
                rt = resource_type(self.registry, info)
                await serve_watch(self.rest, self.store, rt, info.namespace if rt.namespaced else None,
                                  info.name, query, headers, receive, send,
                                  bookmark_interval=self.config.bookmark_interval,
                                  default_timeout=self.config.default_watch_timeout)
                self._observe(info, 200, None)  # counted, but a watch's lifetime is no latency
                return
            if info.verb == "get" and info.subresource == "log":
                rt = resource_type(self.registry, info)
                await subresources.pod_log(self.rest, self.store, rt, info.namespace, info.name, query,
                                           receive, send, self.kubelet_tls)
                self._observe(info, 200, None)  # a followed log's lifetime is no latency either
                return
            body = await read_body(receive, headers)
            resp = await self._dispatch(info, query, headers, body, user)
        except APIError as e:
            resp = self._error(e)
        except Exception:
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            resp = self._error(errors.internal("an unexpected error occurred; see the server log"))
        code = resp.status
        hdrs = [(b"content-type", resp.content_type), (b"content-length", str(len(resp.body)).encode()),
                (b"cache-control", b"no-cache, private"), *resp.headers]
        await send({"type": "http.response.start", "status": resp.status, "headers": hdrs})
        await send({"type": "http.response.body", "body": resp.body if scope["method"] != "HEAD" else b""})
        if info is not None:
            self._observe(info, code, time.perf_counter() - start)

    def _observe(self, info: RequestInfo, code: int, seconds: float | None) -> None:
        res = info.resource + (f"/{info.subresource}" if info.subresource else "")
        self._requests.labels(info.verb, info.group, res, str(code)).inc()
        if seconds is not None:
            self._latency.labels(info.verb, info.group, res).observe(seconds)

    def _error(self, e: APIError) -> Response:
        hdrs = []
        if e.retry_after is not None:
            hdrs.append((b"retry-after", str(e.retry_after).encode()))
        return Response(e.code, orjson.dumps(e.status()), headers=hdrs)

    def _authenticate(self, path: str, headers: dict[str, str]) -> User | None:
        if self.auth is None:
            return None
        user = self.auth.authenticate(headers.get("authorization"))
        if user is None and path not in _PUBLIC_PATHS:
            raise errors.unauthorized()
        return user

    # ------------------------------------------------------------------ verbs
    async def _dispatch(self, info: RequestInfo, query: dict[str, str], headers: dict[str, str],
                        body: bytes, user: User | None = None) -> Response:
        if not info.resource_request:
            if info.path.rstrip("/") == "/kokpit/compact" and info.verb == "create":
                rev = await self.store.compact(self.store.revision)
                return json_response({"compactedRevision": rev})
            return self._non_resource.serve(info, query, headers)
        rest = self.rest
        rt = resource_type(self.registry, info)
        ns = info.namespace if rt.namespaced else None
        if rt.plural == "namespaces" and rt.group == "":
            ns = None
        accept = headers.get("accept", "")
        v = info.verb
        only = {"eviction": "create", "binding": "create", "log": "get", "token": "create"}.get(info.subresource)
        if only is not None and v != only:  # else e.g. DELETE pods/x/binding would delete the pod itself
            raise errors.method_not_allowed(f"the server does not allow this method on the requested "
                                            f"resource ({info.resource}/{info.subresource})")
        if v == "get":
            if info.subresource == "scale":
                return json_response(subresources.get_scale(rest, rt, ns, info.name))
            e = rest.get(rt, ns, info.name)
            if "as=Table" in accept:
                return table_response(rest, rt, [rest.to_view(rt, e)], query, rv=str(e.rv))
            return object_response(rest, rt, e, accept)
        if v == "list":
            return list_response(rest, self.store, rt, ns, query, accept)
        opts = write_options(info, query, headers)
        opts.may_hold_null = b"null" in body or "json" not in headers.get("content-type", "json")  # YAML: `~`
        if v == "create":
            if self.rbac is not None and self.rbac.handles(rt, info.subresource):  # reviews, TokenRequest
                return json_response(self.rbac.create(rt, ns, info.name, decode(body, headers), user), 201)
            if info.subresource == "eviction":
                return await subresources.evict(rest, rt, ns, info.name, decode(body, headers),
                                                self.registry.get("policy", "v1", "poddisruptionbudgets"))
            if info.subresource == "binding":
                return await subresources.bind(rest, rt, ns, info.name, decode(body, headers), opts)
            if info.name and not info.subresource:
                raise errors.method_not_allowed("POST to a named resource is not allowed; use PUT or PATCH")
            if info.subresource:  # status, scale, ...: kube serves only get/update/patch on these
                raise errors.method_not_allowed(f"the server does not allow this method on the requested "
                                                f"resource ({info.resource}/{info.subresource})")
            obj, _ = await rest.create(rt, ns, decode(body, headers), opts)
            return written_response(rest, rt, obj, 201, opts, accept)
        if v == "update":
            data = decode(body, headers)
            if info.subresource == "scale":
                return await subresources.update_scale(rest, rt, ns, info.name, data, opts)
            obj2 = await rest.update(rt, ns, info.name, data, opts)
            return written_response(rest, rt, obj2, 200, opts, accept)
        if v == "patch":
            ptype = patch_type(headers)
            data = decode(body, headers, patch=True)
            if ptype == "apply":
                opts.force = parse_bool(query.get("force"), "force")
            if info.subresource == "scale":
                return await subresources.patch_scale(rest, rt, ns, info.name, ptype, data, opts)
            obj3, created = await rest.patch(rt, ns, info.name, ptype, data, opts)
            return written_response(rest, rt, obj3, 201 if created else 200, opts, accept)
        if v == "delete":
            dopts = delete_options(query, body, headers)
            obj4, removed = await rest.delete(rt, ns, info.name, dopts)
            # like kube: 200 with the object while it is still terminating, and for kinds whose storage
            # returns the deleted object (pods, custom resources); a Success Status otherwise
            if isinstance(obj4, Entry) and (not removed or rt.kind == "Pod" or rt.crd_name is not None):
                return object_response(rest, rt, obj4, accept)
            if isinstance(obj4, dict):
                return json_response(rest.view_of(rt, obj4))
            meta = obj4.obj.get("metadata", {})
            return json_response(status_ok({"name": info.name, "group": rt.group, "kind": rt.plural,
                                            "uid": meta.get("uid")}))
        if v == "deletecollection":
            dopts = delete_options(query, body, headers)
            lsel, fsel = selectors_of(rt, query)
            deleted = await rest.delete_collection(rt, ns, lambda o: matches(o, lsel, fsel), dopts)
            items = [rest.to_view(rt, e) for e in deleted]
            return json_response({"kind": f"{rt.kind}List", "apiVersion": rt.api_version,
                                  "metadata": {"resourceVersion": str(self.store.revision)}, "items": items})
        raise errors.method_not_allowed(f"verb {v} is not supported")
