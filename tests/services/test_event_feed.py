"""The public event feed: typed events of one's own workspaces only, filters, a durable
subscriber that is killed and started again, and ``cairn events tail``."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cairn.bus import Connection
from cairn.errors import PermissionDenied, UnknownEventType
from cairn.proto.commands import CreateExperiment
from cairn.proto.events import ExperimentCreated, SecretSet, WorkspaceCreated
from cairn.proto.feed import ReadEvents
from cairn.rpc import Client
from cairn.sdk import AsyncWorkspace, FeedEvent
from cairn.settings import Settings
from tests.sdk.test_sync_sdk import run_script, sdk_env

CAIRN = [sys.executable, "-c", "from cairn.cli import main; main()"]


async def experiments(client: Client, *names: str) -> None:
    for name in names:
        await client.send(CreateExperiment(command_id=uuid.uuid4().hex, name=name))


async def everything(
    ws: AsyncWorkspace, types: list[str] | None = None, since: int | datetime | None = None
) -> list[FeedEvent]:
    return [e async for e in ws.events(types or (), since=since, follow=False)]


async def test_the_feed_yields_typed_events_with_their_coordinates(
    client: Client, ws: AsyncWorkspace
) -> None:
    await experiments(client, "a", "b")
    await ws.secrets.set("token", "do-not-show")
    got = await everything(ws)
    assert [e.type for e in got][:1] == ["WorkspaceCreated"]
    assert [e.seq for e in got] == sorted({e.seq for e in got})
    created = [e for e in got if isinstance(e.event, ExperimentCreated)]
    assert [e.event.name for e in created if e.event] == ["a", "b"]
    first = created[0]
    assert (first.kind, first.entity_id, first.workspace) == ("experiment", "a", client.workspace)
    assert first.command_id and first.causation_id == first.command_id
    assert first.actor and first.time.tzinfo is not None
    (secret,) = [e for e in got if isinstance(e.event, SecretSet)]
    assert secret.event is not None and secret.event.sealed == "<sealed>"
    assert isinstance(got[0].event, WorkspaceCreated)
    assert "do-not-show" not in json.dumps([e.to_json() for e in got], default=str)


async def test_types_and_since(client: Client, ws: AsyncWorkspace) -> None:
    await experiments(client, "a")
    middle = datetime.now(UTC)
    await experiments(client, "b", "c")
    only = await everything(ws, types=["ExperimentCreated"])
    assert [e.event.name for e in only if isinstance(e.event, ExperimentCreated)] == ["a", "b", "c"]
    after = await everything(ws, types=["ExperimentCreated"], since=only[0].seq)
    assert [e.seq for e in after] == [e.seq for e in only[1:]]
    recent = await everything(ws, since=middle)
    assert [e.seq for e in recent] == [e.seq for e in only[1:]]


async def test_an_unknown_type_is_a_typed_error_listing_the_valid_ones(
    client: Client, ws: AsyncWorkspace
) -> None:
    with pytest.raises(UnknownEventType, match=r"'RunDone'.*ModelVersionRegistered.*RunCompleted"):
        await everything(ws, types=["RunDone"])
    with pytest.raises(UnknownEventType, match="RunDone"):  # from the service too
        await client.ask(ReadEvents(types=("RunDone",)))


async def test_a_person_reads_only_the_workspaces_they_are_a_member_of(
    client: Client, people: dict[str, Connection]
) -> None:
    await experiments(client, "private")
    stranger = Client(people["dana"], client.workspace)
    with pytest.raises(PermissionDenied, match="not a member"):
        await stranger.ask(ReadEvents())
    with pytest.raises(PermissionDenied):
        await everything(AsyncWorkspace(people["dana"], client.workspace))


async def _spawn(*args: str, env: dict[str, str], cwd: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *CAIRN,
        *args,
        env=env,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def _read_lines(proc: asyncio.subprocess.Process, until: set[int], into: list[int]) -> None:
    """Collect the seqs ``proc`` prints until every one of ``until`` was among them."""
    assert proc.stdout is not None
    while not until <= set(into):
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        if not line:
            _, err = await proc.communicate()
            raise AssertionError(f"the subscriber ended: {err.decode()[-3000:]}")
        into.append(json.loads(line)["seq"])


async def _kill(proc: asyncio.subprocess.Process) -> None:
    proc.send_signal(signal.SIGKILL)
    await proc.communicate()


async def test_a_durable_subscriber_killed_and_restarted_misses_nothing(
    client: Client, ws: AsyncWorkspace, client_settings: Settings, tmp_path: Path
) -> None:
    env = sdk_env(client_settings, client.workspace, tmp_path / "home")
    await experiments(client, *(f"before{i}" for i in range(20)))
    before = [e.seq for e in await everything(ws)]
    first: list[int] = []
    args = ("events", "tail", "-f", "--json", "--durable", "ci")
    proc = await _spawn(*args, env=env, cwd=tmp_path)
    try:
        await _read_lines(proc, set(before[:10]), first)
    finally:
        await _kill(proc)  # mid-stream: it has printed at least ten, maybe more
    await experiments(client, *(f"after{i}" for i in range(10)))
    expected = [e.seq for e in await everything(ws)]
    position = json.loads(next((tmp_path / "home" / "feeds").rglob("ci.json")).read_text())["seq"]
    assert position <= max(first)
    second: list[int] = []
    proc = await _spawn(*args, env=env, cwd=tmp_path)
    try:
        await _read_lines(proc, set(expected) - set(first), second)
    finally:
        await _kill(proc)
    assert second[0] == min(s for s in expected if s > position), "resumed where it stopped"
    seen = first + second
    assert set(expected) <= set(seen), "every event at least once"
    assert sorted(set(seen)) == expected, "deduplicated by seq: exactly once, nothing else"
    assert sorted(first) == first and sorted(second) == second


async def test_cairn_events_tail_json_prints_typed_events(
    client: Client, client_settings: Settings, tmp_path: Path
) -> None:
    await experiments(client, "cli")
    env = sdk_env(client_settings, client.workspace, tmp_path / "home")
    proc = await _spawn(
        "events", "tail", "--json", "--type", "ExperimentCreated", env=env, cwd=tmp_path
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    (line,) = [json.loads(x) for x in out.decode().splitlines()]
    assert line["type"] == "ExperimentCreated" and line["data"]["name"] == "cli"
    assert (line["kind"], line["entity_id"], line["workspace"]) == (
        "experiment",
        "cli",
        client.workspace,
    )
    assert {"seq", "time", "actor", "command_id", "causation_id", "correlation_id"} <= line.keys()
    proc = await _spawn("events", "tail", "--type", "RunDone", env=env, cwd=tmp_path)
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1 and "unknown_event_type" in err.decode()
    assert "RunCompleted" in err.decode()


async def test_the_sync_sdk_reads_the_feed(
    client: Client, client_settings: Settings, tmp_path: Path
) -> None:
    env = sdk_env(client_settings, client.workspace, tmp_path / "home")
    got = await run_script("events_script.py", env=env, cwd=tmp_path)
    assert got["names"] == ["alpha", "beta"]
    assert got["first"] == "WorkspaceCreated" and got["error"] == "unknown_event_type"
    # the loop left after its first event: the next subscriber of that name gets it again
    assert got["resumed_from"] == got["first_seq"]
