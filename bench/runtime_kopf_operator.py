"""The benchmark's trivial operator written with kopf: copy ``spec.value`` into ``status.value``.

Why: issue 3 asks how kokpit.runtime compares with kopf, the usual Python operator framework, on the same
job against the same server in the same run. bench/runtime.py starts it with
``kopf run --standalone --namespace NS bench/runtime_kopf_operator.py`` and a kubeconfig for the embedded
server. Idiomatic kopf: create/update handlers (the objects are new to kopf, so creation fires for all of
them) filling kopf's status patch. Kubernetes Events for handler progress are turned down to warnings (kokpit
posts none here).

Two variants, chosen by ``KOPF_BENCH_STORAGE``:
- unset (kopf's defaults): kopf keeps its diff-base in an annotation, so each object costs a metadata patch
  and a status patch;
- ``status``: diff-base and progress kept under ``status.kopf``, so each object costs one status patch —
  kopf at its cheapest, to compare write for write.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import kopf

__all__ = ["configure", "copy_value"]


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.posting.level = logging.WARNING
    if os.environ.get("KOPF_BENCH_STORAGE") == "status":
        settings.persistence.diffbase_storage = kopf.StatusDiffBaseStorage(field="status.kopf.diffbase")
        settings.persistence.progress_storage = kopf.StatusProgressStorage(field="status.kopf.progress")


@kopf.on.create("bench.kokpit.io", "v1", "things")
@kopf.on.update("bench.kokpit.io", "v1", "things", field="spec.value")
def copy_value(spec: kopf.Spec, patch: kopf.Patch, **_: Any) -> None:
    patch.status["value"] = spec.get("value")
