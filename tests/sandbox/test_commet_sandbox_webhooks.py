"""The Commet sandbox delivers its events as Commet does: signed, with Commet's headers, retried."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.routing import Mount

from payout_gateway.sandbox.commet import CommetSandboxConfig, create_commet_sandbox
from payout_gateway.sandbox.commet.webhooks import WebhookDispatcher

LIVE = "ck_live_Hooks0000A1"
OTHER = "ck_live_Hooks0000B2"
SECRET = "whsec_sandboxHooksSecret0001"
ENDPOINT = "https://receiver.test/webhooks/commet"
QUICK = (0.001,) * 7

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
            "state": "CA",
            "postalCode": "94105",
            "country": "US",
        },
    },
}


class Receiver:
    """The far end of the webhook: records requests, answers from a script (then 200)."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.script: list[int | Exception] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.script:
            step = self.script.pop(0)
            if isinstance(step, Exception):
                raise step
            return httpx.Response(step)
        return httpx.Response(200, json={"received": True})


@pytest.fixture
def receiver() -> Receiver:
    return Receiver()


def sandbox(receiver: Receiver, **config: Any) -> FastAPI:
    config.setdefault("webhook_retry_delays", QUICK)
    return create_commet_sandbox(
        CommetSandboxConfig(webhook_transport=httpx.MockTransport(receiver), **config)
    )


@pytest.fixture
def app(receiver: Receiver) -> FastAPI:
    return sandbox(receiver)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://commet.test"
    ) as http:
        yield http
    await dispatcher(app).aclose()


def dispatcher(app: Any) -> WebhookDispatcher:
    found = app.state.webhooks
    assert isinstance(found, WebhookDispatcher)
    return found


def auth(key: str = LIVE) -> dict[str, str]:
    return {"x-api-key": key}


def data(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    return response.json()["data"]


async def set_endpoint(
    client: httpx.AsyncClient, key: str = LIVE, url: str = ENDPOINT, secret: str | None = SECRET
) -> dict[str, Any]:
    body: dict[str, Any] = {"url": url}
    if secret is not None:
        body["secret"] = secret
    return dict(data(await client.post("/_sandbox/webhooks", json=body, headers=auth(key))))


async def ready(client: httpx.AsyncClient, key: str = LIVE) -> None:
    data(await client.post("/api/v1/payouts/verification", json=VERIFICATION, headers=auth(key)))
    data(
        await client.post(
            "/_sandbox/payout-account/status", json={"status": "verified"}, headers=auth(key)
        )
    )
    data(
        await client.post("/_sandbox/balance", json={"availableAmount": 50_000}, headers=auth(key))
    )


async def payout(client: httpx.AsyncClient, key: str = LIVE) -> str:
    return str(
        data(await client.post("/api/v1/payouts", json={"amount": 5000}, headers=auth(key)))["id"]
    )


def signed_by(request: httpx.Request, secret: str) -> bool:
    expected = hmac.new(secret.encode(), request.content, hashlib.sha256).hexdigest()
    return hmac.compare_digest(request.headers["x-commet-signature"], expected)


# --- configuration -----------------------------------------------------------------------------


async def test_setting_an_endpoint_answers_the_commet_organization_id(
    client: httpx.AsyncClient,
) -> None:
    answer = await set_endpoint(client)
    org = data(await client.get("/_sandbox/organization", headers=auth()))
    assert answer == {"organizationId": org["id"], "url": ENDPOINT, "secret": SECRET}
    state = data(await client.get("/_sandbox/webhooks", headers=auth()))
    assert state == {**answer, "deliveries": []}


async def test_a_secret_is_made_up_when_none_is_given(client: httpx.AsyncClient) -> None:
    answer = await set_endpoint(client, secret=None)
    assert answer["secret"].startswith("whsec_")
    assert len(answer["secret"]) > 20


@pytest.mark.parametrize(
    "body",
    [{}, {"url": "ftp://x.test/hook"}, {"url": "not a url"}, {"url": ENDPOINT, "secret": ""}],
)
async def test_invalid_endpoints_are_validation_errors(
    client: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    response = await client.post("/_sandbox/webhooks", json=body, headers=auth())
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "validation_error"


async def test_endpoint_routes_need_a_key(client: httpx.AsyncClient) -> None:
    response = await client.post("/_sandbox/webhooks", json={"url": ENDPOINT})
    assert response.status_code == 401


# --- delivery ----------------------------------------------------------------------------------


async def test_events_are_delivered_signed_with_commets_headers(
    client: httpx.AsyncClient, app: FastAPI, receiver: Receiver
) -> None:
    answer = await set_endpoint(client)
    await ready(client)
    payout_id = await payout(client)
    data(
        await client.post(
            f"/_sandbox/payouts/{payout_id}/status", json={"status": "paid"}, headers=auth()
        )
    )
    await dispatcher(app).idle()

    by_event = {json.loads(r.content)["event"]: r for r in receiver.requests}
    assert set(by_event) == {"payout.available", "payout.created", "payout.paid"}
    outbox = data(await client.get("/_sandbox/events", headers=auth()))
    for request in receiver.requests:
        envelope = json.loads(request.content)
        assert request.method == "POST"
        assert str(request.url) == ENDPOINT
        assert request.headers["content-type"] == "application/json"
        assert signed_by(request, SECRET)
        assert request.headers["x-commet-event"] == envelope["event"]
        assert request.headers["x-commet-event-id"] == envelope["id"]
        assert request.headers["x-commet-timestamp"] == envelope["timestamp"]
        assert set(envelope) == {
            "id",
            "event",
            "timestamp",
            "organizationId",
            "mode",
            "apiVersion",
            "data",
        }
        assert envelope["id"].startswith("whev_")
        assert envelope["organizationId"] == answer["organizationId"]
        assert envelope["mode"] == "live"
        assert envelope["apiVersion"] == "2026-07-11"
        assert envelope["id"] in {event["id"] for event in outbox}
    paid = json.loads(by_event["payout.paid"].content)["data"]
    assert paid["payoutId"] == payout_id
    assert paid["status"] == "paid"
    assert "paidAt" in paid


async def test_the_api_version_is_the_organizations_pin(
    client: httpx.AsyncClient, app: FastAPI, receiver: Receiver
) -> None:
    await set_endpoint(client)
    data(
        await client.post(
            "/_sandbox/organization", json={"versionPin": "2026-07-30"}, headers=auth()
        )
    )
    data(await client.post("/_sandbox/balance", json={"availableAmount": 1}, headers=auth()))
    await dispatcher(app).idle()
    assert json.loads(receiver.requests[0].content)["apiVersion"] == "2026-07-24"


async def test_non_2xx_answers_and_dropped_connections_are_retried_with_the_same_bytes(
    client: httpx.AsyncClient, app: FastAPI, receiver: Receiver
) -> None:
    await set_endpoint(client)
    receiver.script = [500, httpx.ConnectError("refused"), 302, 404]
    data(await client.post("/_sandbox/balance", json={"availableAmount": 10}, headers=auth()))
    await dispatcher(app).idle()

    assert len(receiver.requests) == 5
    assert len({request.content for request in receiver.requests}) == 1
    assert len({request.headers["x-commet-signature"] for request in receiver.requests}) == 1
    deliveries = data(await client.get("/_sandbox/webhooks", headers=auth()))["deliveries"]
    assert [(d["attempt"], d["statusCode"], d["delivered"]) for d in deliveries] == [
        (1, 500, False),
        (2, None, False),
        (3, 302, False),
        (4, 404, False),
        (5, 200, True),
    ]
    assert deliveries[1]["error"] == "ConnectError"


async def test_delivery_gives_up_after_eight_attempts(
    client: httpx.AsyncClient, app: FastAPI, receiver: Receiver
) -> None:
    await set_endpoint(client)
    receiver.script = [503] * 20
    data(await client.post("/_sandbox/balance", json={"availableAmount": 10}, headers=auth()))
    await dispatcher(app).idle()
    assert len(receiver.requests) == 8


async def test_the_retry_delays_are_the_configured_backoff(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    slept: list[float] = []
    original = asyncio.sleep

    async def recording_sleep(delay: float, *args: Any) -> Any:
        slept.append(delay)
        return await original(0, *args)

    app = sandbox(receiver, webhook_retry_delays=(0.25, 0.5))
    receiver.script = [500, 500, 500]
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://commet.test"
    ) as client:
        await set_endpoint(client)
        monkeypatch.setattr(asyncio, "sleep", recording_sleep)
        data(await client.post("/_sandbox/balance", json={"availableAmount": 1}, headers=auth()))
        await dispatcher(app).idle()
    assert [delay for delay in slept if delay] == [0.25, 0.5]
    assert len(receiver.requests) == 3


async def test_events_before_an_endpoint_or_after_removal_are_not_delivered(
    client: httpx.AsyncClient, app: FastAPI, receiver: Receiver
) -> None:
    data(await client.post("/_sandbox/balance", json={"availableAmount": 1}, headers=auth()))
    await set_endpoint(client)
    data(await client.post("/_sandbox/balance", json={"availableAmount": 2}, headers=auth()))
    await dispatcher(app).idle()
    assert len(receiver.requests) == 1
    assert data(await client.delete("/_sandbox/webhooks", headers=auth())) == {"removed": True}
    data(await client.post("/_sandbox/balance", json={"availableAmount": 3}, headers=auth()))
    await dispatcher(app).idle()
    assert len(receiver.requests) == 1
    amounts = [
        e["data"]["availableAmount"]
        for e in data(await client.get("/_sandbox/events", headers=auth()))
    ]
    assert amounts == [1, 2, 3]  # the outbox keeps everything


async def test_each_organization_has_its_own_endpoint_and_secret(
    client: httpx.AsyncClient, app: FastAPI, receiver: Receiver
) -> None:
    await set_endpoint(client, LIVE, "https://a.test/hook", "whsec_aaaaaaaaaaaaaaaa")
    await set_endpoint(client, OTHER, "https://b.test/hook", "whsec_bbbbbbbbbbbbbbbb")
    data(await client.post("/_sandbox/balance", json={"availableAmount": 1}, headers=auth(LIVE)))
    data(await client.post("/_sandbox/balance", json={"availableAmount": 2}, headers=auth(OTHER)))
    await dispatcher(app).idle()
    by_host = {request.url.host: request for request in receiver.requests}
    assert signed_by(by_host["a.test"], "whsec_aaaaaaaaaaaaaaaa")
    assert signed_by(by_host["b.test"], "whsec_bbbbbbbbbbbbbbbb")
    assert json.loads(by_host["b.test"].content)["data"]["availableAmount"] == 2


# --- redelivery --------------------------------------------------------------------------------


async def test_redelivery_sends_the_same_event_again_once(
    client: httpx.AsyncClient, app: FastAPI, receiver: Receiver
) -> None:
    await set_endpoint(client)
    data(await client.post("/_sandbox/balance", json={"availableAmount": 7}, headers=auth()))
    await dispatcher(app).idle()
    [first] = receiver.requests
    event_id = json.loads(first.content)["id"]
    receiver.script = [409]
    answer = data(await client.post(f"/_sandbox/webhooks/redeliver/{event_id}", headers=auth()))
    assert answer["eventId"] == event_id
    assert answer["attempt"] == 2
    assert answer["statusCode"] == 409
    assert answer["delivered"] is False
    again = receiver.requests[1]
    assert again.content == first.content
    assert again.headers["x-commet-signature"] == first.headers["x-commet-signature"]
    await dispatcher(app).idle()
    assert len(receiver.requests) == 2  # a redelivery is one attempt, not retried


@pytest.mark.parametrize(
    "prepare",
    [
        lambda client: set_endpoint(client),  # endpoint, no such event
        lambda client: client.post(
            "/_sandbox/balance", json={"availableAmount": 1}, headers=auth()
        ),
    ],
)
async def test_redelivery_without_the_event_or_an_endpoint_is_404(
    client: httpx.AsyncClient, prepare: Callable[[httpx.AsyncClient], Any]
) -> None:
    await prepare(client)
    events = data(await client.get("/_sandbox/events", headers=auth()))
    event_id = events[0]["id"] if events else "whev_nope"
    response = await client.post(f"/_sandbox/webhooks/redeliver/{event_id}", headers=auth())
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


async def test_another_organizations_event_cannot_be_redelivered(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    await set_endpoint(client, OTHER)
    data(await client.post("/_sandbox/balance", json={"availableAmount": 1}, headers=auth(LIVE)))
    event_id = data(await client.get("/_sandbox/events", headers=auth(LIVE)))[0]["id"]
    response = await client.post(f"/_sandbox/webhooks/redeliver/{event_id}", headers=auth(OTHER))
    assert response.status_code == 404


# --- mounted in another app (sandbox mode): no lifespan runs --------------------------------


async def test_delivery_works_when_mounted_in_another_app(receiver: Receiver) -> None:
    inner = sandbox(receiver)
    outer = Starlette(routes=[Mount("/sandbox/commet", app=inner)])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=outer), base_url="http://gateway.test"
    ) as client:
        response = await client.post(
            "/sandbox/commet/_sandbox/webhooks",
            json={"url": ENDPOINT, "secret": SECRET},
            headers=auth(),
        )
        assert response.status_code == 200
        await client.post(
            "/sandbox/commet/_sandbox/balance", json={"availableAmount": 1}, headers=auth()
        )
        await dispatcher(inner).idle()
    assert len(receiver.requests) == 1
    assert signed_by(receiver.requests[0], SECRET)


def test_events_emitted_outside_an_event_loop_stay_in_the_outbox(receiver: Receiver) -> None:
    app = sandbox(receiver)
    state = app.state.sandbox
    org = state.organization(LIVE)
    dispatcher(app).configure(org, ENDPOINT, SECRET)
    state.set_available_amount(org, 5)
    assert [event.name for event in state.events] == ["payout.available"]
    assert receiver.requests == []


def test_config_rejects_impossible_webhook_settings() -> None:
    with pytest.raises(ValueError, match="webhook_retry_delays"):
        CommetSandboxConfig(webhook_retry_delays=(-1.0,))
    with pytest.raises(ValueError, match="webhook_timeout_seconds"):
        CommetSandboxConfig(webhook_timeout_seconds=0)
