"""The node driver endpoint authenticates both ways (kokpit.nodes.mtls): only a clientAuth certificate from
the driver's own CA gets an answer, and a caller trusts only a server certificate from that CA."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from kokpit._lib import pki
from kokpit.client import JsonHttpClient, TransportError
from kokpit.nodes import DriverError
from kokpit.nodes.mtls import DriverServer, TLSFiles, client_context, is_wildcard, local_pki, write_files
from kokpit.nodes.simulator import SimulatorDriver


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b'{"nodes": {}, "unknown": ["x"]}'})


@pytest.fixture
async def server(tmp_path: Path) -> Any:
    srv_files, client_files = local_pki(tmp_path / "pki", ["127.0.0.1", "localhost"])
    srv = DriverServer(_app, "127.0.0.1", 0, srv_files)
    await srv.start()
    try:
        yield srv, client_files
    finally:
        await srv.stop()


async def _states(url: str, tls: TLSFiles | None, **kw: Any) -> Any:
    d = SimulatorDriver(url, tls=tls, timeout=3, **kw)
    try:
        return await d.states(["x"])
    finally:
        await d.close()


async def test_caller_with_the_client_certificate_is_answered(server: Any) -> None:
    srv, client_files = server
    assert srv.url.startswith("https://127.0.0.1:")
    got = await _states(srv.url, client_files)
    assert got["x"].reachable is False and "not simulated here" in got["x"].message


async def test_caller_without_a_certificate_is_refused(server: Any, tmp_path: Path) -> None:
    srv, client_files = server
    ctx = ssl.create_default_context(cafile=str(client_files.ca_file))  # trusts the server, presents nothing
    http = JsonHttpClient(srv.url, timeout=3, ssl_context=ctx)
    try:
        with pytest.raises(TransportError):
            await http.post("/v1/states", {"nodes": ["x"]})
    finally:
        await http.close()
    # and plain HTTP on the same port gets nothing either
    http = JsonHttpClient(srv.url.replace("https://", "http://"), timeout=3)
    try:
        with pytest.raises(TransportError):
            await http.post("/v1/states", {"nodes": ["x"]})
    finally:
        await http.close()


async def test_certificate_of_another_ca_is_refused(server: Any, tmp_path: Path) -> None:
    srv, client_files = server
    other = pki.new_ca("someone-else")
    cert = pki.new_client_cert(other, "intruder")
    # trusts the real server CA (so only the server side can be the one refusing)
    forged = write_files(tmp_path / "forged", client_files.ca_file.read_bytes(), cert.cert_pem, cert.key_pem)
    got = await _states(srv.url, forged)
    assert got["x"].reachable is False and "unreachable" in got["x"].message


async def test_a_serving_certificate_cannot_call(server: Any, tmp_path: Path) -> None:
    """A node's own certificate (serverAuth) from the same CA must not command another node."""
    srv, _ = server
    folder = tmp_path / "pki"
    ca = pki.CertPair((folder / pki.DRIVER_CA_CERT).read_bytes(), (folder / pki.DRIVER_CA_KEY).read_bytes())
    node_cert = pki.new_serving_cert(ca, ["10.0.0.9"], common_name="node-9")
    as_client = write_files(tmp_path / "node", ca.cert_pem, node_cert.cert_pem, node_cert.key_pem)
    got = await _states(srv.url, as_client)
    assert got["x"].reachable is False


async def test_caller_refuses_a_server_of_another_ca(tmp_path: Path) -> None:
    srv_files, _ = local_pki(tmp_path / "a", ["127.0.0.1"])
    _, other_client = local_pki(tmp_path / "b", ["127.0.0.1"])
    srv = DriverServer(_app, "127.0.0.1", 0, srv_files)
    await srv.start()
    try:
        got = await _states(srv.url, other_client)
        assert got["x"].reachable is False and "certificate verify failed" in got["x"].message.lower()
    finally:
        await srv.stop()


async def test_host_name_is_checked(tmp_path: Path) -> None:
    srv_files, client_files = local_pki(tmp_path / "pki", ["127.0.0.1"])  # not "localhost"
    srv = DriverServer(_app, "127.0.0.1", 0, srv_files, advertise="localhost")
    await srv.start()
    try:
        got = await _states(srv.url, client_files)
        assert got["x"].reachable is False
        got = await _states(srv.url, client_files, check_hostname=False)  # CA still required
        assert "not simulated here" in got["x"].message
    finally:
        await srv.stop()


def test_wildcards_are_never_advertised(tmp_path: Path) -> None:
    assert is_wildcard("0.0.0.0") and is_wildcard("::") and is_wildcard("")
    assert not is_wildcard("127.0.0.1") and not is_wildcard("node-1")
    files = TLSFiles.in_dir(tmp_path)
    with pytest.raises(ValueError, match="wildcard"):
        DriverServer(_app, "0.0.0.0", 0, files)
    assert DriverServer(_app, "0.0.0.0", 0, files, advertise="10.1.2.3").advertise == "10.1.2.3"


def test_missing_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"CA file .*ca\.crt not found"):
        client_context(TLSFiles.in_dir(tmp_path))


def test_local_pki_is_kept_across_restarts_and_grows_with_hosts(tmp_path: Path) -> None:
    folder = tmp_path / "pki"
    _, c1 = local_pki(folder, ["127.0.0.1"])
    ca1, cert1 = c1.ca_file.read_bytes(), c1.cert_file.read_bytes()
    _, c2 = local_pki(folder, ["127.0.0.1"])
    assert (c2.ca_file.read_bytes(), c2.cert_file.read_bytes()) == (ca1, cert1)  # callers stay valid
    s3, c3 = local_pki(folder, ["127.0.0.1", "10.0.0.7"])
    assert c3.ca_file.read_bytes() == ca1 and c3.cert_file.read_bytes() == cert1
    assert pki.serving_cert_covers(s3.cert_file.read_bytes(), ["10.0.0.7"])
    assert (folder / "client" / "tls.key").stat().st_mode & 0o077 == 0
    assert folder.stat().st_mode & 0o077 == 0


def test_driver_pki_keeps_what_is_valid_and_renews_what_expires() -> None:
    now = dt.datetime.now(dt.UTC)
    first = pki.driver_pki({}, ["127.0.0.1"], ca_name="t", now=now)
    assert set(first) == set(pki.DRIVER_KEYS)
    assert pki.driver_pki(first, ["127.0.0.1"], ca_name="t", now=now) == first
    later = now + dt.timedelta(days=340)  # leaf certificates last 365 days, renewed 30 days before
    renewed = pki.driver_pki(first, ["127.0.0.1"], ca_name="t", now=later)
    assert renewed[pki.DRIVER_CA_CERT] == first[pki.DRIVER_CA_CERT]
    assert renewed[pki.DRIVER_CLIENT_CERT] != first[pki.DRIVER_CLIENT_CERT]
    assert renewed[pki.DRIVER_SERVING_CERT] != first[pki.DRIVER_SERVING_CERT]
    client = x509.load_pem_x509_certificate(first[pki.DRIVER_CLIENT_CERT])
    eku = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]
    # a foreign client certificate in the Secret is replaced by one of the driver CA
    forged = dict(first, **{pki.DRIVER_CLIENT_CERT: pki.new_client_cert(pki.new_ca("x"), "x").cert_pem})
    assert pki.driver_pki(forged, ["127.0.0.1"], ca_name="t", now=now)[pki.DRIVER_CLIENT_CERT] != \
        forged[pki.DRIVER_CLIENT_CERT]


async def test_simulator_driver_maps_refusal_to_a_retryable_error(server: Any) -> None:
    srv, _ = server
    d = SimulatorDriver(srv.url, timeout=3)  # no credentials at all
    try:
        with pytest.raises(DriverError) as e:
            await asyncio.wait_for(d.health("x", "kubelet"), 5)
        assert e.value.retryable
    finally:
        await d.close()
