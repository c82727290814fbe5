"""What every kokpit command shares (defined in :mod:`kokpit._lib.cli`, which component packages can use),
and the metrics flags of every long-running command."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import typer

from kokpit._lib.cli import fail, setup_logging

__all__ = ["METRICS_HOST", "METRICS_PORT", "METRICS_TOKEN_FILE", "fail", "metrics_tokens", "serve", "setup_logging"]

# HTTPS, bearer tokens of the cluster: kokpit._lib.metricsserver
METRICS_PORT = typer.Option(None, "--metrics-port", help="Serve /metrics (HTTPS, bearer token), /healthz and "
                            "/readyz on this port (0: any free one; default: off). Needs --metrics-token-file.")
METRICS_HOST = typer.Option("127.0.0.1", "--metrics-host", help="Address the metrics endpoint binds to.")
METRICS_TOKEN_FILE = typer.Option(None, "--metrics-token-file", help="Bearer tokens /metrics accepts: the "
                                  "cluster API server's tokens.json ({admin, readonly}) or one per line. Without "
                                  "it the API server decides (TokenReview, then SubjectAccessReview for get on "
                                  "/metrics: bind the kokpit:metrics-reader ClusterRole).")


def metrics_tokens(port: int | None, token_file: Path | None, *, delegated: bool = True) -> list[str] | None:
    """The tokens for ``--metrics-port`` (None when metrics are off; ``[]``: ask the API server, for a component
    that has one, i.e. ``delegated``); a clear error when a token file is needed and missing."""
    from kokpit._lib.metricsserver import load_tokens

    if port is None:
        return None
    if token_file is None:
        if delegated:
            return []
        fail("--metrics-port needs --metrics-token-file: /metrics is served only to holders of the cluster's "
             "bearer tokens")
    try:
        return load_tokens(token_file)
    except ValueError as e:
        fail(str(e))


def serve(main: Callable[[], Coroutine[Any, Any, object]], kubeconfig: Path | None, verbose: bool) -> None:
    """Run a long-running command's ``main()`` to its end: a ``--kubeconfig`` that is not there is refused
    with a message saying so (not a traceback from inside the client), logging is set up, and Ctrl-C ends the
    process quietly (``main`` has already shut down cleanly by then).  ``main`` is called only after the
    checks, so a refused command creates no coroutine it never awaits."""
    if kubeconfig is not None and not kubeconfig.is_file():
        fail(f"kubeconfig {kubeconfig} not found")
    setup_logging(verbose, quiet_http=True)
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
