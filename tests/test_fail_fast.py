"""Clients give up within the connect timeout with one line naming the cause; long-running
processes wait for their server, and log an outage once and recover from it."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cairn.bus import connect
from cairn.embedded import NatsServer, find_nats_server, free_port
from cairn.embedded._server import SERVICE_USER
from cairn.errors import InvalidInput, Unauthenticated, Unavailable
from cairn.rpc import ping_all
from cairn.sdk import Workspace
from cairn.settings import load_settings

CONNECT_TIMEOUT_S = 1.5
ENTRY_POINT = Path(sys.executable).parent / "cairn"


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a fresh shell: no CAIRN_* variable but the ones given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAIRN_")}
    return {
        **env,
        "CAIRN_HOME": str(home),
        "CAIRN_CONNECT_TIMEOUT_S": str(CONNECT_TIMEOUT_S),
        **extra,
    }


def write_config(home: Path, **values: str) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    path = home / "config.json"
    path.write_text(json.dumps(values))
    return path


async def cairn_status(env: dict[str, str], cwd: Path) -> tuple[int, str, str, float]:
    """The real entry point, as a script runs it: exit code, stdout, stderr, seconds."""
    assert ENTRY_POINT.exists(), "the cairn console script is installed beside the interpreter"
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        str(ENTRY_POINT),
        "status",
        env=env,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), CONNECT_TIMEOUT_S + 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode(), time.monotonic() - started


def one_line(code: int, out: str, err: str, elapsed: float) -> str:
    assert code != 0
    # it gives up at the connect timeout, not after reconnect attempts (the process start and
    # imports are the rest: seconds on a loaded 2-core machine, never the 30 s waited for)
    assert elapsed < CONNECT_TIMEOUT_S + 8, f"took {elapsed:.2f}s"
    assert "Traceback" not in err and out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    return lines[0]


def dead_url() -> str:
    return f"nats://127.0.0.1:{free_port()}"


async def test_cli_without_a_server(tmp_path: Path) -> None:
    url = dead_url()
    config = write_config(tmp_path / "home", nats_url=url)
    line = one_line(*await cairn_status(clean_env(tmp_path / "home"), tmp_path))
    assert line.startswith("error [unavailable]: ")
    assert url in line and "no server answers (connection refused" in line
    assert "start one with `cairn up`" in line and str(config) in line


async def test_cli_with_a_wrong_password(nats_server: NatsServer, tmp_path: Path) -> None:
    assert nats_server.credentials is not None
    config = write_config(
        tmp_path / "home",
        nats_url=nats_server.url,
        nats_user=nats_server.credentials.client_user,
        nats_password="not-the-password",
    )
    line = one_line(*await cairn_status(clean_env(tmp_path / "home"), tmp_path))
    assert line.startswith("error [unauthenticated]: ")
    assert nats_server.url in line and "refused the password" in line
    assert f"check the credentials in {config}" in line


def port_4222_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 4222), timeout=0.2):
            return True
    except OSError:
        return False


async def test_cli_before_cairn_up_wrote_its_config(tmp_path: Path) -> None:
    """``cairn up &`` then ``cairn status`` at once: no config yet, the default URL."""
    if port_4222_answers():
        pytest.skip("something listens on the default port 4222 on this machine")
    home = tmp_path / "fresh"
    line = one_line(*await cairn_status(clean_env(home), tmp_path))
    assert line.startswith("error [unavailable]: ")
    assert "nats://127.0.0.1:4222" in line and "no server answers" in line
    assert f"no settings file was read (`cairn up` writes {home / 'config.json'})" in line


async def test_cli_with_a_config_path_that_does_not_exist(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "config.json"
    env = clean_env(tmp_path / "home", CAIRN_CONFIG=str(missing))
    line = one_line(*await cairn_status(env, tmp_path))
    assert line.startswith("error [invalid_input]: ")
    assert f"the settings file {missing} does not exist" in line


def test_sdk_without_a_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAIRN_CONNECT_TIMEOUT_S", str(CONNECT_TIMEOUT_S))
    config = write_config(tmp_path / "home", nats_url=dead_url())
    ws = Workspace.from_config(config)
    started = time.monotonic()
    with pytest.raises(Unavailable, match="no server answers") as raised:
        _ = ws.experiments
    assert time.monotonic() - started < CONNECT_TIMEOUT_S + 1
    assert str(config) in raised.value.message


def test_sdk_with_a_wrong_password(
    nats_server: NatsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert nats_server.credentials is not None
    monkeypatch.setenv("CAIRN_CONNECT_TIMEOUT_S", str(CONNECT_TIMEOUT_S))
    config = write_config(
        tmp_path / "home",
        nats_url=nats_server.url,
        nats_user=nats_server.credentials.client_user,
        nats_password="not-the-password",
    )
    ws = Workspace.from_config(config)
    started = time.monotonic()
    with pytest.raises(Unauthenticated, match="check the credentials in"):
        _ = ws.experiments
    assert time.monotonic() - started < 1


def test_sdk_before_cairn_up_wrote_its_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if port_4222_answers():
        pytest.skip("something listens on the default port 4222 on this machine")
    for name in [k for k in os.environ if k.startswith("CAIRN_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("CAIRN_HOME", str(tmp_path / "fresh"))
    monkeypatch.setenv("CAIRN_CONNECT_TIMEOUT_S", str(CONNECT_TIMEOUT_S))
    ws = Workspace.from_config()
    started = time.monotonic()
    with pytest.raises(Unavailable, match="no settings file was read"):
        _ = ws.experiments
    assert time.monotonic() - started < CONNECT_TIMEOUT_S + 1
    with pytest.raises(InvalidInput, match="does not exist"):
        Workspace.from_config(tmp_path / "fresh" / "config.json")


async def test_credentials_file_that_does_not_exist(tmp_path: Path) -> None:
    settings = load_settings(env={}, file=write_config(tmp_path, nats_creds="/no/such.creds"))
    with pytest.raises(Unauthenticated, match=r"credentials file /no/such\.creds does not exist"):
        await connect(settings)


class ServeProcess:
    """``cairn serve tracking`` with its JSON log lines collected as they come."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.events: list[dict[str, object]] = []
        self.reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, server: NatsServer, home: Path) -> ServeProcess:
        assert server.credentials is not None
        env = clean_env(
            home,
            CAIRN_NATS_URL=server.url,
            CAIRN_NATS_USER=SERVICE_USER,
            CAIRN_NATS_PASSWORD=server.credentials.service_password,
            CAIRN_LOG_FORMAT="json",
        )
        proc = await asyncio.create_subprocess_exec(
            str(ENTRY_POINT),
            "serve",
            "tracking",
            env=env,
            cwd=home.parent,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(proc)

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            line = raw.decode().strip()
            self.events.append(json.loads(line) if line.startswith("{") else {"event": line})

    def count(self, event: str) -> int:
        return sum(1 for e in self.events if e.get("event") == event)

    async def wait_for(self, event: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.count(event):
            assert time.monotonic() < deadline, f"no {event!r} in {self.events}"
            assert self.proc.returncode is None, f"exited: {self.events}"
            await asyncio.sleep(0.05)

    async def stop(self) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(self.proc.wait(), 20)
        await self.reader
        return code


async def answers(server: NatsServer) -> list[str]:
    assert server.credentials is not None
    settings = load_settings(
        env={},
        nats_url=server.url,
        nats_user=server.credentials.client_user,
        nats_password=server.credentials.client_password,
    )
    conn = await connect(settings)
    try:
        return [s["service"] for s in await ping_all(conn)]
    finally:
        await conn.close()


async def test_a_service_waits_for_its_server_and_logs_an_outage_once(tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "nats-home", port=free_port())
    served = await ServeProcess.start(server, tmp_path / "served")
    try:
        await served.wait_for("nats_unreachable_retrying", timeout=20)
        await asyncio.sleep(1.5)  # a few attempts with nothing there
        await server.start()
        await served.wait_for("services_started", timeout=30)
        assert await answers(server) == ["tracking"]

        server.stop()
        await served.wait_for("nats_disconnected", timeout=10)
        await asyncio.sleep(3)  # the service keeps trying, quietly
        restarted = NatsServer(server.home, port=server.port)
        await restarted.start()
        server = restarted
        await served.wait_for("nats_reconnected", timeout=15)
        assert await answers(server) == ["tracking"]
    finally:
        code = await served.stop()
        server.stop()
    assert code == 0, served.events
    assert served.count("nats_unreachable_retrying") == 1
    assert served.count("nats_disconnected") == 1
    assert served.count("nats_reconnected") == 1
    warnings = [e for e in served.events if e.get("level") in ("warning", "error")]
    assert [e["event"] for e in warnings] == ["nats_unreachable_retrying", "nats_disconnected"]


async def test_a_service_stopped_before_its_server_came_exits(tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "nats-home", port=free_port())
    served = await ServeProcess.start(server, tmp_path / "served")
    await served.wait_for("nats_unreachable_retrying", timeout=20)
    started = time.monotonic()
    code = await served.stop()
    assert time.monotonic() - started < CONNECT_TIMEOUT_S + 1
    assert code == 1 and str(served.events[-1]["event"]).startswith("error [unavailable]")


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 that no CA vouches for."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cairn-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "server.pem", folder / "server.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[str]:
    """A nats-server that requires TLS, with a certificate this machine does not trust."""
    cert_file, key_file = self_signed(tmp_path)
    port = free_port()
    conf = tmp_path / "tls.conf"
    conf.write_text(
        f'listen: 127.0.0.1:{port}\ntls {{\n  cert_file: "{cert_file}"\n'
        f'  key_file: "{key_file}"\n}}\n'
    )
    log = tmp_path / "tls.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [find_nats_server(), "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 10
        while "Server is ready" not in log.read_text(errors="replace"):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield f"nats://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


async def test_cli_against_a_server_whose_certificate_is_not_trusted(
    tls_server: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "home", nats_url=tls_server)
    line = one_line(*await cairn_status(clean_env(tmp_path / "home"), tmp_path))
    assert line.startswith("error [unavailable]: ")
    assert tls_server in line and "the server's certificate is not trusted" in line
    assert f"set tls_ca in {config} to the server's CA file" in line


async def test_a_port_that_never_speaks_nats(tmp_path: Path) -> None:
    """Something accepts the connection and says nothing: the connect timeout still holds."""
    held: list[asyncio.StreamWriter] = []

    async def silent(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    listener = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    settings = load_settings(env={}, nats_url=f"nats://127.0.0.1:{port}", connect_timeout_s=1.0)
    started = time.monotonic()
    try:
        with pytest.raises(Unavailable, match="no server answers"):
            await connect(settings)
        assert time.monotonic() - started < settings.connect_timeout_s + 1
    finally:
        for writer in held:
            writer.close()
        listener.close()
        await listener.wait_closed()


async def _serve_once(env: dict[str, str], cwd: Path, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        str(ENTRY_POINT),
        "serve",
        "ingester",
        *args,
        env=env,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, (out + err).decode()


async def test_cairn_serve_takes_the_service_user_from_a_cairn_up_home(tmp_path: Path) -> None:
    """With nothing but the files ``cairn up`` writes (config.json names the local person),
    ``cairn serve`` connects as the home's service user; a person's credentials, given with
    ``--creds``, and a wrong password are refused with one line and a non-zero exit."""
    from cairn.embedded._up import client_settings, write_client_config

    home = tmp_path / "home"
    server = NatsServer(home, port=free_port())
    await server.start()
    try:
        assert server.credentials is not None
        person = client_settings(server, load_settings(env={}, home=str(home)))
        write_client_config(home / "config.json", person)
        env = clean_env(home, CAIRN_LOG_FORMAT="json")
        proc = await asyncio.create_subprocess_exec(
            str(ENTRY_POINT),
            "serve",
            "ingester",
            env=env,
            cwd=tmp_path,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        served = ServeProcess(proc)
        await served.wait_for("services_started", timeout=30)
        assert "ingester" in await answers(server)
        assert await served.stop() == 0

        creds = tmp_path / "person.json"
        creds.write_text(json.dumps({"user": person.nats_user, "password": person.nats_password}))
        code, said = await _serve_once(env, tmp_path, "--creds", str(creds))
        assert code != 0 and "is a person" in said and "Traceback" not in said, said
        wrong = tmp_path / "wrong.json"
        wrong.write_text(json.dumps({"user": SERVICE_USER, "password": "not-it"}))
        started = time.monotonic()
        code, said = await _serve_once(env, tmp_path, "--creds", str(wrong))
        assert code != 0 and "Traceback" not in said, said
        assert time.monotonic() - started < CONNECT_TIMEOUT_S + 10
        bad = tmp_path / "bad.json"
        bad.write_text("[]")
        code, said = await _serve_once(env, tmp_path, "--creds", str(bad))
        assert code == 2 and "user" in said and "Traceback" not in said, said
    finally:
        server.stop()


async def test_pinging_a_server_where_nothing_serves_finds_nothing(tmp_path: Path) -> None:
    """No service subscribed: the server's no-responders status is not an answer."""
    server = NatsServer(tmp_path / "nats-home", port=free_port())
    await server.start()
    try:
        assert await answers(server) == []
    finally:
        server.stop()
