"""What every kokpit command shares: one way to fail with a message, one way to set up logging.

In ``_lib`` (not ``kokpit.cli``) because component packages own their command lines too — the API server's
``python -m kokpit.apiserver`` may not import the CLI that sits above it.
"""

from __future__ import annotations

import logging
import sys
from typing import NoReturn

import typer

__all__ = ["fail", "setup_logging"]


def fail(message: str) -> NoReturn:
    """A one-line error on stderr and exit code 1 (what to fix, never a traceback)."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=1)


def setup_logging(verbose: bool, *, quiet_http: bool = False) -> None:
    """Log to stderr; with ``quiet_http`` the HTTP clients' one line per request is kept out unless
    ``verbose`` (at fleet scale it would cost more than the work itself)."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if quiet_http and not verbose:
        for noisy in ("httpx", "httpx2"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
