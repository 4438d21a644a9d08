import json

import pytest
import structlog

from cairn.log import configure_logging, get_logger


def test_json_logs_carry_bound_context(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("json", "info")
    try:
        with structlog.contextvars.bound_contextvars(correlation_id="c-1", run_id="r-1"):
            get_logger("t").info("run_started", attempt=2)
        get_logger("t").debug("hidden")
        lines = [json.loads(x) for x in capsys.readouterr().err.splitlines()]
        assert lines == [
            {
                **lines[0],
                "event": "run_started",
                "correlation_id": "c-1",
                "run_id": "r-1",
                "attempt": 2,
                "level": "info",
            }
        ]
        assert "timestamp" in lines[0]
    finally:
        structlog.reset_defaults()
