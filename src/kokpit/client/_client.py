"""The one place kokpit talks to a Kubernetes API server.

Built on lightkube's ``AsyncClient`` for what it does well — kubeconfig/in-cluster config, TLS and bearer
auth, typed models — and on its underlying HTTP client for the rest: objects as plain dicts decoded with
orjson (cheapest for big caches), watches that ask for bookmarks and report 410 to the caller, retries on
transient failures, an optional QPS limit and per-verb/code request metrics.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar
from urllib.parse import quote, urlencode, urlsplit

import httpx2
import orjson
from lightkube import AsyncClient as LightkubeAsyncClient
from lightkube.config.kubeconfig import SERVICE_ACCOUNT, KubeConfig, SingleConfig

from kokpit._lib.backoff import ExponentialBackoff, TokenBucket
from kokpit._lib.clock import Clock, RealClock
from kokpit.client._errors import ApiError, ResourceExpiredError, TransportError
from kokpit.client._kinds import Kind
from kokpit.client._lean import LeanPool
from kokpit.client._metrics import ClientMetrics

__all__ = [
    "Client",
    "ObjectList",
    "PatchType",
    "WatchEvent",
    "load_config",
    "to_typed",
]

log = logging.getLogger("kokpit.client")

Obj = dict[str, Any]
PatchType = Literal["merge", "json", "strategic", "apply"]
_PATCH_CONTENT_TYPES: dict[str, str] = {
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "apply": "application/apply-patch+yaml",
}
_IDEMPOTENT = {"GET", "PUT", "DELETE", "HEAD"}
T = TypeVar("T")


def load_config(
    kubeconfig: str | os.PathLike[str] | None = None,
    context: str | None = None,
    *,
    in_cluster: bool = False,
    service_account_dir: str | os.PathLike[str] | None = None,
) -> SingleConfig:
    """A kubeconfig file (CA data, bearer token, ...) or the in-cluster service account.

    With neither given, ``$KUBECONFIG`` wins, then the in-cluster service account, then ``~/.kube/config``
    (client-go's order: a Pod that is handed a kubeconfig talks to that cluster, not to the one it runs in).
    The service account folder is the usual one, or ``$KOKPIT_SERVICE_ACCOUNT_DIR`` where kokpit's local
    kubelet (processes, no mount namespace) says it put the Pod's token volume.
    """
    if service_account_dir is None:
        service_account_dir = os.environ.get("KOKPIT_SERVICE_ACCOUNT_DIR") or SERVICE_ACCOUNT
    env_kubeconfig = (os.environ.get("KUBECONFIG") or "").split(os.pathsep)[0]
    if in_cluster:
        conf = KubeConfig.from_service_account(service_account_dir).get()
    elif kubeconfig is not None:
        conf = KubeConfig.from_file(kubeconfig).get(context)
    elif env_kubeconfig:
        conf = KubeConfig.from_file(env_kubeconfig).get(context)
    else:
        conf = KubeConfig.from_env(service_account=service_account_dir).get(context)
    if conf is None:
        raise ValueError("kubeconfig has no usable current context")
    return conf


@dataclass
class ObjectList:
    """A (fully paginated) list: its items and the resourceVersion to start a watch from."""

    items: list[Obj]
    resource_version: str
    continue_token: str | None = None


@dataclass
class WatchEvent:
    """One watch event: ADDED / MODIFIED / DELETED / BOOKMARK and the object (a bare metadata for bookmarks)."""

    type: str
    object: Obj
    resource_version: str = field(default="")


def _selector(labels: Mapping[str, str] | str | None) -> str | None:
    if labels is None:
        return None
    if isinstance(labels, str):
        return labels
    return ",".join(f"{k}={v}" for k, v in labels.items())


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


class Client:
    """Async Kubernetes client returning plain dicts.

    ``qps``/``burst`` turn on a client-side token bucket (off by default).  Transient failures are retried
    ``max_retries`` times with exponential backoff: connection failures for every verb (the request never
    reached the server), 429 honouring Retry-After for every verb, 5xx and broken connections only for
    idempotent verbs (GET/PUT/DELETE).
    """

    def __init__(
        self,
        config: SingleConfig,
        *,
        field_manager: str = "kokpit",
        timeout: float = 30.0,
        qps: float | None = None,
        burst: int = 10,
        max_retries: int = 5,
        retry_backoff: ExponentialBackoff | None = None,
        metrics: ClientMetrics | None = None,
        clock: Clock | None = None,
        transport: httpx2.AsyncBaseTransport | None = None,
        lean: bool = True,
        lean_connections: int = 100,
    ) -> None:
        self.config = config
        self.field_manager = field_manager
        self.metrics = metrics if metrics is not None else ClientMetrics()
        self.max_retries = max_retries
        self._clock: Clock = clock or RealClock()
        self._backoff = retry_backoff or ExponentialBackoff(base=0.1, cap=5.0, jitter=0.2)
        self._limiter = TokenBucket(qps, burst, self._clock) if qps else None
        self._timeout = timeout
        self._transport = transport
        self._lean_wanted = lean
        self._lk = LightkubeAsyncClient(
            config=config,
            timeout=httpx2.Timeout(timeout),
            field_manager=field_manager,
            trust_env=False,
            transport=transport,
        )
        # lightkube's own authenticated HTTP client (base URL, TLS context, bearer auth from the kubeconfig).
        self._http: httpx2.AsyncClient = self._lk._client._client
        self._base_url = str(self._http.base_url).rstrip("/")
        # ordinary (non-watch) requests go over LeanPool's plain keep-alive HTTP/1.1: measured on the
        # runtime benchmark, a status patch costs about a fifth of the client CPU it costs through httpx2,
        # and an operator writing thousands of objects is otherwise bound by its HTTP stack. Watches, custom
        # transports (tests) and auth other than static tokens / client certificates keep httpx2.
        self._lean = LeanPool.for_config(config, size=lean_connections) if lean and transport is None else None
        if self._lean is not None:
            self._lean.timeout = timeout
        self._lean_prefix = urlsplit(str(config.cluster.server)).path.rstrip("/")

    # ----------------------------------------------------------------- construction helpers
    @classmethod
    def from_kubeconfig(
        cls, path: str | os.PathLike[str] | None = None, context: str | None = None, **kwargs: Any
    ) -> Client:
        return cls(load_config(path, context), **kwargs)

    @classmethod
    def in_cluster(
        cls, service_account_dir: str | os.PathLike[str] | None = None, **kwargs: Any
    ) -> Client:
        """The Pod's own ServiceAccount (its folder: the usual one, or ``$KOKPIT_SERVICE_ACCOUNT_DIR``)."""
        return cls(load_config(in_cluster=True, service_account_dir=service_account_dir), **kwargs)

    def sibling(self, *, field_manager: str | None = None, lean_connections: int = 2) -> Client:
        """A client to the same server with the same credentials, retries and metrics but connections (and no
        client-side rate limit) of its own: for the few requests that must not queue behind this client's
        bulk writes — leader-election renewals.  The caller closes it."""
        return Client(self.config, field_manager=field_manager or self.field_manager, timeout=self._timeout,
                      max_retries=self.max_retries, retry_backoff=self._backoff, metrics=self.metrics,
                      clock=self._clock, transport=self._transport, lean=self._lean_wanted,
                      lean_connections=lean_connections)

    @property
    def lightkube(self) -> LightkubeAsyncClient:
        """The underlying lightkube client, for typed calls (``await client.lightkube.get(Pod, "x")``)."""
        return self._lk

    @property
    def server(self) -> str:
        return str(self.config.cluster.server)

    @property
    def namespace(self) -> str:
        return str(self.config.namespace)

    async def close(self) -> None:
        if self._lean is not None:
            await self._lean.close()
        await self._lk.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ----------------------------------------------------------------- core request with retries
    async def _request(
        self,
        verb: str,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | None] | None = None,
        body: bytes | None = None,
        content_type: str = "application/json",
    ) -> Any:
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        query = "?" + urlencode(clean, quote_via=quote) if clean else ""
        # httpx2: one absolute URL, parsed once (a relative path plus params costs three URL parses)
        url = httpx2.URL(self._base_url + path + query) if self._lean is None else None
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        idempotent = method in _IDEMPOTENT
        attempt = 0
        while True:
            if self._limiter is not None:
                await self._limiter.wait()
            t0 = self._clock.monotonic()
            try:
                if self._lean is not None:
                    code, content = await self._lean.request(
                        method, self._lean_prefix + path + query, body or b"", content_type
                    )
                    retry_header = None
                else:
                    assert url is not None
                    resp = await self._http.request(method, url, content=body, headers=headers)
                    code, content = resp.status_code, resp.content
                    retry_header = resp.headers.get("Retry-After")
            except (httpx2.TransportError, TransportError) as e:
                self.metrics.requests.labels(verb, "<error>").inc()
                never_sent = isinstance(
                    e, httpx2.ConnectError | httpx2.ConnectTimeout | httpx2.PoolTimeout
                ) or isinstance(e.__cause__, ConnectionRefusedError)
                if (never_sent or idempotent) and attempt < self.max_retries:
                    await self._retry_sleep(verb, attempt, None)
                    attempt += 1
                    continue
                raise TransportError(f"{method} {path}: {type(e).__name__}: {e}") from e
            finally:
                self.metrics.latency.labels(verb).observe(self._clock.monotonic() - t0)
            self.metrics.requests.labels(verb, str(code)).inc()
            if code < 400:
                return orjson.loads(content) if content else None
            status = self._status_from(content)
            retry_after = _parse_retry_after(retry_header)
            if retry_after is None and status is not None:
                retry_after = _parse_retry_after(str((status.get("details") or {}).get("retryAfterSeconds") or ""))
            retriable = code == 429 or (idempotent and code >= 500 and code != 501)
            if retriable and attempt < self.max_retries:
                await self._retry_sleep(verb, attempt, retry_after)
                attempt += 1
                continue
            raise ApiError.from_status(code, status, retry_after)

    async def _retry_sleep(self, verb: str, attempt: int, retry_after: float | None) -> None:
        self.metrics.retries.labels(verb).inc()
        delay = self._backoff.delay(attempt)
        if retry_after is not None:
            delay = max(delay, retry_after)
        log.debug("retrying %s in %.3fs (attempt %d)", verb, delay, attempt + 1)
        await self._clock.sleep(delay)

    @staticmethod
    def _status_of(resp: httpx2.Response) -> dict[str, Any] | None:
        return Client._status_from(resp.content)

    @staticmethod
    def _status_from(content: bytes) -> dict[str, Any] | None:
        try:
            data = orjson.loads(content)
        except orjson.JSONDecodeError:
            return {"message": content[:500].decode("utf-8", "replace")}
        return data if isinstance(data, dict) else None

    # ----------------------------------------------------------------- reads
    async def get(
        self, kind: Kind, name: str, namespace: str | None = None, *, subresource: str | None = None
    ) -> Obj:
        path = kind.object_path(name, self._ns(kind, namespace), subresource)
        out: Obj = await self._request("get", "GET", path)
        return out

    async def list_pages(
        self,
        kind: Kind,
        namespace: str | None = None,
        *,
        label_selector: Mapping[str, str] | str | None = None,
        field_selector: str | None = None,
        limit: int | None = 500,
        resource_version: str | None = None,
    ) -> AsyncGenerator[ObjectList, None]:
        """Pages of a list, following ``continue`` tokens; an expired token raises ResourceExpiredError."""
        params: dict[str, str | None] = {
            "labelSelector": _selector(label_selector),
            "fieldSelector": field_selector,
            "limit": str(limit) if limit else None,
            "resourceVersion": resource_version,
        }
        path = kind.collection_path(namespace if kind.namespaced else None)
        while True:
            data = await self._request("list", "GET", path, params=params)
            meta = data.get("metadata") or {}
            cont = meta.get("continue") or None
            yield ObjectList(data.get("items") or [], str(meta.get("resourceVersion") or ""), cont)
            if not cont:
                return
            params = {**params, "continue": cont, "resourceVersion": None}

    async def list(
        self,
        kind: Kind,
        namespace: str | None = None,
        *,
        label_selector: Mapping[str, str] | str | None = None,
        field_selector: str | None = None,
        limit: int | None = 500,
    ) -> ObjectList:
        """The whole list (all pages); ``resource_version`` is the first page's, where a watch should start."""
        items: list[Obj] = []
        rv = ""
        async for page in self.list_pages(
            kind, namespace, label_selector=label_selector, field_selector=field_selector, limit=limit
        ):
            items.extend(page.items)
            rv = rv or page.resource_version
        return ObjectList(items, rv)

    async def watch(
        self,
        kind: Kind,
        namespace: str | None = None,
        *,
        resource_version: str | None = None,
        label_selector: Mapping[str, str] | str | None = None,
        field_selector: str | None = None,
        timeout_seconds: int | None = None,
        bookmarks: bool = True,
    ) -> AsyncGenerator[WatchEvent, None]:
        """One watch connection, with ``allowWatchBookmarks``; ends when the server closes it.

        A 410 (as HTTP status or as an ERROR event) raises :class:`ResourceExpiredError`; a broken
        connection raises :class:`TransportError`.
        """
        params: dict[str, str] = {"watch": "true"}
        if bookmarks:
            params["allowWatchBookmarks"] = "true"
        if resource_version:
            params["resourceVersion"] = resource_version
        if sel := _selector(label_selector):
            params["labelSelector"] = sel
        if field_selector:
            params["fieldSelector"] = field_selector
        if timeout_seconds is not None:
            params["timeoutSeconds"] = str(timeout_seconds)
        path = kind.collection_path(namespace if kind.namespaced else None)
        read_timeout = None if timeout_seconds is None else timeout_seconds + 30.0
        timeout = httpx2.Timeout(self._timeout, read=read_timeout)
        if self._limiter is not None:
            await self._limiter.wait()
        try:
            async with self._http.stream(
                "GET", path, params=params, headers={"Accept": "application/json"}, timeout=timeout
            ) as resp:
                self.metrics.requests.labels("watch", str(resp.status_code)).inc()
                if resp.status_code >= 400:
                    await resp.aread()
                    raise ApiError.from_status(resp.status_code, self._status_of(resp))
                async for line in resp.aiter_lines():
                    if not line.strip():
                        continue
                    ev = orjson.loads(line)
                    etype = ev.get("type", "")
                    obj = ev.get("object") or {}
                    if etype == "ERROR":
                        raise ApiError.from_status(int(obj.get("code") or 500), obj)
                    rv = str((obj.get("metadata") or {}).get("resourceVersion") or "")
                    yield WatchEvent(etype, obj, rv)
        except httpx2.TransportError as e:
            self.metrics.requests.labels("watch", "<error>").inc()
            raise TransportError(f"watch {path}: {type(e).__name__}: {e}") from e

    async def watch_resumable(
        self,
        kind: Kind,
        namespace: str | None = None,
        *,
        resource_version: str,
        label_selector: Mapping[str, str] | str | None = None,
        field_selector: str | None = None,
        timeout_seconds: int = 300,
        backoff: ExponentialBackoff | None = None,
    ) -> AsyncGenerator[WatchEvent, None]:
        """A watch that outlives connections: reconnects with backoff from the last resourceVersion seen
        (bookmarks included), forever.  Only 410 (or another API error) ends it, raised to the caller."""
        bo = backoff or ExponentialBackoff(base=0.2, cap=30.0, jitter=0.2)
        rv = resource_version
        failures = 0
        while True:
            stream = self.watch(
                kind,
                namespace,
                resource_version=rv,
                label_selector=label_selector,
                field_selector=field_selector,
                timeout_seconds=timeout_seconds,
            )
            try:
                async with contextlib.aclosing(stream):
                    async for ev in stream:
                        failures = 0
                        if ev.resource_version:
                            rv = ev.resource_version
                        yield ev
            except TransportError as e:
                delay = bo.delay(failures)
                failures += 1
                log.info("watch %s broke (%s); resuming from %s in %.2fs", kind.plural, e, rv, delay)
                await self._clock.sleep(delay)
            except ApiError as e:
                if isinstance(e, ResourceExpiredError) or e.code < 500:
                    raise
                delay = bo.delay(failures)
                failures += 1
                log.info("watch %s failed (%s); resuming from %s in %.2fs", kind.plural, e, rv, delay)
                await self._clock.sleep(delay)

    # ----------------------------------------------------------------- writes
    def _ns(self, kind: Kind, namespace: str | None, obj: Obj | None = None) -> str | None:
        if not kind.namespaced:
            return None
        if namespace:
            return namespace
        if obj is not None:
            ns = (obj.get("metadata") or {}).get("namespace")
            if ns:
                return str(ns)
        return self.namespace

    def _with_type(self, kind: Kind, obj: Obj) -> Obj:
        if obj.get("apiVersion") and obj.get("kind"):
            return obj
        return {"apiVersion": kind.api_version, "kind": kind.kind, **obj}

    async def create(
        self, kind: Kind, obj: Obj, namespace: str | None = None, *, dry_run: bool = False
    ) -> Obj:
        path = kind.collection_path(self._ns(kind, namespace, obj))
        params = {"fieldManager": self.field_manager, "dryRun": "All" if dry_run else None}
        out: Obj = await self._request(
            "create", "POST", path, params=params, body=orjson.dumps(self._with_type(kind, obj))
        )
        return out

    async def create_subresource(
        self, kind: Kind, name: str, subresource: str, obj: Obj, namespace: str | None = None
    ) -> Obj:
        """POST to an object's subresource (``pods/binding``, ``pods/eviction``); returns the answer."""
        path = kind.object_path(name, self._ns(kind, namespace, obj), subresource)
        out: Obj = await self._request(
            "create", "POST", path, params={"fieldManager": self.field_manager}, body=orjson.dumps(obj)
        ) or {}
        return out

    async def update(self, kind: Kind, obj: Obj, *, subresource: str | None = None) -> Obj:
        """PUT: optimistic concurrency through ``metadata.resourceVersion`` (409 ConflictError when stale)."""
        name = obj["metadata"]["name"]
        path = kind.object_path(name, self._ns(kind, None, obj), subresource)
        out: Obj = await self._request(
            "update",
            "PUT",
            path,
            params={"fieldManager": self.field_manager},
            body=orjson.dumps(self._with_type(kind, obj)),
        )
        return out

    async def update_status(self, kind: Kind, obj: Obj) -> Obj:
        return await self.update(kind, obj, subresource="status")

    async def patch(
        self,
        kind: Kind,
        name: str,
        body: Any,
        namespace: str | None = None,
        *,
        patch_type: PatchType = "merge",
        subresource: str | None = None,
        field_manager: str | None = None,
        force: bool = False,
    ) -> Obj:
        """Patch by merge / json / strategic / apply (server-side apply with field manager and ``force``)."""
        path = kind.object_path(name, self._ns(kind, namespace), subresource)
        params: dict[str, str | None] = {"fieldManager": field_manager or self.field_manager}
        if patch_type == "apply" and force:
            params["force"] = "true"
        verb = "apply" if patch_type == "apply" else "patch"
        out: Obj = await self._request(
            verb,
            "PATCH",
            path,
            params=params,
            body=orjson.dumps(body),
            content_type=_PATCH_CONTENT_TYPES[patch_type],
        )
        return out

    async def patch_status(
        self,
        kind: Kind,
        name: str,
        body: Any,
        namespace: str | None = None,
        *,
        patch_type: PatchType = "merge",
    ) -> Obj:
        return await self.patch(kind, name, body, namespace, patch_type=patch_type, subresource="status")

    async def apply(
        self,
        kind: Kind,
        obj: Obj,
        *,
        field_manager: str | None = None,
        force: bool = True,
        subresource: str | None = None,
    ) -> Obj:
        """Server-side apply of a partial object (must carry metadata.name)."""
        obj = self._with_type(kind, obj)
        meta = obj.get("metadata") or {}
        return await self.patch(
            kind,
            meta["name"],
            obj,
            self._ns(kind, None, obj),
            patch_type="apply",
            subresource=subresource,
            field_manager=field_manager,
            force=force,
        )

    async def delete(
        self,
        kind: Kind,
        name: str,
        namespace: str | None = None,
        *,
        propagation_policy: Literal["Foreground", "Background", "Orphan"] | None = None,
        grace_period_seconds: int | None = None,
        precondition_uid: str | None = None,
        precondition_resource_version: str | None = None,
    ) -> Obj:
        """Delete; returns the server's answer (the object while finalizers hold it, else a Status)."""
        path = kind.object_path(name, self._ns(kind, namespace))
        opts: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if propagation_policy:
            opts["propagationPolicy"] = propagation_policy
        if grace_period_seconds is not None:
            opts["gracePeriodSeconds"] = grace_period_seconds
        pre: dict[str, str] = {}
        if precondition_uid:
            pre["uid"] = precondition_uid
        if precondition_resource_version:
            pre["resourceVersion"] = precondition_resource_version
        if pre:
            opts["preconditions"] = pre
        out: Obj = await self._request("delete", "DELETE", path, body=orjson.dumps(opts)) or {}
        return out

    # ----------------------------------------------------------------- typed access
    async def get_typed(self, res: type[T], name: str, namespace: str | None = None) -> T:
        """Get as a lightkube typed model (e.g. ``lightkube.resources.coordination_v1.Lease``)."""
        return to_typed(res, await self.get(Kind.from_lightkube(res), name, namespace))


def to_typed(res: type[T], obj: Obj) -> T:
    """Convert a dict into a lightkube model instance."""
    conv = getattr(res, "from_dict", None)
    if conv is None:
        raise TypeError(f"{res!r} is not a lightkube resource class")
    out: T = conv(obj)
    return out
