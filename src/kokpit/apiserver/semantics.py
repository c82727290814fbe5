"""Hand-written validation of built-in kinds beyond their schemas — the checks kube-apiserver's own
validation makes that clients rely on (a negative replica count is an error, not a value to store).

Only rules a user can trip by hand are here; each names the field and says what is allowed, in kube's words.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from kokpit.apiserver.errors import APIError, Cause
from kokpit.apiserver.selectors import label_selector_from_dict

__all__ = ["HIGHEST_USER_PRIORITY", "HOOKS", "SYSTEM_PRIORITY_CLASSES"]

Obj = dict[str, Any]


def _dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _invalid(path: str, value: Any, detail: str) -> Cause:
    shown = f'"{value}"' if isinstance(value, str) else (
        "map[string]string{" + ", ".join(f'"{k}":"{v}"' for k, v in value.items()) + "}"
        if isinstance(value, dict) else value)
    return Cause(path, f"Invalid value: {shown}: {detail}", "FieldValueInvalid")


def _non_negative(value: Any, path: str, out: list[Cause]) -> None:
    if isinstance(value, int) and not isinstance(value, bool) and value < 0:
        out.append(_invalid(path, value, "must be greater than or equal to 0"))


def _port(path: str, value: Any, out: list[Cause]) -> None:
    if value is None or value == 0:  # an int32 in Go: absent and null decode as 0, which kube calls missing
        out.append(Cause(path, "Required value", "FieldValueRequired"))
    elif isinstance(value, int) and not isinstance(value, bool) and not 1 <= value <= 65535:
        out.append(_invalid(path, value, "must be between 1 and 65535, inclusive"))


def _pod_spec(spec: Any, path: str, out: list[Cause]) -> None:
    if not isinstance(spec, dict):
        return
    for field in ("containers", "initContainers"):
        for i, c in enumerate(spec.get(field) or []):
            if not isinstance(c, dict):
                continue
            for j, p in enumerate(c.get("ports") or []):
                if isinstance(p, dict):
                    _port(f"{path}.{field}[{i}].ports[{j}].containerPort", p.get("containerPort"), out)
    _non_negative(spec.get("terminationGracePeriodSeconds"), f"{path}.terminationGracePeriodSeconds", out)


def _pod(obj: Obj, old: Obj | None) -> list[Cause]:
    out: list[Cause] = []
    spec = obj.get("spec")
    _pod_spec(spec, "spec", out)
    ephemeral = _dict(spec).get("ephemeralContainers")
    if old is None and ephemeral:
        # kube adds ephemeral containers only through the ephemeralcontainers subresource of a running Pod
        out.append(Cause("spec.ephemeralContainers", "Forbidden: cannot be set on create", "FieldValueForbidden"))
    for i, c in enumerate(ephemeral if isinstance(ephemeral, list) else []):
        if isinstance(c, dict) and c.get("ports"):
            out.append(Cause(f"spec.ephemeralContainers[{i}].ports",
                             "Forbidden: cannot be set for an Ephemeral Container", "FieldValueForbidden"))
    return out


def _workload(obj: Obj, old: Obj | None) -> list[Cause]:
    out: list[Cause] = []
    spec = _dict(obj.get("spec"))
    _non_negative(spec.get("replicas"), "spec.replicas", out)
    template = _dict(spec.get("template"))
    _pod_spec(template.get("spec"), "spec.template.spec", out)
    selector = spec.get("selector")
    labels = _dict(template.get("metadata")).get("labels") or {}
    if selector is None and obj.get("apiVersion", "apps/v1") == "apps/v1":
        out.append(Cause("spec.selector", "Required value", "FieldValueRequired"))
    elif isinstance(selector, dict) and isinstance(labels, dict):
        try:
            compiled = label_selector_from_dict(selector)
        except APIError as e:
            out.append(Cause("spec.selector", f"Invalid value: {e.message}", "FieldValueInvalid"))
            return out
        if compiled.empty:
            kind = str(obj.get("kind") or "object").lower()
            out.append(Cause("spec.selector", f"Invalid value: {_show_selector(selector)}: empty selector is "
                             f"invalid for {kind}", "FieldValueInvalid"))
        elif not compiled.matches({str(k): str(v) for k, v in labels.items()}):
            out.append(_invalid("spec.template.metadata.labels", labels,
                                "`selector` does not match template `labels`"))
    return out


def _show_selector(selector: Obj) -> str:
    return "v1.LabelSelector{MatchLabels:" + str(selector.get("matchLabels") or {}) + "}"


def _job(obj: Obj, old: Obj | None) -> list[Cause]:
    out = _workload({**obj, "apiVersion": "batch/v1"}, old)
    spec = _dict(obj.get("spec"))
    for f in ("parallelism", "completions", "backoffLimit", "activeDeadlineSeconds"):
        _non_negative(spec.get(f), f"spec.{f}", out)
    _job_completion_mode(spec, _dict(_dict((old or {}).get("spec"))) if old is not None else None, out)
    policy = _dict(_dict(spec.get("template")).get("spec")).get("restartPolicy")
    if policy not in ("OnFailure", "Never"):
        out.append(Cause("spec.template.spec.restartPolicy",
                         f'Unsupported value: "{policy}": supported values: "OnFailure", "Never"',
                         "FieldValueNotSupported"))
    return out


def _job_completion_mode(spec: Obj, old: Obj | None, out: list[Cause]) -> None:
    """Indexed Jobs (kube's ValidateJobSpec): the mode is one of two, needs completions, and the per-index
    failure fields need it; the mode and backoffLimitPerIndex are immutable."""
    mode = spec.get("completionMode")
    indexed = mode == "Indexed"
    if mode is not None and mode not in ("NonIndexed", "Indexed"):
        out.append(Cause("spec.completionMode", f'Unsupported value: "{mode}": supported values: "NonIndexed", '
                         '"Indexed"', "FieldValueNotSupported"))
    if indexed and spec.get("completions") is None:
        out.append(Cause("spec.completions", "Required value: when completion mode is Indexed", "FieldValueRequired"))
    for f in ("backoffLimitPerIndex", "maxFailedIndexes"):
        _non_negative(spec.get(f), f"spec.{f}", out)
        if spec.get(f) is not None and not indexed:
            out.append(_invalid(f"spec.{f}", spec[f], "requires indexed completion mode"))
    mfi, completions = spec.get("maxFailedIndexes"), spec.get("completions")
    if indexed and isinstance(mfi, int) and isinstance(completions, int) and mfi > completions:
        out.append(_invalid("spec.maxFailedIndexes", mfi, "must be less than or equal to completions"))
    if old is not None:
        if (mode or "NonIndexed") != (old.get("completionMode") or "NonIndexed"):
            out.append(_invalid("spec.completionMode", mode, "field is immutable"))
        if spec.get("backoffLimitPerIndex") != old.get("backoffLimitPerIndex"):
            out.append(_invalid("spec.backoffLimitPerIndex", spec.get("backoffLimitPerIndex"), "field is immutable"))


def _pdb(obj: Obj, old: Obj | None) -> list[Cause]:
    spec = _dict(obj.get("spec"))
    if spec.get("minAvailable") is not None and spec.get("maxUnavailable") is not None:
        return [Cause("spec", "Invalid value: minAvailable and maxUnavailable cannot be both set",
                      "FieldValueInvalid")]
    return []


def _service(obj: Obj, old: Obj | None) -> list[Cause]:
    out: list[Cause] = []
    spec = _dict(obj.get("spec"))
    for i, p in enumerate(spec.get("ports") or []):
        if isinstance(p, dict):
            _port(f"spec.ports[{i}].port", p.get("port"), out)
    return out


_CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_CONFIG_KEY_MSG = ("a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  "
                   "or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')")


def _config_keys(obj: Obj, old: Obj | None) -> list[Cause]:
    """Secret and ConfigMap keys (kube's IsConfigMapKey: they become file names in volumes); keys the stored
    object already had are left alone (ratcheting)."""
    out: list[Cause] = []
    for field in ("data", "binaryData"):
        had = _dict((old or {}).get(field))
        for k in _dict(obj.get(field)):
            if k in had:
                continue
            if len(k) > 253:
                out.append(_invalid(f"{field}[{k}]", k, "must be no more than 253 characters"))
            elif not _CONFIG_KEY.match(k):
                out.append(_invalid(f"{field}[{k}]", k, _CONFIG_KEY_MSG))
            elif k in (".", ".."):
                out.append(_invalid(f"{field}[{k}]", k, f"must not be '{k}'"))
    return out


HIGHEST_USER_PRIORITY = 1_000_000_000
SYSTEM_PRIORITY_CLASSES = {
    "system-cluster-critical": (2_000_000_000, "Used for system critical pods that must run in the cluster, "
                                               "but can be moved to another node if necessary."),
    "system-node-critical": (2_000_001_000, "Used for system critical pods that must not be moved from their "
                                            "current node."),
}
_POLICIES = ("PreemptLowerPriority", "Never")


def _priority_class(pc: Obj, old: Obj | None) -> list[Cause]:
    """``value`` up to one billion (system classes excepted), ``system-`` names reserved, the value and
    preemption policy immutable."""
    out: list[Cause] = []
    name = str((pc.get("metadata") or {}).get("name") or "")
    value = pc.get("value")
    system = SYSTEM_PRIORITY_CLASSES.get(name)
    if system is not None:
        if value != system[0]:
            out.append(Cause("value", f"Invalid value: {value}: value of system priority class {name} must be "
                                      f"{system[0]}", "FieldValueInvalid"))
    elif name.startswith("system-"):
        out.append(Cause("metadata.name", f'Invalid value: "{name}": priority class names with \'system-\' '
                                          "prefix are reserved", "FieldValueInvalid"))
    elif isinstance(value, int) and value > HIGHEST_USER_PRIORITY:
        out.append(Cause("value", f"Invalid value: {value}: maximum allowed value of a user defined priority is "
                                  f"{HIGHEST_USER_PRIORITY}", "FieldValueInvalid"))
    policy = pc.get("preemptionPolicy")
    if policy is not None and policy not in _POLICIES:
        out.append(Cause("preemptionPolicy", f'Unsupported value: "{policy}": supported values: '
                                             '"Never", "PreemptLowerPriority"', "FieldValueNotSupported"))
    if old is not None:
        for f in ("value", "preemptionPolicy"):
            if pc.get(f) != old.get(f):
                out.append(Cause(f, f"Invalid value: {pc.get(f)}: field is immutable", "FieldValueInvalid"))
    return out


HOOKS: dict[tuple[str, str], Callable[[Obj, Obj | None], list[Cause]]] = {
    ("", "Pod"): _pod,
    ("apps", "Deployment"): _workload,
    ("apps", "StatefulSet"): _workload,
    ("apps", "DaemonSet"): _workload,
    ("apps", "ReplicaSet"): _workload,
    ("batch", "Job"): _job,
    ("policy", "PodDisruptionBudget"): _pdb,
    ("", "Service"): _service,
    ("", "Secret"): _config_keys,
    ("", "ConfigMap"): _config_keys,
    ("scheduling.k8s.io", "PriorityClass"): _priority_class,
}
