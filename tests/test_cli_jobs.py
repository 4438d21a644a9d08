"""Job files and the job commands of the CLI, against the real services and an agent."""

from __future__ import annotations

import asyncio
import json
import textwrap
from pathlib import Path

import pytest

from cairn.errors import InvalidInput, Unsupported
from cairn.proto.registry import GetModel, ListModels
from cairn.rpc import Client
from cairn.sdk import load_job_file
from cairn.settings import Settings
from tests.conftest import Agents
from tests.sdk.test_sync_sdk import sdk_env
from tests.test_cli import CAIRN, cli

JOB = """\
$schema: https://azuremlschemas.azureedge.net/latest/commandJob.schema.json
type: command
code: ./src
command: >-
  python train.py --reg_rate ${{inputs.reg_rate}} --name ${{inputs.who}}
  --out ${{outputs.model}}
environment: azureml:cairn-python-3.11@latest
compute: azureml:local
inputs:
  reg_rate: 0.25
  who: "two words"
outputs:
  model:
    type: uri_folder
experiment_name: yaml-jobs
display_name: from yaml
description: a job from yaml
tags: {source: cli}
"""

TRAIN = """\
import argparse, os
p = argparse.ArgumentParser()
p.add_argument("--reg_rate", type=float)
p.add_argument("--name")
p.add_argument("--out")
a = p.parse_args()
print(f"rate={a.reg_rate} name={a.name}")
open(os.path.join(a.out, "model.txt"), "w").write(str(a.reg_rate))
"""


def _job_dir(tmp_path: Path, text: str = JOB) -> Path:
    (tmp_path / "src").mkdir(exist_ok=True)
    (tmp_path / "src" / "train.py").write_text(TRAIN)
    (tmp_path / "job.yml").write_text(text)
    return tmp_path / "job.yml"


async def test_job_yaml_runs_and_the_job_commands_show_it(
    client: Client, client_settings: Settings, agents: Agents, tmp_path: Path
) -> None:
    await agents.start()
    env = sdk_env(client_settings, client.workspace, tmp_path / "home")
    path = _job_dir(tmp_path)
    out = await cli("job", "create", "--file", str(path), "--stream", env=env, cwd=tmp_path)
    assert "rate=0.25 name=two words" in out
    jobs = json.loads(await cli("job", "list", "--json", env=env, cwd=tmp_path))
    assert [(j["status"], j["compute"], j["experiment_name"]) for j in jobs] == [
        ("Completed", "local", "yaml-jobs")
    ]
    run_id = jobs[0]["run_id"]
    shown = json.loads(await cli("job", "show", run_id, "--json", env=env, cwd=tmp_path))
    assert shown["display_name"] == "from yaml" and shown["tags"] == {"source": "cli"}
    assert shown["properties"] == {"description": "a job from yaml"}
    assert shown["attempt"] == 1
    logs = await cli("job", "logs", run_id, env=env, cwd=tmp_path)
    assert "rate=0.25 name=two words" in logs
    files = json.loads(await cli("run", "files", run_id, "--json", env=env, cwd=tmp_path))
    assert "outputs/model/model.txt" in [f["path"] for f in files]
    table = await cli("agent", "list", env=env, cwd=tmp_path)
    assert table.splitlines()[0].split()[:3] == ["AGENT", "COMPUTE", "CPUS"]


async def test_cancel_from_the_cli_stops_a_queued_job(
    client: Client, client_settings: Settings, tmp_path: Path
) -> None:
    env = sdk_env(client_settings, client.workspace, tmp_path / "home")
    path = _job_dir(tmp_path)
    run_id = (await cli("job", "create", "-f", str(path), env=env, cwd=tmp_path)).strip()
    await cli("job", "cancel", run_id, env=env, cwd=tmp_path)
    shown = json.loads(await cli("job", "show", run_id, "--json", env=env, cwd=tmp_path))
    assert shown["status"] == "Canceled"


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (
            ("compute: azureml:local", "compute: local\nresources: {instance_count: 2}"),
            "unknown field `resources`",
        ),
        (("type: command", "type: sweep"), "type"),
        (("${{inputs.who}}", "${{inputs.nobody}}"), "inputs.nobody"),
        (("${{outputs.model}}", "${{outputs.nothing}}"), "outputs.nothing"),
        (("@latest", ":two"), "a version is a number"),
        (("  reg_rate: 0.25", "  reg_rate: [1, 2]"), "inputs.reg_rate"),
        (("compute: azureml:local", "compute: local\nsecrets: db-pass"), "secrets"),
    ],
)
def test_bad_job_files_name_what_is_wrong(
    tmp_path: Path, change: tuple[str, str], error: str
) -> None:
    path = _job_dir(tmp_path, JOB.replace(*change))
    with pytest.raises(InvalidInput, match=error.replace("$", r"\$").replace(".", r"\.")):
        load_job_file(path)


async def test_the_cli_reports_a_bad_job_file_and_exits_non_zero(
    client: Client, client_settings: Settings, tmp_path: Path
) -> None:
    env = sdk_env(client_settings, client.workspace, tmp_path / "home")
    path = _job_dir(tmp_path, JOB + "retries: 3\n")
    proc = await asyncio.create_subprocess_exec(
        *CAIRN,
        "job",
        "create",
        "-f",
        str(path),
        env=env,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1
    assert "error [invalid_input]" in err.decode() and "`retries`" in err.decode()


def test_job_file_paths_and_environments(tmp_path: Path) -> None:
    (tmp_path / "env.yml").write_text(
        textwrap.dedent("""
        dependencies: [python=3.11, numpy, {pip: [tinypkg]}]
    """)
    )
    text = JOB.replace(
        "environment: azureml:cairn-python-3.11@latest",
        "environment: {conda_file: env.yml, image: base:1}",
    )
    _, config = load_job_file(_job_dir(tmp_path, text))
    assert config.source_directory == tmp_path / "src"
    assert config.environment.spec().pip == ["tinypkg"]
    assert config.environment.docker.base_image == "base:1"
    assert config.argv()[:2] == ["/bin/sh", "-c"]
    assert "'two words'" in config.argv()[2] and "${{outputs.model}}" in config.argv()[2]
    assert [o.name for o in config.job_outputs] == ["model"]
    _, pinned = load_job_file(_job_dir(tmp_path, JOB.replace("@latest", ":3")))
    assert (pinned.environment.name, pinned.environment.version) == ("cairn-python-3.11", 3)
    assert pinned.secrets == []
    granted = JOB.replace("compute: azureml:local", "compute: local\nsecrets: [db-pass]")
    _, config = load_job_file(_job_dir(tmp_path, granted))
    assert config.secrets == ["db-pass"]


DATA_JOB = """\
type: command
code: ./src
command: >-
  python count.py ${{inputs.local_data}} ${{inputs.registered}} ${{inputs.folder}}
  ${{outputs.counts}}
inputs:
  local_data: {type: uri_folder, path: ./local-data, mode: download}
  registered: {type: uri_folder, path: "azureml:yaml-raw:1"}
  folder: {type: uri_folder, path: "azureml://datastores/workspaceblobstore/paths/yaml-raw"}
outputs:
  counts: {type: uri_folder, name: line-counts}
experiment_name: yaml-data
"""

COUNT = """\
import os, sys
*inputs, out = sys.argv[1:]
for i, folder in enumerate(inputs):
    n = sum(len(open(os.path.join(folder, f)).read().splitlines())
            for f in sorted(os.listdir(folder)))
    print(f"input {i}: {n} lines")
    open(os.path.join(out, f"input{i}.txt"), "w").write(str(n))
"""


async def test_job_yaml_data_inputs_and_a_registered_output(
    client: Client, client_settings: Settings, agents: Agents, tmp_path: Path
) -> None:
    await agents.start()
    env = sdk_env(client_settings, client.workspace, tmp_path / "home")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "count.py").write_text(COUNT)
    (tmp_path / "local-data").mkdir()
    (tmp_path / "local-data" / "one.txt").write_text("a\nb\n")
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "r.csv").write_text("x\n1\n2\n")
    (tmp_path / "job.yml").write_text(DATA_JOB)

    async def run(*args: str) -> str:
        return await cli(*args, env=env, cwd=tmp_path)

    await run("datastore", "upload", "workspaceblobstore", "raw", "-t", "yaml-raw", "--no-progress")
    await run("dataset", "create", "yaml-raw", "--path", "workspaceblobstore:yaml-raw/*.csv")
    out = await run("job", "create", "--file", "job.yml", "--stream")
    assert "input 0: 2 lines" in out and "input 1: 3 lines" in out and "input 2: 3 lines" in out
    made = json.loads(await run("dataset", "show", "line-counts", "--json"))
    assert made["version"] == 1 and len(made["files"]) == 3
    raw = json.loads(await run("dataset", "show", "yaml-raw", "--json"))
    assert len(raw["read_by_runs"]) == 1, "the job read version 1 of yaml-raw"


MODEL_JOB = """\
command: >-
  mkdir -p ${{outputs.model}}/data &&
  echo 'flavors: {}' > ${{outputs.model}}/MLmodel &&
  echo weights > ${{outputs.model}}/data/w.bin &&
  echo scratch > ${{outputs.notes}}/n.txt
compute: local
outputs:
  model: {type: mlflow_model, name: yaml-model}
  notes: {type: custom_model}
experiment_name: yaml-models
"""

READ_MODEL_JOB = """\
command: cat ${{inputs.m}}/MLmodel ${{inputs.m}}/data/w.bin
compute: local
inputs:
  m: {type: mlflow_model, path: "azureml:yaml-model:1"}
experiment_name: yaml-models
"""


async def test_job_yaml_model_outputs_register_and_model_inputs_arrive(
    client: Client, client_settings: Settings, agents: Agents, tmp_path: Path
) -> None:
    await agents.start()
    env = sdk_env(client_settings, client.workspace, tmp_path / "home")
    jobs_dir = tmp_path / "jobs"  # the code snapshot: the job files alone
    jobs_dir.mkdir()
    (jobs_dir / "write.yml").write_text(MODEL_JOB)
    (jobs_dir / "read.yml").write_text(READ_MODEL_JOB)

    async def run(*args: str) -> str:
        return await cli(*args, env=env, cwd=jobs_dir)

    await run("job", "create", "--file", "write.yml", "--stream")
    jobs = json.loads(await run("job", "list", "--json"))
    assert [j["status"] for j in jobs] == ["Completed"]
    run_id = jobs[0]["run_id"]
    model = (await client.ask(GetModel(name="yaml-model"))).data
    assert model["version"] == 1 and model["run_id"] == run_id
    assert model["framework"] == "mlflow_model"
    assert model["properties"] == {"run_id": run_id, "output": "model", "type": "mlflow_model"}
    assert sorted(f["path"] for f in model["files"]) == [
        "outputs/model/MLmodel",
        "outputs/model/data/w.bin",
    ]
    files = json.loads(await run("run", "files", run_id, "--json"))
    assert "outputs/notes/n.txt" in [f["path"] for f in files]
    listed = (await client.ask(ListModels())).data
    assert [m["name"] for m in listed] == ["yaml-model"], "an unnamed model output registers none"

    out = await run("job", "create", "--file", "read.yml", "--stream")
    assert "flavors: {}" in out and "weights" in out


@pytest.mark.parametrize(
    ("outputs", "refused"),
    [
        ("m: {type: mlflow_model, name: x, version: 3}", "outputs.m: version= is not supported"),
        ("m: {type: custom_model, path: azureml://datastores/s/paths/p}", "outputs.m: path="),
        ("m: {type: uri_folder, name: d, version: '2'}", "outputs.m: version= is not supported"),
    ],
)
def test_model_output_keys_cairn_cannot_honour_are_refused_by_name(
    tmp_path: Path, outputs: str, refused: str
) -> None:
    job = tmp_path / "job.yml"
    job.write_text(f"command: echo hi\noutputs:\n  {outputs}\n")
    with pytest.raises(Unsupported, match=refused):
        load_job_file(job)


def test_a_model_input_names_a_version_or_an_alias(tmp_path: Path) -> None:
    job = tmp_path / "job.yml"
    text = "command: ls ${{inputs.m}}\ninputs:\n  m: {type: custom_model, path: 'PATH'}\n"
    job.write_text(text.replace("PATH", "azureml:clf@prod"))
    [made] = load_job_file(job)[1].job_inputs
    assert (made.model, made.version, made.alias) == ("clf", None, "prod")
    job.write_text(text.replace("PATH", "azureml:clf:4"))
    [made] = load_job_file(job)[1].job_inputs
    assert (made.model, made.version, made.alias) == ("clf", 4, None)
    job.write_text(text.replace("PATH", "./local-model"))
    with pytest.raises(InvalidInput, match=r"inputs\.m: a model input is azureml:"):
        load_job_file(job)
