"""The Upstream flavor's I/O around the pure rendering of :mod:`._upstream`: the PKI Secret in kubeadm's
layout, the admin kubeconfig Secret, and the desired Pods of kube-apiserver, kube-controller-manager and
kube-scheduler for the component walk (etcd has its own walk, :mod:`._etcd`).

The same Secret ``<cluster>-pki`` the kokpit flavor uses holds every file of ``_upstream.pki_paths`` under
``secret_key(path)`` (plus each etcd member's certificates and the etcd roster, written by the etcd walk);
the Pods mount it at kubeadm's ``/etc/kubernetes/pki``.  The API server listens on the NodePort the
Cluster's Service records (hostNetwork, like the kokpit flavor), advertises its node's address
(``$(HOST_IP)``, the Downward API), and the controller-manager and scheduler reach it through that Service.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from typing import Any

import yaml

from kokpit.api.cluster import APISERVER_COMPONENT
from kokpit.client import SECRET, AlreadyExistsError, ObjectClient
from kokpit.operators.cluster._options import OperatorOptions
from kokpit.operators.cluster._plan import (
    CLUSTER_LABEL,
    COMPONENT_LABEL,
    HASH_ANNOTATION,
    KUBECONFIG_KEY,
    VERSION_LABEL,
    Names,
)
from kokpit.operators.cluster._resources import b64, unb64
from kokpit.operators.cluster._upstream import EtcdMember, UpstreamSpec, render_pods, secret_key, upstream_pki
from kokpit.runtime import Store

__all__ = ["UpstreamPlane", "is_upstream"]

Obj = dict[str, Any]
_HOST_IP_ENV = {"name": "HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}}


def is_upstream(cpv: Obj) -> bool:
    return (cpv.get("spec") or {}).get("flavor") == "Upstream"


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


class UpstreamPlane:
    """One Upstream Cluster's Secrets and non-etcd Pods (built per reconcile)."""

    def __init__(self, client: ObjectClient, opts: OperatorOptions, secrets: Store, names: Names) -> None:
        self.client, self.opts, self.secrets, self.names = client, opts, secrets, names

    def spec(self, cpv: Obj, api_port: int, members: tuple[EtcdMember, ...] = ()) -> UpstreamSpec:
        n = self.names
        images = {str(c["name"]): str(c["image"]) for c in (cpv.get("spec") or {}).get("components") or []}
        return UpstreamSpec(cluster=n.cluster, namespace=n.namespace,
                            version=str((cpv.get("spec") or {}).get("kubernetesVersion") or ""),
                            members=members, advertise_address="127.0.0.1", apiserver_port=api_port or 6443,
                            extra_sans=tuple(self.opts.extra_sans), data_root=self.opts.data_root,
                            image_overrides=images,
                            kubeconfig_server=f"https://{n.service}.{n.namespace}.svc:443")

    async def ensure_pki(self, cpv: Obj, keep: bool) -> Obj:
        """Every file of kubeadm's layout (member certificates come with each member); made once."""
        cur = self.secrets.get_by_name(self.names.pki_secret, self.names.namespace)
        if cur is not None and unb64(cur, secret_key("etcd/ca.crt")) and unb64(cur, "sa.key"):
            return cur
        files = upstream_pki(self.spec(cpv, 0), now=dt.datetime.now(dt.UTC))
        data = {secret_key(k): b64(v) for k, v in files.items()}
        body: Obj = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                     "metadata": {"name": self.names.pki_secret, "namespace": self.names.namespace,
                                  "labels": {CLUSTER_LABEL: self.names.cluster},
                                  "annotations": {"kokpit.io/retained": str(keep).lower(),
                                                  "kokpit.io/pki-layout": "kubeadm"}},
                     "data": data}
        if cur is None:
            try:
                return await self.client.create(SECRET, body, self.names.namespace)
            except AlreadyExistsError:
                return await self.client.get(SECRET, self.names.pki_secret, self.names.namespace)
        return await self.client.patch(SECRET, self.names.pki_secret, {"data": data}, self.names.namespace)

    async def ensure_kubeconfig(self, endpoint: str, pki_secret: Obj) -> None:
        """``<cluster>-kubeconfig``: kubeadm's admin.conf (a system:masters client certificate) pointed at
        the endpoint."""
        doc = yaml.safe_load(unb64(pki_secret, "admin.conf") or b"{}") or {}
        for c in doc.get("clusters") or []:
            c["cluster"]["server"] = endpoint
        data = {KUBECONFIG_KEY: base64.b64encode(yaml.safe_dump(doc, sort_keys=False).encode()).decode()}
        cur = self.secrets.get_by_name(self.names.kubeconfig_secret, self.names.namespace)
        if cur is None:
            body = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                    "metadata": {"name": self.names.kubeconfig_secret, "namespace": self.names.namespace,
                                 "labels": {CLUSTER_LABEL: self.names.cluster}}, "data": data}
            try:
                await self.client.create(SECRET, body, self.names.namespace)
            except AlreadyExistsError:
                await self.client.patch(SECRET, self.names.kubeconfig_secret, {"data": data}, self.names.namespace)
        elif (cur.get("data") or {}) != data:
            await self.client.patch(SECRET, self.names.kubeconfig_secret, {"data": data}, self.names.namespace)

    def desired(self, cpv: Obj, api_port: int, client_urls: tuple[str, ...], owner: Obj,
                apiserver_replicas: int) -> dict[str, list[Obj]]:
        """component -> its wanted Pods (index order) for the component walk; etcd is not among them."""
        spec = self.spec(cpv, api_port)
        args = {str(c["name"]): [str(a) for a in c.get("args") or []]
                for c in (cpv.get("spec") or {}).get("components") or []}
        out: dict[str, list[Obj]] = {}
        meta = owner.get("metadata") or {}
        for pod in render_pods(spec, apiserver_replicas):
            comp = pod["metadata"]["labels"][COMPONENT_LABEL]
            if comp == "etcd" or comp not in args:
                continue
            c = pod["spec"]["containers"][0]
            cmd = [a for a in c["command"] if not a.startswith("--etcd-servers=")]
            if comp == APISERVER_COMPONENT:
                cmd = [("--advertise-address=$(HOST_IP)" if a.startswith("--advertise-address=") else a) for a in cmd]
                cmd.insert(1, "--etcd-servers=" + ",".join(client_urls))
                c["env"] = [_HOST_IP_ENV]
                for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                    c[probe]["httpGet"].pop("host", None)  # the Pod's (= its node's) address
            else:
                pod["spec"]["dnsPolicy"] = "ClusterFirstWithHostNet"  # reaches the API server's Service
            c["command"] = [*cmd, *args[comp]]
            pod["metadata"]["labels"][VERSION_LABEL] = str(cpv["metadata"]["name"])
            pod["metadata"]["annotations"] = {HASH_ANNOTATION: _hash(pod["spec"])}
            pod["metadata"]["ownerReferences"] = [{
                "apiVersion": owner.get("apiVersion", "kokpit.io/v1alpha1"), "kind": owner.get("kind", "Cluster"),
                "name": meta.get("name"), "uid": meta.get("uid"), "controller": True, "blockOwnerDeletion": True}]
            out.setdefault(comp, []).append(pod)
        return out
