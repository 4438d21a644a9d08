"""The tracking commands of the CLI, as a script would call them."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from pathlib import Path
from typing import Any

import msgspec

from cairn.bus import Connection
from cairn.embedded import NatsServer
from cairn.rpc import Client
from cairn.sdk import AsyncWorkspace
from cairn.settings import Settings
from cairn.storage import S3BlobStore
from tests.conftest import add_people, settings_for
from tests.sdk.test_sync_sdk import sdk_env
from tests.seaweed import ACCESS_KEY, SECRET_KEY, SeaweedFS

CAIRN = [sys.executable, "-c", "from cairn.cli import main; main()"]


async def run_cli(*args: str, env: dict[str, str], cwd: Path) -> tuple[int | None, str, str]:
    """Exit code, stdout and stderr of one command."""
    pipe = asyncio.subprocess.PIPE
    proc = await asyncio.create_subprocess_exec(
        *CAIRN, *args, env=env, cwd=cwd, stdout=pipe, stderr=pipe
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(), err.decode()


async def cli(*args: str, env: dict[str, str], cwd: Path) -> str:
    code, out, err = await run_cli(*args, env=env, cwd=cwd)
    assert code == 0, err[-3000:]
    return out


async def cli_json(*args: str, env: dict[str, str], cwd: Path) -> Any:
    return json.loads(await cli(*args, "--json", env=env, cwd=cwd))


async def test_tracking_commands(client: Client, client_settings: Settings, tmp_path: Path) -> None:
    settings = msgspec.structs.replace(client_settings, home=str(tmp_path / "sdk"))
    ws = AsyncWorkspace(client.conn, client.workspace, settings)
    run = await (await ws.experiment("cli exp")).start_run(display_name="first")
    for step in range(5):
        run.log("acc", step / 10, step=step)
    src = tmp_path / "model.txt"
    src.write_text("weights")
    await run.upload_file("outputs/model.txt", src)
    await run.complete()
    env = sdk_env(client_settings, client.workspace, tmp_path / "home")

    table = await cli("experiment", "list", env=env, cwd=tmp_path)
    assert table.splitlines()[0].split() == ["NAME", "RUNS", "CREATED", "BY"]
    assert "cli exp" in table
    await (await ws.experiment("cli exp")).archive()
    assert "cli exp" not in await cli("experiment", "list", env=env, cwd=tmp_path)
    archived = await cli(
        "experiment", "list", "--archived", "only", "--json", env=env, cwd=tmp_path
    )
    assert [(e["name"], e["archived"]) for e in json.loads(archived)] == [("cli exp", True)]
    runs = json.loads(
        await cli("run", "list", "--experiment", "cli exp", "--json", env=env, cwd=tmp_path)
    )
    assert [(r["run_id"], r["status"]) for r in runs] == [(run.id, "Completed")]
    human = await cli("run", "list", "-e", "cli exp", env=env, cwd=tmp_path)
    assert run.id in human and "Completed" in human
    shown = json.loads(await cli("run", "show", run.id, "--json", env=env, cwd=tmp_path))
    assert shown["display_name"] == "first"
    metrics = json.loads(await cli("run", "metrics", run.id, "--json", env=env, cwd=tmp_path))
    assert metrics == {"acc": [0.0, 0.1, 0.2, 0.3, 0.4]}
    one = json.loads(
        await cli("run", "metrics", run.id, "-n", "acc", "--json", env=env, cwd=tmp_path)
    )
    assert one == metrics
    files = json.loads(await cli("run", "files", run.id, "--json", env=env, cwd=tmp_path))
    assert [f["path"] for f in files] == ["outputs/model.txt"]
    got = await cli(
        "run", "download", run.id, "outputs/model.txt", "-o", "m.txt", env=env, cwd=tmp_path
    )
    assert got.strip() == "m.txt" and (tmp_path / "m.txt").read_text() == "weights"
    assert "synced 0 spooled commands" in await cli("sync", env=env, cwd=tmp_path)
    synced = json.loads(await cli("sync", "--json", env=env, cwd=tmp_path))
    assert synced == {"sent": 0, "files": 0, "refused": 0, "refused_dir": None, "reasons": []}


async def test_errors_are_printed_with_their_code(
    client: Client, client_settings: Settings, tmp_path: Path
) -> None:
    env = sdk_env(client_settings, client.workspace, tmp_path / "home")
    code, _, err = await run_cli("run", "show", "no-such-run", env=env, cwd=tmp_path)
    assert code == 1 and "error [not_found]" in err


async def test_model_commands(client: Client, client_settings: Settings, tmp_path: Path) -> None:
    env = sdk_env(client_settings, client.workspace, tmp_path / "home")
    (tmp_path / "m.bin").write_bytes(b"model bytes")
    args = ["model", "register", "cli-model", "m.bin", "--tag", "k=v", "--framework", "Custom"]
    first = json.loads(await cli(*args, "--json", env=env, cwd=tmp_path))
    assert (first["version"], first["tags"], first["framework"]) == (1, {"k": "v"}, "Custom")
    await cli("model", "register", "cli-model", "m.bin", env=env, cwd=tmp_path)
    assert "cli-model@production -> 1" in await cli(
        "model", "alias", "cli-model", "production", "1", env=env, cwd=tmp_path
    )
    listed = json.loads(
        await cli("model", "list", "--name", "cli-model", "--json", env=env, cwd=tmp_path)
    )
    assert [(m["version"], m["aliases"]) for m in listed] == [(1, ["production"]), (2, [])]
    table = await cli("model", "list", "--latest", env=env, cwd=tmp_path)
    assert table.splitlines()[0].split()[:2] == ["NAME", "VERSION"] and "cli-model" in table
    shown = await cli_json(
        "model", "show", "cli-model", "--alias", "production", env=env, cwd=tmp_path
    )
    assert shown["version"] == 1 and shown["files"][0]["path"] == "m.bin"
    out = await cli(
        "model", "download", "cli-model", "--version", "2", "-o", "got", env=env, cwd=tmp_path
    )
    assert (tmp_path / out.strip()).read_bytes() == b"model bytes"


async def test_environment_datastore_compute_commands(
    client: Client,
    client_settings: Settings,
    nats_server: NatsServer,
    tmp_path: Path,
    admin_conn: Connection,
    seaweed: SeaweedFS,
) -> None:
    await add_people(admin_conn, client.workspace, "olga", "dana")
    env = sdk_env(client_settings, client.workspace, tmp_path / "home")
    bucket = "b-cli-" + uuid.uuid4().hex[:8]
    blobs = await S3BlobStore.open(seaweed.config(bucket))
    await blobs.client.create_bucket(Bucket=bucket)
    await blobs.close()
    (tmp_path / "req.txt").write_text("numpy\n")
    create = ["environment", "create", "cli-env", "--pip-requirements", "req.txt"]
    made = await cli_json(*create, env=env, cwd=tmp_path)
    assert made["spec"]["pip"] == ["numpy"] and made["version"] == 1
    assert "cli-env" in await cli("environment", "list", env=env, cwd=tmp_path)
    shown = json.loads(await cli("environment", "show", "cli-env", "--json", env=env, cwd=tmp_path))
    assert shown == made
    secret_env = {
        **env,
        "CAIRN_S3_ACCESS_KEY_ID": ACCESS_KEY,
        "CAIRN_S3_SECRET_ACCESS_KEY": SECRET_KEY,
    }
    create = ["datastore", "create", "cli-lake", "--bucket", bucket, "--json"]
    create += ["--endpoint-url", seaweed.endpoint]
    wrong = {**secret_env, "CAIRN_S3_SECRET_ACCESS_KEY": "not-it"}
    code, _, said = await run_cli(*create, env=wrong, cwd=tmp_path)
    assert code != 0 and "refused the credentials" in said and "Traceback" not in said, said
    out = await cli(*create, env=secret_env, cwd=tmp_path)
    assert json.loads(out)["spec"]["has_credentials"] is True and SECRET_KEY not in out
    listed = await cli("datastore", "list", "--json", env=env, cwd=tmp_path)
    assert [d["name"] for d in json.loads(listed)] == [
        "cli-lake",
        "workspaceblobstore",
        "workspacefilestore",
    ]
    # the server's people: olga is a compute operator, dana a data scientist only
    olga = settings_for(nats_server, service=False, person="olga")
    operator = {**env, "CAIRN_NATS_USER": "olga", "CAIRN_NATS_PASSWORD": olga.nats_password or ""}
    create = ["compute", "create", "cpu", "--max-nodes", "3", "--label", "cpu"]
    made = await cli_json(*create, env=operator, cwd=tmp_path)
    assert made["spec"]["max_nodes"] == 3 and made["spec"]["labels"] == ["cpu"]
    assert "cpu" in await cli("compute", "list", env=env, cwd=tmp_path)
    scientist = settings_for(nats_server, service=False, person="dana")
    dana = {**env, "CAIRN_NATS_USER": "dana", "CAIRN_NATS_PASSWORD": scientist.nats_password or ""}
    code, _, err = await run_cli("compute", "delete", "cpu", env=dana, cwd=tmp_path)
    assert code == 1 and "permission_denied" in err
    assert "deleted" in await cli("compute", "delete", "cpu", env=operator, cwd=tmp_path)
