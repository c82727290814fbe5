"""The package layering of DESIGN.md, enforced by reading every module's imports with ``ast``.

(a) only kokpit.client imports lightkube / httpx (and httpx2, lightkube's HTTP library);
(b) kokpit.runtime imports no operator or apiserver code;
(c) kokpit.apiserver imports no operator, runtime or client code;
(d) no operator package imports another operator package.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "kokpit"
WIRE_LIBS = {"lightkube", "httpx", "httpx2"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """Absolute names of every module ``path`` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    me = _module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            out.append((node.lineno, mod))
            out.extend((node.lineno, f"{mod}.{a.name}") for a in node.names if a.name != "*")
    return out


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def layering_violations(root: Path = PKG) -> list[str]:
    bad: list[str] = []
    for path in sorted(root.rglob("*.py")):
        me = _module_name(path)
        for line, name in _imports(path):
            where = f"{path.relative_to(SRC)}:{line} imports {name}"
            top = name.split(".")[0]
            if top in WIRE_LIBS and not _within(me, "kokpit.client"):
                bad.append(f"(a) {where}: only kokpit.client may use {top}")
            if _within(me, "kokpit.runtime") and any(
                _within(name, p) for p in ("kokpit.operators", "kokpit.apiserver")
            ):
                bad.append(f"(b) {where}")
            if _within(me, "kokpit.apiserver") and any(
                _within(name, p) for p in ("kokpit.operators", "kokpit.runtime", "kokpit.client")
            ):
                bad.append(f"(c) {where}")
            if _within(me, "kokpit.operators") and _within(name, "kokpit.operators"):
                mine, theirs = me.split("."), name.split(".")
                if len(mine) > 2 and len(theirs) > 2 and mine[2] != theirs[2]:
                    bad.append(f"(d) {where}")
    return bad


def test_layering() -> None:
    assert PKG.is_dir()
    assert layering_violations() == []


def test_layering_check_catches_violations(tmp_path: Path) -> None:
    """The checker itself must fail on each kind of violation (guards against a vacuous test)."""
    global SRC
    root = tmp_path / "src" / "kokpit"
    files = {
        "runtime/bad.py": "import httpx\nfrom kokpit.operators.machine import x\n",
        "apiserver/bad.py": "from kokpit.client import Client\n",
        "operators/machine/bad.py": "from ..cluster import thing\nfrom . import ok\n",
        "operators/cluster/__init__.py": "",
        "client/ok.py": "import lightkube\nimport httpx2\n",
    }
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    saved = SRC
    SRC = tmp_path / "src"
    try:
        found = layering_violations(root)
    finally:
        SRC = saved
    kinds = sorted({v[:3] for v in found})
    assert kinds == ["(a)", "(b)", "(c)", "(d)"], found
