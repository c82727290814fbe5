"""Config files and sysctl settings of a component: checked, written atomically, applied, read back.

Files are written with their mode and owner set before the rename, so no reader ever sees a half-written
file or one with the wrong permissions.  Sysctls are written to the kernel (``/proc/sys``) *and* persisted
in ``/etc/sysctl.d/90-kokpit-<component>.conf``, so a reboot keeps them; the value reported back is read from
the kernel.  Every check runs before anything is written, so a request with one bad key changes nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kokpit.agent._host import HostError, HostRoot, atomic_write
from kokpit.api.machine import PackageConfig

__all__ = ["AppliedConfig", "ConfigApplier"]

PROC_SYS = Path("/proc/sys")


def _sysctl_path(key: str) -> Path:
    return PROC_SYS / key.replace(".", "/")


@dataclass
class AppliedConfig:
    """What the host has for a component's config, as read back (for state messages and details)."""

    files: list[dict[str, Any]] = field(default_factory=list)
    sysctl: dict[str, dict[str, str]] = field(default_factory=dict)
    drift: str = ""

    def summary(self) -> str:
        if not self.files and not self.sysctl:
            return ""
        parts = []
        if self.files:
            parts.append(f"{len(self.files)} config file{'s' if len(self.files) > 1 else ''}")
        if self.sysctl:
            parts.append(", ".join(f"{k}={v['have']}" for k, v in sorted(self.sysctl.items())))
        return "applied " + "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"files": self.files, "sysctl": self.sysctl, "drift": self.drift}


class ConfigApplier:
    def __init__(self, host: HostRoot) -> None:
        self.host = host
        self.last: dict[str, AppliedConfig] = {}

    def persist_path(self, component: str) -> Path:
        return self.host.root / "etc/sysctl.d" / f"90-kokpit-{component}.conf"

    def check(self, config: PackageConfig) -> None:
        """Raise HostError for anything this host cannot take; nothing is written."""
        for f in config.files:
            self.host.resolve_config_path(f.path)
            self.host.ids(f.owner)
        for key in config.sysctl:
            if not _sysctl_path(key).exists():
                raise HostError(f"config.sysctl[{key}]: no such sysctl on this host ({_sysctl_path(key)} "
                                "does not exist)")

    async def _read_sysctl(self, key: str) -> str:
        if self.host.netns is None:
            try:
                return _sysctl_path(key).read_text().strip()
            except OSError as e:
                return f"unreadable: {e.strerror}"
        r = await self.host.run(["nsenter", f"--net={self.host.netns}", "cat", str(_sysctl_path(key))],
                                timeout=30, in_root=False)
        return r.stdout.strip() if r.ok else f"unreadable: {r.error_text()}"

    async def _write_sysctl(self, key: str, value: str) -> None:
        path = _sysctl_path(key)
        if self.host.netns is None:
            try:
                path.write_text(value)
            except OSError as e:
                raise HostError(f"config.sysctl[{key}]: cannot set {value!r}: {e.strerror}") from None
            return
        r = await self.host.run(["nsenter", f"--net={self.host.netns}", "sh", "-c", 'printf "%s" "$2" > "$1"',
                                 "sh", str(path), value], timeout=30, in_root=False)
        if not r.ok:
            raise HostError(f"config.sysctl[{key}]: cannot set {value!r}: {r.error_text()}")

    async def apply(self, component: str, config: PackageConfig) -> None:
        self.check(config)
        for f in config.files:
            real = self.host.resolve_config_path(f.path)
            uid, gid = self.host.ids(f.owner)
            mode = int(f.mode, 8)
            data = f.content.encode()
            if not self.host.file_matches(real, data, mode, uid, gid):
                atomic_write(real, data, mode=mode, uid=uid, gid=gid)
        for key, value in config.sysctl.items():
            if await self._read_sysctl(key) != _norm(value):
                await self._write_sysctl(key, value)
        persist = self.persist_path(component)
        if config.sysctl:
            body = f"# written by kokpit node-agent for component {component}\n" + "".join(
                f"{k} = {v}\n" for k, v in sorted(config.sysctl.items()))
            with contextlib.suppress(OSError):
                if persist.read_text() == body:
                    return
            atomic_write(persist, body.encode(), mode=0o644)
        elif persist.exists():
            persist.unlink()

    async def remove(self, component: str, config: PackageConfig) -> None:
        """Uninstall: the component's files and its persisted sysctls go (the kernel keeps its current
        values until the next boot, as ``sysctl --system`` semantics would)."""
        for f in config.files:
            with contextlib.suppress(HostError, FileNotFoundError):
                self.host.resolve_config_path(f.path).unlink()
        with contextlib.suppress(FileNotFoundError):
            self.persist_path(component).unlink()
        self.last.pop(component, None)

    async def observe(self, component: str, config: PackageConfig) -> AppliedConfig:
        out = AppliedConfig()
        drift: list[str] = []
        for f in config.files:
            entry: dict[str, Any] = {"path": f.path, "wantMode": f.mode, "wantOwner": f.owner}
            try:
                real = self.host.resolve_config_path(f.path)
                st = real.lstat()
                data = real.read_bytes()
                entry |= {"mode": f"{st.st_mode & 0o7777:04o}", "uid": st.st_uid, "gid": st.st_gid,
                          "sha256": hashlib.sha256(data).hexdigest()}
                uid, gid = self.host.ids(f.owner)
                ok = self.host.file_matches(real, f.content.encode(), int(f.mode, 8), uid, gid)
            except (OSError, HostError) as e:
                entry["error"] = str(e)
                ok = False
            entry["matches"] = ok
            if not ok:
                drift.append(f"{f.path} differs")
            out.files.append(entry)
        for key, value in config.sysctl.items():
            have = await self._read_sysctl(key)
            out.sysctl[key] = {"want": value, "have": have}
            if have != _norm(value):
                drift.append(f"sysctl {key} is {have}, want {value}")
        out.drift = "; ".join(drift)
        self.last[component] = out
        return out


def _norm(value: str) -> str:
    """The kernel reads back multi-value sysctls tab-separated ("4096 87380" → "4096\t87380")."""
    return "\t".join(value.split())
