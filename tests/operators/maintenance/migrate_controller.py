"""A stand-in MigrateController (the PaaS side of the migration contract), run as its own process with the
official ``kubernetes`` client: it watches pods labelled ``kokpit.io/to-be-migrated=true``, creates each
one's replacement on another node, then deletes the old pod — which is how it says "migrated".  Pods
annotated ``example.com/no-migrate`` are left for the flow (evicted or deleted at the deadline).

usage: python migrate_controller.py KUBECONFIG TARGET_NODE
"""

from __future__ import annotations

import sys

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException


def main(kubeconfig: str, target: str) -> None:
    config.load_kube_config(kubeconfig)
    v1 = client.CoreV1Api()
    print("migrate controller watching", flush=True)
    while True:
        w = watch.Watch()
        for ev in w.stream(v1.list_pod_for_all_namespaces, label_selector="kokpit.io/to-be-migrated=true",
                           timeout_seconds=60):
            pod = ev["object"]
            meta = pod.metadata
            if ev["type"] == "DELETED" or meta.deletion_timestamp or "example.com/no-migrate" in (
                    meta.annotations or {}):
                continue
            new = client.V1Pod(
                metadata=client.V1ObjectMeta(name=f"{meta.name}-m", namespace=meta.namespace,
                                             labels={k: v for k, v in (meta.labels or {}).items()
                                                     if not k.startswith("kokpit.io/")},
                                             annotations={"example.com/migrated-from": meta.name}),
                spec=client.V1PodSpec(node_name=target, containers=pod.spec.containers))
            try:
                v1.create_namespaced_pod(meta.namespace, new)
            except ApiException as e:
                if e.status != 409:
                    raise
            try:
                v1.delete_namespaced_pod(meta.name, meta.namespace)
                print(f"migrated {meta.namespace}/{meta.name} to {target}", flush=True)
            except ApiException as e:
                if e.status != 404:
                    raise


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
