"""Process entry point of ``kokpit scheduler``: the scheduler wired on a component Manager (leader election
on the ``kube-system/kube-scheduler`` Lease, /healthz /readyz /metrics; see :mod:`kokpit.runtime.component`)."""

from __future__ import annotations

from pathlib import Path

from kokpit.runtime.component import ComponentConfig, run_component
from kokpit.scheduler.scheduler import Scheduler, SchedulerOptions

__all__ = ["run_scheduler"]


async def run_scheduler(kubeconfig: str | Path | None, options: SchedulerOptions | None = None,
                        config: ComponentConfig | None = None) -> None:
    """Run until SIGTERM/SIGINT or cancellation."""
    await run_component(kubeconfig, "kube-scheduler", lambda m: Scheduler(m, options), config)
