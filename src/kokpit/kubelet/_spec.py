"""How a Pod's container spec becomes a local process: the pure rules, kept apart so they are easy to test.

Embedded mode has no container runtime, so the kubelet maps Kubernetes concepts onto plain processes:

* **Runnable images.** An image is a kokpit image when its last path segment, without tag or digest, is
  exactly ``kokpit``: ``kokpit``, ``kokpit:v0.3``, ``registry.example:5000/org/kokpit:v0.3``,
  ``kokpit@sha256:...``.  Anything else (``nginx``, ``kokpit-agent``) is not runnable here.
* **Upstream images** (the control-plane components of a ClusterPackageVersion of flavor Upstream): an image
  whose repository name is ``etcd``, ``kube-apiserver``, ``kube-controller-manager`` or ``kube-scheduler``
  runs the locally installed binary its ``command[0]`` names (found on PATH; Debian's ``etcd-server`` for
  etcd), with the same arguments, certificates and data volumes.  Without that binary the container waits
  with ``ImageNotRunnable`` saying which binary is missing.
* **Command line.** The process is ``<python> -m kokpit.cli.main <args>``: ``args`` is
  ``command[1:] + args`` when ``command[0]`` is ``kokpit`` (or a path ending in ``/kokpit``), and just
  ``args`` when ``command`` is empty (the image's entry point is ``kokpit``).  Any other command cannot run.
* **Mounts.** Processes have no mount namespace.  Each volume is a folder under the data directory; every
  volumeMount ``M`` at ``mountPath P`` is exposed as the environment variable ``KOKPIT_MOUNT_<M>`` (name
  upper-cased, other characters than letters and digits turned into ``_``) holding the folder, and every
  argument, environment value and workingDir that equals ``P`` or starts with ``P/`` — or, for
  ``--flag=VALUE`` arguments, whose VALUE does — has ``P`` replaced by the folder (the longest mountPath
  wins).  So ``kokpit apiserver --data-dir /var/lib/kokpit`` with a volume mounted at ``/var/lib/kokpit``
  writes into the volume's folder.
* **Volumes.** ``emptyDir`` → ``DIR/pods/<ns>_<name>_<uid>/volumes/<volume>`` (removed with the Pod);
  ``hostPath`` → the path itself when it is absolute and inside ``DIR``, else ``DIR/hostpath/<path>`` (kept:
  data outlives Pods); ``secret`` / ``configMap`` → files in the Pod's volume folder, rewritten at every
  container start (secrets mode 0600, configMaps ``defaultMode`` or 0644); ``projected`` (the ServiceAccount
  token volume the API server adds to every Pod) → token, ``ca.crt`` and namespace files, the token renewed
  at 80% of its lifetime (``_projected.py``); a container mounting it at the usual path gets
  ``KOKPIT_SERVICE_ACCOUNT_DIR`` and ``KUBERNETES_SERVICE_HOST/PORT``, so in-cluster config works.  Other
  volume types make a container that mounts them wait with ``CreateContainerConfigError``.
* **Network.** Every Pod shares the host's network: podIP and hostIP are the kubelet's ``--address``
  (127.0.0.1 unless ``kokpit up --host`` chose another), probes go to that address's <port>, so two Pods must
  not listen on the same port.
* **Environment.** A small base (PATH, HOME, LANG, PYTHONPATH, VIRTUAL_ENV, ...), ``PYTHONUNBUFFERED=1``,
  ``HOSTNAME`` (the Pod name), ``KOKPIT_POD_DIR``, then ``envFrom`` and ``env`` (``value`` with ``$(VAR)``
  expansion, ``secretKeyRef``, ``configMapKeyRef``, ``fieldRef``) and the ``KOKPIT_MOUNT_*`` variables.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "IMAGE_NOT_RUNNABLE",
    "ContainerConfigError",
    "Mount",
    "container_args",
    "crash_backoff",
    "hostpath_folder",
    "is_kokpit_image",
    "mount_env_name",
    "pod_dir_name",
    "rewrite_paths",
    "rewrite_value",
    "upstream_argv",
]

IMAGE_NOT_RUNNABLE = "ImageNotRunnable"

Obj = dict[str, Any]


class ContainerConfigError(Exception):
    """A container that can never start as given; ``reason`` goes into its waiting state."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def is_kokpit_image(image: str) -> bool:
    """True when the image's repository name (last path segment, tag and digest removed) is ``kokpit``."""
    name = image.strip().split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.split(":", 1)[0] == "kokpit"


UPSTREAM_IMAGES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")


def _repository(image: str) -> str:
    return image.strip().split("@", 1)[0].rsplit("/", 1)[-1].split(":", 1)[0]


def upstream_argv(container: Mapping[str, Any], which: Any = shutil.which) -> list[str] | None:
    """The local process of an upstream image (see the module doc); None when the image is not one."""
    image = str(container.get("image") or "")
    repo = _repository(image)
    if repo not in UPSTREAM_IMAGES:
        return None
    command = [str(c) for c in container.get("command") or []] or [repo]
    binary = which(command[0].rsplit("/", 1)[-1])
    if binary is None:
        raise ContainerConfigError(IMAGE_NOT_RUNNABLE, f"image {image!r} runs the local {command[0].rsplit('/', 1)[-1]} "
                                   "binary in embedded mode, and none is installed on this host")
    return [binary, *command[1:], *[str(a) for a in container.get("args") or []]]


def container_args(container: Mapping[str, Any]) -> list[str]:
    """The arguments after ``kokpit``; raises ContainerConfigError for images or commands that cannot run."""
    image = str(container.get("image") or "")
    if not is_kokpit_image(image):
        raise ContainerConfigError(
            IMAGE_NOT_RUNNABLE,
            f"image {image!r} cannot run: in embedded mode only kokpit images (kokpit, kokpit:<tag>, "
            "<registry>/kokpit:<tag>) run, as local processes",
        )
    command = [str(c) for c in container.get("command") or []]
    args = [str(a) for a in container.get("args") or []]
    if not command:
        return args
    if command[0] == "kokpit" or command[0].endswith("/kokpit"):
        return command[1:] + args
    raise ContainerConfigError(
        "CreateContainerError",
        f"command {command[0]!r} cannot run: in embedded mode a container's command must be kokpit",
    )


def mount_env_name(mount_name: str) -> str:
    return "KOKPIT_MOUNT_" + re.sub(r"[^A-Za-z0-9]", "_", mount_name).upper()


def pod_dir_name(namespace: str, name: str, uid: str) -> str:
    return f"{namespace}_{name}_{uid}"


def hostpath_folder(data_dir: Path, path: str) -> Path:
    """Where a hostPath volume lives: the path itself if absolute and inside the data dir, else under
    ``DIR/hostpath``."""
    root = data_dir.resolve()
    p = Path(path)
    if p.is_absolute():
        resolved = Path(*p.parts).resolve()
        if resolved == root or root in resolved.parents:
            return resolved
    rel = [part for part in p.parts if part not in ("/", "..", ".")]
    return root.joinpath("hostpath", *rel)


@dataclass(frozen=True)
class Mount:
    """One volumeMount resolved to a folder."""

    name: str
    mount_path: str
    folder: Path


def rewrite_value(value: str, mounts: list[Mount]) -> str:
    """Replace a leading mountPath by its folder (longest mountPath first)."""
    for m in sorted(mounts, key=lambda m: len(m.mount_path), reverse=True):
        mp = m.mount_path.rstrip("/") or "/"
        if value == mp:
            return str(m.folder)
        prefix = mp if mp.endswith("/") else mp + "/"
        if value.startswith(prefix):
            return str(m.folder / value[len(prefix):])
    return value


def rewrite_paths(args: list[str], mounts: list[Mount]) -> list[str]:
    """Rewrite every argument (and the VALUE of ``--flag=VALUE``) that starts with a mountPath."""
    out: list[str] = []
    for a in args:
        if a.startswith("-") and "=" in a:
            flag, _, val = a.partition("=")
            out.append(f"{flag}={rewrite_value(val, mounts)}")
        else:
            out.append(rewrite_value(a, mounts))
    return out


def crash_backoff(restarts: int, base: float, cap: float) -> float:
    """Kubelet's CrashLoopBackOff delay before restart number ``restarts + 1``: base, 2·base, ... cap."""
    return float(min(cap, base * (2 ** min(restarts, 30))))
