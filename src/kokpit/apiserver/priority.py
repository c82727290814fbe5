"""Pod priority: the PriorityClass kind and kube-apiserver's Priority admission plugin.

The scheduler orders and preempts by ``spec.priority``, an integer no client may choose itself: admission
resolves it from ``spec.priorityClassName`` (or the one PriorityClass marked ``globalDefault``, else 0)
together with ``spec.preemptionPolicy``, and refuses a pod that names a missing class or states a different
number (403, kube's messages).  The two system classes kube ships (``system-cluster-critical`` 2000000000,
``system-node-critical`` 2000001000) are created at start; user classes may go up to one billion, and the
``system-`` prefix is reserved (:mod:`.semantics` validates the kind).  Read as behaviour from kube's plugin/pkg/admission/priority and
pkg/apis/scheduling/validation.
"""

from __future__ import annotations

import contextlib
from typing import Any

from kokpit.apiserver import errors
from kokpit.apiserver.errors import APIError
from kokpit.apiserver.registry import Registry
from kokpit.apiserver.resources import ResourceType
from kokpit.apiserver.rest import Rest, WriteOptions
from kokpit.apiserver.semantics import HIGHEST_USER_PRIORITY, SYSTEM_PRIORITY_CLASSES
from kokpit.apiserver.storage.store import Event

__all__ = [
    "HIGHEST_USER_PRIORITY",
    "SYSTEM_PRIORITY_CLASSES",
    "PriorityAdmission",
    "ensure_system_priority_classes",
]

Obj = dict[str, Any]


class PriorityAdmission:
    """Rest's admission hook for Pods (create) and PriorityClasses (one global default)."""

    def __init__(self, rest: Rest, registry: Registry) -> None:
        self.rest = rest
        self.registry = registry
        # the global default PriorityClass (or None), found once per change of the PriorityClasses: a Pod
        # create without priorityClassName listed and parsed every class for it. on_event, a store
        # listener, forgets it on any PriorityClass write.
        self._default: tuple[Obj | None] | None = None
        self._prefix: str | None = None

    def on_event(self, ev: Event) -> None:
        if self._prefix is None:
            pc_rt = self._classes()
            if pc_rt is None:
                return
            self._prefix = pc_rt.store_prefix
        if ev.key.startswith(self._prefix):
            self._default = None

    def _classes(self) -> ResourceType | None:
        return self.registry.get("scheduling.k8s.io", "v1", "priorityclasses")

    def __call__(self, rt: ResourceType, obj: Obj, old: Obj | None) -> None:
        if rt.group == "" and rt.kind == "Pod" and old is None:
            self._pod(obj)
        elif rt.group == "scheduling.k8s.io" and rt.kind == "PriorityClass" and obj.get("globalDefault") is True:
            self._one_default(obj)

    def _find(self, name: str) -> Obj | None:
        pc_rt = self._classes()
        if pc_rt is None:
            return None
        entry = self.rest.store.get(pc_rt.key(None, name))
        return entry.obj if entry is not None else None

    def _global_default(self) -> Obj | None:
        if self._default is None:
            self._default = (self._find_global_default(),)
        return self._default[0]

    def _find_global_default(self) -> Obj | None:
        pc_rt = self._classes()
        if pc_rt is None:
            return None
        _, entries = self.rest.list_entries(pc_rt, None)
        best: Obj | None = None
        for _key, e in entries:  # upstream: the lowest value among several defaults (a race can make two)
            if e.obj.get("globalDefault") is True and (best is None or e.obj.get("value", 0) < best.get("value", 0)):
                best = e.obj
        return best

    def _pod(self, pod: Obj) -> None:
        spec = pod.get("spec")
        if not isinstance(spec, dict):
            return
        pod_name = str((pod.get("metadata") or {}).get("name") or "")
        name = spec.get("priorityClassName")
        if name:
            pc = self._find(str(name))
            if pc is None:
                raise errors.forbidden(f'pods "{pod_name}" is forbidden: no PriorityClass with name {name} was found',
                                       name=pod_name, kind="pods")
        else:
            pc = self._global_default()
            if pc is not None:
                spec["priorityClassName"] = (pc.get("metadata") or {}).get("name")
        value = int(pc.get("value") or 0) if pc is not None else 0
        policy = str((pc or {}).get("preemptionPolicy") or "PreemptLowerPriority")
        if spec.get("priority") is not None and spec["priority"] != value:
            raise errors.forbidden(f'pods "{pod_name}" is forbidden: the integer value of priority '
                                   f'({spec["priority"]}) must not be provided in pod spec; priority admission '
                                   f'controller computed {value} from the given PriorityClass name',
                                   name=pod_name, kind="pods")
        if spec.get("preemptionPolicy") is not None and spec["preemptionPolicy"] != policy:
            raise errors.forbidden(f'pods "{pod_name}" is forbidden: the string value of PreemptionPolicy '
                                   f'({spec["preemptionPolicy"]}) must not be provided in pod spec; priority '
                                   f'admission controller computed {policy} from the given PriorityClass name',
                                   name=pod_name, kind="pods")
        spec["priority"] = value
        spec["preemptionPolicy"] = policy

    def _one_default(self, pc: Obj) -> None:
        name = (pc.get("metadata") or {}).get("name")
        other = self._global_default()
        if other is not None and (other.get("metadata") or {}).get("name") != name:
            raise errors.forbidden(f'priorityclasses.scheduling.k8s.io "{name}" is forbidden: PriorityClass '
                                   f'{(other.get("metadata") or {}).get("name")} is already marked as default. '
                                   "Only one default can exist", name=str(name), group="scheduling.k8s.io",
                                   kind="priorityclasses")


async def ensure_system_priority_classes(rest: Rest, registry: Registry) -> None:
    """Create kube's two system PriorityClasses if they are missing (the scheduling bootstrap hook)."""
    pc_rt = registry.get("scheduling.k8s.io", "v1", "priorityclasses")
    if pc_rt is None:
        return
    for name, (value, description) in SYSTEM_PRIORITY_CLASSES.items():
        if rest.store.get(pc_rt.key(None, name)) is None:
            with contextlib.suppress(APIError):
                await rest.create(pc_rt, None, {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                                                "metadata": {"name": name}, "value": value,
                                                "description": description},
                                  WriteOptions(field_manager="kokpit-apiserver"))
