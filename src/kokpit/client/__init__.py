"""kokpit.client: the only package that talks to a Kubernetes API server (lightkube underneath).

Everything else — the runtime, operators, the portal — goes through :class:`Client`, so retries, rate
limits, metrics and watch semantics (bookmarks, resume, 410) are decided once, here.
"""

from kokpit.client._business import (
    KUBECONFIG_KEY,
    BusinessKubeconfig,
    KubeconfigUnavailable,
    kubeconfig_secret_name,
    load_config_data,
    read_business_kubeconfig,
)
from kokpit.client._client import Client, ObjectList, PatchType, WatchEvent, load_config, to_typed
from kokpit.client._errors import (
    AlreadyExistsError,
    ApiError,
    ConflictError,
    NotFoundError,
    ResourceExpiredError,
    TransportError,
)
from kokpit.client._kinds import CONFIGMAP, CRD, EVENT, LEASE, NAMESPACE, NODE, POD, SECRET, Kind
from kokpit.client._lean import LeanPool
from kokpit.client._metrics import ClientMetrics
from kokpit.client._protocols import CanCreate, CanDelete, CanGet, CanPatch, ObjectClient
from kokpit.client.http import HttpTimeoutError, JsonHttpClient, JsonResponse

__all__ = [
    "CONFIGMAP",
    "CRD",
    "EVENT",
    "KUBECONFIG_KEY",
    "LEASE",
    "NAMESPACE",
    "NODE",
    "POD",
    "SECRET",
    "AlreadyExistsError",
    "ApiError",
    "BusinessKubeconfig",
    "CanCreate",
    "CanDelete",
    "CanGet",
    "CanPatch",
    "Client",
    "ClientMetrics",
    "ConflictError",
    "HttpTimeoutError",
    "JsonHttpClient",
    "JsonResponse",
    "Kind",
    "KubeconfigUnavailable",
    "LeanPool",
    "NotFoundError",
    "ObjectClient",
    "ObjectList",
    "PatchType",
    "ResourceExpiredError",
    "TransportError",
    "WatchEvent",
    "kubeconfig_secret_name",
    "load_config",
    "load_config_data",
    "read_business_kubeconfig",
    "to_typed",
]
