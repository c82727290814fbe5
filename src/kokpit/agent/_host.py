"""The host an agent manages: its root folder, how commands run in it, and safe writes into it.

An agent normally manages ``/`` (the machine it runs on).  It can instead manage a root folder — a chroot —
so tests and the 1,000-agent bench run real package managers against real Debian roots without a VM:
commands then run through ``chroot ROOT``, files are written below ``ROOT``, and sysctls go to the network
namespace named by ``netns`` (entered with ``nsenter``) instead of the agent's own, so a test never touches
this machine's kernel settings.

Every path a component names is resolved *inside* the root, symlinks included, and refused if it escapes it
or leaves the allowed config folders — the admission rules (``kokpit.api.machine``) checked the text; this
checks what is really on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from dataclasses import dataclass
from pathlib import Path

from kokpit.api.machine import CONFIG_ROOTS, config_path_problem

__all__ = ["CommandResult", "HostError", "HostRoot"]

STATE_DIR = "var/lib/kokpit-agent"  # inside the root: component records (what the agent was asked to do)
_TAIL = 2000  # characters of a failed command's output kept for the error message


class HostError(Exception):
    """The host refused something (bad path, unknown user, missing sysctl): nothing was changed."""


@dataclass(frozen=True)
class CommandResult:
    code: int
    stdout: str
    stderr: str
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.code == 0 and not self.timed_out

    def error_text(self) -> str:
        """What the tool said, most useful part first: apt/dpkg/dnf put their verdict on ``E:``/``Error`` lines."""
        if self.timed_out:
            return "timed out; " + _tail(self.stderr or self.stdout)
        lines = [ln.rstrip() for ln in (self.stderr + "\n" + self.stdout).splitlines()
                 if ln.strip() and "Can not write log" not in ln]  # apt's pty noise in a chroot
        key: list[str] = []
        for i, ln in enumerate(lines):
            if ln.startswith("dpkg: error processing"):  # the maintainer script's words and dpkg's verdict
                key += [x for x in lines[max(0, i - 2):i + 2] if x not in key]
            elif ln.startswith(("E:", "dpkg:", "Error", "error:", "Problem")) and ln not in key:
                key.append(ln)
        text = "\n".join(key or lines[-8:])
        return _tail(f"exit status {self.code}: {text}")


def _tail(text: str) -> str:
    text = text.strip()
    return text if len(text) <= _TAIL else "…" + text[-_TAIL:]


class HostRoot:
    """One managed root. ``root`` ``/`` is the real host; anything else is a chroot."""

    def __init__(self, root: Path, *, netns: Path | None = None) -> None:
        self.root = root.resolve()
        self.netns = netns
        self.is_chroot = self.root != Path("/")
        self.state_dir = self.root / STATE_DIR

    # ------------------------------------------------------------------ commands
    def argv(self, argv: list[str]) -> list[str]:
        return ["chroot", str(self.root), *argv] if self.is_chroot else argv

    async def run(self, argv: list[str], *, timeout: float, env: dict[str, str] | None = None,
                  input_text: str | None = None, in_root: bool = True) -> CommandResult:
        """Run a command (inside the root unless ``in_root`` is False) bounded by ``timeout``; on timeout
        its whole process group is killed, so no half-finished script keeps running behind our back."""
        full = self.argv(argv) if in_root else argv
        base = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8",
                "DEBIAN_FRONTEND": "noninteractive", "HOME": "/root"}
        proc = await asyncio.create_subprocess_exec(
            *full, stdin=asyncio.subprocess.PIPE if input_text is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env={**base, **(env or {})},
            start_new_session=True)
        try:
            async with asyncio.timeout(timeout):
                out, err = await proc.communicate(input_text.encode() if input_text is not None else None)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            out, err = await proc.communicate()
            return CommandResult(-9, out.decode(errors="replace"), err.decode(errors="replace"), timed_out=True)
        except asyncio.CancelledError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            raise
        return CommandResult(proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace"))

    def has(self, program: str) -> bool:
        """Whether ``program`` exists on the host's PATH (inside the root)."""
        for d in ("usr/local/sbin", "usr/local/bin", "usr/sbin", "usr/bin", "sbin", "bin"):
            if os.access(self.root / d / program, os.X_OK):
                return True
        return False

    def systemd_running(self) -> bool:
        """systemd manages this host (what ``sd_booted()`` checks, on the root's /run: true for the host's
        root mounted into a DaemonSet Pod, false for a test's chroot)."""
        return (self.root / "run/systemd/system").is_dir() and self.has("systemctl")

    # ------------------------------------------------------------------ files
    def resolve_config_path(self, path: str) -> Path:
        """The on-disk location of config file ``path``, refusing anything that leaves the root or the
        allowed folders — after following symlinks already on the host (``/etc/x -> /etc/shadow``)."""
        problem = config_path_problem(path)
        if problem:
            raise HostError(f"config file {path}: {problem}")
        # resolve() follows every symlink that exists (absolute ones against the agent's view, so a chroot's
        # "/etc/x -> /etc/shadow" points outside the root and is refused) and keeps the rest as written
        real = (self.root / path.lstrip("/")).resolve()
        try:
            inside = "/" + str(real.relative_to(self.root))
        except ValueError:
            raise HostError(f"config file {path}: resolves to {real}, outside the managed root") from None
        problem = config_path_problem(inside)
        if problem or not any(inside.startswith(r) for r in CONFIG_ROOTS):
            raise HostError(f"config file {path}: resolves to {inside}, which {problem or 'is not allowed'}")
        return real

    def ids(self, owner: str) -> tuple[int, int]:
        """uid and gid for ``user[:group]`` as the *host's* passwd/group files say (not the agent's)."""
        user, _, group = owner.partition(":")
        uid, default_gid = self._lookup_user(user)
        gid = default_gid if not group else self._lookup_group(group)
        return uid, gid

    def _table(self, name: str) -> list[list[str]]:
        try:
            text = (self.root / "etc" / name).read_text()
        except OSError:
            return []
        return [ln.split(":") for ln in text.splitlines() if ln and not ln.startswith("#")]

    def _lookup_user(self, user: str) -> tuple[int, int]:
        if user.isdigit():
            return int(user), int(user)
        for f in self._table("passwd"):
            if len(f) > 3 and f[0] == user:
                return int(f[2]), int(f[3])
        raise HostError(f"owner: user {user!r} does not exist on this host")

    def _lookup_group(self, group: str) -> int:
        if group.isdigit():
            return int(group)
        for f in self._table("group"):
            if len(f) > 2 and f[0] == group:
                return int(f[2])
        raise HostError(f"owner: group {group!r} does not exist on this host")

    def file_matches(self, real: Path, content: bytes, mode: int, uid: int, gid: int) -> bool:
        try:
            st = real.lstat()
            return (st.st_mode & 0o7777) == mode and st.st_uid == uid and st.st_gid == gid \
                and real.read_bytes() == content
        except OSError:
            return False


def atomic_write(path: Path, data: bytes, *, mode: int, uid: int | None = None, gid: int | None = None) -> None:
    """Write ``path`` so a reader (or a crash) sees the old file or the new one, never a mix: a temporary
    file in the same folder with mode and owner set before it is renamed over, both fsynced."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.kokpit-tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, data)
        if uid is not None and gid is not None:
            os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
