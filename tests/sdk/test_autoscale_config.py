"""``AksWebservice.deploy_configuration``'s autoscale arguments: honoured as the deployment's
``ScaleSettings`` when ``autoscale_enabled=True``, refused by name otherwise."""

from __future__ import annotations

from typing import Any

import pytest

from cairn.errors import InvalidInput, Unsupported
from cairn.proto.serving import ScaleSettings
from cairn.sdk import AksWebservice


def test_autoscale_settings_are_the_deployments_scale() -> None:
    config = AksWebservice.deploy_configuration(
        autoscale_enabled=True,
        autoscale_min_replicas=2,
        autoscale_max_replicas=5,
        autoscale_refresh_seconds=3,
        autoscale_target_utilization=60,
    )
    assert config.scale == ScaleSettings(
        min_replicas=2, max_replicas=5, polling_interval_s=3.0, target_utilization_pct=60.0
    )
    assert config.replicas == 2  # it starts with its minimum
    defaults = AksWebservice.deploy_configuration(autoscale_enabled=True).scale
    assert defaults == ScaleSettings()
    assert AksWebservice.deploy_configuration(num_replicas=3).scale is None


@pytest.mark.parametrize(
    ("kwargs", "error", "named"),
    [
        ({"autoscale_max_replicas": 4}, Unsupported, "autoscale_max_replicas"),
        (
            {"autoscale_enabled": False, "autoscale_target_utilization": 50},
            Unsupported,
            "autoscale_target_utilization",
        ),
        ({"autoscale_enabled": True, "num_replicas": 2}, Unsupported, "num_replicas"),
        (
            {"autoscale_enabled": True, "autoscale_target_utilization": 0},
            InvalidInput,
            "target_utilization_pct",
        ),
    ],
)
def test_autoscale_arguments_without_autoscaling_are_refused_by_name(
    kwargs: dict[str, Any], error: type[Exception], named: str
) -> None:
    with pytest.raises(error, match=named):
        AksWebservice.deploy_configuration(**kwargs)
