"""bench/_common.replace_section: each benchmark refreshes only its own part of docs/benchmarks.md.

Four scripts share that page, so a run of one must never disturb the figures another recorded.
bench/ is a folder of scripts, not a package on the test path, so the module is loaded from its file.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"

PAGE = """# Benchmarks

Intro paragraph.

## Alpha (bench/alpha.py)

Command: `old alpha`

| old | alpha |

## Beta (bench/beta.py)

Command: `old beta`

### Notes

Hand-written beta notes.

### Push to more

Command: `old push`

## Gamma (bench/gamma.py)

Gamma stays.
"""


@pytest.fixture(scope="module")
def common() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_common", BENCH / "_common.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _block(text: str, heading: str) -> str:
    """The text from ``heading`` to the next heading of the same or a higher level (or the end)."""
    start = text.index(heading + "\n")
    level = heading.split(" ", 1)[0]
    stops = [i for i in (text.find("\n" + h + " ", start + 1) for h in ("#" * n for n in range(1, len(level) + 1)))
             if i != -1]
    return text[start: min(stops) + 1 if stops else len(text)]


def test_replaces_an_existing_section_and_leaves_the_others_byte_identical(common: ModuleType,
                                                                            tmp_path: Path) -> None:
    page = tmp_path / "benchmarks.md"
    page.write_text(PAGE)
    common.replace_section(page, "## Alpha (bench/alpha.py)", "new alpha", "setup S", ["| new | alpha |"])
    text = page.read_text()
    alpha = _block(text, "## Alpha (bench/alpha.py)")
    assert "Command: `new alpha`  \n" in alpha
    assert "Machine: " in alpha and "; setup S\n" in alpha
    assert alpha.rstrip().endswith("| new | alpha |")
    assert "old alpha" not in text
    assert text.count("## Alpha (bench/alpha.py)") == 1
    # Everything before and after the section is untouched, to the byte.
    assert text.startswith(PAGE[: PAGE.index("## Alpha")])
    assert text.endswith(PAGE[PAGE.index("## Beta"):])
    assert text.endswith("\n") and not text.endswith("\n\n")


def test_head_replacement_keeps_subsections(common: ModuleType, tmp_path: Path) -> None:
    page = tmp_path / "benchmarks.md"
    page.write_text(PAGE)
    common.replace_section(page, "## Beta (bench/beta.py)", "new beta", "setup", ["beta figures"])
    text = page.read_text()
    assert "old beta" not in text and "Command: `new beta`" in text
    assert text.endswith(PAGE[PAGE.index("### Notes"):])
    assert text.startswith(PAGE[: PAGE.index("## Beta")])


def test_subsection_replaced_alone(common: ModuleType, tmp_path: Path) -> None:
    page = tmp_path / "benchmarks.md"
    page.write_text(PAGE)
    common.replace_section(page, "## Beta (bench/beta.py)", "new push", "setup", ["push figures"],
                           sub="Push to more")
    text = page.read_text()
    assert "old push" not in text and "Command: `new push`" in text
    assert text.startswith(PAGE[: PAGE.index("### Push to more")])
    assert text.endswith("push figures\n\n" + PAGE[PAGE.index("## Gamma"):])


def test_appends_a_missing_section_or_subsection(common: ModuleType, tmp_path: Path) -> None:
    page = tmp_path / "benchmarks.md"
    page.write_text(PAGE)
    common.replace_section(page, "## Delta (bench/delta.py)", "delta", "setup", ["delta figures"])
    text = page.read_text()
    assert text.startswith(PAGE.rstrip("\n") + "\n\n## Delta (bench/delta.py)\n\nCommand: `delta`  \n")
    assert text.endswith("delta figures\n")

    common.replace_section(page, "## Epsilon (bench/eps.py)", "eps", "setup", ["eps figures"], sub="Big")
    after = page.read_text()
    assert after.startswith(text.rstrip("\n") + "\n\n## Epsilon (bench/eps.py)\n\n### Big\n\nCommand: `eps`  \n")

    common.replace_section(page, "## Alpha (bench/alpha.py)", "alpha big", "setup", ["alpha big"], sub="Big")
    final = page.read_text()
    alpha = _block(final, "## Alpha (bench/alpha.py)")
    assert alpha.startswith(_block(PAGE, "## Alpha (bench/alpha.py)").rstrip("\n") + "\n\n### Big\n")
    assert final.endswith(after[after.index("## Beta"):])


def test_rerun_is_stable(common: ModuleType, tmp_path: Path) -> None:
    page = tmp_path / "benchmarks.md"
    page.write_text(PAGE)
    for _ in range(2):
        common.replace_section(page, "## Beta (bench/beta.py)", "b", "setup", ["x"])
        common.replace_section(page, "## Beta (bench/beta.py)", "p", "setup", ["y"], sub="Push to more")
    once = page.read_text()
    common.replace_section(page, "## Beta (bench/beta.py)", "b", "setup", ["x"])
    common.replace_section(page, "## Beta (bench/beta.py)", "p", "setup", ["y"], sub="Push to more")
    again = page.read_text()
    # Only the Date lines may differ between two runs (a minute may have passed).
    strip = [line for line in once.splitlines() if not line.startswith("Date: ")]
    assert strip == [line for line in again.splitlines() if not line.startswith("Date: ")]
    assert once.count("### Push to more") == 1 and once.count("## Beta") == 1


def test_missing_file_gets_a_page_head(common: ModuleType, tmp_path: Path) -> None:
    page = tmp_path / "docs" / "benchmarks.md"
    common.replace_section(page, "## Alpha (bench/alpha.py)", "a", "setup", ["x"])
    text = page.read_text()
    assert text.startswith("# Benchmarks\n\n")
    assert "\n\n## Alpha (bench/alpha.py)\n\nCommand: `a`  \n" in text


@pytest.mark.parametrize("script", ["apiserver", "runtime", "fleet", "clusters", "maintenance"])
def test_scripts_import_and_parse_help(script: str) -> None:
    """Each script still imports (its `from _common import ...` included) and builds its argument parser."""
    proc = subprocess.run([sys.executable, str(BENCH / f"{script}.py"), "--help"], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: ")


def test_hand_written_notes_after_the_marker_survive_a_rerun(common: ModuleType, tmp_path: Path) -> None:
    page = tmp_path / "benchmarks.md"
    marker = common.NOTES_MARKER
    page.write_text(PAGE.replace("Command: `old push`\n", f"Command: `old push`\n\n| old run |\n\n{marker}\n\n"
                                 "What breaks first: the analysis.\n")
                    .replace("| old | alpha |\n", f"| old | alpha |\n\n{marker}\nAlpha notes.\n"))
    common.replace_section(page, "## Beta (bench/beta.py)", "new push", "S", ["| new run |"], sub="Push to more")
    common.replace_section(page, "## Alpha (bench/alpha.py)", "new alpha", "S", ["| new | alpha |"])
    text = page.read_text()
    push = _block(text, "### Push to more")
    assert "| new run |" in push and "| old run |" not in push
    assert push.index("| new run |") < push.index(marker) < push.index("What breaks first: the analysis.")
    alpha = _block(text, "## Alpha (bench/alpha.py)")
    assert "| new | alpha |" in alpha and "| old | alpha |" not in alpha and alpha.rstrip().endswith("Alpha notes.")
    assert "Gamma stays." in text and "Hand-written beta notes." in text


_SAY_SIGNAL = """
import signal, sys, time
def said(n, _):
    print(signal.Signals(n).name, flush=True)
    sys.exit(0)
signal.signal(signal.SIGINT, said)
signal.signal(signal.SIGTERM, said)
print("ready", flush=True)
time.sleep(60)
"""


def test_stop_processes_terms_interrupts_and_kills_what_stays(common: ModuleType) -> None:
    """SIGTERM to the processes, SIGINT to ``interrupt`` (py-spy writes its profile on SIGINT), SIGKILL after
    the wait to one that ignores both; every one is ended and reaped."""
    def start(code: str) -> subprocess.Popen[bytes]:
        p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
        assert p.stdout is not None and p.stdout.readline() == b"ready\n"
        return p

    termed, spied = start(_SAY_SIGNAL), start(_SAY_SIGNAL)
    stubborn = start("import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('ready', flush=True)\n"
                     "time.sleep(60)")
    common.stop_processes([termed, None, stubborn], wait=1.0, interrupt=[spied])
    assert termed.returncode == 0 and termed.stdout is not None and termed.stdout.read() == b"SIGTERM\n"
    assert spied.returncode == 0 and spied.stdout is not None and spied.stdout.read() == b"SIGINT\n"
    assert stubborn.returncode == -9
