"""``POST /webhooks/commet`` and ``POST /webhooks/paygentic`` over a real socket (docs/hardening.md
"Webhooks"): valid deliveries applied once, forgeries and garbage refused with 4xx, never 5xx."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from payout_gateway.domain.enums import PayoutStatus, Provider
from payout_gateway.store import Store
from tests.support.gateway import RunningGateway, SeededOrg, running_gateway
from tests.webhooks.support import (
    COMMET_SECRET,
    OTHER_COMMET_SECRET,
    OTHER_SVIX_SECRET,
    SVIX_SECRET,
    add_payout,
    changes_of,
    commet_body,
    commet_headers,
    commet_signature,
    new_id,
    organization_ids,
    paygentic_body,
    payout_status,
    recorded_events,
    svix_headers,
)

T = TypeVar("T")

ORGS = (
    SeededOrg(
        "commet-hooks",
        Provider.COMMET,
        "ck_live_hooks0000001",
        provider_org_id="org_commetA",
        webhook_secret=COMMET_SECRET,
    ),
    SeededOrg(
        "commet-silent", Provider.COMMET, "ck_live_silent000002", provider_org_id="org_commetS"
    ),
    SeededOrg(
        "paygentic-hooks",
        Provider.PAYGENTIC,
        "pgx_hooks_token_0001",
        provider_org_id="org_paygenticA",
        webhook_secret=SVIX_SECRET,
    ),
)


@dataclass(frozen=True)
class Hooks:
    gateway: RunningGateway
    database_url: str
    orgs: dict[str, str]
    http: httpx.Client

    def db(self, action: Callable[[Store], Awaitable[T]]) -> T:
        """Run ``action`` on a Store of our own over the gateway's SQLite file."""

        async def run() -> T:
            store = Store.from_url(self.database_url)
            try:
                return await action(store)
            finally:
                await store.dispose()

        return asyncio.run(run())

    def commet_payout(self) -> tuple[str, str]:
        """(gateway payout id, Commet payout id) of a new pending payout of commet-hooks."""
        provider_id = new_id("po_")
        org = self.orgs["commet-hooks"]
        payout = self.db(
            lambda store: add_payout(store, org, provider_id, provider=Provider.COMMET)
        )
        return payout, provider_id

    def status(self, payout: str) -> str:
        return self.db(lambda store: payout_status(store, payout))

    def changes(self, payout: str) -> int:
        org = self.orgs["commet-hooks"]
        return len(self.db(lambda store: changes_of(store, org, payout)))

    def post_commet(self, body: bytes, headers: dict[str, str]) -> httpx.Response:
        return self.http.post("/webhooks/commet", content=body, headers=headers)

    def post_paygentic(self, body: bytes, headers: dict[str, str]) -> httpx.Response:
        return self.http.post("/webhooks/paygentic", content=body, headers=headers)


@pytest.fixture(scope="module")
def hooks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hooks]:
    tmp_path: Path = tmp_path_factory.mktemp("webhooks")
    with (
        running_gateway(tmp_path, providers={}, orgs=ORGS) as gateway,
        httpx.Client(base_url=gateway.url, timeout=10) as http,
    ):
        database_url = f"sqlite:///{tmp_path}/gateway.db"
        hooks = Hooks(gateway, database_url, {}, http)
        hooks.orgs.update(hooks.db(organization_ids))
        yield hooks


def now() -> int:
    return int(time.time())


def seconds_from_now(offset: int, *, accepted: bool) -> int:
    """Unix seconds ``offset`` from the wall clock, rounded so that the time the request takes
    and the dropped fraction of a second both push away from the window's edge: the gateway
    compares with its own, slightly later, clock."""
    moment = time.time()
    # Ceil when the drift of time would push across the edge (a past timestamp that must
    # stay inside, a future one that must stay outside).
    return (math.ceil(moment) if (offset < 0) == accepted else math.floor(moment)) + offset


# --- Commet ------------------------------------------------------------------------------------


def test_a_valid_commet_delivery_is_applied_once_and_answered_fast(hooks: Hooks) -> None:
    payout, provider_id = hooks.commet_payout()
    body = commet_body("payout.paid", payout_id=provider_id)
    started = time.monotonic()
    response = hooks.post_commet(body, commet_headers(body))
    assert time.monotonic() - started < 2
    assert response.status_code == 200
    assert response.json() == {"received": True}
    assert hooks.status(payout) == PayoutStatus.PAID
    assert hooks.changes(payout) == 1


def flip(body: bytes, index: int) -> bytes:
    return body[:index] + bytes([body[index] ^ 0x01]) + body[index + 1 :]


def one_byte_more(body: bytes) -> bytes:
    """The same envelope, still valid JSON, with the amount's first digit changed."""
    tampered = body.replace(b'"amount":5000', b'"amount":9000', 1)
    assert len(tampered) == len(body) and tampered != body
    return tampered


REFUSALS: list[tuple[str, Callable[[bytes], tuple[bytes, dict[str, str]]], int]] = [
    ("wrong secret", lambda b: (b, commet_headers(b, OTHER_COMMET_SECRET)), 401),
    ("one tampered byte", lambda b: (one_byte_more(b), commet_headers(b)), 401),
    ("Paygentic's secret", lambda b: (b, commet_headers(b, SVIX_SECRET)), 401),
    ("no signature", lambda b: (b, {"Content-Type": "application/json"}), 401),
    ("malformed signature", lambda b: (b, {"X-Commet-Signature": "sha256=abc"}), 400),
    ("Svix headers instead", lambda b: (b, svix_headers(b, SVIX_SECRET, timestamp=now())), 401),
    (
        "unknown organization",
        lambda b: (
            (forged := b.replace(b"org_commetA", b"org_commetX")),
            commet_headers(forged),
        ),
        401,
    ),
    (
        "organization without a secret",
        lambda b: ((other := b.replace(b"org_commetA", b"org_commetS")), commet_headers(other)),
        401,
    ),
    ("not JSON", lambda b: (b[:-1], {"X-Commet-Signature": commet_signature(b[:-1])}), 400),
]


@pytest.mark.parametrize(("case", "make", "status"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_refused_commet_deliveries_change_nothing(
    hooks: Hooks, case: str, make: Callable[[bytes], tuple[bytes, dict[str, str]]], status: int
) -> None:
    payout, provider_id = hooks.commet_payout()
    body, headers = make(commet_body("payout.failed", payout_id=provider_id))
    response = hooks.post_commet(body, headers)
    assert response.status_code == status
    assert response.json()["received"] is False
    assert hooks.status(payout) == PayoutStatus.PENDING
    assert hooks.changes(payout) == 0


@pytest.mark.parametrize("provider", ["commet", "paygentic"])
def test_a_forged_delivery_never_queues_for_the_database_writer(
    hooks: Hooks, provider: str
) -> None:
    # Finding whose secret to check is a read: an unsigned caller must not join the queue of
    # writers (SQLite has one at a time), where a flood of forgeries would hold up every
    # mutation. Here another process holds the writer's turn meanwhile: the forgery is still
    # refused at once, where queued it waited the busy timeout out and answered 503.
    if provider == "commet":
        body = commet_body("payout.paid", payout_id=new_id("po_"))
        headers = commet_headers(body, OTHER_COMMET_SECRET)
    else:
        body = paygentic_body("subscription.created.v0")
        headers = svix_headers(body, OTHER_SVIX_SECRET, timestamp=now())

    async def forge_while_writing(store: Store) -> int:
        async with store.session() as session:
            await session.get_organization(hooks.orgs["commet-hooks"])
            async with httpx.AsyncClient(base_url=hooks.gateway.url, timeout=30) as client:
                response = await client.post(f"/webhooks/{provider}", content=body, headers=headers)
        return response.status_code

    assert hooks.db(forge_while_writing) == 401


def test_duplicate_parallel_and_replayed_deliveries_apply_once(hooks: Hooks) -> None:
    payout, provider_id = hooks.commet_payout()
    body = commet_body("payout.paid", payout_id=provider_id)
    headers = commet_headers(body)
    assert hooks.post_commet(body, headers).status_code == 200
    assert hooks.post_commet(body, headers).status_code == 200

    async def parallel() -> list[int]:
        async with httpx.AsyncClient(base_url=hooks.gateway.url, timeout=10) as client:
            responses = await asyncio.gather(
                *(client.post("/webhooks/commet", content=body, headers=headers) for _ in range(10))
            )
        return [response.status_code for response in responses]

    assert asyncio.run(parallel()) == [200] * 10
    # A capture replayed after the payout settled (Commet signs no timestamp): still once.
    assert hooks.post_commet(body, headers).status_code == 200
    assert hooks.status(payout) == PayoutStatus.PAID
    assert hooks.changes(payout) == 1


def test_ten_parallel_first_deliveries_apply_once(hooks: Hooks) -> None:
    payout, provider_id = hooks.commet_payout()
    body = commet_body("payout.failed", payout_id=provider_id)
    headers = commet_headers(body)

    async def parallel() -> list[int]:
        async with httpx.AsyncClient(base_url=hooks.gateway.url, timeout=10) as client:
            responses = await asyncio.gather(
                *(client.post("/webhooks/commet", content=body, headers=headers) for _ in range(10))
            )
        return [response.status_code for response in responses]

    assert asyncio.run(parallel()) == [200] * 10
    assert hooks.status(payout) == PayoutStatus.FAILED
    assert hooks.changes(payout) == 1


def test_an_event_for_an_unknown_payout_is_409_and_applied_on_the_retry(hooks: Hooks) -> None:
    provider_id = new_id("po_")
    body = commet_body("payout.paid", payout_id=provider_id)
    event_id = json.loads(body)["id"]
    response = hooks.post_commet(body, commet_headers(body))
    assert response.status_code == 409
    assert hooks.db(lambda store: recorded_events(store, event_id)) == []
    org = hooks.orgs["commet-hooks"]
    payout = hooks.db(lambda store: add_payout(store, org, provider_id, provider=Provider.COMMET))
    assert hooks.post_commet(body, commet_headers(body)).status_code == 200
    assert hooks.status(payout) == PayoutStatus.PAID


def test_payout_available_is_acknowledged_and_recorded(hooks: Hooks) -> None:
    body = commet_body("payout.available", availableAmount=5000, currency="usd")
    assert hooks.post_commet(body, commet_headers(body)).json() == {"received": True}
    event_id = json.loads(body)["id"]
    assert hooks.db(lambda store: recorded_events(store, event_id)) == [
        ("payout.available", hooks.orgs["commet-hooks"], "ignored")
    ]


@pytest.mark.parametrize("path", ["/webhooks/commet", "/webhooks/paygentic"])
def test_oversized_bodies_are_413(hooks: Hooks, path: str) -> None:
    body = b'{"pad": "' + b"x" * (300 * 1024) + b'"}'
    response = hooks.http.post(path, content=body, headers={"X-Commet-Signature": "0" * 64})
    assert response.status_code == 413


def test_only_post_is_routed(hooks: Hooks) -> None:
    assert hooks.http.get("/webhooks/commet").status_code == 405


# --- Paygentic ---------------------------------------------------------------------------------


def test_a_valid_paygentic_delivery_is_acknowledged_and_recorded_once(hooks: Hooks) -> None:
    body = paygentic_body("subscription.created.v0")
    headers = svix_headers(body, timestamp=now())
    first = hooks.post_paygentic(body, headers)
    assert first.status_code == 200
    assert first.json() == {"received": True}
    assert hooks.post_paygentic(body, headers).status_code == 200
    event_id = json.loads(body)["eventId"]
    assert hooks.db(lambda store: recorded_events(store, event_id)) == [
        ("subscription.created.v0", hooks.orgs["paygentic-hooks"], "ignored")
    ]


@pytest.mark.parametrize(
    ("offset", "status"), [(-301, 401), (301, 401), (-299, 200), (299, 200), (0, 200)]
)
def test_svix_timestamps_outside_five_minutes_are_refused(
    hooks: Hooks, offset: int, status: int
) -> None:
    body = paygentic_body()
    timestamp = seconds_from_now(offset, accepted=status == 200)
    response = hooks.post_paygentic(body, svix_headers(body, timestamp=timestamp))
    assert response.status_code == status


@pytest.mark.parametrize(
    ("case", "secret", "tamper", "status"),
    [
        ("wrong secret", "whsec_QUJDREVGR0hJSktMTU5PUA==", False, 401),
        ("one tampered byte", SVIX_SECRET, True, 401),
        ("Commet's secret", COMMET_SECRET, False, 401),
    ],
)
def test_refused_paygentic_deliveries_record_nothing(
    hooks: Hooks, case: str, secret: str, tamper: bool, status: int
) -> None:
    body = paygentic_body()
    headers = svix_headers(body, secret, timestamp=now())
    sent = flip(body, 20) if tamper else body
    response = hooks.post_paygentic(sent, headers)
    assert response.status_code == status
    event_id = json.loads(body)["eventId"]
    assert hooks.db(lambda store: recorded_events(store, event_id)) == []


# --- fuzzing: whatever the headers, 4xx and never 5xx -----------------------------------------

# What HTTP lets through in a header value (no CR, LF or NUL), ASCII and Latin-1 alike.
header_values = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
    max_size=300,
).map(str.strip)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    signature=header_values,
    message_id=header_values,
    timestamp=st.one_of(header_values, st.integers(-(10**15), 10**15).map(str)),
    valid_body=st.booleans(),
)
def test_fuzzed_signature_headers_always_give_a_4xx(
    hooks: Hooks, signature: str, message_id: str, timestamp: str, valid_body: bool
) -> None:
    commet = commet_body("payout.paid", payout_id="po_fuzz") if valid_body else b"{}"
    paygentic = paygentic_body() if valid_body else b"{}"

    def encoded(headers: dict[str, str]) -> dict[str, bytes]:
        return {name: value.encode("latin-1") for name, value in headers.items()}

    responses = [
        hooks.http.post(
            "/webhooks/commet",
            content=commet,
            headers=encoded({"X-Commet-Signature": signature, "X-Commet-Event-Id": message_id}),
        ),
        hooks.http.post(
            "/webhooks/paygentic",
            content=paygentic,
            headers=encoded(
                {"svix-id": message_id, "svix-timestamp": timestamp, "svix-signature": signature}
            ),
        ),
    ]
    for response in responses:
        assert 400 <= response.status_code < 500, response.text


@pytest.mark.parametrize("size", [8 * 1024, 60 * 1024])
def test_huge_signature_headers_are_refused_with_4xx(hooks: Hooks, size: int) -> None:
    body = paygentic_body()
    headers = svix_headers(body, timestamp=now())
    headers["svix-signature"] = "v1," + "A" * size
    assert 400 <= hooks.post_paygentic(body, headers).status_code < 500
    commet = commet_body("payout.paid", payout_id="po_huge")
    assert 400 <= hooks.post_commet(commet, {"X-Commet-Signature": "a" * size}).status_code < 500


# --- property over the route: any order and repetition, one forward move ---------------------


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    terminal=st.sampled_from(["payout.paid", "payout.failed"]),
    order=st.lists(st.sampled_from(["created", "terminal"]), min_size=1, max_size=6),
)
def test_any_order_of_deliveries_over_http_ends_at_the_furthest_status(
    hooks: Hooks, terminal: str, order: list[str]
) -> None:
    payout, provider_id = hooks.commet_payout()
    bodies = {
        "created": commet_body("payout.created", payout_id=provider_id),
        "terminal": commet_body(terminal, payout_id=provider_id),
    }
    for name in order:
        body = bodies[name]
        assert hooks.post_commet(body, commet_headers(body)).status_code == 200
    expected = {"payout.paid": "PAID", "payout.failed": "FAILED"}[terminal]
    assert hooks.status(payout) == (expected if "terminal" in order else "PENDING")
    assert hooks.changes(payout) == (1 if "terminal" in order else 0)
