"""`python -m kokpit.apiserver` runs the server like `kokpit apiserver` (the same command function)."""

import typer

from kokpit.apiserver.command import apiserver

typer.run(apiserver)
