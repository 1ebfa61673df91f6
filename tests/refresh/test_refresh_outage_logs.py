"""While Paygentic cannot be read (down, failing, its circuit open), the refresh says so once
and again once it reads again, instead of a warning per object per cycle: with thousands of
pending objects, each cycle of an outage wrote thousands of identical lines."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.refresh.test_paygentic_refresh import INPUT, VERIFY, World, eventually, serving

ADD = """mutation($n: String!) {
  addBankAccount(input: {
    bankAccount: {accountNumber: $n, routingNumber: "021000021", holderName: "Acme"}
  }) { __typename } }"""


def told(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [
        (r.levelname, r.getMessage())
        for r in caplog.records
        if r.name == "payout_gateway.refresh" and r.levelno >= logging.INFO
    ]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    """Paygentic's circuit, once open, lets a probe through after 1 s."""
    with serving(tmp_path, circuit_reset_seconds=1.0) as world:
        yield world


async def test_an_unreadable_provider_is_logged_once_per_outage_not_per_object(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="payout_gateway")
    world.gql(VERIFY, {"input": INPUT})
    for n in range(6):
        assert world.gql(ADD, {"n": f"00022233344{n}"})["addBankAccount"] == {
            "__typename": "AddBankAccountSuccess"
        }
    # Eight pending objects (the payout account, its destination, six more accounts),
    # every read of which Paygentic now fails.
    fault = {"kind": "status", "status": 503, "count": 1000}
    fault["operation"] = "GET /v0/externalAccounts/{id}"
    injected = httpx.post(f"{world.sandbox_url}/_sandbox/faults", json=fault)
    assert injected.status_code == 201, injected.text
    await asyncio.sleep(3)  # thirty cycles
    outage = [("WARNING", "refresh: PAYGENTIC could not be read (PROVIDER_UNAVAILABLE)")]
    assert told(caplog) == outage
    httpx.delete(f"{world.sandbox_url}/_sandbox/faults")
    await eventually(lambda: len(told(caplog)) > 1)
    assert told(caplog) == [*outage, ("INFO", "refresh: PAYGENTIC reads work again")]
