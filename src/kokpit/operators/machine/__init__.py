"""The machine operator: every worker node held at the final state its Machine declares.

Reaches nodes only through a :class:`kokpit.nodes.NodeDriver`; reads the API only through informer caches.
``kokpit machine-operator`` runs :func:`run_operator`.
"""

from __future__ import annotations

from kokpit.operators.machine._plan import Step, StepKind, next_step
from kokpit.operators.machine._poller import NodeStatePoller
from kokpit.operators.machine._reports import (
    NODE_LABEL,
    SOURCE_LABEL,
    GateResult,
    Report,
    evaluate_gates,
    merge_reports,
    parse_configmap,
    trusted_reports,
)
from kokpit.operators.machine._resolve import Resolution, removal_order, resolve
from kokpit.operators.machine.operator import (
    CORDON_ANNOTATION,
    MACHINE,
    MPV,
    MachineOperator,
    MachineReconciler,
    OperatorOptions,
)
from kokpit.operators.machine.run import run_operator

__all__ = [
    "CORDON_ANNOTATION",
    "MACHINE",
    "MPV",
    "NODE_LABEL",
    "SOURCE_LABEL",
    "GateResult",
    "MachineOperator",
    "MachineReconciler",
    "NodeStatePoller",
    "OperatorOptions",
    "Report",
    "Resolution",
    "Step",
    "StepKind",
    "evaluate_gates",
    "merge_reports",
    "next_step",
    "parse_configmap",
    "removal_order",
    "resolve",
    "run_operator",
    "trusted_reports",
]
