"""Sweep job files (Azure ML CLI v2 ``type: sweep``) through the CLI: created, shown with their
trials (stopped ones marked), their best trial; and every key honoured or refused by name."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cairn.errors import InvalidInput, Unsupported
from cairn.rpc import Client
from cairn.sdk import read_job_file
from cairn.sdk._hyperdrive import SweepConfig
from cairn.settings import Settings
from tests.conftest import Agents
from tests.sdk.test_sync_sdk import sdk_env
from tests.sweeps.test_sweeps import HERE, bandit_expectation
from tests.test_cli import cli

SWEEP = """\
$schema: https://azuremlschemas.azureedge.net/latest/sweepJob.schema.json
type: sweep
trial:
  code: ./src
  command: >-
    python curve.py --decay ${{search_space.decay}} --reports ${{inputs.reports}}
    --pause 0.3
  environment: azureml:cairn-python-3.11@latest
compute: azureml:local
inputs:
  reports: 8
search_space:
  decay: {type: choice, values: [0.0, 0.01, 0.03, 0.06]}
sampling_algorithm: {type: grid, seed: 4}
objective: {goal: maximize, primary_metric: accuracy}
early_termination: {type: bandit, slack_factor: 0.1, evaluation_interval: 1}
limits: {max_total_trials: 10, max_concurrent_trials: 1, timeout: 600, trial_timeout: 120}
experiment_name: yaml-sweeps
display_name: a sweep from yaml
tags: {source: cli}
"""


def sweep_dir(tmp_path: Path, text: str = SWEEP) -> Path:
    (tmp_path / "src").mkdir(exist_ok=True)
    shutil.copy(HERE / "curve.py", tmp_path / "src" / "curve.py")
    shutil.copy(HERE / "train.py", tmp_path / "src" / "train.py")
    (tmp_path / "sweep.yml").write_text(text)
    return tmp_path / "sweep.yml"


async def test_a_sweep_file_runs_and_the_cli_shows_its_trials_and_best(
    client: Client, client_settings: Settings, agents: Agents, tmp_path: Path
) -> None:
    await agents.start(slots=2)
    env = sdk_env(client_settings, client.workspace, tmp_path / "home")
    path = sweep_dir(tmp_path)
    created = json.loads(
        await cli("job", "create", "--file", str(path), "--stream", "--json", env=env, cwd=tmp_path)
    )
    run_id = created["run_id"]
    assert created["status"] == "Completed", created
    shown = json.loads(await cli("job", "show", run_id, "--json", env=env, cwd=tmp_path))
    assert shown["display_name"] == "a sweep from yaml" and shown["tags"] == {"source": "cli"}
    sweep = shown["sweep"]
    assert sweep["status"] == "Completed" and len(sweep["trials"]) == 4  # the grid's size
    decays = [t["parameters"]["decay"] for t in sweep["trials"]]
    expected = bandit_expectation(decays, 8, 0.1)
    assert expected
    assert {t["index"]: t["stopped"]["interval"] for t in sweep["trials"] if t["stopped"]} == (
        expected
    )
    table = await cli("job", "show", run_id, env=env, cwd=tmp_path)
    lines = {line.split()[0]: line for line in table.splitlines() if line[:1].isdigit()}
    for index, interval in expected.items():
        assert f"Canceled (stopped @{interval})" in lines[str(index)]
    assert all("Completed" in lines[str(t)] for t in range(4) if t not in expected)
    best = json.loads(await cli("sweep", "best", run_id, "--json", env=env, cwd=tmp_path))
    assert best["parameters"] == {"decay": 0.0} and best["value"] == 1.0
    assert best["run_id"] == sweep["trials"][best["trial"]]["run_id"]


def test_a_sweep_file_becomes_its_sweep(tmp_path: Path) -> None:
    text = SWEEP.replace("{type: grid, seed: 4}", "{type: random, seed: 9}").replace(
        "{type: choice, values: [0.0, 0.01, 0.03, 0.06]}",
        "{type: qloguniform, min_value: -6, max_value: -1, q: 0.001}",
    )
    spec, config = read_job_file(sweep_dir(tmp_path, text))
    assert isinstance(config, SweepConfig)
    assert spec.experiment_name == "yaml-sweeps"
    s = config.spec
    assert (s.sampling.algorithm, s.sampling.seed) == ("random", 9)
    assert s.limits.max_total_trials == 10 and s.limits.max_concurrent_trials == 1
    assert s.limits.timeout_s == 600 and s.limits.trial_timeout_s == 120
    assert s.policy is not None and (s.policy.kind, s.policy.slack_factor) == ("bandit", 0.1)
    assert config.command[:2] == ["/bin/sh", "-c"]
    assert "--decay ${{search_space.decay}} --reports 8" in config.command[2]


@pytest.mark.parametrize(
    ("change", "error", "words"),
    [
        (
            (
                "search_space:\n  decay: {type: choice, values: [0.0, 0.01, 0.03, 0.06]}",
                "search_space: {}",
            ),
            InvalidInput,
            "length >= 1 - at `\\$.search_space`",
        ),
        (
            ("{type: choice, values: [0.0, 0.01, 0.03, 0.06]}", "{type: beta, a: 1}"),
            InvalidInput,
            "beta",
        ),
        (
            ("max_concurrent_trials: 1", "max_concurrent_trials: -2"),
            InvalidInput,
            "max_concurrent_trials",
        ),
        (("{type: grid, seed: 4}", "{type: random, rule: sobol}"), Unsupported, "rule"),
        (("{type: grid, seed: 4}", "{type: random, logbase: 10}"), Unsupported, "logbase"),
        (
            ("slack_factor: 0.1,", "slack_factor: 0.1, slack_amount: 0.2,"),
            InvalidInput,
            "one of slack_factor",
        ),
        (
            (
                "{type: bandit, slack_factor: 0.1, evaluation_interval: 1}",
                "{type: truncation_selection, truncation_percentage: 20,"
                " exclude_finished_jobs: true}",
            ),
            Unsupported,
            "exclude_finished_jobs",
        ),
        (
            ("  code: ./src\n", "  code: ./src\n  resources: {instance_count: 2}\n"),
            Unsupported,
            "resources",
        ),
        (("type: sweep\n", "type: sweep\nname: mine\n"), Unsupported, "name"),
        (("type: sweep\n", "type: sweep\nqueue_settings: {}\n"), InvalidInput, "queue_settings"),
        (("--pause 0.3", "--pause ${{search_space.pause}}"), InvalidInput, "pause"),
        (("--pause 0.3", "--pause ${{parent.jobs.a}}"), InvalidInput, "parent.jobs.a"),
        (("values: [0.0, 0.01, 0.03, 0.06]", "values: ['a b']"), InvalidInput, "one shell word"),
    ],
)
def test_every_sweep_key_is_honoured_or_refused_by_name(
    tmp_path: Path, change: tuple[str, str], error: type[Exception], words: str
) -> None:
    old, new = change
    assert old in SWEEP
    with pytest.raises(error, match=words):
        read_job_file(sweep_dir(tmp_path, SWEEP.replace(old, new)))
