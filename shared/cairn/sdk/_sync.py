"""The sync facade, with the names data scientists know from the Azure ML v1 SDK:
``Workspace``, ``Experiment``, ``Run``. Each method runs one call of the async core on the
SDK's event loop (:mod:`cairn.sdk._runtime`) and waits; ``run.log*`` only append to a buffer,
from any thread.
"""

from __future__ import annotations

import builtins
import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal

from cairn.data import local_target
from cairn.errors import InvalidInput, NotFound
from cairn.proto.paths import validate_run_path
from cairn.sdk._assets import Environment
from cairn.sdk._async import AsyncRun, AsyncWorkspace, exit_error
from cairn.sdk._async_events import FeedEvent
from cairn.sdk._automl import AutoMLConfig
from cairn.sdk._compute import ComputeTarget
from cairn.sdk._datasets import Dataset, FileDataset, TabularDataset
from cairn.sdk._datastores import Datastore
from cairn.sdk._hyperdrive import SweepConfig, best_first
from cairn.sdk._jobs import RunFailedError, ScriptRunConfig, print_out
from cairn.sdk._keyvault import Keyvault
from cairn.sdk._models import Model
from cairn.sdk._offline import OfflineRun
from cairn.sdk._refusals import inherent, refuses
from cairn.sdk._runs import azure_filter
from cairn.sdk._runtime import WorkspaceBase
from cairn.settings import load_settings

__all__ = ["AutoMLRun", "Experiment", "HyperDriveRun", "Run", "Workspace"]

#: run files that are logs (``get_details_with_logs``, ``get_all_logs``)
_LOG_PREFIXES = ("user_logs/", "logs/", "azureml-logs/")


class Workspace(WorkspaceBase):
    """A workspace, connected on first use. ``Workspace.from_config()`` reads the file that
    ``cairn up`` writes (``$CAIRN_HOME/config.json``) or a given path; ``CAIRN_*`` variables
    override it."""

    @classmethod
    @refuses(
        auth="Cairn connects with the NATS credentials of the config file or the CAIRN_NATS_*"
        " variables"
    )
    def from_config(cls, path: str | os.PathLike[str] | None = None, auth: Any = None) -> Workspace:
        return cls(load_settings(file=Path(path) if path else None))

    @classmethod
    def create(
        cls,
        name: str,
        *,
        description: str = "",
        friendly_name: str | None = None,
        exist_ok: bool = False,
        show_output: bool = True,
        **azure: Any,
    ) -> Workspace:
        """Create workspace ``name``: you become its first member, with your roles. An
        existing one is ``AlreadyExists`` unless ``exist_ok``. Azure's arguments that name
        cloud resources (``subscription_id``, ``resource_group``, ``location``...) have no
        counterpart here: each one given is named in a warning; any other is refused."""
        _azure_only("Workspace.create", azure)
        ws = cls(load_settings(), name)
        ws._run(ws.core.create(description or friendly_name or "", exist_ok=exist_ok))
        if show_output:
            print(f"workspace {name} is ready")
        return ws

    @classmethod
    def list(cls, **azure: Any) -> dict[str, list[Workspace]]:
        """The workspaces you are a member of, by name (Azure's shape: a list per name)."""
        _azure_only("Workspace.list", azure)
        base = cls(load_settings())
        rows = base._run(base.core.workspaces())
        return {r["name"]: [cls(base.settings, r["name"])] for r in rows}

    @property
    def experiments(self) -> dict[str, Experiment]:
        return {e.name: e for e in Experiment.list(self)}

    def events(
        self,
        types: Iterable[str] = (),
        *,
        since: int | datetime | None = None,
        durable: str | None = None,
        follow: bool = True,
    ) -> Iterator[FeedEvent]:
        """The workspace's events, oldest first, as typed ``FeedEvent`` s: ``for event in
        ws.events(["RunCompleted"], durable="ci"): ...`` (the async core's ``ws.events``;
        docs/events.md)."""
        feed = self.core.events(types, since=since, durable=durable, follow=follow)

        async def step() -> FeedEvent | None:
            try:
                return await anext(feed)
            except StopAsyncIteration:
                return None

        try:
            while (event := self._run(step())) is not None:
                yield event
        finally:
            self._run(feed.aclose())

    @property
    def environments(self) -> dict[str, Environment]:
        return Environment.list(self)

    @property
    def datastores(self) -> dict[str, Datastore]:
        return Datastore.list(self)

    @property
    def compute_targets(self) -> dict[str, ComputeTarget]:
        return ComputeTarget.list(self)

    @property
    def datasets(self) -> dict[str, TabularDataset | FileDataset]:
        return Dataset.list(self)

    def get_default_datastore(self) -> Datastore:
        """The workspace's default datastore: ``workspaceblobstore`` until set."""
        return Datastore.get(self, self._run(self.core.default_datastore()))

    def set_default_datastore(self, name: str) -> None:
        """Make datastore ``name`` (registered) the default: job outputs without a path and
        local job inputs go there, and ``get_default_datastore()`` returns it."""
        self._run(self.core.set_default_datastore(name))

    def get_default_keyvault(self) -> Keyvault:
        """The workspace's secrets (``set_secret``, ``get_secret``, ``list_secrets``...)."""
        return Keyvault(self)

    def get_mlflow_tracking_uri(self) -> str:
        """Where ``mlflow`` logs into this workspace (``mlflow.set_tracking_uri(...)``, with
        an API token as ``MLFLOW_TRACKING_TOKEN``): the gateway's MLflow API,
        ``http://<gateway_host>:<gateway_port>/mlflow/<workspace>``. Inside a job, its
        agent's endpoint for the job (``MLFLOW_TRACKING_URI``, which the agent sets with the
        job's own token)."""
        inside = os.environ.get("MLFLOW_TRACKING_URI")
        if self.settings.agent_socket and inside:
            return inside
        host = self.settings.gateway_host
        if host in ("0.0.0.0", "::"):  # listening everywhere: this machine reaches it here
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.settings.gateway_port}/mlflow/{self.name}"

    @property
    def models(self) -> dict[str, Model]:
        """The latest version of every model, by name (read-only)."""
        return {m.name: m for m in Model.list(self, latest=True)}


#: Azure ML's workspace arguments that name cloud resources (Cairn has none of them)
_AZURE_RESOURCE_ARGS = frozenset(
    {
        "subscription_id",
        "resource_group",
        "location",
        "create_resource_group",
        "sku",
        "auth",
        "storage_account",
        "key_vault",
        "app_insights",
        "container_registry",
        "tags",
    }
)


def _azure_only(where: str, given: dict[str, Any]) -> None:
    unknown = sorted(set(given) - _AZURE_RESOURCE_ARGS)
    if unknown:
        raise TypeError(f"{where}() got unexpected keyword arguments: {', '.join(unknown)}")
    named = sorted(k for k, v in given.items() if v is not None)
    if named:
        warnings.warn(
            f"{where}: {', '.join(named)} name Azure resources; a Cairn workspace has none of"
            " them, so they are not used",
            stacklevel=3,
        )


class Experiment:
    def __init__(self, workspace: Workspace, name: str) -> None:
        self.workspace = workspace
        self.name = name
        self._core = workspace._run(workspace.core.experiment(name))
        self.id = self._core.id

    @refuses(
        snapshot_directory="an interactive run has no snapshot; store files with"
        " run.upload_file or run.upload_folder"
    )
    def start_logging(
        self,
        *,
        display_name: str | None = None,
        outputs: str | None = None,
        snapshot_directory: str | None = None,
    ) -> Run:
        """A new run, already Running. As a context manager it completes on exit, or fails
        with the exception that left the block."""
        core = self.workspace._run(self._core.start_run(display_name=display_name))
        return Run(self, core.id, _core=core, outputs=outputs)

    def submit(
        self,
        config: ScriptRunConfig | SweepConfig | Any,
        tags: dict[str, Any] | None = None,
        display_name: str | None = None,
        *,
        regenerate_outputs: bool = False,
        pipeline_parameters: dict[str, Any] | None = None,
        continue_on_step_failure: bool = False,
    ) -> Run:
        """Run ``config`` (a ``ScriptRunConfig`` or ``Estimator``) as a job on its compute
        target, a ``HyperDriveConfig`` (any ``SweepConfig``) as a sweep (a
        ``HyperDriveRun``), or a ``Pipeline`` as a pipeline run (a ``PipelineRun``:
        ``regenerate_outputs`` runs every step even where a run could be reused,
        ``pipeline_parameters`` the values of its ``PipelineParameter``s); returns the run at
        once."""
        tag_values = {k: str(v) for k, v in (tags or {}).items()}
        submit_to = getattr(config, "_submit_to", None)
        if submit_to is not None:  # a Pipeline (cairn.sdk._pipelines, above this module)
            run: Run = submit_to(
                self,
                tags=tag_values,
                display_name=display_name,
                regenerate_outputs=regenerate_outputs,
                pipeline_parameters=pipeline_parameters,
                continue_on_step_failure=continue_on_step_failure,
            )
            return run
        given = {
            "regenerate_outputs": regenerate_outputs,
            "pipeline_parameters": pipeline_parameters,
            "continue_on_step_failure": continue_on_step_failure,
        }
        named = [k for k, v in given.items() if v not in (False, None)]
        if named:
            raise InvalidInput(f"experiment.submit: {named[0]}= is for a Pipeline only")
        submitted = self._core.submit(config, tags=tag_values, display_name=display_name)
        core = self.workspace._run(submitted)
        if isinstance(config, AutoMLConfig):
            return AutoMLRun(self, core.id, _core=core)
        if isinstance(config, SweepConfig):
            return HyperDriveRun(self, core.id, _core=core)
        return Run(self, core.id, _core=core)

    def get_runs(
        self,
        type: str | None = None,  # Azure ML v1's name
        tags: str | dict[str, Any] | None = None,
        properties: str | dict[str, Any] | None = None,
        include_children: bool = False,
        *,
        filter: str = "",
        order_by: Sequence[str] = (),
        page_size: int = 100,
        as_of: datetime | int | None = None,
    ) -> Iterator[Run]:
        """Every run of this experiment, newest first (or in ``order_by`` order), fetched
        lazily ``page_size`` at a time. As in Azure ML v1: ``tags``/``properties`` a key the
        run has or ``{key: value}`` pairs, ``include_children`` child runs too; ``type`` is
        refused (Cairn runs have no type). ``filter`` and ``order_by`` are the runs query's
        (docs/design.md), e.g. ``filter="metrics.loss.min < 0.2"``,
        ``order_by=["metrics.loss.min ASC"]``. ``as_of`` (a time, or a stream sequence): the
        runs the log held then, as they were then (no metrics in the filter or order then)."""
        expr = azure_filter(
            "get_runs",
            type=type,
            tags=tags,
            properties=properties,
            include_children=include_children,
            filter=filter,
        )
        for row in _rows(self.workspace, self.name, expr, order_by, page_size, as_of):
            yield Run(self, row["run_id"])

    def get_details(self, *, as_of: datetime | int | None = None) -> dict[str, Any]:
        """This experiment's id, name, creation, archived flag and number of runs; ``as_of``
        (a time, or a stream sequence): as they were then."""
        return self.workspace._run(self._core.details(as_of=as_of))

    def archive(self) -> None:
        """Hide this experiment from ``Experiment.list`` and ``ws.experiments`` (an event:
        the runs stay, and ``reactivate`` brings it back)."""
        self.workspace._run(self._core.archive())

    @refuses(new_name="an experiment keeps its name")
    def reactivate(self, new_name: str | None = None) -> None:
        self.workspace._run(self._core.archive(restore=True))

    @staticmethod
    @refuses(tags="experiments carry no tags (their runs do)")
    def list(
        workspace: Workspace,
        experiment_name: str | None = None,
        view_type: str = "ActiveOnly",
        tags: str | None = None,
        *,
        as_of: datetime | int | None = None,
    ) -> builtins.list[Experiment]:
        """The experiments (``view_type``: ``ActiveOnly``, ``ArchivedOnly`` or ``All``), or
        the one called ``experiment_name``; ``as_of`` (a time, or a stream sequence): those
        the log held then, as they were then."""
        views: dict[str, Literal["no", "only", "all"]] = {
            "ActiveOnly": "no",
            "ArchivedOnly": "only",
            "All": "all",
        }
        if view_type not in views:
            raise InvalidInput(f"view_type {view_type!r} is not one of {', '.join(views)}")
        rows = workspace._run(workspace.core.experiments(views[view_type], as_of=as_of))
        return [
            Experiment(workspace, row["name"])
            for row in rows
            if experiment_name in (None, row["name"])
        ]

    def __repr__(self) -> str:
        return f"Experiment(name={self.name!r}, workspace={self.workspace.name!r})"


class Run:
    """A run bound to Cairn. Obtain one from ``experiment.start_logging()`` or, inside a job,
    ``Run.get_context()``."""

    def __init__(
        self,
        experiment: Experiment,
        run_id: str,
        *,
        _core: AsyncRun | None = None,
        outputs: str | None = None,
    ) -> None:
        self.experiment = experiment
        self.id = run_id
        ws = experiment.workspace
        self._ws = ws
        self._core = _core or ws._run(_bind(ws.core, run_id, experiment.name))
        self.outputs = outputs

    @classmethod
    def get_context(cls, allow_offline: bool = True) -> Run | OfflineRun:
        """The run this process runs as (``CAIRN_RUN_ID`` and friends set by the agent), or an
        offline run that prints what it would log and never fails."""
        run_id = os.environ.get("CAIRN_RUN_ID")
        if not run_id:
            if not allow_offline:
                raise InvalidInput("not inside a Cairn job (CAIRN_RUN_ID is not set)")
            return OfflineRun()
        ws = Workspace()
        return cls(Experiment(ws, os.environ.get("CAIRN_EXPERIMENT", "default")), run_id)

    # -- metrics (never wait on the network) ----------------------------------------------

    # the core's ``log*`` have these signatures: the facade passes calls through, and the core
    # makes values wire values (NaN as "NaN"...), one policy for both APIs

    def log(self, name: str, value: Any, description: str = "", step: int | None = None) -> None:
        self._core.log(name, value, description, step)

    def log_list(self, name: str, value: list[Any], description: str = "") -> None:
        self._core.log_list(name, value, description)

    def log_row(self, name: str, description: str | None = None, **kwargs: Any) -> None:
        self._core.log_row(name, description, **kwargs)

    def log_table(self, name: str, value: dict[str, list[Any]], description: str = "") -> None:
        self._core.log_table(name, value, description)

    def log_image(
        self, name: str, path: str | None = None, plot: Any = None, description: str = ""
    ) -> None:
        """Store the image (a file, or a matplotlib figure as PNG) as a run file and log it."""
        self._ws._run(self._core.log_image(name, path, plot, description))

    def flush(self) -> None:
        """Wait until every logged point is stored (or spooled)."""
        self._ws._run(self._core.flush())

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def _agent_owned(self) -> bool:
        """Inside a job the agent ends the run from the script's exit code."""
        return self._core.attempt is not None

    @property
    def input_datasets(self) -> dict[str, Any]:
        """Inside a job: each named input and the local path the agent made it, or, for a
        dataset bound with ``as_named_input(name)`` alone, the dataset itself (a
        ``TabularDataset`` or ``FileDataset`` that reads the agent's local copy)."""
        raw = os.environ.get("CAIRN_INPUT_DATASETS") if self._agent_owned else None
        staged = json.loads(raw) if raw else {}
        found: dict[str, Any] = {}
        for name, item in staged.items():
            path = os.path.abspath(item["path"])
            if item.get("as_dataset") and item.get("dataset"):
                ds = Dataset.get_by_name(self._ws, item["dataset"], item["version"])
                ds.local_copy = Path(path)
                found[name] = ds
            else:
                found[name] = path
        return found

    @refuses(_set_status="a run ends Completed when it completes")
    def complete(self, _set_status: bool = True) -> bool:
        """Send every logged point and mark the run Completed (inside a job the agent does
        that from the exit code). True once stored; False when it could only be spooled
        (the bus unreachable; one warning says so): the run is completed when the spool is
        sent."""
        if self._agent_owned:
            self.flush()
            return self._ws._run(self._core.stored())
        return self._ws._run(self._core.complete())

    @refuses(_set_status="a run ends Failed when it fails")
    def fail(
        self, error_details: Any = None, error_code: str | None = None, _set_status: bool = True
    ) -> bool:
        """Like :meth:`complete`, for a run that failed."""
        if self._agent_owned:  # the job fails when the script exits non-zero
            self.flush()
            return self._ws._run(self._core.stored())
        return self._ws._run(self._core.fail(str(error_details or error_code or "")))

    @inherent(
        wait_post_processing="a run ends only once its outputs are stored, so every wait"
        " includes post-processing"
    )
    def wait_for_completion(
        self,
        show_output: bool = False,
        wait_post_processing: bool = False,
        raise_on_error: bool = True,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Wait until the run has ended; raises ``RunFailedError`` for a run that failed or was
        canceled (``raise_on_error``). With ``show_output`` the job's output is printed live
        (stdout) and, on stderr, where the run waits (its place in the queue, or that no agent
        serves its compute target and how to start one) and a last line with its id and
        status; on a terminal the wait and that line show without it too."""
        out = print_out if show_output else None
        wait = self._core.wait_for_completion(out=out, timeout=timeout, show=show_output or None)
        details = self._ws._run(wait)
        if raise_on_error and details["status"] != "Completed":
            raise RunFailedError(
                f"run {self.id} ended {details['status']}: {details.get('error') or ''}".strip()
            )
        details["runId"] = details["run_id"]
        return details

    def cancel(self) -> bool:
        return self._ws._run(self._core.cancel())

    def __enter__(self) -> Run:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        error = exit_error(kind, exc, tb)
        if error is None:
            self.complete()
        else:
            self.fail(error)

    @refuses(
        run_id="Cairn makes every run's id",
        outputs="a child run stores files with upload_file/upload_folder",
    )
    def child_run(
        self, name: str | None = None, run_id: str | None = None, outputs: str | None = None
    ) -> Run:
        core = self._ws._run(self._core.child(display_name=name))
        return Run(self.experiment, core.id, _core=core)

    @staticmethod
    @inherent(_rehydrate_runs="a Cairn Run holds only its id and fetches details when asked")
    def list(
        experiment: Experiment,
        type: str | None = None,  # Azure ML v1's names
        tags: str | dict[str, Any] | None = None,
        properties: str | dict[str, Any] | None = None,
        status: str | None = None,
        include_children: bool = False,
        _rehydrate_runs: bool = True,
        *,
        filter: str = "",
        order_by: Sequence[str] = (),
        page_size: int = 100,
    ) -> Iterator[Run]:
        """Azure ML v1's ``Run.list``: the runs of ``experiment``, newest first, fetched lazily.
        ``tags``/``properties`` a key or ``{key: value}``, ``status``, ``include_children``
        as there; ``type`` is refused (no run types). Either ``_rehydrate_runs`` gives the same
        runs: a Cairn ``Run`` holds only its id and fetches its details when asked."""
        expr = azure_filter(
            "Run.list",
            type=type,
            tags=tags,
            properties=properties,
            status=status,
            include_children=include_children,
            filter=filter,
        )
        ws = experiment.workspace
        for row in _rows(ws, experiment.name, expr, order_by, page_size):
            yield Run(experiment, row["run_id"])

    def get_children(
        self,
        recursive: bool = False,
        tags: str | dict[str, Any] | None = None,
        properties: str | dict[str, Any] | None = None,
        type: str | None = None,  # Azure ML v1's name
        status: str | None = None,
    ) -> builtins.list[Run]:
        """The child runs (their children too with ``recursive``), oldest first, filtered as
        Azure ML v1 does: ``tags``/``properties`` a key or ``{key: value}``, ``status``;
        ``type`` is refused (Cairn's runs carry no run type)."""
        found = self._core.get_children(recursive, tags, properties, type, status)
        return [Run(self.experiment, core.id, _core=core) for core in self._ws._run(found)]

    def tag(self, key: str, value: str | None = None) -> None:
        self.set_tags({key: "" if value is None else str(value)})

    def set_tags(self, tags: dict[str, Any]) -> None:
        self._ws._run(self._core.set_tags({k: str(v) for k, v in tags.items()}))

    def get_tags(self, *, as_of: datetime | int | None = None) -> dict[str, str]:
        return dict(self.get_details(as_of=as_of)["tags"])

    def add_properties(self, properties: dict[str, Any]) -> None:
        self._ws._run(self._core.add_properties({k: str(v) for k, v in properties.items()}))

    def get_properties(self, *, as_of: datetime | int | None = None) -> dict[str, str]:
        return dict(self.get_details(as_of=as_of)["properties"])

    # -- secrets --------------------------------------------------------------------------

    def get_secret(self, name: str) -> str:
        """Secret ``name``'s value from the workspace's keyvault; the read is recorded as this
        run's (a job's agent lets its job read as its own run only)."""
        return self._ws._run(self._core.get_secret(name))

    def get_secrets(self, secrets: builtins.list[str]) -> dict[str, str]:
        """Each of ``secrets`` and its value, every read recorded as this run's."""
        return self._ws._run(self._core.get_secrets(secrets))

    # -- reading --------------------------------------------------------------------------

    @refuses(
        recursive="get each child's metrics with run.get_children()",
        run_type="Cairn runs have no type",
    )
    @inherent(populate="every metric's values are fetched")
    def get_metrics(
        self,
        name: str | None = None,
        recursive: bool = False,
        run_type: str | None = None,
        populate: bool = False,
        *,
        as_of: datetime | int | None = None,
    ) -> dict[str, Any]:
        return self._ws._run(self._core.get_metrics(name, as_of=as_of))

    @property
    def parent(self) -> Run | None:
        """The run this one is a child of (a pipeline step's: the pipeline run), else None."""
        parent_id = self._ws._run(self._core.details()).get("parent_run_id")
        return Run(self.experiment, str(parent_id)) if parent_id else None

    def get_details(self, *, as_of: datetime | int | None = None) -> dict[str, Any]:
        """Azure's details; ``as_of`` (a time, or a stream sequence) as they were then."""
        details = self._ws._run(self._core.details(as_of=as_of))
        details["runId"] = details["run_id"]
        details["startTimeUtc"], details["endTimeUtc"] = details["start_time"], details["end_time"]
        return details

    def get_details_with_logs(self) -> dict[str, Any]:
        """:meth:`get_details` plus ``logFiles``: each log file's text by name (a job's
        ``user_logs/std_log.txt``; while it runs, what its log stream holds so far)."""
        details = self.get_details()
        details["logFiles"] = self._log_texts()
        return details

    def get_all_logs(self, destination: str | os.PathLike[str] | None = None) -> builtins.list[str]:
        """Download the run's log files into ``destination`` (default ``./logs``); returns
        their local paths."""
        out = Path(destination or "logs")
        paths = []
        for name, text in self._log_texts().items():
            target = local_target(out, name)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
            paths.append(str(target))
        return paths

    def _log_texts(self) -> dict[str, str]:
        names = [n for n in self.get_file_names() if n.startswith(_LOG_PREFIXES)]
        texts: dict[str, str] = {}
        with tempfile.TemporaryDirectory() as tmp:
            for name in names:
                target = Path(tmp) / "f"
                self._ws._run(self._core.download_file(name, target, False))
                texts[name] = target.read_text(errors="replace")
        if not texts and self._submitted():
            chunks: builtins.list[str] = []
            self._ws._run(self._core.print_logs(chunks.append))
            texts["user_logs/std_log.txt"] = "".join(chunks)
        return texts

    def _submitted(self) -> bool:
        try:
            self._ws._run(self._core.job())
        except NotFound:  # a run logged interactively has no job
            return False
        return True

    def get_environment(self) -> Environment:
        """The environment a submitted run ran in (as resolved when it was submitted)."""
        try:
            job = self._ws._run(self._core.job())
        except NotFound as exc:
            raise NotFound(f"run {self.id} was not submitted as a job: no environment") from exc
        env = job.get("environment")
        if env is None:
            raise NotFound(f"run {self.id} ran on its agent's own interpreter: no environment")
        return Environment._from(
            {"name": env["name"] or "inline", "version": env["version"], "spec": env["spec"]}
        )

    def get_status(self, *, as_of: datetime | int | None = None) -> str:
        return self._ws._run(self._core.get_status(as_of=as_of))

    # -- files ----------------------------------------------------------------------------

    @refuses(
        datastore_name="run files live in the artifact store; put files in a datastore with"
        " Datastore.upload"
    )
    def upload_file(
        self,
        name: str,
        path_or_stream: str | os.PathLike[str] | IO[bytes],
        datastore_name: str | None = None,
        show_progress: bool | None = None,
    ) -> None:
        """Store a file (or the rest of a binary stream) as run file ``name``."""
        validate_run_path(name)
        if isinstance(path_or_stream, (str, os.PathLike)):
            self._ws._run(self._core.upload_file(name, Path(path_or_stream), show_progress))
            return
        with tempfile.NamedTemporaryFile(prefix="cairn-upload-") as tmp:
            shutil.copyfileobj(path_or_stream, tmp)
            tmp.flush()
            self._ws._run(self._core.upload_file(name, Path(tmp.name), show_progress))

    def upload_files(
        self, names: builtins.list[str], paths: builtins.list[str], **kwargs: Any
    ) -> None:
        for name, path in zip(names, paths, strict=True):
            self.upload_file(name, path, **kwargs)

    def upload_folder(self, name: str, path: str, **kwargs: Any) -> None:
        root = Path(path)
        for file in sorted(p for p in root.rglob("*") if p.is_file()):
            self.upload_file(
                f"{name.rstrip('/')}/{file.relative_to(root).as_posix()}", file, **kwargs
            )

    @refuses(datasets="a model's datasets are the ones its run read (model.lineage())")
    def register_model(
        self,
        model_name: str,
        model_path: str,
        tags: dict[str, Any] | None = None,
        properties: dict[str, Any] | None = None,
        description: str | None = None,
        model_framework: str | None = None,
        model_framework_version: str | None = None,
        datasets: builtins.list[Any] | None = None,
    ) -> Model:
        """Register this run's file (or folder) ``model_path`` as the next model version."""
        registered = self._ws.core.models.register(
            model_name,
            model_path,
            run_id=self.id,
            tags=tags,
            properties=properties,
            description=description,
            framework=model_framework,
            framework_version=model_framework_version,
        )
        return Model(self._ws, model_name, _data=self._ws._run(registered))

    def get_file_names(self, *, as_of: datetime | int | None = None) -> builtins.list[str]:
        return [f["path"] for f in self._ws._run(self._core.files(as_of=as_of))]

    def download_file(
        self,
        name: str,
        output_file_path: str | None = None,
        show_progress: bool | None = None,
    ) -> str:
        target = Path(output_file_path or Path(name).name)
        if target.is_dir():
            target = target / Path(name).name
        self._ws._run(self._core.download_file(name, target, show_progress))
        return str(target)

    def download_files(
        self,
        prefix: str | None = None,
        output_directory: str | None = None,
        append_prefix: bool = True,
        show_progress: bool | None = None,
    ) -> builtins.list[str]:
        out = Path(output_directory or ".")
        files = self._ws._run(self._core.files(prefix or ""))
        targets = []  # every path from the log checked before anything is written
        for f in files:
            relative = f["path"] if append_prefix or not prefix else f["path"][len(prefix) :]
            targets.append((f["path"], local_target(out, relative.lstrip("/"))))
        for name, target in targets:
            self._ws._run(self._core.download_file(name, target, show_progress))
        return [str(target) for _, target in targets]

    def __repr__(self) -> str:
        return f"Run(id={self.id!r}, experiment={self.experiment.name!r})"


def _rows(
    ws: Workspace,
    experiment_name: str,
    filter: str,
    order_by: Sequence[str],
    page_size: int,
    as_of: datetime | int | None = None,
) -> Iterator[dict[str, Any]]:
    """The runs query's rows, a page at a time, following its cursors to the end."""
    cursor: str | None = None
    while True:
        page = ws._run(
            ws.core.runs_page(
                experiment_name,
                filter=filter,
                order_by=order_by,
                limit=page_size,
                cursor=cursor,
                as_of=as_of,
            )
        )
        yield from page["runs"]
        cursor = page["next_cursor"]
        if cursor is None:
            return


async def _bind(ws: AsyncWorkspace, run_id: str, experiment_name: str) -> AsyncRun:
    return ws.run(run_id, experiment_name)  # AsyncRun needs the SDK loop to be running


class HyperDriveRun(Run):
    """A sweep's parent run (``experiment.submit(HyperDriveConfig(...))``): its children are
    the trials, each a job run with the hyperparameters as ``--name value`` arguments."""

    def _sweep(self) -> dict[str, Any]:
        return self._ws._run(self._core.sweep())

    @inherent(include_resume_from_runs="a Cairn sweep is never resumed from another")
    def get_best_run_by_primary_metric(
        self,
        include_failed: bool = True,
        include_canceled: bool = True,
        include_resume_from_runs: bool = True,
    ) -> Run | None:
        """The trial with the best primary metric (its best value logged), or None."""
        sweep = self._sweep()
        keep = {"Failed": include_failed, "Canceled": include_canceled}
        skip = {status for status, kept in keep.items() if not kept}
        trials = [t for t in sweep["trials"] if t["status"] not in skip]
        ranked = best_first(trials, sweep["spec"]["objective"]["goal"])
        return Run(self.experiment, ranked[0]["run_id"]) if ranked else None

    def get_children_sorted_by_primary_metric(
        self, top: int = 0, reverse: bool = False, discard_no_metric: bool = False
    ) -> builtins.list[dict[str, Any]]:
        """The trials best first (``reverse``: worst first), those without the metric last
        (or left out with ``discard_no_metric``), the first ``top`` (0: all), each
        ``{run_id, hyperparameters, best_primary_metric, status}`` as in Azure ML."""
        sweep = self._sweep()
        ranked = best_first(sweep["trials"], sweep["spec"]["objective"]["goal"])
        if reverse:
            ranked.reverse()
        if not discard_no_metric:
            ranked += [t for t in sweep["trials"] if t.get("best") is None]
        rows = [
            {
                "run_id": t["run_id"],
                "hyperparameters": json.dumps(t["parameters"]),
                "best_primary_metric": t["best"],
                "status": t["status"],
            }
            for t in ranked
        ]
        return rows[:top] if top > 0 else rows

    def get_hyperparameters(self) -> dict[str, str]:
        """Each trial's run id and its hyperparameters (a JSON object, as Azure ML gives)."""
        return {t["run_id"]: json.dumps(t["parameters"]) for t in self._sweep()["trials"]}

    @refuses(
        recursive="a sweep's metrics are its trials'; each trial's are under its run id",
        run_type="Cairn runs have no type",
    )
    @inherent(populate="every metric's values are fetched")
    def get_metrics(
        self,
        name: str | None = None,
        recursive: bool = False,
        run_type: str | None = None,
        populate: bool = False,
        *,
        as_of: datetime | int | None = None,
    ) -> dict[str, Any]:
        """Each trial's run id and its metrics (``name``: that one only), as in Azure ML;
        ``as_of``: as they were then."""
        return {
            t["run_id"]: Run(self.experiment, t["run_id"]).get_metrics(name, as_of=as_of)
            for t in self._sweep()["trials"]
        }

    def cancel(self) -> bool:
        """Stop the sweep: no more proposals, its running trials canceled, then it ends."""
        self._ws._run(self._core.cancel_sweep("canceled"))
        return True

    @inherent(wait_post_processing="a sweep ends once its trials have ended")
    def wait_for_completion(
        self,
        show_output: bool = False,
        wait_post_processing: bool = False,
        raise_on_error: bool = True,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Wait until the sweep has ended (its parent run too); with ``show_output`` print each
        trial as it ends. Raises ``RunFailedError`` when it did not complete
        (``raise_on_error``)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        shown: set[int] = set()
        while True:
            sweep = self._sweep()
            if show_output:
                self._show_trials(sweep, shown)
            if sweep["status"] != "Running":
                break
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"sweep {self.id} is still running")
            time.sleep(0.25)
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        details = super().wait_for_completion(raise_on_error=False, timeout=left)
        if raise_on_error and details["status"] != "Completed":
            raise RunFailedError(f"sweep {self.id} ended {details['status']}: {sweep['error']}")
        return details

    @staticmethod
    def _show_trials(sweep: dict[str, Any], shown: set[int]) -> None:
        for t in sweep["trials"]:
            if t["index"] in shown or t["status"] not in ("Completed", "Failed", "Canceled"):
                continue
            shown.add(t["index"])
            stopped = f" (stopped: {t['stopped']['reason']})" if t["stopped"] else ""
            print_out(
                f"trial {t['index']} {t['run_id']} {t['status']}{stopped}"
                f" {json.dumps(t['parameters'])} best={t['best']}\n"
            )


class AutoMLRun(HyperDriveRun):
    """An automated ML experiment's parent run (``experiment.submit(AutoMLConfig(...))``): a
    sweep whose trials are scikit-learn pipelines, each saved as ``outputs/model.pkl``."""

    @refuses(
        metric="the best trial is the one with the best primary metric",
        iteration="the best trial is the one with the best primary metric",
        return_onnx_model="models are pickled scikit-learn pipelines (no ONNX)",
    )
    def get_output(
        self,
        iteration: int | None = None,
        metric: str | None = None,
        return_onnx_model: bool = False,
    ) -> tuple[Run, Any]:
        """The best trial (by the primary metric) and its fitted model, downloaded and
        unpickled (it ``predict``s on new rows: a pandas DataFrame, dicts or rows of values);
        unpickling needs scikit-learn here. A sweep without a scored trial is a
        ``NotFound``."""
        import pickle

        best = self.get_best_run_by_primary_metric(include_failed=False, include_canceled=False)
        if best is None:
            raise NotFound(f"automated ML run {self.id} has no trial that logged its metric")
        with tempfile.TemporaryDirectory(prefix="cairn-automl-") as tmp:
            path = best.download_file("outputs/model.pkl", str(Path(tmp) / "model.pkl"))
            with open(path, "rb") as fh:
                model = pickle.load(fh)  # the workspace's own trial wrote it
        return best, model
