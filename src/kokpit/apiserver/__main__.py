"""`python -m kokpit.apiserver` runs the server like `kokpit apiserver`."""

from kokpit.cli.main import app

app(["apiserver", *__import__("sys").argv[1:]])
