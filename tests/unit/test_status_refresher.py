"""The status refresher's own bookkeeping: what it remembers between cycles, and what it logs
when cycles keep failing."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import text

from payout_gateway.domain.enums import HolderType, Provider
from payout_gateway.domain.errors import StoreUnavailableError
from payout_gateway.domain.events import ObjectType
from payout_gateway.events.refresh import StatusRefresher
from payout_gateway.store import NonFinalObject, Store
from payout_gateway.store.secrets import SecretCodec
from tests.support.gateway import SeededOrg, seed_organizations

ORG = SeededOrg(
    "acme",
    Provider.PAYGENTIC,
    "pgx_refresher_token",
    provider_org_id="org_refresher",
    bank_name="Refresher Bank",
    holder_type=HolderType.COMPANY,
)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def refresher(store: Store, clock: Clock) -> StatusRefresher:
    readable = SimpleNamespace(capabilities=SimpleNamespace(can_read_bank_accounts=True))
    return StatusRefresher(
        store,
        {Provider.PAYGENTIC: readable},  # type: ignore[dict-item]  # never asked: see below
        pipeline=None,  # type: ignore[arg-type]  # nothing moves: _refresh is replaced
        interval=1.0,
        clock=lambda: datetime.now(UTC),
        monotonic=clock,
    )


async def test_objects_no_longer_listed_are_forgotten(tmp_path: Path) -> None:
    # An object that became final some other way (a webhook, a mutation's answer) leaves the
    # listing; its back-off must not stay in memory for the process's life.
    url = f"sqlite:///{tmp_path}/gateway.db"
    await asyncio.to_thread(seed_organizations, url, (ORG,))  # it runs a loop of its own
    store = Store.from_url(url)
    async with store.session(write=False) as session:
        [org] = await session.organizations_of_provider(Provider.PAYGENTIC)
    clock = Clock()
    subject = refresher(store, clock)
    listed: list[str] = []
    asked: list[str] = []

    async def non_final(
        object_type: ObjectType, provider: Provider, statuses: list[str]
    ) -> AsyncIterator[NonFinalObject]:
        if object_type is ObjectType.BANK_ACCOUNT:
            for object_id in listed:
                yield NonFinalObject(org.id, object_id, f"pa_{object_id}", datetime.now(UTC))

    async def refresh(adapter: Any, org: Any, object_type: Any, object_id: str, _: str) -> bool:
        asked.append(object_id)
        return False  # unchanged: backs off

    subject._non_final = non_final  # type: ignore[method-assign]
    subject._refresh = refresh  # type: ignore[method-assign]
    try:
        listed[:] = ["ba_1", "ba_2", "ba_3"]
        assert await subject.run_once() == 0
        assert sorted(subject._backoff.due) == ["ba_1", "ba_2", "ba_3"]
        assert sorted(subject._backoff.wait) == ["ba_1", "ba_2", "ba_3"]

        listed[:] = ["ba_2"]
        clock.now += 10  # every back-off due again
        asked.clear()
        await subject.run_once()
        assert asked == ["ba_2"]
        assert list(subject._backoff.due) == ["ba_2"]
        assert list(subject._backoff.wait) == ["ba_2"]
        # ba_2 is remembered still: its wait grew instead of starting over.
        assert subject._backoff.wait["ba_2"] == 2.0
    finally:
        await store.dispose()


async def test_a_new_leader_spreads_its_first_looks_at_long_unchanged_objects(
    tmp_path: Path,
) -> None:
    # A process that starts, or takes the lead from another, remembers no back-off: it used
    # to read every non-final object in its first cycle, a burst at the provider's rate limit.
    url = f"sqlite:///{tmp_path}/gateway.db"
    await asyncio.to_thread(seed_organizations, url, (ORG,))
    store = Store.from_url(url)
    async with store.session(write=False) as session:
        [org] = await session.organizations_of_provider(Provider.PAYGENTIC)
    clock = Clock()
    subject = refresher(store, clock)  # interval 1 s, back-off up to 300 s
    now = datetime.now(UTC)
    unchanged_for = {"ba_new": 0.5, "ba_hour": 3600.0, "ba_minute": 60.0}
    for n in range(100):
        unchanged_for[f"ba_old_{n:03d}"] = 86_400.0
    asked: list[str] = []

    async def non_final(
        object_type: ObjectType, provider: Provider, statuses: list[str]
    ) -> AsyncIterator[NonFinalObject]:
        if object_type is ObjectType.BANK_ACCOUNT:
            for object_id, age in unchanged_for.items():
                yield NonFinalObject(
                    org.id, object_id, f"pa_{object_id}", now - timedelta(seconds=age)
                )

    async def refresh(adapter: Any, org: Any, object_type: Any, object_id: str, _: str) -> bool:
        asked.append(object_id)
        return False

    subject._non_final = non_final  # type: ignore[method-assign]
    subject._refresh = refresh  # type: ignore[method-assign]
    try:
        await subject.run_once()
        # The new one at once; the others spread over their wait (at most the 300 s cap).
        assert "ba_new" in asked
        assert len(asked) < 10, asked
        assert subject._backoff.wait["ba_minute"] == pytest.approx(60.0, abs=1.0)
        assert subject._backoff.wait["ba_hour"] == 300.0
        assert all(0.0 <= subject._backoff.due[o] < 300.0 for o in unchanged_for if o != "ba_new")

        # Cycle by cycle, each is read once within its wait, then backs off as before.
        for _ in range(300):
            clock.now += 1.0
            await subject.run_once()
        first_reads = {o for o in asked if o != "ba_new"}
        assert first_reads == set(unchanged_for) - {"ba_new"}
    finally:
        await store.dispose()


async def test_a_failing_cycle_is_logged_once_per_kind_of_failure(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A database outage fails every cycle of every worker: one traceback, then one line when
    # it works again, not a traceback every interval.
    store = Store.from_url(f"sqlite:///{tmp_path}/gateway.db")
    subject = StatusRefresher(
        store,
        {},
        pipeline=None,  # type: ignore[arg-type]  # run_once is replaced
        interval=0.001,
        clock=lambda: datetime.now(UTC),
    )
    outcomes: list[BaseException | None] = [
        StoreUnavailableError(),
        StoreUnavailableError(),
        StoreUnavailableError(),
        RuntimeError("a bug of ours"),
        None,
        None,
        RuntimeError("a bug of ours"),
    ]
    cycles = 0
    done = asyncio.Event()

    async def run_once() -> int:
        nonlocal cycles
        cycles += 1
        if cycles > len(outcomes):
            done.set()
            return 0
        outcome = outcomes[cycles - 1]
        if outcome is not None:
            raise outcome
        return 0

    subject.run_once = run_once  # type: ignore[method-assign]
    caplog.set_level(logging.INFO, logger="payout_gateway.refresh")
    task = asyncio.create_task(subject.run_forever())
    try:
        await asyncio.wait_for(done.wait(), 30)  # a bound, not a timing claim
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await store.dispose()
    lines = [
        (record.levelname, record.getMessage(), record.exc_info is not None)
        for record in caplog.records
    ]
    assert lines == [
        ("ERROR", "status refresh cycle failed", True),  # the outage
        ("ERROR", "status refresh cycle failed", True),  # another kind of failure
        ("WARNING", "status refresh works again", False),
        ("ERROR", "status refresh cycle failed", True),
        ("WARNING", "status refresh works again", False),
    ]
    recovered = [r for r in caplog.records if r.getMessage() == "status refresh works again"]
    assert [r.__dict__["failed_cycles"] for r in recovered] == [4, 1]


async def test_an_organization_whose_secrets_do_not_open_is_skipped_and_told_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # `org reseal-secrets` run with a key this process does not have, for one organization
    # (or a row written by a command line with another key): the others' objects are still
    # refreshed, and the operator is told once, not with a failed cycle each interval.
    url = f"sqlite:///{tmp_path}/gateway.db"
    other = SeededOrg(
        "sealed-away", Provider.PAYGENTIC, "pgx_sealed_away_token", provider_org_id="org_away"
    )
    await asyncio.to_thread(seed_organizations, url, (ORG, other))
    foreign = SecretCodec([Fernet.generate_key().decode()])
    key = Fernet.generate_key().decode()
    store = Store.from_url(url, secrets=SecretCodec([key]))
    async with store.engine.begin() as connection:
        await connection.execute(
            text("UPDATE organizations SET provider_api_key = :sealed WHERE name = :name"),
            {"sealed": foreign.seal(other.provider_api_key), "name": other.name},
        )
        ids = dict((await connection.execute(text("SELECT name, id FROM organizations"))).all())
    subject = refresher(store, Clock())
    asked: list[str] = []

    async def non_final(
        object_type: ObjectType, provider: Provider, statuses: list[str]
    ) -> AsyncIterator[NonFinalObject]:
        if object_type is ObjectType.BANK_ACCOUNT:
            for name in (other.name, ORG.name):
                yield NonFinalObject(ids[name], f"ba_{name}", f"pa_{name}", datetime.now(UTC))

    async def refresh(adapter: Any, org: Any, object_type: Any, object_id: str, _: str) -> bool:
        asked.append(object_id)
        return True  # moved: due again next cycle

    subject._non_final = non_final  # type: ignore[method-assign]
    subject._refresh = refresh  # type: ignore[method-assign]
    caplog.set_level(logging.INFO, logger="payout_gateway")
    try:
        assert [await subject.run_once() for _ in range(3)] == [1, 1, 1]
    finally:
        await store.dispose()
    assert asked == ["ba_acme"] * 3
    assert [r for r in caplog.records if r.exc_info] == []
    [told] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert told.levelname == "ERROR"
    assert ids[other.name] in told.getMessage()
    assert "PAYOUT_GATEWAY_SECRETS_KEYS" in told.getMessage()
