"""Record a golden event history: ``python -m tests.golden.record`` starts a fresh stack (its
own nats-server, every service, one agent with four slots: a deployment rolled to two
replicas holds three while it rolls), runs ``history_script.py`` in workspace
``golden`` through the sync SDK, exports the workspace (``cairn.portable``) into the next
``tests/golden/v<N>/history``, and writes beside it every read model replayed from it
(``read_models/<name>.json``) and the fingerprint of today's event schemas (``schemas.json``).

Before writing, the read models replayed offline from the export are compared with the same
read models replayed from the recording home's live log; any difference records nothing.

``python -m tests.golden.record --dumps v<N>`` writes the read models and aggregates of an
existing fixture again, from its stored history: for a read model changed on purpose, which
must have its ``version`` raised (a changed read model at the same version is refused), after
reading the difference the test showed; changed aggregate folds need ``--aggregates-changed``.

Recorded once per schema change and committed; the tests replay it (docs/events.md, *Golden
histories*)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import uuid
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from cairn.bus import Connection, connect, provision
from cairn.embedded import NatsServer
from cairn.embedded._up import all_services, read_models
from cairn.portable import export_workspace
from cairn.projection import replay
from cairn.proto.commands import CreateWorkspace
from cairn.rpc import Client
from cairn.service import run_services
from cairn.services.agent import AgentService
from cairn.settings import Settings
from tests.conftest import settings_for
from tests.golden.golden import GOLDEN, fixtures, folded, replayed, schema_fingerprint

WORKSPACE = "golden"


def write_dumps(fixture: Path, *, new: bool = False, aggregates_changed: bool = False) -> None:
    """Every read model replayed from the fixture's history, one file each, and every
    aggregate folded (``aggregates.json``). Rewriting an existing fixture's dumps (not
    ``new``) re-approves nothing silently: a read model whose rows changed must have its
    ``version`` raised, and changed folds are written only with ``aggregates_changed``."""
    folder = fixture / "read_models"
    folder.mkdir(exist_ok=True)
    dumps = replayed(fixture / "history")
    for name, dump in dumps.items():
        if dump["errors"]:
            raise SystemExit(f"{name} set events aside: {dump['errors']}")
        path = folder / f"{name}.json"
        if not new and path.is_file():
            stored = json.loads(path.read_text())
            if stored["hash"] != dump["hash"] and stored["version"] == dump["version"]:
                raise SystemExit(
                    f"read model {name} replays to other rows than recorded in {fixture.name}"
                    f" at the same version (v{dump['version']}): raise its version if the"
                    " change is meant, else it is a regression"
                )
    states = folded(fixture / "history")
    aggregates = fixture / "aggregates.json"
    if not new and aggregates.is_file() and not aggregates_changed:
        if json.loads(aggregates.read_text()) != json.loads(json.dumps(states)):
            raise SystemExit(
                f"aggregates of {fixture.name} fold to other states than recorded: if a state's"
                " shape changed on purpose, say --aggregates-changed"
            )
    for name, dump in dumps.items():
        text = json.dumps(dump, indent=1, sort_keys=True) + "\n"
        (folder / f"{name}.json").write_text(text)
    aggregates.write_text(json.dumps(states, indent=1, sort_keys=True) + "\n")


async def _live_matches(conn: Connection, dest: Path, work: Path) -> None:
    """Before anything is written: every read model replayed from the live log of the
    recording home (as ``cairn replay`` does; the home holds only this workspace) has the
    hash of the one replayed offline from the export, so the dumps are not the offline
    replay's word alone."""
    offline = replayed(dest)
    scratch = work / "live-replay"
    scratch.mkdir()
    for name, make in sorted(read_models().items()):
        done = await replay(conn, make(), scratch / f"{name}.sqlite")
        try:
            if done.hash != offline[name]["hash"]:
                raise SystemExit(
                    f"read model {name}: the live log replays to {done.hash}, the export"
                    f" offline to {offline[name]['hash']}: nothing recorded"
                )
        finally:
            done.db.close()


async def _history(work: Path, dest: Path) -> None:
    home = work / "home"
    server = NatsServer(home, port=0)
    await server.start()
    try:
        services = settings_for(
            server,
            service=True,
            state_dir=str(work / "state"),
            artifacts_dir=str(work / "artifacts"),
            datastore_roots=str(work),
            request_timeout=10.0,
        )
        conn = await connect(services)
        await provision(conn)
        stop, ready = asyncio.Event(), asyncio.Event()
        factories = list(all_services().values())
        stack = asyncio.create_task(run_services(services, factories, stop=stop, ready=ready))
        await asyncio.wait_for(ready.wait(), 30)
        person = settings_for(server, service=False)
        client_conn = await connect(person)
        await Client(client_conn, WORKSPACE).send(
            CreateWorkspace(command_id=uuid.uuid4().hex, name=WORKSPACE)
        )
        agent_settings = settings_for(
            server, service=False, agent=True, workspace=WORKSPACE, state_dir=str(work / "agent")
        )
        agent_stop, agent_ready = asyncio.Event(), asyncio.Event()
        agent = asyncio.create_task(
            run_services(
                agent_settings,
                [partial(AgentService, compute="local", slots=4)],
                stop=agent_stop,
                ready=agent_ready,
                provision_streams=False,
            )
        )
        await asyncio.wait_for(agent_ready.wait(), 30)
        try:
            await _run_script(person, work)
            await asyncio.sleep(3)  # the process managers' last reactions
        finally:
            agent_stop.set()
            await agent
            stop.set()
            await stack
            await client_conn.close()
        await export_workspace(conn, WORKSPACE, dest, now=datetime.now(UTC))
        await _live_matches(conn, dest, work)
        await conn.close()
    finally:
        server.stop()


async def _run_script(person: Settings, work: Path) -> None:
    env = {
        **os.environ,
        "CAIRN_HOME": str(work / "sdk"),
        "CAIRN_NATS_URL": person.nats_url,
        "CAIRN_NATS_USER": person.nats_user or "",
        "CAIRN_NATS_PASSWORD": person.nats_password or "",
        "CAIRN_WORKSPACE": WORKSPACE,
        "CAIRN_LOG_FORMAT": "json",
    }
    script = Path(__file__).with_name("history_script.py")
    scratch = work / "script"
    scratch.mkdir()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        str(scratch),
        env=env,
        cwd=scratch,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 900)
    if proc.returncode != 0:
        raise SystemExit(f"history_script.py failed:\n{err.decode()[-6000:]}")
    print(out.decode().strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dumps", metavar="FIXTURE", help="rewrite this fixture's read models")
    parser.add_argument(
        "--aggregates-changed",
        action="store_true",
        help="with --dumps: write aggregates.json although the folds differ from it",
    )
    args = parser.parse_args()
    if args.dumps:
        write_dumps(GOLDEN / args.dumps, aggregates_changed=args.aggregates_changed)
        return
    existing = fixtures()
    number = int(existing[-1].name[1:]) + 1 if existing else 1
    fixture = GOLDEN / f"v{number}"
    work = Path(tempfile.mkdtemp(prefix="cairn-golden-"))
    try:
        fixture.mkdir()
        asyncio.run(_history(work, fixture / "history"))
        write_dumps(fixture, new=True)
        text = json.dumps(schema_fingerprint(), indent=1, sort_keys=True) + "\n"
        (fixture / "schemas.json").write_text(text)
    except BaseException:
        shutil.rmtree(fixture, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"recorded {fixture}")


if __name__ == "__main__":
    main()
