"""Environments as written: the curated ones, what Azure ML's names for its curated ones
map to, references to an environment (``azureml:name@latest``, ``azureml:name:3``,
``azureml://registries/azureml/environments/<name>/labels/latest``), and the Python a spec
pins. Pure: which interpreters exist is the caller's to find out."""

from __future__ import annotations

import re

from cairn.errors import InvalidInput, NotFound
from cairn.proto.assets import CURATED_PREFIX, EnvironmentSpec

__all__ = [
    "CURATED",
    "closest_python",
    "curated_name",
    "parse_reference",
    "python_pin",
]

#: curated environments every workspace has (users cannot register the prefix); those that
#: pin no Python run on the agent's
CURATED: dict[str, EnvironmentSpec] = {
    "cairn-minimal": EnvironmentSpec(),
    "cairn-python-3.11": EnvironmentSpec(python="3.11"),
    "cairn-sklearn": EnvironmentSpec(pip=["scikit-learn", "pandas", "numpy"]),
    "cairn-pytorch": EnvironmentSpec(pip=["torch", "numpy"]),
    "cairn-tensorflow": EnvironmentSpec(pip=["tensorflow", "numpy"]),
    "cairn-lightgbm": EnvironmentSpec(pip=["lightgbm", "scikit-learn", "pandas", "numpy"]),
}

#: the purpose named first in an Azure curated environment's name (``AzureML-<purpose>-...``,
#: ``AzureML-ACPT-pytorch-...``, or without the prefix in the ``azureml`` registry) and the
#: curated environment that serves it
_AZURE_PURPOSES = {
    "sklearn": "cairn-sklearn",
    "scikit-learn": "cairn-sklearn",
    "pytorch": "cairn-pytorch",
    "tensorflow": "cairn-tensorflow",
    "lightgbm": "cairn-lightgbm",
    "minimal": "cairn-minimal",
}
_AZURE_NAME = re.compile(r"^(?:azureml-)?(?:acpt-)?([a-z]+(?:-learn)?)(?:[-_.].*)?$", re.I)
_REGISTRY_URI = re.compile(
    r"^azureml://registries/([^/]+)/environments/([^/]+)(?:/(labels|versions)/([^/]+))?$"
)
_LATEST = ("", "latest")


def _no_such(name: str) -> NotFound:
    azure = ", ".join(f"AzureML-{p}-*" for p in _AZURE_PURPOSES if p != "scikit-learn")
    return NotFound(
        f"no such curated environment {name!r}; these exist: {', '.join(sorted(CURATED))}"
        f" (Azure ML's {azure} map to them)"
    )


def curated_name(name: str, *, registry: bool = False) -> str:
    """The name ``name`` stands for: a Cairn curated environment for Azure ML's curated names
    (``AzureML-...``, and every name of the ``azureml`` registry when ``registry``), ``name``
    itself otherwise. A curated name that names nothing is a ``NotFound`` listing those that
    exist."""
    if name.startswith(CURATED_PREFIX):
        if name not in CURATED:
            raise _no_such(name)
        return name
    if not (registry or name.lower().startswith("azureml-")):
        return name
    m = _AZURE_NAME.match(name)
    found = _AZURE_PURPOSES.get(m.group(1).lower()) if m else None
    if found is None:
        raise _no_such(name)
    return found


def parse_reference(ref: str) -> tuple[str, int | None]:
    """An environment reference as Azure ML's job files and SDKs write it, as a name (a
    curated one for Azure's curated names) and a version (None: the latest): ``name``,
    ``name@latest``, ``name:3``, each with ``azureml:`` or ``cairn:`` before it, and
    ``azureml://registries/azureml/environments/<name>`` with ``/labels/latest`` or
    ``/versions/<n>``. An Azure curated name's version numbers Azure's builds of it; its Cairn
    counterpart has one version, which the run records."""
    text = ref.strip()
    if m := _REGISTRY_URI.match(text):
        registry, name, kind, value = m.groups()
        if registry != "azureml":
            raise InvalidInput(
                f"environment {ref!r}: only the azureml registry's curated environments are"
                " known here; register the environment in the workspace instead"
            )
        if kind == "labels" and value != "latest":
            raise InvalidInput(f"environment {ref!r}: the only label is 'latest'")
        if kind == "versions" and not value.isdigit():
            raise InvalidInput(f"environment {ref!r}: a version is a number")
        return curated_name(name, registry=True), None
    if text.startswith(("azureml://", "cairn://")):
        raise InvalidInput(
            f"environment {ref!r}: use azureml:<name>[@latest|:<version>] or"
            " azureml://registries/azureml/environments/<name>/labels/latest"
        )
    bare = text.removeprefix("azureml:").removeprefix("cairn:")
    name, _, version = bare.partition("@") if "@" in bare else bare.partition(":")
    if not name:
        raise InvalidInput(f"environment {ref!r} names no environment")
    if version not in _LATEST and not version.isdigit():
        raise InvalidInput(f"environment {ref!r}: a version is a number or 'latest'")
    curated = curated_name(name)
    if curated != name:  # Azure's version of its curated environment: see the docstring
        return curated, None
    return name, None if version in _LATEST else int(version)


_PIN = re.compile(r"^(?:==?)?\s*(\d+)\.(\d+)(?:\.\d+|\.\*)?\s*$")


def python_pin(spec: EnvironmentSpec) -> tuple[int, int] | None:
    """The Python (major, minor) ``spec`` asks for: its ``python``, else a ``python=X.Y``
    among its conda dependencies; None: any (the agent's). A pin that is not ``X.Y``,
    ``X.Y.Z`` or ``X.Y.*`` is an ``InvalidInput``."""
    pin = spec.python
    if pin is None:
        for dep in spec.conda:
            name = re.split(r"[=<>!~ ]", dep.strip(), maxsplit=1)[0]
            if name.lower() == "python":
                pin = dep.strip()[len(name) :]
                break
    if pin is None or not pin.strip():
        return None
    m = _PIN.match(pin.strip())
    if m is None:
        raise InvalidInput(f"python {pin!r}: pin a version as X.Y (e.g. python=3.11)")
    return int(m.group(1)), int(m.group(2))


def closest_python(wanted: tuple[int, int], available: list[tuple[int, int]]) -> tuple[int, int]:
    """The version among ``available`` (not empty) nearest to ``wanted``: the nearest major
    first; within it the nearest minor (the newer of two as near), or, from another major,
    the minor at the end that faces ``wanted`` (2.7 -> the oldest 3.x, 4.0 -> the newest)."""

    def distance(v: tuple[int, int]) -> tuple[int, int, int]:
        if v[0] == wanted[0]:
            return 0, abs(v[1] - wanted[1]), -v[1]
        return abs(v[0] - wanted[0]), 0, v[1] if v[0] > wanted[0] else -v[1]

    return min(available, key=distance)
