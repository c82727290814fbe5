"""The parts of the portal beyond the read-only pages, registered onto a :class:`~kokpit.portal.Portal` before
it starts (each adds its kinds to the cache, its routes and its OpenAPI paths)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from kokpit.portal._app import Portal

__all__ = ["default_extensions"]


def default_extensions() -> list[Callable[[Portal], Awaitable[None]]]:
    from kokpit.portal._actions import register as actions
    from kokpit.portal._adapter import register as adapter
    from kokpit.portal._audit import register as audit
    from kokpit.portal._changes import register as changes
    from kokpit.portal._faults import register as faults
    from kokpit.portal._openapi import register as openapi
    from kokpit.portal._rollouts import register as rollouts

    return [actions, audit, changes, faults, adapter, rollouts, openapi]
