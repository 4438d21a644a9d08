"""The sync SDK as a data scientist uses it, in real processes against real services."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from cairn.rpc import Client
from cairn.settings import Settings

SCRIPTS = Path(__file__).parent


def sdk_env(settings: Settings, workspace: str, home: Path) -> dict[str, str]:
    return {
        **os.environ,
        "CAIRN_HOME": str(home),
        "CAIRN_NATS_URL": settings.nats_url,
        "CAIRN_NATS_USER": settings.nats_user or "",
        "CAIRN_NATS_PASSWORD": settings.nats_password or "",
        "CAIRN_WORKSPACE": workspace,
        "CAIRN_LOG_FORMAT": "json",
        # the tests serve URL inputs from a local http server (127.0.0.1)
        "CAIRN_URL_ALLOW_PRIVATE_HOSTS": "true",
    }


async def run_script(
    script: str, *args: str, env: dict[str, str], cwd: Path, timeout: float = 120
) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SCRIPTS / script),
        *args,
        env=env,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode == 0, err.decode()[-4000:]
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


async def test_azure_v1_script_runs_with_only_the_import_changed(
    client: Client, client_settings: Settings, tmp_path: Path
) -> None:
    env = sdk_env(client_settings, client.workspace, tmp_path / "home")
    got = await run_script("azure_v1_script.py", "diabetes", env=env, cwd=tmp_path)
    assert got["status"] == "Completed"
    m = got["metrics"]
    assert m["observations"] == 442
    assert m["loss"] == [0.9, 0.5, 0.25]
    assert m["label distribution"] == [0.33, 0.67]
    assert m["sample"] == {"age": [32, 41], "bmi": [22.5, 27.1]}
    assert m["per class"] == {"class": ["a", "b"], "recall": [0.9, 0.8]}
    assert got["files"] == ["outputs/sample.csv"]
    assert got["downloaded"] == "age,bmi\n32,22.5\n41,27.1\n"
    assert got["tags"] == {"stage": "baseline"}
    assert got["runs"] == [got["run_id"]]


async def test_the_rest_of_the_sync_surface(
    client: Client, client_settings: Settings, tmp_path: Path
) -> None:
    env = sdk_env(client_settings, client.workspace, tmp_path / "home")
    got = await run_script("sdk_extras_script.py", "extras", env=env, cwd=tmp_path)
    assert got["parent_status"] == "Completed"
    assert got["details"]["status"] == "Completed" and got["details"]["display_name"] == "parent"
    assert got["child_parent"] == got["details"]["runId"]
    assert got["properties_write_once"] and got["properties"] == {"git": "abc123"}
    assert got["tags"] == {"team": "vision", "stage": "prod"}
    assert got["files"] == ["inputs/a.txt", "inputs/sub/b.txt", "logged_images/confusion.png"]
    assert got["threads"] == {"0": True, "1": True, "2": True, "3": True}
    assert got["image"] == "logged_images/confusion.png"
    assert got["downloaded"] == ["dl/inputs/a.txt", "dl/inputs/sub/b.txt"]
    assert (tmp_path / "dl/inputs/sub/b.txt").read_text() == "folder/sub/b.txt"
    assert got["failed_status"] == "Failed" and got["failed_error"]
    assert got["offline"] and got["offline_metrics"] == {"a": [1, 2]}
    assert got["bound"]
    assert got["experiments"] == ["extras"]
