"""Package managers the agent drives: apt/dpkg for ``deb`` and dnf/rpm for ``rpm``, at exact versions.

Each manager answers two questions from the host itself — which version is installed, and is the package
database consistent — so an agent restarted in the middle of an install finds out what really happened
(``dpkg --audit``; a half-configured package is finished with ``dpkg --configure -a``) instead of trusting
what it remembered.  A failed install leaves the host consistent: the package manager's own error is kept
word for word, and a package left half-installed is put back to the version that was there (or removed when
there was none).

The rpm side follows the same contract; CI runs it with Debian's builds of rpm and dnf (there is no RPM
distribution to bootstrap from here; docs/nodes.md says what that leaves unverified).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from kokpit.agent._host import HostRoot

__all__ = ["Apt", "Dnf", "PackageError", "PackageManager", "Probe", "manager_for"]

_LOCK_WAIT = 600  # seconds apt/dnf wait for another package manager run to finish


class PackageError(Exception):
    """The package manager refused or failed; the text is its own error output."""


@dataclass(frozen=True)
class Probe:
    """What the package database says about one package."""

    version: str  # installed version ("" = not installed)
    broken: str = ""  # why the package is not in a consistent state ("" = fine)


class PackageManager(Protocol):
    kind: str

    def available(self) -> bool: ...
    async def probe(self, name: str) -> Probe: ...
    async def repair(self, timeout: float) -> None: ...
    async def install(self, component: str, name: str, version: str, repository: str, *, allow_downgrade: bool,
                      timeout: float, parameters: dict[str, str] | None = None) -> None: ...
    async def remove(self, name: str, timeout: float) -> None: ...


def manager_for(kind: str, host: HostRoot) -> PackageManager:
    if kind == "deb":
        return Apt(host)
    if kind == "rpm":
        return Dnf(host)
    raise PackageError(f"package.type {kind!r} has no package manager on a real host (deb and rpm do)")


class Apt:
    """apt-get/dpkg inside the host root."""

    kind = "deb"

    def __init__(self, host: HostRoot) -> None:
        self.host = host

    def available(self) -> bool:
        return self.host.has("apt-get") and self.host.has("dpkg")

    def _opts(self) -> list[str]:
        return ["-o", f"DPkg::Lock::Timeout={_LOCK_WAIT}", "-o", "Dpkg::Options::=--force-confdef",
                "-o", "Dpkg::Options::=--force-confold", "-o", "APT::Sandbox::User=root"]

    async def probe(self, name: str) -> Probe:
        r = await self.host.run(["dpkg-query", "-W", "-f=${db:Status-Abbrev}\t${Version}", name], timeout=60)
        if not r.ok:
            return Probe("")
        abbrev, _, version = r.stdout.partition("\t")
        want, state = (abbrev + "  ")[0], (abbrev + "  ")[1]
        if state == "i":  # installed (want may be hold)
            return Probe(version.strip())
        if state in ("n", "c") or not version.strip():  # not installed / only conffiles left
            return Probe("")
        return Probe(version.strip(), broken=f"dpkg state {abbrev.strip()!r} (want {want}) for {name} {version}")

    async def audit(self) -> str:
        r = await self.host.run(["dpkg", "--audit"], timeout=120)
        return r.stdout.strip()

    async def repair(self, timeout: float) -> None:
        """Finish what an interrupted dpkg left (what apt itself tells a person to run)."""
        if not await self.audit():
            return
        r = await self.host.run(["dpkg", "--force-confdef", "--force-confold", "--configure", "-a"],
                                timeout=timeout)
        if not r.ok:
            raise PackageError(f"dpkg --configure -a: {r.error_text()}")

    async def _known(self, name: str, version: str) -> bool:
        r = await self.host.run(["apt-cache", "show", f"{name}={version}"], timeout=120)
        return r.ok

    async def _update(self, component: str, repository: str, timeout: float) -> None:
        cmd = ["apt-get", "update", "-q", *self._opts()]
        if repository:
            rel = f"sources.list.d/kokpit-{component}.list"
            cmd += ["-o", f"Dir::Etc::sourcelist={rel}", "-o", "Dir::Etc::sourceparts=-",
                    "-o", "APT::Get::List-Cleanup=0"]
        r = await self.host.run(cmd, timeout=timeout)
        if not r.ok:
            raise PackageError(f"apt-get update: {r.error_text()}")

    async def install(self, component: str, name: str, version: str, repository: str, *, allow_downgrade: bool,
                      timeout: float, parameters: dict[str, str] | None = None) -> None:
        before = await self.probe(name)
        if before.version == version and not before.broken:
            return  # idempotent: already there
        if before.version and not allow_downgrade and await self._older(version, before.version):
            raise PackageError(f"{name} {version} is older than the installed {before.version} and "
                               "install.allowDowngrade is false")
        if repository:
            from kokpit.agent._host import atomic_write  # local: only this path writes apt sources

            atomic_write(self.host.root / "etc/apt/sources.list.d" / f"kokpit-{component}.list",
                         (repository.strip() + "\n").encode(), mode=0o644)
        if not await self._known(name, version):
            await self._update(component, repository, timeout)
        cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *self._opts()]
        if allow_downgrade:
            cmd.append("--allow-downgrades")
        r = await self.host.run([*cmd, f"{name}={version}"], timeout=timeout)
        if r.ok:
            return
        error = f"apt-get install {name}={version}: {r.error_text()}"
        await self._restore(name, before.version, timeout)
        raise PackageError(error)

    async def _older(self, a: str, b: str) -> bool:
        r = await self.host.run(["dpkg", "--compare-versions", a, "lt", b], timeout=30)
        return r.ok

    async def _restore(self, name: str, previous: str, timeout: float) -> None:
        """After a failed install: leave no half-installed package behind."""
        now = await self.probe(name)
        if not now.broken and now.version == previous:
            return
        if previous:
            await self.host.run(["apt-get", "install", "-y", "-q", "--allow-downgrades", *self._opts(),
                                 f"{name}={previous}"], timeout=timeout)
        else:
            await self.host.run(["dpkg", "--remove", "--force-remove-reinstreq", name], timeout=timeout)

    async def remove(self, name: str, timeout: float) -> None:
        if not (await self.probe(name)).version:
            return
        r = await self.host.run(["apt-get", "remove", "-y", "-q", *self._opts(), name], timeout=timeout)
        if not r.ok:
            raise PackageError(f"apt-get remove {name}: {r.error_text()}")


class Dnf:
    """dnf/rpm inside the host root (``--installroot`` is not used: the commands run in the chroot)."""

    kind = "rpm"

    def __init__(self, host: HostRoot) -> None:
        self.host = host

    def available(self) -> bool:
        return self.host.has("rpm") and self.host.has("dnf")

    async def probe(self, name: str) -> Probe:
        r = await self.host.run(["rpm", "-q", "--qf", "%{EPOCH}:%{VERSION}-%{RELEASE}\n", name], timeout=60)
        if not r.ok:
            return Probe("")
        versions = [v.removeprefix("(none):") for v in r.stdout.split()]
        if len(versions) > 1:  # two versions at once: an interrupted transaction
            return Probe(versions[-1], broken=f"{len(versions)} versions of {name} installed: {', '.join(versions)}")
        return Probe(versions[0] if versions else "")

    async def repair(self, timeout: float) -> None:
        """rpm transactions leave no half-configured packages; an interrupted dnf can leave two versions of one
        package, which ``dnf remove --duplicates`` cleans (install-only packages such as kernels excepted)."""
        r = await self.host.run(["rpm", "-qa", "--qf", "%{NAME}.%{ARCH}\n"], timeout=120)
        names = [n for n in r.stdout.split() if not n.startswith(("gpg-pubkey", "kernel"))]
        if len(names) == len(set(names)):
            return
        r = await self.host.run(["dnf", "-y", "-q", "remove", "--duplicates"], timeout=timeout)
        if not r.ok:
            raise PackageError(f"dnf remove --duplicates: {r.error_text()}")

    def _repo(self, component: str, repository: str, parameters: dict[str, str]) -> list[str]:
        """``package.repository`` is a baseurl; ``install.parameters.gpgcheck: "false"`` turns signature
        checks off for that repository only (the rpm twin of apt's ``[trusted=yes]``)."""
        if not repository:
            return []
        out = [f"--repofrompath=kokpit-{component},{repository}"]
        if parameters.get("gpgcheck", "").lower() in ("0", "false", "no"):
            out.append(f"--setopt=kokpit-{component}.gpgcheck=0")
        return out

    async def _cmp(self, a: str, b: str) -> int:
        r = await self.host.run(["rpm", "--eval", f"%{{lua: print(rpm.vercmp('{a}', '{b}'))}}"], timeout=30)
        try:
            return int(r.stdout.strip())
        except ValueError:
            raise PackageError(f"cannot compare rpm versions {a} and {b}: {r.error_text()}") from None

    async def install(self, component: str, name: str, version: str, repository: str, *, allow_downgrade: bool,
                      timeout: float, parameters: dict[str, str] | None = None) -> None:
        before = await self.probe(name)
        if before.version.split(":")[-1] == version.split(":")[-1] and not before.broken:
            return
        verb = "install"
        if before.version and await self._cmp(version, before.version) < 0:
            if not allow_downgrade:
                raise PackageError(f"{name} {version} is older than the installed {before.version} and "
                                   "install.allowDowngrade is false")
            verb = "downgrade"
        cmd = ["dnf", "-y", "-q", "--setopt=install_weak_deps=False", *self._repo(component, repository, parameters or {}), verb,
               f"{name}-{version.split(':')[-1]}"]
        r = await self.host.run(cmd, timeout=timeout)
        if not r.ok:
            raise PackageError(f"dnf {verb} {name}-{version}: {r.error_text()}")

    async def remove(self, name: str, timeout: float) -> None:
        if not (await self.probe(name)).version:
            return
        r = await self.host.run(["dnf", "-y", "-q", "remove", name], timeout=timeout)
        if not r.ok:
            raise PackageError(f"dnf remove {name}: {r.error_text()}")
