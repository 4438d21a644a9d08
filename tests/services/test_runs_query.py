"""The runs query (``run.list``): filters, orders by attributes, tags and metric summaries,
keyset pages that resume exactly, and a typed error for every bad filter, order or cursor."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import msgspec
import pytest

from cairn.errors import InvalidInput
from cairn.proto.commands import (
    AddRunProperties,
    CompleteRun,
    CreateExperiment,
    CreateRun,
    CreateWorkspace,
    ListRuns,
    SetRunTags,
    StartRun,
)
from cairn.proto.metrics import LogMetrics, MetricPoint
from cairn.rpc import Client

EXP = "runs query"
#: run -> the loss it logs at steps 0, 1, 2 (None: no loss at all); ties on purpose
LOSSES: dict[str, list[float] | None] = {
    "r00": [0.9, 0.5, 0.7],
    "r01": [0.6, 0.5, 0.4],
    "r02": [0.5, 0.8, 0.3],
    "r03": [0.3, 0.3, 0.3],
    "r04": [0.8, 0.6, 0.5],
    "r05": None,
    "r06": [0.7, 0.5, 0.4],
    "r07": [0.3, 0.9, 0.6],
    "r08": None,
    "r09": [0.4, 0.2, 0.9],
    "r10": [0.5, 0.5, 0.5],
    "r11": [1, 2, 3],  # integers sort with floats
}


def cid() -> str:
    return uuid.uuid4().hex


async def _seed(client: Client) -> tuple[int, int]:
    """The runs of LOSSES: tags team=a|b, property lr, r00..r05 Completed; the EVENTS and
    METRICS sequences of the last writes."""
    await client.send(CreateExperiment(command_id=cid(), name=EXP))
    seq = metrics_seq = 0
    for i, (run_id, losses) in enumerate(LOSSES.items()):
        await client.send(
            CreateRun(command_id=cid(), run_id=run_id, experiment_name=EXP, display_name=f"run-{i}")
        )
        tags = {"team": "ab"[i % 2], "it's": "quoted"}
        await client.send(SetRunTags(command_id=cid(), run_id=run_id, tags=tags))
        props = AddRunProperties(command_id=cid(), run_id=run_id, properties={"lr": f"0.{i}"})
        seq = (await client.send(props)).seq
        if i <= 5:
            await client.send(StartRun(command_id=cid(), run_id=run_id))
            seq = (await client.send(CompleteRun(command_id=cid(), run_id=run_id))).seq
        if losses is not None:
            points = [
                MetricPoint(name="loss", kind="scalar", value=v, step=s, time=time.time())
                for s, v in enumerate(losses)
            ]
            points.append(MetricPoint(name="note", kind="scalar", value="text", step=0, time=0))
            batch = LogMetrics(command_id=cid(), run_id=run_id, points=points)
            metrics_seq = (await client.send(batch)).seq
    return seq, metrics_seq


def _expected(summary: str, *, desc: bool = False) -> list[str]:
    """Run ids by the loss summary (runs without it last), ties by run id."""

    def value(losses: list[float]) -> float:
        return {"last": losses[-1], "min": min(losses), "max": max(losses)}[summary]

    have = [(value(v), k) for k, v in LOSSES.items() if v is not None]
    have.sort(key=lambda p: ((-p[0] if desc else p[0]), p[1]))
    return [k for _, k in have] + sorted(k for k, v in LOSSES.items() if v is None)


async def _all_pages(client: Client, seqs: tuple[int, int], **kw: Any) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor = None
    while True:
        q = ListRuns(
            experiment_name=EXP, min_seq=seqs[0], metrics_min_seq=seqs[1], cursor=cursor, **kw
        )
        data = (await client.ask(q)).data
        pages.append([r["run_id"] for r in data["runs"]])
        cursor = data["next_cursor"]
        if cursor is None:
            return pages


@pytest.fixture
async def seeded(client: Client) -> tuple[int, int]:
    return await _seed(client)


async def test_metric_orders_page_exactly_with_ties_and_missing_runs(
    client: Client, seeded: tuple[int, int]
) -> None:
    for key, summary, desc in [
        ("metrics.loss.min", "min", False),
        ("metrics.loss", "last", False),
        ("metrics.loss.last DESC", "last", True),
        ("metrics.loss.max DESC", "max", True),
        ("metrics.`loss`.max", "max", False),
    ]:
        want = _expected(summary, desc=desc)
        for limit in (1, 3, 5, 100):
            pages = await _all_pages(client, seeded, order_by=(key,), limit=limit)
            flat = [r for page in pages for r in page]
            assert flat == want, (key, limit, pages)
            assert all(len(p) == limit for p in pages[:-1])
            assert len(pages) == max(1, -(-len(want) // limit))


async def test_the_default_order_is_newest_first_and_secondary_keys_apply(
    client: Client, seeded: tuple[int, int]
) -> None:
    pages = await _all_pages(client, seeded, limit=4)
    assert [r for p in pages for r in p] == sorted(LOSSES, reverse=True)  # created in order
    # min ties (0.3: r02, r03, r07; 0.5: r00, r10) broken by the second key, then run id
    pages = await _all_pages(
        client, seeded, order_by=("metrics.loss.min ASC", "tags.team DESC"), limit=2
    )
    flat = [r for p in pages for r in p]
    assert flat[:3] == ["r09", "r03", "r07"] and flat[3] == "r02"
    assert flat[-2:] == ["r05", "r08"]  # no loss, then team b before a: r05 (b), r08 (a)
    page = (
        await client.ask(
            ListRuns(experiment_name=EXP, order_by=("metrics.loss.min",), limit=1, min_seq=0)
        )
    ).data
    assert page["runs"][0]["metrics"] == {"loss": {"last": 0.9, "min": 0.2, "max": 0.9}}


@pytest.fixture(params=["listed", "probed"])
def members(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Tag and property comparisons both ways: the matching runs listed once, or each run
    probed down the order (what many matches get); the answers must be the same."""
    from cairn.services.tracking import _runs_query

    if request.param == "probed":
        monkeypatch.setattr(_runs_query, "MEMBERS_LIST", 0)
    return str(request.param)


async def test_filters(client: Client, seeded: tuple[int, int], members: str) -> None:
    async def ids(expr: str, **kw: Any) -> list[str]:
        pages = await _all_pages(client, seeded, filter=expr, order_by=("run_id",), **kw)
        return [r for p in pages for r in p]

    mins = {k: min(v) for k, v in LOSSES.items() if v is not None}
    assert await ids("metrics.loss.min < 0.4") == sorted(k for k, v in mins.items() if v < 0.4)
    assert await ids("metrics.loss >= 3") == ["r11"]
    assert await ids("metrics.loss.max IN (0.9, 3)") == ["r00", "r07", "r09", "r11"]
    assert await ids("metrics.loss IS NULL") == ["r05", "r08"]
    assert await ids("metrics.note IS NOT NULL") == []  # not a number: not summarised
    assert await ids("tags.team = 'a' AND metrics.loss.min <= 0.3") == ["r02"]
    assert await ids("tags.`it's` = 'quoted' AND tags.team != 'a'") == [
        "r01",
        "r03",
        "r05",
        "r07",
        "r09",
        "r11",
    ]
    assert await ids("params.lr = '0.3' OR properties.lr = '0.10'") == ["r03", "r10"]
    assert await ids("attributes.status = 'Completed' AND status != 'Failed'") == [
        f"r0{i}" for i in range(6)
    ]
    assert await ids("status IN ('NotStarted') AND (name LIKE 'run-1%' OR run_id = 'r09')") == [
        "r09",
        "r10",
        "r11",
    ]
    assert await ids('tags.missing IS NULL AND tags.team = "b"', limit=2) == [
        "r01",
        "r03",
        "r05",
        "r07",
        "r09",
        "r11",
    ]
    assert await ids("created_at > '2000-01-01' AND created_at < '9999'") == sorted(LOSSES)
    assert await ids("end_time IS NULL AND tags.team = 'a'") == ["r06", "r08", "r10"]


async def test_remaining_counts_what_follows_the_page(
    client: Client, seeded: tuple[int, int]
) -> None:
    q = ListRuns(experiment_name=EXP, limit=5, count=True, min_seq=seeded[0])
    first = (await client.ask(q)).data
    assert first["remaining"] == len(LOSSES) - 5
    nxt = ListRuns(experiment_name=EXP, limit=5, count=True, cursor=first["next_cursor"], min_seq=0)
    assert (await client.ask(nxt)).data["remaining"] == len(LOSSES) - 10
    assert (await client.ask(ListRuns(experiment_name=EXP))).data["remaining"] is None


async def test_asked_metrics_come_with_each_run_of_the_page(
    client: Client, seeded: tuple[int, int]
) -> None:
    seq, metrics_seq = seeded
    q = ListRuns(
        experiment_name=EXP,
        order_by=("name ASC",),
        limit=5,
        metrics=("loss", "absent"),
        min_seq=seq,
        metrics_min_seq=metrics_seq,
    )
    runs = (await client.ask(q)).data["runs"]
    by_name = sorted(LOSSES, key=lambda r: f"run-{list(LOSSES).index(r)}")
    assert [r["run_id"] for r in runs] == by_name[:5]
    for run in runs:
        losses = LOSSES[run["run_id"]]
        assert losses is not None
        assert run["metrics"]["loss"] == {
            "last": losses[-1],
            "min": min(losses),
            "max": max(losses),
        }
        assert run["metrics"]["absent"] == {"last": None, "min": None, "max": None}
    with pytest.raises(InvalidInput):
        await client.ask(ListRuns(experiment_name=EXP, metrics=tuple(f"m{i}" for i in range(33))))


async def test_metric_summaries_read_your_writes(client: Client) -> None:
    await client.send(CreateExperiment(command_id=cid(), name="ryw"))
    created = await client.send(CreateRun(command_id=cid(), run_id="w1", experiment_name="ryw"))
    for step, value in enumerate([0.5, 0.25, 0.75]):
        point = MetricPoint(name="acc", kind="scalar", value=value, step=step, time=0.0)
        logged = await client.send(LogMetrics(command_id=cid(), run_id="w1", points=[point]))
        q = ListRuns(
            experiment_name="ryw",
            filter="metrics.acc IS NOT NULL",
            order_by=("metrics.acc.max DESC",),
            min_seq=created.seq,
            metrics_min_seq=logged.seq,
        )
        data = (await client.ask(q)).data
        assert data["metrics_seq"] >= logged.seq
        assert data["runs"][0]["metrics"]["acc"]["last"] == value


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ({"filter": "metrics.loss < "}, "ends too early"),
        ({"filter": "metrics.loss < 'x'"}, "metrics.loss compares with numbers"),
        ({"filter": "tags.team = 1"}, "tags.team compares with quoted strings"),
        ({"filter": "name = 'unterminated"}, "cannot read"),
        ({"filter": "colour = 'red'"}, "unknown column 'colour'"),
        ({"filter": "hyper.lr = '1'"}, "unknown column 'hyper.lr'"),
        ({"filter": "metrics.loss.median < 1"}, "metrics.<name>.(last|min|max)"),
        ({"filter": "metrics.loss LIKE 1"}, "metrics.loss compares with numbers"),
        ({"filter": "status = 'Done'"}, "status 'Done' is not one of"),
        ({"filter": "name ~ 'x'"}, "cannot read"),
        ({"filter": "name = 'x' AND"}, "ends too early"),
        ({"filter": "name = 'x' name = 'y'"}, "unexpected 'name'"),
        ({"filter": "(name = 'x'"}, "ends too early"),
        ({"filter": "name IN 'x'"}, "IN takes a list"),
        ({"filter": "name IS 'x'"}, "IS after name takes NULL"),
        ({"filter": "(" * 40 + "name = 'x'" + ")" * 40}, "nested parentheses"),
        ({"filter": " OR ".join(f"metrics.m{i} > 0" for i in range(9))}, "at most 8 metrics"),
        ({"order_by": ["metrics.loss SIDEWAYS"]}, "order_by: 'metrics.loss SIDEWAYS'"),
        ({"order_by": ["DESC"]}, "order_by: 'DESC' names no column"),
        ({"order_by": ["colour"]}, "order_by: unknown column 'colour'"),
        ({"order_by": ["a b c"]}, "order_by: 'a b c'"),
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"cursor": "not-a-cursor"}, "cursor: not a cursor that run.list made"),
        ({"order_by": ["x"] * 9}, "order_by"),
    ],
)
async def test_bad_queries_get_typed_errors_naming_the_fault(
    client: Client, query: dict[str, Any], named: str
) -> None:
    with pytest.raises(InvalidInput, match=re.escape(named)):
        await client.ask(ListRuns(experiment_name=EXP, **_as_query(query)))


def _as_query(query: dict[str, Any]) -> dict[str, Any]:
    if "order_by" in query:
        return {**query, "order_by": tuple(query["order_by"])}
    return query


async def test_a_cursor_works_only_for_its_own_query(
    client: Client, seeded: tuple[int, int]
) -> None:
    q = ListRuns(experiment_name=EXP, order_by=("metrics.loss.min",), limit=2, min_seq=seeded[0])
    cursor = (await client.ask(q)).data["next_cursor"]
    assert cursor is not None
    with pytest.raises(InvalidInput, match="belongs to another query"):
        await client.ask(
            ListRuns(experiment_name=EXP, order_by=("metrics.loss.max",), cursor=cursor)
        )
    with pytest.raises(InvalidInput, match="belongs to another query"):
        await client.ask(
            ListRuns(
                experiment_name=EXP,
                order_by=("metrics.loss.min",),
                filter="tags.team = 'a'",
                cursor=cursor,
            )
        )
    # the same query with another page size goes on from the same place
    nxt = ListRuns(experiment_name=EXP, order_by=("metrics.loss.min",), limit=3, cursor=cursor)
    assert [r["run_id"] for r in (await client.ask(nxt)).data["runs"]] == _expected("min")[2:5]


async def test_workspaces_do_not_see_each_others_runs(
    client: Client, seeded: tuple[int, int]
) -> None:
    other = Client(client.conn, client.workspace + "x")

    await other.send(CreateWorkspace(command_id=cid(), name=other.workspace))
    await other.send(CreateExperiment(command_id=cid(), name=EXP))
    done = await other.send(CreateRun(command_id=cid(), run_id="r00", experiment_name=EXP))
    q = ListRuns(experiment_name=EXP, order_by=("metrics.loss.min",), min_seq=done.seq)
    runs = (await other.ask(q)).data["runs"]
    assert [(r["run_id"], r["workspace"]) for r in runs] == [("r00", other.workspace)]
    assert (await other.ask(ListRuns(filter="tags.team = 'a'"))).data["runs"] == []


async def test_keys_with_braces_are_text_and_huge_numbers_compare(
    client: Client, seeded: tuple[int, int]
) -> None:
    """A key is spliced into a template that is filled with table names afterwards: its
    braces stay text. A number beyond SQLite's 64-bit integers compares as a float."""
    _, metrics_seq = seeded
    await client.send(SetRunTags(command_id=cid(), run_id="r00", tags={"{ws}": "v"}))
    braced = await client.send(SetRunTags(command_id=cid(), run_id="r01", tags={"{runs}": "v"}))
    for key, want in (("{ws}", ["r00"]), ("{runs}", ["r01"]), ("{x}", [])):
        q = ListRuns(experiment_name=EXP, filter=f"tags.`{key}` = 'v'", min_seq=braced.seq)
        assert [r["run_id"] for r in (await client.ask(q)).data["runs"]] == want, key
    huge = "99999999999999999999"
    for text in (f"metrics.loss < {huge}", f"metrics.loss IN (1, {huge})"):
        q = ListRuns(experiment_name=EXP, filter=text, metrics_min_seq=metrics_seq)
        runs = (await client.ask(q)).data["runs"]
        assert len(runs) == (10 if "<" in text else 0), text


async def test_a_forged_cursor_with_a_huge_number_is_refused(
    client: Client, seeded: tuple[int, int]
) -> None:
    import base64
    import json

    from cairn.services.tracking._runs_query import _fingerprint

    q = ListRuns(experiment_name=EXP, order_by=("metrics.loss ASC",))
    raw = json.dumps([1, _fingerprint(q), [10**30], "r00"]).encode()
    cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    with pytest.raises(InvalidInput, match="cursor"):
        await client.ask(msgspec.structs.replace(q, cursor=cursor))
