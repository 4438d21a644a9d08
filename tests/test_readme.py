"""The README's commands and code are what a user runs: keep them working."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

from cairn.rpc import Client
from cairn.settings import Settings
from tests.conftest import Agents

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_readme_opens_with_one_sentence_and_the_two_commands() -> None:
    blocks = re.findall(r"```bash\n(.*?)```", README, re.S)
    commands = blocks[0].strip().splitlines()
    assert len(commands) == 2
    assert commands[0].endswith("cairn up --demo")
    assert commands[1].endswith("pytest")
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    assert commands[1] in ci
    for command in commands:
        assert "PIP_CONSTRAINT=ops/requirements.lock " in command, "installs from the lock"


def test_the_lock_pins_every_dependency() -> None:
    """Each requirement of pyproject.toml (runtime, test extra, build backend) is pinned to
    one version in ops/requirements.lock, and that version is inside the requirement's range."""
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    root = Path(__file__).resolve().parents[1]
    project = tomllib.loads((root / "pyproject.toml").read_text())
    pins = {}
    for line in (root / "ops" / "requirements.lock").read_text().splitlines():
        if line and not line.startswith((" ", "#")):
            name, _, version = line.split(";")[0].strip().partition("==")
            pins[canonicalize_name(name)] = version
    wanted = [
        *project["project"]["dependencies"],
        *project["project"]["optional-dependencies"]["test"],
        *project["build-system"]["requires"],
    ]
    for text in wanted:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate():
            continue
        version = pins.get(canonicalize_name(req.name))
        assert version, f"{req.name} is not in ops/requirements.lock: run ops/lock"
        assert req.specifier.contains(version), f"{req.name}=={version} is outside {req.specifier}"


async def test_readme_python_example_runs(
    client: Client, client_settings: Settings, tmp_path: Path
) -> None:
    code = re.findall(r"```python\n(.*?)```", README, re.S)[0]
    env = {
        **os.environ,
        "CAIRN_HOME": str(tmp_path),
        "CAIRN_NATS_URL": client_settings.nats_url,
        "CAIRN_NATS_USER": client_settings.nats_user or "",
        "CAIRN_NATS_PASSWORD": client_settings.nats_password or "",
        "CAIRN_WORKSPACE": client.workspace,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert out.decode().strip() == "Completed 0.1"


async def test_readme_job_example_runs(
    client: Client, client_settings: Settings, agents: Agents, tmp_path: Path
) -> None:
    """The jobs example, in a folder with a training script and a requirements file (naming
    a local wheel, so the environment builds without an index)."""
    from tests.services.test_jobs import _wheel

    code = re.findall(r"```python\n(.*?)```", README, re.S)[1]
    (tmp_path / "training").mkdir()
    (tmp_path / "training" / "train.py").write_text(
        "import argparse, os, tinypkg\n"
        "p = argparse.ArgumentParser(); p.add_argument('--reg_rate', type=float)\n"
        "rate = p.parse_args().reg_rate\n"
        "print('training with', rate, tinypkg.VALUE)\n"
        "os.makedirs('outputs', exist_ok=True)\n"
        "open('outputs/model.pkl', 'w').write(str(rate))\n"
    )
    (tmp_path / "requirements.txt").write_text(f"{_wheel(tmp_path)}\n")
    await agents.start()
    env = {
        **os.environ,
        "CAIRN_HOME": str(tmp_path / "home"),
        "CAIRN_NATS_URL": client_settings.nats_url,
        "CAIRN_NATS_USER": client_settings.nats_user or "",
        "CAIRN_NATS_PASSWORD": client_settings.nats_password or "",
        "CAIRN_WORKSPACE": client.workspace,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        env=env,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()
    assert "training with 0.1 from-wheel" in out.decode()
    assert (tmp_path / "model.pkl").read_text() == "0.1"
