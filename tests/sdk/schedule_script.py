"""Azure ML v1's Schedule names over Cairn: a schedule of a published pipeline that does not
exist is refused; a job schedule on a recurrence is created, listed, disabled and enabled."""

import json
from pathlib import Path

from cairn.sdk import Schedule, ScheduleRecurrence, ScriptRunConfig, Workspace

ws = Workspace.from_config()
out: dict[str, object] = {}
recurrence = ScheduleRecurrence(
    frequency="Week",
    interval=1,
    start_time="2026-01-05T00:00:00",
    time_zone="UTC",
    week_days=["Monday"],
    time_of_day="06:30",
)
try:
    Schedule.create(
        ws, "from-pipeline", pipeline_id="p1", experiment_name="x", recurrence=recurrence
    )
except Exception as exc:
    out["pipeline"] = [type(exc).__name__, str(exc)]
try:
    ScheduleRecurrence(frequency="Fortnight", interval=1)
except Exception as exc:
    out["frequency"] = [type(exc).__name__, str(exc)]

Path("src").mkdir(exist_ok=True)
Path("src/train.py").write_text("print('hi')\n")
config = ScriptRunConfig(source_directory="src", script="train.py")
Path("job.yml").write_text("code: src\ncommand: python train.py\ndescription: nightly\n")
try:
    Schedule.create(ws, "described", experiment_name="x", recurrence=recurrence, job="job.yml")
except Exception as exc:
    out["described"] = [type(exc).__name__, str(exc)]
schedule = Schedule.create(
    ws,
    "weekly",
    experiment_name="weekly-train",
    recurrence=recurrence,
    job=config,
    description="every Monday",
)
out["created"] = [schedule.id, schedule.status, schedule.description, schedule.next_dues[:2]]
schedule.disable()
out["disabled"] = schedule.status
out["active"] = [s.name for s in Schedule.list(ws)]
out["all"] = [s.name for s in Schedule.list(ws, active_only=False)]
Schedule.get(ws, "weekly").enable()
out["enabled"] = Schedule.get(ws, "weekly").status
print(json.dumps(out))
