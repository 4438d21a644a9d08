"""Environments build as written: a pinned Python is that interpreter or a refused submit;
a job with no environment runs in the agent's default environment and cannot change the
agent's installation; Azure's curated names map to Cairn's; an image needs a docker agent."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from cairn.bus import Connection, EventStore
from cairn.errors import InvalidInput, NotFound
from cairn.proto.assets import GetAsset
from cairn.proto.commands import GetRun
from cairn.proto.events import RunSubmitted
from cairn.proto.streams import AGENTS_BUCKET
from cairn.sdk import AsyncWorkspace, CondaDependencies, Environment, ScriptRunConfig
from cairn.sdk._jobfile import load_job_file
from cairn.sdk._jobs import follow, submit
from cairn.services.agent import AgentInfo, list_agents
from tests.conftest import Agents
from tests.services.test_jobs import _wheel, history, source

AGENT_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"


def _installed_pythons() -> set[str]:
    from uv import find_uv_bin

    argv = [find_uv_bin(), "python", "list", "--only-installed", "--output-format", "json"]
    rows = json.loads(subprocess.run(argv, capture_output=True, check=True).stdout)
    return {f"{r['version_parts']['major']}.{r['version_parts']['minor']}" for r in rows}


def _agent_packages() -> list[dict[str, str]]:
    argv = [sys.executable, "-m", "pip", "list", "--format", "json", "--disable-pip-version-check"]
    found = json.loads(subprocess.run(argv, capture_output=True, check=True).stdout)
    return sorted(found, key=lambda p: p["name"])


def _agent_finds(module: str) -> bool:
    probe = f"import importlib.util as u; print(u.find_spec({module!r}) is not None)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    return done.stdout.strip() == "True"


async def test_a_pinned_python_is_that_interpreter_or_a_refused_submit(
    ws: AsyncWorkspace, agents: Agents, tmp_path: Path
) -> None:
    src = source(tmp_path, "import sys\nprint('python', *sys.version_info[:2], sys.prefix)\n")
    conda = tmp_path / "environment.yml"
    conda.write_text(f"name: pinned\ndependencies:\n  - python={AGENT_PYTHON}\n")
    pinned = Environment.from_conda_specification("pinned", conda)
    await agents.start()
    config = ScriptRunConfig(source_directory=src, script="job.py", environment=pinned)
    printed: list[str] = []
    details = await follow(ws, await submit(ws, "envs", config), out=printed.append, timeout=60)
    assert details["status"] == "Completed", "".join(printed)
    major, minor = AGENT_PYTHON.split(".")
    assert f"python {major} {minor} " in "".join(printed)

    installed = _installed_pythons()
    for impossible in ("2.7", "3.4"):
        env = Environment(f"py{impossible}")
        env.python.conda_dependencies = CondaDependencies.create(python_version=impossible)
        config = ScriptRunConfig(source_directory=src, script="job.py", environment=env)
        with pytest.raises(InvalidInput, match=rf"python {impossible} is not available") as info:
            await submit(ws, "envs", config)
        closest = re.search(r"the closest is (\d+\.\d+)", info.value.message)
        assert closest is not None and closest.group(1) in installed, info.value.message
    # the refused submits queued nothing: the experiment holds the one run that ran
    assert len(await (await ws.experiment("envs")).runs()) == 1


async def test_an_agent_advertises_the_pythons_a_job_may_pin_on_its_machine(
    ws: AsyncWorkspace, agents: Agents, conn: Connection
) -> None:
    await agents.start()
    [mine] = [a for a in await list_agents(conn) if a.workspace == ws.name]
    assert AGENT_PYTHON in mine.pythons
    assert set(mine.pythons) <= _installed_pythons(), "downloads are off: installed ones only"


async def test_a_pin_is_checked_against_the_compute_targets_own_agents(
    ws: AsyncWorkspace, conn: Connection, tmp_path: Path
) -> None:
    """Not against the scheduler's machine: an agent elsewhere that has only Python 3.9 makes
    a pin of the scheduler's own Python a refused submit, and a pin of 3.9 a queued job."""
    src = source(tmp_path, "print('hi')\n")
    elsewhere = AgentInfo(
        agent_id=f"elsewhere-{ws.name}",
        compute="local",
        hostname="elsewhere",
        pid=1,
        cpus=1,
        memory_bytes=1 << 30,
        gpus=[],
        labels=[],
        slots=1,
        free_slots=1,
        started_at=0.0,
        heartbeat_at=0.0,
        workspace=ws.name,
        pythons=["3.9"],
    )
    kv = await conn.js.key_value(AGENTS_BUCKET.bucket)
    await kv.put(elsewhere.agent_id, msgspec.json.encode(elsewhere))
    try:

        def pinned(version: str) -> ScriptRunConfig:
            env = Environment(f"py{version}")
            env.python.conda_dependencies = CondaDependencies.create(python_version=version)
            return ScriptRunConfig(source_directory=src, script="job.py", environment=env)

        with pytest.raises(InvalidInput) as info:
            await submit(ws, "envs", pinned(AGENT_PYTHON))
        assert info.value.message == (
            f"python {AGENT_PYTHON} is not available to this job; the closest is 3.9"
            " (the agents of compute target 'local': 3.9)"
        )
        run_id = await submit(ws, "envs", pinned("3.9"))
        assert (await ws.client.ask(GetRun(run_id=run_id))).data["status"] == "Queued"
    finally:
        await kv.delete(elsewhere.agent_id)


@pytest.mark.parametrize("confined", [True, False])
async def test_a_job_without_an_environment_cannot_change_the_agents_installation(
    ws: AsyncWorkspace, agents: Agents, tmp_path: Path, confined: bool
) -> None:
    """It runs in the agent's default environment (built once), never the agent's own
    interpreter. Its ``pip install`` puts packages in the job's folder, where its later
    processes (and a warm-started script) import them; ``python -m pip install`` goes to the
    environment, refused when the job is confined; nothing lands in the agent's install."""
    agents.settings = msgspec.structs.replace(agents.settings, job_confine_files=confined)
    src = source(
        tmp_path,
        """
        import importlib, subprocess, sys
        subprocess.check_call(["pip", "install", "-q", "--no-index", sys.argv[1]])
        importlib.invalidate_caches()
        import tinypkg
        print("imported", tinypkg.VALUE, tinypkg.__file__)
        """,
    )
    shutil.move(_wheel(tmp_path), src)
    shutil.move(_wheel(tmp_path, "otherpkg"), src)
    where = "python -c 'import sys; print(\"prefix\", sys.prefix)'"
    pip = "pip install --no-index --disable-pip-version-check"
    install = f"{pip} ./tinypkg-0.1-py3-none-any.whl"
    check = "python -c 'import tinypkg; print(\"installed\", tinypkg.VALUE, tinypkg.__file__)'"
    module = f"python -m {pip} ./otherpkg-0.1-py3-none-any.whl; echo python -m pip: $?"
    command = ["/bin/sh", "-c", f"{where} && {install} && {check} && {module}"]
    before = _agent_packages()
    await agents.start()
    printed: list[str] = []
    config = ScriptRunConfig(source_directory=src, command=command)
    details = await follow(ws, await submit(ws, "envs", config), out=printed.append, timeout=120)
    output = "".join(printed)
    assert details["status"] == "Completed", output
    envs = tmp_path / "agent-state" / "agent" / "envs"
    default = envs / f"default-{AGENT_PYTHON}"
    assert f"prefix {default}\n" in output, output
    installed = re.search(r"^installed from-wheel (\S+)$", output, re.M)
    assert installed is not None, output
    assert Path(installed.group(1)).parent.parent.name == "packages"  # the job's folder
    assert not str(installed.group(1)).startswith(str(default))
    in_default = list((default / "lib").glob("python*/site-packages/otherpkg"))
    if confined:  # the environment is read-only to the job
        assert "python -m pip: 1" in output and not in_default, output
    else:  # the environment's cached virtualenv, which this agent's jobs share
        assert "python -m pip: 0" in output and in_default, output
    # a script forked from the warm interpreter imports what it installed
    config = ScriptRunConfig(
        source_directory=src, script="job.py", arguments=["./tinypkg-0.1-py3-none-any.whl"]
    )
    printed = []
    details = await follow(ws, await submit(ws, "envs", config), out=printed.append, timeout=60)
    output = "".join(printed)
    assert details["status"] == "Completed" and "imported from-wheel" in output, output
    assert f"{os.sep}packages{os.sep}tinypkg" in output
    assert _agent_packages() == before
    assert not _agent_finds("tinypkg") and not _agent_finds("otherpkg")
    # built once per agent: the second job found the same default environment
    assert [p.name for p in envs.iterdir() if not p.name.startswith(".")] == [default.name]


async def test_azure_curated_names_resolve_to_cairn_curated_environments(
    ws: AsyncWorkspace, store: EventStore, tmp_path: Path
) -> None:
    src = source(tmp_path, "print('never run: no agent')\n")
    refs = [
        "azureml:AzureML-sklearn-1.0-ubuntu20.04-py38-cpu@latest",
        "azureml:AzureML-sklearn-1.0-ubuntu20.04-py38-cpu:33",
        "azureml://registries/azureml/environments/sklearn-1.5/labels/latest",
    ]
    for ref in refs:
        config = ScriptRunConfig(source_directory=src, script="job.py", environment=ref)
        run_id = await submit(ws, "curated", config)
        submitted = (await history(store, ws.name, run_id))[0]
        assert isinstance(submitted, RunSubmitted) and submitted.job.environment is not None
        env = submitted.job.environment
        assert (env.name, env.version) == ("cairn-sklearn", 1)
        assert "scikit-learn" in env.spec.pip
    # as a job file writes it
    (tmp_path / "job.yml").write_text(
        "command: python src/job.py\ncode: .\n"
        "environment: azureml://registries/azureml/environments/lightgbm-3.3/labels/latest\n"
    )
    _, config = load_job_file(tmp_path / "job.yml")
    assert config.environment == "cairn-lightgbm"
    # and as ``Environment.get`` asks the registry
    got = await ws.client.ask(
        GetAsset(asset_kind="environment", name="AzureML-PyTorch-1.6-CPU", version=None)
    )
    assert got.data["name"] == "cairn-pytorch" and got.data["builtin"]
    made_up = "azureml:AzureML-made-up-ubuntu20.04-py38-cpu@latest"
    config = ScriptRunConfig(source_directory=src, script="job.py", environment=made_up)
    with pytest.raises(NotFound, match="no such curated environment") as info:
        await submit(ws, "curated", config)
    assert "these exist: cairn-lightgbm, cairn-minimal" in info.value.message


async def test_an_image_environment_is_refused_by_a_process_agent(
    ws: AsyncWorkspace, agents: Agents, tmp_path: Path
) -> None:
    src = source(tmp_path, "print('ran on the host')\n")
    env = Environment("in-an-image")
    env.docker.base_image = "python:3.11-slim"
    await agents.start()
    config = ScriptRunConfig(source_directory=src, script="job.py", environment=env)
    printed: list[str] = []
    details = await follow(ws, await submit(ws, "envs", config), out=printed.append, timeout=60)
    assert details["status"] == "Failed", details
    assert "docker image 'python:3.11-slim'" in details["error"]
    assert "--backend docker" in details["error"]
    assert "ran on the host" not in "".join(printed)


async def test_an_image_environment_runs_on_a_docker_agent(
    docker_engine: None, ws: AsyncWorkspace, agents: Agents, tmp_path: Path
) -> None:
    """The same kind of environment a process agent refuses runs in its image on a docker
    agent (the base image ``ops/base-image.sh`` builds, so nothing is pulled)."""
    src = source(tmp_path, "import os\nprint('in', os.getcwd(), open('/etc/os-release').read())\n")
    env = Environment("in-the-base-image")
    env.docker.base_image = "cairn-base:bookworm"
    await agents.start(backend="docker")
    config = ScriptRunConfig(source_directory=src, script="job.py", environment=env)
    printed: list[str] = []
    details = await follow(ws, await submit(ws, "envs", config), out=printed.append, timeout=300)
    output = "".join(printed)
    assert details["status"] == "Completed", output
    assert "in /workspace" in output and "bookworm" in output
