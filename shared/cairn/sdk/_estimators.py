"""``Estimator`` and its framework shapes ``SKLearn``, ``PyTorch``, ``TensorFlow``: the older
Azure ML way to write a ``ScriptRunConfig``.

``script_params`` become arguments (``{"--reg_rate": 0.01}`` is ``--reg_rate 0.01``; a value
of ``""`` or ``True`` passes the flag alone). ``conda_packages``, ``pip_packages``,
``conda_dependencies_file``, ``pip_requirements_file``, ``custom_docker_image`` and
``user_managed`` build the job's environment (or ``environment_definition`` is given, not
both); the framework estimators add their framework's package (pinned to
``framework_version`` when given). ``inputs`` bind datasets and datastore paths to the job
without naming them in its arguments. ``use_gpu`` asks for one GPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cairn.errors import InvalidInput
from cairn.sdk._assets import Environment
from cairn.sdk._jobs import Binding, ScriptRunConfig
from cairn.sdk._refusals import refuse, refuses
from cairn.sdk._runconfig import _CONFINED

__all__ = ["Estimator", "PyTorch", "SKLearn", "TensorFlow"]

_ONE_PROCESS = "a Cairn job is one process on one agent (gpus= gives it several GPUs)"
_NO_MACHINES = "the machines are the compute target's agents; start them with `cairn agent`"


def _environment(
    definition: Any,
    *,
    conda_packages: list[str] | None,
    pip_packages: list[str] | None,
    conda_dependencies_file: str | None,
    pip_requirements_file: str | None,
    custom_docker_image: str | None,
    user_managed: bool,
    framework_package: str | None,
) -> Any:
    """The job's environment from the estimator's package arguments, or ``definition``."""
    given = {
        "conda_packages": conda_packages,
        "pip_packages": pip_packages,
        "conda_dependencies_file": conda_dependencies_file,
        "pip_requirements_file": pip_requirements_file,
        "custom_docker_image": custom_docker_image,
        "user_managed": user_managed or None,
    }
    named = sorted(k for k, v in given.items() if v)
    if definition is not None:
        if named:
            raise InvalidInput(
                f"Estimator: environment_definition= excludes {', '.join(named)}; put them in"
                " the Environment"
            )
        return definition
    if conda_dependencies_file and pip_requirements_file:
        raise InvalidInput(
            "Estimator: give conda_dependencies_file= or pip_requirements_file=, not both"
        )
    if user_managed and (conda_packages or pip_packages or conda_dependencies_file):
        raise InvalidInput(
            "Estimator: user_managed=True runs on the agent's own interpreter and installs"
            " nothing; it excludes conda_packages=, pip_packages= and conda_dependencies_file="
        )
    if not named and framework_package is None:
        return None
    if conda_dependencies_file:
        env = Environment.from_conda_specification("estimator", conda_dependencies_file)
    elif pip_requirements_file:
        env = Environment.from_pip_requirements("estimator", pip_requirements_file)
    else:
        env = Environment("estimator")
    deps = env.python.conda_dependencies
    deps.conda_packages += list(conda_packages or [])
    deps.pip_packages += list(pip_packages or [])
    if framework_package and not user_managed:
        deps.pip_packages.append(framework_package)
    env.docker.base_image = custom_docker_image
    env.python.user_managed_dependencies = user_managed
    return env


def _input_binding(item: Any) -> Binding:
    """A dataset's named input or a datastore path, bound as a job input."""
    if isinstance(item, Binding):
        return item
    as_mount = getattr(item, "as_mount", None)
    if callable(as_mount):  # a DataReference: Azure ML mounts it
        bound = as_mount()
        if isinstance(bound, Binding):
            return bound
    raise InvalidInput(
        f"Estimator: inputs= takes dataset.as_named_input(name) (or its .as_download()/"
        f".as_mount()) and datastore paths, not {item!r:.100}"
    )


class Estimator(ScriptRunConfig):
    """``entry_script`` with ``script_params`` in an environment the package arguments
    describe; see the module's docstring."""

    _FRAMEWORK: str | None = None

    @refuses(
        vm_size=_NO_MACHINES,
        vm_priority=_NO_MACHINES,
        node_count=_ONE_PROCESS,
        process_count_per_node=_ONE_PROCESS,
        distributed_training=_ONE_PROCESS,
        shm_size="a job cannot size its container's shared memory",
        resume_from="a job starts from its snapshot; pass a checkpoint as an input instead",
    )
    def __init__(
        self,
        source_directory: str | Path = ".",
        *,
        compute_target: Any = None,
        vm_size: str | None = None,
        vm_priority: str | None = None,
        entry_script: str = "train.py",
        script_params: dict[str, Any] | None = None,
        node_count: int = 1,
        process_count_per_node: int = 1,
        distributed_training: Any = None,
        use_gpu: bool = False,
        use_docker: bool = True,
        custom_docker_image: str | None = None,
        user_managed: bool = False,
        conda_packages: list[str] | None = None,
        pip_packages: list[str] | None = None,
        conda_dependencies_file: str | None = None,
        pip_requirements_file: str | None = None,
        environment_variables: dict[str, str] | None = None,
        environment_definition: Any = None,
        inputs: list[Any] | None = None,
        shm_size: str | None = None,
        resume_from: Any = None,
        max_run_duration_seconds: float | None = None,
        framework_version: str | None = None,
        max_attempts: int = 3,
        priority: int = 0,
        secrets: list[str] | None = None,
    ) -> None:
        if not use_docker:
            raise refuse(type(self).__name__, "use_docker", _CONFINED)
        if framework_version is not None and self._FRAMEWORK is None:
            raise InvalidInput(
                "Estimator: framework_version= belongs to SKLearn, PyTorch and TensorFlow"
            )
        package = self._FRAMEWORK
        if package is not None and framework_version:
            package = f"{package}=={framework_version}"
        env = _environment(
            environment_definition,
            conda_packages=conda_packages,
            pip_packages=pip_packages,
            conda_dependencies_file=conda_dependencies_file,
            pip_requirements_file=pip_requirements_file,
            custom_docker_image=custom_docker_image,
            user_managed=user_managed,
            framework_package=package,
        )
        arguments: list[Any] = []
        for key, value in (script_params or {}).items():
            arguments.append(key)
            if value not in ("", True, None):
                arguments.append(value)
        super().__init__(
            source_directory,
            entry_script,
            arguments,
            compute_target=compute_target,
            environment=env,
            max_run_duration_seconds=max_run_duration_seconds,
            max_attempts=max_attempts,
            priority=priority,
            gpus=1 if use_gpu else 0,
            environment_variables=environment_variables,
            secrets=secrets,
        )
        bound = [b.job_binding() for b in self.bindings]
        for item in inputs or []:  # one also in script_params is bound once
            binding = _input_binding(item)
            if binding.job_binding() not in bound:
                self.bindings.append(binding)
                bound.append(binding.job_binding())


class SKLearn(Estimator):
    """An ``Estimator`` whose environment has scikit-learn."""

    _FRAMEWORK = "scikit-learn"


class PyTorch(Estimator):
    """An ``Estimator`` whose environment has PyTorch (``torch``)."""

    _FRAMEWORK = "torch"


class TensorFlow(Estimator):
    """An ``Estimator`` whose environment has TensorFlow."""

    _FRAMEWORK = "tensorflow"
