"""`python -m kokpit ...` is the `kokpit` command (for venvs whose scripts folder is not on PATH)."""

from kokpit.cli.main import main

main()
