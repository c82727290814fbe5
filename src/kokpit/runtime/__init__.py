"""kokpit.runtime: the controller runtime every kokpit operator is built on.

Shared informers with indexed caches, a deduplicating rate-limited work queue, level-triggered
controllers, a manager with probes and metrics, Lease-based leader election, an aggregating event
recorder, helpers for conditions, finalizers and status patches, the reconcile skeleton every operator is
written on (:mod:`kokpit.runtime.reconcile`) and failure memory kept in status
(:mod:`kokpit.runtime.failures`).  It talks to servers only through :mod:`kokpit.client`.
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
from kokpit.runtime.failures import Failure, FailureMemory
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
from kokpit.runtime.reconcile import (
    INVALID_SPEC,
    InvalidSpec,
    Outcome,
    PhaseRule,
    ReconcileContext,
    Step,
    StepReconciler,
    StepResult,
    act,
    derive_phase,
    done,
    named_steps,
    run_steps,
    spec_error,
    stamp_phase,
    wait,
)
from kokpit.runtime.workqueue import ShutDownError, WorkQueue, default_rate_limiter

__all__ = [
    "INVALID_SPEC",
    "Controller",
    "EventHandler",
    "EventRecorder",
    "Failure",
    "FailureMemory",
    "Handlers",
    "IndexFunc",
    "Informer",
    "InformerFactory",
    "InvalidSpec",
    "LeaderElectionConfig",
    "LeaderElector",
    "Manager",
    "Outcome",
    "PatchHelper",
    "PhaseRule",
    "ReconcileContext",
    "Reconciler",
    "Request",
    "Result",
    "RuntimeMetrics",
    "ShutDownError",
    "Source",
    "Step",
    "StepReconciler",
    "StepResult",
    "Store",
    "TerminalError",
    "WorkQueue",
    "act",
    "add_finalizer",
    "default_rate_limiter",
    "derive_phase",
    "done",
    "field_indexer",
    "find_condition",
    "has_finalizer",
    "is_deleting",
    "is_false",
    "is_true",
    "merge_patch",
    "named_steps",
    "object_key",
    "owner_mapper",
    "reconcile_view",
    "remove_condition",
    "remove_finalizer",
    "run_steps",
    "set_condition",
    "set_object_condition",
    "spec_error",
    "stamp_phase",
    "strip_managed_fields",
    "wait",
]
