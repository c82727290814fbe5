"""Routing: a request's method and path as kube-apiserver's RequestInfoFactory reads them.

``/api/v1/namespaces/NS/pods/NAME/log`` becomes ``RequestInfo(verb="get", resource="pods", name=NAME,
subresource="log", namespace=NS)``; the verb is the authorization verb (list, watch, deletecollection, ...),
not the HTTP method.  :func:`resource_type` then finds what serves it, with kube's 404 texts.
"""

from __future__ import annotations

from dataclasses import dataclass

from kokpit.apiserver import errors
from kokpit.apiserver.registry import Registry
from kokpit.apiserver.resources import ResourceType

__all__ = ["RequestInfo", "parse_bool", "request_info", "resource_type"]

_TRUE = {"1", "t", "T", "true", "TRUE", "True"}
_FALSE = {"0", "f", "F", "false", "FALSE", "False"}
_NS_SUBRESOURCES = {"status", "finalize"}
_VERB_BY_METHOD = {"GET": "get", "HEAD": "get", "POST": "create", "PUT": "update", "PATCH": "patch",
                   "DELETE": "delete"}


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


def request_info(method: str, path: str, query: dict[str, str]) -> RequestInfo:
    parts = [p for p in path.split("/") if p]
    verb = _VERB_BY_METHOD.get(method)
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
            return _finish_verb(info, method, query, watch_prefix)
    if not rest:
        return RequestInfo(False, verb, group=group, version=version, path=path)
    info = RequestInfo(True, verb, group, version, namespace, rest[0],
                       rest[1] if len(rest) > 1 else "", rest[2] if len(rest) > 2 else "", path)
    if len(rest) > 3:
        raise errors.not_found(info.resource, "/".join(rest[1:]), group)
    return _finish_verb(info, method, query, watch_prefix)


def _finish_verb(info: RequestInfo, method: str, query: dict[str, str], watch_prefix: bool) -> RequestInfo:
    if method in ("GET", "HEAD") and not info.name:
        info.verb = "watch" if watch_prefix or parse_bool(query.get("watch"), "watch") else "list"
    elif method in ("GET", "HEAD") and watch_prefix:
        info.verb = "watch"
    elif method == "DELETE" and not info.name:
        info.verb = "deletecollection"
    return info


def resource_type(registry: Registry, info: RequestInfo) -> ResourceType:
    """What serves this resource request, or the 404 kube answers (unserved group version, unknown resource
    or subresource, a namespaced path to a cluster-scoped kind)."""
    rt = registry.get(info.group, info.version, info.resource)
    if rt is None:
        if not registry.has_group_version(info.group, info.version):
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
