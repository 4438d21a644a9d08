"""The gateway's ``/metrics``: the process's metrics in the Prometheus text format, behind
sign-in, moving as the studio's pages send their queries."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from cairn.rpc import Client
from cairn.services.gateway import Gateway


def _requests(text: str, verb: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "cairn_rpc_requests_total" and sample.labels["verb"] == verb:
                total += sample.value
    return total


async def test_metrics_parse_and_move_with_the_pages(
    browser_http: httpx.AsyncClient, client: Client
) -> None:
    before = await browser_http.get("/metrics")
    assert before.status_code == 200
    assert before.headers["content-type"].startswith("text/plain")
    listed = _requests(before.text, "experiment.list")
    page = await browser_http.get(f"/w/{client.workspace}/experiments")
    assert page.status_code == 200
    after = await browser_http.get("/metrics")
    assert _requests(after.text, "experiment.list") == listed + 1
    names = {f.name for f in text_string_to_metric_families(after.text)}
    assert {"cairn_projection_lag_messages", "cairn_rpc_request_duration_seconds"} <= names


async def test_metrics_need_a_user(gateway: Gateway) -> None:
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        assert (await http.get("/metrics")).status_code == 401
