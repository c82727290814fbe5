"""The verbs of the Kubernetes REST API on top of the store: what kube-apiserver's generic registry does.

This is where Kubernetes semantics live — metadata ownership (uid, generation, creationTimestamp,
managedFields), the status subresource split, optimistic concurrency, finalizers and graceful deletion,
namespace admission, dry runs — so the HTTP layer only parses requests and writes responses, and the
in-server controllers (namespaces, garbage collection, CRDs) reuse the same paths as clients.
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from kokpit.apiserver import admission, errors, nulls, patch, schema
from kokpit.apiserver.errors import APIError, Cause
from kokpit.apiserver.registry import Registry
from kokpit.apiserver.resources import ResourceType
from kokpit.apiserver.storage.store import Entry, Store, split_key

__all__ = ["DeleteOptions", "Rest", "WriteOptions", "now_rfc3339"]

_GEN_CHARS = "bcdfghjklmnpqrstvwxz2456789"
_SERVER_META = ("uid", "resourceVersion", "creationTimestamp", "generation", "deletionTimestamp",
                "deletionGracePeriodSeconds", "selfLink")
# Kinds whose status a create resets (kube's PrepareForCreate); custom resources with a status
# subresource also drop status on create.
_RESET_STATUS_ON_CREATE = {("", "Pod"), ("apps", "Deployment"), ("apps", "StatefulSet"),
                           ("apps", "DaemonSet"), ("apps", "ReplicaSet"), ("batch", "Job"),
                           ("policy", "PodDisruptionBudget"), ("", "Service"),
                           ("apiextensions.k8s.io", "CustomResourceDefinition")}
FOREGROUND = "foregroundDeletion"
ORPHAN = "orphan"
NAMESPACE_FINALIZER = "kubernetes"
CRD_FINALIZER = "customresourcecleanup.apiextensions.k8s.io"


def now_rfc3339(clock: Callable[[], dt.datetime]) -> str:
    return clock().strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class WriteOptions:
    field_manager: str = ""
    default_manager: str = "unknown"
    applying: bool = False  # server-side apply already recorded managedFields
    field_validation: str = "Strict"
    dry_run: bool = False
    force: bool = False
    subresource: str = ""
    warnings: list[str] = field(default_factory=list)
    # False when the request body is JSON without a `null` token: then neither is the new object (stored ones
    # hold none), and the per-write null scan of a built-in is skipped (a Lease renewal's hot path)
    may_hold_null: bool = True


@dataclass
class DeleteOptions:
    propagation: str | None = None  # Background | Foreground | Orphan
    grace_period: int | None = None
    precondition_uid: str | None = None
    precondition_rv: str | None = None
    dry_run: bool = False


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    m = obj.get("metadata")
    if not isinstance(m, dict):
        m = obj["metadata"] = {}
    return m


_MISSING: Any = object()


def _private(mine: Any, stored: Any) -> Any:
    """`stored` (part of a stored object: never to be mutated) as a value the new object may own: `mine`
    (from the request's private copy) when it is equal, else a clone."""
    if mine is not _MISSING and type(mine) is type(stored) and mine == stored:
        return mine
    return patch.deep_copy(stored)


def _spec_part(obj: dict[str, Any], with_status: bool) -> dict[str, Any]:
    """Everything that bumps generation: all but metadata (and status, when it is a subresource)."""
    return {k: v for k, v in obj.items()
            if k not in ("metadata", "apiVersion", "kind") and not (with_status and k == "status")}


class Rest:
    """Create/get/list/update/patch/delete for every registered type. Callers pass already-decoded
    bodies; everything returned is a committed `Entry` (or a dict for dry runs)."""

    def __init__(self, store: Store, registry: Registry, *,
                 clock: Callable[[], dt.datetime] | None = None) -> None:
        self.store = store
        self.registry = registry
        self.clock = clock or (lambda: dt.datetime.now(dt.UTC))
        # hooks set by the server's controllers
        self.on_crd_change: Callable[[dict[str, Any]], None] | None = None
        # admission (rbac_admission.Admission): may mutate or refuse an object before validation; old=None on create
        self.admit: Callable[[ResourceType, dict[str, Any], dict[str, Any] | None], None] | None = None
        # admission of a delete (admission_policy.BuiltinPolicies.delete): may refuse, given the current object
        self.admit_delete: Callable[[ResourceType, dict[str, Any]], None] | None = None

    # ------------------------------------------------------------------ helpers
    def now(self) -> str:
        return now_rfc3339(self.clock)

    def to_view(self, rt: ResourceType, entry: Entry) -> dict[str, Any]:
        """A private copy of a stored object as `rt` serves it (apiVersion of the requested version)."""
        obj = entry.copy()
        return self.view_of(rt, obj)

    def _old_view(self, rt: ResourceType, entry: Entry) -> dict[str, Any]:
        """The stored object as the *old* side of a write: read-only.  When the stored form is what `rt`
        serves, that is the entry's own dict (no copy: at a thousand Lease renewals a second, copying it was
        a sixth of the server's CPU); every part of it that flows into the new object is cloned first
        (`_merge_for_subresource`), so the stored entry is never touched."""
        if rt.serves_stored_form:
            return entry.obj
        return self.to_view(rt, entry)

    def view_of(self, rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        if rt.from_storage is not None:
            obj = rt.from_storage(obj)
        elif rt.crd_name is not None:
            obj["apiVersion"] = rt.api_version
        return obj

    def raw_of(self, rt: ResourceType, entry: Entry) -> bytes:
        """Serialized form of an entry for `rt`; zero-copy when the stored form is what is served."""
        if rt.serves_stored_form:
            return entry.raw
        return orjson.dumps(self.to_view(rt, entry))

    def _to_storage(self, rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        if rt.to_storage is not None:
            return rt.to_storage(obj)
        if rt.crd_name is not None and rt.storage_version:
            obj["apiVersion"] = f"{rt.group}/{rt.storage_version}"
        return obj

    def _check_type(self, rt: ResourceType, obj: Any, fill_gvk: bool = False) -> dict[str, Any]:
        if not isinstance(obj, dict):
            raise errors.bad_request("the request body must be a JSON or YAML object")
        if fill_gvk:
            # kube's decoder takes a missing apiVersion/kind from the URL (the official client omits them)
            for k, v in (("apiVersion", rt.api_version), ("kind", rt.kind)):
                if obj.get(k) in (None, ""):
                    obj[k] = v
        av, kind = obj.get("apiVersion"), obj.get("kind")
        if av and av != rt.api_version:
            raise errors.bad_request(f"the API version in the data ({av}) does not match the expected API "
                                     f"version ({rt.api_version})")
        if kind and kind != rt.kind:
            raise errors.bad_request(f"the kind in the data ({kind}) does not match the expected kind "
                                     f"({rt.kind})")
        if not av or not kind:
            missing = "apiVersion" if not av else "kind"
            raise errors.bad_request(f"Object '{missing}' is missing in '{orjson.dumps(obj).decode()[:200]}'",
                                     [Cause(missing, "Required value", "FieldValueRequired")])
        meta = obj.get("metadata")
        if meta is not None and not isinstance(meta, dict):
            raise errors.invalid(rt.kind, None, [Cause("metadata", "must be an object",
                                                       "FieldValueTypeInvalid")], rt.group)
        return obj

    def _check_namespace(self, rt: ResourceType, namespace: str | None, obj: dict[str, Any]) -> None:
        meta = _meta(obj)
        if not rt.namespaced:
            meta.pop("namespace", None)
            return
        ns = meta.get("namespace")
        if ns and namespace and ns != namespace:
            raise errors.bad_request("the namespace of the provided object does not match the namespace "
                                     "sent on the request")
        if not namespace:
            raise errors.bad_request(f"{rt.plural} must be created in a namespace")
        meta["namespace"] = namespace

    def _admit_namespace(self, rt: ResourceType, namespace: str | None, name: str = "") -> None:
        if not rt.namespaced or namespace is None:
            return
        ns = self.store.get_latest(f"/core/namespaces/{namespace}")
        if ns is None:
            raise errors.not_found("namespaces", namespace)
        if ns.obj.get("metadata", {}).get("deletionTimestamp"):
            raise errors.APIError(403, "Forbidden",
                                  f'{rt.plural} "{name}" is forbidden: unable to create '
                                  f"new content in namespace {namespace} because it is being terminated",
                                  name=name or None, kind=rt.plural, group=rt.group)

    def _validate(self, rt: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None,
                  opts: WriteOptions) -> None:
        meta = _meta(obj)
        name = meta.get("name")
        causes: list[Cause] = list(schema.validate_object_meta(
            meta, namespaced=rt.namespaced,
            name_rule="dns1123label" if rt.kind == "Namespace"
            else "path" if rt.group == "rbac.authorization.k8s.io" else "dns1123subdomain"))
        sch = rt.schema
        if sch is not None:
            if rt.crd_name is not None:
                removed = schema.prune(obj, sch)
                if removed:
                    msgs = [f'unknown field "{p}"' for p in removed]
                    if opts.field_validation == "Strict":
                        causes.extend(Cause(p, m, "FieldValueUnknown") for p, m in zip(removed, msgs,
                                                                                       strict=True))
                    elif opts.field_validation == "Warn":
                        opts.warnings.extend(msgs)
                schema.apply_defaults(obj, sch)
                errs, warns = schema.validate(obj, sch, field_validation="Ignore", old=old)
            elif opts.field_validation == "Strict":
                errs, warns = schema.validate(obj, sch, field_validation="Strict", old=old)
            else:
                # kube's decoder drops unknown fields of built-in kinds under Warn and Ignore: never store them
                errs, warns = schema.validate(obj, sch, field_validation="Warn", old=old)
                if warns:
                    schema.prune(obj, sch)
                if opts.field_validation == "Ignore":
                    warns = []
            causes.extend(errs)
            opts.warnings.extend(warns)
        unknown = [c for c in causes if c.reason == "FieldValueUnknown"]
        if unknown:
            # kube rejects unknown fields while decoding, before validation: a 400, not a 422
            raise errors.bad_request("strict decoding error: " + ", ".join(
                f'unknown field "{c.field}"' for c in unknown), unknown)
        if rt.validate_hook is not None:
            causes.extend(rt.validate_hook(obj, old))
        if not causes and rt.references and not opts.subresource:
            causes = admission.check_references(rt, obj, old, lambda key: self.store.get(key) is not None)
        if causes:
            raise errors.invalid(rt.kind, name, causes, rt.group)

    def _default(self, rt: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None,
                 opts: WriteOptions) -> None:
        if rt.crd_name is None:  # Go decodes a null in a built-in as the field's zero (`"spec": null`: absent)
            if rt.schema is not None and opts.may_hold_null:
                nulls.normalize(obj, rt.schema)
            else:
                for k in ("spec", "status"):
                    if k in obj and obj[k] is None:
                        del obj[k]
        if rt.default_hook is None:
            return
        try:
            rt.default_hook(obj)
        except (AttributeError, TypeError, ValueError, KeyError, IndexError):
            # defaulting trusts the object's shape (a Pod whose spec is a list): validation says what is wrong
            self._validate(rt, obj, old, opts)
            raise

    def _manager(self, opts: WriteOptions) -> str:
        return opts.field_manager or opts.default_manager

    def _track_fields(self, rt: ResourceType, old: dict[str, Any] | None, new: dict[str, Any],
                      opts: WriteOptions) -> None:
        if opts.applying:
            return
        patch.update_managed_fields(old, new, self._manager(opts), "Update", rt.schema,
                                    schema.resolve, self.now(), opts.subresource)

    # ------------------------------------------------------------------ get / list
    def get(self, rt: ResourceType, namespace: str | None, name: str) -> Entry:
        e = self.store.get(rt.key(namespace, name))
        if e is None:
            raise errors.not_found(rt.plural, name, rt.group)
        return e

    def list_entries(self, rt: ResourceType, namespace: str | None, *, start_after: str = "",
             at_revision: int | None = None) -> tuple[int, Iterable[tuple[str, Entry]]]:
        prefix = rt.store_prefix
        sub = f"{namespace}/" if (rt.namespaced and namespace) else ""
        return self.store.range(prefix, sub, start_after=start_after, at_revision=at_revision)

    # ------------------------------------------------------------------ create
    async def create(self, rt: ResourceType, namespace: str | None, body: Any,
                     opts: WriteOptions) -> tuple[Entry | dict[str, Any], bool]:
        obj = self._check_type(rt, body, fill_gvk=True)
        self._check_namespace(rt, namespace, obj)
        meta = _meta(obj)
        if meta.get("resourceVersion"):
            raise errors.bad_request("resourceVersion should not be set on objects to be created")
        for k in _SERVER_META:
            meta.pop(k, None)
        if not meta.get("name"):
            gen = meta.get("generateName")
            if gen and isinstance(gen, str):
                # kube's utilrand.String(5) (math/rand): a generated name is no secret, and it is checked
                # for uniqueness by the create itself
                meta["name"] = gen + "".join(random.choices(_GEN_CHARS, k=5))
        self._admit_namespace(rt, namespace, str(meta.get("name") or ""))
        if ((rt.group, rt.kind) in _RESET_STATUS_ON_CREATE
                or (rt.crd_name is not None and rt.has_status)):
            obj.pop("status", None)
        self._default(rt, obj, None, opts)
        if self.admit is not None:
            self.admit(rt, obj, None)
        self._validate(rt, obj, None, opts)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = self.now()
        if rt.has_generation:
            meta["generation"] = 1
        self._track_fields(rt, None, obj, opts)
        obj = self._to_storage(rt, obj)
        key = rt.key(namespace, meta["name"])
        if opts.dry_run:
            if self.store.get_latest(key) is not None:
                raise errors.already_exists(rt.plural, meta["name"], rt.group)
            return obj, True
        try:
            fut = self.store.create(key, obj)
        except KeyError:
            raise errors.already_exists(rt.plural, meta["name"], rt.group) from None
        return await fut, True

    # ------------------------------------------------------------------ update
    def _merge_for_subresource(self, rt: ResourceType, old: dict[str, Any], new: dict[str, Any],
                               subresource: str) -> dict[str, Any]:
        if subresource == "status":
            # everything but status comes from the stored object; where the request's (private) value is
            # equal it is used as is, so a clone is only paid for what the request tried to change
            out = {k: _private(new.get(k, _MISSING), v) for k, v in old.items() if k not in ("status", "metadata")}
            if "status" in new:
                out["status"] = new["status"]
            nm = _meta(new)
            om = {k: _private(nm.get(k, _MISSING), v) for k, v in _meta(old).items()}
            if rt.crd_name is None:  # built-ins let /status change labels and annotations (pods do)
                for k in ("labels", "annotations"):
                    if k in nm:
                        om[k] = nm[k]
                    else:
                        om.pop(k, None)
            if "managedFields" in nm:
                om["managedFields"] = nm["managedFields"]
            om["resourceVersion"] = nm.get("resourceVersion", om.get("resourceVersion"))
            out["metadata"] = om
            return out
        if rt.has_status:
            if "status" in old:
                new["status"] = _private(new.get("status", _MISSING), old["status"])
            else:
                new.pop("status", None)
        return new

    def _carry_server_meta(self, rt: ResourceType, old: dict[str, Any], new: dict[str, Any]) -> None:
        om, nm = _meta(old), _meta(new)
        for k in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds",
                  "generation"):
            if k in om:
                nm[k] = om[k]
            else:
                nm.pop(k, None)
        nm["name"] = om.get("name")
        if rt.namespaced:
            nm["namespace"] = om.get("namespace")
        nm.pop("selfLink", None)
        if om.get("deletionTimestamp"):
            # finalizers may only be removed while terminating; new ones are refused like kube does
            added = set(nm.get("finalizers") or []) - set(om.get("finalizers") or [])
            if added:
                raise errors.invalid(rt.kind, om.get("name"), [Cause(
                    "metadata.finalizers", f"Forbidden: no new finalizers can be added if the object is "
                    f"being deleted, found new finalizers {sorted(added)!r}", "FieldValueForbidden")],
                    rt.group)

    async def update(self, rt: ResourceType, namespace: str | None, name: str, body: Any,
                     opts: WriteOptions) -> Entry | dict[str, Any]:
        obj = self._check_type(rt, body, fill_gvk=True)
        meta = _meta(obj)
        if meta.get("name") != name:
            raise errors.bad_request(f"the name of the object ({meta.get('name')}) does not match the name "
                                     f"on the URL ({name})")
        self._check_namespace(rt, namespace, obj)
        rv_s = meta.get("resourceVersion")
        expected: int | None = None
        if rv_s:
            try:
                expected = int(rv_s)
            except (TypeError, ValueError):
                raise errors.bad_request(f"invalid resourceVersion {rv_s!r}") from None
        key = rt.key(namespace, name)
        cur = self.store.get_latest(key)
        if cur is None:
            raise errors.not_found(rt.plural, name, rt.group)
        if expected is not None and expected != cur.rv:
            raise errors.conflict(rt.plural, name, rt.group)
        return await self._write_update(rt, key, cur, obj, opts)

    async def _write_update(self, rt: ResourceType, key: str, cur: Entry, new: dict[str, Any],
                            opts: WriteOptions) -> Entry | dict[str, Any]:
        old = self._old_view(rt, cur)  # read-only from here on
        new = self._merge_for_subresource(rt, old, new, opts.subresource)
        self._carry_server_meta(rt, old, new)
        self._default(rt, new, old, opts)
        if self.admit is not None:
            self.admit(rt, new, old)
        self._validate(rt, new, old, opts)
        if rt.has_generation and _spec_part(old, rt.has_status) != _spec_part(new, rt.has_status):
            _meta(new)["generation"] = int(_meta(old).get("generation") or 0) + 1
        self._track_fields(rt, old, new, opts)
        nm = _meta(new)
        nm["resourceVersion"] = str(cur.rv)
        if new == old:
            return cur  # a no-op write makes no revision and no watch event, like kube
        stored = self._to_storage(rt, new)
        if nm.get("deletionTimestamp") and not nm.get("finalizers") and not self._blocks_removal(rt, stored):
            if opts.dry_run:
                return stored
            return await self._remove(rt, key, cur.rv, stored)
        if opts.dry_run:
            return stored
        try:
            fut = self.store.update(key, stored, cur.rv)
        except LookupError:
            raise errors.not_found(rt.plural, nm.get("name", ""), rt.group) from None
        except ValueError:
            raise errors.conflict(rt.plural, nm.get("name", ""), rt.group) from None
        entry = await fut
        if rt.kind == "CustomResourceDefinition" and self.on_crd_change is not None:
            self.on_crd_change(entry.obj)
        return entry

    def _blocks_removal(self, rt: ResourceType, obj: dict[str, Any]) -> bool:
        if rt.kind == "Namespace" and rt.group == "":
            return bool((obj.get("spec") or {}).get("finalizers"))
        return False

    # ------------------------------------------------------------------ patch
    async def patch(self, rt: ResourceType, namespace: str | None, name: str, patch_type: str, body: Any,
                    opts: WriteOptions) -> tuple[Entry | dict[str, Any], bool]:
        key = rt.key(namespace, name)
        for _attempt in range(20):
            cur = self.store.get_latest(key)
            if patch_type == "apply":
                if not opts.field_manager:
                    raise errors.invalid("PatchOptions", "", [Cause(
                        "fieldManager", "Required value: is required for apply patch", "FieldValueRequired")],
                        "meta.k8s.io")
                applied = self._check_type(rt, body)
                am = _meta(applied)
                if am.get("name") and am["name"] != name:
                    raise errors.bad_request(f"the name of the object ({am['name']}) does not match the name "
                                             f"on the URL ({name})")
                am["name"] = name
                if cur is None:
                    if opts.subresource:
                        raise errors.not_found(rt.plural, name, rt.group)
                    live = None
                else:
                    live = self.to_view(rt, cur)
                merged = patch.server_side_apply(live, applied, opts.field_manager, opts.force,
                                                 rt.schema, schema.resolve, self.now(),
                                                 opts.subresource)
                if cur is None:
                    return await self.create(rt, namespace, merged, WriteOptions(
                        field_manager=opts.field_manager, field_validation=opts.field_validation,
                        dry_run=opts.dry_run, warnings=opts.warnings, applying=True))
                new = merged
                opts.applying = True
            else:
                if cur is None:
                    raise errors.not_found(rt.plural, name, rt.group)
                old = self.to_view(rt, cur)
                if patch_type == "json":
                    new = patch.json_patch(old, body, copy=False)  # `old` is our private copy
                elif patch_type == "merge":
                    if not isinstance(body, dict):
                        raise errors.bad_request("a merge patch must be a JSON object")
                    new = patch.json_merge_patch(old, body, copy=False)  # `old` is our private copy
                elif patch_type == "strategic":
                    if not rt.strategic_merge:
                        raise errors.unsupported_media_type("application/strategic-merge-patch+json "
                                                            "(strategic merge patch is not supported for "
                                                            "custom resources; use --type=merge)")
                    if not isinstance(body, dict):
                        raise errors.bad_request("a strategic merge patch must be a JSON object")
                    new = patch.strategic_merge_patch(old, body, rt.schema, schema.resolve, copy=False)
                else:
                    raise errors.unsupported_media_type(patch_type)
                if not isinstance(new, dict):
                    raise errors.bad_request("the patch did not produce an object")
                new_rv = _meta(new).get("resourceVersion")
                if new_rv and str(new_rv) != str(cur.rv):
                    raise errors.conflict(rt.plural, name, rt.group)
            nm = _meta(new)
            if nm.get("name") != name:
                raise errors.invalid(rt.kind, name, [Cause("metadata.name", "field is immutable",
                                                           "FieldValueInvalid")], rt.group)
            new.setdefault("apiVersion", rt.api_version)
            new.setdefault("kind", rt.kind)
            try:
                self._check_type(rt, new)
                result = await self._write_update(rt, key, cur, new, opts)
                return result, False
            except APIError as e:
                if e.reason == "Conflict" and e.code == 409 and not e.causes and \
                        self.store.get_latest(key) is not cur:
                    continue  # someone wrote in between: re-read and re-apply the patch
                raise
        raise errors.conflict(rt.plural, name, rt.group, "too many concurrent writes; try again")

    # ------------------------------------------------------------------ delete
    async def delete(self, rt: ResourceType, namespace: str | None, name: str,
                     opts: DeleteOptions) -> tuple[Entry | dict[str, Any], bool]:
        """Returns (object, removed): removed is False when the object is now only terminating."""
        admission.check_delete(rt, name)
        key = rt.key(namespace, name)
        for _attempt in range(20):
            cur = self.store.get_latest(key)
            if cur is None:
                raise errors.not_found(rt.plural, name, rt.group)
            obj = self.to_view(rt, cur)
            meta = _meta(obj)
            if self.admit_delete is not None:
                self.admit_delete(rt, obj)
            if opts.precondition_uid and opts.precondition_uid != meta.get("uid"):
                raise errors.conflict(rt.plural, name, rt.group,
                                      f"Precondition failed: UID in precondition: {opts.precondition_uid}, "
                                      f"UID in object meta: {meta.get('uid')}")
            if opts.precondition_rv and opts.precondition_rv != meta.get("resourceVersion"):
                raise errors.conflict(rt.plural, name, rt.group,
                                      f"Precondition failed: ResourceVersion in precondition: "
                                      f"{opts.precondition_rv}, ResourceVersion in object meta: "
                                      f"{meta.get('resourceVersion')}")
            finalizers = list(meta.get("finalizers") or [])
            policy = opts.propagation
            if policy == "Foreground" and FOREGROUND not in finalizers:
                finalizers.append(FOREGROUND)
            elif policy == "Orphan" and ORPHAN not in finalizers:
                finalizers.append(ORPHAN)
            graceful = self._graceful(rt, obj, opts)
            if rt.kind == "Namespace" and rt.group == "":
                graceful = True
            if rt.kind == "CustomResourceDefinition" and CRD_FINALIZER not in finalizers:
                finalizers.append(CRD_FINALIZER)
            if finalizers or graceful:
                if meta.get("deletionTimestamp"):
                    return cur, False  # already terminating: nothing changes
                meta["deletionTimestamp"] = self.now()
                meta["deletionGracePeriodSeconds"] = (opts.grace_period if opts.grace_period is not None
                                                      else (obj.get("spec") or {}).get(
                                                          "terminationGracePeriodSeconds", 0) or 0)
                if finalizers:
                    meta["finalizers"] = finalizers
                if rt.kind == "Namespace" and rt.group == "":
                    obj.setdefault("status", {})["phase"] = "Terminating"
                if opts.dry_run:
                    return obj, False
                try:
                    entry = await self.store.update(key, self._to_storage(rt, obj), cur.rv)
                except (ValueError, LookupError):
                    continue
                if rt.kind == "CustomResourceDefinition" and self.on_crd_change is not None:
                    self.on_crd_change(entry.obj)
                return entry, False
            if opts.dry_run:
                return obj, True
            try:
                return await self._remove(rt, key, cur.rv, None), True
            except APIError as e:
                if e.code == 409:
                    continue
                raise
        raise errors.conflict(rt.plural, name, rt.group, "too many concurrent writes; try again")

    def _graceful(self, rt: ResourceType, obj: dict[str, Any], opts: DeleteOptions) -> bool:
        """Pods on a live node wait for their kubelet to confirm (a second delete with grace 0); pods with
        no running kubelet to do so are removed at once, as the pod garbage collector would."""
        if rt.kind != "Pod" or rt.group != "":
            return False
        if opts.grace_period == 0:
            return False
        node = (obj.get("spec") or {}).get("nodeName")
        phase = (obj.get("status") or {}).get("phase")
        if not node or phase in ("Succeeded", "Failed"):
            return False
        n = self.store.get(f"/core/nodes/{node}")
        if n is None:
            return False
        for c in (n.obj.get("status") or {}).get("conditions") or []:
            if c.get("type") == "Ready":
                return bool(c.get("status") == "True")
        return False

    async def _remove(self, rt: ResourceType, key: str, rv: int, final: dict[str, Any] | None) -> Entry:
        try:
            fut = self.store.delete(key, rv, final)
        except LookupError:
            _b, sub = split_key(key)
            raise errors.not_found(rt.plural, sub.rsplit("/", 1)[-1], rt.group) from None
        except ValueError:
            raise errors.conflict(rt.plural, key.rsplit("/", 1)[-1], rt.group) from None
        entry = await fut
        if rt.kind == "CustomResourceDefinition" and self.on_crd_change is not None:
            self.on_crd_change({**entry.obj, "__deleted__": True})
        return entry

    async def delete_collection(self, rt: ResourceType, namespace: str | None,
                                match: Callable[[dict[str, Any]], bool], opts: DeleteOptions) -> list[Entry]:
        _rv, items = self.list_entries(rt, namespace)
        targets = [(k, e) for k, e in items if match(e.obj)]
        out = []
        refused: APIError | None = None
        for _k, e in targets:
            m = e.obj.get("metadata", {})
            try:
                res, _removed = await self.delete(rt, m.get("namespace"), m.get("name", ""), opts)
            except APIError as err:
                if err.code == 404:
                    continue
                if err.code == 403:  # kube deletes the others, then answers the (first) refusal
                    refused = refused or err
                    continue
                raise
            if isinstance(res, Entry):
                out.append(res)
        if refused is not None:
            raise refused
        return out
