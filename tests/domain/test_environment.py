"""Environment references as Azure ML writes them, curated names, Python pins."""

from __future__ import annotations

import pytest

from cairn.domain.environment import (
    CURATED,
    closest_python,
    curated_name,
    parse_reference,
    python_pin,
)
from cairn.errors import InvalidInput, NotFound
from cairn.proto.assets import EnvironmentSpec


@pytest.mark.parametrize(
    ("ref", "resolved"),
    [
        ("azureml:AzureML-sklearn-1.0-ubuntu20.04-py38-cpu@latest", ("cairn-sklearn", None)),
        ("azureml:AzureML-sklearn-1.0-ubuntu20.04-py38-cpu:33", ("cairn-sklearn", None)),
        ("AzureML-PyTorch-1.6-CPU", ("cairn-pytorch", None)),
        ("azureml:AzureML-ACPT-pytorch-1.13-py38-cuda11.7-gpu:4", ("cairn-pytorch", None)),
        ("azureml:AzureML-TensorFlow-2.3-GPU", ("cairn-tensorflow", None)),
        ("azureml:AzureML-lightgbm-3.2-ubuntu18.04-py37-cpu", ("cairn-lightgbm", None)),
        ("azureml:AzureML-Minimal", ("cairn-minimal", None)),
        ("azureml:AzureML-scikit-learn-0.20.3", ("cairn-sklearn", None)),
        (
            "azureml://registries/azureml/environments/sklearn-1.5/labels/latest",
            ("cairn-sklearn", None),
        ),
        (
            "azureml://registries/azureml/environments/AzureML-sklearn-1.0-ubuntu20.04-py38-cpu"
            "/versions/7",
            ("cairn-sklearn", None),
        ),
        ("azureml://registries/azureml/environments/lightgbm-3.3", ("cairn-lightgbm", None)),
        ("my-env", ("my-env", None)),
        ("azureml:my-env@latest", ("my-env", None)),
        ("azureml:my-env:3", ("my-env", 3)),
        ("cairn:my-env@2", ("my-env", 2)),
        ("cairn-sklearn", ("cairn-sklearn", None)),
    ],
)
def test_references_resolve_to_a_name_and_version(
    ref: str, resolved: tuple[str, int | None]
) -> None:
    assert parse_reference(ref) == resolved
    assert resolved[0] in CURATED or not resolved[0].startswith("cairn-")


@pytest.mark.parametrize(
    "ref",
    [
        "azureml:AzureML-made-up-env-ubuntu20.04@latest",
        "azureml://registries/azureml/environments/made-up-1.0/labels/latest",
        "cairn-made-up",
    ],
)
def test_an_unknown_curated_name_lists_those_that_exist(ref: str) -> None:
    with pytest.raises(NotFound, match="no such curated environment") as info:
        parse_reference(ref)
    for name in CURATED:
        assert name in info.value.message


@pytest.mark.parametrize(
    ("ref", "says"),
    [
        ("azureml://registries/someone/environments/x/labels/latest", "azureml registry"),
        ("azureml://registries/azureml/environments/sklearn-1.5/labels/stable", "'latest'"),
        ("azureml://registries/azureml/environments/sklearn-1.5/versions/x", "a number"),
        ("azureml://datastores/x/paths/y", "azureml:<name>"),
        ("my-env:newest", "a number or 'latest'"),
        ("azureml:", "names no environment"),
    ],
)
def test_a_malformed_reference_is_refused_by_name(ref: str, says: str) -> None:
    with pytest.raises(InvalidInput, match="environment") as info:
        parse_reference(ref)
    assert says in info.value.message


def test_a_plain_name_is_left_alone() -> None:
    assert curated_name("sklearn-1.5") == "sklearn-1.5"
    assert curated_name("sklearn-1.5", registry=True) == "cairn-sklearn"


@pytest.mark.parametrize(
    ("spec", "pin"),
    [
        (EnvironmentSpec(), None),
        (EnvironmentSpec(python="3.8"), (3, 8)),
        (EnvironmentSpec(python="3.10.4"), (3, 10)),
        (EnvironmentSpec(conda=["numpy", "python=3.9"]), (3, 9)),
        (EnvironmentSpec(conda=["python==3.12.*"]), (3, 12)),
        (EnvironmentSpec(conda=["pythonnet"]), None),
        (EnvironmentSpec(python="2.7", conda=["python=3.9"]), (2, 7)),
    ],
)
def test_the_python_a_spec_pins(spec: EnvironmentSpec, pin: tuple[int, int] | None) -> None:
    assert python_pin(spec) == pin


def test_a_pin_that_is_no_version_is_refused() -> None:
    with pytest.raises(InvalidInput, match=r"X\.Y"):
        python_pin(EnvironmentSpec(conda=["python>=3.8"]))


def test_the_closest_python() -> None:
    have = [(3, 8), (3, 11), (3, 12)]
    assert closest_python((2, 7), have) == (3, 8)
    assert closest_python((3, 4), have) == (3, 8)
    assert closest_python((3, 10), have) == (3, 11)
    assert closest_python((3, 13), have) == (3, 12)
    assert closest_python((4, 0), have) == (3, 12)
