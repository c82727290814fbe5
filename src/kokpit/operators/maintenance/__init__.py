"""Maintenance flows (issue 15): a faulty node is isolated, its pods migrated, the node repaired by escalating
repairs (component restart → reboot → reinstall → hardware ticket → a person), verified and given back."""

from kokpit.operators.maintenance._flow import FLOW, NODE_FAULT, POLICY, FlowOptions, FlowReconciler
from kokpit.operators.maintenance._opener import flow_name
from kokpit.operators.maintenance.operator import MaintenanceOperator

__all__ = ["FLOW", "NODE_FAULT", "POLICY", "FlowOptions", "FlowReconciler", "MaintenanceOperator", "flow_name"]
