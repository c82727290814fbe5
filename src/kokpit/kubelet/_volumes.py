"""Volumes, environment and command line of one Pod's containers, as the local kubelet prepares them.

hostPath volumes are folders under the kubelet's data dir, emptyDir/secret/configMap volumes folders under
the Pod's; secret and configMap files are (re)written at each container start.  Paths in arguments and
environment values under a mount are rewritten to the folder (the rules are in :mod:`kokpit.kubelet._spec`);
a missing Secret, ConfigMap or key is a ``CreateContainerConfigError`` the container waits in.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from kokpit.client import CONFIGMAP, SECRET, Client, NotFoundError
from kokpit.kubelet._containers import Container
from kokpit.kubelet._options import KubeletOptions, Obj, meta
from kokpit.kubelet._projected import SA_MOUNT_PATH, ProjectedVolume, TokenCache, object_files, write_file
from kokpit.kubelet._spec import (
    ContainerConfigError,
    Mount,
    container_args,
    hostpath_folder,
    mount_env_name,
    rewrite_paths,
    rewrite_value,
    upstream_argv,
)

__all__ = ["BASE_ENV", "PodSetup", "expand"]

# what a container's process inherits from the kubelet's environment
BASE_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV", "SSL_CERT_FILE")
_VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(s: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` references (unknown ones stay as written)."""
    return _VAR_REF.sub(lambda m: env.get(m.group(1), m.group(0)), s)


class PodSetup:
    """Prepares one Pod's volumes once, then each container's mounts, environment and command line."""

    def __init__(self, client: Client, opts: KubeletOptions, pod_dir: Path, pod: Callable[[], Obj],
                 tokens: TokenCache | None = None) -> None:
        self.client = client
        self.tokens = tokens or TokenCache()  # ServiceAccount tokens of projected volumes (shared per kubelet)
        self.opts = opts
        self.dir = pod_dir
        self._pod = pod
        m = meta(pod())
        self.namespace = str(m.get("namespace"))
        self.name = str(m.get("name"))
        self.volumes: dict[str, Path] = {}
        self.error: ContainerConfigError | None = None  # a volume that could not be prepared

    @property
    def pod(self) -> Obj:
        """The Pod as last seen (labels and annotations may change under a running Pod)."""
        return self._pod()

    def prepare_volumes(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        out: dict[str, Path] = {}
        try:
            for v in (self.pod.get("spec") or {}).get("volumes") or []:
                name = str(v.get("name"))
                if "hostPath" in v:
                    hp = v["hostPath"] or {}
                    folder = hostpath_folder(self.opts.data_dir, str(hp.get("path") or name))
                    if hp.get("type") in ("File", "FileOrCreate", "Socket", "CharDevice", "BlockDevice"):
                        folder.parent.mkdir(parents=True, exist_ok=True)
                    else:
                        folder.mkdir(parents=True, exist_ok=True)
                elif "emptyDir" in v or "secret" in v or "configMap" in v or "projected" in v:
                    folder = self.dir / "volumes" / name
                    folder.mkdir(parents=True, exist_ok=True)
                else:
                    continue  # unsupported kinds fail only when a container mounts them
                out[name] = folder
        except OSError as e:
            self.error = ContainerConfigError("CreateContainerConfigError", f"volume: {e}")
            return
        self.volumes = out

    async def _write_projected(self, v: Obj, folder: Path) -> None:
        """Secret and ConfigMap volumes: one file per key (or per ``items`` entry), refreshed at each start
        (secrets mode 0600, configMaps ``defaultMode`` or 0644)."""
        secret = "secret" in v
        src = (v["secret"] if secret else v["configMap"]) or {}
        mode = 0o600 if secret else int(src.get("defaultMode") or 0o644)
        files = await object_files(self.client, "secret" if secret else "configMap", src, self.namespace, mode)
        for rel, (content, m) in files.items():
            write_file(folder / rel, content, m)

    async def refresh_tokens(self, uid: str) -> None:
        """Rewrite the projected volumes once a mounted ServiceAccount token reached 80% of its lifetime."""
        if not self.tokens.due(uid):
            return
        for v in (self.pod.get("spec") or {}).get("volumes") or []:
            folder = self.volumes.get(str(v.get("name")))
            if "projected" in v and folder is not None:
                await ProjectedVolume(self.client, self.tokens, self._field_value).write(self.pod, v, folder)

    async def mounts(self, c: Container) -> list[Mount]:
        volumes = {str(v.get("name")): v for v in (self.pod.get("spec") or {}).get("volumes") or []}
        out: list[Mount] = []
        for vm in c.spec.get("volumeMounts") or []:
            vname = str(vm.get("name"))
            v = volumes.get(vname)
            folder = self.volumes.get(vname)
            if v is None or folder is None:
                why = "is not defined" if v is None else "has a type that does not run in embedded mode"
                raise ContainerConfigError("CreateContainerConfigError", f'volume "{vname}" {why}')
            if "secret" in v or "configMap" in v:
                await self._write_projected(v, folder)
            elif "projected" in v:  # the ServiceAccount token volume (and any other projection)
                await ProjectedVolume(self.client, self.tokens, self._field_value).write(self.pod, v, folder)
            if vm.get("subPath"):
                folder = folder / str(vm["subPath"]).lstrip("/")
                folder.mkdir(parents=True, exist_ok=True)
            out.append(Mount(vname, str(vm.get("mountPath") or ""), folder))
        return out

    async def _ref_value(self, kind: str, ref: Obj) -> str | None:
        k = SECRET if kind == "secret" else CONFIGMAP
        name, key = str(ref.get("name")), str(ref.get("key"))
        try:
            obj = await self.client.get(k, name, self.namespace)
        except NotFoundError:
            if ref.get("optional"):
                return None
            raise ContainerConfigError("CreateContainerConfigError", f'{kind} "{name}" not found') from None
        val: str | None
        if kind == "secret":
            raw = (obj.get("data") or {}).get(key)
            val = base64.b64decode(raw).decode() if raw is not None else None
        else:
            val = (obj.get("data") or {}).get(key)
        if val is None and not ref.get("optional"):
            raise ContainerConfigError("CreateContainerConfigError",
                                       f"couldn't find key {key} in {kind.capitalize()} {self.namespace}/{name}")
        return val

    def _field_value(self, path: str) -> str:
        m = meta(self.pod)
        if path in ("status.podIP", "status.hostIP"):
            return self.opts.address
        simple = {"metadata.name": m.get("name"), "metadata.namespace": m.get("namespace"),
                  "metadata.uid": m.get("uid"), "spec.nodeName": self.opts.node_name,
                  "spec.serviceAccountName": (self.pod.get("spec") or {}).get("serviceAccountName")}
        if path in simple:
            return str(simple[path] or "")
        mm = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
        if mm:
            return str((m.get(mm.group(1)) or {}).get(mm.group(2)) or "")
        return ""

    async def env(self, c: Container, mounts: list[Mount]) -> dict[str, str]:
        env: dict[str, str] = {}
        for src in c.spec.get("envFrom") or []:
            prefix = str(src.get("prefix") or "")
            for kind, k in (("configMapRef", CONFIGMAP), ("secretRef", SECRET)):
                ref = src.get(kind)
                if not ref:
                    continue
                try:
                    obj = await self.client.get(k, str(ref.get("name")), self.namespace)
                except NotFoundError:
                    if ref.get("optional"):
                        continue
                    what = "configmap" if k is CONFIGMAP else "secret"
                    raise ContainerConfigError("CreateContainerConfigError",
                                               f'{what} "{ref.get("name")}" not found') from None
                for key, raw in (obj.get("data") or {}).items():
                    env[prefix + key] = base64.b64decode(raw).decode() if k is SECRET else str(raw)
        for e in c.spec.get("env") or []:
            name = str(e.get("name"))
            if "value" in e:
                env[name] = expand(str(e.get("value") or ""), env)
                continue
            vf = e.get("valueFrom") or {}
            val: str | None = ""
            if "secretKeyRef" in vf:
                val = await self._ref_value("secret", vf["secretKeyRef"])
            elif "configMapKeyRef" in vf:
                val = await self._ref_value("configmap", vf["configMapKeyRef"])
            elif "fieldRef" in vf:
                val = self._field_value(str(vf["fieldRef"].get("fieldPath") or ""))
            if val is not None:
                env[name] = val
        env = {k: rewrite_value(v, mounts) for k, v in env.items()}
        for m in mounts:
            env[mount_env_name(m.name)] = str(m.folder)
            if m.mount_path.rstrip("/") == SA_MOUNT_PATH:
                env["KOKPIT_SERVICE_ACCOUNT_DIR"] = str(m.folder)
        return env

    async def command(self, c: Container) -> tuple[list[str], dict[str, str], Path]:
        upstream = upstream_argv(c.spec)
        args = upstream or container_args(c.spec)
        mounts = await self.mounts(c)
        pod_env = await self.env(c, mounts)
        args = rewrite_paths([expand(a, pod_env) for a in args], mounts)
        env = {k: os.environ[k] for k in BASE_ENV if k in os.environ}
        env.update({"PYTHONUNBUFFERED": "1", "HOSTNAME": self.name, "KOKPIT_POD_DIR": str(self.dir)})
        env.update(self.service_env())
        env.update(pod_env)
        wd = c.spec.get("workingDir")
        cwd = Path(rewrite_value(str(wd), mounts)) if wd else self.dir
        if not cwd.is_dir():
            raise ContainerConfigError("CreateContainerConfigError", f"workingDir {wd} is not a folder")
        if upstream is not None:
            return args, env, cwd
        return [self.opts.python, "-m", "kokpit.cli.main", *args], env, cwd

    def service_env(self) -> dict[str, str]:
        """The `kubernetes` Service's variables every container gets (in-cluster config): this Node's API
        server.  With no mount namespace, KOKPIT_SERVICE_ACCOUNT_DIR says where the token volume is."""
        u = urlsplit(self.client.server)
        return {"KUBERNETES_SERVICE_HOST": u.hostname or "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(u.port or 443)}

    async def exec_env(self, c: Container) -> tuple[list[Mount], dict[str, str]]:
        """Mounts and environment for an exec probe: the container's own, on the kubelet's base environment."""
        mounts = await self.mounts(c)
        env = {k: os.environ[k] for k in BASE_ENV if k in os.environ}
        env.update(await self.env(c, mounts))
        return mounts, env
