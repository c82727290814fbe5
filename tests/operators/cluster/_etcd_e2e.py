"""Pieces the Upstream etcd end-to-end tests share: the ClusterPackageVersion, etcdctl with the Cluster's client
certificate, the operator in-process or as a process with timeouts a loaded machine's etcd members meet, the
roster the operator keeps, a stand-in kube-apiserver, and a watcher that samples etcd's membership while a
change runs (sizes seen, quorum violations, every member ever provisioned)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

from kokpit.api import install_crds
from kokpit.apiserver.testing import ApiServerProcess
from kokpit.client import NAMESPACE, POD, SECRET, Client
from kokpit.operators.cluster import CLUSTER, CLUSTER_LABEL, CPV, OperatorOptions
from kokpit.operators.cluster._etcd import RosterMember, read_roster
from kokpit.operators.cluster._upstream import secret_key

from ._e2e import free_range, local_kubelet, operator_stack
from .test_e2e_operator_restart import operator_process

Obj = dict[str, Any]
ETCD, ETCDCTL = shutil.which("etcd"), shutil.which("etcdctl")
NEEDS_ETCD = pytest.mark.skipif(ETCD is None or ETCDCTL is None, reason="Debian's etcd-server and etcd-client are "
                                "needed (.ci/run installs them)")


NS = "team-up"


def stack(apiserver: ApiServerProcess, tmp: Path) -> contextlib.AbstractAsyncContextManager[Client]:
    opts = OperatorOptions(workers=2, poll=0.3, resync=1.0, unhealthy_timeout=20.0, release_timeout=60.0,
                           data_root="/clusters", port_range=free_range(40))
    return operator_stack(apiserver, tmp, opts, "upstream-e2e")


def cpv(name: str, etcd_args: list[str]) -> Obj:
    return {"metadata": {"name": name}, "spec": {"kubernetesVersion": "v1.37.0", "flavor": "Upstream", "components": [
        {"name": "etcd", "image": "registry.k8s.io/etcd:3.5.21-0", "replicas": 3, "args": etcd_args},
        {"name": "kube-apiserver", "image": "registry.k8s.io/kube-apiserver:v1.37.0"}]}}



@contextlib.asynccontextmanager
async def upstream_cluster(apiserver: ApiServerProcess, tmp: Path, field_manager: str,
                           versions: dict[str, list[str]]) -> AsyncIterator[tuple[Client, Etcdctl]]:
    """Cluster ``c1`` in :data:`NS` on the first of ``versions`` (ClusterPackageVersion name → etcd args, each
    created), the CRDs installed and a local kubelet running its Pods; yields the client and etcdctl for its
    members.  No operator runs yet: each test starts its own, in-process or as a process it can kill."""
    async with Client.from_kubeconfig(apiserver.kubeconfig, field_manager=field_manager) as c:
        await install_crds(c)
        async with local_kubelet(c, tmp / "kubelet"):
            await c.create(NAMESPACE, {"metadata": {"name": NS}})
            for name, etcd_args in versions.items():
                await c.create(CPV, cpv(name, etcd_args))
            await c.create(CLUSTER, {"metadata": {"name": "c1", "namespace": NS},
                                     "spec": {"packageVersion": next(iter(versions))}}, NS)
            yield c, Etcdctl(c, tmp)

class Etcdctl:
    """etcdctl with the client certificate the operator keeps in the Cluster's PKI Secret."""

    def __init__(self, c: Client, tmp: Path) -> None:
        self.c, self.dir = c, tmp / "etcdctl"

    async def refresh(self) -> list[str]:
        """The client URLs of the members the operator provisioned (its roster)."""
        secret = await self.c.get(SECRET, "c1-pki", NS)
        self.dir.mkdir(exist_ok=True)
        for f in ("etcd/ca.crt", "etcd/healthcheck-client.crt", "etcd/healthcheck-client.key"):
            p = self.dir / f.replace("/", "_")
            p.write_bytes(base64.b64decode(secret["data"][secret_key(f)]))
            p.chmod(0o600)
        return [m.member.client_url for m in read_roster(secret).values() if not m.removing]

    def run(self, endpoints: list[str], *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([ETCDCTL or "etcdctl", f"--endpoints={','.join(endpoints)}",
                               f"--cacert={self.dir}/etcd_ca.crt", f"--cert={self.dir}/etcd_healthcheck-client.crt",
                               f"--key={self.dir}/etcd_healthcheck-client.key", "--command-timeout=5s", *args],
                              capture_output=True, text=True, timeout=30, env={**os.environ, "ETCDCTL_API": "3"})

    def healthy(self, endpoints: list[str]) -> int:
        r = self.run(endpoints, "endpoint", "health")
        return (r.stdout + r.stderr).count("is healthy")

    def members(self, endpoints: list[str]) -> list[Obj] | None:
        r = self.run(endpoints, "member", "list", "-w", "json")
        return json.loads(r.stdout)["members"] if r.returncode == 0 else None


async def etcd_pods(c: Client) -> list[Obj]:
    return [p for p in (await c.list(POD, NS, label_selector=f"{CLUSTER_LABEL}=c1")).items
            if p["metadata"]["labels"].get("kokpit.io/component") == "etcd"]


def pod_ready(p: Obj) -> bool:
    return any(x["type"] == "Ready" and x["status"] == "True" for x in (p.get("status") or {}).get("conditions") or [])


async def converged(c: Client, ctl: Etcdctl, version: str) -> bool:
    pods = await etcd_pods(c)
    if len(pods) != 3 or not all(pod_ready(p) and p["metadata"]["labels"]["kokpit.io/package-version"] == version
                                 and not p["metadata"].get("deletionTimestamp") for p in pods):
        return False
    eps = await ctl.refresh()
    members = ctl.members(eps)
    return len(eps) == 3 and members is not None and len(members) == 3 and ctl.healthy(eps) == 3


def operator(kubeconfig: Path, ports: tuple[int, int], log: Path) -> \
        contextlib.AbstractAsyncContextManager[asyncio.subprocess.Process]:
    """The operator process with timeouts an etcd member meets on a loaded machine (a healthy member that is
    slow to start must not be taken for a broken one)."""
    return operator_process(kubeconfig, ports, log, unhealthy_timeout=90, release_timeout=45)


async def roster(c: Client) -> dict[str, RosterMember]:
    """The members the operator provisioned (its recorded intent, in the Cluster's PKI Secret)."""
    return read_roster(await c.get(SECRET, "c1-pki", NS))


def stand_in_apiserver(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Where no upstream kube-apiserver binary is installed (the usual case), put a ``kube-apiserver`` on the
    local kubelet's PATH: kokpit's API server, a real Kubernetes API server process, started with the
    rendered Pod's serving certificate, key, client CA, address and port, so the operator's probes through the
    Service answer as they would from the real one (it does not use etcd).  False when a real one exists."""
    if shutil.which("kube-apiserver"):
        return False
    bin_dir, data = tmp / "bin", tmp / "kube-apiserver"
    bin_dir.mkdir()
    script = bin_dir / "kube-apiserver"
    script.write_text(f"""#!{sys.executable}
import os, sys, tempfile
flags = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
os.makedirs({str(data)!r}, exist_ok=True)
os.execv(sys.executable, [sys.executable, "-m", "kokpit.apiserver",
                          "--data-dir", tempfile.mkdtemp(dir={str(data)!r}),
                          "--host", flags["advertise-address"], "--port", flags["secure-port"],
                          "--tls-cert-file", flags["tls-cert-file"], "--tls-private-key-file",
                          flags["tls-private-key-file"], "--ca-file", flags["client-ca-file"]])
""")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    return True


class QuorumWatch:
    """Samples the membership every 0.3 s while in its ``async with``: every size etcd listed, every sample
    whose started members' healthy count is below quorum of the listed size, every roster name seen."""

    def __init__(self, c: Client, ctl: Etcdctl) -> None:
        self.c, self.ctl = c, ctl
        self.sizes: set[int] = set()
        self.violations: list[str] = []
        self.provisioned: set[str] = set()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):  # a sample the API server could not answer is just skipped
                self.provisioned |= set(await roster(self.c))
            members = await asyncio.to_thread(self.ctl.members, await self.ctl.refresh())
            if members is not None:
                self.sizes.add(len(members))
                started = [m for m in members if m.get("name")]
                healthy = await asyncio.to_thread(self.ctl.healthy, [u for m in started for u in m["clientURLs"]])
                if healthy < len(members) // 2 + 1:
                    self.violations.append(f"{healthy} healthy of {len(members)} members")
            await asyncio.sleep(0.3)

    async def __aenter__(self) -> QuorumWatch:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
