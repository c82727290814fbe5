"""The set of served resources and the discovery documents built from it.

Built-in kinds are registered at start; custom resources are added when their CRD is Established and
removed when it is deleted. Discovery documents are cached and rebuilt only when that set changes, because
every kubectl invocation and every client start reads them.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from kokpit.apiserver.builtins import subresource_info
from kokpit.apiserver.resources import ResourceType

__all__ = ["Registry"]



class Registry:
    """Lookup of resource types by group/version/plural, kind or short name, plus discovery."""

    def __init__(self) -> None:
        self._by_gvr: dict[tuple[str, str, str], ResourceType] = {}
        self._version_order: dict[str, list[str]] = {}
        self._cache: dict[str, bytes] = {}
        self._storage_types: dict[str, ResourceType] | None = None
        self.generation = 0

    # ------------------------------------------------------------------ mutation
    def add(self, rt: ResourceType) -> None:
        self._by_gvr[(rt.group, rt.version, rt.plural)] = rt
        versions = self._version_order.setdefault(rt.group, [])
        if rt.version not in versions:
            versions.append(rt.version)
        self._changed()

    def remove_crd(self, crd_name: str) -> list[ResourceType]:
        gone = [rt for rt in self._by_gvr.values() if rt.crd_name == crd_name]
        for rt in gone:
            del self._by_gvr[(rt.group, rt.version, rt.plural)]
        for group in {rt.group for rt in gone}:
            left = {v for (g, v, _r) in self._by_gvr if g == group}
            self._version_order[group] = [v for v in self._version_order.get(group, []) if v in left]
            if not self._version_order[group]:
                del self._version_order[group]
        if gone:
            self._changed()
        return gone

    def set_version_order(self, group: str, versions: list[str]) -> None:
        self._version_order[group] = list(versions)
        self._changed()

    def _changed(self) -> None:
        self._cache.clear()
        self._storage_types = None
        self.generation += 1

    # ------------------------------------------------------------------ lookup
    def get(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._by_gvr.get((group, version, plural))

    def types(self) -> list[ResourceType]:
        return list(self._by_gvr.values())

    def crd_types(self, crd_name: str) -> list[ResourceType]:
        return [rt for rt in self._by_gvr.values() if rt.crd_name == crd_name]

    def group_versions(self) -> list[str]:
        out = []
        for group, versions in self._version_order.items():
            for v in versions:
                out.append(f"{group}/{v}" if group else v)
        return out

    def has_group_version(self, group: str, version: str) -> bool:
        return version in self._version_order.get(group, [])

    def storage_types(self) -> dict[str, ResourceType]:
        """One type per storage bucket (the storage version for custom resources), keyed by prefix; built once
        per change of the registry (the garbage collector asks for every dependent it looks at)."""
        if self._storage_types is not None:
            return self._storage_types
        out: dict[str, ResourceType] = {}
        for rt in self._by_gvr.values():
            if rt.to_storage is not None:
                continue  # a view over another type's storage
            cur = out.get(rt.store_prefix)
            if cur is None or (rt.storage_version and rt.version == rt.storage_version):
                out[rt.store_prefix] = rt
        self._storage_types = out
        return out

    # ------------------------------------------------------------------ discovery
    def _cached(self, key: str, build: Any) -> bytes:
        raw = self._cache.get(key)
        if raw is None:
            raw = self._cache[key] = orjson.dumps(build())
        return raw

    def api_versions(self, server_address: str) -> bytes:
        return self._cached("/api", lambda: {
            "kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
        })

    def _group(self, group: str) -> dict[str, Any]:
        versions = self._version_order.get(group, [])
        vs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {"name": group, "versions": vs, "preferredVersion": vs[0]}

    def _groups(self) -> list[str]:
        return [g for g in self._version_order if g]

    def api_groups(self) -> bytes:
        return self._cached("/apis", lambda: {
            "kind": "APIGroupList", "apiVersion": "v1",
            "groups": [self._group(g) for g in self._groups()],
        })

    def api_group(self, group: str) -> bytes | None:
        if group not in self._version_order:
            return None
        return self._cached(f"/apis/{group}", lambda: {"kind": "APIGroup", "apiVersion": "v1",
                                                       **self._group(group)})

    def resource_list(self, group: str, version: str) -> bytes | None:
        if not self.has_group_version(group, version):
            return None
        return self._cached(f"{group}/{version}", lambda: self._resource_list(group, version))

    def _resource_list(self, group: str, version: str) -> dict[str, Any]:
        resources: list[dict[str, Any]] = []
        for (g, v, _p), rt in sorted(self._by_gvr.items()):
            if g != group or v != version:
                continue
            entry: dict[str, Any] = {
                "name": rt.plural, "singularName": rt.singular, "namespaced": rt.namespaced,
                "kind": rt.kind, "verbs": list(rt.verbs),
                "storageVersionHash": hashlib.sha256(rt.store_prefix.encode()).hexdigest()[:11],
            }
            if rt.short_names:
                entry["shortNames"] = list(rt.short_names)
            if rt.categories:
                entry["categories"] = list(rt.categories)
            resources.append(entry)
            for sub in rt.subresources:
                group_, version_, kind_, verbs_ = subresource_info(rt, sub)
                s: dict[str, Any] = {"name": f"{rt.plural}/{sub}", "singularName": "",
                                     "namespaced": rt.namespaced, "kind": kind_, "verbs": list(verbs_)}
                if group_ != rt.group or version_ != rt.version:
                    s["group"] = group_
                    s["version"] = version_
                resources.append(s)
        gv = f"{group}/{version}" if group else version
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}
