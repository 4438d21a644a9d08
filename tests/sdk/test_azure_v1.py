"""The Azure ML v1 names of the course material: the course's flow as a script with only the
imports changed, run by a real agent, and each new name and refusal on its own."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from cairn.bus import EventStore, connect
from cairn.errors import InvalidInput, NotFound, Unsupported
from cairn.proto.events import RunSubmitted
from cairn.proto.jobs import JobInput, JobOutput
from cairn.rpc import Client
from cairn.sdk import (
    DEFAULT_CPU_IMAGE,
    DEFAULT_GPU_IMAGE,
    AmlCompute,
    AsyncWorkspace,
    ComputeTarget,
    ComputeTargetException,
    CondaDependencies,
    Dataset,
    Datastore,
    DockerConfiguration,
    Environment,
    Estimator,
    Experiment,
    PyTorch,
    RunConfiguration,
    ScriptRunConfig,
    SKLearn,
    TensorFlow,
    Workspace,
    load_job_file,
)
from cairn.sdk._datasets import TabularDataset
from cairn.sdk._jobs import submit
from cairn.sdk._runtime import _Runtime
from cairn.settings import Settings
from tests.conftest import Agents
from tests.sdk.test_sync_sdk import run_script, sdk_env
from tests.services.test_jobs import history

TRAINING = Path(__file__).with_name("training_tabular")


def _diabetes_like(path: Path, rows: int = 400) -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(rows, 4))
    y = X @ np.array([1.5, -2.0, 0.5, 1.0]) + rng.normal(scale=0.5, size=rows) > 0
    data = np.column_stack([X, y.astype(float)])
    np.savetxt(path, data, delimiter=",", header="a,b,c,d,Diabetic", comments="", fmt="%.5f")


async def test_the_course_flow_runs_with_only_the_imports_changed(
    client: Client, client_settings: Settings, agents: Agents, tmp_path: Path
) -> None:
    folder = tmp_path / "course"
    shutil.copytree(TRAINING, folder / "src")
    (folder / "data").mkdir()
    _diabetes_like(folder / "data" / "diabetes.csv")
    await agents.start(compute="course-cluster")
    env = sdk_env(client_settings, client.workspace, tmp_path / "home")
    got = await run_script(
        "azure_v1_course_script.py",
        str(folder),
        "course-cluster",
        env=env,
        cwd=tmp_path,
        timeout=180,
    )
    assert got["found_cluster"] is False
    assert got["cluster"] == ["course-cluster", "cluster", 2]
    assert "course-cluster" in got["compute_targets"] and "local" in got["compute_targets"]
    assert got["status"] == "Completed"
    log = got["logs"]["user_logs/std_log.txt"]
    assert "input dataset: TabularDataset diabetes dataset 1" in log
    assert "input argument is a folder: True" in log
    m = got["metrics"]
    assert m["observations"] == 400 and m["Regularization Rate"] == 0.1
    assert 0.8 < m["AUC"] <= 1.0
    user_managed, conda = got["environment"]
    assert user_managed is True
    assert yaml.safe_load(conda)["dependencies"] == ["scikit-learn", "pandas", {"pip": ["joblib"]}]
    assert got["models"] == [
        [
            "diabetes_model",
            1,
            {"Training context": "Tabular dataset"},
            {"AUC": str(m["AUC"]), "Accuracy": str(m["Accuracy"])},
        ]
    ]
    assert got["from_run"] == [1]
    assert [Path(p).name for p in got["log_paths"]] == ["std_log.txt"]
    assert got["dataset_tags"] == {"format": "CSV"}
    assert got["estimator"] == ["Completed", 0.5]
    estimator_log = got["estimator_log"]["user_logs/std_log.txt"]
    assert "input dataset: TabularDataset diabetes dataset 1" in estimator_log


async def test_a_missing_compute_target_is_a_compute_target_exception(
    client: Client, client_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    ws = Workspace(client_settings, client.workspace)
    try:
        await asyncio.to_thread(_compute_targets, ws, capsys)
    finally:
        await asyncio.to_thread(_close_sync_sdk)


async def test_an_archived_experiment_is_hidden_until_asked_for(
    client: Client, client_settings: Settings
) -> None:
    ws = Workspace(client_settings, client.workspace)
    try:
        await asyncio.to_thread(_archive, ws)
    finally:
        await asyncio.to_thread(_close_sync_sdk)


def _archive(ws: Workspace) -> None:
    kept, old = Experiment(ws, "kept"), Experiment(ws, "old")
    run = old.start_logging()
    run.complete()
    old.archive()
    old.archive()  # again: nothing changes
    assert [e.name for e in Experiment.list(ws)] == ["kept"]
    assert sorted(ws.experiments) == ["kept"]
    assert [e.name for e in Experiment.list(ws, view_type="ArchivedOnly")] == ["old"]
    assert [e.name for e in Experiment.list(ws, view_type="All")] == ["kept", "old"]
    assert [r.id for r in old.get_runs()] == [run.id]  # its runs stay
    with pytest.raises(InvalidInput, match="view_type 'Deleted'"):
        Experiment.list(ws, view_type="Deleted")
    with pytest.raises(Unsupported, match="new_name= is not supported"):
        old.reactivate(new_name="new")
    old.reactivate()
    assert [e.name for e in Experiment.list(ws, experiment_name="old")] == ["old"]
    assert kept.name == "kept"


async def test_the_default_datastore_is_set_and_job_outputs_go_there(
    client: Client, client_settings: Settings, store: EventStore, tmp_path: Path
) -> None:
    (tmp_path / "mine").mkdir()
    sync = Workspace(client_settings, client.workspace)
    try:
        await asyncio.to_thread(_set_default, sync, tmp_path / "mine")
    finally:
        await asyncio.to_thread(_close_sync_sdk)
    conn = await connect(client_settings)
    try:
        ws = AsyncWorkspace(conn, client.workspace, client_settings)
        (tmp_path / "src").mkdir()
        config = ScriptRunConfig(source_directory=tmp_path / "src", command="true")
        config.job_outputs = [JobOutput(name="model")]
        run_id = await submit(ws, "defaults", config)
        events = await history(store, client.workspace, run_id)
        submitted = [e for e in events if isinstance(e, RunSubmitted)]
        assert [(o.datastore, o.path) for o in submitted[0].job.outputs] == [
            ("mine", f"job-outputs/{run_id}/model")
        ]
        await ws.close()
    finally:
        await conn.close()


def _set_default(ws: Workspace, root: Path) -> None:
    assert ws.get_default_datastore().name == "workspaceblobstore"
    Datastore.register_local(ws, "mine", str(root))
    ws.set_default_datastore("mine")
    assert ws.get_default_datastore().name == "mine"
    stores = ws.datastores
    assert stores["mine"].local_path == str(root.resolve()) and "workspaceblobstore" in stores
    with pytest.raises(NotFound):
        ws.set_default_datastore("missing")
    assert ws.get_default_datastore().name == "mine"


def _close_sync_sdk() -> None:
    """Close what the sync SDK opened in this process before the server stops."""
    runtime = _Runtime.get()

    async def close() -> None:
        for core, conn in runtime.opened:
            await core.close(timeout=5)
            await conn.close()

    runtime.run(close())
    runtime.opened.clear()


def _compute_targets(ws: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ComputeTargetException, match="'nowhere' does not exist"):
        ComputeTarget(workspace=ws, name="nowhere")
    assert issubclass(ComputeTargetException, NotFound)
    config = AmlCompute.provisioning_configuration(vm_size="STANDARD_DS11_V2", max_nodes=3)
    made = ComputeTarget.create(ws, "gpu-pool", config)
    made.wait_for_completion(show_output=True)
    out = capsys.readouterr().out
    assert "cairn agent --compute gpu-pool" in out and "up to 3 machine(s)" in out
    assert ws.compute_targets["gpu-pool"].vm_size == "STANDARD_DS11_V2"
    with pytest.raises(InvalidInput, match="not both"):
        ComputeTarget.create(ws, "other", config, max_nodes=2)


# -- the new names on their own ----------------------------------------------------------


def test_conda_dependencies_serialize_to_what_an_environment_reads(tmp_path: Path) -> None:
    deps = CondaDependencies.create(
        conda_packages=["numpy"], pip_packages=["joblib"], python_version="3.11"
    )
    deps.add_channel("conda-forge")
    path = deps.save(tmp_path / "env.yml")
    env = Environment.from_conda_specification("e", path)
    read = env.python.conda_dependencies
    assert read.conda_packages == ["numpy"] and read.pip_packages == ["joblib"]
    assert read.python_version == "3.11" and read.channels == ["conda-forge"]
    assert yaml.safe_load(deps.serialize_to_string())["name"] == "project_environment"
    with pytest.raises(Unsupported, match="pip_indexurl= is not supported; packages install"):
        CondaDependencies.create(pip_indexurl="https://example.invalid/simple")


def test_run_configuration_gives_a_script_run_config_its_target_and_environment() -> None:
    rc = RunConfiguration(conda_dependencies=CondaDependencies.create(pip_packages=["x"]))
    rc.target = "cpu-cluster"
    rc.docker = DockerConfiguration(use_docker=True)
    rc.environment_variables = {"A": "1"}
    src = ScriptRunConfig(source_directory=".", script="t.py", run_config=rc)
    assert src.compute_name == "cpu-cluster"
    assert src.environment is rc.environment
    assert src.environment.spec().pip == ["x"]
    assert src.environment_variables == {"A": "1"}
    assert src.docker_runtime_config is rc.docker
    given = ScriptRunConfig(script="t.py", run_config=rc, compute_target="local")
    assert given.compute_name == "local"  # what ScriptRunConfig is given wins
    with pytest.raises(Unsupported, match=r"RunConfiguration\.mpi is not supported"):
        rc.mpi = object()
    with pytest.raises(Unsupported, match="framework= is not supported"):
        RunConfiguration(framework="PySpark")


def test_docker_configuration_is_a_request_for_isolation() -> None:
    assert DockerConfiguration(use_docker=True).use_docker is True
    config = ScriptRunConfig(
        script="t.py", docker_runtime_config=DockerConfiguration(use_docker=True)
    )
    assert config.docker_runtime_config is not None
    with pytest.raises(InvalidInput, match="takes DockerConfiguration"):
        ScriptRunConfig(script="t.py", docker_runtime_config={"use_docker": True})
    with pytest.raises(Unsupported, match="use_docker= is not supported; every job runs"):
        DockerConfiguration(use_docker=False)
    with pytest.raises(Unsupported, match="shm_size= is not supported"):
        DockerConfiguration(use_docker=True, shm_size="2g")
    assert DEFAULT_CPU_IMAGE == DEFAULT_GPU_IMAGE == "cairn-base:bookworm"


def test_script_run_config_refuses_what_it_cannot_do_and_unknown_arguments() -> None:
    with pytest.raises(Unsupported, match="distributed_job_config= is not supported"):
        ScriptRunConfig(script="t.py", distributed_job_config=object())
    with pytest.raises(Unsupported, match="resume_from= is not supported"):
        ScriptRunConfig(script="t.py", resume_from="run-1")
    with pytest.raises(TypeError, match="no_such_thing"):
        ScriptRunConfig(script="t.py", no_such_thing=1)


def _registered(name: str = "diabetes", version: int = 2) -> TabularDataset:
    from cairn.proto.assets import DatasetSpec

    ds = TabularDataset(DatasetSpec(kind="tabular", paths=[]), {"name": name, "version": version})
    return ds


def test_a_named_input_on_its_own_binds_the_dataset_itself() -> None:
    named = _registered().as_named_input("training_data")
    assert named.job_binding() == JobInput(
        name="training_data", mode="download", dataset="diabetes", version=2, as_dataset=True
    )
    assert str(named) == "${{inputs.training_data}}"
    config = ScriptRunConfig(script="t.py", arguments=["--input-data", named])
    assert config.bindings == [named]
    assert config.arguments == ["--input-data", "${{inputs.training_data}}"]
    as_path = named.as_download().job_binding()
    assert isinstance(as_path, JobInput) and not as_path.as_dataset


def test_estimator_packages_build_its_environment_and_inputs_bind_data() -> None:
    named = _registered().as_named_input("training_data")
    est = Estimator(
        source_directory=".",
        entry_script="train.py",
        script_params={"--reg_rate": 0.1, "--verbose": True},
        conda_packages=["numpy"],
        pip_packages=["joblib"],
        custom_docker_image="my/image:1",
        inputs=[named],
        use_gpu=True,
        compute_target="gpu",
    )
    assert est.argv() == ["python", "train.py", "--reg_rate", "0.1", "--verbose"]
    spec = est.environment.spec()
    assert spec.conda == ["numpy"] and spec.pip == ["joblib"]
    assert spec.docker_image == "my/image:1"
    assert est.gpus == 1 and est.compute_name == "gpu"
    assert [b.job_binding().name for b in est.bindings] == ["training_data"]
    both = Estimator(script_params={"--data": named}, inputs=[named])
    assert len(both.bindings) == 1  # bound once
    assert Estimator(source_directory=".", entry_script="t.py").environment is None
    env = Environment("mine")
    with pytest.raises(InvalidInput, match="excludes pip_packages"):
        Estimator(environment_definition=env, pip_packages=["x"])
    with pytest.raises(InvalidInput, match="inputs= takes"):
        Estimator(inputs=["just a string"])
    with pytest.raises(Unsupported, match="node_count= is not supported"):
        Estimator(node_count=2)
    with pytest.raises(Unsupported, match="use_docker= is not supported"):
        Estimator(use_docker=False)


def test_framework_estimators_add_their_package() -> None:
    assert SKLearn(entry_script="t.py").environment.spec().pip == ["scikit-learn"]
    torch = PyTorch(entry_script="t.py", framework_version="2.3", pip_packages=["x"])
    assert torch.environment.spec().pip == ["x", "torch==2.3"]
    tf = TensorFlow(entry_script="t.py", user_managed=True)
    assert tf.environment.spec().pip == [] and tf.environment.spec().user_managed
    with pytest.raises(InvalidInput, match="framework_version= belongs to"):
        Estimator(framework_version="1.0")


def test_provisioning_configuration_records_the_cluster() -> None:
    config = AmlCompute.provisioning_configuration(vm_size="STANDARD_NC6", min_nodes=0, max_nodes=4)
    assert config.spec.kind == "cluster" and config.spec.max_nodes == 4
    assert config.spec.vm_size == "STANDARD_NC6"
    with pytest.raises(Unsupported, match="vm_priority= is not supported"):
        AmlCompute.provisioning_configuration(vm_priority="lowpriority")
    with pytest.raises(Unsupported, match="idle_seconds_before_scaledown= is not supported"):
        AmlCompute.provisioning_configuration(idle_seconds_before_scaledown=120)


def test_dataset_factories_refuse_what_they_cannot_read() -> None:
    with pytest.raises(Unsupported, match="encoding= is not supported"):
        Dataset.Tabular.from_delimited_files(path=("store", "a/*.csv"), encoding="latin1")
    with pytest.raises(Unsupported, match="set_column_types= is not supported"):
        Dataset.Tabular.from_delimited_files(path=("store", "a.csv"), set_column_types={"a": 1})
    assert Dataset.Tabular.from_delimited_files(path=("store", "a.csv"), validate=False)


@pytest.mark.parametrize(
    ("extra", "refused"),
    [
        ("name: my-run-1\n", "name= is not supported; Cairn makes every run's id"),
        (
            "inputs:\n  d: {type: uri_folder, path: azureml:data:1, description: x}\n",
            "inputs.d: description= is not supported",
        ),
        ("outputs:\n  m: {type: uri_file}\n", "outputs.m: type= is not supported"),
        ("outputs:\n  m: {mode: rw_mount}\n", "outputs.m: mode= is not supported"),
        ("environment: {image: x, description: y}\n", "environment: description= is not"),
    ],
)
def test_job_file_keys_cairn_cannot_honour_are_refused(
    tmp_path: Path, extra: str, refused: str
) -> None:
    job = tmp_path / "job.yml"
    job.write_text("command: echo hi\n" + extra)
    with pytest.raises(Unsupported, match=refused):
        load_job_file(job)


def test_a_job_file_names_a_command_schema_and_typed_local_inputs(tmp_path: Path) -> None:
    job = tmp_path / "job.yml"
    job.write_text("$schema: https://x/pipelineJob.schema.json\ncommand: echo hi\n")
    with pytest.raises(InvalidInput, match="not a command job's schema"):
        load_job_file(job)
    (tmp_path / "data.csv").write_text("a\n1\n")
    job.write_text("command: cat ${{inputs.d}}\ninputs:\n  d: {type: uri_folder, path: data.csv}\n")
    with pytest.raises(InvalidInput, match=r"data\.csv is not a uri_folder"):
        load_job_file(job)
    job.write_text("command: cat ${{inputs.d}}\ninputs:\n  d: {type: uri_file, path: data.csv}\n")
    assert load_job_file(job)[1].local_inputs["d"][0] == tmp_path / "data.csv"


def test_an_offline_run_shows_everything_it_is_given(capsys: pytest.CaptureFixture[str]) -> None:
    from cairn.sdk import OfflineRun

    run = OfflineRun()
    run.log("loss", 0.5, description="training loss", step=3)
    run.log_image("curve", plot=object())
    run.upload_file("outputs/x.txt", "x.txt")
    run.fail(error_details="boom")
    out = capsys.readouterr().out
    assert "loss (training loss) at step 3:\n0.5" in out
    assert "curve:\n<plot object>" in out
    assert "outputs/x.txt from x.txt" in out and "fail the run: boom" in out


def test_an_environments_settings_refuse_what_nothing_reads() -> None:
    env = Environment("e")
    env.docker.enabled = True
    env.docker.base_image = DEFAULT_CPU_IMAGE
    env.python.user_managed_dependencies = True
    assert env.spec().docker_image == "cairn-base:bookworm" and env.spec().user_managed
    with pytest.raises(Unsupported, match=r"docker\.enabled= is not supported as False"):
        env.docker.enabled = False
    with pytest.raises(Unsupported, match=r"Docker\.gpu_support is not supported"):
        env.docker.gpu_support = True
    with pytest.raises(Unsupported, match=r"Python\.interpreter_path is not supported"):
        env.python.interpreter_path = "/usr/bin/python3"
