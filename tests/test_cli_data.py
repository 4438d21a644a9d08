"""The data commands of the CLI against the real services: datastore upload, ls, download;
dataset create, list, show, download."""

from __future__ import annotations

import json
from pathlib import Path

from cairn.rpc import Client
from cairn.settings import Settings
from tests.sdk.test_sync_sdk import sdk_env
from tests.test_cli import cli


async def test_data_commands(client: Client, client_settings: Settings, tmp_path: Path) -> None:
    env = sdk_env(client_settings, client.workspace, tmp_path / "home")
    (tmp_path / "src" / "sub").mkdir(parents=True)
    (tmp_path / "src" / "a.csv").write_text("x\n1\n")
    (tmp_path / "src" / "sub" / "b.csv").write_text("x\n2\n")

    async def run(*args: str) -> str:
        return await cli(*args, env=env, cwd=tmp_path)

    await run("datastore", "create", "lake", "--path", str(tmp_path / "lake"))
    await run("datastore", "upload", "lake", "src", "-t", "in", "--no-progress")
    listed = json.loads(await run("datastore", "ls", "lake", "in", "--json"))
    assert [f["path"] for f in listed] == ["in/a.csv", "in/sub/b.csv"]
    made = json.loads(
        await run(
            "dataset",
            "create",
            "numbers",
            "--path",
            "lake:in/*.csv",
            "--path",
            "lake:in/sub",
            "--tabular",
            "--json",
        )
    )
    assert made["version"] == 1 and made["files"] == [
        "lake:in/a.csv (4 B)",
        "lake:in/sub/b.csv (4 B)",
    ]
    rows = json.loads(await run("dataset", "list", "--json"))
    assert [(r["name"], r["version"]) for r in rows] == [("numbers", 1)]
    shown = json.loads(await run("dataset", "show", "numbers", "--version", "1", "--json"))
    assert shown["spec"]["kind"] == "tabular"
    await run("dataset", "download", "numbers", "out")
    assert sorted(
        p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.csv")
    ) == ["a.csv", "sub/b.csv"]
    await run("datastore", "download", "lake", "dl", "-p", "in/sub", "--no-progress")
    assert (tmp_path / "dl" / "in" / "sub" / "b.csv").read_text() == "x\n2\n"
