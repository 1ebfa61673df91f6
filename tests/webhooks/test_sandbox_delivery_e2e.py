"""End to end over sockets: the Commet sandbox signs and delivers its payout events to the gateway,
which applies them once; early events are retried until the payout is known; replays change
nothing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from payout_gateway.domain.enums import PayoutStatus, Provider
from payout_gateway.sandbox.commet import CommetSandboxConfig, create_commet_sandbox
from payout_gateway.store import Store
from tests.support.gateway import SeededOrg, running_gateway
from tests.support.live_server import live_server
from tests.webhooks.support import (
    COMMET_SECRET,
    add_payout,
    changes_of,
    organization_ids,
    payout_status,
)

KEY = "ck_live_e2eHooks00001"
VERIFICATION = {
    "email": "ada@example.com",
    "businessType": "individual",
    "businessUrl": "https://ada.example.com",
    "documentUrl": "https://files.example.com/id.pdf",
    "bank": {
        "accountNumber": "000123456789",
        "accountHolderName": "Ada Lovelace",
        "routingNumber": "110000000",
    },
    "individual": {
        "firstName": "Ada",
        "lastName": "Lovelace",
        "phone": "+14155550123",
        "dateOfBirth": "1990-12-10",
        "address": {
            "line1": "1 Main St",
            "city": "San Francisco",
            "postalCode": "94105",
            "country": "US",
        },
    },
}


def data(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    return response.json()["data"]


def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_sandbox_webhooks_move_the_gateway_payout_once(tmp_path: Path) -> None:
    sandbox = create_commet_sandbox(CommetSandboxConfig(webhook_retry_delays=(0.2,) * 7))
    with (
        live_server(sandbox) as sandbox_url,
        httpx.Client(base_url=sandbox_url, headers={"x-api-key": KEY}, timeout=10) as commet,
    ):
        # The sandbox names its organization; the gateway's org is set up with that id.
        provider_org = data(
            commet.post("/_sandbox/webhooks", json={"url": "http://127.0.0.1:9/x"})
        )["organizationId"]
        org = SeededOrg(
            "commet-e2e",
            Provider.COMMET,
            KEY,
            provider_org_id=provider_org,
            webhook_secret=COMMET_SECRET,
        )
        with running_gateway(tmp_path, providers={}, orgs=(org,)) as gateway:
            database_url = f"sqlite:///{tmp_path}/gateway.db"

            def db(action: Callable[[Store], Any]) -> Any:
                async def run() -> Any:
                    store = Store.from_url(database_url)
                    try:
                        return await action(store)
                    finally:
                        await store.dispose()

                return asyncio.run(run())

            org_id = db(organization_ids)["commet-e2e"]
            data(
                commet.post(
                    "/_sandbox/webhooks",
                    json={"url": f"{gateway.url}/webhooks/commet", "secret": COMMET_SECRET},
                )
            )
            data(commet.post("/api/v1/payouts/verification", json=VERIFICATION))
            data(commet.post("/_sandbox/payout-account/status", json={"status": "verified"}))
            data(commet.post("/_sandbox/balance", json={"availableAmount": 50_000}))
            provider_payout = data(commet.post("/api/v1/payouts", json={"amount": 5000}))["id"]

            # payout.created is already on its way: the gateway answers 409 until it knows it.
            def deliveries(event: str) -> list[dict[str, Any]]:
                found = data(commet.get("/_sandbox/webhooks"))["deliveries"]
                return [d for d in found if d["event"] == event]

            eventually(lambda: any(d["statusCode"] == 409 for d in deliveries("payout.created")))
            payout = db(
                lambda store: add_payout(store, org_id, provider_payout, provider=Provider.COMMET)
            )
            eventually(lambda: any(d["delivered"] for d in deliveries("payout.created")))
            assert db(lambda store: payout_status(store, payout)) == PayoutStatus.PENDING

            data(
                commet.post(f"/_sandbox/payouts/{provider_payout}/status", json={"status": "paid"})
            )
            eventually(lambda: db(lambda store: payout_status(store, payout)) == PayoutStatus.PAID)
            eventually(lambda: any(d["delivered"] for d in deliveries("payout.paid")))

            # A replay of the paid event (same id, same bytes): acknowledged, nothing changes.
            paid_id = deliveries("payout.paid")[0]["eventId"]
            replay = data(commet.post(f"/_sandbox/webhooks/redeliver/{paid_id}"))
            assert (replay["statusCode"], replay["delivered"]) == (200, True)
            [change] = db(lambda store: changes_of(store, org_id, payout))
            assert (change.from_status, change.to_status) == ("PENDING", "PAID")
            assert change.source == "webhook"
