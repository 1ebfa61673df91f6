"""``/metrics`` over a real socket: what a request, a provider call, a webhook and a status
change add to it, and that no label carries anything a caller sent."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from payout_gateway.domain.enums import Provider
from payout_gateway.sandbox.commet import create_commet_sandbox
from tests.realtime.support import commet_verifies_payout_account, verify
from tests.support.gateway import RunningGateway, SeededOrg, running_gateway
from tests.support.live_server import live_server

ORGS = (SeededOrg("metrics-a", Provider.COMMET, "ck_live_metricsA00001"),)
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningGateway, str]]:
    with (
        live_server(create_commet_sandbox()) as commet_url,
        running_gateway(
            tmp_path_factory.mktemp("metrics"),
            commet_url=f"{commet_url}/api/v1",
            orgs=ORGS,
            refresh_interval_seconds=0,
        ) as running,
    ):
        yield running, commet_url


@pytest.fixture(scope="module")
def gateway(world: tuple[RunningGateway, str]) -> RunningGateway:
    return world[0]


def scrape(gateway: RunningGateway) -> Samples:
    response = httpx.get(f"{gateway.url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def grew(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


async def test_requests_provider_calls_and_status_changes_are_counted(
    world: tuple[RunningGateway, str],
) -> None:
    gateway, commet_url = world
    before = scrape(gateway)
    # completePayoutVerification twice, the processor approving in between: GraphQL POSTs,
    # Commet calls, and a status change learned from the second answer.
    await verify(gateway.graphql_url, gateway.keys["metrics-a"])
    await commet_verifies_payout_account(commet_url, ORGS[0].provider_api_key)
    await verify(gateway.graphql_url, gateway.keys["metrics-a"])
    after = scrape(gateway)

    graphql = {"route": "/graphql", "method": "POST", "status": "200"}
    assert grew(before, after, "payout_gateway_http_requests_total", **graphql) == 2
    assert (
        grew(before, after, "payout_gateway_http_request_duration_seconds_count", route="/graphql")
        >= 1
    )
    answered = [
        labels
        for (name, labels), count in after.items()
        if name == "payout_gateway_provider_attempts_total"
        and dict(labels)["provider"] == "COMMET"
        and count > value(before, name, **dict(labels))
    ]
    assert answered and all(dict(labels)["outcome"].isdigit() for labels in answered)
    assert (
        grew(
            before,
            after,
            "payout_gateway_provider_request_duration_seconds_count",
            provider="COMMET",
        )
        >= 1
    )
    assert value(after, "payout_gateway_provider_circuit_open", provider="COMMET") == 0
    assert (
        grew(
            before,
            after,
            "payout_gateway_status_changes_total",
            object_type="payout_account",
            to_status="VERIFIED",
            source="provider_response",
        )
        == 1
    )


def test_labels_come_from_fixed_sets_never_from_the_request(gateway: RunningGateway) -> None:
    before = scrape(gateway)
    canary = "canary-9f1c"
    httpx.get(f"{gateway.url}/{canary}?q={canary}")
    httpx.request("PROPFIND", f"{gateway.url}/graphql")
    refused = httpx.post(
        f"{gateway.url}/webhooks/commet",
        content=b'{"id": "evt_1"}',
        headers={"content-type": "application/json", "x-commet-signature": canary},
    )
    assert refused.status_code in (400, 401)
    after = scrape(gateway)
    text = httpx.get(f"{gateway.url}/metrics").text
    assert canary not in text and "PROPFIND" not in text
    assert (
        grew(
            before,
            after,
            "payout_gateway_http_requests_total",
            route="other",
            method="GET",
            status="404",
        )
        == 1
    )
    assert (
        sum(
            count - value(before, name, **dict(labels))
            for (name, labels), count in after.items()
            if name == "payout_gateway_http_requests_total" and dict(labels)["method"] == "other"
        )
        == 1
    )
    assert (
        grew(
            before,
            after,
            "payout_gateway_webhook_deliveries_total",
            provider="COMMET",
            outcome="refused",
        )
        == 1
    )


def test_metrics_can_be_turned_off(tmp_path: Path) -> None:
    with running_gateway(tmp_path, orgs=ORGS, refresh_interval_seconds=0, metrics=False) as off:
        assert httpx.get(f"{off.url}/metrics").status_code == 404
