"""The public faces are pinned: changing one is a deliberate act."""

import importlib

import pytest

PINNED = {
    "cairn.bus": [
        "AggregateCache",
        "AppendResult",
        "CommandContext",
        "Connection",
        "EventStore",
        "RECONNECT_MAX_S",
        "Recorded",
        "RunKeyMirror",
        "connect",
        "ensure_consumer",
        "ensure_stream",
        "execute",
        "live_agents",
        "per_client",
        "provision",
    ],
    "cairn.telemetry": [
        "AGENT_BUSY_SLOTS",
        "AGENT_SLOTS",
        "PROJECTION_APPLIED",
        "PROJECTION_LAG",
        "REQUESTS",
        "REQUEST_SECONDS",
        "Readiness",
        "RequestMetrics",
        "SCHEDULER_QUEUED",
        "SCHEDULER_RUNNING",
        "forget",
        "ops_app",
        "ops_routes",
        "ops_server",
        "read_through",
        "readiness",
        "render",
    ],
    "cairn.projection": [
        "Delivered",
        "EVENTS_SOURCE",
        "METRICS_LINGER_S",
        "Projection",
        "ProjectionRunner",
        "Source",
        "Tables",
        "content_hash",
        "events_of",
        "read_model_states",
        "retry_quarantined",
    ],
    "cairn.sdk": [
        "AmlCompute",
        "AsyncExperiment",
        "AsyncRun",
        "AsyncWorkspace",
        "ComputeTarget",
        "ComputeTargetException",
        "CondaDependencies",
        "DEFAULT_CPU_IMAGE",
        "DEFAULT_GPU_IMAGE",
        "Dataset",
        "Datastore",
        "DockerConfiguration",
        "Environment",
        "Estimator",
        "Experiment",
        "Keyvault",
        "Model",
        "OfflineRun",
        "PyTorch",
        "Run",
        "RunConfiguration",
        "RunFailedError",
        "SKLearn",
        "ScriptRunConfig",
        "TensorFlow",
        "Workspace",
        "connect",
        "load_job_file",
        "new_id",
        "replay_spool_dir",
    ],
    "cairn.errors": [
        "AlreadyExists",
        "BatchRejected",
        "CairnError",
        "ConcurrencyConflict",
        "DataChanged",
        "InvalidInput",
        "InvalidName",
        "InvalidTransition",
        "NotFound",
        "PayloadTooLarge",
        "PermissionDenied",
        "StaleAttempt",
        "Unauthenticated",
        "Unavailable",
        "UnknownMessageType",
        "Unsupported",
        "error_for_code",
    ],
    "cairn.embedded": ["Credentials", "NatsServer", "find_nats_server", "free_port"],
}


@pytest.mark.parametrize("module", PINNED)
def test_exports(module: str) -> None:
    mod = importlib.import_module(module)
    assert sorted(mod.__all__) == PINNED[module]
    for name in mod.__all__:
        assert hasattr(mod, name), name


def test_every_error_code_round_trips() -> None:
    from cairn import errors

    for name in PINNED["cairn.errors"][:-1]:
        cls = getattr(errors, name)
        rebuilt = errors.error_for_code(cls.code, "m")
        assert type(rebuilt) is cls and rebuilt.message == "m"
    assert type(errors.error_for_code("from-the-future", "m")) is errors.CairnError
