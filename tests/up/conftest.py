"""What the `kokpit up` tests share: the README's view of a fleet's data dir."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def readme_paths(text: str) -> set[str]:
    """Every ``.kokpit/...`` path the README names (prose and commands)."""
    return {m.rstrip(".,)`'\"") for m in re.findall(r"\.kokpit/[\w./$-]*[\w]", text)}


@pytest.fixture
def readme_kokpit_paths() -> Callable[[], set[str]]:
    """The ``.kokpit/`` paths the README names (read when called)."""
    return lambda: readme_paths((ROOT / "README.md").read_text())
