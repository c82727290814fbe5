"""Strategic merge patch: kubectl's client-side patch type — list merge keys, ``$patch`` directives,
``$retainKeys``, ``$setElementOrder`` and ``$deleteFromPrimitiveList``, from the schema's strategies."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kokpit.apiserver.errors import bad_request
from kokpit.apiserver.patch._schema import _MISSING, Resolver, _dumps, _Info, _Schema, deep_copy

# ------------------------------------------------------------------------------ strategic merge patch

_DIRECTIVE = "$patch"
_RETAIN_KEYS = "$retainKeys"
_SET_ORDER = "$setElementOrder/"
_DELETE_PRIMITIVE = "$deleteFromPrimitiveList/"


def strategic_merge_patch(original: dict[str, Any], patch: dict[str, Any], schema: dict[str, Any] | None,
                          resolve: Resolver, *, copy: bool = True) -> dict[str, Any]:
    """Apply a strategic merge patch the way kube-apiserver does for built-in kinds.

    Lists whose schema says `x-kubernetes-patch-strategy: merge` merge by `x-kubernetes-patch-merge-key`
    (or as a set of scalars when there is no key); every other list is replaced.  Merged lists put the
    patch's items in the patch's (or `$setElementOrder`'s) order and keep server-only items in their
    relative place, like apimachinery's `normalizeElementOrder`.  With ``copy=False`` the original is
    patched in place (the caller's private copy).
    """
    if not isinstance(patch, dict):
        raise bad_request("a strategic merge patch must be a JSON object")
    sch = _Schema(resolve)
    base = (deep_copy(original) if copy else original) if isinstance(original, dict) else {}
    return _smp_map(base, deep_copy(patch), sch.info(schema), sch)  # the patch is re-applied on a conflict retry


def _smp_map(orig: dict[str, Any], patch: dict[str, Any], info: _Info, sch: _Schema) -> dict[str, Any]:
    directive = patch.pop(_DIRECTIVE, None)
    if directive is not None:
        if directive == "replace":
            return _smp_map({}, patch, info, sch)
        if directive == "delete":
            return {}
        if directive != "merge":
            raise bad_request(f"invalid strategic merge patch: unknown patch type {directive!r} in map")
    retain = patch.pop(_RETAIN_KEYS, _MISSING)
    if retain is not _MISSING:
        if not isinstance(retain, list):
            raise bad_request("invalid strategic merge patch: $retainKeys must be a list of field names")
        keep = {k for k in retain if isinstance(k, str)}
        for key in [k for k in orig if k not in keep]:
            del orig[key]
    orders: dict[str, list[Any]] = {}
    deletes: dict[str, list[Any]] = {}
    # other keys that start with "$" are ordinary fields (a CRD's JSONSchemaProps has `$ref`, `$schema`)
    for key in [k for k in patch if k.startswith((_SET_ORDER, _DELETE_PRIMITIVE))]:
        value = patch.pop(key)
        if not isinstance(value, list):
            raise bad_request(f"invalid strategic merge patch: {key} must be a list")
        if key.startswith(_SET_ORDER):
            orders[key[len(_SET_ORDER):]] = value
        else:
            deletes[key[len(_DELETE_PRIMITIVE):]] = value

    for key, value in patch.items():
        if value is None:
            orig.pop(key, None)
            continue
        current = orig.get(key)
        if isinstance(value, dict):
            child = sch.info(info.child(key))
            if "replace" in child.strategies or not isinstance(current, dict):
                orig[key] = _smp_map({}, value, child, sch)
            else:
                orig[key] = _smp_map(current, value, child, sch)
        elif isinstance(value, list):
            child = sch.info(info.child(key))
            orig[key] = _smp_list(current if isinstance(current, list) else [], value, child, sch,
                                  orders.pop(key, None))
        else:
            orig[key] = value
    for key, order in orders.items():  # $setElementOrder without a patch list: reorder only
        current = orig.get(key)
        if isinstance(current, list) and current:
            orig[key] = _smp_list(current, [], sch.info(info.child(key)), sch, order)
    for key, doomed in deletes.items():
        current = orig.get(key)
        if isinstance(current, list):
            orig[key] = [v for v in current if v not in doomed]
    return orig


def _hashable(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return _dumps(value)
    return value


def _smp_list(orig: list[Any], patch: list[Any], info: _Info, sch: _Schema,
              order: list[Any] | None) -> list[Any]:
    if "merge" not in info.strategies:
        items = sch.info(info.items)
        return [_smp_map({}, v, items, sch) if isinstance(v, dict) else v for v in patch
                if not (isinstance(v, dict) and v.get(_DIRECTIVE) is not None and len(v) == 1)]
    if not orig and not patch:
        return orig
    if not any(isinstance(v, dict) for v in orig) and not any(isinstance(v, dict) for v in patch):
        merged: list[Any] = []
        seen: set[Any] = set()
        for v in orig + patch:
            h = _hashable(v)
            if h not in seen:
                seen.add(h)
                merged.append(v)
        order_keys = [_hashable(v) for v in (order if order is not None else patch)]
        return _normalize_order(merged, order_keys, [_hashable(v) for v in orig], _hashable)

    mkey = info.merge_key
    if not mkey:
        raise bad_request("invalid strategic merge patch: cannot merge lists of objects without a merge key")
    items = sch.info(info.items)
    current = list(orig)
    plain: list[dict[str, Any]] = []
    replace = False
    for item in patch:
        if not isinstance(item, dict):
            raise bad_request(f"invalid strategic merge patch: expected objects in the list merged by "
                              f"{mkey!r}, got {item!r}")
        directive = item.get(_DIRECTIVE)
        if directive is None or directive == "merge":
            plain.append({k: v for k, v in item.items() if k != _DIRECTIVE})
        elif directive == "delete":
            if mkey not in item:
                raise bad_request(f"invalid strategic merge patch: map {_dumps(item)} does not contain "
                                  f"declared merge key: {mkey}")
            doomed = item[mkey]
            current = [v for v in current if not (isinstance(v, dict) and v.get(mkey) == doomed)]
        elif directive == "replace":
            replace = True
        else:
            raise bad_request(f"invalid strategic merge patch: unknown patch type {directive!r} in list")
    if replace:
        return [_smp_map({}, v, items, sch) for v in plain]
    for item in plain:
        if mkey not in item:
            raise bad_request(f"invalid strategic merge patch: map {_dumps(item)} does not contain declared "
                              f"merge key: {mkey}")
        wanted = item[mkey]
        for i, v in enumerate(current):
            if isinstance(v, dict) and v.get(mkey) == wanted:
                current[i] = _smp_map(v, item, items, sch)
                break
        else:
            current.append(_smp_map({}, item, items, sch))

    def key_of(v: Any) -> Any:
        return _hashable(v.get(mkey)) if isinstance(v, dict) else _hashable(v)

    order_src = order if order is not None else plain
    return _normalize_order(current, [key_of(v) for v in order_src], [key_of(v) for v in orig], key_of)


def _normalize_order(merged: list[Any], patch_order: list[Any], server_order: list[Any],
                     key_of: Callable[[Any], Any]) -> list[Any]:
    """Patch items in patch order; server-only items keep their live order and are interleaved by it."""
    pidx: dict[Any, int] = {}
    for i, k in enumerate(patch_order):
        pidx.setdefault(k, i)
    sidx: dict[Any, int] = {}
    for i, k in enumerate(server_order):
        sidx.setdefault(k, i)
    patch_items = [v for v in merged if key_of(v) in pidx]
    server_only = [v for v in merged if key_of(v) not in pidx]
    patch_items.sort(key=lambda v: pidx[key_of(v)])
    server_only.sort(key=lambda v: sidx.get(key_of(v), len(sidx)))
    out: list[Any] = []
    i = j = 0
    while i < len(server_only) or j < len(patch_items):
        if i >= len(server_only):
            out.append(patch_items[j])
            j += 1
        elif j >= len(patch_items):
            out.append(server_only[i])
            i += 1
        else:
            li = sidx.get(key_of(server_only[i]))
            ri = sidx.get(key_of(patch_items[j]))
            if li is not None and ri is not None and li < ri:
                out.append(server_only[i])
                i += 1
            else:
                out.append(patch_items[j])
                j += 1
    return out
