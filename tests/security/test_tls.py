"""TLS for the distributed profile: ``cairn cluster certs`` makes a CA and certificates, a
real nats-server that requires TLS refuses what it should, and each refusal is one line that
names the cause and the setting that fixes it (no traceback, no hang)."""

from __future__ import annotations

import asyncio
import json
import re
import stat
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from click.testing import CliRunner
from cryptography import x509

from cairn.bus import connect, provision
from cairn.cli import cli
from cairn.embedded import NatsServer
from cairn.errors import CairnError, InvalidInput, Unauthenticated, Unavailable
from cairn.rpc import Client
from cairn.service import run_services
from cairn.services.tracking import TrackingService
from cairn.settings import Settings, load_settings
from cairn.tls import CertFiles, ensure_certs, make_certs, server_tls_block
from tests.conftest import LEAKS_SOCKETS, settings_for
from tests.test_fail_fast import cairn_status, clean_env, one_line, write_config

#: long enough that a refusal retried until the connect timeout tells from one at once
CONNECT_TIMEOUT_S = 10.0
AGENT = "cairn-agent"


# -- certificates ------------------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_certs_keys_are_private_and_names_are_sans(tmp_path: Path) -> None:
    made = make_certs(tmp_path / "tls", hosts=["nats.example.org", "10.0.0.5"], clients=[AGENT])
    for key in (made.ca_key, made.server_key, made.client_key(AGENT)):
        assert _mode(key) == 0o600, key
    assert _mode(tmp_path / "tls") == 0o700
    server = x509.load_pem_x509_certificate(made.server_cert.read_bytes())
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["nats.example.org"]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]
    client = x509.load_pem_x509_certificate(made.client_cert(AGENT).read_bytes())
    cn = client.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    assert cn == AGENT
    default = make_certs(tmp_path / "default")
    sans = (
        x509.load_pem_x509_certificate(default.server_cert.read_bytes())
        .extensions.get_extension_for_class(x509.SubjectAlternativeName)
        .value
    )
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]


def test_certs_again_reuse_the_ca_and_replace_nothing_without_force(tmp_path: Path) -> None:
    folder = tmp_path / "tls"
    first = make_certs(folder, clients=[AGENT])
    ca, server = first.ca.read_bytes(), first.server_cert.read_bytes()
    with pytest.raises(InvalidInput, match=re.escape(f"{first.server_cert} exists")):
        make_certs(folder)
    with pytest.raises(InvalidInput, match=re.escape(f"{first.client_cert(AGENT)} exists")):
        make_certs(folder, clients=[AGENT], server=False)
    assert first.server_cert.read_bytes() == server
    again = make_certs(folder, clients=["other"], server=False)
    assert first.ca in again.reused and again.ca.read_bytes() == ca
    forced = make_certs(folder, clients=[AGENT], force=True)
    assert forced.ca.read_bytes() == ca and forced.server_cert.read_bytes() != server
    # what cairn up --tls does at its second start: everything is there, nothing is made
    assert ensure_certs(folder).made == ()


def test_days_are_bounded(tmp_path: Path) -> None:
    for days in (0, 3651):
        with pytest.raises(InvalidInput, match="days must be between 1 and 3650"):
            make_certs(tmp_path / "tls", days=days)
    assert not (tmp_path / "tls").exists()
    result = CliRunner().invoke(cli, ["cluster", "certs", "--dir", str(tmp_path), "--days", "0"])
    assert result.exit_code == 2 and "1<=x<=3650" in result.output


def test_cli_certs_refuses_to_overwrite_and_names_the_file(tmp_path: Path) -> None:
    args = ["cluster", "certs", "--dir", str(tmp_path / "tls"), "--client", AGENT]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "CAIRN_TLS_CA=" in result.output and "tls {" in result.output
    result = CliRunner().invoke(cli, args)
    assert isinstance(result.exception, InvalidInput)
    assert "server.pem exists" in result.exception.message
    assert "--force" in result.exception.message
    result = CliRunner().invoke(cli, [*args, "--force"])
    assert result.exit_code == 0 and "reused the CA" in result.output, result.output


@pytest.mark.parametrize(
    ("kwargs", "refusal"),
    [
        ({"hosts": ["bad host"]}, "neither a DNS name nor an IP address"),
        ({"hosts": ["localhost", "LOCALHOST"]}, "a host is given twice"),
        ({"clients": ["../escape"]}, "client name '../escape'"),
        ({"clients": [AGENT, AGENT]}, "a client name is given twice"),
    ],
)
def test_bad_names_are_refused_before_anything_is_written(
    tmp_path: Path, kwargs: dict[str, list[str]], refusal: str
) -> None:
    with pytest.raises(InvalidInput, match=re.escape(refusal)):
        make_certs(tmp_path / "tls", **kwargs)
    assert not (tmp_path / "tls").exists()


def test_a_ca_without_its_key_is_refused(tmp_path: Path) -> None:
    made = make_certs(tmp_path / "tls")
    made.ca_key.unlink()
    with pytest.raises(InvalidInput, match=re.escape(f"{made.ca} exists without {made.ca_key}")):
        make_certs(tmp_path / "tls", clients=[AGENT], server=False)


def test_server_tls_block() -> None:
    block = "\n".join(server_tls_block(Path("/c/s.pem"), Path("/c/k.pem"), Path("/c/ca.pem")))
    assert 'cert_file: "/c/s.pem"' in block and 'ca_file: "/c/ca.pem"' in block
    assert "verify: false" in block and "timeout: 2" in block
    assert "verify: true" in "\n".join(
        server_tls_block(Path("/s"), Path("/k"), Path("/ca"), verify=True)
    )


# -- settings ----------------------------------------------------------------------------------


def test_a_client_certificate_without_its_key_is_refused_by_name(tmp_path: Path) -> None:
    env = {"CAIRN_HOME": str(tmp_path), "CAIRN_TLS_CERT": "/x/client.pem"}
    with pytest.raises(InvalidInput, match=r"tls_cert is set .* but tls_key is not") as raised:
        load_settings(env)
    assert "CAIRN_TLS_KEY" in raised.value.message
    env = {"CAIRN_HOME": str(tmp_path), "CAIRN_TLS_KEY": "/x/client-key.pem"}
    with pytest.raises(InvalidInput, match=r"tls_key is set .* but tls_cert is not"):
        load_settings(env)
    env = {"CAIRN_HOME": str(tmp_path), "CAIRN_TLS_CA": "/x/ca.pem"}
    assert load_settings(env).tls_ca == "/x/ca.pem"


# -- a real server -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    """The server's certificate names localhost only (not 127.0.0.1), so that the address
    tests a name the certificate does not hold."""
    return make_certs(tmp_path_factory.mktemp("tls"), hosts=["localhost"], clients=[AGENT])


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return make_certs(tmp_path_factory.mktemp("other-tls"), clients=[AGENT])


def _server(home: Path, certs: CertFiles, verify: bool) -> Iterator[NatsServer]:
    server = NatsServer(home, port=0, tls=certs, tls_verify=verify)
    asyncio.run(server.start())
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory, certs: CertFiles) -> Iterator[NatsServer]:
    yield from _server(tmp_path_factory.mktemp("tls-home"), certs, verify=False)


@pytest.fixture(scope="module")
def mtls_server(tmp_path_factory: pytest.TempPathFactory, certs: CertFiles) -> Iterator[NatsServer]:
    yield from _server(tmp_path_factory.mktemp("mtls-home"), certs, verify=True)


def _settings(
    server: NatsServer, host: str = "localhost", scheme: str = "tls", **tls: object
) -> Settings:
    return settings_for(
        server,
        service=True,
        nats_url=f"{scheme}://{host}:{server.port}",
        connect_timeout_s=CONNECT_TIMEOUT_S,
        **tls,
    )


async def _refused(settings: Settings, error: type[CairnError]) -> str:
    started = time.monotonic()
    with pytest.raises(error) as raised:
        await connect(settings)
    assert time.monotonic() - started < CONNECT_TIMEOUT_S, "refused at once, not retried"
    message = raised.value.message
    assert "\n" not in message
    return message


async def test_a_plain_client_is_refused_with_the_setting_to_fix(tls_server: NatsServer) -> None:
    assert "tls {" in tls_server.config_text()
    plain = _settings(tls_server, scheme="nats")
    message = await _refused(plain, Unavailable)
    assert "the server's certificate is not trusted" in message
    assert "no CA file is set" in message and "CAIRN_TLS_CA" in message


async def test_a_client_with_the_ca_connects_and_round_trips(
    tls_server: NatsServer, certs: CertFiles
) -> None:
    settings = _settings(tls_server, tls_ca=str(certs.ca))
    conn = await connect(settings)
    try:
        reply = await conn.nc.request("$JS.API.INFO", b"", timeout=2)  # request and reply
        assert b"memory" in reply.data
        info = await conn.js.account_info()
        assert info.limits is not None
        await provision(conn)
        # a command through a real service, over TLS both ways
        stop, ready = asyncio.Event(), asyncio.Event()
        state = str(tls_server.home / "state")
        service_settings = msgspec.structs.replace(settings, state_dir=state)
        task = asyncio.create_task(
            run_services(service_settings, [TrackingService], stop=stop, ready=ready)
        )
        try:
            await asyncio.wait_for(ready.wait(), 10)
            from cairn.proto.commands import CreateWorkspace

            name = "tls" + uuid.uuid4().hex[:8]
            result = await Client(conn, name).send(
                CreateWorkspace(command_id=uuid.uuid4().hex, name=name)
            )
            assert result is not None
        finally:
            stop.set()
            await task
    finally:
        await conn.close()


async def test_a_certificate_of_another_ca_is_refused(
    tls_server: NatsServer, other_ca: CertFiles
) -> None:
    message = await _refused(_settings(tls_server, tls_ca=str(other_ca.ca)), Unavailable)
    assert f"not signed by the CA in {other_ca.ca}" in message


async def test_a_host_the_certificate_does_not_name_is_refused(
    tls_server: NatsServer, certs: CertFiles
) -> None:
    settings = _settings(tls_server, host="127.0.0.1", tls_ca=str(certs.ca))
    message = await _refused(settings, Unavailable)
    assert "does not name the host" in message and "127.0.0.1" in message


async def test_mutual_tls_refuses_a_client_without_a_certificate(
    mtls_server: NatsServer, certs: CertFiles
) -> None:
    assert "verify: true" in mtls_server.config_text()
    message = await _refused(_settings(mtls_server, tls_ca=str(certs.ca)), Unauthenticated)
    assert "requires a client certificate" in message and "tls_cert" in message


async def test_mutual_tls_accepts_a_client_certificate(
    mtls_server: NatsServer, certs: CertFiles
) -> None:
    settings = _settings(
        mtls_server,
        tls_ca=str(certs.ca),
        tls_cert=str(certs.client_cert(AGENT)),
        tls_key=str(certs.client_key(AGENT)),
    )
    conn = await connect(settings)
    try:
        assert (await conn.js.account_info()).limits is not None
    finally:
        await conn.close()


async def test_mutual_tls_refuses_a_client_certificate_of_another_ca(
    mtls_server: NatsServer, certs: CertFiles, other_ca: CertFiles
) -> None:
    settings = _settings(
        mtls_server,
        tls_ca=str(certs.ca),
        tls_cert=str(other_ca.client_cert(AGENT)),
        tls_key=str(other_ca.client_key(AGENT)),
    )
    message = await _refused(settings, Unauthenticated)
    assert f"refused the client certificate {other_ca.client_cert(AGENT)}" in message


async def test_a_tls_client_refuses_a_server_without_tls(
    nats_server: NatsServer, certs: CertFiles
) -> None:
    settings = msgspec.structs.replace(
        settings_for(nats_server, service=True, connect_timeout_s=CONNECT_TIMEOUT_S),
        tls_ca=str(certs.ca),
    )
    message = await _refused(settings, Unavailable)
    assert "does not offer it" in message


async def test_a_missing_tls_file_is_named(tls_server: NatsServer, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.pem"
    message = await _refused(_settings(tls_server, tls_ca=str(missing)), InvalidInput)
    assert f"the file {missing} does not exist" in message and "CAIRN_TLS_CA" in message


async def test_cli_against_a_tls_server_is_one_line(tls_server: NatsServer, tmp_path: Path) -> None:
    """``cairn status`` with settings that do not trust the server: one line, at once."""
    assert tls_server.credentials is not None
    home = tmp_path / "home"
    config = write_config(
        home,
        nats_url=f"tls://localhost:{tls_server.port}",
        nats_user=tls_server.credentials.client_user,
        nats_password=tls_server.credentials.client_password,
    )
    line = one_line(*await cairn_status(clean_env(home), tmp_path))
    assert line.startswith("error [unavailable]: ")
    assert "not trusted" in line and f"tls_ca in {config}" in line


async def test_no_credentials_go_to_a_server_that_offers_no_tls(certs: CertFiles) -> None:
    """Someone answers as a NATS server without TLS (or strips it from the server's INFO): a
    client with TLS configured refuses before it sends CONNECT, which holds the password."""
    received: list[bytes] = []

    async def fake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        info = {"server_id": "fake", "version": "2.10.0", "max_payload": 1048576}
        writer.write(b"INFO " + json.dumps(info).encode() + b"\r\n")
        await writer.drain()
        received.append(await reader.read(4096))
        writer.close()

    listener = await asyncio.start_server(fake, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    settings = load_settings(
        env={},
        nats_url=f"nats://127.0.0.1:{port}",
        nats_user="someone",
        nats_password="the-secret",
        tls_ca=str(certs.ca),
        connect_timeout_s=CONNECT_TIMEOUT_S,
    )
    try:
        message = await _refused(settings, Unavailable)
    finally:
        listener.close()
        await listener.wait_closed()
    assert "does not offer it" in message and "not sent in plain text" in message
    assert not any(b"the-secret" in chunk for chunk in received), received


@LEAKS_SOCKETS
async def test_a_reconnect_to_a_server_without_tls_sends_nothing(
    tmp_path: Path, nats_py_leaks: None
) -> None:
    """The server comes back on the same address without TLS: the client does not carry on
    in plain text; it stays disconnected (and keeps trying, for a server with TLS)."""
    certs = make_certs(tmp_path / "tls")
    server = NatsServer(tmp_path / "home", port=0, tls=certs)
    await server.start()
    settings = settings_for(server, service=True, tls_ca=str(certs.ca))
    conn = await connect(settings)
    plain = None
    try:
        server.stop()
        plain = NatsServer(tmp_path / "home", port=server.port)
        await plain.start()
        await asyncio.sleep(2.0)
        assert not conn.nc.is_connected
    finally:
        await conn.close()
        server.stop()
        if plain is not None:
            plain.stop()
