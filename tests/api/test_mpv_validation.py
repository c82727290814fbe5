"""MachinePackageVersion bad input (issue 19): refused at admission with a Status naming the field, and by
the Python models the operator and the node agent use (one set of patterns behind both)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from kokpit.api import MachinePackageVersion, install_crds
from kokpit.api.machine import config_path_problem
from kokpit.apiserver.testing import ApiServerProcess
from kokpit.client import ApiError, Client, Kind

MPV = Kind("kokpit.io", "v1alpha1", "MachinePackageVersion", "machinepackageversions", namespaced=False)


def _mpv(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "kokpit.io/v1alpha1", "kind": "MachinePackageVersion", "metadata": {"name": name},
            "spec": {"component": "demo", "version": "1.0", **spec}}


GOOD = [
    {"package": {"type": "deb", "name": "kokpit-demo", "version": "1:1.0-1+b2~rc1",
                 "repository": "deb [trusted=yes] file:/srv/repo ./"}},
    {"package": {"type": "rpm", "name": "containerd.io", "version": "1.7.22-3.1.el9"}},
    {"install": {"method": "script", "script": "touch /opt/x", "versionProbe": "cat /opt/x.version"}},
    {"install": {"method": "config", "service": "demo.service"},
     "config": {"files": [{"path": "/etc/demo/demo.conf", "content": "a=1\n", "mode": "0600", "owner": "root:adm"},
                          {"path": "/var/lib/demo/state", "owner": "0:0"}],
                "sysctl": {"net.ipv4.ip_forward": "1", "net.ipv4.conf.all.rp_filter": "2"}}},
]

BAD = [  # (spec, the field the error must name, a word of the message)
    ({"package": {"type": "deb", "name": "Kokpit_Demo", "version": "1.0"}}, "spec.package.name", "deb"),
    ({"package": {"type": "deb", "name": "demo", "version": "v1.0"}}, "spec.package.version", "deb"),
    ({"package": {"type": "rpm", "name": "demo pkg", "version": "1"}}, "spec.package.name", "rpm"),
    ({"package": {"type": "rpm", "name": "demo", "version": "1-2-3"}}, "spec.package.version", "rpm"),
    ({"install": {"method": "script", "script": "make install"}}, "spec.install.versionProbe", "versionProbe"),
    ({"config": {"files": [{"path": "../../etc/shadow"}]}}, "spec.config.files[0].path", "should match"),
    ({"config": {"files": [{"path": "/etc/demo/../../etc/shadow"}]}}, "spec.config.files[0].path", ".."),
    ({"config": {"files": [{"path": "/etc/shadow"}]}}, "spec.config.files[0].path", "may not replace"),
    ({"config": {"files": [{"path": "/root/.ssh/authorized_keys"}]}}, "spec.config.files[0].path", "under one of"),
    ({"config": {"files": [{"path": "/etc/demo.conf", "owner": "root;rm -rf /"}]}},
     "spec.config.files[0].owner", "should match"),
    ({"config": {"sysctl": {"net/ipv4/../../ip_forward": "1"}}}, "spec.config.sysctl", "sysctl keys"),
    ({"config": {"sysctl": {"net.ipv4.ip_forward": "1\nkernel.panic=1"}}}, "spec.config.sysctl", "one line"),
]


@pytest.mark.parametrize("spec", GOOD)
def test_models_accept_good_specs(spec: dict[str, Any]) -> None:
    MachinePackageVersion.model_validate(_mpv("good", **spec))


@pytest.mark.parametrize(("spec", "field", "word"), BAD)
def test_models_refuse_bad_specs(spec: dict[str, Any], field: str, word: str) -> None:
    with pytest.raises(ValidationError):
        MachinePackageVersion.model_validate(_mpv("bad", **spec))


def test_config_path_rules() -> None:
    assert config_path_problem("/etc/kubernetes/kubelet.conf") == ""
    for bad in ("etc/x", "/etc/../etc/shadow", "/etc/./x", "/etc//x", "/etc/x/", "/etc/x/..", "/tmp/x",
                "/etc/sudoers.d/kokpit", "/etc/passwd"):
        assert config_path_problem(bad), bad


async def test_admission_names_the_field(apiserver: ApiServerProcess) -> None:
    async with Client.from_kubeconfig(apiserver.kubeconfig) as c:
        await install_crds(c)
        for i, spec in enumerate(GOOD):
            await c.create(MPV, _mpv(f"good-{i}", **spec))
        for i, (spec, field, word) in enumerate(BAD):
            with pytest.raises(ApiError) as ei:
                await c.create(MPV, _mpv(f"bad-{i}", **spec))
            assert ei.value.code == 422, ei.value
            causes = (ei.value.status.get("details") or {}).get("causes", [])
            fields = [cause.get("field") for cause in causes]
            assert field in fields, (field, ei.value.status)
            assert word in ei.value.message, (word, ei.value.message)
        names = {o["metadata"]["name"] for o in (await c.list(MPV)).items}
        assert not any(n.startswith("bad-") for n in names)  # nothing half-created
