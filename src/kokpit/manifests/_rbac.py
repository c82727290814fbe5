"""What each kokpit component may do in the meta cluster, and why: the one table `kokpit manifests` renders
into ClusterRoles/Roles and `kokpit up` binds its own processes to, so embedded mode runs every component
with exactly the permissions a real install gives it (a missing permission fails a test here).

Each rule names its reason next to it.  Components talk only to the API; nothing here is wider than what
the component's code calls (`client.get/list/watch/create/patch/delete` on these kinds), and Secrets are
granted only to the component that makes business clusters' PKI.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["AGGREGATED", "COMPONENTS", "Component", "component", "rule"]

Obj = dict[str, Any]
KOKPIT = "kokpit.io"
_RBAC_GROUP = "rbac.authorization.k8s.io"
_RO = ("get", "list", "watch")


def rule(groups: tuple[str, ...], resources: tuple[str, ...], verbs: tuple[str, ...], why: str) -> Obj:
    """A PolicyRule plus the reason it exists (the reason is dropped when rendered)."""
    return {"apiGroups": list(groups), "resources": list(resources), "verbs": list(verbs), "why": why}


@dataclass(frozen=True)
class Component:
    """One kokpit process with its own ServiceAccount `kokpit-<name>` in kokpit's namespace."""

    name: str
    summary: str
    cluster_rules: tuple[Obj, ...]
    # rules in kokpit's own namespace only (leader election)
    namespace_rules: tuple[Obj, ...] = ()
    # rules in other fixed namespaces: (namespace, rules)
    other_namespace_rules: tuple[tuple[str, tuple[Obj, ...]], ...] = ()
    # rendered as a Deployment by `kokpit manifests` (the local kubelet only exists in embedded mode)
    deployed: bool = True
    args: tuple[str, ...] = field(default_factory=tuple)
    replicas: int = 2
    # a kubelet: authenticates as system:node:<node> in system:nodes (not a ServiceAccount), so kube's Node
    # authorizer and NodeRestriction decide what it does; its rules are only what they do not grant
    node: str = ""

    @property
    def service_account(self) -> str:
        return f"kokpit-{self.name}"

    @property
    def node_user(self) -> str:
        """A kubelet's user name (kube's system:node:<name>); "" for a ServiceAccount component."""
        return f"system:node:{self.node}" if self.node else ""


_LEADER_ELECTION = rule(("coordination.k8s.io",), ("leases",), ("get", "create", "update"),
                        "leader election: one replica reconciles, the others stand by on a Lease in kokpit's "
                        "namespace")
_EVENTS = rule(("",), ("events",), ("create", "patch"), "Events for people (aggregated: a repeat is a patch)")
# what kube's system:auth-delegator grants: /metrics is served to whom the API server says may get it
_METRICS_AUTH = (
    rule(("authentication.k8s.io",), ("tokenreviews",), ("create",), "/metrics: asks the API server who a "
         "scraper's bearer token belongs to (TokenReview), as controller-runtime's secure metrics do"),
    rule(("authorization.k8s.io",), ("subjectaccessreviews",), ("create",), "/metrics: asks whether that user may "
         "get the non-resource URL /metrics (kokpit:metrics-reader grants it)"),
)

COMPONENTS: tuple[Component, ...] = (
    Component(
        "cluster-operator",
        "Creates, upgrades, repairs and deletes business clusters: their control-plane Pods, PKI Secrets and "
        "Services in each Cluster's namespace.",
        cluster_rules=(
            rule((KOKPIT,), ("clusters",), (*_RO, "patch", "update"), "watches Clusters; adds and removes its "
                 "finalizer"),
            rule((KOKPIT,), ("clusters/status",), ("get", "patch", "update"), "reports each Cluster's state"),
            rule((KOKPIT,), ("clusterpackageversions",), (*_RO, "patch", "update"), "reads the release a Cluster "
                 "points at; keeps a release in use from being deleted (its protection finalizer)"),
            rule((KOKPIT,), ("clusterpackageversions/status",), ("get", "patch", "update"), "records which "
                 "Clusters use a release"),
            rule(("",), ("pods",), (*_RO, "create", "delete", "patch"), "runs control-plane Pods, replaces them "
                 "one at a time, isolates broken ones"),
            rule(("",), ("secrets",), (*_RO, "create", "delete", "patch"), "keeps each business cluster's PKI "
                 "and admin kubeconfig"),
            rule(("",), ("services",), (*_RO, "create", "delete", "patch"), "the endpoint of each business API "
                 "server"),
            rule(("",), ("nodes",), _RO, "finds the node holding a cluster's data to clean it up; places the "
                 "etcd members of an Upstream control plane on Ready nodes, spread"),
            rule((KOKPIT,), ("permits",), (*_RO, "create", "patch", "delete"), "asks the risk center before a "
                 "release or a repair replaces a control-plane Pod (issue 14); holds what it grants each machine "
                 "operator's Role, which RBAC requires of whoever writes that Role"),
            rule((KOKPIT,), ("permits/status",), ("patch",), "records checks and releases its permits with the "
                 "outcome"),
            rule(("",), ("serviceaccounts",), (*_RO, "create", "patch", "delete"), "one ServiceAccount per "
                 "business cluster: its machine operator's least-privilege identity in the meta cluster"),
            rule((_RBAC_GROUP,), ("roles", "rolebindings"), (*_RO, "create", "patch", "delete"), "that identity's "
                 "Role (Permits only) and its binding, in the Cluster's namespace"),
            _EVENTS,
            *_METRICS_AUTH,
        ),
        namespace_rules=(_LEADER_ELECTION,),
        other_namespace_rules=(("kube-system", (
            rule(("",), ("configmaps",), (*_RO, "create", "delete"), "one record per host port it handed out "
                 "(kube-system, as Kubernetes keeps its own allocations), so a restart never hands one out twice"),
        )),),
        args=("cluster-operator", "--leader-elect", "--ask-risk-center", "--metrics-port=8080"),
    ),
    Component(
        "risk-center",
        "Decides every risky operation's Permit against the RiskPolicies (budgets, gates, breakers) from state "
        "kept in the API; probes each business cluster with a small Pod for the pod-creation gate.",
        cluster_rules=(
            rule((KOKPIT,), ("permits",), (*_RO, "patch", "delete"), "watches every Permit; deletes those "
                 "finished more than an hour ago (the ledger keeps what windows and breakers need)"),
            rule((KOKPIT,), ("permits/status",), ("patch",), "answers: Granted, Queued, Denied, Released, Expired"),
            rule((KOKPIT,), ("riskpolicies",), (*_RO, "create"), "reads the policies; --default-policies creates "
                 "the shipped ones that are missing"),
            rule((KOKPIT,), ("riskpolicies/status",), ("patch",), "publishes budgets, gates and breakers"),
            rule((KOKPIT,), ("riskledgers",), ("get", "create", "update"), "commits every grant to the ledger "
                 "with optimistic concurrency before any actor hears of it"),
            rule((KOKPIT,), ("clusters",), _RO, "the scope of policies: Clusters by label, their readiness"),
            rule(("",), ("secrets",), ("get",), "each business cluster's kubeconfig Secret: observes its nodes "
                 "and runs the synthetic pod prober there"),
            _EVENTS,
            *_METRICS_AUTH,
        ),
        namespace_rules=(_LEADER_ELECTION,),
        args=("risk-center", "--leader-elect", "--default-policies", "--metrics-port=8080"),
    ),
    Component(
        "rollout-controller",
        "Canary rollouts: releases Clusters to a ClusterPackageVersion and changes business clusters' Machines "
        "batch by batch, through risk-center Permits, with automatic rollback.",
        cluster_rules=(
            rule((KOKPIT,), ("rollouts",), _RO, "watches Rollouts"),
            rule((KOKPIT,), ("rollouts/status",), ("get", "patch", "update"), "keeps each Rollout's progress"),
            rule((KOKPIT,), ("rollouttargetsets",), ("get", "create", "update", "delete"), "keeps each target's "
                 "record (previous version, state, permit) in the Rollout's RolloutTargetSets, by name: no list"),
            rule((KOKPIT,), ("clusters",), (*_RO, "patch"), "selects target Clusters; sets spec.packageVersion"),
            rule((KOKPIT,), ("clusterpackageversions", "riskpolicies"), _RO, "checks the release exists; reads "
                 "the risk center's gate readings for analysis steps"),
            rule((KOKPIT,), ("permits",), (*_RO, "create", "delete", "patch"), "asks for, renews and replaces "
                 "the Permit of each batch"),
            rule((KOKPIT,), ("permits/status",), ("patch",), "releases a Permit with the batch's outcome"),
            rule(("",), ("secrets",), ("get",), "reads a business cluster's <name>-kubeconfig Secret to reach "
                 "its Machines (by name only: no list)"),
            _EVENTS,
            *_METRICS_AUTH,
        ),
        namespace_rules=(_LEADER_ELECTION,),
        args=("rollout-controller", "--leader-elect", "--metrics-port=8080"),
    ),
    Component(
        "local-kubelet",
        "Embedded mode only: the kubelet of Node `local`, running kokpit Pods as processes (a real meta cluster "
        "has real kubelets).  It authenticates as system:node:local in system:nodes, so kube's Node authorizer "
        "and NodeRestriction decide what it does — its Node and Lease, the Pods bound to it, the Secrets, "
        "ConfigMaps and ServiceAccount tokens those Pods use.  RBAC adds only what no real kubelet does.",
        cluster_rules=(
            rule(("",), ("pods",), ("list", "watch"), "watches pending Pods (spec.nodeName unset) to bind them: "
                 "the Node authorizer lets a node list only the Pods already bound to it"),
            rule(("",), ("pods/binding",), ("create",), "binds pending Pods to itself, since the embedded meta "
                 "cluster runs no scheduler (NodeRestriction refuses a binding to any other node)"),
        ),
        deployed=False,
        node="local",
    ),
    Component(
        "portal",
        "The web portal: shows the fleet from its own watches and records the change process; every change a "
        "person makes is sent with that person's own token, so their RBAC decides.",
        cluster_rules=(
            rule((KOKPIT,), ("clusters", "clusterpackageversions", "riskpolicies", "permits", "changerequests",
                             "auditrecords", "rollouts"), _RO, "the pages: Clusters, releases, risk, change "
                 "requests, audit, rollouts (one watch per kind, not one list per page view)"),
            rule((KOKPIT,), ("changerequests/status",), ("get", "patch", "update"), "records the author, plan, "
                 "approvals, history and outcome of a change (users cannot write them)"),
            rule((KOKPIT,), ("auditrecords",), ("create",), "the audit log: one record per action of a person"),
            rule(("",), ("secrets",), ("get",), "each business cluster's <cluster>-kubeconfig Secret, to watch "
                 "its Machines and Nodes and to apply approved changes there"),
            rule(("",), ("events",), ("create", "patch"), "Events on change requests for people"),
            *_METRICS_AUTH,
        ),
        namespace_rules=(rule(("",), ("configmaps",), ("get",), "the change policy (kokpit-change-policy: how many "
                                                                 "approvals each operation needs)"),
                         _LEADER_ELECTION),
        deployed=False,
    ),
    Component(
        "up",
        "Embedded mode only: `kokpit up` itself once it has bootstrapped the fleet (CRDs, releases, these roles, "
        "the first Clusters: the user's admin does that, as `kubectl apply` would).  From then on it only "
        "watches: the fleet view, each business cluster reached through its kubeconfig Secret to create its "
        "Machines, and a Warning Event when one of its processes exits.",
        cluster_rules=(
            rule((KOKPIT,), ("clusters",), _RO, "the fleet view: each Cluster's readiness and endpoint"),
            rule(("",), ("secrets",), ("get",), "each business cluster's <cluster>-kubeconfig Secret, to create "
                 "its MachinePackageVersions and Machines and to count its nodes (by name only: no list)"),
            rule(("",), ("events",), ("list", "create", "patch"), "shows the fleet's recent Events; records a "
                 "Warning on Node local when a process it runs exits (a repeat is a patch)"),
        ),
        deployed=False,
    ),
    Component(
        "meta-controller-manager",
        "Embedded mode only: the Deployment, ReplicaSet and disruption-budget controllers of the meta cluster "
        "(kokpit's controller-manager), so `kubectl apply -k deploy/` makes operator Pods by itself (a real meta "
        "cluster has its own kube-controller-manager).",
        cluster_rules=(
            rule(("apps",), ("deployments",), (*_RO, "patch"), "rolls Deployments out: records the revision"),
            rule(("apps",), ("deployments/status",), ("patch",), "reports replicas and Available/Progressing"),
            rule(("apps",), ("replicasets",), (*_RO, "create", "patch", "delete"), "one ReplicaSet per template "
                 "revision, scaled by the rollout"),
            rule(("apps",), ("replicasets/status",), ("patch",), "reports its replicas"),
            rule(("apps",), ("statefulsets",), _RO, "desired replicas behind a percentage disruption budget"),
            rule(("",), ("pods",), (*_RO, "create", "patch", "delete"), "creates and deletes the Pods of each "
                 "ReplicaSet; adopts and releases them"),
            rule(("policy",), ("poddisruptionbudgets",), _RO, "the budgets whose status it keeps"),
            rule(("policy",), ("poddisruptionbudgets/status",), ("patch",), "disruptionsAllowed, which eviction "
                 "(kubectl drain) spends"),
            _EVENTS,
            *_METRICS_AUTH,
        ),
        other_namespace_rules=(("kube-system", (
            rule(("coordination.k8s.io",), ("leases",), ("get", "create", "update"), "leader election on the "
                 "kube-system/kube-controller-manager Lease, as kube-controller-manager does"),
        )),),
        deployed=False,
    ),
)

# kokpit's own kinds joined to kube's user-facing roles by aggregation (as Cluster API and others ship them)
AGGREGATED: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("view", "view", _RO),
    ("edit", "edit", ("create", "delete", "deletecollection", "patch", "update")),
)


def component(name: str) -> Component:
    for c in COMPONENTS:
        if c.name == name:
            return c
    raise KeyError(name)
