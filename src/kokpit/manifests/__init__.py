"""Install manifests for a real meta cluster (`kokpit manifests`, `deploy/`) and the per-component RBAC
that embedded mode (`kokpit up`) runs its own processes with."""

from kokpit.manifests._rbac import AGGREGATED, COMPONENTS, Component, component
from kokpit.manifests._render import (
    DEFAULT_IMAGE,
    DEFAULT_NAMESPACE,
    METRICS_READER,
    ManifestError,
    component_rbac,
    metrics_reader_role,
    render,
    render_files,
)

__all__ = [
    "AGGREGATED",
    "COMPONENTS",
    "DEFAULT_IMAGE",
    "DEFAULT_NAMESPACE",
    "METRICS_READER",
    "Component",
    "ManifestError",
    "component",
    "component_rbac",
    "metrics_reader_role",
    "render",
    "render_files",
]
