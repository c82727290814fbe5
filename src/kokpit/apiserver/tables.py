"""Server-side `meta.k8s.io/v1` Tables: what `kubectl get` prints.

kubectl asks the server for a Table and prints its cells verbatim; without one it can only show NAME and AGE.
The columns and the cell logic (a Pod's STATUS, a Node's ROLES, ages like `3m2s`) are kube-apiserver's
printers (:mod:`kokpit.apiserver.printers`, CRD additionalPrinterColumns through the JSONPath subset of
:mod:`kokpit.apiserver.jsonpath`); this module assembles the Table of a list, a GET or a watch event, so every
built-in kind, every custom resource and every watch event is printed the same way.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from kokpit.apiserver.errors import bad_request
from kokpit.apiserver.jsonpath import jsonpath_values, validate_jsonpath
from kokpit.apiserver.printers import column_definitions, human_duration, printer_for
from kokpit.apiserver.resources import ResourceType

__all__ = [
    "INCLUDE_OBJECT_VALUES",
    "column_definitions",
    "human_duration",
    "jsonpath_values",
    "row_for_watch",
    "to_table",
    "validate_jsonpath",
]

_Obj = dict[str, Any]
INCLUDE_OBJECT_VALUES = ("None", "Metadata", "Object")


# ------------------------------------------------------------------------------------------- tables


def _row_object(obj: _Obj, include_object: str, api_version: str) -> _Obj | None:
    if include_object == "Object":
        return obj
    if include_object == "Metadata":
        return {"kind": "PartialObjectMetadata", "apiVersion": api_version, "metadata": obj.get("metadata") or {}}
    return None


def to_table(rt: ResourceType, objects: list[_Obj], *, include_object: str = "Metadata", now: datetime,
             resource_version: str = "", continue_token: str = "", api_version: str = "meta.k8s.io/v1",
             include_headers: bool = True) -> _Obj:
    """A meta.k8s.io Table of `objects` (already in the form `rt` serves them).

    Every column is always filled, priority > 0 included, as kube-apiserver does; kubectl hides those
    unless `-o wide`. `include_headers=False` is TableOptions.noHeaders.
    """
    if include_object not in INCLUDE_OBJECT_VALUES:
        raise bad_request(f"includeObject: Unsupported value: {include_object!r}: supported values: "
                          f'"None", "Metadata", "Object"')
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    printer = printer_for(rt)
    rows: list[_Obj] = []
    for obj in objects:
        row: _Obj = {"cells": printer.cells(obj, now)}
        if printer.conditions is not None:
            conditions = printer.conditions(obj)
            if conditions:
                row["conditions"] = conditions
        partial = _row_object(obj, include_object, api_version)
        if partial is not None:
            row["object"] = partial
        rows.append(row)
    metadata: _Obj = {}
    if resource_version:
        metadata["resourceVersion"] = resource_version
    if continue_token:
        metadata["continue"] = continue_token
    table: _Obj = {"kind": "Table", "apiVersion": api_version, "metadata": metadata}
    if include_headers:
        table["columnDefinitions"] = column_definitions(rt)
    table["rows"] = rows
    return table


def row_for_watch(rt: ResourceType, obj: _Obj, *, include_object: str = "Metadata", now: datetime,
                  api_version: str = "meta.k8s.io/v1", include_headers: bool = True) -> _Obj:
    """The object of one watch event when a Table was asked for: a Table with one row, carrying the
    object's resourceVersion (as kube does for a single object)."""
    rv = str((obj.get("metadata") or {}).get("resourceVersion") or "")
    return to_table(rt, [obj], include_object=include_object, now=now, resource_version=rv,
                    api_version=api_version, include_headers=include_headers)
