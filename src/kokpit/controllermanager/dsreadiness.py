"""DaemonSet readiness reporter: a node's Condition ConfigMap saying whether its key DaemonSets run there.

The seed's example of a pluggable node final state: "enable scheduling only after the log-collection
DaemonSet is running on the node".  A DaemonSet opts in with the annotation
``kokpit.io/readiness-condition: <ConditionType>`` (several DaemonSets may share one type: all of them must
be ready); a Machine lists that type in ``spec.readinessGates``; this reporter writes, per node, the
ConfigMap ``daemonset-readiness.<node>`` in ``kube-system`` (labels ``kokpit.io/node=<node>``,
``kokpit.io/condition-source=daemonset-readiness``) with one key per condition type:
``{"status": "True"}`` when every such DaemonSet that should run on the node has a Ready pod there, else
False naming the DaemonSets still missing.  The machine operator reads those ConfigMaps and keeps the node
cordoned until the gate is True; daemon pods tolerate the cordon, so they arrive and open the gate.
The ConfigMap is owned by its Node, so it goes when the node goes.
"""

from __future__ import annotations

import json
from typing import Any

from kokpit._lib.podutil import is_ready
from kokpit.client import CONFIGMAP, NODE, POD, AlreadyExistsError, NotFoundError
from kokpit.controllermanager._common import DAEMONSET
from kokpit.controllermanager.daemonset import node_should_run
from kokpit.runtime import Handlers, Manager, Request, Result
from kokpit.runtime.informer import Informer

__all__ = ["CONDITION_ANNOTATION", "DaemonSetReadinessReporter", "configmap_name"]

Obj = dict[str, Any]
CONDITION_ANNOTATION = "kokpit.io/readiness-condition"
NAMESPACE = "kube-system"
SOURCE = "daemonset-readiness"
NODE_LABEL = "kokpit.io/node"
SOURCE_LABEL = "kokpit.io/condition-source"


def configmap_name(node: str) -> str:
    return f"{SOURCE}.{node}"


def _node_of(pod: Obj) -> list[str]:
    n = (pod.get("spec") or {}).get("nodeName")
    return [str(n)] if n else []


class DaemonSetReadinessReporter:
    def __init__(self, manager: Manager, *, workers: int = 4) -> None:
        self.client = manager.client
        self.ds: Informer = manager.informers.informer(DAEMONSET)
        self.nodes: Informer = manager.informers.informer(NODE)
        self.pods: Informer = manager.informers.informer(POD)
        self.configmaps: Informer = manager.informers.informer(CONFIGMAP, NAMESPACE,
                                                               label_selector=f"{SOURCE_LABEL}={SOURCE}")
        try:
            self.pods.add_indexer("node", _node_of)
        except ValueError:
            pass
        self.controller = c = manager.controller("daemonset-readiness", self.reconcile, workers=workers)
        c.for_(self.nodes)
        c.watches(self.pods, lambda p: [Request("", n) for n in _node_of(p)], self._daemon_pod)
        self.ds.add_event_handler(Handlers(add=self._all, update=self._ds_changed, delete=self._all))

    @staticmethod
    def _daemon_pod(pod: Obj) -> bool:
        return any(r.get("kind") == "DaemonSet" for r in (pod.get("metadata") or {}).get("ownerReferences") or [])

    def _keyed(self) -> list[Obj]:
        return [d for d in self.ds.store.list()
                if ((d.get("metadata") or {}).get("annotations") or {}).get(CONDITION_ANNOTATION)]

    def _all(self, ds: Obj) -> None:
        if ((ds.get("metadata") or {}).get("annotations") or {}).get(CONDITION_ANNOTATION):
            for n in self.nodes.store.keys():
                self.controller.queue.add(Request("", n))

    def _ds_changed(self, old: Obj, new: Obj) -> None:
        if (old.get("metadata") or {}).get("annotations") != (new.get("metadata") or {}).get("annotations") or \
                old.get("spec") != new.get("spec"):
            self._all(old)
            self._all(new)

    def report(self, node: Obj) -> dict[str, str]:
        """Condition type → JSON value for this node (what the ConfigMap's data should be)."""
        name = str(node["metadata"]["name"])
        ready_owners = {str(r.get("uid")) for p in self.pods.store.by_index("node", name) if is_ready(p)
                        and not (p.get("metadata") or {}).get("deletionTimestamp")
                        for r in (p.get("metadata") or {}).get("ownerReferences") or [] if r.get("kind") == "DaemonSet"}
        missing: dict[str, list[str]] = {}
        for ds in self._keyed():
            meta = ds["metadata"]
            ctype = str(meta["annotations"][CONDITION_ANNOTATION])
            missing.setdefault(ctype, [])
            tspec = ((ds.get("spec") or {}).get("template") or {}).get("spec") or {}
            if node_should_run(tspec, node) and str(meta.get("uid")) not in ready_owners:
                missing[ctype].append(f"{meta.get('namespace')}/{meta.get('name')}")
        out = {}
        for ctype, names in sorted(missing.items()):
            if names:
                val = {"status": "False", "reason": "DaemonSetPodNotReady",
                       "message": f"no ready pod of DaemonSet {', '.join(sorted(names))} on node {name}"}
            else:
                val = {"status": "True", "reason": "DaemonSetPodsReady",
                       "message": f"every {ctype} DaemonSet has a ready pod on node {name}"}
            out[ctype] = json.dumps(val, sort_keys=True)
        return out

    async def reconcile(self, req: Request) -> Result | None:
        node = self.nodes.store.get(req.name)
        if node is None:
            return None  # its ConfigMap is owned by the Node: garbage collection removes it
        data = self.report(node)
        cm_name = configmap_name(req.name)
        cur = self.configmaps.store.get(f"{NAMESPACE}/{cm_name}")
        if cur is None and not data:
            return None
        if cur is not None and (cur.get("data") or {}) == data:
            return None
        body: Obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
            "name": cm_name, "namespace": NAMESPACE, "labels": {NODE_LABEL: req.name, SOURCE_LABEL: SOURCE},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": req.name,
                                 "uid": node["metadata"].get("uid")}]}, "data": data}
        if cur is None:
            try:
                await self.client.create(CONFIGMAP, body)
                return None
            except AlreadyExistsError:
                pass
        try:
            await self.client.patch(CONFIGMAP, cm_name, {"data": {**{k: None for k in (cur or {}).get("data") or {}
                                                                     if k not in data}, **data}}, NAMESPACE)
        except NotFoundError:
            return Result(requeue=True)
        return None
