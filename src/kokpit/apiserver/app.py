"""The HTTP face of the embedded API server: a raw ASGI application served by uvicorn.

It turns requests into calls on :class:`~kokpit.apiserver.rest.Rest` the way kube-apiserver's handler
chain does (authentication → request info → authorization → verb handler), negotiates JSON / YAML / Table
output, streams watches, and converts every failure into a `Status`. Raw ASGI rather than a web framework:
the Kubernetes URL grammar is its own, and list and watch responses are built from pre-serialized bytes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

import orjson
import yaml
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from kokpit.apiserver import errors, openapi, protobuf, selectors, tables
from kokpit.apiserver.auth import Authenticator, User, authorize, forbidden_error
from kokpit.apiserver.errors import APIError
from kokpit.apiserver.registry import Registry
from kokpit.apiserver.resources import ResourceType
from kokpit.apiserver.rest import DeleteOptions, Rest, WriteOptions
from kokpit.apiserver.storage.store import ADDED, DELETED, MODIFIED, Entry, Event, Store

__all__ = ["App", "AppConfig"]

log = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

MAX_BODY = 3 * 1024 * 1024
_TRUE = {"1", "t", "T", "true", "TRUE", "True"}
_FALSE = {"0", "f", "F", "false", "FALSE", "False"}
_PUBLIC_PATHS = {"/healthz", "/livez", "/readyz", "/version", "/version/"}
_NS_SUBRESOURCES = {"status", "finalize"}
_PATCH_TYPES = {
    "application/json-patch+json": "json",
    "application/merge-patch+json": "merge",
    "application/strategic-merge-patch+json": "strategic",
    "application/apply-patch+yaml": "apply",
    "application/apply-patch+cbor": "apply-cbor",
}
_JSON = b"application/json"
# every authenticated user may ask what it may do (`kubectl auth can-i`)
_ALWAYS_ALLOWED = {"selfsubjectaccessreviews"}
_CTRL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def parse_bool(value: str | None, name: str) -> bool:
    """Go's strconv.ParseBool, which every Kubernetes client's boolean query parameters follow."""
    if value is None or value == "":
        return False
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise errors.bad_request(f"invalid value for {name}: {value!r} (expected true or false)")


@dataclass
class AppConfig:
    version_label: str = "v1.37.0"
    # who answers: sent as X-Kokpit-Instance on the health endpoints, so that of several replicas on one
    # data dir (one serving, the others standing by) a prober can tell which one serves
    instance: str = ""
    server_address: str = "127.0.0.1:6443"
    bookmark_interval: float = 60.0
    default_watch_timeout: tuple[float, float] = (1800.0, 3600.0)


@dataclass
class RequestInfo:
    resource_request: bool
    verb: str
    group: str = ""
    version: str = ""
    namespace: str | None = None
    resource: str = ""
    name: str = ""
    subresource: str = ""
    path: str = ""


class _Response:
    def __init__(self, status: int, body: bytes, content_type: bytes = _JSON,
                 headers: list[tuple[bytes, bytes]] | None = None) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers or []


def _status_ok(details: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}
    if details:
        out["details"] = details
    return out


class App:
    """The ASGI callable. Controllers inside the server share `rest`, `store` and `registry`."""

    def __init__(self, store: Store, registry: Registry, rest: Rest, auth: Authenticator | None,
                 config: AppConfig) -> None:
        self.store = store
        self.registry = registry
        self.rest = rest
        self.auth = auth
        self.config = config
        self._instance_header = [(b"x-kokpit-instance", config.instance.encode())] if config.instance else []
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
        self._openapi_docs = openapi.OpenAPICache()
        self._openapi_generation = -1
        self.ready = True

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
            info = self._request_info(scope["method"], path, query)
            if user is not None and not authorize(user, info.verb) and info.resource not in _ALWAYS_ALLOWED:
                raise forbidden_error(user, info.verb, info.resource, info.group, info.namespace or "",
                                      info.name, subresource=info.subresource or None,
                                      path=None if info.resource_request else path)
            if info.verb == "watch":
                await self._watch(info, query, headers, receive, send)
                self._observe(info, 200, None)  # counted, but a watch's lifetime is no latency
                return
            if info.verb == "get" and info.subresource == "log":
                await self._pod_log(info, query, receive, send)
                self._observe(info, 200, None)  # a followed log's lifetime is no latency either
                return
            body = await self._read_body(receive, headers)
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

    def _error(self, e: APIError) -> _Response:
        hdrs = []
        if e.retry_after is not None:
            hdrs.append((b"retry-after", str(e.retry_after).encode()))
        return _Response(e.code, orjson.dumps(e.status()), headers=hdrs)

    def _authenticate(self, path: str, headers: dict[str, str]) -> User | None:
        if self.auth is None:
            return None
        user = self.auth.authenticate(headers.get("authorization"))
        if user is None and path not in _PUBLIC_PATHS:
            raise errors.unauthorized()
        return user

    async def _read_body(self, receive: Receive, headers: dict[str, str]) -> bytes:
        length = headers.get("content-length")
        if length and length.isdigit() and int(length) > MAX_BODY:
            raise errors.too_large(MAX_BODY)
        chunks: list[bytes] = []
        size = 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                break
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY:
                raise errors.too_large(MAX_BODY)
            chunks.append(chunk)
            if not msg.get("more_body"):
                break
        return b"".join(chunks)

    # ------------------------------------------------------------------ routing
    def _request_info(self, method: str, path: str, query: dict[str, str]) -> RequestInfo:
        parts = [p for p in path.split("/") if p]
        verb_by_method = {"GET": "get", "HEAD": "get", "POST": "create", "PUT": "update", "PATCH": "patch",
                          "DELETE": "delete"}
        verb = verb_by_method.get(method)
        if verb is None:
            raise errors.method_not_allowed(f"the server does not allow this method on the requested "
                                            f"resource ({method})")
        if not parts or parts[0] not in ("api", "apis"):
            return RequestInfo(False, verb, path=path)
        if parts[0] == "api":
            if len(parts) < 2:
                return RequestInfo(False, verb, path=path)
            group, version, rest = "", parts[1], parts[2:]
        else:
            if len(parts) < 3:
                return RequestInfo(False, verb, path=path)
            group, version, rest = parts[1], parts[2], parts[3:]
        if not rest:
            return RequestInfo(False, verb, group=group, version=version, path=path)
        watch_prefix = False
        if rest[0] == "watch":
            watch_prefix, rest = True, rest[1:]
        namespace: str | None = None
        if rest and rest[0] == "namespaces" and len(rest) > 1:
            namespace = rest[1]
            if len(rest) > 2 and rest[2] not in _NS_SUBRESOURCES:
                rest = rest[2:]
            else:
                namespace = rest[1] if len(rest) == 2 or rest[2] in _NS_SUBRESOURCES else None
                # /namespaces/NAME and /namespaces/NAME/status: the namespace object itself
                info = RequestInfo(True, verb, group, version, None, "namespaces", rest[1],
                                   rest[2] if len(rest) > 2 else "", path)
                info.namespace = rest[1]
                return self._finish_verb(info, method, query, watch_prefix)
        if not rest:
            return RequestInfo(False, verb, group=group, version=version, path=path)
        info = RequestInfo(True, verb, group, version, namespace, rest[0],
                           rest[1] if len(rest) > 1 else "", rest[2] if len(rest) > 2 else "", path)
        if len(rest) > 3:
            raise errors.not_found(info.resource, "/".join(rest[1:]), group)
        return self._finish_verb(info, method, query, watch_prefix)

    def _finish_verb(self, info: RequestInfo, method: str, query: dict[str, str],
                     watch_prefix: bool) -> RequestInfo:
        if method in ("GET", "HEAD") and not info.name:
            info.verb = "watch" if watch_prefix or parse_bool(query.get("watch"), "watch") else "list"
        elif method in ("GET", "HEAD") and watch_prefix:
            info.verb = "watch"
        elif method == "DELETE" and not info.name:
            info.verb = "deletecollection"
        return info

    def _resource_type(self, info: RequestInfo) -> ResourceType:
        rt = self.registry.get(info.group, info.version, info.resource)
        if rt is None:
            if not self.registry.has_group_version(info.group, info.version):
                gv = f"{info.group}/{info.version}" if info.group else info.version
                raise errors.APIError(404, "NotFound", f"the server could not find the requested resource "
                                      f"(group version {gv} is not served)")
            raise errors.APIError(404, "NotFound", "the server could not find the requested resource",
                                  kind=info.resource, group=info.group)
        if info.subresource and info.subresource not in rt.subresources:
            raise errors.APIError(404, "NotFound", f"the server could not find the requested resource "
                                  f"({info.resource}/{info.subresource})")
        if info.namespace is not None and not rt.namespaced and rt.plural != "namespaces":
            raise errors.not_found(rt.plural, info.name or "", rt.group)
        return rt

    async def _dispatch(self, info: RequestInfo, query: dict[str, str], headers: dict[str, str],
                        body: bytes, user: User | None = None) -> _Response:
        if not info.resource_request:
            if info.path.rstrip("/") == "/kokpit/compact" and info.verb == "create":
                rev = await self.store.compact(self.store.revision)
                return self._json({"compactedRevision": rev})
            return self._non_resource(info, query, headers)
        rt = self._resource_type(info)
        ns = info.namespace if rt.namespaced else None
        if rt.plural == "namespaces" and rt.group == "":
            ns = None
        accept = headers.get("accept", "")
        v = info.verb
        only = {"eviction": "create", "binding": "create", "log": "get"}.get(info.subresource)
        if only is not None and v != only:  # else e.g. DELETE pods/x/binding would delete the pod itself
            raise errors.method_not_allowed(f"the server does not allow this method on the requested "
                                            f"resource ({info.resource}/{info.subresource})")
        if v == "get":
            if info.subresource == "scale":
                return self._json(self._scale_of(rt, self.rest.get(rt, ns, info.name)))
            e = self.rest.get(rt, ns, info.name)
            if "as=Table" in accept:
                return self._table(rt, [self.rest.to_view(rt, e)], query, rv=str(e.rv))
            return self._object(rt, e, accept)
        if v == "list":
            return self._list(rt, ns, query, accept)
        opts = self._write_options(info, query, headers)
        if v == "create":
            if rt.kind == "SelfSubjectAccessReview":
                return self._access_review(self._decode(body, headers), user)
            if info.subresource == "eviction":
                return await self._evict(rt, ns, info.name, self._decode(body, headers))
            if info.subresource == "binding":
                return await self._bind(rt, ns, info.name, self._decode(body, headers), opts)
            if info.name and not info.subresource:
                raise errors.method_not_allowed("POST to a named resource is not allowed; use PUT or PATCH")
            if info.subresource:  # status, scale, ...: kube serves only get/update/patch on these
                raise errors.method_not_allowed(f"the server does not allow this method on the requested "
                                                f"resource ({info.resource}/{info.subresource})")
            obj, _ = await self.rest.create(rt, ns, self._decode(body, headers), opts)
            return self._written(rt, obj, 201, opts, accept)
        if v == "update":
            data = self._decode(body, headers)
            if info.subresource == "scale":
                return await self._update_scale(rt, ns, info.name, data, opts)
            obj2 = await self.rest.update(rt, ns, info.name, data, opts)
            return self._written(rt, obj2, 200, opts, accept)
        if v == "patch":
            ctype = headers.get("content-type", "").split(";")[0].strip().lower()
            ptype = _PATCH_TYPES.get(ctype)
            if ptype is None or ptype == "apply-cbor":
                raise errors.unsupported_media_type(ctype)
            data = self._decode(body, headers, yaml_ok=ptype == "apply")
            if ptype == "apply":
                opts.force = parse_bool(query.get("force"), "force")
            if info.subresource == "scale":
                # kubectl scale (1.37) sends a merge patch {"spec":{"replicas":N}} to /scale: apply it to the
                # current Scale view and write it like a PUT (a Scale has no lists, so strategic == merge).
                if ptype == "apply":
                    raise errors.method_not_allowed("server-side apply to the scale subresource is not supported")
                from kokpit.apiserver.patch import json_merge_patch, json_patch
                scale = self._scale_of(rt, self.rest.get(rt, ns, info.name))
                scale = json_patch(scale, data) if ptype == "json" else json_merge_patch(scale, data)
                return await self._update_scale(rt, ns, info.name, scale, opts)
            obj3, created = await self.rest.patch(rt, ns, info.name, ptype, data, opts)
            return self._written(rt, obj3, 201 if created else 200, opts, accept)
        if v == "delete":
            dopts = self._delete_options(query, body, headers)
            obj4, removed = await self.rest.delete(rt, ns, info.name, dopts)
            # like kube: 200 with the object while it is still terminating, and for kinds whose storage
            # returns the deleted object (pods, custom resources); a Success Status otherwise
            if isinstance(obj4, Entry) and (not removed or rt.kind == "Pod" or rt.crd_name is not None):
                return self._object(rt, obj4, accept)
            if isinstance(obj4, dict):
                return self._json(self.rest.view_of(rt, obj4))
            meta = obj4.obj.get("metadata", {})
            return self._json(_status_ok({"name": info.name, "group": rt.group, "kind": rt.plural,
                                          "uid": meta.get("uid")}))
        if v == "deletecollection":
            dopts = self._delete_options(query, body, headers)
            lsel, fsel = self._selectors(rt, query)
            deleted = await self.rest.delete_collection(
                rt, ns, lambda o: _matches(o, lsel, fsel), dopts)
            items = [self.rest.to_view(rt, e) for e in deleted]
            return self._json({"kind": f"{rt.kind}List", "apiVersion": rt.api_version,
                               "metadata": {"resourceVersion": str(self.store.revision)}, "items": items})
        raise errors.method_not_allowed(f"verb {v} is not supported")

    # ------------------------------------------------------------------ decoding
    def _decode(self, body: bytes, headers: dict[str, str], yaml_ok: bool = True) -> Any:
        if not body.strip():
            raise errors.bad_request("the request body is empty; send a JSON or YAML object")
        ctype = headers.get("content-type", "application/json").split(";")[0].strip().lower()
        if ctype == "application/vnd.kubernetes.protobuf":
            return protobuf.decode(body)
        if "protobuf" in ctype or "cbor" in ctype:
            raise errors.unsupported_media_type(ctype)
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as e:
            if not yaml_ok and "yaml" not in ctype:
                raise errors.bad_request(f"the body is not valid JSON: {e}") from None
            if "json" in ctype and "yaml" not in ctype:
                raise errors.bad_request(f"the body is not valid JSON: {e}") from None
        try:
            data = yaml.load(body, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        except yaml.YAMLError as e:
            raise errors.bad_request(f"the body is not valid YAML: {e}") from None
        # YAML timestamps and other non-JSON scalars must not leak into objects
        return orjson.loads(orjson.dumps(data, default=str))

    def _write_options(self, info: RequestInfo, query: dict[str, str], headers: dict[str, str]) -> WriteOptions:
        fv = query.get("fieldValidation", "Warn") or "Warn"
        if fv not in ("Strict", "Warn", "Ignore"):
            raise errors.bad_request(f"fieldValidation must be one of Strict, Warn, Ignore (got {fv!r})")
        dry = query.get("dryRun", "")
        if dry not in ("", "All"):
            raise errors.bad_request(f"dryRun must be All (got {dry!r})")
        ua = headers.get("user-agent", "").split("/")[0][:128]
        return WriteOptions(field_manager=query.get("fieldManager", ""), default_manager=ua or "unknown",
                            field_validation=fv, dry_run=dry == "All", subresource=info.subresource)

    def _delete_options(self, query: dict[str, str], body: bytes, headers: dict[str, str]) -> DeleteOptions:
        data: dict[str, Any] = {}
        if body.strip():
            parsed = self._decode(body, headers)
            if isinstance(parsed, dict):
                data = parsed
        policy = query.get("propagationPolicy") or data.get("propagationPolicy")
        if policy is None and data.get("orphanDependents") is True:
            policy = "Orphan"
        if policy is not None and policy not in ("Background", "Foreground", "Orphan"):
            raise errors.bad_request(f"propagationPolicy must be Background, Foreground or Orphan "
                                     f"(got {policy!r})")
        gp = query.get("gracePeriodSeconds", data.get("gracePeriodSeconds"))
        grace: int | None = None
        if gp is not None and gp != "":
            try:
                grace = int(gp)
            except (TypeError, ValueError):
                raise errors.bad_request(f"gracePeriodSeconds must be an integer (got {gp!r})") from None
        pre = data.get("preconditions") or {}
        dry = query.get("dryRun") or ("All" if "All" in (data.get("dryRun") or []) else "")
        return DeleteOptions(propagation=policy, grace_period=grace, precondition_uid=pre.get("uid"),
                             precondition_rv=pre.get("resourceVersion"), dry_run=dry == "All")

    # ------------------------------------------------------------------ encoding
    def _json(self, obj: Any, status: int = 200, headers: list[tuple[bytes, bytes]] | None = None) -> _Response:
        return _Response(status, orjson.dumps(obj), headers=headers)

    def _object(self, rt: ResourceType, e: Entry, accept: str, status: int = 200) -> _Response:
        if "as=Table" in accept:
            return self._table(rt, [self.rest.to_view(rt, e)], {}, rv=str(e.rv), status=status)
        if _wants_yaml(accept):
            return _Response(status, yaml.safe_dump(self.rest.to_view(rt, e), sort_keys=False).encode(),
                             b"application/yaml")
        return _Response(status, self.rest.raw_of(rt, e))

    def _written(self, rt: ResourceType, obj: Entry | dict[str, Any], status: int, opts: WriteOptions,
                 accept: str) -> _Response:
        # RFC 7234 quoted-string, as kube's NewWarningHeader writes it: clients unquote `\"` back; control
        # characters (an unknown field named "\x1f") would make the header invalid and drop the connection
        hdrs = [(b"warning", ('299 - "' + _CTRL.sub(lambda m: f"\\x{ord(m.group()):02x}", w.replace(
            "\\", "\\\\").replace('"', '\\"')) + '"').encode()) for w in opts.warnings[:50]]
        if isinstance(obj, Entry):
            resp = self._object(rt, obj, accept, status)
        else:
            resp = self._json(self.rest.view_of(rt, obj), status)
        resp.headers.extend(hdrs)
        return resp

    def _table(self, rt: ResourceType, objs: list[dict[str, Any]], query: dict[str, str], rv: str = "",
               cont: str = "", status: int = 200) -> _Response:
        include = query.get("includeObject", "Metadata") or "Metadata"
        table = tables.to_table(rt, objs, include_object=include, now=self.rest.clock(), resource_version=rv,
                                continue_token=cont)
        return self._json(table, status)

    # ------------------------------------------------------------------ list
    def _selectors(self, rt: ResourceType, query: dict[str, str]
                   ) -> tuple[selectors.LabelSelector | None, selectors.FieldSelector | None]:
        ls = query.get("labelSelector")
        fs = query.get("fieldSelector")
        lsel = selectors.parse_label_selector(ls) if ls else None
        fsel = selectors.parse_field_selector(fs, rt) if fs else None
        return lsel, fsel

    def _list(self, rt: ResourceType, ns: str | None, query: dict[str, str], accept: str) -> _Response:
        lsel, fsel = self._selectors(rt, query)
        limit_s = query.get("limit", "")
        try:
            limit = int(limit_s) if limit_s else 0
        except ValueError:
            raise errors.bad_request(f"limit must be an integer (got {limit_s!r})") from None
        cont = query.get("continue", "")
        start_after = ""
        at: int | None = None
        if cont:
            try:
                tok = orjson.loads(base64.urlsafe_b64decode(cont.encode() + b"==="))
                at, start_after = int(tok["rv"]), str(tok["start"])
            except Exception:
                raise errors.bad_request("continue key is not valid: use the token from the previous "
                                         "response unchanged") from None
        else:
            rv_s = query.get("resourceVersion", "")
            match = query.get("resourceVersionMatch", "")
            if rv_s and rv_s != "0" and match == "Exact":
                try:
                    at = int(rv_s)
                except ValueError:
                    raise errors.bad_request(f"invalid resourceVersion {rv_s!r}") from None
                if at > self.store.revision:
                    raise errors.APIError(504, "Timeout", f"Too large resource version: {at}, current: "
                                          f"{self.store.revision}", retry_after=1)
        list_rv, items = self.rest.list_entries(rt, ns, start_after=start_after, at_revision=at)
        picked: list[Entry] = []
        picked_key = ""
        next_key = ""
        remaining = 0
        plain = lsel is None and fsel is None and not limit
        if plain:  # a full list without selectors: no per-item checks
            picked = [e for _k, e in items]
        for k, e in () if plain else items:
            if (lsel is not None or fsel is not None) and not _matches(e.obj, lsel, fsel):
                continue
            if limit and len(picked) >= limit:
                next_key = picked_key
                remaining = 1
                break
            picked.append(e)
            picked_key = k
        cont_out = ""
        if remaining:
            cont_out = base64.urlsafe_b64encode(orjson.dumps({"rv": list_rv, "start": next_key})).decode().rstrip("=")
        if "as=Table" in accept:
            return self._table(rt, [self.rest.to_view(rt, e) for e in picked], query, rv=str(list_rv),
                               cont=cont_out)
        meta: dict[str, Any] = {"resourceVersion": str(list_rv)}
        if cont_out:
            meta["continue"] = cont_out
        head = orjson.dumps({"kind": f"{rt.kind}List", "apiVersion": rt.api_version, "metadata": meta})
        if _wants_yaml(accept):
            doc = orjson.loads(head)
            doc["items"] = [self.rest.to_view(rt, e) for e in picked]
            return _Response(200, yaml.safe_dump(doc, sort_keys=False).encode(), b"application/yaml")
        body = b"".join((head[:-1], b',"items":[', b",".join(self.rest.raw_of(rt, e) for e in picked), b"]}"))
        return _Response(200, body)

    # ------------------------------------------------------------------ watch
    async def _watch(self, info: RequestInfo, query: dict[str, str], headers: dict[str, str],
                     receive: Receive, send: Send) -> None:
        rt = self._resource_type(info)
        ns = info.namespace if rt.namespaced else None
        lsel, fsel = self._selectors(rt, query)
        if info.name:  # /watch/.../NAME is a field selector on the name
            fsel = selectors.parse_field_selector(f"metadata.name={info.name}", rt) if fsel is None else fsel
        bookmarks = parse_bool(query.get("allowWatchBookmarks"), "allowWatchBookmarks")
        send_initial = parse_bool(query.get("sendInitialEvents"), "sendInitialEvents")
        rv_s = query.get("resourceVersion", "")
        if send_initial and query.get("resourceVersionMatch") != "NotOlderThan":
            raise errors.invalid("ListOptions", "", [errors.Cause(
                "resourceVersionMatch", "Forbidden: sendInitialEvents requires setting resourceVersionMatch "
                "to NotOlderThan", "FieldValueForbidden")], "meta.k8s.io")
        timeout_s = query.get("timeoutSeconds", "")
        if timeout_s:
            try:
                timeout = float(int(timeout_s))
            except ValueError:
                raise errors.bad_request(f"timeoutSeconds must be an integer (got {timeout_s!r})") from None
        else:
            timeout = random.uniform(*self.config.default_watch_timeout)
        accept = headers.get("accept", "")
        as_table = "as=Table" in accept
        include = query.get("includeObject", "Metadata") or "Metadata"
        bucket = rt.store_prefix
        sub = f"{ns}/" if ns else ""

        def matches(obj: dict[str, Any]) -> bool:
            return _matches(obj, lsel, fsel)

        from_rv: int | None
        if not rv_s or rv_s == "0" or send_initial:
            from_rv = None
        else:
            try:
                from_rv = int(rv_s)
            except ValueError:
                raise errors.bad_request(f"invalid resourceVersion {rv_s!r}") from None
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"cache-control", b"no-cache, private"),
                                (b"transfer-encoding", b"chunked")]})
        try:
            watcher, backlog = self.store.watch(bucket, sub, from_revision=from_rv,
                                                initial=lambda e: matches(e.obj))
        except APIError as e:
            await send({"type": "http.response.body",
                        "body": orjson.dumps({"type": "ERROR", "object": e.status()}) + b"\n", "more_body": False})
            return

        def encode(etype: str, e: Entry) -> bytes:
            if as_table:
                obj = self.rest.to_view(rt, e)
                t = tables.to_table(rt, [obj], include_object=include, now=self.rest.clock(),
                                    resource_version=str(e.rv))
                return orjson.dumps({"type": etype, "object": t}) + b"\n"
            return b'{"type":"' + etype.encode() + b'","object":' + self.rest.raw_of(rt, e) + b"}\n"

        def event_bytes(ev: Event) -> bytes | None:
            if lsel is None and fsel is None:
                return encode(ev.type, ev.entry)
            now_m = ev.type != DELETED and matches(ev.entry.obj)
            was_m = ev.prev is not None and matches(ev.prev.obj)
            if ev.type == DELETED:
                return encode(DELETED, ev.entry) if was_m else None
            if now_m and was_m:
                return encode(MODIFIED, ev.entry)
            if now_m:
                return encode(ADDED, ev.entry)
            if was_m:
                return encode(DELETED, ev.entry)
            return None

        def bookmark(initial_end: bool = False) -> bytes:
            meta: dict[str, Any] = {"resourceVersion": str(self.store.revision)}
            if initial_end:
                meta["annotations"] = {"k8s.io/initial-events-end": "true"}
            obj = {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": meta}
            return orjson.dumps({"type": "BOOKMARK", "object": obj}) + b"\n"

        disconnected = asyncio.Event()

        async def wait_disconnect() -> None:
            while True:
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    disconnected.set()
                    return

        dtask = asyncio.create_task(wait_disconnect())
        deadline = time.monotonic() + timeout
        try:
            chunk: list[bytes] = []
            for ev in backlog:
                b = encode(ADDED, ev.entry) if from_rv is None else event_bytes(ev)
                if b is not None:
                    chunk.append(b)
                if len(chunk) >= 500:
                    await send({"type": "http.response.body", "body": b"".join(chunk), "more_body": True})
                    chunk = []
            if send_initial and bookmarks:
                chunk.append(bookmark(initial_end=True))
            if chunk:
                await send({"type": "http.response.body", "body": b"".join(chunk), "more_body": True})
            next_bookmark = time.monotonic() + self.config.bookmark_interval
            while not disconnected.is_set():
                now = time.monotonic()
                if now >= deadline:
                    break
                wait = min(deadline, next_bookmark if bookmarks else deadline) - now
                get = asyncio.ensure_future(watcher.next())
                done, _ = await asyncio.wait({get, dtask}, timeout=max(wait, 0.0),
                                             return_when=asyncio.FIRST_COMPLETED)
                if get not in done:
                    get.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await get
                    if disconnected.is_set():
                        break
                    if bookmarks and time.monotonic() >= next_bookmark and watcher.queue.empty():
                        await send({"type": "http.response.body", "body": bookmark(), "more_body": True})
                        next_bookmark = time.monotonic() + self.config.bookmark_interval
                    continue
                ev0 = get.result()
                if ev0 is None:
                    break
                out: list[bytes] = []
                evs: list[Event] = [ev0]
                while not watcher.queue.empty() and len(evs) < 1000:
                    nxt = watcher.queue.get_nowait()
                    if nxt is None:
                        watcher.queue.put_nowait(None)
                        break
                    evs.append(nxt)
                for ev in evs:
                    b2 = event_bytes(ev)
                    if b2 is not None:
                        out.append(b2)
                if out:
                    await send({"type": "http.response.body", "body": b"".join(out), "more_body": True})
        finally:
            watcher.close()
            dtask.cancel()
            with contextlib.suppress(Exception):
                await send({"type": "http.response.body", "body": b"", "more_body": False})

    # ------------------------------------------------------------------ subresources
    async def _evict(self, rt: ResourceType, ns: str | None, name: str, body: Any) -> _Response:
        if rt.kind != "Pod":
            raise errors.not_found(rt.plural, name, rt.group)
        if isinstance(body, dict) and body.get("metadata", {}).get("name") not in (None, name):
            raise errors.bad_request("name in URL does not match name in Eviction object")
        opts = (body or {}).get("deleteOptions") or {} if isinstance(body, dict) else {}
        grace = opts.get("gracePeriodSeconds")
        await self.rest.delete(rt, ns, name, DeleteOptions(grace_period=grace,
                                                            propagation=opts.get("propagationPolicy")))
        return self._json(_status_ok(), 201)

    async def _bind(self, rt: ResourceType, ns: str | None, name: str, body: Any, opts: WriteOptions) -> _Response:
        if rt.kind != "Pod":
            raise errors.not_found(rt.plural, name, rt.group)
        target = (body or {}).get("target") or {} if isinstance(body, dict) else {}
        node = target.get("name")
        if not node:
            raise errors.invalid("Binding", name, [errors.Cause("target.name", "Required value",
                                                                "FieldValueRequired")])
        cur = self.rest.get(rt, ns, name)
        spec = cur.obj.get("spec") or {}
        if spec.get("nodeName"):
            raise errors.conflict(rt.plural, name, rt.group, f"pod {name} is already assigned to node "
                                  f"\"{spec['nodeName']}\"")
        pod = cur.copy()
        pod.setdefault("spec", {})["nodeName"] = node
        conds = pod.setdefault("status", {}).setdefault("conditions", [])
        conds[:] = [c for c in conds if c.get("type") != "PodScheduled"]
        conds.append({"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                      "lastTransitionTime": self.rest.now()})
        opts.subresource = ""
        await self.rest._write_update(rt, rt.key(ns, name), cur, pod, opts)
        return self._json(_status_ok(), 201)

    async def _pod_log(self, info: RequestInfo, query: dict[str, str], receive: Receive, send: Send) -> None:
        """pods/log, proxied from the Pod's kubelet.  The contract (the server imports no kubelet code): the
        kubelet publishes its port as the Node's status.daemonEndpoints.kubeletEndpoint.Port and serves
        plain-HTTP ``GET /containerLogs/<ns>/<pod>/<container>?tailLines=&follow=&previous=&limitBytes=`` on
        the Node's InternalIP; a non-200 answer's text becomes a 400 (as kube relays kubelet errors)."""
        rt = self._resource_type(info)
        if rt.kind != "Pod" or rt.group != "":
            raise errors.not_found(rt.plural, info.name, rt.group)
        pod = self.rest.get(rt, info.namespace, info.name).obj
        spec = pod.get("spec") or {}
        mains = [str(c.get("name")) for c in spec.get("containers") or []]
        container = query.get("container") or ""
        if not container:
            if len(mains) != 1:
                raise errors.bad_request(f"a container name must be specified for pod {info.name}, "
                                         f"choose one of: [{' '.join(mains)}]")
            container = mains[0]
        elif container not in mains + [str(c.get("name")) for c in spec.get("initContainers") or []]:
            raise errors.bad_request(f"container {container} is not valid for pod {info.name}")
        node_name = spec.get("nodeName")
        if not node_name:
            raise errors.bad_request(f"pod {info.name} does not have a host assigned")
        node = self.store.get(f"/core/nodes/{node_name}")
        nstatus = (node.obj.get("status") or {}) if node is not None else {}
        port = ((nstatus.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}).get("Port")
        host = next((a.get("address") for a in nstatus.get("addresses") or []
                     if a.get("type") == "InternalIP"), "127.0.0.1")
        if not port:
            raise errors.bad_request(f"node {node_name} publishes no kubelet endpoint for logs")
        params = {k: query[k] for k in ("follow", "previous", "tailLines", "limitBytes") if query.get(k)}
        target = "/containerLogs/" + "/".join(quote(str(x), safe="") for x in (info.namespace, info.name,
                                                                            container))
        if params:
            target += "?" + urlencode(params)
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 5.0)
        except (OSError, TimeoutError) as e:
            raise errors.bad_request(f"cannot reach the kubelet of node {node_name} at {host}:{port}: {e}") \
                from None
        try:
            writer.write(f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
            status_line = (await asyncio.wait_for(reader.readline(), 10.0)).split()
            while (await asyncio.wait_for(reader.readline(), 10.0)) not in (b"\r\n", b"\n", b""):
                pass
            if len(status_line) < 2 or status_line[1] != b"200":
                text = (await asyncio.wait_for(reader.read(65536), 10.0)).decode(errors="replace").strip()
                raise errors.bad_request(text or f"the kubelet answered {b' '.join(status_line[1:]).decode()}")
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/plain"), (b"cache-control", b"no-cache, private")]})

            async def disconnected() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass

            dtask = asyncio.ensure_future(disconnected())
            try:
                while True:
                    rtask = asyncio.ensure_future(reader.read(65536))
                    done, _ = await asyncio.wait({rtask, dtask}, return_when=asyncio.FIRST_COMPLETED)
                    if rtask not in done:
                        rtask.cancel()
                        break
                    chunk = rtask.result()
                    if not chunk:
                        break
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except OSError:
                pass
            finally:
                dtask.cancel()
                with contextlib.suppress(Exception):
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
        except (OSError, TimeoutError) as e:
            raise errors.bad_request(f"reading logs from the kubelet of node {node_name} failed: {e}") from None
        finally:
            writer.close()

    def _access_review(self, body: Any, user: User | None) -> _Response:
        """`kubectl auth can-i`: answered from the same authorizer every request goes through."""
        if not isinstance(body, dict) or not isinstance(body.get("spec"), dict):
            raise errors.invalid("SelfSubjectAccessReview", "", [errors.Cause(
                "spec", "Required value: resourceAttributes or nonResourceAttributes", "FieldValueRequired")],
                "authorization.k8s.io")
        attrs = body["spec"].get("resourceAttributes") or body["spec"].get("nonResourceAttributes") or {}
        verb = str(attrs.get("verb") or "")
        allowed = user is None or authorize(user, verb)
        who = user.name if user is not None else "anonymous"
        body["status"] = {"allowed": allowed, "reason": f'user "{who}" is {"" if allowed else "not "}allowed to '
                                                        f"{verb or 'do that'}"}
        body.setdefault("metadata", {})["creationTimestamp"] = None
        return self._json(body, 201)

    def _scale_of(self, rt: ResourceType, e: Entry) -> dict[str, Any]:
        obj = e.obj
        meta = obj.get("metadata", {})
        sel = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        return {"kind": "Scale", "apiVersion": "autoscaling/v1",
                "metadata": {k: meta.get(k) for k in ("name", "namespace", "uid", "resourceVersion",
                                                      "creationTimestamp") if k in meta},
                "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 0)},
                "status": {"replicas": (obj.get("status") or {}).get("replicas", 0),
                           "selector": ",".join(f"{k}={v}" for k, v in sel.items())}}

    async def _update_scale(self, rt: ResourceType, ns: str | None, name: str, body: Any,
                            opts: WriteOptions) -> _Response:
        try:
            # Go clients omit `replicas: 0` (omitempty): kubectl scale --replicas=0 PUTs {"spec":{}}
            replicas = int((body.get("spec") or {}).get("replicas", 0))
        except (AttributeError, TypeError, ValueError):
            raise errors.invalid("Scale", name, [errors.Cause("spec.replicas", "Required value: an integer",
                                                              "FieldValueRequired")], "autoscaling") from None
        opts.subresource = ""
        e, _ = await self.rest.patch(rt, ns, name, "merge", {"spec": {"replicas": replicas}}, opts)
        assert isinstance(e, Entry)
        return self._json(self._scale_of(rt, e))

    # ------------------------------------------------------------------ non-resource paths
    def _non_resource(self, info: RequestInfo, query: dict[str, str], headers: dict[str, str]) -> _Response:
        path = info.path.rstrip("/") or "/"
        if info.verb != "get":
            raise errors.method_not_allowed(f"the server does not allow this method on {path}")
        if path == "/version":
            return self._json(self._version())
        if path in ("/healthz", "/livez", "/readyz") or path.startswith(("/healthz/", "/livez/", "/readyz/")):
            ok = self.store.failed is None and (self.ready or not path.startswith("/readyz"))
            if query.get("verbose") is not None and "verbose" in query:
                text = f"[{'+' if ok else '-'}]ping ok\n[{'+' if self.store.failed is None else '-'}]etcd ok\n"
                text += f"{path.strip('/')} check {'passed' if ok else 'failed'}\n"
                return _Response(200 if ok else 500, text.encode(), b"text/plain; charset=utf-8",
                                 self._instance_header)
            return _Response(200 if ok else 500, b"ok" if ok else b"storage failed",
                             b"text/plain; charset=utf-8", self._instance_header)
        if path == "/metrics":
            return _Response(200, generate_latest(self.metrics), b"text/plain; version=0.0.4; charset=utf-8")
        if path == "/api":
            return _Response(200, self.registry.api_versions(self.config.server_address))
        if path == "/apis":
            return _Response(200, self.registry.api_groups())
        if path == "/api/v1":
            return _Response(200, self.registry.resource_list("", "v1") or b"{}")
        parts = path.strip("/").split("/")
        if parts[0] == "apis" and len(parts) == 2:
            doc = self.registry.api_group(parts[1])
            if doc is None:
                raise errors.APIError(404, "NotFound", "the server could not find the requested resource")
            return _Response(200, doc)
        if parts[0] == "apis" and len(parts) == 3:
            doc = self.registry.resource_list(parts[1], parts[2])
            if doc is None:
                raise errors.APIError(404, "NotFound", "the server could not find the requested resource")
            return _Response(200, doc)
        if parts[0] == "openapi":
            return self._openapi(parts, headers)
        raise errors.APIError(404, "NotFound", "the server could not find the requested resource")

    def _version(self) -> dict[str, Any]:
        label = self.config.version_label
        core = label.lstrip("v").split("-")[0].split("+")[0].split(".")
        major = core[0] if core else "1"
        minor = core[1] if len(core) > 1 else "0"
        return {"major": major, "minor": minor, "gitVersion": label, "gitCommit": "kokpit",
                "gitTreeState": "clean", "buildDate": "2026-11-27T00:00:00Z", "goVersion": "python3.11",
                "compiler": "cpython", "platform": "linux/amd64", "emulationMajor": major,
                "emulationMinor": minor, "minCompatibilityMajor": major, "minCompatibilityMinor": minor}

    def _openapi(self, parts: list[str], headers: dict[str, str]) -> _Response:
        """OpenAPI documents, rebuilt only when the served types change. v3 document URLs carry a content
        hash, which kubectl uses as its cache key, so a changed CRD schema is never served stale."""
        if self._openapi_generation != self.registry.generation:
            self._openapi_docs.update(self.registry.types())
            self._openapi_generation = self.registry.generation
        not_found = errors.APIError(404, "NotFound", "the server could not find the requested resource")
        if parts == ["openapi", "v2"]:
            if "protobuf" in headers.get("accept", ""):
                return _Response(200, openapi.openapi_v2_protobuf(), openapi.V2_PROTOBUF_CONTENT_TYPE.encode())
            return _Response(200, self._openapi_docs.v2_json()[0])
        if parts == ["openapi", "v3"]:
            return _Response(200, self._openapi_docs.index()[0])
        if len(parts) >= 4 and parts[:2] == ["openapi", "v3"]:
            doc = self._openapi_docs.document_for_path("/".join(parts[2:]))
            if doc is None:
                raise not_found
            return _Response(200, doc[0], headers=[(b"etag", f'"{doc[1]}"'.encode())])
        raise not_found


def _matches(obj: dict[str, Any], lsel: selectors.LabelSelector | None,
             fsel: selectors.FieldSelector | None) -> bool:
    if lsel is not None and not lsel.matches((obj.get("metadata") or {}).get("labels")):
        return False
    return not (fsel is not None and not fsel.matches(obj))


def _wants_yaml(accept: str) -> bool:
    return accept.startswith("application/yaml") and "json" not in accept


