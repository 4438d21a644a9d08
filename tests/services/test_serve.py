"""``cairn serve <service>``: one service alone in its own process, stopped by SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from cairn.bus import Connection
from cairn.rpc import ping_all
from cairn.settings import Settings


async def _instances(conn: Connection) -> list[str]:
    return [s["instance"] for s in await ping_all(conn) if s["service"] == "tracking"]


async def _answering(conn: Connection, count: int) -> list[str]:
    """The tracking instances answering pings, asked again while fewer or more than ``count``
    answer within one ping's window (a busy instance may answer after it): bounded."""
    for _ in range(40):
        found = await _instances(conn)
        if len(found) == count:
            break
    return found


async def test_serve_runs_one_service_and_stops_on_sigterm(
    services: None, conn: Connection, service_settings: Settings, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "CAIRN_HOME": str(tmp_path),
        "CAIRN_NATS_USER": service_settings.nats_user or "",
        "CAIRN_NATS_PASSWORD": service_settings.nats_password or "",
        "CAIRN_LOG_FORMAT": "json",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from cairn.cli import main; main()",
        "serve",
        "tracking",
        "--nats-url",
        service_settings.nats_url,
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        for _ in range(100):
            if f":{proc.pid}" in " ".join(await _instances(conn)):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the served instance never answered a ping")
        assert len(await _answering(conn, 2)) == 2
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err.decode()[-2000:]
        assert b"services_stopping" in err
        assert (tmp_path / "state" / "tracking.sqlite").exists()
        assert len(await _answering(conn, 1)) == 1
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_serve_refuses_an_unknown_service() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from cairn.cli import main; main()",
        "serve",
        "nope",
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    assert proc.returncode == 2 and b"choose from tracking, ingester, artifacts" in err
