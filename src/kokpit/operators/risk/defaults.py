"""The policy set kokpit ships (``kokpit up`` installs it; ``kokpit risk-center --default-policies`` too).

Numbers a cautious platform team starts from; each is an ordinary RiskPolicy people can edit or delete:

| policy | operations | per cluster |
|---|---|---|
| kokpit-node-isolate | node-isolate, node-drain | maxUnavailable 10% (cordoned/NotReady nodes included) |
| kokpit-node-reinstall | node-reinstall, node-reboot, node-delete | 5 per hour, 2 at once |
| kokpit-component-upgrade | component-upgrade | maxConcurrent 10%; pod creation success >= 90% over 5m; breaker after 5 failures in 1h |
| kokpit-control-plane | control-plane-release, control-plane-repair | one cluster at a time (whole fleet); breaker after 3 failures in 1h |
| kokpit-cluster-delete | cluster-delete | 1 per hour (whole fleet) |
"""

from __future__ import annotations

from typing import Any

__all__ = ["DEFAULT_POLICIES", "default_policies"]

Obj = dict[str, Any]
_ALL = {"allClusters": True}
_FLEET = {"allClusters": True, "perCluster": False}

DEFAULT_POLICIES: list[tuple[str, Obj]] = [
    ("kokpit-node-isolate", {"operations": ["node-isolate", "node-drain"], "scope": _ALL,
                             "maxUnavailable": "10%"}),
    ("kokpit-node-reinstall", {"operations": ["node-reinstall", "node-reboot", "node-delete"], "scope": _ALL,
                               "maxPerWindow": {"count": 5, "window": "1h"}, "maxConcurrent": 2}),
    ("kokpit-component-upgrade", {"operations": ["component-upgrade"], "scope": _ALL, "maxConcurrent": "10%",
                                  "gates": [{"name": "pod-creation", "builtin": "podCreationSuccessRate",
                                             "comparison": ">=", "threshold": 0.9, "window": "5m"}],
                                  "failureBreaker": {"maxFailures": 5, "window": "1h"}}),
    ("kokpit-control-plane", {"operations": ["control-plane-release", "control-plane-repair"], "scope": _FLEET,
                              "maxConcurrent": 1, "failureBreaker": {"maxFailures": 3, "window": "1h"}}),
    ("kokpit-cluster-delete", {"operations": ["cluster-delete"], "scope": _FLEET,
                               "maxPerWindow": {"count": 1, "window": "1h"}}),
]


def default_policies() -> list[Obj]:
    return [{"apiVersion": "kokpit.io/v1alpha1", "kind": "RiskPolicy",
             "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "kokpit"}}, "spec": spec}
            for name, spec in DEFAULT_POLICIES]
