"""``cairn replay``: every read model rebuilt from sequence 1 into a store of its own, as of a
sequence or a time, and compared with the live ones by the services that hold them."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest

from cairn.bus import Connection, EventStore
from cairn.embedded._up import read_models
from cairn.proto import subjects
from cairn.proto.jobs import JobSpec, SubmitJob
from cairn.sdk import AsyncWorkspace
from cairn.settings import Settings
from tests.test_cli import CAIRN


def _env(service_settings: Settings, tmp_path: Path) -> tuple[dict[str, str], Path]:
    creds = tmp_path / "service.json"
    user, password = service_settings.nats_user, service_settings.nats_password
    creds.write_text(json.dumps({"user": user, "password": password}))
    env = {
        **os.environ,
        "CAIRN_HOME": str(tmp_path / "home"),
        "CAIRN_NATS_URL": service_settings.nats_url,
        "CAIRN_LOG_FORMAT": "json",
    }
    return env, creds


async def _replay(env: dict[str, str], creds: Path, *args: str) -> tuple[int | None, Any, str]:
    """``cairn replay ARGS --json``: it replays the whole shared log of the suite so far, so
    it has longer than other commands."""
    pipe = asyncio.subprocess.PIPE
    argv = [*CAIRN, "replay", *args, "--creds", str(creds), "--json"]
    proc = await asyncio.create_subprocess_exec(*argv, env=env, stdout=pipe, stderr=pipe)
    out, err = await asyncio.wait_for(proc.communicate(), 300)
    return proc.returncode, json.loads(out) if out.strip() else None, err.decode()


async def _workload(ws: AsyncWorkspace) -> str:
    """Something in every read model: a run with tags, metrics and a file, a model, a job."""
    exp = await ws.experiment("replayed")
    run = await exp.start_run(display_name="r")
    await run.set_tags({"team": "a"})
    run.log("loss", 0.5)
    run.log("loss", 0.25)
    await run.flush()
    path = Path(ws.settings.home) / "w.bin"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"weights")
    await run.upload_file("outputs/w.bin", path)
    await run.complete()
    await ws.models.register("replayed-model", "outputs/w.bin", run_id=run.id)
    job = JobSpec(command=["true"])
    await ws.client.send(
        SubmitJob(
            command_id=uuid.uuid4().hex,
            run_id=uuid.uuid4().hex,
            job=job,
            experiment_name="replayed",
        )
    )
    return run.id


@pytest.mark.timeout(600)
async def test_every_live_read_model_equals_its_replay(
    ws: AsyncWorkspace, service_settings: Settings, tmp_path: Path
) -> None:
    await _workload(ws)
    env, creds = _env(service_settings, tmp_path)
    code, rows, err = await _replay(env, creds, "--verify")
    assert code == 0, err[-3000:]
    assert {r["read_model"] for r in rows} == set(read_models()), "every read model is replayable"
    for row in rows:
        assert row["same"] and row["live_hash"] == row["replayed_hash"], row
        assert row["difference"] is None


@pytest.mark.timeout(600)
async def test_a_changed_row_is_found_and_named(
    ws: AsyncWorkspace, service_settings: Settings, tmp_path: Path
) -> None:
    await _workload(ws)
    env, creds = _env(service_settings, tmp_path)
    db = sqlite3.connect(service_settings.state_path / "registry.sqlite")
    (generation,) = db.execute(
        "SELECT generation FROM projection_state WHERE name = 'registry'"
    ).fetchone()
    table = f"registry__models__g{generation}"
    where = "workspace = ? AND name = 'replayed-model'"
    (before,) = db.execute(f"SELECT description FROM {table} WHERE {where}", (ws.name,)).fetchone()
    with db:
        db.execute(f"UPDATE {table} SET description = 'edited' WHERE {where}", (ws.name,))
    try:
        code, rows, err = await _replay(env, creds, "--verify", "--projection", "registry")
    finally:
        with db:
            db.execute(f"UPDATE {table} SET description = ? WHERE {where}", (before, ws.name))
        db.close()
    assert code == 1, err[-3000:]
    [row] = rows
    assert not row["same"] and row["live_hash"] != row["replayed_hash"]
    difference = row["difference"]
    assert difference["table"] == "models"
    assert difference["live"]["description"] == "edited"
    assert difference["replayed"]["description"] == before
    assert difference["live"]["name"] == difference["replayed"]["name"] == "replayed-model"


@pytest.mark.timeout(900)
async def test_a_replay_until_a_sequence_or_a_time_is_the_read_model_as_it_was(
    ws: AsyncWorkspace,
    store: EventStore,
    conn: Connection,
    service_settings: Settings,
    tmp_path: Path,
) -> None:
    run_id = await _workload(ws)
    history = await store.read(subjects.event(ws.name, "run", run_id))
    [started] = [r for r in history if type(r.envelope.data).__name__ == "RunStarted"]
    env, creds = _env(service_settings, tmp_path)

    async def status_of(*until: str) -> str | None:
        keep = tmp_path / f"keep-{uuid.uuid4().hex[:6]}"
        code, rows, err = await _replay(
            env, creds, "--projection", "tracking", "--keep", str(keep), *until
        )
        assert code == 0, err[-3000:]
        [row] = rows
        db = sqlite3.connect(keep / "tracking.sqlite")
        try:
            found = db.execute(
                "SELECT status FROM tracking__runs__g1 WHERE workspace = ? AND run_id = ?",
                (ws.name, run_id),
            ).fetchone()
        finally:
            db.close()
        assert len(row["hash"]) == 64
        return None if found is None else str(found[0])

    assert await status_of() == "Completed"
    assert await status_of("--until-seq", str(started.seq)) == "Running"
    # as of the moment the server stored the start (a time, in the server's clock)
    raw = await conn.js.get_msg("EVENTS", started.seq)
    whole, _, fraction = str(raw.time).rstrip("Z").partition(".")
    stored = datetime.fromisoformat(whole).replace(tzinfo=UTC)
    stored += timedelta(microseconds=int(fraction[:6].ljust(6, "0")) + 1)  # its nanoseconds
    assert await status_of("--until-time", stored.isoformat()) == "Running"
    assert await status_of("--until-time", "2000-01-01T00:00:00+00:00") is None

    code, first, err = await _replay(
        env, creds, "--projection", "tracking", "--until-seq", str(started.seq)
    )
    code2, second, _ = await _replay(
        env, creds, "--projection", "tracking", "--until-seq", str(started.seq)
    )
    assert code == code2 == 0, err[-3000:]
    assert first[0]["hash"] == second[0]["hash"], "a replay to one position is the same every time"


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--projection", "nope"], "no read model called 'nope'; these exist:"),
        (["--projection", "tracking", "--all"], "give one"),
        (["--verify", "--until-seq", "3"], "--verify compares each read model at its own"),
        (["--until-time", "yesterday"], "is no ISO 8601 time"),
        (["--until-seq", "0"], "0 is not in the range x>=1"),
    ],
)
async def test_bad_replay_arguments_are_refused_by_name(
    service_settings: Settings, tmp_path: Path, args: list[str], said: str
) -> None:
    env, creds = _env(service_settings, tmp_path)
    code, _, err = await _replay(env, creds, *args)
    assert code == 2 and said in err and "Traceback" not in err, err


def test_creds_replace_only_the_user_and_password() -> None:
    """``--creds`` replaces the user and password only."""
    from cairn.cli._stack import service_connection_settings

    base = msgspec.convert({"home": "/tmp/x", "nats_url": "nats://h:1"}, Settings)
    creds = Path(os.environ.get("TMPDIR", "/tmp")) / f"creds-{uuid.uuid4().hex}.json"
    creds.write_text(json.dumps({"user": "u", "password": "p"}))
    try:
        made = service_connection_settings(creds, base)
    finally:
        creds.unlink()
    assert (made.nats_user, made.nats_password, made.nats_url) == ("u", "p", "nats://h:1")
