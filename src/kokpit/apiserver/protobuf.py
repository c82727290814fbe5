"""Decoding of Kubernetes protobuf request bodies for the few kinds kubectl's generators send that way.

kubectl ≥ 1.33 builds `kubectl create namespace|configmap|secret|serviceaccount|deployment|service|role|
clusterrole|rolebinding|clusterrolebinding|token` objects (and `kubectl auth can-i`/`whoami` reviews) with client-go's
typed clients, which send `application/vnd.kubernetes.protobuf` bodies and do not fall back to JSON on a
415. Rather than carry the whole generated proto schema of Kubernetes, this module knows the field numbers
of exactly those messages (they are frozen API: field numbers never change) and turns them into the JSON
objects the rest of the server handles. Any other kind gets a 415 that says to use `kubectl apply -f`.
"""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

from kokpit.apiserver import errors

__all__ = ["MAGIC", "decode"]

MAGIC = b"k8s\x00"

# Field tables: number -> (json name, type). Types: "s" string, "b" bytes (base64 in JSON), "i" varint
# integer, "?" bool, "ss" map<string,string> entry, "sb" map<string,bytes> entry, "[s]" repeated string,
# "[M]" repeated message M, or a message name.
_Table = dict[int, tuple[str, str]]
_MESSAGES: dict[str, _Table] = {
    "TypeMeta": {1: ("apiVersion", "s"), 2: ("kind", "s")},
    "Unknown": {1: ("typeMeta", "TypeMeta"), 2: ("raw", "b"), 3: ("contentEncoding", "s"),
                4: ("contentType", "s")},
    "Time": {1: ("seconds", "i"), 2: ("nanos", "i")},
    "ObjectMeta": {1: ("name", "s"), 2: ("generateName", "s"), 3: ("namespace", "s"), 4: ("selfLink", "s"),
                   5: ("uid", "s"), 6: ("resourceVersion", "s"), 7: ("generation", "i"),
                   8: ("creationTimestamp", "Time"), 9: ("deletionTimestamp", "Time"),
                   10: ("deletionGracePeriodSeconds", "i"), 11: ("labels", "ss"), 12: ("annotations", "ss"),
                   13: ("ownerReferences", "[OwnerReference]"), 14: ("finalizers", "[s]")},
    "OwnerReference": {1: ("kind", "s"), 3: ("name", "s"), 4: ("uid", "s"), 5: ("apiVersion", "s"),
                       6: ("controller", "?"), 7: ("blockOwnerDeletion", "?")},
    "ObjectReference": {1: ("kind", "s"), 2: ("namespace", "s"), 3: ("name", "s"), 4: ("uid", "s"),
                        5: ("apiVersion", "s"), 6: ("resourceVersion", "s"), 7: ("fieldPath", "s")},
    "LocalObjectReference": {1: ("name", "s")},
    "ConfigMap": {1: ("metadata", "ObjectMeta"), 2: ("data", "ss"), 3: ("binaryData", "sb"),
                  4: ("immutable", "?")},
    "Secret": {1: ("metadata", "ObjectMeta"), 2: ("data", "sb"), 3: ("type", "s"), 4: ("stringData", "ss"),
               5: ("immutable", "?")},
    "Namespace": {1: ("metadata", "ObjectMeta"), 2: ("spec", "NamespaceSpec"), 3: ("status", "NamespaceStatus")},
    "NamespaceSpec": {1: ("finalizers", "[s]")},
    "NamespaceStatus": {1: ("phase", "s")},
    "ServiceAccount": {1: ("metadata", "ObjectMeta"), 2: ("secrets", "[ObjectReference]"),
                       3: ("imagePullSecrets", "[LocalObjectReference]"),
                       4: ("automountServiceAccountToken", "?")},
    "Preconditions": {1: ("uid", "s"), 2: ("resourceVersion", "s")},
    "DeleteOptions": {1: ("gracePeriodSeconds", "i"), 2: ("preconditions", "Preconditions"),
                      3: ("orphanDependents", "?"), 4: ("propagationPolicy", "s"), 5: ("dryRun", "[s]")},
    "Eviction": {1: ("metadata", "ObjectMeta"), 2: ("deleteOptions", "DeleteOptions")},
    # kubectl create deployment
    "Deployment": {1: ("metadata", "ObjectMeta"), 2: ("spec", "DeploymentSpec"), 3: ("status", "Ignored")},
    "DeploymentSpec": {1: ("replicas", "i"), 2: ("selector", "LabelSelector"), 3: ("template", "PodTemplateSpec"),
                       4: ("strategy", "DeploymentStrategy"), 5: ("minReadySeconds", "i"),
                       6: ("revisionHistoryLimit", "i"), 7: ("paused", "?"), 9: ("progressDeadlineSeconds", "i")},
    "DeploymentStrategy": {1: ("type", "s"), 2: ("rollingUpdate", "RollingUpdateDeployment")},
    "RollingUpdateDeployment": {1: ("maxUnavailable", "ios"), 2: ("maxSurge", "ios")},
    "LabelSelector": {1: ("matchLabels", "ss"), 2: ("matchExpressions", "[LabelSelectorRequirement]")},
    "LabelSelectorRequirement": {1: ("key", "s"), 2: ("operator", "s"), 3: ("values", "[s]")},
    "PodTemplateSpec": {1: ("metadata", "ObjectMeta"), 2: ("spec", "PodSpec")},
    "PodSpec": {2: ("containers", "[Container]"), 3: ("restartPolicy", "s"),
                4: ("terminationGracePeriodSeconds", "i"), 5: ("activeDeadlineSeconds", "i"), 6: ("dnsPolicy", "s"),
                7: ("nodeSelector", "ss"), 8: ("serviceAccountName", "s"), 9: ("serviceAccount", "s"),
                10: ("nodeName", "s"), 11: ("hostNetwork", "?"), 12: ("hostPID", "?"), 13: ("hostIPC", "?"),
                16: ("hostname", "s"), 17: ("subdomain", "s"), 19: ("schedulerName", "s"),
                20: ("initContainers", "[Container]"), 24: ("priorityClassName", "s")},
    "Container": {1: ("name", "s"), 2: ("image", "s"), 3: ("command", "[s]"), 4: ("args", "[s]"),
                  5: ("workingDir", "s"), 6: ("ports", "[ContainerPort]"), 7: ("env", "[EnvVar]"),
                  8: ("resources", "ResourceRequirements"), 13: ("terminationMessagePath", "s"),
                  14: ("imagePullPolicy", "s"), 16: ("stdin", "?"), 17: ("stdinOnce", "?"), 18: ("tty", "?"),
                  20: ("terminationMessagePolicy", "s")},
    "ContainerPort": {1: ("name", "s"), 2: ("hostPort", "i"), 3: ("containerPort", "i"), 4: ("protocol", "s"),
                      5: ("hostIP", "s")},
    "EnvVar": {1: ("name", "s"), 2: ("value", "s")},
    "ResourceRequirements": {1: ("limits", "sq"), 2: ("requests", "sq")},
    # kubectl create service clusterip|nodeport|loadbalancer|externalname
    "Service": {1: ("metadata", "ObjectMeta"), 2: ("spec", "ServiceSpec"), 3: ("status", "Ignored")},
    "ServiceSpec": {1: ("ports", "[ServicePort]"), 2: ("selector", "ss"), 3: ("clusterIP", "s"), 4: ("type", "s"),
                    5: ("externalIPs", "[s]"), 7: ("sessionAffinity", "s"), 8: ("loadBalancerIP", "s"),
                    9: ("loadBalancerSourceRanges", "[s]"), 10: ("externalName", "s"),
                    11: ("externalTrafficPolicy", "s"), 12: ("healthCheckNodePort", "i"),
                    13: ("publishNotReadyAddresses", "?")},
    "ServicePort": {1: ("name", "s"), 2: ("protocol", "s"), 3: ("port", "i"), 4: ("targetPort", "ios"),
                    5: ("nodePort", "i")},
    "Ignored": {},
    # kubectl create poddisruptionbudget
    "PodDisruptionBudget": {1: ("metadata", "ObjectMeta"), 2: ("spec", "PodDisruptionBudgetSpec"),
                            3: ("status", "Ignored")},
    "PodDisruptionBudgetSpec": {1: ("minAvailable", "ios"), 2: ("selector", "LabelSelector"),
                                3: ("maxUnavailable", "ios"), 4: ("unhealthyPodEvictionPolicy", "s")},
    # kubectl auth can-i
    "SelfSubjectAccessReview": {1: ("metadata", "ObjectMeta"), 2: ("spec", "SelfSubjectAccessReviewSpec"),
                                3: ("status", "Ignored")},
    "SelfSubjectAccessReviewSpec": {1: ("resourceAttributes", "ResourceAttributes"),
                                    2: ("nonResourceAttributes", "NonResourceAttributes")},
    "ResourceAttributes": {1: ("namespace", "s"), 2: ("verb", "s"), 3: ("group", "s"), 4: ("version", "s"),
                           5: ("resource", "s"), 6: ("subresource", "s"), 7: ("name", "s")},
    "NonResourceAttributes": {1: ("path", "s"), 2: ("verb", "s")},
    # kubectl auth can-i --list, kubectl auth whoami, kubectl create token
    "SelfSubjectRulesReview": {1: ("metadata", "ObjectMeta"), 2: ("spec", "SelfSubjectRulesReviewSpec"),
                               3: ("status", "Ignored")},
    "SelfSubjectRulesReviewSpec": {1: ("namespace", "s")},
    "SelfSubjectReview": {1: ("metadata", "ObjectMeta"), 2: ("status", "Ignored")},
    "TokenRequest": {1: ("metadata", "ObjectMeta"), 2: ("spec", "TokenRequestSpec"), 3: ("status", "Ignored")},
    "TokenRequestSpec": {1: ("audiences", "[s]"), 3: ("boundObjectRef", "BoundObjectReference"),
                         4: ("expirationSeconds", "i")},
    "BoundObjectReference": {1: ("kind", "s"), 2: ("apiVersion", "s"), 3: ("name", "s"), 4: ("uid", "s")},
    # kubectl create role|clusterrole|rolebinding|clusterrolebinding
    "Role": {1: ("metadata", "ObjectMeta"), 2: ("rules", "[PolicyRule]")},
    "ClusterRole": {1: ("metadata", "ObjectMeta"), 2: ("rules", "[PolicyRule]"),
                    3: ("aggregationRule", "AggregationRule")},
    "PolicyRule": {1: ("verbs", "[s]"), 2: ("apiGroups", "[s]"), 3: ("resources", "[s]"),
                   4: ("resourceNames", "[s]"), 5: ("nonResourceURLs", "[s]")},
    "AggregationRule": {1: ("clusterRoleSelectors", "[LabelSelector]")},
    "RoleBinding": {1: ("metadata", "ObjectMeta"), 2: ("subjects", "[Subject]"), 3: ("roleRef", "RoleRef")},
    "ClusterRoleBinding": {1: ("metadata", "ObjectMeta"), 2: ("subjects", "[Subject]"), 3: ("roleRef", "RoleRef")},
    "Subject": {1: ("kind", "s"), 2: ("apiGroup", "s"), 3: ("name", "s"), 4: ("namespace", "s")},
    "RoleRef": {1: ("apiGroup", "s"), 2: ("kind", "s"), 3: ("name", "s")},
    "IntOrString": {1: ("type", "i"), 2: ("intVal", "i"), 3: ("strVal", "s")},
    "Quantity": {1: ("string", "s")},
}
_KINDS = {("v1", "ConfigMap"), ("v1", "Secret"), ("v1", "Namespace"), ("v1", "ServiceAccount"),
          ("policy/v1", "Eviction"), ("apps/v1", "Deployment"), ("v1", "Service"),
          ("authorization.k8s.io/v1", "SelfSubjectAccessReview"), ("policy/v1", "PodDisruptionBudget"),
          ("authorization.k8s.io/v1", "SelfSubjectRulesReview"), ("authentication.k8s.io/v1", "SelfSubjectReview"),
          ("authentication.k8s.io/v1", "TokenRequest"),
          *(("rbac.authorization.k8s.io/v1", k) for k in ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"))}


class _Malformed(Exception):
    pass


class _Unsupported(Exception):
    pass


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise _Malformed("truncated varint")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def _fields(buf: bytes) -> list[tuple[int, int, Any]]:
    """(field number, wire type, value) triples; value is an int or bytes."""
    out: list[tuple[int, int, Any]] = []
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _varint(buf, i)
            out.append((num, wt, v))
        elif wt == 2:
            n, i = _varint(buf, i)
            if i + n > len(buf):
                raise _Malformed("truncated field")
            out.append((num, wt, buf[i:i + n]))
            i += n
        elif wt == 1:
            out.append((num, wt, buf[i:i + 8]))
            i += 8
        elif wt == 5:
            out.append((num, wt, buf[i:i + 4]))
            i += 4
        else:
            raise _Malformed(f"unsupported wire type {wt}")
    return out


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _message(buf: bytes, name: str) -> dict[str, Any]:
    table = _MESSAGES[name]
    out: dict[str, Any] = {}
    for num, _wt, raw in _fields(buf):
        spec = table.get(num)
        if spec is None:
            if raw and name != "Ignored":
                # a set field this decoder does not know: refuse rather than silently lose it
                raise _Unsupported(f"{name} field {num}")
            continue
        key, typ = spec
        if typ == "s":
            if raw:
                out[key] = raw.decode("utf-8")
        elif typ == "b":
            out[key] = raw
        elif typ == "i":
            if raw:
                out[key] = _signed(raw)
        elif typ == "?":
            if raw:
                out[key] = True
        elif typ == "ios":
            v = _message(raw, "IntOrString")
            out[key] = v.get("strVal", "") if v.get("type") == 1 else v.get("intVal", 0)
        elif typ == "sq":
            entry = {n: v for n, _w, v in _fields(raw)}
            out.setdefault(key, {})[entry.get(1, b"").decode("utf-8")] = \
                _message(entry.get(2, b""), "Quantity").get("string", "")
        elif typ in ("ss", "sb"):
            entry = {n: v for n, _w, v in _fields(raw)}
            k = entry.get(1, b"").decode("utf-8")
            v = entry.get(2, b"")
            out.setdefault(key, {})[k] = base64.b64encode(v).decode() if typ == "sb" else v.decode("utf-8")
        elif typ.startswith("["):
            inner = typ[1:-1]
            out.setdefault(key, []).append(raw.decode("utf-8") if inner == "s" else _message(raw, inner))
        elif typ == "Time":
            t = _message(raw, "Time")
            if t.get("seconds"):
                out[key] = dt.datetime.fromtimestamp(t["seconds"], dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        else:
            sub = _message(raw, typ)
            if sub:
                out[key] = sub
    return out


def _unsupported(what: str) -> errors.APIError:
    kinds = ", ".join(sorted(k for _v, k in _KINDS))
    return errors.APIError(415, "UnsupportedMediaType",
                           f"protobuf request bodies are decoded only for {kinds}, not for {what}; send JSON or "
                           f"YAML instead (for example `kubectl create -f` or `kubectl apply -f`)")


def decode(body: bytes) -> dict[str, Any]:
    """A protobuf-encoded Kubernetes object as the equivalent JSON object, or a 4xx APIError."""
    if not body.startswith(MAGIC):
        raise errors.bad_request("protobuf body does not start with the Kubernetes magic prefix 'k8s\\x00'")
    api_version = kind = ""
    try:
        unknown = _message(body[len(MAGIC):], "Unknown")
        tm = unknown.get("typeMeta") or {}
        api_version, kind = tm.get("apiVersion", ""), tm.get("kind", "")
        if (api_version, kind) not in _KINDS:
            raise _unsupported(f"{kind or 'this kind'} ({api_version or '?'})")
        if unknown.get("contentEncoding"):
            raise errors.unsupported_media_type(f"protobuf with contentEncoding {unknown['contentEncoding']}")
        obj = _message(unknown.get("raw", b""), kind)
    except _Unsupported as e:
        raise _unsupported(f"{kind} ({api_version}) with {e}") from None
    except _Malformed as e:
        raise errors.bad_request(f"the protobuf body is malformed: {e}") from None
    except (UnicodeDecodeError, KeyError) as e:
        raise errors.bad_request(f"the protobuf body is malformed: {e}") from None
    return {"apiVersion": api_version, "kind": kind, **obj}
