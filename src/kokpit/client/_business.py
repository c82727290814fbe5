"""How a meta-cluster component reaches a business cluster: the ``<cluster>-kubeconfig`` Secret the cluster
operator writes next to each Cluster (key ``value``), read once and turned into a :class:`Client` in memory.

The risk center (its per-cluster Node caches and prober) and the rollout controller (Machine, package-version
and NodeFault caches) both need this; the kubeconfig's digest lets a caller see that the Secret changed
(rotated credentials, a moved endpoint) and reconnect.  Nothing is written to disk: the credentials stay in
the process.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from typing import Any

import yaml
from lightkube.config.kubeconfig import KubeConfig, SingleConfig

from kokpit.client._client import Client
from kokpit.client._errors import ApiError, NotFoundError, TransportError
from kokpit.client._kinds import SECRET

__all__ = ["KUBECONFIG_KEY", "BusinessKubeconfig", "KubeconfigUnavailable", "kubeconfig_secret_name",
           "load_config_data", "read_business_kubeconfig"]

KUBECONFIG_KEY = "value"


def kubeconfig_secret_name(cluster: str) -> str:
    """The Secret (in the Cluster's namespace) holding a business cluster's admin kubeconfig."""
    return f"{cluster}-kubeconfig"


def load_config_data(data: bytes | str, context: str | None = None) -> SingleConfig:
    """A kubeconfig held in memory (YAML or JSON text) as the config a :class:`Client` takes."""
    try:
        raw = yaml.safe_load(data)
    except yaml.YAMLError as e:
        raise ValueError(f"not a kubeconfig: {e}") from None
    if not isinstance(raw, dict):
        raise ValueError("not a kubeconfig: not a mapping")
    conf = KubeConfig.from_dict(raw).get(context)
    if conf is None:
        raise ValueError("kubeconfig has no usable current context")
    return conf


class KubeconfigUnavailable(Exception):
    """The business cluster cannot be reached yet; the message says why in words a person can act on."""


@dataclass(frozen=True)
class BusinessKubeconfig:
    """One read of a business cluster's kubeconfig Secret."""

    namespace: str
    cluster: str
    digest: str  # sha256 of the Secret's value: another digest means other credentials or another endpoint
    config: SingleConfig

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.cluster}"

    def client(self, **kwargs: Any) -> Client:
        return Client(self.config, **kwargs)


async def read_business_kubeconfig(meta: Client, namespace: str, cluster: str) -> BusinessKubeconfig:
    """Read and parse the kubeconfig Secret of business cluster ``namespace/cluster`` through ``meta``;
    :class:`KubeconfigUnavailable` names what is missing or broken (a broken Secret must not stop a caller
    that reaches many clusters)."""
    name = kubeconfig_secret_name(cluster)
    try:
        secret = await meta.get(SECRET, name, namespace)
    except NotFoundError:
        raise KubeconfigUnavailable(f"Secret {namespace}/{name} does not exist (the Cluster has no kubeconfig "
                                    "yet)") from None
    except (ApiError, TransportError) as e:
        raise KubeconfigUnavailable(f"cannot read Secret {namespace}/{name}: {e}") from None
    raw = (secret.get("data") or {}).get(KUBECONFIG_KEY)
    if not raw:
        raise KubeconfigUnavailable(f"Secret {namespace}/{name} has no key {KUBECONFIG_KEY}")
    try:
        config = load_config_data(base64.b64decode(raw, validate=True))
    except (ValueError, binascii.Error, KeyError, TypeError) as e:
        raise KubeconfigUnavailable(f"the kubeconfig in Secret {namespace}/{name} does not load: {e}") from None
    return BusinessKubeconfig(namespace, cluster, hashlib.sha256(str(raw).encode()).hexdigest(), config)
