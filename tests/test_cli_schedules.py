"""Schedule files and ``cairn schedule``: bad files refused naming the key; create, list,
show (next due times, the last fires with their runs), disable, enable, delete."""

from __future__ import annotations

import asyncio
import json
import textwrap
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from cairn.errors import InvalidInput
from cairn.proto.assets import DataFile, DataPath, DatasetSpec, RegisterDataset
from cairn.proto.schedules import CronTrigger
from cairn.rpc import Client
from cairn.sdk import load_schedule_file
from cairn.settings import Settings
from tests.sdk.test_sync_sdk import run_script, sdk_env
from tests.test_cli import cli, run_cli

JOB = """\
command: python train.py
code: ./src
environment: azureml:cairn-python-3.11@latest
experiment_name: scheduled
display_name: nightly train
"""

SCHEDULE = """\
$schema: https://azuremlschemas.azureedge.net/latest/schedule.schema.json
name: nightly
display_name: Nightly training
description: trains every night
tags: {team: a}
trigger:
  type: cron
  expression: "0 2 * * *"
  time_zone: Europe/Berlin
  start_time: "2026-01-01T00:00:00"
create_job: ./job.yml
"""


def _files(tmp_path: Path, schedule: str = SCHEDULE, job: str = JOB) -> Path:
    (tmp_path / "src").mkdir(exist_ok=True)
    (tmp_path / "src" / "train.py").write_text("print('trained')\n")
    (tmp_path / "job.yml").write_text(job)
    (tmp_path / "schedule.yml").write_text(schedule)
    return tmp_path / "schedule.yml"


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (("display_name: Nightly training", "dispaly_name: x"), "dispaly_name"),
        (('expression: "0 2 * * *"', 'expression: "0 25 * * *"'), "trigger.expression"),
        (("time_zone: Europe/Berlin", "time_zone: Europe/Atlantis"), "trigger.time_zone"),
        (("type: cron", "type: hourly"), "trigger"),
        (
            (
                '  start_time: "2026-01-01T00:00:00"',
                '  start_time: "2026-01-01T00:00:00"\n  end_time: "2025-01-01T00:00:00"',
            ),
            "trigger.end_time",
        ),
        (("create_job: ./job.yml", "create_job: ./job.yml\ncatch_up: burst"), "catch_up"),
    ],
)
def test_bad_schedule_files_name_the_key(tmp_path: Path, change: tuple[str, str], key: str) -> None:
    path = _files(tmp_path, SCHEDULE.replace(*change))
    with pytest.raises(InvalidInput, match=key.replace(".", r"\.")):
        load_schedule_file(path)


def test_an_unknown_frequency_and_an_unknown_trigger_key(tmp_path: Path) -> None:
    recurrence = """\
name: r
trigger:
  type: recurrence
  frequency: fortnight
  interval: 1
create_job: ./job.yml
"""
    with pytest.raises(InvalidInput, match=r"trigger\.frequency"):
        load_schedule_file(_files(tmp_path, recurrence))
    unknown = recurrence.replace("fortnight", "day").replace("interval: 1", "intervall: 1")
    with pytest.raises(InvalidInput, match="intervall"):
        load_schedule_file(_files(tmp_path, unknown))
    with pytest.raises(InvalidInput, match=r"create_job\.description"):
        load_schedule_file(_files(tmp_path, SCHEDULE, JOB + "description: d\n"))
    inline = SCHEDULE.replace("create_job: ./job.yml", "create_job:\n" + textwrap.indent(JOB, "  "))
    definition = load_schedule_file(_files(tmp_path, inline))
    assert definition.job.display_name == "nightly train"
    assert isinstance(definition.trigger, CronTrigger)
    assert definition.trigger.time_zone == "Europe/Berlin"


async def test_the_schedule_commands(
    client: Client, client_settings: Settings, tmp_path: Path
) -> None:
    env = sdk_env(client_settings, client.workspace, tmp_path / "home")
    path = _files(tmp_path)
    out = await cli("schedule", "create", "--file", str(path), env=env, cwd=tmp_path)
    assert out.splitlines()[0] == "schedule nightly created"
    assert "next: " in out and "T01:00:00Z" in out  # 02:00 in Berlin in winter
    rows = json.loads(await cli("schedule", "list", "--json", env=env, cwd=tmp_path))
    assert [(r["name"], r["enabled"], r["trigger"]["type"]) for r in rows] == [
        ("nightly", True, "cron")
    ]
    shown = json.loads(await cli("schedule", "show", "nightly", "--json", env=env, cwd=tmp_path))
    assert len(shown["next_dues"]) == 5 and shown["fires"] == []
    submission = shown["submission"]
    assert submission["type"] == "SubmitJob" and submission["run_id"] == "scheduled"
    assert submission["job"]["environment"]["name"] == "cairn-python-3.11"  # pinned
    assert submission["environment_name"] is None
    (tmp_path / "schedule.yml").write_text(SCHEDULE.replace('"0 2 * * *"', '"0 3 * * *"'))
    out = await cli("schedule", "update", "--file", str(path), env=env, cwd=tmp_path)
    assert out.splitlines()[0] == "schedule nightly updated" and "T02:00:00Z" in out
    await cli("schedule", "disable", "nightly", env=env, cwd=tmp_path)
    shown = json.loads(await cli("schedule", "show", "nightly", "--json", env=env, cwd=tmp_path))
    assert not shown["enabled"] and shown["next_dues"] == []
    await cli("schedule", "enable", "nightly", env=env, cwd=tmp_path)
    text = await cli("schedule", "show", "nightly", env=env, cwd=tmp_path)
    assert "next due times:" in text and "last fires:" in text
    await cli("schedule", "delete", "nightly", env=env, cwd=tmp_path)
    code, _, err = await run_cli("schedule", "show", "nightly", env=env, cwd=tmp_path)
    assert code != 0 and "no schedule 'nightly'" in err


async def test_show_lists_a_fire_with_its_run(
    client: Client, client_settings: Settings, tmp_path: Path
) -> None:
    env = sdk_env(client_settings, client.workspace, tmp_path / "home")
    on_data = SCHEDULE.replace(
        """  type: cron
  expression: "0 2 * * *"
  time_zone: Europe/Berlin
  start_time: "2026-01-01T00:00:00"
""",
        "  type: event\n  on: dataset_version\n  name: cli-data\n",
    )
    await cli("schedule", "create", "--file", str(_files(tmp_path, on_data)), env=env, cwd=tmp_path)
    files = [DataFile(datastore="workspaceblobstore", path="d/1.csv", size=1, etag="e")]
    spec = DatasetSpec(
        kind="file", paths=[DataPath(datastore="workspaceblobstore", pattern="d/*")], files=files
    )
    await client.send(RegisterDataset(command_id=uuid.uuid4().hex, name="cli-data", spec=spec))
    while True:
        shown = json.loads(
            await cli("schedule", "show", "nightly", "--json", env=env, cwd=tmp_path)
        )
        if shown["fires"] and shown["fires"][0]["run_status"]:
            break
        await asyncio.sleep(0.1)
    fire = shown["fires"][0]
    assert fire["state"] == "submitted" and fire["run_status"] == "Queued"
    job = json.loads(await cli("job", "show", fire["run_id"], "--json", env=env, cwd=tmp_path))
    assert job["experiment_name"] == "scheduled" and job["display_name"] == "nightly train"
    assert job["scheduled"]["schedule"] == "nightly"
    text = await cli("schedule", "show", "nightly", env=env, cwd=tmp_path)
    assert fire["run_id"][:12] in text


async def test_the_v1_names(client: Client, client_settings: Settings, tmp_path: Path) -> None:
    env = sdk_env(client_settings, client.workspace, tmp_path / "home")
    got = await run_script("schedule_script.py", env=env, cwd=tmp_path)
    assert got["pipeline"][0] == "NotFound" and "no published pipeline p1" in got["pipeline"][1]
    assert got["frequency"][0] == "InvalidInput" and "Fortnight" in got["frequency"][1]
    assert got["described"][0] == "InvalidInput" and "job.yml: description:" in got["described"][1]
    name, status, description, dues = got["created"]
    assert (name, status, description) == ("weekly", "Active", "every Monday")
    first, second = (datetime.fromisoformat(d) for d in dues)
    assert first.weekday() == 0 and (first.hour, first.minute) == (6, 30)
    assert second - first == timedelta(days=7)
    assert got["disabled"] == "Disabled"
    assert got["active"] == [] and got["all"] == ["weekly"]
    assert got["enabled"] == "Active"
