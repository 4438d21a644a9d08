"""The fault suite's own check: on one server without faults the workload's history passes
the checker, and what the checker exists to find (a lost acknowledged command, a command
stored twice, a version given twice, a job that never ended, a read model that differs from
its replay) is found and named when it is planted."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

import pytest

from cairn.bus import EventStore
from cairn.proto.events import ModelVersionRegistered
from cairn.proto.registry import RegisterModelVersion
from tests.cluster import stack
from tests.cluster.checker import check, read_log, wait_for_jobs
from tests.cluster.workload import Ack, Workload
from tests.conftest import LEAKS_SOCKETS, own_server, settings_for


@LEAKS_SOCKETS
@pytest.mark.timeout(240)
async def test_a_quiet_history_passes_and_planted_defects_are_named(
    tmp_path: Path, nats_py_leaks: None
) -> None:
    server, base, conn = await own_server(tmp_path / "home", request_timeout=5.0)
    workspace = "f" + uuid.uuid4().hex[:10]
    try:
        settings = stack.service_settings(base, tmp_path)
        async with stack.services(settings):
            load = Workload(
                settings_for(server, service=False),
                workspace,
                seed=7,
                lake=tmp_path / "lake",
                clients=3,
                duration_s=6,
            )
            await load.prepare()
            agent_settings = settings_for(server, service=False, agent=True)
            async with stack.agent(agent_settings, workspace, tmp_path):
                history = await load.run()
                assert not await wait_for_jobs(conn, workspace, history, 60)
            report = await check(conn, workspace, history)
            assert report.ok, f"{report}\n{load.errors}"
            kinds = {a.kind for a in history.acked.values()}
            assert {"CreateRun", "LogMetrics", "RegisterModelVersion", "SubmitJob"} <= kinds, (
                history.summary()
            )

            # an acknowledged command that is not in the log, a job that never ended
            lost = RegisterModelVersion(command_id=uuid.uuid4().hex, name="m-alpha", path="x")
            history.invoke(lost)
            history.acked[lost.command_id] = Ack(
                lost.command_id, "RegisterModelVersion", 10**6, "m", False, 0.0
            )
            history.jobs["never-ran"] = lost.command_id
            # a model registration stored a second time under a new message id
            logged = await read_log(conn, workspace)
            [first] = [e for e in logged.events if isinstance(e.data, ModelVersionRegistered)][:1]
            raw = await EventStore(conn).read_stored(first.subject)
            original = next(m for m in raw if m.seq == first.seq)
            await EventStore(conn).publish(
                first.subject, original.data, msg_id=f"{first.causation_id}-again:0"
            )
            # a read model row edited behind the projection's back
            db = sqlite3.connect(settings.state_path / "registry.sqlite")
            (generation,) = db.execute(
                "SELECT generation FROM projection_state WHERE name = 'registry'"
            ).fetchone()
            with db:
                db.execute(
                    f"UPDATE registry__models__g{generation} SET description = 'edited'"
                    " WHERE workspace = ?",
                    (workspace,),
                )
            db.close()

            report = await check(conn, workspace, history, verify_timeout=60)
            text = str(report)
            assert not report.ok
            assert f"RegisterModelVersion {lost.command_id}" in text and "not in the log" in text
            assert "job never-ran" in text and "never ended" in text
            assert f"model {first.data.name}: version {first.data.version} given 2 times" in text
            assert "read model registry" in text and "differs from its replay" in text
    finally:
        await conn.close()
        server.stop()


def test_the_report_reads_as_a_list() -> None:
    from tests.cluster.checker import Report

    report = Report(facts={"events": 3})
    assert report.ok and "nothing wrong" in str(report)
    report.add("model m: version 2 given 2 times")
    assert not report.ok
    assert str(report) == "1 problem(s) (events=3):\n  - model m: version 2 given 2 times"
