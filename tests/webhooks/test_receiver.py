"""The webhook receiver on a real Store (SQLite, and PostgreSQL where marked): verify, de-duplicate
for good, apply forward only, publish once."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest
from pydantic import SecretStr

from payout_gateway.domain.enums import PayoutStatus, Provider
from payout_gateway.domain.errors import WebhookRejectedError
from payout_gateway.domain.events import ChangeSource
from payout_gateway.domain.models import OrganizationProfile, ProviderCredentials
from payout_gateway.events.broker import InProcessBroker
from payout_gateway.events.pipeline import StatusPipeline
from payout_gateway.store import Store
from payout_gateway.tenancy import Tenancy
from payout_gateway.web.webhooks import Outcome, WebhookReceiver
from tests.webhooks.support import (
    COMMET_SECRET,
    OTHER_COMMET_SECRET,
    SVIX_SECRET,
    T0,
    add_payout,
    changes_of,
    commet_body,
    commet_headers,
    new_id,
    paygentic_body,
    payout_status,
    recorded_events,
    svix_headers,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@dataclass
class World:
    store: Store
    broker: InProcessBroker
    receiver: WebhookReceiver
    clock: FakeClock
    commet_org: str
    paygentic_org: str


async def seed_org(
    store: Store,
    name: str,
    provider: Provider,
    *,
    provider_org_id: str | None,
    secret: str | None,
) -> str:
    org = await Tenancy(store, SecretStr("pepper")).create_organization(
        name=name,
        provider=provider,
        credentials=ProviderCredentials(
            api_key=SecretStr("key_" + name), provider_organization_id=provider_org_id
        ),
        profile=OrganizationProfile(country="US", currency="USD"),
    )
    if secret is not None:
        async with store.session() as session:
            await session.set_webhook_secret(org.id, secret)
    return org.id


@pytest.fixture
async def world(store: Store) -> AsyncIterator[World]:
    broker = InProcessBroker()
    clock = FakeClock()
    receiver = WebhookReceiver(store, StatusPipeline(store, broker), clock=clock)
    commet_org = await seed_org(
        store, "commet-a", Provider.COMMET, provider_org_id="org_commetA", secret=COMMET_SECRET
    )
    paygentic_org = await seed_org(
        store,
        "paygentic-a",
        Provider.PAYGENTIC,
        provider_org_id="org_paygenticA",
        secret=SVIX_SECRET,
    )
    yield World(store, broker, receiver, clock, commet_org, paygentic_org)
    await broker.aclose()


async def deliver(world: World, body: bytes, secret: str = COMMET_SECRET) -> Outcome:
    return await world.receiver.commet(body, commet_headers(body, secret))


async def refused(world: World, body: bytes, headers: dict[str, str]) -> WebhookRejectedError:
    with pytest.raises(WebhookRejectedError) as caught:
        await world.receiver.commet(body, headers)
    return caught.value


# --- Commet: applied once ----------------------------------------------------------------------


async def test_a_signed_payout_paid_moves_the_payout_once_with_an_audit_row(world: World) -> None:
    payout = await add_payout(world.store, world.commet_org, "po_1", provider=Provider.COMMET)
    body = commet_body("payout.paid", payout_id="po_1", event_id="whev_paid")
    async with world.broker.subscribe(world.commet_org) as queue:
        assert await deliver(world, body) is Outcome.APPLIED
        published = queue.get_nowait()
        assert queue.empty()
    assert await payout_status(world.store, payout) == PayoutStatus.PAID
    [change] = await changes_of(world.store, world.commet_org, payout)
    assert (change.from_status, change.to_status) == ("PENDING", "PAID")
    assert change.source is ChangeSource.WEBHOOK
    assert change.provider_status == "paid"
    assert published == change
    assert await recorded_events(world.store, "whev_paid") == [
        ("payout.paid", world.commet_org, "applied")
    ]


async def test_a_payout_event_in_sandbox_mode_is_acknowledged_and_moves_nothing(
    world: World,
) -> None:
    # Commet's payouts are live-only (a sandbox key is refused on every payout route): such
    # an event names no payout the gateway made, even where the id matches one.
    payout = await add_payout(world.store, world.commet_org, "po_1", provider=Provider.COMMET)
    envelope = json.loads(commet_body("payout.paid", payout_id="po_1", event_id="whev_sandbox"))
    body = json.dumps({**envelope, "mode": "sandbox"}).encode()
    assert await deliver(world, body) is Outcome.IGNORED
    assert await payout_status(world.store, payout) == PayoutStatus.PENDING
    assert await changes_of(world.store, world.commet_org, payout) == []
    assert await recorded_events(world.store, "whev_sandbox") == [
        ("payout.paid", world.commet_org, "ignored")
    ]


async def test_a_duplicate_and_a_replay_days_later_change_nothing(world: World) -> None:
    payout = await add_payout(world.store, world.commet_org, "po_1", provider=Provider.COMMET)
    body = commet_body("payout.failed", payout_id="po_1", event_id="whev_failed")
    assert await deliver(world, body) is Outcome.APPLIED
    assert await deliver(world, body) is Outcome.UNCHANGED
    # Commet signs no timestamp: a capture replayed days later still verifies.
    world.clock.now += timedelta(days=3)
    assert await deliver(world, body) is Outcome.UNCHANGED
    assert await payout_status(world.store, payout) == PayoutStatus.FAILED
    assert len(await changes_of(world.store, world.commet_org, payout)) == 1
    assert await recorded_events(world.store, "whev_failed") == [
        ("payout.failed", world.commet_org, "applied")
    ]


async def test_ten_parallel_identical_deliveries_apply_once(world: World) -> None:
    payout = await add_payout(world.store, world.commet_org, "po_1", provider=Provider.COMMET)
    body = commet_body("payout.paid", payout_id="po_1")
    outcomes = await asyncio.gather(*(deliver(world, body) for _ in range(10)))
    assert outcomes.count(Outcome.APPLIED) == 1
    assert outcomes.count(Outcome.UNCHANGED) == 9
    assert len(await changes_of(world.store, world.commet_org, payout)) == 1


async def test_a_late_created_after_paid_is_recorded_stale_and_moves_nothing(
    world: World,
) -> None:
    payout = await add_payout(world.store, world.commet_org, "po_1", provider=Provider.COMMET)
    assert await deliver(world, commet_body("payout.paid", payout_id="po_1")) is Outcome.APPLIED
    created = commet_body("payout.created", payout_id="po_1", event_id="whev_created")
    assert await deliver(world, created) is Outcome.UNCHANGED
    failed = commet_body("payout.failed", payout_id="po_1")
    assert await deliver(world, failed) is Outcome.UNCHANGED  # paid is final
    assert await payout_status(world.store, payout) == PayoutStatus.PAID
    assert await recorded_events(world.store, "whev_created") == [
        ("payout.created", world.commet_org, "stale")
    ]


async def test_an_event_for_a_payout_not_recorded_yet_is_retried_not_lost(world: World) -> None:
    body = commet_body("payout.paid", payout_id="po_early", event_id="whev_early")
    assert await deliver(world, body) is Outcome.RETRY_LATER
    assert await recorded_events(world.store, "whev_early") == []
    payout = await add_payout(world.store, world.commet_org, "po_early", provider=Provider.COMMET)
    assert await deliver(world, body) is Outcome.APPLIED  # the provider's retry
    assert await payout_status(world.store, payout) == PayoutStatus.PAID


async def test_a_payout_of_another_organization_is_never_moved(world: World) -> None:
    other = await seed_org(
        world.store, "commet-b", Provider.COMMET, provider_org_id="org_commetB", secret=None
    )
    payout = await add_payout(world.store, other, "po_b", provider=Provider.COMMET)
    body = commet_body("payout.paid", payout_id="po_b", organization_id="org_commetA")
    assert await deliver(world, body) is Outcome.RETRY_LATER
    assert await payout_status(world.store, payout) == PayoutStatus.PENDING


async def test_payout_available_is_recorded_as_ignored(world: World) -> None:
    body = commet_body("payout.available", event_id="whev_av", availableAmount=1, currency="usd")
    assert await deliver(world, body) is Outcome.IGNORED
    assert await deliver(world, body) is Outcome.IGNORED
    assert await recorded_events(world.store, "whev_av") == [
        ("payout.available", world.commet_org, "ignored")
    ]


# --- Commet: refused -------------------------------------------------------------------------


async def test_unknown_organization_missing_secret_and_wrong_signature_look_the_same(
    world: World,
) -> None:
    await seed_org(
        world.store, "commet-nosecret", Provider.COMMET, provider_org_id="org_nosecret", secret=None
    )
    payout = await add_payout(world.store, world.commet_org, "po_1", provider=Provider.COMMET)
    cases = [
        commet_body("payout.paid", payout_id="po_1", organization_id="org_unknown"),
        commet_body("payout.paid", payout_id="po_1", organization_id="org_nosecret"),
    ]
    errors = [await refused(world, body, commet_headers(body)) for body in cases]
    body = commet_body("payout.paid", payout_id="po_1")
    errors.append(await refused(world, body, commet_headers(body, OTHER_COMMET_SECRET)))
    errors.append(await refused(world, body, commet_headers(body, SVIX_SECRET)))
    assert {(error.status_code, error.reason) for error in errors} == {
        (401, "The webhook cannot be verified.")
    }
    assert await payout_status(world.store, payout) == PayoutStatus.PENDING


async def test_a_paygentic_organization_cannot_be_named_in_a_commet_delivery(
    world: World,
) -> None:
    payout = await add_payout(world.store, world.paygentic_org, "po_p", provider=Provider.PAYGENTIC)
    body = commet_body("payout.paid", payout_id="po_p", organization_id="org_paygenticA")
    error = await refused(world, body, commet_headers(body, SVIX_SECRET))
    assert error.status_code == 401
    assert await payout_status(world.store, payout) == PayoutStatus.PENDING


async def test_gateway_orgs_sharing_a_provider_org_are_told_apart_by_their_secret(
    world: World,
) -> None:
    twin = await seed_org(
        world.store,
        "commet-twin",
        Provider.COMMET,
        provider_org_id="org_commetA",
        secret=OTHER_COMMET_SECRET,
    )
    payout = await add_payout(world.store, twin, "po_twin", provider=Provider.COMMET)
    body = commet_body("payout.paid", payout_id="po_twin")
    assert await deliver(world, body, OTHER_COMMET_SECRET) is Outcome.APPLIED
    assert await payout_status(world.store, payout) == PayoutStatus.PAID


async def test_a_malformed_signature_is_400_before_any_lookup(world: World) -> None:
    body = commet_body("payout.paid", payout_id="po_1", organization_id="org_unknown")
    error = await refused(world, body, {"X-Commet-Signature": "not-hex"})
    assert error.status_code == 400


# --- Paygentic ---------------------------------------------------------------------------------


async def test_a_signed_paygentic_event_is_recorded_as_ignored_once(world: World) -> None:
    body = paygentic_body(event_id="evt_1")
    headers = svix_headers(body, timestamp=int(T0.timestamp()))
    assert await world.receiver.paygentic(body, headers) is Outcome.IGNORED
    assert await world.receiver.paygentic(body, headers) is Outcome.IGNORED
    assert await recorded_events(world.store, "evt_1") == [
        ("invoice.paid.v0", world.paygentic_org, "ignored")
    ]


async def test_a_paygentic_event_naming_no_organization_is_matched_by_its_secret(
    world: World,
) -> None:
    body = paygentic_body("customer.created.v0", organization_id=None, event_id="evt_2")
    headers = svix_headers(body, timestamp=int(T0.timestamp()))
    assert await world.receiver.paygentic(body, headers) is Outcome.IGNORED
    assert await recorded_events(world.store, "evt_2") == [
        ("customer.created.v0", world.paygentic_org, "ignored")
    ]


@pytest.mark.parametrize(("offset", "accepted"), [(-301, False), (301, False), (-299, True)])
async def test_paygentic_timestamps_follow_the_receiver_clock(
    world: World, offset: int, accepted: bool
) -> None:
    body = paygentic_body()
    headers = svix_headers(body, timestamp=int(T0.timestamp()) + offset)
    if accepted:
        assert await world.receiver.paygentic(body, headers) is Outcome.IGNORED
    else:
        with pytest.raises(WebhookRejectedError) as caught:
            await world.receiver.paygentic(body, headers)
        assert caught.value.status_code == 401


async def test_a_paygentic_event_under_another_org_secret_is_refused(world: World) -> None:
    body = paygentic_body(event_id=new_id("evt_"))
    stranger = "whsec_QUJDREVGR0hJSktMTU5PUA=="
    headers = svix_headers(body, stranger, timestamp=int(T0.timestamp()), message_id="msg_x")
    with pytest.raises(WebhookRejectedError) as caught:
        await world.receiver.paygentic(body, headers)
    assert caught.value.status_code == 401
