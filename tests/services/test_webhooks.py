"""Webhooks against the real services and a real HTTP receiver: signed deliveries, retries,
the dead-letter list, one slow receiver beside another, and the secret never answered."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from pathlib import Path

import msgspec
import pytest
from prometheus_client import REGISTRY

from cairn.bus import connect
from cairn.embedded._up import all_services
from cairn.errors import InvalidInput, PermissionDenied, UnknownEventType
from cairn.proto.commands import CreateExperiment, CreateWorkspace
from cairn.proto.webhooks import SIGNATURE_HEADER, WEBHOOK_ID_HEADER, CreateWebhook, verify
from cairn.rpc import Client
from cairn.sdk import AsyncWorkspace
from cairn.service import run_services
from cairn.services.webhooks._service import WebhookService
from cairn.settings import Settings
from tests.cluster.proxy import Proxy
from tests.conftest import LEAKS_SOCKETS, own_server
from tests.receiver import Receiver
from tests.sdk.test_sync_sdk import sdk_env

SECRET = "test-secret-" + "x" * 20


async def experiments(client: Client, *names: str) -> None:
    for name in names:
        await client.send(CreateExperiment(command_id=uuid.uuid4().hex, name=name))


def dead_lettered() -> float:
    """The process's count of deliveries given up (the services run in this process)."""
    labels = {"outcome": "dead_lettered"}
    return REGISTRY.get_sample_value("cairn_webhook_attempts_total", labels) or 0.0


async def dead_letters(ws: AsyncWorkspace, webhook_id: str, n: int) -> list[dict[str, object]]:
    for _ in range(300):
        rows = await ws.webhooks.dead_letters(webhook_id)
        if len(rows) >= n:
            return rows
        await asyncio.sleep(0.1)
    raise AssertionError(f"no {n} dead letters for {webhook_id}")


async def test_a_receiver_failing_three_times_gets_the_fourth_signed(
    client: Client, ws: AsyncWorkspace
) -> None:
    async with Receiver(lambda n: 500 if n <= 3 else 200) as receiver:
        hook = await ws.webhooks.create(receiver.url, ["ExperimentCreated"], secret=SECRET)
        await experiments(client, "first")
        got = await receiver.wait_for(4)
    ids = {r.headers[WEBHOOK_ID_HEADER.lower()] for r in got}
    assert len(got) == 4 and len(ids) == 1, "one delivery, the same id on every attempt"
    last = got[3]
    verify(SECRET, last.headers[SIGNATURE_HEADER.lower()], last.body)
    with pytest.raises(InvalidInput):
        verify("another secret of some length", last.headers[SIGNATURE_HEADER.lower()], last.body)
    (event,) = json.loads(last.body)
    assert event["eventType"] == "Cairn.MachineLearning.ExperimentCreated"
    assert event["topic"] == f"/workspaces/{client.workspace}"
    assert event["subject"] == "experiment/first"
    assert event["data"]["name"] == "first" and event["dataVersion"] == "1"
    assert {"id", "eventTime", "metadataVersion"} <= event.keys()
    assert await ws.webhooks.dead_letters(hook) == []


async def test_a_receiver_that_never_answers_ends_in_the_dead_letter_list(
    client: Client, ws: AsyncWorkspace
) -> None:
    before = dead_lettered()
    async with Receiver(lambda n: None) as receiver:
        hook = await ws.webhooks.create(receiver.url, ["ExperimentCreated"], secret=SECRET)
        await experiments(client, "silent")
        (row,) = await dead_letters(ws, hook, 1)
        assert len(receiver.received) == 4
    assert dead_lettered() >= before + 1  # webhooks of other tests may give up meanwhile
    assert row["event_type"] == "ExperimentCreated" and row["attempts"] == 4
    assert row["status"] is None and "Timeout" in str(row["error"])
    listed = {w["id"]: w for w in await ws.webhooks.list()}
    assert listed[hook]["dead_letters"] == 1
    assert SECRET not in json.dumps(listed)


async def test_a_slow_receiver_does_not_hold_back_another_webhook(
    client: Client, ws: AsyncWorkspace
) -> None:
    async with Receiver(lambda n: None) as slow, Receiver() as fast:
        slow_hook = await ws.webhooks.create(slow.url, ["ExperimentCreated"], secret=SECRET)
        await ws.webhooks.create(fast.url, ["ExperimentCreated"], secret=SECRET)
        await experiments(client, *(f"e{i}" for i in range(5)))
        got = await fast.wait_for(5)
        # every event reached the fast receiver before the slow webhook's first delivery was
        # given up: were deliveries taken in turn, they would wait for its four attempts
        await slow.wait_for(1)
        assert await ws.webhooks.dead_letters(slow_hook) == []
        await ws.webhooks.delete(slow_hook)
    names = [json.loads(r.body)[0]["data"]["name"] for r in got]
    assert names == [f"e{i}" for i in range(5)]


async def test_filters_and_deletion(client: Client, ws: AsyncWorkspace) -> None:
    async with Receiver() as receiver:
        hook = await ws.webhooks.create(
            receiver.url, ["ExperimentCreated"], secret=SECRET, filters={"name": "wanted"}
        )
        await experiments(client, "unwanted", "wanted")
        (got,) = await receiver.wait_for(1)
        assert json.loads(got.body)[0]["data"]["name"] == "wanted"
        await ws.webhooks.delete(hook)
        assert hook not in {w["id"] for w in await ws.webhooks.list()}


@pytest.mark.parametrize(
    "url", ["ftp://example.org/x", "file:///etc/passwd", "http://169.254.169.254/latest/"]
)
async def test_unsafe_urls_are_refused(ws: AsyncWorkspace, url: str) -> None:
    with pytest.raises(InvalidInput, match=r"scheme|link-local"):
        await ws.webhooks.create(url, ["RunCompleted"], secret=SECRET)


async def test_unknown_event_types_are_refused_by_name(ws: AsyncWorkspace) -> None:
    with pytest.raises(UnknownEventType, match=r"'RunFinished'.*RunCompleted"):
        await ws.webhooks.create("http://127.0.0.1:9/", ["RunFinished"], secret=SECRET)


async def test_the_service_refuses_what_the_sdk_would(client: Client) -> None:
    """The checks hold for any client, not only the SDK's."""

    def create(url: str, types: tuple[str, ...]) -> CreateWebhook:
        return CreateWebhook(
            command_id=uuid.uuid4().hex, webhook_id="h1", url=url, event_types=types, secret=SECRET
        )

    with pytest.raises(UnknownEventType, match="RunFinished"):
        await client.send(create("http://127.0.0.1:9/", ("RunFinished",)))
    with pytest.raises(InvalidInput, match="scheme"):
        await client.send(create("gopher://127.0.0.1:9/", ("RunCompleted",)))


async def test_an_experiment_filter_picks_the_runs_and_models_of_that_experiment(
    client: Client, ws: AsyncWorkspace, tmp_path: Path
) -> None:
    (tmp_path / "model.pkl").write_bytes(b"weights")
    async with Receiver() as receiver:
        await ws.webhooks.create(
            receiver.url,
            ["RunCompleted", "ModelVersionRegistered"],
            secret=SECRET,
            filters={"experiment": "nightly"},
        )
        for name in ("adhoc", "nightly"):
            run = await (await ws.experiment(name)).start_run()
            await run.upload_file("outputs/model.pkl", tmp_path / "model.pkl")
            await run.complete()
            await ws.models.register(f"model-{name}", "outputs/model.pkl", run_id=run.id)
        got = await receiver.wait_for(2)
        events = [json.loads(r.body)[0] for r in got]
        assert [e["eventType"] for e in events] == [
            "Cairn.MachineLearning.RunCompleted",
            "Cairn.MachineLearning.ModelVersionRegistered",
        ]
        assert events[0]["subject"] == f"run/{run.id}"
        assert events[1]["data"]["name"] == "model-nightly"


async def test_a_delivery_cut_by_a_stopping_service_is_made_again_with_the_same_id(
    tmp_path: Path,
) -> None:
    """At least once: the service stops while a receiver holds the first attempt; the next
    service delivers the same event again, under the same delivery id, signed."""
    server, settings, conn = await own_server(tmp_path / "home", request_timeout=5.0)
    settings = msgspec.structs.replace(settings, webhook_timeout_s=30.0)
    factories = [all_services()[name] for name in ("tracking", "webhooks")]

    async def serving() -> tuple[asyncio.Event, asyncio.Task[None]]:
        stop, ready = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(run_services(settings, factories, stop=stop, ready=ready))
        await asyncio.wait_for(ready.wait(), 30)
        return stop, task

    try:
        async with Receiver(lambda n: None if n == 1 else 200) as receiver:
            stop, task = await serving()
            client = Client(conn, "restarts")
            await client.send(CreateWorkspace(command_id=uuid.uuid4().hex, name="restarts"))
            await client.send(
                CreateWebhook(
                    command_id=uuid.uuid4().hex,
                    webhook_id="h1",
                    url=receiver.url,
                    event_types=("ExperimentCreated",),
                    secret=SECRET,
                )
            )
            await experiments(client, "held")
            await receiver.wait_for(1)
            stop.set()
            await task
            stop, task = await serving()
            got = await receiver.wait_for(2)
            stop.set()
            await task
    finally:
        await conn.close()
        server.stop()
    first, second = got[:2]
    header = WEBHOOK_ID_HEADER.lower()
    assert first.headers[header] == second.headers[header] and first.body == second.body
    verify(SECRET, second.headers[SIGNATURE_HEADER.lower()], second.body)


async def test_a_key_rotation_reseals_the_signing_secret(
    client: Client, ws: AsyncWorkspace
) -> None:
    async with Receiver() as receiver:
        hook = await ws.webhooks.create(receiver.url, ["ExperimentCreated"], secret=SECRET)
        await ws.secrets.rotate_key()
        resealed = [e async for e in ws.events(["WebhookSecretResealed"], follow=False)]
        assert [e.entity_id for e in resealed] == [hook]
        assert resealed[0].event is not None and resealed[0].event.sealed_secret == "<sealed>"
        await experiments(client, "after-rotation")
        (got,) = await receiver.wait_for(1)
        verify(SECRET, got.headers[SIGNATURE_HEADER.lower()], got.body)


async def _cairn(env: dict[str, str], cwd: Path, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from cairn.cli import main; main()",
        *args,
        env=env,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_cairn_webhook_create_list_deliveries_delete(
    client: Client, client_settings: Settings, tmp_path: Path
) -> None:
    env = sdk_env(client_settings, client.workspace, tmp_path / "home")
    url = "http://127.0.0.1:9/hook"
    rc, out, err = await _cairn(
        env,
        tmp_path,
        "webhook",
        "create",
        "--url",
        url,
        "--events",
        "RunCompleted,RunFailed",
        "--filter",
        "experiment=nightly",
        "--json",
    )
    assert rc == 0, err
    made = json.loads(out)
    assert made["secret"].startswith("whsec_") and made["events"] == ["RunCompleted", "RunFailed"]
    rc, out, err = await _cairn(env, tmp_path, "webhook", "list", "--json")
    (row,) = json.loads(out)
    assert (row["id"], row["url"], row["filters"]) == (made["id"], url, {"experiment": "nightly"})
    assert made["secret"] not in out
    rc, out, err = await _cairn(env, tmp_path, "webhook", "deliveries", "--json")
    assert (rc, json.loads(out)) == (0, [])
    rc, out, err = await _cairn(env, tmp_path, "webhook", "delete", made["id"])
    assert rc == 0 and "deleted" in out
    rc, out, err = await _cairn(env, tmp_path, "webhook", "list", "--json")
    assert json.loads(out) == []
    rc, out, err = await _cairn(
        env, tmp_path, "webhook", "create", "--url", url, "--events", "RunDone"
    )
    assert rc == 1 and "unknown_event_type" in err and "RunCompleted" in err
    rc, out, err = await _cairn(
        env, tmp_path, "webhook", "create", "--url", "file:///etc/passwd", "--events", "RunFailed"
    )
    assert rc == 1 and "scheme" in err


@LEAKS_SOCKETS
async def test_the_service_starts_while_events_cannot_be_read_and_follows_later(
    ws: AsyncWorkspace, service_settings: Settings, nats_py_leaks: None
) -> None:
    """EVENTS not answering reads at start (a cluster just started, an election; here the
    service's link cut): the service starts all the same, and follows the webhooks once the
    log answers."""
    async with Receiver() as receiver:
        hook = await ws.webhooks.create(receiver.url, ["ExperimentCreated"], secret=SECRET)
        host, port = service_settings.nats_url.removeprefix("nats://").rsplit(":", 1)
        proxy = Proxy(host, int(port))
        await proxy.start()
        settings = msgspec.structs.replace(
            service_settings, nats_url=proxy.url, request_timeout=1.0
        )
        conn = await connect(settings)
        service = WebhookService(conn, settings, follow_every_s=0.2)
        stop = asyncio.Event()
        task: asyncio.Task[None] | None = None
        try:
            proxy.cut()
            await service.start()  # the first follow failed: no raise
            assert (ws.name, hook) not in service.hooks
            proxy.heal()
            task = asyncio.create_task(service.run(stop))
            async with asyncio.timeout(30):
                while (ws.name, hook) not in service.hooks:
                    await asyncio.sleep(0.05)
        finally:
            proxy.heal()
            stop.set()
            if task is not None:
                await task
            await conn.close()
            await proxy.close()


async def test_a_start_without_permission_to_read_the_log_fails_naming_it(
    client_settings: Settings,
) -> None:
    """A webhooks service whose user may not read EVENTS (here a person's, whose account
    has no JetStream of its own) fails to start with ``PermissionDenied`` naming the subject,
    instead of starting "healthy" and retrying for ever."""
    settings = msgspec.structs.replace(client_settings, request_timeout=1.0)
    conn = await connect(settings)
    try:
        service = WebhookService(conn, settings, follow_every_s=0.2)
        with pytest.raises(PermissionDenied, match=r"direct\.get\.events"):
            await service.start()
    finally:
        await conn.close()
