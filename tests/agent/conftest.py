"""Real hosts for the node agent's tests: a Debian root filesystem (mmdebstrap, cached under .cache/), test
packages built with dpkg-deb and served from a local apt repository, and a "fake machine" per test — a
private mount and network namespace (unshare) holding an overlay of the cached root, so each test gets a
fresh writable Debian host, sysctls land in a network namespace of its own, and nothing leaks when it ends.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kokpit.nodes.mtls import TLSFiles, local_pki

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE = REPO_ROOT / ".cache" / "node-agent"
ROOTFS = CACHE / "rootfs-bookworm-minbase"
DEMO = "kokpit-demo"
HOLD = "var/tmp/kokpit-hold"  # while it exists, the demo package's 2.0 postinst waits (kill -9 test)
POSTINST_STARTED = "var/tmp/kokpit-postinst-started"


def _build_rootfs(folder: Path = ROOTFS, include: str = "") -> Path:
    """mmdebstrap --variant=minbase bookworm (plus ``include`` packages), once per machine (a lock for
    parallel sessions)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (folder / "usr/bin/apt-get").exists():
            return folder
        if shutil.which("mmdebstrap") is None:
            pytest.fail("mmdebstrap is not installed: .ci/run installs it (apt-get install mmdebstrap)")
        tmp = folder.with_suffix(".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        extra = [f"--include={include}"] if include else []
        r = subprocess.run(["mmdebstrap", "--variant=minbase", "--mode=root", "--quiet", *extra, "bookworm",
                            str(tmp)], capture_output=True, text=True, timeout=1500)
        if r.returncode != 0:
            pytest.fail(f"mmdebstrap failed: {r.stderr[-2000:]}")
        tmp.rename(folder)
        return folder


@pytest.fixture(scope="session")
def debian_rootfs() -> Path:
    return _build_rootfs()


@pytest.fixture(scope="session")
def rpm_rootfs() -> Path:
    """A Debian root with rpm, dnf and createrepo_c from Debian's archive: the real rpm/dnf toolchain, in the
    only package mirror CI has (there is no RPM distribution to bootstrap from here)."""
    return _build_rootfs(CACHE / "rootfs-bookworm-rpm", "rpm,dnf,createrepo-c")


RPM_SPEC = """Name: kokpit-demo
Version: %{ver}
Release: 1
Summary: kokpit node agent test package
License: MIT
BuildArch: noarch
%description
kokpit node agent test package
%install
mkdir -p %{buildroot}/usr/share/kokpit-demo
echo %{ver} > %{buildroot}/usr/share/kokpit-demo/version
%files
/usr/share/kokpit-demo/version
"""


@pytest.fixture(scope="session")
def rpm_repo(tmp_path_factory: pytest.TempPathFactory, rpm_rootfs: Path) -> Path:
    """A layer holding /srv/rpm-repo: kokpit-demo 1.0-1 and 2.0-1 built with rpmbuild, indexed by
    createrepo_c (both run inside a throwaway host of the rpm root)."""
    base = tmp_path_factory.mktemp("rpm-build")
    host = FakeHost(base / "host", [rpm_rootfs])
    try:
        (host.merged / "tmp").mkdir(exist_ok=True)
        host.sh(f"cat > /tmp/demo.spec <<'EOF'\n{RPM_SPEC}EOF\n"
                "for v in 1.0 2.0; do rpmbuild -bb --define \"ver $v\" --define '_topdir /tmp/rb' "
                "--define '_rpmdir /srv/rpm-repo' /tmp/demo.spec; done && createrepo_c -q /srv/rpm-repo")
        layer = base / "layer"
        shutil.copytree(base / "host/upper/srv", layer / "srv")
    finally:
        host.close()
    return layer


def build_deb(out: Path, version: str, *, postinst: str = "") -> Path:
    """The demo package at ``version``: a version file and a tiny command; ``postinst`` as given."""
    work = out / f"build-{version}"
    shutil.rmtree(work, ignore_errors=True)
    (work / "DEBIAN").mkdir(parents=True)
    (work / "DEBIAN/control").write_text(
        f"Package: {DEMO}\nVersion: {version}\nArchitecture: all\nMaintainer: kokpit <dev@example.invalid>\n"
        f"Description: kokpit node agent test package\n")
    if postinst:
        (work / "DEBIAN/postinst").write_text("#!/bin/sh\nset -e\n" + postinst + "\n")
        (work / "DEBIAN/postinst").chmod(0o755)
    share = work / "usr/share" / DEMO
    share.mkdir(parents=True)
    (share / "version").write_text(version + "\n")
    deb = out / f"{DEMO}_{version}_all.deb"
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(work), str(deb)], check=True,
                   capture_output=True)
    shutil.rmtree(work)
    return deb


def write_packages_index(repo: Path) -> None:
    """A flat apt repository's Packages file (what dpkg-scanpackages writes), from each .deb's control."""
    stanzas = []
    for deb in sorted(repo.glob("*.deb")):
        control = subprocess.run(["dpkg-deb", "-f", str(deb)], check=True, capture_output=True,
                                 text=True).stdout.strip()
        data = deb.read_bytes()
        stanzas.append(f"{control}\nFilename: ./{deb.name}\nSize: {len(data)}\n"
                       f"SHA256: {hashlib.sha256(data).hexdigest()}\n")
    (repo / "Packages").write_text("\n".join(stanzas))


@pytest.fixture(scope="session")
def demo_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A layer holding /srv/kokpit-repo: demo 1.0-1, 2.0-1 (postinst can be held), 3.0-1 (postinst fails)."""
    layer = tmp_path_factory.mktemp("repo-layer")
    repo = layer / "srv/kokpit-repo"
    repo.mkdir(parents=True)
    build_deb(repo, "1.0-1")
    build_deb(repo, "2.0-1", postinst=f"touch /{POSTINST_STARTED}\nwhile [ -e /{HOLD} ]; do sleep 0.1; done")
    build_deb(repo, "3.0-1", postinst='echo "kokpit-demo 3.0 cannot configure itself" >&2\nexit 1')
    write_packages_index(repo)
    return layer


REPOSITORY = "deb [trusted=yes] file:/srv/kokpit-repo ./"


class FakeHost:
    """A Debian machine in miniature: overlay root + private mount and network namespaces, held by a
    ``sleep`` process; the agent enters its mount namespace and applies sysctls in its network namespace."""

    def __init__(self, base: Path, lowers: list[Path]) -> None:
        self.base = base
        self.merged = base / "root"
        for d in ("upper", "work", "root"):
            (base / d).mkdir(parents=True, exist_ok=True)
        lower = ":".join(str(p) for p in lowers)
        script = (f"mount -t overlay overlay -o lowerdir={lower},upperdir={base}/upper,workdir={base}/work "
                  f"{self.merged} && mount -t proc proc {self.merged}/proc && echo ready && exec sleep 86400")
        self.holder = subprocess.Popen(["unshare", "--mount", "--net", "--propagation", "private", "sh", "-c",
                                        script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.holder.stdout is not None
        line = self.holder.stdout.readline()
        if line.strip() != "ready":
            self.holder.kill()
            pytest.fail(f"fake host did not start: {line} {self.holder.stderr.read() if self.holder.stderr else ''}")
        self.pid = self.holder.pid
        self.netns = Path(f"/proc/{self.pid}/ns/net")

    def sh(self, script: str, *, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a shell script on the host (inside its root)."""
        r = subprocess.run(["nsenter", "-t", str(self.pid), "-m", "--", "chroot", str(self.merged), "/bin/sh", "-c",
                            script], capture_output=True, text=True, timeout=120)
        if check and r.returncode != 0:
            raise AssertionError(f"{script!r} failed: {r.stdout}{r.stderr}")
        return r

    def netns_read(self, path: str) -> str:
        return subprocess.run(["nsenter", "-t", str(self.pid), "-n", "cat", path], capture_output=True, text=True,
                              check=True).stdout.strip()

    def close(self) -> None:
        self.holder.kill()
        self.holder.wait()
        for f in (self.holder.stdout, self.holder.stderr):
            if f is not None:
                f.close()


class AgentProcess:
    """``kokpit node-agent`` for one fake host, as a real process (killable with -9)."""

    def __init__(self, host: FakeHost, server_tls: Path, node: str, log: Path, *, extra: list[str] | None = None):
        self.host = host
        self.server_tls = server_tls
        self.node = node
        self.log = log
        self.extra = extra or []
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.port = 0

    def start(self, timeout: float = 60.0) -> str:
        ready = self.log.with_suffix(".ready")
        ready.unlink(missing_ok=True)
        cmd = ["nsenter", "-t", str(self.host.pid), "-m", "--", sys.executable, "-m", "kokpit.cli.main",
               "node-agent", "--node", self.node, "--root", str(self.host.merged), "--tls-dir", str(self.server_tls),
               "--port", str(self.port), "--netns", str(self.host.netns), "--refresh-interval", "1",
               "--ready-file", str(ready), "--disk-min-free-mib", "0", "--disk-min-free-percent", "0",
               *self.extra]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if self.proc.poll() is not None:
                raise AssertionError(f"agent exited {self.proc.returncode}: {self.log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"agent not ready in {timeout}s: {self.log.read_text()[-3000:]}")
            time.sleep(0.1)
        self.url = ready.read_text().strip()
        self.port = int(self.url.rsplit(":", 1)[1])  # a restart reuses the port, as a real agent would
        return self.url

    def kill9(self) -> None:
        """kill -9 of the agent and everything it started (its process group: what systemd's
        KillMode=control-group or a container runtime does to a dying agent's children)."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@pytest.fixture(scope="session")
def driver_pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[TLSFiles, TLSFiles]:
    """(the agent's serving credentials, the operator's client credentials) from one node-driver CA."""
    return local_pki(tmp_path_factory.mktemp("driver-pki"), ["127.0.0.1"])


@pytest.fixture
def fake_host(tmp_path: Path, debian_rootfs: Path, demo_repo: Path) -> Iterator[FakeHost]:
    host = FakeHost(tmp_path / "host", [demo_repo, debian_rootfs])
    try:
        yield host
    finally:
        host.close()


@pytest.fixture
def agent(fake_host: FakeHost, driver_pki: tuple[TLSFiles, TLSFiles], tmp_path: Path) -> Iterator[AgentProcess]:
    a = AgentProcess(fake_host, driver_pki[0].ca_file.parent, "demo-node", tmp_path / "agent.log")
    a.start()
    try:
        yield a
    finally:
        a.stop()
