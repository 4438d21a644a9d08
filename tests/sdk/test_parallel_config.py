"""ParallelRunConfig and ParallelRunStep refuse bad input with a typed error naming the
argument, before anything is uploaded or sent; a step becomes its worker steps and a gather
step that runs after them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cairn.errors import InvalidInput, Unsupported
from cairn.proto.assets import DatasetSpec
from cairn.sdk import ParallelRunConfig, ParallelRunStep, PipelineData
from cairn.sdk._datasets import FileDataset, TabularDataset
from cairn.sdk._pipelines import _closure


@pytest.fixture
def src(tmp_path: Path) -> Path:
    (tmp_path / "score.py").write_text("def init(): pass\ndef run(batch): return batch\n")
    return tmp_path


def config(src: Path, **kw: Any) -> ParallelRunConfig:
    given: dict[str, Any] = {
        "source_directory": str(src),
        "entry_script": "score.py",
        "mini_batch_size": 10,
        "error_threshold": 5,
        "output_action": "append_row",
        "environment": None,
        "compute_target": "local",
        "node_count": 2,
    }
    return ParallelRunConfig(**{**given, **kw})


def _registered(kind: str) -> Any:
    spec = DatasetSpec(kind="tabular" if kind == "tabular" else "file", paths=[])
    cls = TabularDataset if kind == "tabular" else FileDataset
    return cls(spec, {"name": "d", "version": 1, "description": "", "tags": {}})


@pytest.mark.parametrize(
    ("given", "named"),
    [
        ({"mini_batch_size": 0}, "mini_batch_size"),
        ({"mini_batch_size": -3}, "mini_batch_size"),
        ({"mini_batch_size": "ten"}, "mini_batch_size"),
        ({"mini_batch_size": "10XB"}, "mini_batch_size"),
        ({"mini_batch_size": "-1MB"}, "mini_batch_size"),
        ({"mini_batch_size": 2.5}, "mini_batch_size"),
        ({"output_action": "append_rows"}, "output_action"),
        ({"entry_script": "missing.py"}, "entry_script"),
        ({"entry_script": ""}, "entry_script"),
        ({"error_threshold": -2}, "error_threshold"),
        ({"node_count": 0}, "node_count"),
        ({"process_count_per_node": 0}, "process_count_per_node"),
        ({"node_count": 9, "process_count_per_node": 9}, "process_count_per_node"),
        ({"logging_level": "LOUD"}, "logging_level"),
        ({"run_invocation_timeout": 0}, "run_invocation_timeout"),
        ({"run_max_try": 0}, "run_max_try"),
        ({"append_row_file_name": "../out.txt"}, "append_row_file_name"),
        ({"allowed_failed_count": -1}, "allowed_failed_count"),
        ({"allowed_failed_percent": 150}, "allowed_failed_percent"),
    ],
)
def test_bad_config_is_refused_by_name(src: Path, given: dict[str, Any], named: str) -> None:
    with pytest.raises(InvalidInput, match=named):
        config(src, **given)


def test_partition_keys_are_refused_by_name(src: Path) -> None:
    with pytest.raises(Unsupported, match="partition_keys"):
        config(src, partition_keys=["day"])


def test_a_size_counts_bytes_of_a_table_and_is_refused_for_files(src: Path) -> None:
    sized = config(src, mini_batch_size="10MB")
    assert sized.mini_batch_size == "10MB"
    ParallelRunStep("t", sized, inputs=[_registered("tabular").as_named_input("rows")])
    with pytest.raises(InvalidInput, match="mini_batch_size"):
        ParallelRunStep("f", sized, inputs=[_registered("file").as_named_input("files")])


def test_bad_step_arguments_are_refused_by_name(src: Path) -> None:
    made = config(src)
    rows = _registered("tabular").as_named_input("rows")
    with pytest.raises(InvalidInput, match="inputs"):
        ParallelRunStep("s", made, inputs=[])
    with pytest.raises(InvalidInput, match="inputs"):
        ParallelRunStep("s", made, inputs=[rows, rows])
    with pytest.raises(InvalidInput, match="inputs"):
        ParallelRunStep("s", made, inputs=["rows.csv"])
    with pytest.raises(InvalidInput, match="output"):
        ParallelRunStep("s", made, inputs=[rows], output="out")
    bogus: Any = object()
    with pytest.raises(InvalidInput, match="parallel_run_config"):
        ParallelRunStep("s", bogus, inputs=[rows])


def test_a_step_is_its_workers_and_a_gather_step_after_them(src: Path) -> None:
    out = PipelineData("scored")
    made = config(src, node_count=2, process_count_per_node=2, description="nightly")
    step = ParallelRunStep(
        "score", made, inputs=[_registered("tabular").as_named_input("rows")], output=out
    )
    steps = _closure([step])
    assert [s.name for s in steps] == ["score-w0", "score-w1", "score-w2", "score-w3", "score"]
    gather = steps[-1]
    assert out.producer is gather and gather.tags == {"description": "nightly"}
    assert {s.name for s in gather._upstream()} == {"score-w0", "score-w1", "score-w2", "score-w3"}


def test_side_inputs_and_arguments_reach_every_worker(src: Path) -> None:
    side = _registered("file")
    side.name = "labels"
    step = ParallelRunStep(
        "score",
        config(src, node_count=2, environment_variables={"MODE": "x"}),
        inputs=[_registered("tabular").as_named_input("rows")],
        side_inputs=[side.as_named_input("labels")],
        arguments=["--threshold", 3],
    )
    for worker in step.workers:
        made = worker._config({})
        assert sorted(i.name for i in made.job_inputs) == ["labels", "rows"]
        assert made.argv()[:3] == ["python", "-m", "cairn.sdk._parallel_driver"]
        assert made.argv()[-3:] == ["--", "--threshold", "3"]
        assert made.environment_variables == {"MODE": "x"}
        assert not worker.allow_reuse
    gather = step.gather._config({})
    assert gather.argv()[3] == "gather" and gather.argv()[-2:] == ["--output-dir", "outputs"]
