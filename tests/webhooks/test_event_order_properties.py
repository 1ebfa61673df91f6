"""State-machine property: whatever order, repetition, concurrency or forgery Commet's payout
events come in, a payout never moves backwards, ends at the furthest status delivered, no event
applies twice and none is lost."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from pydantic import SecretStr

from payout_gateway.domain.enums import PayoutStatus, Provider
from payout_gateway.domain.errors import WebhookRejectedError
from payout_gateway.domain.models import OrganizationProfile, ProviderCredentials
from payout_gateway.events.broker import InProcessBroker
from payout_gateway.events.pipeline import StatusPipeline
from payout_gateway.store import Store
from payout_gateway.tenancy import Tenancy
from payout_gateway.web.webhooks import Outcome, WebhookReceiver
from tests.webhooks.support import (
    COMMET_SECRET,
    OTHER_COMMET_SECRET,
    add_payout,
    changes_of,
    commet_body,
    commet_headers,
    new_id,
    payout_status,
)

T = TypeVar("T")

RANK = {PayoutStatus.PENDING: 0, PayoutStatus.PAID: 1, PayoutStatus.FAILED: 1}
TERMINAL = {"payout.paid": PayoutStatus.PAID, "payout.failed": PayoutStatus.FAILED}


class PayoutEvents(RuleBasedStateMachine):
    """One payout per run. Commet emits ``payout.created`` and one of ``payout.paid`` /
    ``payout.failed``; each may be delivered any number of times, in any order, in parallel
    bursts, before or after the gateway has recorded the payout, among noise and forgeries."""

    loop: ClassVar[asyncio.AbstractEventLoop]
    store: ClassVar[Store]
    receiver: ClassVar[WebhookReceiver]
    organization_id: ClassVar[str]

    def __init__(self) -> None:
        super().__init__()
        self.provider_payout_id = new_id("po_")
        self.payout_id: str | None = None
        self.bodies: dict[str, bytes] = {}
        self.terminal = "payout.paid"
        # Events the gateway acknowledged (2xx): Commet stops retrying those.
        self.acknowledged: set[str] = set()
        self.applied: list[str] = []
        self.last_rank = 0

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coroutine)

    @initialize(terminal=st.sampled_from(sorted(TERMINAL)))
    def emit(self, terminal: str) -> None:
        self.terminal = terminal
        for name in ("payout.created", terminal):
            self.bodies[name] = commet_body(
                name, payout_id=self.provider_payout_id, organization_id="org_props"
            )

    @precondition(lambda self: self.payout_id is None)
    @rule()
    def gateway_records_the_payout(self) -> None:
        self.payout_id = self.run(
            add_payout(
                self.store, self.organization_id, self.provider_payout_id, provider=Provider.COMMET
            )
        )

    @rule(name=st.sampled_from(["payout.created", "terminal"]), copies=st.integers(1, 4))
    def commet_delivers(self, name: str, copies: int) -> None:
        body = self.bodies[self.terminal if name == "terminal" else name]
        headers = commet_headers(body)

        async def burst() -> list[Outcome]:
            return list(
                await asyncio.gather(*(self.receiver.commet(body, headers) for _ in range(copies)))
            )

        outcomes = self.run(burst())
        event = self.terminal if name == "terminal" else name
        if self.payout_id is None:
            # Unknown payout: refused for a retry, nothing recorded, so nothing lost.
            assert set(outcomes) == {Outcome.RETRY_LATER}
            return
        assert outcomes.count(Outcome.APPLIED) <= 1
        if event in self.acknowledged:
            assert Outcome.APPLIED not in outcomes
        self.acknowledged.add(event)
        if Outcome.APPLIED in outcomes:
            self.applied.append(event)

    @rule()
    def commet_announces_an_available_balance(self) -> None:
        body = commet_body("payout.available", organization_id="org_props", availableAmount=1)
        assert self.run(self.receiver.commet(body, commet_headers(body))) is Outcome.IGNORED

    @rule(event=st.sampled_from(sorted(TERMINAL)))
    def an_attacker_forges_a_terminal_event(self, event: str) -> None:
        body = commet_body(event, payout_id=self.provider_payout_id, organization_id="org_props")
        with pytest.raises(WebhookRejectedError) as refused:
            self.run(self.receiver.commet(body, commet_headers(body, OTHER_COMMET_SECRET)))
        assert refused.value.status_code == 401

    @invariant()
    def never_backwards_and_at_the_furthest_status_delivered(self) -> None:
        if self.payout_id is None:
            return
        status = PayoutStatus(self.run(payout_status(self.store, self.payout_id)))
        assert RANK[status] >= self.last_rank
        self.last_rank = RANK[status]
        expected = (
            TERMINAL[self.terminal] if self.terminal in self.acknowledged else PayoutStatus.PENDING
        )
        assert status is expected

    @invariant()
    def each_change_applied_once_and_audited_once(self) -> None:
        if self.payout_id is None:
            return
        changes = self.run(changes_of(self.store, self.organization_id, self.payout_id))
        assert len(self.applied) == len(set(self.applied)) == len(changes)
        assert [change.to_status for change in changes] == [
            TERMINAL[event].value for event in self.applied
        ]


def test_commet_payout_events_in_any_order_never_move_a_payout_backwards(tmp_path: Path) -> None:
    loop = asyncio.new_event_loop()
    store = Store.from_url(f"sqlite:///{tmp_path}/props.db")

    async def setup() -> str:
        await store.create_schema()
        org = await Tenancy(store, SecretStr("pepper")).create_organization(
            name="props",
            provider=Provider.COMMET,
            credentials=ProviderCredentials(
                api_key=SecretStr("ck_live_props000001"), provider_organization_id="org_props"
            ),
            profile=OrganizationProfile(country="US", currency="USD"),
        )
        async with store.session() as session:
            await session.set_webhook_secret(org.id, COMMET_SECRET)
        return org.id

    try:
        PayoutEvents.organization_id = loop.run_until_complete(setup())
        PayoutEvents.loop = loop
        PayoutEvents.store = store
        PayoutEvents.receiver = WebhookReceiver(store, StatusPipeline(store, InProcessBroker()))
        run_state_machine_as_test(
            PayoutEvents,
            settings=settings(
                # ~10 ms a step (three transactions a delivery): keeps the folder fast.
                max_examples=30,
                stateful_step_count=10,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
    finally:
        loop.run_until_complete(store.dispose())
        loop.close()
