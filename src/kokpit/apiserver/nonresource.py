"""Non-resource paths: /version, health checks, /metrics, discovery (/api, /apis, ...) and OpenAPI.

Discovery documents are pre-serialized by the registry; OpenAPI documents are rebuilt only when the served
types change.  Health answers carry X-Kokpit-Instance so that, of several replicas on one data dir, a prober
can tell which one serves.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from kokpit.apiserver import errors, openapi
from kokpit.apiserver.registry import Registry
from kokpit.apiserver.responses import Response, json_response
from kokpit.apiserver.routing import RequestInfo
from kokpit.apiserver.storage.store import Store

__all__ = ["NonResourcePaths", "version_info"]


def version_info(label: str) -> dict[str, Any]:
    """/version for a kube version label such as ``v1.37.0``."""
    core = label.lstrip("v").split("-")[0].split("+")[0].split(".")
    major = core[0] if core else "1"
    minor = core[1] if len(core) > 1 else "0"
    return {"major": major, "minor": minor, "gitVersion": label, "gitCommit": "kokpit",
            "gitTreeState": "clean", "buildDate": "2026-11-27T00:00:00Z", "goVersion": "python3.11",
            "compiler": "cpython", "platform": "linux/amd64", "emulationMajor": major,
            "emulationMinor": minor, "minCompatibilityMajor": major, "minCompatibilityMinor": minor}


class NonResourcePaths:
    def __init__(self, store: Store, registry: Registry, metrics: CollectorRegistry, *, version_label: str,
                 server_address: str, instance: str, ready: Callable[[], bool]) -> None:
        self.store = store
        self.registry = registry
        self.metrics = metrics
        self.version_label = version_label
        self.server_address = server_address
        self.ready = ready
        self._instance_header = [(b"x-kokpit-instance", instance.encode())] if instance else []
        self._openapi_docs = openapi.OpenAPICache()
        self._openapi_generation = -1

    def serve(self, info: RequestInfo, query: dict[str, str], headers: dict[str, str]) -> Response:
        path = info.path.rstrip("/") or "/"
        if info.verb != "get":
            raise errors.method_not_allowed(f"the server does not allow this method on {path}")
        if path == "/version":
            return json_response(version_info(self.version_label))
        if path in ("/healthz", "/livez", "/readyz") or path.startswith(("/healthz/", "/livez/", "/readyz/")):
            ok = self.store.failed is None and (self.ready() or not path.startswith("/readyz"))
            if query.get("verbose") is not None and "verbose" in query:
                text = f"[{'+' if ok else '-'}]ping ok\n[{'+' if self.store.failed is None else '-'}]etcd ok\n"
                text += f"{path.strip('/')} check {'passed' if ok else 'failed'}\n"
                return Response(200 if ok else 500, text.encode(), b"text/plain; charset=utf-8",
                                self._instance_header)
            return Response(200 if ok else 500, b"ok" if ok else b"storage failed",
                            b"text/plain; charset=utf-8", self._instance_header)
        if path == "/metrics":
            return Response(200, generate_latest(self.metrics), b"text/plain; version=0.0.4; charset=utf-8")
        if path == "/api":
            return Response(200, self.registry.api_versions(self.server_address))
        if path == "/apis":
            return Response(200, self.registry.api_groups())
        if path == "/api/v1":
            return Response(200, self.registry.resource_list("", "v1") or b"{}")
        parts = path.strip("/").split("/")
        if parts[0] == "apis" and len(parts) == 2:
            doc = self.registry.api_group(parts[1])
            if doc is None:
                raise errors.APIError(404, "NotFound", "the server could not find the requested resource")
            return Response(200, doc)
        if parts[0] == "apis" and len(parts) == 3:
            doc = self.registry.resource_list(parts[1], parts[2])
            if doc is None:
                raise errors.APIError(404, "NotFound", "the server could not find the requested resource")
            return Response(200, doc)
        if parts[0] == "openapi":
            return self._openapi(parts, headers)
        raise errors.APIError(404, "NotFound", "the server could not find the requested resource")

    def _openapi(self, parts: list[str], headers: dict[str, str]) -> Response:
        """OpenAPI documents, rebuilt only when the served types change. v3 document URLs carry a content
        hash, which kubectl uses as its cache key, so a changed CRD schema is never served stale."""
        if self._openapi_generation != self.registry.generation:
            self._openapi_docs.update(self.registry.types())
            self._openapi_generation = self.registry.generation
        not_found = errors.APIError(404, "NotFound", "the server could not find the requested resource")
        if parts == ["openapi", "v2"]:
            if "protobuf" in headers.get("accept", ""):
                return Response(200, openapi.openapi_v2_protobuf(), openapi.V2_PROTOBUF_CONTENT_TYPE.encode())
            return Response(200, self._openapi_docs.v2_json()[0])
        if parts == ["openapi", "v3"]:
            return Response(200, self._openapi_docs.index()[0])
        if len(parts) >= 4 and parts[:2] == ["openapi", "v3"]:
            doc = self._openapi_docs.document_for_path("/".join(parts[2:]))
            if doc is None:
                raise not_found
            return Response(200, doc[0], headers=[(b"etag", f'"{doc[1]}"'.encode())])
        raise not_found
