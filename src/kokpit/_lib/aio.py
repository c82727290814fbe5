"""Stopping background tasks reliably.

On Python 3.11 ``asyncio.wait_for`` (used inside libraries) can swallow a cancellation when its inner
future finishes at the same moment; a task that did so keeps running and a plain ``await task`` after
``cancel()`` hangs forever.  Stopping therefore cancels, waits briefly, and cancels again until done.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

__all__ = ["cancel_and_wait"]


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]], grace: float = 0.5) -> None:
    tasks = list(tasks)
    pending = {t for t in tasks if not t.done()}
    for t in pending:
        t.cancel()
    while pending:
        _, pending = await asyncio.wait(pending, timeout=grace)
        for t in pending:
            t.cancel()
    for t in tasks:
        if not t.cancelled():
            t.exception()  # retrieved: no "exception was never retrieved" noise at shutdown
