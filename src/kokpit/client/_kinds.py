"""How kokpit names a resource type on the wire: group, version, kind, plural and scope.

Objects travel as plain dicts (decoded JSON, the cheapest representation for caches of tens of thousands of
objects); a :class:`Kind` says where they live.  It also bridges to lightkube's typed models and generic
resource classes for code that prefers them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lightkube.core import resource as lkr
from lightkube.generic_resource import create_global_resource, create_namespaced_resource

__all__ = [
    "CONFIGMAP",
    "CRD",
    "EVENT",
    "LEASE",
    "NAMESPACE",
    "NODE",
    "POD",
    "SECRET",
    "Kind",
]


@dataclass(frozen=True)
class Kind:
    """A resource type: where its REST collection lives and whether it is namespaced."""

    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def collection_path(self, namespace: str | None = None) -> str:
        """URL path of the collection; ``namespace=None`` on a namespaced kind means all namespaces."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            return f"{base}/namespaces/{namespace}/{self.plural}"
        return f"{base}/{self.plural}"

    def object_path(self, name: str, namespace: str | None = None, subresource: str | None = None) -> str:
        if self.namespaced and not namespace:
            raise ValueError(f"{self.kind} is namespaced: a namespace is required for {name!r}")
        path = f"{self.collection_path(namespace if self.namespaced else None)}/{name}"
        return f"{path}/{subresource}" if subresource else path

    @classmethod
    def from_lightkube(cls, res: type[Any]) -> Kind:
        """The Kind of a lightkube resource class (typed model such as ``lightkube.resources.core_v1.Pod``)."""
        info = lkr.api_info(res)
        namespaced = issubclass(res, lkr.NamespacedResource | lkr.NamespacedSubResource)
        d = info.resource
        return cls(d.group, d.version, d.kind, info.plural, namespaced)

    def generic_resource(self) -> type[Any]:
        """The lightkube generic resource class for this kind (registered once per process by lightkube)."""
        if self.namespaced:
            return create_namespaced_resource(self.group, self.version, self.kind, self.plural)
        return create_global_resource(self.group, self.version, self.kind, self.plural)


LEASE = Kind("coordination.k8s.io", "v1", "Lease", "leases")
EVENT = Kind("", "v1", "Event", "events")
CONFIGMAP = Kind("", "v1", "ConfigMap", "configmaps")
SECRET = Kind("", "v1", "Secret", "secrets")
POD = Kind("", "v1", "Pod", "pods")
NAMESPACE = Kind("", "v1", "Namespace", "namespaces", namespaced=False)
NODE = Kind("", "v1", "Node", "nodes", namespaced=False)
CRD = Kind(
    "apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions", namespaced=False
)
