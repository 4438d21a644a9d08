"""Azure ML v1's ``ParallelRunConfig`` and ``ParallelRunStep``: batch scoring in a pipeline.

::

    config = ParallelRunConfig(source_directory="score", entry_script="score.py",
                               mini_batch_size=100, error_threshold=10,
                               output_action="append_row", environment=env,
                               compute_target="local", node_count=2)
    scored = PipelineData("scored", datastore=ws.get_default_datastore())
    step = ParallelRunStep(name="score", parallel_run_config=config,
                           inputs=[table.as_named_input("rows")], output=scored)
    run = Experiment(ws, "batch").submit(Pipeline(ws, steps=[step]))

A ``ParallelRunStep`` becomes ``node_count * process_count_per_node`` worker steps
(``<name>-w<i>``, each an ordinary job: agents, leases, attempts) and one gather step named
``<name>`` that runs after them and writes the results to ``output``
(``parallel_run_step.txt`` unless ``append_row_file_name`` says otherwise). The workers share
the mini-batches through the pipelines service (``cairn.proto.parallel``): each is handed to
one live worker at a time and its result committed once, so a worker lost mid-batch loses and
doubles no row. ``mini_batch_size`` counts rows of a tabular dataset (or, as a size such as
``"1MB"``, bytes of its rows) and files of a file dataset.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from cairn.errors import InvalidInput
from cairn.sdk._async_parallel import DRIVER, gather_args, worker_args
from cairn.sdk._datasets import TabularDataset, _Dataset, _NamedInput
from cairn.sdk._datastores import DataBinding
from cairn.sdk._jobs import ScriptRunConfig
from cairn.sdk._parallel_driver import parse_size
from cairn.sdk._pipelines import PythonScriptStep, _Produced
from cairn.sdk._refusals import inherent, refuses

__all__ = ["ParallelRunConfig", "ParallelRunStep"]

#: worker steps one parallel run step may have
MAX_WORKERS = 64
_ACTIONS = ("append_row", "summary_only")
_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_FILE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


def _count(where: str, name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InvalidInput(f"{where}: {name}= is a whole number of at least {low}, not {value!r}")
    return value


def _batch_size(value: Any) -> str | None:
    """``mini_batch_size`` as the driver reads it: digits (a count) or a size (``"1MB"``)."""
    where = "ParallelRunConfig: mini_batch_size"
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidInput(f"{where}= is a count or a size such as '1MB', not {value!r}")
    if isinstance(value, int):
        if value <= 0:
            raise InvalidInput(f"{where}= must be at least 1, not {value}")
        return str(value)
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return _batch_size(int(text))
        try:
            parse_size(text)
        except InvalidInput as exc:
            raise InvalidInput(f"{where}={value!r}: {exc.message}") from None
        return text.upper().replace(" ", "")
    raise InvalidInput(f"{where}= is a count or a size such as '1MB', not {type(value).__name__}")


class ParallelRunConfig:
    """How a ``ParallelRunStep`` runs: ``entry_script`` (in ``source_directory``) with
    ``init()`` and ``run(mini_batch)``, in ``environment`` on ``compute_target``, as
    ``node_count * process_count_per_node`` worker jobs, ``mini_batch_size`` items at a time.
    ``error_threshold`` (failed items), ``allowed_failed_count`` and
    ``allowed_failed_percent`` (failed mini-batches) abort the run when passed (-1 / None: no
    limit). ``run_invocation_timeout`` bounds one ``run()`` call, tried ``run_max_try`` times."""

    @refuses(
        partition_keys="mini-batches are made by count or size; partition the data into"
        " files and use a file dataset instead",
    )
    def __init__(
        self,
        environment: Any,
        entry_script: str,
        error_threshold: int,
        output_action: str,
        compute_target: Any,
        node_count: int,
        process_count_per_node: int | None = None,
        mini_batch_size: int | str | None = None,
        source_directory: str | Path | None = None,
        description: str | None = None,
        logging_level: str = "INFO",
        run_invocation_timeout: float = 60,
        run_max_try: int = 3,
        append_row_file_name: str | None = None,
        allowed_failed_count: int | None = None,
        allowed_failed_percent: float | None = None,
        partition_keys: list[str] | None = None,
        environment_variables: dict[str, str] | None = None,
    ) -> None:
        where = "ParallelRunConfig"
        if not isinstance(entry_script, str) or not entry_script.strip():
            raise InvalidInput(f"{where}: entry_script= names a Python file, not {entry_script!r}")
        self.source_directory = Path(source_directory or ".")
        script = self.source_directory / entry_script
        if not script.is_file():
            raise InvalidInput(
                f"{where}: entry_script {entry_script!r} is not a file in"
                f" {str(self.source_directory)!r}"
            )
        self.entry_script = entry_script
        self.error_threshold = _count(where, "error_threshold", error_threshold, -1)
        if output_action not in _ACTIONS:
            raise InvalidInput(
                f"{where}: output_action= is 'append_row' or 'summary_only', not {output_action!r}"
            )
        self.output_action = output_action
        self.environment = environment
        self.compute_target = compute_target
        self.node_count = _count(where, "node_count", node_count, 1)
        self.process_count_per_node = _count(
            where,
            "process_count_per_node",
            1 if process_count_per_node is None else process_count_per_node,
            1,
        )
        if self.node_count * self.process_count_per_node > MAX_WORKERS:
            raise InvalidInput(
                f"{where}: node_count * process_count_per_node is at most {MAX_WORKERS}"
            )
        self.mini_batch_size = _batch_size(mini_batch_size)
        self.description = description or ""
        if logging_level not in _LEVELS:
            raise InvalidInput(f"{where}: logging_level= is one of {', '.join(_LEVELS)}")
        self.logging_level = logging_level
        if (
            isinstance(run_invocation_timeout, bool)
            or not isinstance(run_invocation_timeout, (int, float))
            or run_invocation_timeout <= 0
        ):
            raise InvalidInput(f"{where}: run_invocation_timeout= is a positive number of seconds")
        self.run_invocation_timeout = float(run_invocation_timeout)
        self.run_max_try = _count(where, "run_max_try", run_max_try, 1)
        name = append_row_file_name or "parallel_run_step.txt"
        if not _FILE_NAME.fullmatch(name) or name in (".", ".."):
            raise InvalidInput(f"{where}: append_row_file_name= is a file name, not {name!r}")
        self.append_row_file_name = name
        self.allowed_failed_count = (
            None
            if allowed_failed_count is None
            else _count(where, "allowed_failed_count", allowed_failed_count, 0)
        )
        if allowed_failed_percent is not None and (
            isinstance(allowed_failed_percent, bool)
            or not isinstance(allowed_failed_percent, (int, float))
            or not 0 <= allowed_failed_percent <= 100
        ):
            raise InvalidInput(f"{where}: allowed_failed_percent= is between 0 and 100")
        self.allowed_failed_percent = allowed_failed_percent
        self.environment_variables = {
            str(k): str(v) for k, v in (environment_variables or {}).items()
        }


class _Part(PythonScriptStep):
    """A worker or the gather step of a ``ParallelRunStep``: a job that runs the driver."""

    def __init__(self, name: str, command: list[Any], config: ParallelRunConfig, **kw: Any) -> None:
        super().__init__(
            script_name=config.entry_script,
            name=name,
            arguments=command,
            compute_target=config.compute_target,
            source_directory=config.source_directory,
            **kw,
        )
        self.parallel_config = config
        self.after: list[PythonScriptStep] = []

    def _config(self, values: dict[str, Any]) -> ScriptRunConfig:
        made = super()._config(values)
        c = self.parallel_config
        config = ScriptRunConfig(
            source_directory=c.source_directory,
            command=[*DRIVER, *made.arguments],
            compute_target=c.compute_target,
            environment=c.environment,
            environment_variables=c.environment_variables,
        )
        config.job_inputs, config.job_outputs = made.job_inputs, made.job_outputs
        return config

    def _upstream(self) -> list[PythonScriptStep]:
        return [*super()._upstream(), *self.after]


_NO_REUSE = (
    "a parallel run step always runs: its results live on its own pipeline run's parallel"
    " run, which a step reused from an earlier pipeline run would not have (allow_reuse=False"
    " is what it does)"
)


class ParallelRunStep:
    """``parallel_run_config``'s entry script over ``inputs`` (one dataset, as a named
    input), its mini-batches shared by the workers; the results appended to ``output``.
    ``side_inputs`` reach every worker as a ``PythonScriptStep``'s inputs do; ``arguments``
    are the entry script's ``sys.argv[1:]``. Its parts are never reused from an earlier
    pipeline run (``allow_reuse`` or not): a partly reused step would read another run's
    mini-batches."""

    @inherent(allow_reuse=_NO_REUSE)
    def __init__(
        self,
        name: str,
        parallel_run_config: ParallelRunConfig,
        inputs: list[Any],
        output: Any = None,
        side_inputs: list[Any] | None = None,
        arguments: list[Any] | None = None,
        allow_reuse: bool = True,
    ) -> None:
        where = f"ParallelRunStep {name!r}"
        if not isinstance(parallel_run_config, ParallelRunConfig):
            raise InvalidInput(f"{where}: parallel_run_config= is a ParallelRunConfig")
        config = parallel_run_config
        if not isinstance(inputs, list) or len(inputs) != 1:
            raise InvalidInput(f"{where}: inputs= is a list of one dataset (as_named_input)")
        bound = inputs[0]
        dataset = getattr(bound, "dataset", None)
        if not isinstance(bound, DataBinding) or not isinstance(dataset, _Dataset):
            raise InvalidInput(
                f"{where}: inputs= holds a registered dataset's as_named_input(name), not"
                f" {type(bound).__name__}"
            )
        if output is not None and not isinstance(output, _Produced):
            raise InvalidInput(
                f"{where}: output= is a PipelineData or an OutputFileDatasetConfig, not"
                f" {type(output).__name__}"
            )
        kind = "tabular" if isinstance(dataset, TabularDataset) else "file"
        size = config.mini_batch_size or ("1MB" if kind == "tabular" else "10")
        if kind == "file" and not size.isdigit():
            raise InvalidInput(
                f"{where}: mini_batch_size= counts files for a file dataset, not {size!r}"
            )
        count = config.node_count * config.process_count_per_node
        if len(name) + len(f"-w{count}") > 64:
            raise InvalidInput(f"{where}: the name is too long for its worker steps")
        self.name = name
        self.output = output
        named = _NamedInput(dataset, bound.name)
        worker: list[Any] = worker_args(
            name,
            entry_script=config.entry_script,
            input_name=bound.name,
            kind=kind,
            mini_batch_size=size,
            output_action=config.output_action,
            error_threshold=config.error_threshold,
            run_invocation_timeout=config.run_invocation_timeout,
            run_max_try=config.run_max_try,
            logging_level=config.logging_level,
            allowed_failed_count=config.allowed_failed_count,
            allowed_failed_percent=config.allowed_failed_percent,
        )
        worker += ["--", *(arguments or [])]
        self.workers = [
            _Part(
                f"{name}-w{i}",
                worker,
                config,
                inputs=[named, *(side_inputs or [])],
                allow_reuse=False,
            )
            for i in range(count)
        ]
        target: Any = output if output is not None else "outputs"
        gather: list[Any] = [
            *gather_args(
                name, file_name=config.append_row_file_name, output_action=config.output_action
            ),
            "--output-dir",
            target,
        ]
        self.gather = _Part(
            name,
            gather,
            config,
            outputs=[output] if output is not None else [],
            allow_reuse=False,
        )
        self.gather.after = list(self.workers)
        if config.description:
            self.gather.tags = {"description": config.description}

    def steps(self) -> list[PythonScriptStep]:
        return [*self.workers, self.gather]

    def __repr__(self) -> str:
        return f"ParallelRunStep(name={self.name!r})"
