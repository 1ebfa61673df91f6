"""CPU per store transaction on a SQLite file: aiosqlite (a thread per connection, a hand-off
per call) vs the gateway's own SQLite store, column "inline" (``Store.from_url``: synchronous
sessions on the loop's thread, a writing COMMIT on one commit thread).

Each round runs ``--sessions`` transactions of each kind with each driver, alternating the
drivers to spread the machine's noise; CPU is this process's (all threads, ``process_time``).

    .venv/bin/python -m bench.store --sessions 2000 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from pydantic import SecretStr
from sqlalchemy.ext.asyncio import create_async_engine

from payout_gateway.domain.enums import (
    AccountType,
    BankAccountStatus,
    HolderType,
    Provider,
)
from payout_gateway.domain.models import (
    BankAccount,
    Organization,
    OrganizationProfile,
    ProviderCredentials,
)
from payout_gateway.service import new_id
from payout_gateway.store import Store
from payout_gateway.store.database import StoreSession

ORG = "org_bench"
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def aiosqlite_store(path: Path) -> Store:
    """The store as it was before its own SQLite handling: SQLAlchemy's aiosqlite driver."""
    engine = create_async_engine(
        f"sqlite+aiosqlite:///{path}", pool_size=20, max_overflow=10, pool_use_lifo=True
    )
    return Store(engine)


def inline_store(path: Path) -> Store:
    return Store.from_url(f"sqlite:///{path}")


def account() -> BankAccount:
    return BankAccount(
        id=new_id("ba"),
        organization_id=ORG,
        provider=Provider.COMMET,
        provider_account_id=new_id("ext"),
        holder_name="Ada Lovelace",
        holder_type=HolderType.INDIVIDUAL,
        bank_name="First Bank",
        last4="6789",
        country="US",
        currency="USD",
        account_type=AccountType.CHECKING,
        is_default=False,
        status=BankAccountStatus.PENDING,
        provider_status="pending",
        livemode=False,
        metadata={},
        created_at=NOW,
        updated_at=NOW,
        status_changed_at=NOW,
    )


async def audit(session: StoreSession, created: BankAccount) -> None:
    """The first audit row of an account, as the service writes it."""
    await session.record_status_change(
        organization_id=ORG,
        object_type="bank_account",
        object_id=created.id,
        from_status=None,
        to_status=created.status.value,
        provider_status=created.provider_status,
        source="provider_response",
        at=NOW,
    )


async def add_session(store: Store) -> None:
    """A Commet add's transaction: the account row and its first audit row."""
    async with store.session() as session:
        created = account()
        await session.add_bank_account(created)
        await audit(session, created)


async def paygentic_add_session(store: Store) -> None:
    """A Paygentic add's transaction (the organization has accounts): first account? then the
    rows."""
    async with store.session() as session:
        created = account()
        await session.has_bank_accounts(ORG)
        await session.add_bank_account(created)
        await audit(session, created)


async def read_session(store: Store) -> None:
    """A read: one page of ten accounts."""
    async with store.session(write=False) as session:
        await session.page_bank_accounts(ORG, first=10)


KINDS: dict[str, Callable[[Store], Awaitable[None]]] = {
    "Commet add (insert + audit)": add_session,
    "Paygentic add (exists, insert, audit)": paygentic_add_session,
    "read (a page of 10 accounts)": read_session,
}
DRIVERS: dict[str, Callable[[Path], Store]] = {"aiosqlite": aiosqlite_store, "inline": inline_store}


async def seed(path: Path) -> None:
    store = inline_store(path)
    await store.create_schema()
    async with store.session() as session:
        await session.add_organization(
            Organization(
                id=ORG,
                name="bench",
                provider=Provider.COMMET,
                credentials=ProviderCredentials(api_key=SecretStr("ck_bench")),
                profile=OrganizationProfile(country="US", currency="USD"),
                created_at=NOW,
            )
        )
    for _ in range(20):
        await add_session(store)
    await store.dispose()


async def measure(
    make: Callable[[Path], Store],
    path: Path,
    kind: Callable[[Store], Awaitable[None]],
    sessions: int,
    concurrency: int,
) -> float:
    """CPU µs per transaction for ``sessions`` transactions by ``concurrency`` callers."""
    store = make(path)
    try:
        for _ in range(50):  # warm: pool connections open, statements compiled
            await kind(store)
        per_caller = sessions // concurrency

        async def caller() -> None:
            for _ in range(per_caller):
                await kind(store)

        started = time.process_time()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        return (time.process_time() - started) / (per_caller * concurrency) * 1e6
    finally:
        await store.dispose()


async def main(sessions: int, rounds: int, concurrency: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.db"
        await seed(path)
        print(
            f"CPU µs per transaction, median of {rounds} rounds of {sessions}, "
            f"{concurrency} concurrent caller(s)"
        )
        print("| transaction | aiosqlite | inline | inline ÷ aiosqlite |")
        print("|---|---:|---:|---:|")
        for label, kind in KINDS.items():
            samples: dict[str, list[float]] = {name: [] for name in DRIVERS}
            for _ in range(rounds):
                for name, make in DRIVERS.items():
                    samples[name].append(await measure(make, path, kind, sessions, concurrency))
            before = statistics.median(samples["aiosqlite"])
            after = statistics.median(samples["inline"])
            print(f"| {label} | {before:,.0f} | {after:,.0f} | {after / before:.2f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=1)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.sessions, arguments.rounds, arguments.concurrency))
