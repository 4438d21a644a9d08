"""Pipeline runs and published pipelines with Azure ML v1's names: ``PipelineRun`` (what
``experiment.submit(pipeline)`` returns) and its ``StepRun``s, ``PublishedPipeline`` and
``PipelineEndpoint`` (``pipeline.publish(...)``, run on request, over HTTP or by a schedule).
"""

from __future__ import annotations

import builtins
import time
from typing import Any

from cairn.errors import AlreadyExists, InvalidInput, NotFound
from cairn.proto.pipelines import RunPublishedPipeline, SetPipelineEndpoint
from cairn.sdk._async_pipelines import pipeline_endpoint, published_pipeline, published_pipelines
from cairn.sdk._jobs import RunFailedError, print_out
from cairn.sdk._refusals import inherent, refuses
from cairn.sdk._session import new_id
from cairn.sdk._sync import Experiment, Run, Workspace

__all__ = ["PipelineEndpoint", "PipelineRun", "PublishedPipeline", "StepRun", "parameter_text"]

_TERMINAL = ("Completed", "Failed", "Canceled")


class StepRun(Run):
    """A step's run inside a pipeline run (``get_steps``, ``find_step_run``)."""

    def __init__(self, experiment: Experiment, run_id: str, step: dict[str, Any]) -> None:
        super().__init__(experiment, run_id)
        self.name: str = step["step"]
        #: the earlier run it stands for when the step was reused, else None
        self.reused_run_id: str | None = step.get("reused_run_id") or None


class PipelineRun(Run):
    """A pipeline's run (``experiment.submit(pipeline)``): its steps are child runs."""

    def _pipeline(self) -> dict[str, Any]:
        return self._ws._run(self._core.pipeline())

    def get_steps(self) -> builtins.list[StepRun]:
        """The steps that started (or were reused), in the pipeline's order."""
        return [
            StepRun(self.experiment, s["run_id"], s)
            for s in self._pipeline()["steps"]
            if s.get("run_id")
        ]

    def find_step_run(self, name: str) -> builtins.list[StepRun]:
        """The runs of step ``name`` (one, or none before it started)."""
        return [s for s in self.get_steps() if s.name == name]

    @inherent(wait_post_processing="a pipeline ends once its steps have, outputs stored")
    def wait_for_completion(
        self,
        show_output: bool = True,
        wait_post_processing: bool = False,
        raise_on_error: bool = True,
        timeout: float | None = None,
        timeout_seconds: float | None = None,
    ) -> dict[str, Any]:
        """Wait until the pipeline has ended; with ``show_output`` print each step as its
        state changes. Raises ``RunFailedError`` when it did not complete
        (``raise_on_error``), ``TimeoutError`` after ``timeout_seconds`` (Azure ML's name)
        or ``timeout``."""
        limit = timeout_seconds if timeout_seconds is not None else timeout
        deadline = None if limit is None else time.monotonic() + limit
        shown: dict[str, str] = {}
        while True:
            found = self._pipeline()
            if show_output:
                for s in found["steps"]:
                    state = s["status"] + (" (reused)" if s.get("reused_run_id") else "")
                    if shown.get(s["step"]) != state:
                        shown[s["step"]] = state
                        print_out(f"step {s['step']} {state} {s.get('run_id') or ''}\n")
            if found["status"] in _TERMINAL:
                break
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"pipeline run {self.id} is still running")
            time.sleep(0.25)
        if show_output:
            print_out(f"pipeline run {self.id} {found['status']}\n")
        if raise_on_error and found["status"] != "Completed":
            raise RunFailedError(
                f"pipeline run {self.id} ended {found['status']}: {found.get('error') or ''}"
            )
        details = self.get_details()
        details["status"] = found["status"]
        return details


def parameter_text(value: Any) -> str:
    """A parameter's value as a published pipeline's run takes it (``true``, not ``True``)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def _run_published(
    workspace: Workspace,
    experiment_name: str,
    parameters: dict[str, Any] | None,
    *,
    pipeline_id: str | None = None,
    endpoint: str | None = None,
) -> PipelineRun:
    async def send() -> str:
        await workspace.core.experiment_id(experiment_name)
        command = RunPublishedPipeline(
            command_id=new_id(),
            run_id=new_id(),
            experiment_name=experiment_name,
            pipeline_id=pipeline_id,
            endpoint=endpoint,
            parameters={k: parameter_text(v) for k, v in (parameters or {}).items()},
        )
        await workspace.core.send(command)
        return command.run_id

    run_id = workspace._run(send())
    return PipelineRun(Experiment(workspace, experiment_name), run_id)


class PublishedPipeline:
    """A stored pipeline (``pipeline.publish(...)``): ``id``, ``name``, ``version``,
    ``description``, ``parameters`` (their defaults) and ``endpoint``, the gateway's address
    that runs it (``POST`` with a bearer token)."""

    def __init__(self, workspace: Workspace, data: dict[str, Any]) -> None:
        self.workspace = workspace
        self.id: str = data["id"]
        self.name: str = data["name"]
        self.version: str | None = data.get("version")
        self.description: str = data.get("description") or ""
        self.parameters: dict[str, str] = dict(data.get("parameters") or {})
        settings = workspace.settings
        self.endpoint = (
            f"http://{settings.gateway_host}:{settings.gateway_port}"
            f"/api/w/{workspace.name}/pipelines/{self.id}/runs"
        )

    @staticmethod
    def get(workspace: Workspace, id: str) -> PublishedPipeline:
        return PublishedPipeline(workspace, workspace._run(published_pipeline(workspace.core, id)))

    @staticmethod
    @inherent(active_only="a published pipeline is never disabled: every one is active")
    def list(workspace: Workspace, active_only: bool = True) -> builtins.list[PublishedPipeline]:
        """The workspace's published pipelines, newest first."""
        rows = workspace._run(published_pipelines(workspace.core))
        return [PublishedPipeline(workspace, row) for row in rows]

    def submit(
        self,
        workspace: Workspace,
        experiment_name: str,
        pipeline_parameters: dict[str, Any] | None = None,
    ) -> PipelineRun:
        """A run of it in ``experiment_name`` (its parameters' values, defaults for the rest)."""
        return _run_published(workspace, experiment_name, pipeline_parameters, pipeline_id=self.id)

    def __repr__(self) -> str:
        return f"PublishedPipeline(id={self.id!r}, name={self.name!r}, version={self.version!r})"


class PipelineEndpoint:
    """A name that runs one published pipeline, its default (``add_default`` moves it); its
    HTTP address is ``endpoint``."""

    def __init__(self, workspace: Workspace, data: dict[str, Any]) -> None:
        self.workspace = workspace
        self.name: str = data["name"]
        self.description: str = data.get("description") or ""
        self.default_version: str = data["default_pipeline_id"]
        self.pipelines: builtins.list[str] = list(data["pipelines"])
        settings = workspace.settings
        self.endpoint = (
            f"http://{settings.gateway_host}:{settings.gateway_port}"
            f"/api/w/{workspace.name}/pipeline-endpoints/{self.name}/runs"
        )

    @staticmethod
    def publish(
        workspace: Workspace,
        name: str,
        description: str,
        pipeline: Any,
    ) -> PipelineEndpoint:
        """Endpoint ``name`` over ``pipeline`` (published first when it is a ``Pipeline``),
        its default; refused when the name exists (``add_default`` adds to one)."""
        published = _published(pipeline, name)
        try:
            PipelineEndpoint.get(workspace, name=name)
        except NotFound:
            pass
        else:
            raise AlreadyExists(f"pipeline endpoint {name!r} exists; add_default adds to it")
        workspace._run(
            workspace.core.send(
                SetPipelineEndpoint(
                    command_id=new_id(),
                    name=name,
                    pipeline_id=published.id,
                    description=description,
                )
            )
        )
        return PipelineEndpoint.get(workspace, name=name)

    @staticmethod
    @refuses(id="an endpoint is found by its name")
    def get(
        workspace: Workspace, id: str | None = None, name: str | None = None
    ) -> PipelineEndpoint:
        if name is None:
            raise InvalidInput("PipelineEndpoint.get: give name=")
        return PipelineEndpoint(workspace, workspace._run(pipeline_endpoint(workspace.core, name)))

    @refuses(
        pipeline_version="an endpoint runs its default pipeline; run another with its own"
        " PublishedPipeline.submit"
    )
    def submit(
        self,
        experiment_name: str,
        pipeline_parameters: dict[str, Any] | None = None,
        pipeline_version: str | None = None,
    ) -> PipelineRun:
        """A run of the endpoint's default pipeline in ``experiment_name``."""
        return _run_published(
            self.workspace, experiment_name, pipeline_parameters, endpoint=self.name
        )

    def add_default(self, pipeline: Any) -> None:
        """Add ``pipeline`` (published first when it is a ``Pipeline``) and make it the one
        the endpoint runs."""
        published = _published(pipeline, self.name)
        self.workspace._run(
            self.workspace.core.send(
                SetPipelineEndpoint(command_id=new_id(), name=self.name, pipeline_id=published.id)
            )
        )
        self.default_version = published.id
        if published.id not in self.pipelines:
            self.pipelines.append(published.id)

    def __repr__(self) -> str:
        return f"PipelineEndpoint(name={self.name!r}, default={self.default_version!r})"


def _published(pipeline: Any, name: str) -> PublishedPipeline:
    """``pipeline`` itself, or a ``Pipeline`` (cairn.sdk._pipelines, above this module)
    published under ``name``."""
    if isinstance(pipeline, PublishedPipeline):
        return pipeline
    publish = getattr(pipeline, "publish", None)
    if publish is None:
        raise InvalidInput(f"an endpoint runs a PublishedPipeline, not {type(pipeline).__name__}")
    published: PublishedPipeline = publish(name=name)
    return published
