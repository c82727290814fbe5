"""kokpit.runtime: the controller runtime every kokpit operator is built on.

Shared informers with indexed caches, a deduplicating rate-limited work queue, level-triggered
controllers, a manager with probes and metrics, Lease-based leader election, an aggregating event
recorder, and helpers for conditions, finalizers and status patches.  It talks to servers only through
:mod:`kokpit.client`.
"""

from kokpit.runtime.conditions import (
    find_condition,
    is_false,
    is_true,
    remove_condition,
    set_condition,
    set_object_condition,
)
from kokpit.runtime.controller import Controller, Reconciler, Request, Result, TerminalError, owner_mapper
from kokpit.runtime.events import EventRecorder
from kokpit.runtime.finalizers import add_finalizer, has_finalizer, is_deleting, remove_finalizer
from kokpit.runtime.informer import (
    EventHandler,
    Handlers,
    IndexFunc,
    Informer,
    InformerFactory,
    Source,
    Store,
    field_indexer,
    object_key,
    strip_managed_fields,
)
from kokpit.runtime.leaderelection import LeaderElectionConfig, LeaderElector
from kokpit.runtime.manager import Manager
from kokpit.runtime.metrics import RuntimeMetrics
from kokpit.runtime.patch import PatchHelper, merge_patch, reconcile_view
from kokpit.runtime.workqueue import ShutDownError, WorkQueue, default_rate_limiter

__all__ = [
    "Controller",
    "EventHandler",
    "EventRecorder",
    "Handlers",
    "IndexFunc",
    "Informer",
    "InformerFactory",
    "LeaderElectionConfig",
    "LeaderElector",
    "Manager",
    "PatchHelper",
    "Reconciler",
    "Request",
    "Result",
    "RuntimeMetrics",
    "ShutDownError",
    "Source",
    "Store",
    "TerminalError",
    "WorkQueue",
    "add_finalizer",
    "default_rate_limiter",
    "field_indexer",
    "find_condition",
    "has_finalizer",
    "is_deleting",
    "is_false",
    "is_true",
    "merge_patch",
    "object_key",
    "owner_mapper",
    "reconcile_view",
    "remove_condition",
    "remove_finalizer",
    "set_condition",
    "set_object_condition",
    "strip_managed_fields",
]
