"""``cairn secret`` and ``cairn workspace rotate-key`` as a script calls them, and the sync
facade's Keyvault (Azure ML v1 names) in a process of its own."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from cairn.bus import EventStore
from cairn.proto import subjects
from cairn.proto.events import SecretRead, WorkspaceKeyRotated
from cairn.rpc import Client
from cairn.settings import Settings
from tests.sdk.test_sync_sdk import run_script, sdk_env
from tests.test_cli import CAIRN


async def cairn(
    *args: str, env: dict[str, str], cwd: Path, stdin: bytes = b""
) -> tuple[int | None, str, str]:
    pipe = asyncio.subprocess.PIPE
    proc = await asyncio.create_subprocess_exec(
        *CAIRN, *args, env=env, cwd=cwd, stdin=pipe, stdout=pipe, stderr=pipe
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), 60)
    return proc.returncode, out.decode(), err.decode()


async def test_secret_commands(
    client: Client, client_settings: Settings, store: EventStore, tmp_path: Path
) -> None:
    env = sdk_env(client_settings, client.workspace, tmp_path / "home")
    code, out, err = await cairn(
        "secret", "set", "db-pass", env=env, cwd=tmp_path, stdin=b"from-stdin\n"
    )
    assert code == 0 and "version 1" in out, err
    (tmp_path / "value.txt").write_text("from-file\n")
    code, out, err = await cairn(
        "secret", "set", "db-pass", "--value-file", "value.txt", env=env, cwd=tmp_path
    )
    assert code == 0 and "version 2" in out, err
    code, out, err = await cairn(
        "secret", "set", "api-key", "--value", "on-argv", env=env, cwd=tmp_path
    )
    assert code == 0 and "visible to other users" in err
    code, out, err = await cairn("secret", "show", "db-pass", env=env, cwd=tmp_path)
    assert code == 0 and out == "from-file\n\n", err  # the file's newline kept, echo adds one
    code, out, err = await cairn("secret", "list", "--json", env=env, cwd=tmp_path)
    listed = json.loads(out)
    assert [(s["name"], s["version"]) for s in listed] == [("api-key", 1), ("db-pass", 2)]
    assert "from-file" not in out and "on-argv" not in out
    code, out, err = await cairn("secret", "list", env=env, cwd=tmp_path)
    assert out.splitlines()[0].split()[:3] == ["NAME", "VERSION", "UPDATED"]
    code, out, err = await cairn("secret", "set", "bad name", env=env, cwd=tmp_path, stdin=b"v")
    assert code == 1 and "invalid_input" in err
    code, out, err = await cairn("secret", "delete", "api-key", env=env, cwd=tmp_path)
    assert code == 0, err
    code, out, err = await cairn("secret", "show", "api-key", env=env, cwd=tmp_path)
    assert code == 1 and "not_found" in err
    code, out, err = await cairn("workspace", "rotate-key", client.workspace, env=env, cwd=tmp_path)
    assert code == 0, err
    rotated = await store.read(subjects.event(client.workspace, "keyring", client.workspace))
    assert [type(r.envelope.data) for r in rotated] == [WorkspaceKeyRotated]
    code, out, err = await cairn("secret", "show", "db-pass", "--json", env=env, cwd=tmp_path)
    assert json.loads(out) == {"name": "db-pass", "version": 2, "value": "from-file\n"}


async def test_the_keyvault_of_the_sync_facade(
    client: Client, client_settings: Settings, store: EventStore, tmp_path: Path
) -> None:
    env = sdk_env(client_settings, client.workspace, tmp_path / "home")
    got = await run_script("keyvault_script.py", env=env, cwd=tmp_path)
    assert got["value"] == "s3cr3t" and got["many"] == {"a-1": "x", "b-2": "y"}
    assert got["names"] == ["a-1", "b-2", "db-pass"]
    assert got["errors"] == ["InvalidInput", "PayloadTooLarge", "NotFound"]
    assert got["from_run"] == {"db-pass": "s3cr3t"} and got["after_delete"] == ["a-1", "db-pass"]
    reads = [
        r.envelope.data
        for r in await store.read(subjects.event(client.workspace, "secret", "db-pass"))
        if isinstance(r.envelope.data, SecretRead)
    ]
    assert [r.run_id for r in reads] == [None, got["run_id"], got["run_id"]]
