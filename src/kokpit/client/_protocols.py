"""The slices of :class:`kokpit.client.Client` that code depends on, as Protocols.

Runtime helpers and operators take a client that can do just what they need, so unit tests hand them a fake
over in-memory stores; one definition per verb here keeps the fakes and the real client in step (a changed
signature is one edit, checked by mypy everywhere it is used).
"""

from __future__ import annotations

from typing import Any, Protocol

from kokpit.client._kinds import Kind

__all__ = ["CanCreate", "CanDelete", "CanGet", "CanPatch", "ObjectClient"]

Obj = dict[str, Any]


class CanGet(Protocol):
    async def get(self, kind: Kind, name: str, namespace: str | None = None, *,
                  subresource: str | None = None) -> Obj: ...


class CanCreate(Protocol):
    async def create(self, kind: Kind, obj: Obj, namespace: str | None = None, *,
                     dry_run: bool = False) -> Obj: ...


class CanPatch(Protocol):
    async def patch(self, kind: Kind, name: str, body: Any, namespace: str | None = None, *,
                    patch_type: Any = "merge", subresource: str | None = None,
                    field_manager: str | None = None, force: bool = False) -> Obj: ...


class CanDelete(Protocol):
    async def delete(self, kind: Kind, name: str, namespace: str | None = None) -> Obj: ...


class ObjectClient(CanGet, CanCreate, CanPatch, CanDelete, Protocol):
    """Read, create, patch and delete single objects: what an operator's reconcile needs."""
