"""The rollout controller (issue 16): canary waves of a ClusterPackageVersion over Clusters or of a package
change over Machines, batch by batch through the risk center, with automatic rollback.

``operator.py`` wires it onto a Manager, ``_reconciler.py`` is the reconcile of one Rollout (its steps),
``_progress.py`` the moving parts (observe, change, permits, steps, rollback), ``_select.py`` and ``_plan.py``
the pure decisions, ``_targets.py`` the two target kinds, ``_fleet.py`` the business clusters, ``_faults.py``
the faults attributed to a rollout, ``_status.py`` conditions and state, ``run.py`` the process entry point.
"""

from kokpit.operators.rollout._reconciler import ROLLOUT, RolloutOptions, RolloutReconciler
from kokpit.operators.rollout.operator import RolloutController
from kokpit.operators.rollout.run import LEASE, run_controller

__all__ = ["LEASE", "ROLLOUT", "RolloutController", "RolloutOptions", "RolloutReconciler", "run_controller"]
