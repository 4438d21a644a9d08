"""``RunConfiguration`` and ``DockerConfiguration`` with the Azure ML v1 names, and the
``DEFAULT_CPU_IMAGE``/``DEFAULT_GPU_IMAGE`` constants.

A ``RunConfiguration`` carries a job's ``environment``, ``target`` and ``docker`` settings to a
``ScriptRunConfig(run_config=...)``; setting one of Azure's other attributes on it (``mpi``,
``spark``, ``data_references``...) raises ``Unsupported`` naming it, so none is dropped.
"""

from __future__ import annotations

from typing import Any

from cairn.errors import Unsupported
from cairn.sdk._assets import Environment
from cairn.sdk._refusals import refuse, refuses

__all__ = ["DEFAULT_CPU_IMAGE", "DEFAULT_GPU_IMAGE", "DockerConfiguration", "RunConfiguration"]

#: the image a Docker agent runs a job in when its environment names none (the agent's own
#: default, ``cairn-base:bookworm``)
DEFAULT_CPU_IMAGE = "cairn-base:bookworm"
#: the same image: a job gets GPUs by asking for them (``gpus=``, ``Estimator(use_gpu=True)``),
#: and a Docker agent passes them into whatever image the job runs in
DEFAULT_GPU_IMAGE = DEFAULT_CPU_IMAGE

_CONFINED = (
    "every job runs confined by its agent: in a container when the agent runs with"
    " `cairn agent --backend docker`, else as a confined process"
)


class DockerConfiguration:
    """Azure's request to run a job in Docker. Cairn always isolates a job (``use_docker=True``
    is what every agent does, in a container or a confined process, as its ``--backend``
    says); ``use_docker=False`` is refused, as are Docker options an agent does not take from
    a job."""

    @refuses(
        arguments=f"a job cannot pass options to its container; {_CONFINED}",
        shared_volumes="a job sees only its own folder and inputs; shared volumes are refused",
        shm_size="a job cannot size its container's shared memory",
    )
    def __init__(
        self,
        use_docker: bool | None = None,
        arguments: list[str] | None = None,
        shared_volumes: bool = True,
        shm_size: str | None = None,
    ) -> None:
        if use_docker is False:
            raise refuse("DockerConfiguration", "use_docker", _CONFINED)
        self.use_docker = True


#: RunConfiguration attributes Cairn honours (ScriptRunConfig reads them)
_HONOURED = frozenset(
    {"environment", "target", "docker", "environment_variables", "max_run_duration_seconds"}
)


class RunConfiguration:
    """``environment``, ``target`` and ``docker`` for a ``ScriptRunConfig(run_config=...)``
    (``script``, ``arguments`` and ``command`` go to the ``ScriptRunConfig`` itself)."""

    environment: Any
    target: Any
    docker: DockerConfiguration | None
    environment_variables: dict[str, str]
    max_run_duration_seconds: float | None

    @refuses(
        framework="Cairn runs Python jobs: framework= is 'Python' only",
        communicator="a Cairn job is one process (use gpus= for several GPUs): no communicator",
    )
    def __init__(
        self,
        conda_dependencies: Any = None,
        framework: str = "Python",
        communicator: str = "None",
    ) -> None:
        self.environment = None
        if conda_dependencies is not None:
            env = Environment("run-configuration")
            env.python.conda_dependencies = conda_dependencies
            self.environment = env
        self.target = "local"
        self.docker = None
        self.environment_variables = {}
        self.max_run_duration_seconds = None

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in _HONOURED:
            raise Unsupported(
                f"RunConfiguration.{name} is not supported; Cairn takes a job's environment,"
                " target, docker, environment_variables and max_run_duration_seconds from it"
                " (data and arguments go to ScriptRunConfig)"
            )
        object.__setattr__(self, name, value)

    def __repr__(self) -> str:
        return f"RunConfiguration(target={self.target!r}, environment={self.environment!r})"
