"""The README's commands keep a checkout clean: every file the tour writes lands under ``.kokpit/`` (which
``.gitignore`` covers).  That the ``.kokpit/`` paths it names exist is checked against a real fleet in
``test_up_e2e``."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def shell_blocks(text: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", text, flags=re.S)


def written_files(block: str) -> list[str]:
    """Targets of ``> FILE`` / ``>> FILE`` redirects (``2>/dev/null`` and heredoc markers aside)."""
    out = []
    for m in re.finditer(r"(?<![0-9&])>>?\s*([^\s;&|<>]+)", block):
        target = m.group(1)
        if target.startswith("/dev/"):
            continue
        out.append(target)
    return out


def test_the_tour_writes_only_under_kokpit() -> None:
    text = (ROOT / "README.md").read_text()
    assert ".kokpit/" in (ROOT / ".gitignore").read_text().split()
    written = [f for b in shell_blocks(text) for f in written_files(b)]
    assert written, "the tour writes files; the parser found none"
    outside = [f for f in written if not f.removeprefix("$PWD/").startswith(".kokpit/")]
    assert outside == [], f"README commands write outside .kokpit/ (not ignored by git): {outside}"


def test_parser_sees_redirects(readme_kokpit_paths: Callable[[], set[str]]) -> None:
    assert written_files("kokpit kubeconfig c > c.kubeconfig\ncat > x.yaml <<'EOF'\nls 2>/dev/null") == \
        ["c.kubeconfig", "x.yaml"]
    assert ".kokpit/meta/viewer.kubeconfig" in readme_kokpit_paths()
