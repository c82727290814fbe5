"""kokpit.scheduler: the business cluster's scheduler (kube-scheduler's filters, scores and messages).

A control-plane component like the API server: the cluster operator runs it from the ClusterPackageVersion,
replicas elect a leader on a Lease, and it serves /healthz, /readyz and /metrics.
"""

from kokpit.scheduler.run import run_scheduler
from kokpit.scheduler.scheduler import SCHEDULER_NAME, Scheduler, SchedulerOptions

__all__ = ["SCHEDULER_NAME", "Scheduler", "SchedulerOptions", "run_scheduler"]
