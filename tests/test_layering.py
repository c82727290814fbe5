"""The layer table of kokpit: which package may import which, and who may touch the network.

Every package under ``src/kokpit`` (every folder holding a module) has a row in :data:`LAYERS`, in the
spirit of import-linter's contracts (which kopf uses): the kokpit packages it may import besides itself,
and the modules of it that may open raw network connections or listen, each with the reason.  The test
reads every module's imports and calls with ``ast`` and fails on

- a package without a row (a new package must be added here; a row whose package is gone fails too);
- an import of a kokpit package its row does not list (the root ``kokpit``, which holds only
  ``__version__``, may be imported by everyone);
- raw network access outside the modules its row allows: an HTTP/network library (lightkube, httpx,
  httpx2, uvicorn, urllib.request, http.client, aiohttp, requests, ...), a socket beyond
  ``socket.gethostname``, or asyncio's connection and server calls (``open_connection``,
  ``start_server``, ``create_connection``, ...).

Talking to a Kubernetes API server goes through :mod:`kokpit.client`; to kokpit's own JSON endpoints
through ``kokpit.client.JsonHttpClient``; anything lower-level through :mod:`kokpit._lib.http1`, the one
HTTP/1.1 client (in ``_lib`` because the API server, which may not import the client, needs it too).
docs/architecture.md points here.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "kokpit"


@dataclass(frozen=True)
class Layer:
    """One row: what the package is for, which kokpit packages it may import, and which of its modules
    (names relative to the package, ``"*"`` for all of them) may use the network, and why."""

    role: str
    may_import: tuple[str, ...] = ()
    network: dict[str, str] = field(default_factory=dict)


_LIB = "kokpit._lib"
_API = "kokpit.api"
_CLIENT = "kokpit.client"
_RUNTIME = "kokpit.runtime"
# an operator (and any new controller-like component) builds on these and nothing else: never on another
# operator, the API server, the CLI or the process/host machinery
OPERATOR = (_LIB, _API, _CLIENT, _RUNTIME)

LAYERS: dict[str, Layer] = {
    "kokpit": Layer("the package root: __version__; `python -m kokpit` runs the CLI", ("kokpit.cli",)),
    "kokpit._lib": Layer(
        "small shared helpers (clock, backoff, tasks, PKI) and the one low-level HTTP/1.1 client",
        network={"http1": "kokpit's one low-level HTTP/1.1 client (kokpit.client and the API server's "
                          "pods/log proxy build on it)",
                 "metricsserver": "listens: every process's HTTPS /metrics (bearer token) and probe endpoint"}),
    "kokpit.api": Layer("typed models of kokpit's kinds, their CRDs", (_LIB, _CLIENT)),
    "kokpit.client": Layer("the only Kubernetes API client", (_LIB,),
                           network={"*": "lightkube and httpx2 for the Kubernetes API, LeanPool on _lib.http1"}),
    "kokpit.runtime": Layer("informers, work queues, controllers, leader election, the operator skeleton",
                            (_LIB, _API, _CLIENT)),
    "kokpit.apiserver": Layer(
        "the embedded API server (imports no client, runtime or operator code)",
        (_LIB, "kokpit.apiserver.patch", "kokpit.apiserver.storage"),
        network={"server": "listens: uvicorn on the API server's socket",
                 "testing": "test helper (kokpit's envtest): starts a server and polls it over HTTPS"}),
    "kokpit.apiserver.patch": Layer("the patch engine: pure functions on JSON values", ("kokpit.apiserver",)),
    "kokpit.apiserver.storage": Layer("the API server's revisioned store (SQLite WAL)", (_LIB, "kokpit.apiserver")),
    "kokpit.nodes": Layer(
        "node drivers: how the machine operator reaches a host, and the mTLS driver endpoint", (_LIB, _API, _CLIENT),
        network={"mtls": "listens: DriverServer, the mutual-TLS node driver endpoint (simulator, node agent)",
                 "repair": "dials: the site's repair webhook (reboot, reinstall, power cycle)"}),
    "kokpit.agent": Layer(
        "the node agent: the node driver for real hosts (package managers, config, faults)",
        (_LIB, _API, _CLIENT, _RUNTIME, "kokpit.nodes"),
        network={"_health": "dials: a component's http health check URL"}),
    "kokpit.kubelet": Layer(
        "the local kubelet: one Node whose Pods are local processes (embedded mode)",
        (_LIB, _API, _CLIENT, _RUNTIME),
        network={"_http": "listens: serves containerLogs to the API server; dials containers' httpGet and "
                          "tcpSocket probes"}),
    "kokpit.simulator": Layer(
        "simulated fleet hosts: Nodes, heartbeats, pods, the node driver API (served by nodes.mtls), faults",
        (_LIB, _API, _CLIENT, _RUNTIME, "kokpit.nodes")),
    "kokpit.operators": Layer("the operators' namespace (each operator is its own row)", OPERATOR),
    "kokpit.operators.cluster": Layer(
        "the cluster operator: business clusters' control planes as Pods", OPERATOR,
        network={"_resources": "binds a socket to see whether a NodePort is free on this host (embedded mode)"}),
    "kokpit.operators.machine": Layer("the machine operator: hosts through node drivers", (*OPERATOR, "kokpit.nodes")),
    "kokpit.operators.maintenance": Layer(
        "maintenance flows: isolate, migrate, drain, repair (node drivers), verify, restore; escalation, storms",
        (*OPERATOR, "kokpit.nodes")),
    "kokpit.operators.risk": Layer("the risk center: Permits decided against RiskPolicies, the RiskLedger, "
                                   "gates (PromQL through client.JsonHttpClient), probers, breakers", OPERATOR),
    "kokpit.operators.faults": Layer("node faults: the catalog, the event center (NodeFaults), the detector "
                                     "(node-problem-detector, Lease, Ready, components), webhooks (client."
                                     "JsonHttpClient)", OPERATOR),
    "kokpit.operators.rollout": Layer("the rollout controller: canary waves over Clusters and Machines, through "
                                      "the risk center, with automatic rollback", OPERATOR),
    "kokpit.scheduler": Layer("a business cluster's scheduler: binds pods to nodes (kube-scheduler's rules)", OPERATOR),
    "kokpit.controllermanager": Layer(
        "a business cluster's controller-manager: workloads, node lifecycle, disruption budgets, readiness reports",
        OPERATOR),
    "kokpit.manifests": Layer(
        "install manifests for a real meta cluster (`kokpit manifests`, deploy/) and each component's RBAC",
        (_API,)),
    "kokpit.portal": Layer(
        "the web portal: fleet pages, the controlled change process, the legacy adapter (acts as the user)",
        (_LIB, _API, _CLIENT, _RUNTIME),
        network={"_server": "listens: uvicorn serving the portal (HTTPS, or HTTP on a loopback address)",
                 "_auth": "lightkube's kubeconfig model only: the user's token on the meta cluster's config "
                          "(kokpit.client makes the calls)",
                 "_cache": "lightkube's kubeconfig parser only: a business cluster's kubeconfig Secret"}),
    "kokpit.up": Layer(
        "`kokpit up`: composes a whole fleet of processes",
        (_LIB, _API, _CLIENT, _RUNTIME, "kokpit.operators.cluster", "kokpit.operators.machine", "kokpit.simulator",
         "kokpit.nodes", "kokpit.controllermanager", "kokpit.manifests"),
        network={"_up": "binds a socket to pick free ports for the processes it starts"}),
    "kokpit.cli": Layer(
        "the `kokpit` command: the top of the stack, may start anything",
        (_LIB, _API, _CLIENT, _RUNTIME, "kokpit.apiserver", "kokpit.kubelet", "kokpit.nodes", "kokpit.simulator",
         "kokpit.operators.cluster", "kokpit.operators.machine", "kokpit.operators.risk", "kokpit.up",
         "kokpit.operators.maintenance",
         "kokpit.scheduler", "kokpit.controllermanager", "kokpit.agent", "kokpit.manifests", "kokpit.portal",
         "kokpit.operators.rollout", "kokpit.operators.faults")),
}

NETWORK_MODULES = ("lightkube", "httpx", "httpx2", "uvicorn", "urllib.request", "urllib3", "http.client",
                   "http.server", "socketserver", "aiohttp", "requests", "websockets", "h11", "h2", "grpc",
                   "ftplib", "smtplib", "xmlrpc.client", "paramiko", "asyncssh")
NETWORK_CALLS = {"open_connection", "start_server", "open_unix_connection", "start_unix_server",
                 "create_connection", "create_server", "create_unix_connection", "create_unix_server",
                 "create_datagram_endpoint", "sock_connect", "sock_accept", "connect_accepted_socket"}
HARMLESS_SOCKET = {"gethostname", "getfqdn"}


def _module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _package_of_file(path: Path, src: Path) -> str:
    return ".".join(path.parent.relative_to(src).parts)


def _imports(tree: ast.AST, me: str, package: str) -> list[tuple[int, str]]:
    """Absolute names of every module ``me`` imports (relative imports resolved; ``from m import n``
    yields both ``m`` and ``m.n``)."""
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


def _network_uses(tree: ast.AST, imports: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """(line, what) for every raw network access in one module."""
    out = [(line, name) for line, name in imports
           if any(_within(name, m) for m in NETWORK_MODULES)
           or (_within(name, "socket") and name not in ("socket", *(f"socket.{h}" for h in HARMLESS_SOCKET)))
           or name in {f"asyncio.{c}" for c in NETWORK_CALLS}]
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            if isinstance(node.value, ast.Name) and node.value.id == "socket" and node.attr not in HARMLESS_SOCKET:
                out.append((node.lineno, f"socket.{node.attr}"))
            elif node.attr in NETWORK_CALLS:
                out.append((node.lineno, f"…{node.attr}()"))
    first: dict[int, str] = {}
    for line, what in out:
        first.setdefault(line, what)  # one report per line
    return sorted(first.items())


def discovered_packages(root: Path = PKG) -> set[str]:
    src = root.parent
    return {_package_of_file(p, src) for p in root.rglob("*.py")}


def layering_violations(root: Path = PKG, layers: dict[str, Layer] | None = None) -> list[str]:
    layers = LAYERS if layers is None else layers
    src = root.parent
    packages = discovered_packages(root)
    bad = [f"package {p} has no row in LAYERS (tests/test_layering.py): add what it may import"
           for p in sorted(packages - set(layers))]
    bad += [f"LAYERS has a row for {p}, which no longer exists: remove it" for p in sorted(set(layers) - packages)]
    known = packages | set(layers)
    unused = {(p, m) for p, layer in layers.items() for m in layer.network if m != "*"}
    for path in sorted(root.rglob("*.py")):
        me = _module_name(path, src)
        package = _package_of_file(path, src)
        layer = layers.get(package)
        if layer is None:
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        imports = _imports(tree, me, package)
        where = str(path.relative_to(src))
        reported: set[tuple[int, str]] = set()
        for line, name in imports:
            if not _within(name, "kokpit"):
                continue
            target = max((p for p in known if _within(name, p)), key=len, default="kokpit")
            if target == package or (target == "kokpit" and name in ("kokpit", "kokpit.__version__")):
                continue  # itself, or the root's __version__
            if target not in layer.may_import and (line, target) not in reported:
                reported.add((line, target))
                bad.append(f"{where}:{line} imports {name}: {package} may not import {target} "
                           f"(its row allows {', '.join(layer.may_import) or 'no kokpit package'})")
        module = me[len(package) + 1:] if me != package else "__init__"
        uses = _network_uses(tree, imports)
        if module in layer.network:
            unused.discard((package, module))
            if not uses:
                bad.append(f"{where}: allowed the network in LAYERS but uses none: remove {module!r} from "
                           f"the network column of {package}")
        if "*" in layer.network or module in layer.network:
            continue
        for line, what in uses:
            bad.append(f"{where}:{line} uses the network ({what}): only modules listed in the network column "
                       f"may; go through kokpit.client or kokpit._lib.http1")
    bad += [f"LAYERS allows the network to {p}.{m}, which does not exist: remove it" for p, m in sorted(unused)
            if p in packages]
    return bad


def test_every_package_has_a_row_and_keeps_to_it() -> None:
    assert PKG.is_dir() and len(discovered_packages()) >= 10
    assert layering_violations() == []


def test_every_row_names_real_packages() -> None:
    for name, layer in LAYERS.items():
        assert layer.role, name
        assert set(layer.may_import) <= set(LAYERS), (name, set(layer.may_import) - set(LAYERS))
        assert name not in layer.may_import, name


def _plant(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "src" / "kokpit"
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


TINY = {
    "kokpit": Layer("root"),
    "kokpit._lib": Layer("lib", network={"http1": "the one client"}),
    "kokpit.client": Layer("client", ("kokpit._lib",), network={"*": "the client"}),
    "kokpit.runtime": Layer("runtime", ("kokpit._lib", "kokpit.client")),
    "kokpit.apiserver": Layer("server", ("kokpit._lib",), network={"server": "listens"}),
    "kokpit.operators": Layer("operators", OPERATOR[:1]),
    "kokpit.operators.cluster": Layer("cluster", ("kokpit._lib", "kokpit.client", "kokpit.runtime")),
    "kokpit.operators.machine": Layer("machine", ("kokpit._lib", "kokpit.client", "kokpit.runtime")),
    "kokpit.cli": Layer("cli", ("kokpit.apiserver", "kokpit.runtime")),
}
CLEAN = {
    "__init__.py": "",
    "_lib/http1.py": "import asyncio\nasync def f():\n    return await asyncio.open_connection('h', 1)\n",
    "client/ok.py": "import lightkube\nimport httpx2\nfrom kokpit._lib import http1\n",
    "runtime/ok.py": "import socket\nfrom kokpit.client import Client\nname = socket.gethostname()\n",
    "apiserver/server.py": "import socket\nimport uvicorn\ns = socket.socket()\n",
    "apiserver/app.py": "from kokpit._lib.http1 import Http1Pool\nfrom kokpit import __version__\n",
    "operators/__init__.py": "",
    "operators/cluster/__init__.py": "from . import ok\nfrom kokpit.runtime import x\n",
    "operators/machine/__init__.py": "",
    "cli/main.py": "from kokpit.apiserver import app\n",
}


def test_a_clean_tree_passes(tmp_path: Path) -> None:
    assert layering_violations(_plant(tmp_path, CLEAN), TINY) == []


def test_planted_violations_fail(tmp_path: Path) -> None:
    """Each kind of violation, planted in an otherwise clean tree, is reported where it is (guards against a
    vacuous checker)."""
    planted = {
        "runtime/bad_lib.py": "import httpx\n",
        "runtime/bad_upward.py": "from kokpit.operators.machine import x\n",
        "apiserver/bad_client.py": "from kokpit.client import Client\n",
        "apiserver/__main__.py": "from kokpit.cli.main import app\n",
        "operators/machine/bad.py": "from ..cluster import thing\n",
        "operators/cluster/sock.py": "import socket\nsocket.create_connection(('h', 1))\n",
        "runtime/dial.py": "import asyncio\nasync def f(loop):\n    await loop.create_connection(None, 'h', 1)\n",
        "runtime/fetch.py": "from urllib import request\n",
        "cli/serve.py": "from http.client import HTTPConnection\n",
        "newpkg/mod.py": "x = 1\n",
    }
    stale = {"kokpit.cli": Layer("cli", TINY["kokpit.cli"].may_import, network={"main": "no longer", "old": "gone"})}
    found = layering_violations(_plant(tmp_path, {**CLEAN, **planted}),
                                {**TINY, **stale, "kokpit.gone": Layer("gone")})
    expect = {
        "runtime/bad_lib.py:1": "uses the network (httpx)",
        "runtime/bad_upward.py:1": "runtime may not import kokpit.operators.machine",
        "apiserver/bad_client.py:1": "apiserver may not import kokpit.client",
        "apiserver/__main__.py:1": "apiserver may not import kokpit.cli",
        "operators/machine/bad.py:1": "machine may not import kokpit.operators.cluster",
        "operators/cluster/sock.py:2": "uses the network (socket.create_connection)",
        "runtime/dial.py:3": "uses the network (…create_connection())",
        "runtime/fetch.py:1": "uses the network (urllib.request)",
        "cli/serve.py:1": "uses the network (http.client)",
    }
    for where, what in expect.items():
        assert any(f"kokpit/{where} " in v and what in v for v in found), (where, what, found)
    assert any("package kokpit.newpkg has no row" in v for v in found), found
    assert any("row for kokpit.gone, which no longer exists" in v for v in found), found
    assert any("cli/main.py: allowed the network in LAYERS but uses none" in v for v in found), found
    assert any("allows the network to kokpit.cli.old, which does not exist" in v for v in found), found
    assert len(found) == len(expect) + 4, found


def markdown_table(layers: dict[str, Layer] = LAYERS) -> str:
    """The table as docs/architecture.md shows it (``.venv/bin/python tests/test_layering.py`` prints it)."""
    def short(name: str) -> str:
        return "`kokpit` (root)" if name == "kokpit" else f"`{name.removeprefix('kokpit.')}`"

    out = ["| package | role | may import (besides itself and the root's `__version__`) | network |", "|---|---|---|---|"]
    for name, layer in layers.items():
        imports = ", ".join(short(p) for p in layer.may_import) or "nothing from kokpit"
        network = "; ".join(f"`{m}`: {why}" if m != "*" else f"all: {why}" for m, why in layer.network.items()) or "—"
        out.append(f"| {short(name)} | {layer.role} | {imports} | {network} |")
    return "\n".join(out)


if __name__ == "__main__":
    print(markdown_table())
