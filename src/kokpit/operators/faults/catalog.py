"""The default fault catalog: the FaultTypes a business cluster starts with (data, not code).

``kokpit machine-operator`` (with its fault controllers on) creates each of these FaultTypes when missing and
never touches one that exists, so a platform team edits a type (severity, flow, TTL, the
node-problem-detector conditions and Events that signal it) or adds its own with ``kubectl apply``, and the
edit survives every restart.  :class:`Catalog` is the read side: the FaultTypes of the informer cache, looked
up by name, by Node condition and by Event reason.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from kokpit.api.fault import FaultType, FaultTypeSpec
from kokpit.api.risk import DURATION_PATTERN
from kokpit.client import AlreadyExistsError
from kokpit.runtime.faultreports import FAULTTYPE

__all__ = ["DEFAULT_TYPES", "Catalog", "Signal", "install_defaults", "parse_duration"]

log = logging.getLogger("kokpit.operators.faults")

Obj = dict[str, Any]


def _t(name: str, category: str, severity: str, flow: str, description: str, *, ttl: str = "5m",
       per_component: bool = False, conditions: Iterable[tuple[str, str]] = (),
       events: Iterable[tuple[str, str]] = ()) -> tuple[str, Obj]:
    spec: Obj = {"category": category, "severity": severity, "flow": flow, "description": description,
                 "ttl": ttl, "perComponent": per_component}
    if conditions:
        spec["nodeConditions"] = [{"type": t, "status": "True", **({"component": c} if c else {})}
                                  for t, c in conditions]
    if events:
        spec["nodeEvents"] = [{"reason": r, "source": s} for r, s in events]
    FaultTypeSpec.model_validate(spec)  # the defaults obey the schema they ship with
    return name, spec


DEFAULT_TYPES: dict[str, Obj] = dict([
    # hardware: a person (or the site's repair system) has to touch the machine
    _t("disk-failure", "Hardware", "Critical", "hardware-repair",
       "A disk fails: I/O errors, SMART failure, a device gone.", events=[("IOError", "kernel-monitor")]),
    _t("memory-ecc", "Hardware", "Major", "hardware-repair",
       "Memory reports (un)correctable ECC errors.", events=[("MemoryReadError", "kernel-monitor")]),
    _t("nic-down", "Hardware", "Critical", "hardware-repair", "A network interface is down or flapping."),
    _t("gpu-fault", "Hardware", "Critical", "hardware-repair",
       "A GPU or other accelerator fails (XID errors, fallen off the bus)."),
    # system: the OS misbehaves; a reboot or a reinstall repairs it
    _t("kernel-deadlock", "System", "Critical", "reboot", "The kernel or a daemon is deadlocked (hung tasks).",
       conditions=[("KernelDeadlock", "")]),
    _t("readonly-filesystem", "System", "Major", "reboot", "A filesystem was remounted read-only.",
       conditions=[("ReadonlyFilesystem", "")]),
    _t("clock-skew", "System", "Minor", "component-restart", "The clock is off: NTP is down or unsynchronised.",
       conditions=[("NTPProblem", "")]),
    _t("disk-pressure", "System", "Minor", "none", "A disk is (nearly) full.",
       conditions=[("DiskPressure", ""), ("DiskFull", "")]),
    _t("os-corrupted", "System", "Critical", "reinstall",
       "The operating system is corrupted (bad packages, broken boot, integrity check failed)."),
    # components kokpit manages on the node
    _t("kubelet-unhealthy", "Component", "Major", "component-restart",
       "The kubelet is not running, fails its health check or restarts too often.", per_component=True,
       conditions=[("KubeletUnhealthy", "kubelet"), ("FrequentKubeletRestart", "kubelet")]),
    _t("container-runtime-unhealthy", "Component", "Major", "component-restart",
       "The container runtime is not running, fails its health check or restarts too often.",
       per_component=True,
       conditions=[("ContainerRuntimeUnhealthy", "containerd"), ("FrequentContainerdRestart", "containerd"),
                   ("FrequentDockerRestart", "docker"), ("CorruptDockerOverlay2", "docker")]),
    _t("component-unhealthy", "Component", "Major", "component-restart",
       "A managed component is not running or fails its health check.", per_component=True),
    # nobody hears from the node
    _t("node-unreachable", "Connectivity", "Critical", "reboot",
       "The node stopped heartbeating (Lease not renewed, Ready Unknown).", ttl="2m"),
    _t("node-not-ready", "Connectivity", "Major", "reboot", "The kubelet reports the node NotReady.", ttl="2m"),
    # the business signal
    _t("pod-start-failures", "Workload", "Major", "reboot",
       "Pods fail to start on this node at a high rate while the rest of the cluster is fine.", ttl="10m"),
    # a person asked for a repair (an approved ChangeRequest, the legacy adapter's reboot-node, reinstall-node,
    # restart-component): reported with a Person source naming the change, repaired by the same flows,
    # permits and storm breaker as any fault; the day-long TTL outlives a queue behind the risk budgets
    _t("reboot-requested", "System", "Minor", "reboot", "A person asked for the node to be rebooted.", ttl="24h"),
    _t("reinstall-requested", "System", "Minor", "reinstall", "A person asked for the node's operating system "
       "to be reinstalled.", ttl="24h"),
    _t("component-restart-requested", "Component", "Minor", "component-restart", "A person asked for a "
       "component of the node to be restarted.", ttl="24h", per_component=True),
])
"""name → FaultType spec of every default type."""



def parse_duration(text: str) -> float:
    """Seconds of a Go duration (``5m``, ``1h30m``, ``250ms``) as the catalog's TTLs are written."""
    import re

    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"not a duration: {text!r}")
    total = 0.0
    for num, unit in re.findall(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)", text):
        total += float(num) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    return total


async def install_defaults(client: Any, *, field_manager: str = "kokpit-faults") -> list[str]:
    """Create every default FaultType that does not exist; returns the names created (edits are kept)."""
    made = []
    for name, spec in DEFAULT_TYPES.items():
        body = {"apiVersion": FAULTTYPE.api_version, "kind": FAULTTYPE.kind,
                "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "kokpit",
                                                      "kokpit.io/default-catalog": "true"}},
                "spec": spec}
        try:
            await client.create(FAULTTYPE, body)
            made.append(name)
        except AlreadyExistsError:
            pass
    if made:
        log.info("installed default fault types: %s", ", ".join(made))
    return made


@dataclass(frozen=True)
class Signal:
    """A Node condition or Event that reports a fault type (for a component)."""

    fault_type: str
    component: str = ""


@dataclass
class Catalog:
    """The FaultTypes as parsed models, with the lookups discovery needs (rebuilt from the cache)."""

    types: dict[str, FaultType] = field(default_factory=dict)
    ttl: dict[str, float] = field(default_factory=dict)
    by_condition: dict[tuple[str, str], list[Signal]] = field(default_factory=dict)  # (type, status)
    by_event: dict[str, list[tuple[str, Signal]]] = field(default_factory=dict)  # reason → (source, signal)

    @classmethod
    def from_objects(cls, objs: Iterable[Obj]) -> Catalog:
        cat = cls()
        for obj in objs:
            try:
                ft = FaultType.model_validate(obj)
            except ValueError as e:  # admission makes this rare (an older schema); skip, do not crash
                log.warning("fault type %s ignored: %s", (obj.get("metadata") or {}).get("name"), e)
                continue
            name = ft.metadata.name
            cat.types[name] = ft
            cat.ttl[name] = parse_duration(ft.spec.ttl)
            for c in ft.spec.node_conditions:
                cat.by_condition.setdefault((c.type, c.status), []).append(Signal(name, c.component))
            for ev in ft.spec.node_events:
                cat.by_event.setdefault(ev.reason, []).append((ev.source, Signal(name, ev.component)))
        return cat

    def condition_types(self) -> set[str]:
        return {t for t, _s in self.by_condition}

    def signals_for_event(self, reason: str, source: str) -> list[Signal]:
        return [sig for src, sig in self.by_event.get(reason, ()) if not src or src == source]
