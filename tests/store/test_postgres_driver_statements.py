"""Statements a PostgreSQL session sends to asyncpg past SQLAlchemy's execution
(``ConnectionSession.write_row`` and ``read_value``): the same rows, counts, values and errors as
through SQLAlchemy, inside the transaction SQLAlchemy's adapter began, and SQLAlchemy's way for
a statement outside any transaction (which begins one)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_connection
from sqlalchemy.exc import DBAPIError, IntegrityError

from payout_gateway.domain.enums import Provider
from payout_gateway.domain.errors import StoreUnavailableError
from payout_gateway.domain.models import (
    AddBankAccountRequest,
    Money,
    OrganizationProfile,
    PayoutRequest,
    PayoutVerificationRequest,
    ProviderCredentials,
    validated,
)
from payout_gateway.idempotency import Hold, IdempotencyKeys
from payout_gateway.service import PayoutService
from payout_gateway.store import Store
from payout_gateway.store.connection_session import ConnectionSession
from payout_gateway.store.database import StoreSession
from payout_gateway.store.outages import database_unavailable
from payout_gateway.tenancy import Tenancy
from tests.conftest import POSTGRES_URL
from tests.store.test_core_writes import bank_account, payout, seed
from tests.store.test_driver_statements import CREATED_AT, READS_AFTER_BA_1, keyed_writes
from tests.store.test_loop_sessions import write_audit_row
from tests.support.fakes import FakeProvider
from tests.support.postgres import through_stalling_proxy
from tests.support.stalling_proxy import StallingProxy
from tests.support.store_errors import caused_by
from tests.unit.test_domain_values import KYC

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.parametrize("store", ["postgres"], indirect=True),
]

INSERT_ACCOUNT = "INSERT INTO bank_accounts"


async def through_sqlalchemy(
    self: ConnectionSession, statement: Any, row: Mapping[str, Any]
) -> int:
    """What ``write_row`` replaced: SQLAlchemy's own execution of the statement."""
    return int((await self.execute(statement, dict(row))).rowcount)


async def read_through_sqlalchemy(
    self: ConnectionSession, statement: Any, parameters: Mapping[str, Any]
) -> Any:
    """What ``read_value`` replaced."""
    return await self.scalar(statement, dict(parameters))


@pytest.fixture
def sent_to_asyncpg(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The SQL of each statement sessions send to asyncpg themselves, in order."""
    sent: list[str] = []
    send = ConnectionSession._send

    async def recorded(self: ConnectionSession, driver: Any, prepared: Any, *rest: Any) -> Any:
        sent.append(prepared.sql)
        return await send(self, driver, prepared, *rest)

    monkeypatch.setattr(ConnectionSession, "_send", recorded)
    return sent


@pytest.fixture
async def proxied(store: Store) -> AsyncIterator[tuple[Store, StallingProxy]]:
    """``store``'s tables through a proxy that can stall or hold the server's answers: one
    pooled connection, a database timeout of one second."""
    async with store.engine.connect() as connection:
        schema = await connection.scalar(text("SELECT current_schema()"))
    with through_stalling_proxy(POSTGRES_URL) as (proxy, url):
        slow = Store.from_url(
            url,
            connect_args={"server_settings": {"search_path": schema}},
            timeout_seconds=1,
            pool_size=1,
            max_overflow=0,
        )
        try:
            yield slow, proxy
        finally:
            proxy.release()
            proxy.resume()
            await slow.dispose()


async def server_pid(store: Store) -> int:
    """The backend of the one connection in ``store``'s pool."""
    async with store.session(write=False) as session:
        surface = session._session
        assert isinstance(surface, ConnectionSession)
        driver = surface._driver_in_transaction()
        assert driver is not None
        return int(driver.get_server_pid())


async def rows(store: Store, table: str) -> list[tuple[Any, ...]]:
    """The table's rows as PostgreSQL holds them, ordered by their first column."""
    async with store.engine.connect() as connection:
        result = await connection.exec_driver_sql(f"SELECT * FROM {table} ORDER BY 1")
        return [tuple(row) for row in result]


async def test_rows_sent_to_asyncpg_are_stored_as_sqlalchemy_stores_them(
    store: Store, sent_to_asyncpg: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    await seed(store, "a")
    async with store.session() as session:
        await session.add_bank_account(bank_account("ba_1"))
        await session.add_payout(payout("po_1"))
        await write_audit_row(session, "po_1")
    assert [sql.split(" (")[0] for sql in sent_to_asyncpg] == [
        INSERT_ACCOUNT,
        "INSERT INTO payouts",
        "INSERT INTO status_changes",
    ]
    monkeypatch.setattr(ConnectionSession, "write_row", through_sqlalchemy)
    async with store.session() as session:
        await session.add_bank_account(bank_account("ba_2"))
        await session.add_payout(payout("po_2"))
        await write_audit_row(session, "po_2")
    assert len(sent_to_asyncpg) == 3

    accounts = await rows(store, "bank_accounts")
    assert [row[0] for row in accounts] == ["ba_1", "ba_2"]
    assert accounts[0][1:] == accounts[1][1:]
    payouts = await rows(store, "payouts")
    assert [row[0] for row in payouts] == ["po_1", "po_2"]
    assert payouts[0][1:] == payouts[1][1:]
    changes = await rows(store, "status_changes")
    assert [row[3] for row in changes] == ["po_1", "po_2"]  # object_id
    assert changes[0][1:3] + changes[0][4:] == changes[1][1:3] + changes[1][4:]


async def test_a_session_s_statements_share_the_transaction_its_begin_started(
    store: Store, sent_to_asyncpg: list[str]
) -> None:
    """asyncpg outside a transaction commits each statement on its own: a store session's
    ``begin`` has SQLAlchemy's adapter send BEGIN at once, and a block that raises undoes what
    went to asyncpg."""
    await seed(store, "a")
    before = store.statements
    with pytest.raises(RuntimeError):
        async with store.session() as session:
            await session.add_bank_account(bank_account("ba_1"))
            await session.add_bank_account(bank_account("ba_2"))
            raise RuntimeError("undo")
    assert [sql.split(" (")[0] for sql in sent_to_asyncpg] == [INSERT_ACCOUNT, INSERT_ACCOUNT]
    assert store.statements - before == 2
    assert await rows(store, "bank_accounts") == []


async def test_a_statement_outside_a_transaction_goes_through_sqlalchemy_which_begins_one(
    store: Store, sent_to_asyncpg: list[str]
) -> None:
    """Without ``begin`` (no store session does so, but the surface allows it) the first
    statement is SQLAlchemy's, which begins the transaction the next one joins."""
    await seed(store, "a")
    before = store.statements
    async with store._sessions() as surface:
        assert isinstance(surface, ConnectionSession)
        session = StoreSession(surface, store.secrets)
        assert surface._driver_in_transaction() is None
        await session.add_bank_account(bank_account("ba_1"))
        assert surface._driver_in_transaction() is not None
        await session.add_bank_account(bank_account("ba_2"))
        await surface.commit()
    assert [sql.split(" (")[0] for sql in sent_to_asyncpg] == [INSERT_ACCOUNT]
    assert store.statements - before == 2  # both counted, whichever way they went
    assert [row[0] for row in await rows(store, "bank_accounts")] == ["ba_1", "ba_2"]


async def test_a_refused_row_raises_sqlalchemy_s_error_without_the_values(
    store: Store, sent_to_asyncpg: list[str]
) -> None:
    await seed(store, "a")
    async with store.session() as session:
        await session.add_bank_account(bank_account("ba_1"))
    with pytest.raises(IntegrityError) as refused:
        async with store.session() as session:
            await session.add_payout(payout("po_1"))
            await session.add_bank_account(bank_account("ba_1"))
    assert [sql.split(" (")[0] for sql in sent_to_asyncpg] == [
        INSERT_ACCOUNT,
        "INSERT INTO payouts",
        INSERT_ACCOUNT,
    ]
    assert isinstance(refused.value.orig, store.engine.dialect.loaded_dbapi.IntegrityError)
    assert refused.value.orig.pgcode == "23505"  # type: ignore[attr-defined]
    assert isinstance(refused.value.orig.__cause__, asyncpg.UniqueViolationError)
    assert 'duplicate key value violates unique constraint "pk_bank_accounts"' in str(refused.value)
    assert "Ada Lovelace" not in str(refused.value)  # the holder's name is a submitted value
    assert [row[0] for row in await rows(store, "bank_accounts")] == ["ba_1"]
    assert await rows(store, "payouts") == []  # the whole transaction undone
    assert store.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


@pytest.mark.parametrize("way", ["asyncpg", "sqlalchemy"])
async def test_a_connection_lost_mid_transaction_is_invalidated_and_unavailable(
    store: Store, sent_to_asyncpg: list[str], monkeypatch: pytest.MonkeyPatch, way: str
) -> None:
    """Either way the statement goes, the error says the connection was lost, the pool drops
    it, and the store answers as for a database outage (retryable), not as for a bug."""
    if way == "sqlalchemy":
        monkeypatch.setattr(ConnectionSession, "write_row", through_sqlalchemy)
    await seed(store, "a")
    other = await asyncpg.connect(POSTGRES_URL)
    try:
        with pytest.raises(StoreUnavailableError) as unavailable:
            async with store.session() as session:
                assert await session.has_bank_accounts("org_a") is False
                surface = session._session
                assert isinstance(surface, ConnectionSession)
                driver = surface._driver_in_transaction()
                assert driver is not None
                await other.execute("SELECT pg_terminate_backend($1)", driver.get_server_pid())
                await session.add_bank_account(bank_account("ba_1"))
    finally:
        await other.close()
    assert len(sent_to_asyncpg) == (2 if way == "asyncpg" else 1)  # read_value's SELECT too
    lost = unavailable.value.__cause__
    assert isinstance(lost, DBAPIError) and lost.connection_invalidated
    assert database_unavailable(lost)
    # The pool took the lost connection out: the next session gets a working one.
    async with store.session() as session:
        await session.add_bank_account(bank_account("ba_2"))
    assert [row[0] for row in await rows(store, "bank_accounts")] == ["ba_2"]
    assert store.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


async def test_idempotency_writes_sent_to_asyncpg_match_sqlalchemy_s(
    store: Store, sent_to_asyncpg: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """INSERT … ON CONFLICT DO NOTHING and UPDATEs: the same claims answered, the same rows,
    the same statements counted."""
    await seed(store, "a")
    before = store.statements
    assert await keyed_writes(store, "here") == [True, False]
    sent_here = store.statements - before
    assert len(sent_to_asyncpg) == 4
    monkeypatch.setattr(ConnectionSession, "write_row", through_sqlalchemy)
    before = store.statements
    assert await keyed_writes(store, "there") == [True, False]
    assert store.statements - before == sent_here == 4

    records = await rows(store, "idempotency_records")
    assert [(row[0], row[2]) for row in records] == [("i_here", "here"), ("i_there", "there")]
    assert records[0][3:] == records[1][3:]


async def test_a_value_read_through_asyncpg_matches_sqlalchemy_s(
    store: Store, sent_to_asyncpg: list[str]
) -> None:
    await seed(store, "a")
    async with store.session() as session:
        await session.add_bank_account(bank_account("ba_1"))
    async with store.session(write=False) as session:
        surface = session._session
        assert isinstance(surface, ConnectionSession)
        for statement, parameters in READS_AFTER_BA_1:
            value = await surface.read_value(statement, parameters)
            expected = await read_through_sqlalchemy(surface, statement, parameters)
            assert (type(value), value) == (type(expected), expected)
        assert await surface.read_value(CREATED_AT, {"id": "ba_1"}) == bank_account().created_at
    assert len(sent_to_asyncpg) == 6  # the add's INSERT too


async def test_a_begin_answered_after_the_timeout_leaves_no_transaction_in_the_pool(
    store: Store, proxied: tuple[Store, StallingProxy]
) -> None:
    """The server began the transaction though its answer came after the database timeout (a
    slow network, a paused host): the connection is dropped, as SQLAlchemy's execution drops
    one whose statement timed out, not pooled inside that transaction, where every later
    session on it would be answered as committed and never be."""
    slow, proxy = proxied
    await seed(slow, "a")
    proxy.hold()
    asyncio.get_running_loop().call_later(1.5, proxy.release)  # past the timeout
    with pytest.raises(StoreUnavailableError) as unavailable:
        async with slow.session() as session:
            await session.add_bank_account(bank_account("ba_1"))
    assert caused_by(unavailable.value, TimeoutError)
    async with slow.session() as session:
        await session.add_bank_account(bank_account("ba_2"))
    assert [row[0] for row in await rows(store, "bank_accounts")] == ["ba_2"]
    assert slow.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


async def test_a_session_cancelled_in_its_begin_leaves_no_transaction_in_the_pool(
    store: Store, proxied: tuple[Store, StallingProxy]
) -> None:
    """Cancelled (its client gone, a sibling resolver failed) while the server's answer to
    BEGIN is on its way: as above, the connection is dropped, as SQLAlchemy drops one whose
    statement was cancelled."""
    slow, proxy = proxied
    await seed(slow, "a")
    pid = await server_pid(slow)
    proxy.hold()

    async def add() -> None:
        async with slow.session() as session:
            await session.add_bank_account(bank_account("ba_1"))

    adding = asyncio.create_task(add())
    other = await asyncpg.connect(POSTGRES_URL)
    try:
        # Cancelled once the server has begun the transaction (its answer held).
        while (
            await other.fetchval("SELECT state FROM pg_stat_activity WHERE pid = $1", pid)
            != "idle in transaction"
        ):
            await asyncio.sleep(0.01)
    finally:
        await other.close()
    adding.cancel()
    proxy.release()
    with pytest.raises(asyncio.CancelledError):
        await adding
    async with slow.session() as session:
        await session.add_bank_account(bank_account("ba_2"))
    assert [row[0] for row in await rows(store, "bank_accounts")] == ["ba_2"]
    assert slow.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


async def ends_cancelled_leaving_nothing(
    store: Store, proxied: tuple[Store, StallingProxy], adding: asyncio.Task[None]
) -> None:
    """``adding``, cancelled while the server stalls, ends cancelled, its connection out of
    the pool; once the server answers, the next session works and the cancelled one's rows
    are not there."""
    slow, proxy = proxied
    adding.cancel()
    with pytest.raises(asyncio.CancelledError):
        await adding
    assert slow.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    proxy.resume()
    async with slow.session() as session:
        await session.add_bank_account(bank_account("ba_next"))
    assert [row[0] for row in await rows(store, "bank_accounts")] == ["ba_next"]


@pytest.mark.parametrize("way", ["asyncpg", "sqlalchemy"])
async def test_a_statement_cancelled_while_the_server_stalls_ends_cancelled(
    store: Store,
    proxied: tuple[Store, StallingProxy],
    monkeypatch: pytest.MonkeyPatch,
    way: str,
) -> None:
    """Either way the statement went, a caller cancelled while it waits on a server that stopped
    answering is cancelled: the connection is dropped rather than rolled back (a ROLLBACK the
    server never answers would time out, and its error would stand for the cancellation)."""
    if way == "sqlalchemy":
        monkeypatch.setattr(ConnectionSession, "write_row", through_sqlalchemy)
    slow, proxy = proxied
    await seed(slow, "a")
    sending = asyncio.Event()

    async def add() -> None:
        async with slow.session() as session:
            assert await session.has_bank_accounts("org_a") is False
            proxy.stall()
            sending.set()
            await session.add_bank_account(bank_account("ba_1"))

    adding = asyncio.create_task(add())
    await sending.wait()
    await asyncio.sleep(0.2)  # the INSERT sent, well within the timeout
    await ends_cancelled_leaving_nothing(store, proxied, adding)


async def test_statements_awaited_at_once_on_one_session_take_turns(
    store: Store, sent_to_asyncpg: list[str]
) -> None:
    """As through SQLAlchemy (its adapter's lock): asyncpg alone refuses a second operation
    while one is in progress."""
    await seed(store, "a", "b")
    async with store.session() as session:
        await session.add_bank_account(bank_account("ba_1"))
        answers = await asyncio.gather(
            *(session.has_bank_accounts(org) for org in ("org_a", "org_b") * 4)
        )
    assert answers == [True, False] * 4
    assert len(sent_to_asyncpg) == 9


@pytest.fixture
def commit_answered_late(
    proxied: tuple[Store, StallingProxy], monkeypatch: pytest.MonkeyPatch
) -> Callable[[Callable[[], bool]], None]:
    """Arms a hold of the server's answers from the moment a COMMIT is sent (the first for
    which ``when()`` holds), released past the database timeout: the server commits, the
    client hears of it too late."""
    _, proxy = proxied
    adapter = AsyncAdapt_asyncpg_connection
    send = adapter._call_and_discard
    armed: list[Callable[[], bool]] = []

    async def held(self: Any, call: Callable[[], Awaitable[Any]]) -> Any:
        if armed and getattr(call, "__name__", "") == "commit" and armed[0]():
            armed.clear()
            proxy.hold()
            asyncio.get_running_loop().call_later(1.5, proxy.release)  # past the timeout
        return await send(self, call)

    monkeypatch.setattr(adapter, "_call_and_discard", held)
    return armed.append


async def test_a_commit_answered_after_the_timeout_is_of_unknown_outcome(
    store: Store,
    proxied: tuple[Store, StallingProxy],
    commit_answered_late: Callable[[Callable[[], bool]], None],
) -> None:
    """The server may have committed (here it did): the caller is told the outcome is
    unknown, not that nothing was changed, and the connection, whose COMMIT's answer is still
    on its way, is dropped rather than pooled."""
    slow, proxy = proxied
    await seed(slow, "a")
    pid = await server_pid(slow)
    commit_answered_late(lambda: True)
    with pytest.raises(StoreUnavailableError) as unavailable:
        async with slow.session() as session:
            await session.add_bank_account(bank_account("ba_1"))
    assert caused_by(unavailable.value, TimeoutError)
    assert unavailable.value.outcome_unknown
    assert "Nothing was changed" not in unavailable.value.message
    assert [row[0] for row in await rows(store, "bank_accounts")] == ["ba_1"]
    assert slow.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    while not proxy._released.is_set():
        await asyncio.sleep(0.05)
    assert await server_pid(slow) != pid
    async with slow.session() as session:
        await session.add_bank_account(bank_account("ba_2"))
    assert [row[0] for row in await rows(store, "bank_accounts")] == ["ba_1", "ba_2"]


async def test_a_session_that_fails_before_its_commit_changed_nothing(
    store: Store, proxied: tuple[Store, StallingProxy]
) -> None:
    """A statement's timeout, its transaction never committed: nothing was changed, as the
    caller is told."""
    slow, proxy = proxied
    await seed(slow, "a")
    with pytest.raises(StoreUnavailableError) as unavailable:
        async with slow.session() as session:
            await session.add_bank_account(bank_account("ba_1"))
            proxy.stall()
            await session.add_bank_account(bank_account("ba_2"))
    assert caused_by(unavailable.value, TimeoutError)
    assert not unavailable.value.outcome_unknown
    assert await rows(store, "bank_accounts") == []


async def test_a_session_cancelled_between_statements_while_the_server_stalls_ends_cancelled(
    store: Store, proxied: tuple[Store, StallingProxy]
) -> None:
    """Cancelled while its block awaits something else (a provider's answer), the server
    having stopped answering: the cancellation is what the caller gets, not the timeout of a
    ROLLBACK nobody answers; the connection is dropped, which ends the transaction."""
    slow, proxy = proxied
    await seed(slow, "a")
    between = asyncio.Event()

    async def add() -> None:
        async with slow.session() as session:
            await session.add_bank_account(bank_account("ba_1"))
            proxy.stall()
            between.set()
            await asyncio.sleep(30)  # a provider call, say
            await session.add_bank_account(bank_account("ba_2"))

    adding = asyncio.create_task(add())
    await between.wait()
    await ends_cancelled_leaving_nothing(store, proxied, adding)


@pytest.mark.parametrize(
    ("provider", "operation"),
    [
        (Provider.COMMET, "add_bank_account"),
        (Provider.PAYGENTIC, "add_bank_account"),
        (Provider.COMMET, "complete_payout_verification"),
        (Provider.PAYGENTIC, "complete_payout_verification"),
        (Provider.COMMET, "request_payout"),
        (Provider.PAYGENTIC, "request_payout"),
    ],
)
async def test_a_mutation_whose_commit_was_answered_late_converges_on_its_retry(
    store: Store,
    proxied: tuple[Store, StallingProxy],
    commit_answered_late: Callable[[Callable[[], bool]], None],
    provider: Provider,
    operation: str,
) -> None:
    """The COMMIT recording what the provider did (the object and its key's result) was done,
    its answer late: the caller is told the outcome is unknown, and the retry with the same
    key answers the same object, from the key's stored result, without a second call to the
    provider or a second row."""
    slow, proxy = proxied
    commet = provider is Provider.COMMET
    fake = FakeProvider(provider, has_defaults=commet, takes_kyc=commet)
    service = PayoutService(slow, {provider: fake})
    org = await Tenancy(slow, SecretStr("pepper")).create_organization(
        name="o",
        provider=provider,
        credentials=ProviderCredentials(api_key=SecretStr("secret")),
        profile=OrganizationProfile(country="US", currency="USD"),
    )
    if operation == "request_payout":
        await service.complete_payout_verification(org, validated(PayoutVerificationRequest, KYC))

    async def mutate() -> Any:
        if operation == "add_bank_account":
            request = validated(
                AddBankAccountRequest,
                {"bank": {"account_number": "000123456789", "holder_name": "Ada"}},
            )
            return await service.add_bank_account(org, request, idempotency_key="k")
        if operation == "request_payout":
            payout_request = PayoutRequest(amount=Money(amount_minor=1500, currency="USD"))
            return await service.request_payout(org, payout_request, idempotency_key="k")
        verification = validated(PayoutVerificationRequest, KYC)
        return await service.complete_payout_verification(org, verification, idempotency_key="k")

    calls = fake.calls[operation]
    commit_answered_late(lambda: fake.calls[operation] > calls)
    with pytest.raises(StoreUnavailableError) as unavailable:
        await mutate()
    assert unavailable.value.outcome_unknown
    assert "Nothing was changed" not in unavailable.value.message
    while not proxy._released.is_set():
        await asyncio.sleep(0.05)
    table = {
        "add_bank_account": "bank_accounts",
        "request_payout": "payouts",
        "complete_payout_verification": "payout_accounts",
    }[operation]
    recorded = await rows(store, table)
    assert len(recorded) == 1
    again = await mutate()
    identity = again.payout_account.id if operation == "complete_payout_verification" else again.id
    assert identity == recorded[0][0]
    assert fake.calls[operation] == calls + 1
    assert len(await rows(store, table)) == 1
    assert slow.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


async def test_a_key_whose_claim_was_answered_late_is_claimed_again_at_once(
    store: Store,
    proxied: tuple[Store, StallingProxy],
    commit_answered_late: Callable[[Callable[[], bool]], None],
) -> None:
    """The COMMIT of the key's claim was done, its answer late: nothing reached the provider,
    and the claim is withdrawn, so the caller is told nothing was changed and its retry with
    the same key goes through at once (not refused as in progress until the claim's lease
    lapses), calling the provider once."""
    slow, proxy = proxied
    fake = FakeProvider(Provider.COMMET, has_defaults=True, takes_kyc=True)
    service = PayoutService(slow, {Provider.COMMET: fake})
    org = await Tenancy(slow, SecretStr("pepper")).create_organization(
        name="o",
        provider=Provider.COMMET,
        credentials=ProviderCredentials(api_key=SecretStr("secret")),
        profile=OrganizationProfile(country="US", currency="USD"),
    )
    request = validated(
        AddBankAccountRequest, {"bank": {"account_number": "000123456789", "holder_name": "Ada"}}
    )
    commit_answered_late(lambda: True)  # the first COMMIT: the key's claim
    with pytest.raises(StoreUnavailableError) as unavailable:
        await service.add_bank_account(org, request, idempotency_key="k")
    assert caused_by(unavailable.value, TimeoutError)
    assert not unavailable.value.outcome_unknown
    assert "Nothing was changed" in unavailable.value.message
    assert fake.calls["add_bank_account"] == 0
    while not proxy._released.is_set():
        await asyncio.sleep(0.05)
    added = await service.add_bank_account(org, request, idempotency_key="k")
    assert fake.calls["add_bank_account"] == 1
    assert [row[0] for row in await rows(store, "bank_accounts")] == [added.id]
    assert slow.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


@pytest.mark.parametrize("not_applied", [False, True])
async def test_a_key_whose_take_over_was_answered_late_is_left_to_its_lease(
    store: Store,
    proxied: tuple[Store, StallingProxy],
    commit_answered_late: Callable[[Callable[[], bool]], None],
    not_applied: bool,
) -> None:
    """Had the take-over not been done, another request could hold the key at the same count
    of attempts: it is not released, its lease bounds the wait. The caller is told the outcome
    is unknown if an earlier attempt may have been applied, else that nothing was changed."""
    slow, _ = proxied
    await seed(slow, "a")
    keys = IdempotencyKeys(
        slow, pepper=SecretStr("p"), retention=timedelta(days=1), lease=timedelta(seconds=60)
    )
    now = datetime.now(UTC)
    claim = {"organization_id": "org_a", "key": "k", "operation": "op", "fingerprint": "f"}
    first = await keys.begin(**claim, record_id="idem_1", now=now)
    assert isinstance(first, Hold)
    await keys.release(first, now, not_applied=not_applied)
    commit_answered_late(lambda: True)
    with pytest.raises(StoreUnavailableError) as unavailable:
        await keys.begin(**claim, record_id="idem_2", now=now)
    assert unavailable.value.outcome_unknown is not not_applied
    async with store.session(write=False) as session:
        record = await session.get_idempotency_record("org_a", "k")
    assert record is not None
    assert (record.id, record.state, record.attempts) == ("idem_1", "started", 2)
    assert record.locked_until > now
