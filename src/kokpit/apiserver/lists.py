"""LIST: label and field selectors, ``limit`` / ``continue`` paging and consistent reads at a revision.

A plain list (no selector, no limit) is the stored bytes of every item joined into one body; a continue
token carries the revision of the first page, so every page is read at it (as etcd-backed kube does).
"""

from __future__ import annotations

import base64
from typing import Any

import orjson
import yaml

from kokpit.apiserver import errors, listopts, selectors
from kokpit.apiserver.resources import ResourceType
from kokpit.apiserver.responses import Response, table_response, wants_yaml
from kokpit.apiserver.rest import Rest
from kokpit.apiserver.storage.store import Entry, Store

__all__ = ["list_response", "matches", "selectors_of"]

Selectors = tuple[selectors.LabelSelector | None, selectors.FieldSelector | None]


def selectors_of(rt: ResourceType, query: dict[str, str]) -> Selectors:
    ls = query.get("labelSelector")
    fs = query.get("fieldSelector")
    lsel = selectors.parse_label_selector(ls) if ls else None
    fsel = selectors.parse_field_selector(fs, rt) if fs else None
    return lsel, fsel


def matches(obj: dict[str, Any], lsel: selectors.LabelSelector | None,
            fsel: selectors.FieldSelector | None) -> bool:
    if lsel is not None and not lsel.matches((obj.get("metadata") or {}).get("labels")):
        return False
    return not (fsel is not None and not fsel.matches(obj))


def list_response(rest: Rest, store: Store, rt: ResourceType, ns: str | None, query: dict[str, str],
                  accept: str) -> Response:
    listopts.validate_list(query)
    lsel, fsel = selectors_of(rt, query)
    limit = listopts.page_limit(query)
    cont = query.get("continue", "")
    start_after = ""
    at: int | None = None
    if cont:
        at, start_after = listopts.continue_token(cont)
    else:
        rv_s = query.get("resourceVersion", "")
        match = query.get("resourceVersionMatch", "")
        if rv_s and rv_s != "0" and match == "Exact":
            try:
                at = int(rv_s)
            except ValueError:
                raise errors.bad_request(f"invalid resourceVersion {rv_s!r}") from None
            if at > store.revision:
                raise errors.APIError(504, "Timeout", f"Too large resource version: {at}, current: "
                                      f"{store.revision}", retry_after=1)
    list_rv, items = rest.list_entries(rt, ns, start_after=start_after, at_revision=at)
    picked: list[Entry] = []
    picked_key = ""
    next_key = ""
    remaining = 0
    plain = lsel is None and fsel is None and not limit
    if plain:  # a full list without selectors: no per-item checks
        picked = [e for _k, e in items]
    for k, e in () if plain else items:
        if (lsel is not None or fsel is not None) and not matches(e.obj, lsel, fsel):
            continue
        if limit and len(picked) >= limit:
            next_key = picked_key
            remaining = 1
            break
        picked.append(e)
        picked_key = k
    cont_out = ""
    if remaining:
        cont_out = base64.urlsafe_b64encode(orjson.dumps({"rv": list_rv, "start": next_key})).decode().rstrip("=")
    if "as=Table" in accept:
        return table_response(rest, rt, [rest.to_view(rt, e) for e in picked], query, rv=str(list_rv),
                              cont=cont_out)
    meta: dict[str, Any] = {"resourceVersion": str(list_rv)}
    if cont_out:
        meta["continue"] = cont_out
    head = orjson.dumps({"kind": f"{rt.kind}List", "apiVersion": rt.api_version, "metadata": meta})
    if wants_yaml(accept):
        doc = orjson.loads(head)
        doc["items"] = [rest.to_view(rt, e) for e in picked]
        return Response(200, yaml.safe_dump(doc, sort_keys=False).encode(), b"application/yaml")
    body = b"".join((head[:-1], b',"items":[', b",".join(rest.raw_of(rt, e) for e in picked), b"]}"))
    return Response(200, body)
