"""``cairn up`` as a user runs it: a subprocess over a fresh home, then Ctrl-C, then again."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from cairn.bus import connect
from cairn.embedded import free_port
from cairn.errors import PermissionDenied, Unauthenticated
from cairn.settings import Settings, load_settings

CAIRN = [sys.executable, "-c", "from cairn.cli import main; main()"]


class Up:
    def __init__(self, home: Path, port: int, *args: str) -> None:
        env = {**os.environ, "CAIRN_HOME": str(home), "CAIRN_LOG_FORMAT": "json"}
        self.proc = subprocess.Popen(
            [*CAIRN, "up", "--port", str(port), "--gateway-port", str(free_port()), *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []

    def wait_for(self, text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line and self.proc.poll() is not None:
                break
            self.lines.append(line)
            if text in line:
                return line
        raise AssertionError(f"{text!r} not seen; output: {self.lines}; stderr: {self._stderr()}")

    def _stderr(self) -> str:
        if self.proc.poll() is None:
            return "(still running)"
        assert self.proc.stderr is not None
        return self.proc.stderr.read()[-3000:]

    def interrupt(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        out, _ = self.proc.communicate(timeout=20)
        self.lines.append(out)
        return self.proc.returncode


def test_up_runs_the_demo_stops_on_ctrl_c_and_keeps_data(
    up_home: tuple[Path, int], ups: list[subprocess.Popen[str]]
) -> None:
    home, port = up_home
    up = Up(home, port, "--demo")
    ups.append(up.proc)
    up.wait_for("cairn is up", timeout=10)  # the readiness bound on this 2-core machine
    up.wait_for("demo complete: experiment 'demo' has 4 runs", timeout=20)
    up.wait_for("press Ctrl-C", timeout=5)

    for name in ("config.json", "credentials.json", "nats/nats.conf"):
        assert stat.S_IMODE((home / name).stat().st_mode) == 0o600, name
    conf = (home / "nats" / "nats.conf").read_text()
    assert "sync_interval: always" in conf and f"listen: 127.0.0.1:{port}" in conf

    env = {**os.environ, "CAIRN_HOME": str(home)}
    status = subprocess.run(
        [*CAIRN, "status", "--json"], env=env, capture_output=True, text=True, timeout=30
    )
    report = json.loads(status.stdout)
    assert report["streams"]["EVENTS"]["messages"] >= 11
    assert [s["service"] for s in report["services"]] == [
        "agent",
        "artifacts",
        "audit",
        "ingester",
        "pipelines",
        "registry",
        "scheduler",
        "schedules",
        "sweeps",
        "tracking",
        "webhooks",
    ]
    # the audit service signs the log with a key of the home's, and the log verifies
    audit = subprocess.run(
        [*CAIRN, "audit", "verify", "--json"], env=env, capture_output=True, text=True, timeout=60
    )
    assert audit.returncode == 0, audit.stderr
    verdicts = json.loads(audit.stdout)
    assert verdicts and all(v["verdict"] == "ok" for v in verdicts)
    assert stat.S_IMODE((home / "keys" / "audit.ed25519.key").stat().st_mode) == 0o600
    # the studio: served by cairn up, signed in to with what `cairn studio` prints
    studio = [line for line in up.lines if line.startswith("studio at http://127.0.0.1:")]
    assert studio, up.lines
    url = studio[0].split()[2]
    shown = subprocess.run(
        [*CAIRN, "studio", "--json"], env=env, capture_output=True, text=True, timeout=30
    )
    sign_in = json.loads(shown.stdout)
    assert sign_in["url"] != url  # the settings' default port; this test moved it
    with httpx.Client(base_url=url) as http:
        page = http.get("/login")
        csrf = re.search(r'name="_csrf" value="([^"]+)"', page.text)
        assert csrf
        form = {"username": sign_in["user"], "password": sign_in["password"], "_csrf": csrf[1]}
        assert http.post("/login", data=form).status_code == 303
        experiments = http.get("/w/default/experiments")
        assert experiments.status_code == 200 and "demo" in experiments.text
    assert up.interrupt() == 0

    again = Up(home, port, "--demo")
    ups.append(again.proc)
    again.wait_for("demo complete: experiment 'demo' has 8 runs", timeout=20)
    assert again.interrupt() == 0


def test_server_refuses_clients_without_credentials(
    up_home: tuple[Path, int], ups: list[subprocess.Popen[str]]
) -> None:
    home, port = up_home
    up = Up(home, port)
    ups.append(up.proc)
    up.wait_for("cairn is up", timeout=10)

    async def probe() -> None:
        url = f"nats://127.0.0.1:{port}"
        with pytest.raises(Unauthenticated, match="wants credentials and none were given"):
            await connect(Settings(nats_url=url))
        with pytest.raises(Unauthenticated, match="refused the password of user 'cairn-service'"):
            await connect(Settings(nats_url=url, nats_user="cairn-service", nats_password="guess"))
        # the client user may send commands but never append events itself
        settings = load_settings(env={"CAIRN_HOME": str(home)})
        conn = await connect(settings)
        try:
            from cairn.bus import EventStore
            from tests.helpers import envelope

            store = EventStore(conn, attempts=1)
            with pytest.raises(PermissionDenied):
                await store.append(
                    "cairn.ev.default.experiment.x",
                    [envelope("default", "x")],
                    expected_seq=None,
                    msg_id="forged",
                )
        finally:
            await conn.close()

    try:
        asyncio.run(probe())
    finally:
        assert up.interrupt() == 0


def test_a_second_up_on_the_same_home_is_refused(
    up_home: tuple[Path, int], ups: list[subprocess.Popen[str]]
) -> None:
    home, port = up_home
    up = Up(home, port)
    ups.append(up.proc)
    up.wait_for("cairn is up", timeout=10)
    try:
        env = {**os.environ, "CAIRN_HOME": str(home)}
        second = subprocess.run(
            [*CAIRN, "up", "--port", str(free_port())],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert second.returncode == 1
        assert "already runs" in second.stderr
    finally:
        assert up.interrupt() == 0
