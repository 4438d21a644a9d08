"""The studio's pages for models, datasets, environments, compute and jobs: each shows what
the SDK and CLI made in the test's workspace, says what fills it when empty, escapes what
people typed, and is refused to a person who is not a member."""

from __future__ import annotations

import asyncio
import html
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from cairn.data import preview_table
from cairn.embedded._server import NatsServer
from cairn.errors import InvalidInput
from cairn.proto.assets import (
    ComputeSpec,
    DataPath,
    DatasetSpec,
    DatastoreSpec,
    EnvironmentSpec,
    ListAssets,
)
from cairn.proto.commands import GetRun
from cairn.proto.jobs import JobInput, JobSpec, ListJobs, SubmitJob
from cairn.proto.registry import ListModels, ModelAliasHistory
from cairn.rpc import Client
from cairn.sdk import AsyncWorkspace, new_id
from cairn.services.gateway import Gateway
from cairn.storage import S3BlobStore
from tests.conftest import Agents
from tests.gateway.browser import log_in, screenshot
from tests.gateway.conftest import login_password, sign_in
from tests.seaweed import ACCESS_KEY, SECRET_KEY, SeaweedFS

HOSTILE = "<img src=x onerror=alert(1)>"
PAGES = ("models", "datasets", "environments", "compute", "jobs")


async def _settled(ws: AsyncWorkspace) -> None:
    """Every read model the pages ask has applied what this workspace's SDK sent."""
    seq = ws.seen_seq
    await ws.client.ask(ListModels(min_seq=seq))
    await ws.client.ask(ListAssets(asset_kind="dataset", min_seq=seq))
    await ws.client.ask(ListJobs(min_seq=seq))


async def _model(ws: AsyncWorkspace, tmp_path: Path, name: str) -> str:
    """Two versions of ``name`` from one run; ``prod`` moved from v1 to v2, ``staging`` set."""
    (tmp_path / "model.pkl").write_bytes(b"weights")
    exp = await ws.experiment("train")
    run = await exp.start_run()
    await run.upload_file("outputs/model.pkl", tmp_path / "model.pkl")
    await run.complete()
    for _ in range(2):
        await ws.models.register(name, "outputs/model.pkl", run_id=run.id, framework="ScikitLearn")
    await ws.models.set_alias(name, "prod", 1)
    await ws.models.set_alias(name, "staging", 1)
    await ws.models.set_alias(name, "prod", 2)
    return run.id


async def _dataset(
    ws: AsyncWorkspace, tmp_path: Path, rows: int = 120, snapshot: bool = True
) -> None:
    """Tabular dataset ``sales`` over a local datastore: ``rows`` rows, HTML in a cell (a
    snapshot unless ``snapshot`` is False: only those are previewed)."""
    lake = tmp_path / "lake"
    (lake / "sales").mkdir(parents=True)
    lines = ["id,region,note", f'1,north,"{HOSTILE}"']
    lines += [f"{i},south,plain" for i in range(2, rows + 1)]
    (lake / "sales" / "2026-01.csv").write_text("\n".join(lines) + "\n")
    await ws.assets.register_datastore("lake", DatastoreSpec(kind="local", path=str(lake)))
    spec = DatasetSpec(kind="tabular", paths=[DataPath("lake", "sales/*.csv")])
    await ws.datasets.register("sales", spec, description="monthly sales", snapshot=snapshot)


async def _job(ws: AsyncWorkspace, compute: str, priority: int = 0) -> str:
    run_id = new_id()
    await ws.experiment_id("nightly")
    job = JobSpec(command=["python", "-c", "print(1)"], priority=priority)
    cmd = SubmitJob(
        command_id=new_id(), run_id=run_id, experiment_name="nightly", compute=compute, job=job
    )
    await ws.send(cmd)
    return run_id


async def test_models_list_and_a_model_with_versions_aliases_and_their_history(
    browser_http: httpx.AsyncClient, client: Client, ws: AsyncWorkspace, tmp_path: Path
) -> None:
    run_id = await _model(ws, tmp_path, "mnist")
    await _settled(ws)
    listed = await browser_http.get(f"/w/{client.workspace}/models")
    assert listed.status_code == 200
    assert f'href="/w/{client.workspace}/models/mnist"' in listed.text
    assert "prod → v2" in listed.text and "staging → v1" in listed.text

    page = await browser_http.get(f"/w/{client.workspace}/models/mnist")
    assert page.status_code == 200
    assert page.text.count(f'href="/w/{client.workspace}/runs/{run_id}"') == 2
    assert 'id="v1"' in page.text and 'id="v2"' in page.text and "ScikitLearn" in page.text
    timeline = page.text[page.text.index('class="timeline"') :]
    moves = re.findall(r"<strong>(\w+)</strong>: ([^\n<]+)", timeline)
    assert moves == [("prod", "v1 → v2"), ("staging", "set to v1"), ("prod", "set to v1")]


async def test_a_version_shows_the_data_and_environment_its_run_used(
    browser_http: httpx.AsyncClient,
    client: Client,
    ws: AsyncWorkspace,
    agents: Agents,
    tmp_path: Path,
) -> None:
    await _dataset(ws, tmp_path, rows=3)
    await ws.assets.register_environment("plain", EnvironmentSpec(user_managed=True))
    await agents.start()
    script = "open('outputs/model.pkl', 'w').write('m')  # the agent made outputs/"
    job = JobSpec(
        command=["python", "-c", script],
        inputs=[JobInput(name="sales", dataset="sales", version=1)],
    )
    run_id = new_id()
    await ws.experiment_id("train")
    await ws.send(
        SubmitJob(
            command_id=new_id(),
            run_id=run_id,
            experiment_name="train",
            job=job,
            environment_name="plain",
        )
    )
    for _ in range(600):
        status = (await ws.client.ask(GetRun(run_id=run_id, wait_s=0))).data["status"]
        if status in ("Completed", "Failed", "Canceled"):
            break
        await asyncio.sleep(0.05)
    assert status == "Completed"
    await ws.models.register("forecast", "outputs/model.pkl", run_id=run_id)
    await _settled(ws)
    page = await browser_http.get(f"/w/{client.workspace}/models/forecast")
    assert page.status_code == 200
    assert f'href="/w/{client.workspace}/datasets/sales?version=1">sales:1</a>' in page.text
    assert f'href="/w/{client.workspace}/environments/plain?version=1">plain:1</a>' in page.text


async def test_alias_history_query_says_who_moved_what_when(
    client: Client, ws: AsyncWorkspace, tmp_path: Path, nats_server: NatsServer
) -> None:
    await _model(ws, tmp_path, "ranker")
    moves = (await client.ask(ModelAliasHistory(name="ranker"))).data
    shown = [(m["alias"], m["previous"], m["version"]) for m in moves]
    assert shown == [("prod", None, 1), ("staging", None, 1), ("prod", 1, 2)]
    user, _ = login_password(nats_server)
    assert {m["by"] for m in moves} == {user}
    assert moves[0]["seq"] < moves[1]["seq"] < moves[2]["seq"]
    assert all(m["at"] for m in moves)


async def test_dataset_page_shows_versions_files_and_a_bounded_escaped_preview(
    browser_http: httpx.AsyncClient, client: Client, ws: AsyncWorkspace, tmp_path: Path
) -> None:
    await _dataset(ws, tmp_path)
    await _settled(ws)
    listed = await browser_http.get(f"/w/{client.workspace}/datasets")
    assert listed.status_code == 200
    assert f'href="/w/{client.workspace}/datasets/sales"' in listed.text
    assert "monthly sales" in listed.text and "lake:sales/*.csv" in listed.text

    page = await browser_http.get(f"/w/{client.workspace}/datasets/sales")
    assert page.status_code == 200, page.text
    assert "lake:sales/2026-01.csv" in page.text and "v1" in page.text
    assert "<th>id</th><th>region</th><th>note</th>" in page.text
    assert html.escape(HOSTILE, quote=False) in page.text and HOSTILE not in page.text
    assert page.text.count("<td>south</td>") == 49  # 50 rows: the first is north
    assert "<td>51</td>" not in page.text and "(the version holds more)" in page.text

    again = await browser_http.get(f"/w/{client.workspace}/datasets/sales?version=1")
    assert again.status_code == 200 and "<td>north</td>" in again.text
    missing = await browser_http.get(f"/w/{client.workspace}/datasets/sales?version=9")
    assert missing.status_code == 404

    files = DatasetSpec(kind="file", paths=[DataPath("lake", "sales")])
    await ws.datasets.register("raw", files)
    plain = await browser_http.get(f"/w/{client.workspace}/datasets/raw")
    assert plain.status_code == 200 and "lake:sales/2026-01.csv" in plain.text
    assert "Preview" not in plain.text


async def test_preview_reads_no_more_than_its_byte_bound(
    client: Client, ws: AsyncWorkspace, tmp_path: Path
) -> None:
    await _dataset(ws, tmp_path, rows=5000)
    _, spec = await ws.datasets.spec("sales")
    assert spec.files[0].size > 60_000
    small = await preview_table(client, spec, rows=50, max_bytes=100)
    assert small.more and small.columns == ["id", "region", "note"]
    assert 0 < len(small.rows) < 10 and all(len(r) == 3 for r in small.rows)  # no cut row
    full = await preview_table(client, spec)
    assert len(full.rows) == 50 and full.more and full.rows[-1][0] == "50"


async def test_a_cut_through_a_quoted_cell_leaves_out_the_cut_row(
    client: Client, ws: AsyncWorkspace, tmp_path: Path
) -> None:
    lake = tmp_path / "lake"
    lake.mkdir()
    cell = "line\n" * 40  # one cell over many lines, 200 bytes
    (lake / "notes.csv").write_text(f'id,note\n1,short\n2,"{cell}"\n3,after\n')
    await ws.assets.register_datastore("lake", DatastoreSpec(kind="local", path=str(lake)))
    spec = DatasetSpec(kind="tabular", paths=[DataPath("lake", "notes.csv")])
    await ws.datasets.register("notes", spec, snapshot=True)
    _, registered = await ws.datasets.spec("notes")
    cut = await preview_table(client, registered, max_bytes=100)  # inside the long cell
    assert cut.rows == [["1", "short"]] and cut.more
    whole = await preview_table(client, registered)
    assert whole.rows == [["1", "short"], ["2", cell], ["3", "after"]] and not whole.more


async def test_preview_of_a_snapshot_reads_its_copy(
    browser_http: httpx.AsyncClient, client: Client, ws: AsyncWorkspace, tmp_path: Path
) -> None:
    lake = tmp_path / "lake"
    lake.mkdir()
    (lake / "t.tsv").write_text("a\tb\n1\t2\n3\t4\n")
    await ws.assets.register_datastore("lake", DatastoreSpec(kind="local", path=str(lake)))
    spec = DatasetSpec(kind="tabular", paths=[DataPath("lake", "t.tsv")], separator="\t")
    await ws.datasets.register("kept", spec, snapshot=True)
    (lake / "t.tsv").write_text("changed\n")  # the snapshot's copy is what it shows
    page = await browser_http.get(f"/w/{client.workspace}/datasets/kept")
    assert page.status_code == 200
    assert "<th>a</th><th>b</th>" in page.text and "<td>3</td><td>4</td>" in page.text
    assert "copied" in page.text and "(the version holds more)" not in page.text


async def test_a_version_of_references_is_not_previewed_and_the_page_says_how_to_read_it(
    browser_http: httpx.AsyncClient, client: Client, ws: AsyncWorkspace, tmp_path: Path
) -> None:
    """The gateway reads no datastore on anyone's behalf: not a folder on its own disk, not
    sealed credentials with its own keys. Whether a file is there or changed is not said."""
    lake = tmp_path / "lake"
    lake.mkdir()
    (lake / "t.tsv").write_text("a\tb\n1\t2\n")
    await ws.assets.register_datastore("lake", DatastoreSpec(kind="local", path=str(lake)))
    spec = DatasetSpec(kind="tabular", paths=[DataPath("lake", "t.tsv")], separator="\t")
    await ws.datasets.register("moved", spec)
    (lake / "t.tsv").unlink()  # gone from the gateway's own disk: the page cannot tell
    await _settled(ws)
    page = await browser_http.get(f"/w/{client.workspace}/datasets/moved")
    assert page.status_code == 200
    assert "Previews are shown for snapshot versions" in page.text
    assert "<code>--snapshot</code>" in page.text and "<code>snapshot=True</code>" in page.text
    assert 'Dataset.get_by_name(ws, "moved", version=1).to_pandas_dataframe()' in page.text
    assert "gone" not in page.text and "changed" not in page.text and "<th>a</th>" not in page.text
    _, registered = await ws.datasets.spec("moved")
    with pytest.raises(InvalidInput, match="snapshot versions only"):
        await preview_table(client, registered)


async def test_preview_of_a_snapshot_from_s3_reads_a_range_of_its_copy(
    browser_http: httpx.AsyncClient,
    client: Client,
    ws: AsyncWorkspace,
    seaweed: SeaweedFS,
    tmp_path: Path,
) -> None:
    bucket = "studio-" + new_id()[:10]
    blobs = await S3BlobStore.open(seaweed.config(bucket))
    try:
        await blobs.client.create_bucket(Bucket=bucket)
    finally:
        await blobs.close()
    creds = {"access_key_id": ACCESS_KEY, "secret_access_key": SECRET_KEY}
    store = DatastoreSpec(kind="s3", bucket=bucket, endpoint_url=seaweed.endpoint)
    await ws.assets.register_datastore("s3lake", store, creds)
    local = tmp_path / "big.csv"
    local.write_text("n,sq\n" + "".join(f"{i},{i * i}\n" for i in range(40_000)))
    (tmp_path / "empty.csv").write_text("")
    await ws.datastores.upload("s3lake", [(local, "t/big.csv"), (tmp_path / "empty.csv", "e.csv")])
    spec = DatasetSpec(kind="tabular", paths=[DataPath("s3lake", "t/big.csv")])
    await ws.datasets.register("squares", spec, snapshot=True)
    _, registered = await ws.datasets.spec("squares")
    small = await preview_table(client, registered, max_bytes=200)
    assert (
        small.more
        and 0 < len(small.rows) < 50
        and small.rows[-1][1] == str(int(small.rows[-1][0]) ** 2)
    )
    empty = DatasetSpec(kind="tabular", paths=[DataPath("s3lake", "e.csv")])
    await ws.datasets.register("nothing-in-it", empty, snapshot=True)
    _, registered_empty = await ws.datasets.spec("nothing-in-it")
    nothing = await preview_table(client, registered_empty)
    assert nothing.rows == [] and not nothing.more
    await _settled(ws)
    page = await browser_http.get(f"/w/{client.workspace}/datasets/squares")
    assert page.status_code == 200 and "<td>49</td><td>2401</td>" in page.text


async def test_environment_list_and_version_pages(
    browser_http: httpx.AsyncClient, client: Client, ws: AsyncWorkspace
) -> None:
    await ws.assets.register_environment(
        "torch", EnvironmentSpec(pip=["torch==2.3.0"], docker_image="python:3.11-slim")
    )
    spec = EnvironmentSpec(pip=["torch==2.4.0", HOSTILE], conda=["numpy"], python="3.11")
    await ws.assets.register_environment("torch", spec)
    await ws.client.ask(ListAssets(asset_kind="environment", min_seq=ws.seen_seq))
    listed = await browser_http.get(f"/w/{client.workspace}/environments")
    assert listed.status_code == 200
    assert f'href="/w/{client.workspace}/environments/torch"' in listed.text
    assert "No environments of your own" not in listed.text

    latest = await browser_http.get(f"/w/{client.workspace}/environments/torch")
    assert latest.status_code == 200 and "torch==2.4.0" in latest.text and "numpy" in latest.text
    assert html.escape(HOSTILE, quote=False) in latest.text and HOSTILE not in latest.text
    first = await browser_http.get(f"/w/{client.workspace}/environments/torch?version=1")
    assert "torch==2.3.0" in first.text and "python:3.11-slim" in first.text
    assert "torch==2.4.0" not in first.text
    curated = await browser_http.get(f"/w/{client.workspace}/environments/cairn-sklearn")
    assert curated.status_code == 200 and "curated" in curated.text


async def test_compute_targets_with_their_agents_and_queue(
    browser_http: httpx.AsyncClient, client: Client, ws: AsyncWorkspace, agents: Agents
) -> None:
    await ws.assets.create_compute("gpu", ComputeSpec(kind="cluster", max_nodes=4, labels=["a100"]))
    await ws.assets.create_compute("cpu", ComputeSpec(kind="cluster", max_nodes=2))
    await agents.start(compute="cpu", slots=3)
    await _job(ws, "gpu")
    await _settled(ws)
    page = await browser_http.get(f"/w/{client.workspace}/compute")
    assert page.status_code == 200
    rows = {
        m.group(1): m.group(0)
        for m in re.finditer(r"<tr><td>(\w+)(?:(?!</tr>).)*</tr>", page.text, re.S)
    }
    assert "a100" in rows["gpu"] and "?status=queued&amp;compute=gpu" in rows["gpu"]
    assert ">1</a>" in rows["gpu"]  # one queued job, linked to the queue of its target
    assert "0 / 3" in rows["cpu"]  # the agent's slots, none busy
    assert "s ago" in page.text and "No agent is serving" not in page.text


async def test_jobs_page_lists_and_filters_the_queue(
    browser_http: httpx.AsyncClient, client: Client, ws: AsyncWorkspace, nats_server: NatsServer
) -> None:
    await ws.assets.create_compute("gpu", ComputeSpec(kind="cluster"))
    queued = await _job(ws, "gpu", priority=7)
    await _settled(ws)
    page = await browser_http.get(f"/w/{client.workspace}/jobs")
    assert page.status_code == 200
    assert f'href="/w/{client.workspace}/runs/{queued}"' in page.text
    row = page.text[page.text.index(queued) :].split("</tr>")[0]
    user, _ = login_password(nats_server)
    assert "Queued" in row and "gpu" in row and ">7<" in row and f"<td>{user}</td>" in row
    assert "UTC" in row  # when it was submitted

    for status, shown in (("queued", True), ("active", True), ("failed", False)):
        filtered = await browser_http.get(f"/w/{client.workspace}/jobs?status={status}")
        assert filtered.status_code == 200 and (queued in filtered.text) is shown, status
    assert "No failed jobs" in filtered.text
    bad = await browser_http.get(f"/w/{client.workspace}/jobs?status=nope")
    assert bad.status_code == 400

    await ws.assets.create_compute("cpu", ComputeSpec(kind="cluster"))
    elsewhere = await _job(ws, "cpu")
    await _settled(ws)
    on_gpu = await browser_http.get(f"/w/{client.workspace}/jobs?status=queued&compute=gpu")
    assert queued in on_gpu.text and elsewhere not in on_gpu.text
    assert "?status=all&amp;compute=gpu" in on_gpu.text  # the filters keep the target
    every = await browser_http.get(f"/w/{client.workspace}/jobs?status=queued")
    assert queued in every.text and elsewhere in every.text


async def test_empty_states_say_what_fills_them(
    browser_http: httpx.AsyncClient, client: Client
) -> None:
    expected = {
        "models": "cairn model register",
        "datasets": "cairn dataset create",
        "environments": "cairn environment create",
        "compute": "cairn agent --compute",
        "jobs": "cairn job create --file job.yml",
    }
    for name, command in expected.items():
        page = await browser_http.get(f"/w/{client.workspace}/{name}")
        assert page.status_code == 200, name
        assert 'class="empty"' in page.text and command in page.text, name


async def test_unknown_model_and_dataset_are_404(
    browser_http: httpx.AsyncClient, client: Client
) -> None:
    for path in ("models/nothing", "datasets/nothing", "environments/nothing"):
        page = await browser_http.get(
            f"/w/{client.workspace}/{path}", headers={"accept": "text/html"}
        )
        assert page.status_code == 404, (path, page.text)
        assert "nothing" in page.text


async def test_names_people_typed_are_shown_escaped(
    browser_http: httpx.AsyncClient, client: Client, ws: AsyncWorkspace, tmp_path: Path
) -> None:
    name = f"team//{HOSTILE}/"  # slashes too: the link and the page keep the name exact
    await _model(ws, tmp_path, name)
    await _settled(ws)
    listed = await browser_http.get(f"/w/{client.workspace}/models")
    assert HOSTILE not in listed.text and html.escape(name, quote=False) in listed.text
    href = f"/w/{client.workspace}/models/{quote(name, safe='')}"
    assert f'href="{href}"' in listed.text
    page = await browser_http.get(href)
    assert page.status_code == 200
    assert HOSTILE not in page.text and f"<h1>{html.escape(name, quote=False)}</h1>" in page.text


@pytest.mark.parametrize("person", ["dana", "audrey"])
async def test_a_person_who_is_not_a_member_is_refused_every_page(
    gateway: Gateway, nats_server: NatsServer, client: Client, ws: AsyncWorkspace, person: str
) -> None:
    await ws.assets.register_environment("torch", EnvironmentSpec(pip=["torch"]))
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        assert (await sign_in(http, *login_password(nats_server, person))).status_code == 303
        paths = [*PAGES, "models/mnist", "datasets/sales", "environments/torch"]
        for path in paths:
            page = await http.get(f"/w/{client.workspace}/{path}", headers={"accept": "text/html"})
            assert page.status_code == 403, (path, page.status_code)


async def test_models_and_a_dataset_preview_in_a_browser(
    gateway: Gateway,
    nats_server: NatsServer,
    client: Client,
    ws: AsyncWorkspace,
    page: Any,
    tmp_path: Path,
) -> None:
    await _model(ws, tmp_path, "mnist-classifier")
    await _dataset(ws, tmp_path)
    await _settled(ws)
    models = f"/w/{client.workspace}/models"
    await log_in(page, gateway.url, *login_password(nats_server), models)
    assert await page.locator("h1").inner_text() == "Models"
    await page.click("text=mnist-classifier")
    await page.wait_for_url(f"{gateway.url}{models}/mnist-classifier")
    history = page.locator("ol.timeline li")
    assert await history.count() == 3
    assert "v1 → v2" in await history.first.inner_text()
    await screenshot(page, tmp_path, "model")

    await page.click("nav >> text=Data")
    await page.click("text=sales")
    cells = page.locator("table.data tbody tr")
    assert await cells.count() == 50
    assert await cells.first.locator("td").nth(2).inner_text() == HOSTILE  # text, not markup
    assert await page.locator("table.data img").count() == 0
    await screenshot(page, tmp_path, "dataset-preview")
