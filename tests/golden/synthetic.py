"""Synthetic events for the event types a recorded history does not hold (docs/events.md,
*Golden histories*): ``python -m tests.golden.synthetic v<N>`` writes
``tests/golden/v<N>/synthetic.jsonl``, one stored envelope a line, each of a type the
fixture's history lacks, on an aggregate of that history where one fits (so the folds and read
models take them after the recorded events). Written once per fixture and committed: the tests
decode these bytes through today's decoders and upcasters, as they do the recorded history."""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgspec

from cairn.portable import load_export
from cairn.proto import subjects
from cairn.proto.batch import BatchDeploymentSpec
from cairn.proto.events import (
    EVENT_TYPES,
    AssetDeleted,
    BatchDeploymentSet,
    BatchEndpointCreated,
    DatastoreCredentialsResealed,
    DefaultDatastoreSet,
    DeploymentRolledBack,
    DeploymentScaled,
    Envelope,
    Event,
    MemberRemoved,
    MemberRolesChanged,
    MiniBatchCommitted,
    MiniBatchesPrepared,
    MiniBatchLeased,
    ParallelRunAborted,
    PipelineEndpointSet,
    ReplicaReplaced,
    RunRequeued,
    ScheduleFired,
    ScheduleFireFailed,
    ScheduleSkipped,
    ScheduleUpdated,
    SecretRead,
    SecretResealed,
    TrialStopped,
    WebhookDeadLettered,
    WebhookSecretResealed,
    WorkspaceKeyRotated,
    decode_envelope,
    encode_envelope,
)
from cairn.proto.jobs import JobSpec
from tests.golden.golden import GOLDEN

__all__ = ["FILE", "NEVER_IN_HISTORY", "load", "write"]

FILE = "synthetic.jsonl"
#: never an event of a workspace's history: the audit service's checkpoints travel apart
NEVER_IN_HISTORY = frozenset({"ChainCheckpointed"})


def load(fixture: Path) -> list[tuple[str, bytes]]:
    """The fixture's synthetic events as stored messages: (subject, bytes)."""
    path = fixture / FILE
    if not path.is_file():
        return []
    out = []
    for text in path.read_bytes().splitlines():
        env = msgspec.json.decode(text, type=Envelope[msgspec.Raw])
        out.append((subjects.event(env.workspace, env.aggregate_kind, env.aggregate_id), text))
    return out


def _first(envs: list[Envelope[Event]], type_name: str) -> Envelope[Event]:
    return next(e for e in envs if e.type == type_name)


def _events(envs: list[Envelope[Event]]) -> list[tuple[str, str, Event]]:
    """(aggregate kind, id, event) for each missing type, on the history's aggregates."""
    schedule = _first(envs, "ScheduleCreated")
    sweep = _first(envs, "TrialProposed")
    webhook = _first(envs, "WebhookCreated")
    secret = _first(envs, "SecretSet")
    run = _first(envs, "RunCompleted")
    published = _first(envs, "PipelinePublished")
    datastore = next(
        e for e in envs if e.type == "AssetRegistered" and e.aggregate_kind == "datastore"
    )
    env = next(e for e in envs if e.type == "AssetRegistered" and e.aggregate_kind == "environment")
    sdata: Any = schedule.data
    ws = schedule.workspace
    due = 1_767_594_600.0
    return [
        ("run", run.aggregate_id, RunRequeued(run_id=run.aggregate_id, attempt=1, reason="lost")),
        (
            "schedule",
            schedule.aggregate_id,
            ScheduleUpdated(
                trigger=sdata.trigger,
                submission=sdata.submission,
                description="synthetic",
                at=due - 60,
            ),
        ),
        ("schedule", schedule.aggregate_id, ScheduleFired(due=due, run_id="fired-1", at=due)),
        (
            "schedule",
            schedule.aggregate_id,
            ScheduleFireFailed(due=due + 604800, run_id="fired-2", error="refused"),
        ),
        (
            "schedule",
            schedule.aggregate_id,
            ScheduleSkipped(first_due=due + 2 * 604800, last_due=due + 3 * 604800, count=2, at=due),
        ),
        (
            "sweep",
            sweep.aggregate_id,
            TrialStopped(
                index=0,
                policy="bandit",
                interval=1,
                value=0.1,
                reference=0.9,
                threshold=0.5,
                reason="below the bandit's slack",
            ),
        ),
        (
            "webhook",
            webhook.aggregate_id,
            WebhookDeadLettered(
                webhook_id=webhook.aggregate_id,
                delivery_id="delivery-1",
                event_seq=1,
                event_id=run.event_id,
                event_type="RunCompleted",
                attempts=5,
                status=500,
                error="server error",
            ),
        ),
        (
            "webhook",
            webhook.aggregate_id,
            WebhookSecretResealed(
                webhook_id=webhook.aggregate_id,
                sealed_secret=webhook.data.sealed_secret,
                key_id="k-synthetic",
            ),
        ),
        (
            "secret",
            secret.aggregate_id,
            SecretRead(name=secret.data.name, version=1, reader="user"),
        ),
        (
            "secret",
            secret.aggregate_id,
            SecretResealed(
                name=secret.data.name,
                version=1,
                sealed=secret.data.sealed,
                key_id="k-synthetic",
            ),
        ),
        (
            "keyring",
            ws,
            WorkspaceKeyRotated(key_id="k-synthetic", previous=[secret.data.key_id]),
        ),
        (
            "datastore",
            datastore.aggregate_id,
            DatastoreCredentialsResealed(
                name=datastore.aggregate_id, version=1, sealed_credentials="", key_id="k-synthetic"
            ),
        ),
        ("workspace", ws, DefaultDatastoreSet(datastore=datastore.aggregate_id)),
        ("environment", env.aggregate_id, AssetDeleted(name=env.aggregate_id)),
        (
            "pipeline_endpoint",
            "golden-endpoint",
            PipelineEndpointSet(
                name="golden-endpoint", pipeline_id=published.aggregate_id, default=True
            ),
        ),
        (
            "parallel",
            "golden-parallel",
            MiniBatchesPrepared(
                parallel_id="golden-parallel",
                pipeline_run_id=run.aggregate_id,
                step="score",
                kind="tabular",
                items=4,
                starts=[0, 2],
                digest="synthetic",
            ),
        ),
        (
            "parallel",
            "golden-parallel",
            MiniBatchLeased(batch=0, run_id="golden-parallel-w0", attempt=1),
        ),
        (
            "parallel",
            "golden-parallel",
            MiniBatchCommitted(batch=0, run_id="golden-parallel-w0", attempt=1, rows=["0", "1"]),
        ),
        ("parallel", "golden-parallel", ParallelRunAborted(reason="synthetic")),
        ("batch_endpoint", "golden-batch", BatchEndpointCreated(name="golden-batch")),
        (
            "batch_endpoint",
            "golden-batch",
            BatchDeploymentSet(
                endpoint="golden-batch",
                name="blue",
                spec=BatchDeploymentSpec(
                    job=JobSpec(command=["python", "score.py"]), scoring_script="score.py"
                ),
                default=True,
            ),
        ),
        ("workspace", ws, MemberRolesChanged(user="user", roles=["data_scientist"])),
        ("workspace", ws, MemberRemoved(user="user")),
        *_deployment_events(envs),
    ]


def _deployment_events(envs: list[Envelope[Event]]) -> list[tuple[str, str, Event]]:
    """A roll-back and a scaling decision on a deployment of the history (neither is
    provoked by the script: a roll-back needs a replica failing mid-roll, a scaling an
    autoscaled deployment under load)."""
    deployment = _first(envs, "DeploymentCreated")
    data: Any = deployment.data
    names = {"endpoint": data.endpoint, "deployment": data.deployment}
    return [
        (
            "deployment",
            deployment.aggregate_id,
            DeploymentRolledBack(
                **names,
                run_id="synthetic-new-replica",
                attempt=1,
                error="Traceback: init() raised",
                replicas=list(data.replicas),
                retired=["synthetic-new-replica"],
            ),
        ),
        (
            "deployment",
            deployment.aggregate_id,
            DeploymentScaled(
                **names,
                replicas_before=len(data.replicas),
                replicas_after=len(data.replicas) + 1,
                utilization_pct=140.0,
                target_pct=70.0,
                window_s=10.0,
                at=1_767_594_600.0,
                requests=50,
                added=["synthetic-scaled-replica"],
            ),
        ),
        (
            "deployment",
            deployment.aggregate_id,
            ReplicaReplaced(
                **names,
                run_id="synthetic-scaled-replica",
                attempt=1,
                replacement="synthetic-replacement",
                error="Traceback: init() raised",
                at=1_767_594_700.0,
            ),
        ),
    ]


def write(fixture: Path) -> Path:
    """Write the fixture's synthetic events (module docstring); refuses when the history and
    they together leave a type out."""
    loaded = load_export(fixture / "history")
    envs = [decode_envelope(bytes(line.data)) for line in loaded.events]
    last = envs[-1]
    lines = []
    for n, (kind, agg, event) in enumerate(_events(envs), start=1):
        env = Envelope(
            event_id=f"synthetic-{n}",
            type=type(event).__name__,
            schema_version=type(event).VERSION,
            workspace=last.workspace,
            aggregate_kind=kind,
            aggregate_id=agg,
            timestamp=last.timestamp + timedelta(seconds=n),
            actor="synthetic",
            causation_id=f"synthetic-{n}",
            correlation_id=f"synthetic-{n}",
            data=event,
        )
        lines.append(encode_envelope(env) + b"\n")
    have = {e.type for e in envs} | {json.loads(x)["type"] for x in lines}
    left = sorted(set(EVENT_TYPES) - have - NEVER_IN_HISTORY)
    if left:
        raise SystemExit(f"no event of {left} in the history or the synthetic events")
    path = fixture / FILE
    path.write_bytes(b"".join(lines))
    return path


if __name__ == "__main__":
    print(write(GOLDEN / sys.argv[1]))
