"""One process leads a background job among those sharing a database: on a SQLite file through
an flock, on PostgreSQL through a session advisory lock; the refresher runs only when leading."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import event, text

from payout_gateway.events.refresh import StatusRefresher
from payout_gateway.store import Store
from payout_gateway.store.leadership import AdvisoryLeadership, AlwaysLeads, advisory_key
from tests.conftest import POSTGRES_URL, drop_postgres_schema, postgres_store


async def hand_over(first: Store, second: Store) -> None:
    """The first store's process leads, keeps leading, and leaves the lead to the second."""
    a, b = first.leadership("status-refresh"), second.leadership("status-refresh")
    assert await a.lead() is True
    assert await a.lead() is True  # still leading
    assert await b.lead() is False
    await a.step_down()
    assert await b.lead() is True
    assert await a.lead() is False
    await b.step_down()


async def test_one_process_of_a_sqlite_file_leads_until_it_steps_down(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/gateway.db"
    # Two stores on one file stand for two worker processes: flock locks belong to the open
    # file, so two opens in one process exclude each other as two processes do.
    first, second = Store.from_url(url), Store.from_url(url)
    try:
        other_job = second.leadership("another-job")
        assert await other_job.lead() is True  # jobs elect apart
        await other_job.step_down()
        await hand_over(first, second)
    finally:
        await first.dispose()
        await second.dispose()


async def test_an_in_memory_database_is_its_process_s_own() -> None:
    store = Store.from_url("sqlite+aiosqlite:///:memory:")
    try:
        assert isinstance(store.leadership("status-refresh"), AlwaysLeads)
    finally:
        await store.dispose()


@pytest.fixture
async def two_replicas() -> AsyncIterator[tuple[Store, Store, str]]:
    schema = f"pgw_test_{uuid.uuid4().hex[:12]}"
    first = await postgres_store(schema)
    second = Store.from_url(POSTGRES_URL, connect_args={"server_settings": {"search_path": schema}})
    try:
        yield first, second, schema
    finally:
        await first.dispose()
        await second.dispose()
        await drop_postgres_schema(schema)


@pytest.mark.postgres
async def test_one_replica_on_postgresql_leads_until_it_steps_down(
    two_replicas: tuple[Store, Store, str],
) -> None:
    first, second, _ = two_replicas
    await hand_over(first, second)


@pytest.mark.postgres
async def test_replicas_of_other_schemas_elect_their_own(
    two_replicas: tuple[Store, Store, str],
) -> None:
    first, _, _ = two_replicas
    schema = f"pgw_test_{uuid.uuid4().hex[:12]}"
    elsewhere = await postgres_store(schema)
    here, there = first.leadership("status-refresh"), elsewhere.leadership("status-refresh")
    try:
        assert await here.lead() is True
        assert await there.lead() is True
    finally:
        await here.step_down()
        await there.step_down()
        await elsewhere.dispose()
        await drop_postgres_schema(schema)


@pytest.mark.postgres
async def test_a_leader_whose_connection_dies_loses_the_lead_to_another(
    two_replicas: tuple[Store, Store, str],
) -> None:
    first, second, schema = two_replicas
    a, b = first.leadership("status-refresh"), second.leadership("status-refresh")
    assert await a.lead() is True
    admin = await asyncpg.connect(POSTGRES_URL)
    try:
        # The leader's session: the one holding this job's advisory lock (pg_locks splits the
        # 64-bit key, objid holding its low 32 bits).
        killed = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_locks "
            "WHERE locktype = 'advisory' AND database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database()) AND objid = $1",
            advisory_key("status-refresh", schema) & 0xFFFFFFFF,
        )
    finally:
        await admin.close()
    assert killed == 1
    # The server frees the lock once the killed session has ended: a bound, not a timing claim.
    for _ in range(500):
        if await b.lead():
            break
        await asyncio.sleep(0.01)
    assert await b.lead() is True
    assert await a.lead() is False  # it found out, and the place is taken
    await b.step_down()
    assert await a.lead() is True
    await a.step_down()


@pytest.mark.postgres
async def test_the_leader_s_session_is_dropped_by_the_server_soon_after_its_peer_goes_silent(
    two_replicas: tuple[Store, Store, str],
) -> None:
    # A leader cut off by a partition sends no FIN: the server frees the lock only once its
    # TCP keepalive gives up on the session, by default after two hours of nobody refreshing.
    first, second, _ = two_replicas
    a, b = first.leadership("status-refresh"), second.leadership("status-refresh")
    assert await a.lead() is True
    assert await b.lead() is False
    admin = await asyncpg.connect(POSTGRES_URL)
    try:
        lock_session = a._connection  # type: ignore[attr-defined]
        assert lock_session is not None
        settings = {
            name: await lock_session.scalar(text(f"SHOW {name}"))
            for name in ("tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count")
        }
        assert settings == {
            "tcp_keepalives_idle": "30",
            "tcp_keepalives_interval": "10",
            "tcp_keepalives_count": "3",
        }
        # Only the lock's session: the one that asked and lost goes back to the pool as it came.
        async with second.engine.connect() as other_session:
            assert await other_session.scalar(
                text("SHOW tcp_keepalives_idle")
            ) == await admin.fetchval("SHOW tcp_keepalives_idle")
    finally:
        await admin.close()
        await a.step_down()


LEADER_PROCESS = """
import asyncio, sys
from payout_gateway.store import Store
from payout_gateway.store.leadership import AdvisoryLeadership

async def main() -> None:
    schema = {"server_settings": {"search_path": sys.argv[2]}}
    store = Store.from_url(sys.argv[1], connect_args=schema)
    leadership = AdvisoryLeadership(store.engine, "status-refresh", heartbeat_seconds=0.1)
    assert await leadership.lead()
    print("leading", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


@pytest.mark.postgres
async def test_a_frozen_leader_loses_the_lead_to_another_once_its_session_falls_silent(
    two_replicas: tuple[Store, Store, str], caplog: pytest.LogCaptureFixture
) -> None:
    # SIGSTOP (a debugger, a cgroup freezer) or a loop blocked by a bug: the kernel still
    # answers TCP keepalives for the process, so its session, and its lock, would stay.
    _, second, schema = two_replicas
    leader = subprocess.Popen(
        [sys.executable, "-c", LEADER_PROCESS, POSTGRES_URL, schema],
        stdout=subprocess.PIPE,
    )
    try:
        assert leader.stdout is not None
        assert await asyncio.to_thread(leader.stdout.readline) == b"leading\n"
        b = AdvisoryLeadership(second.engine, "status-refresh", stale_after_seconds=1.0)
        await asyncio.sleep(1.5)
        assert await b.lead() is False  # alive: its session answers every 0.1 s

        os.kill(leader.pid, signal.SIGSTOP)
        # Silent from now on: a bound, not a timing claim.
        for _ in range(100):
            if await b.lead():
                break
            await asyncio.sleep(0.1)
        assert await b.lead() is True
        assert "has been silent for" in caplog.text
        await b.step_down()
    finally:
        os.kill(leader.pid, signal.SIGCONT)
        leader.kill()
        leader.wait(10)
        if leader.stdout is not None:
            leader.stdout.close()


@pytest.mark.postgres
async def test_a_leader_busy_with_a_long_run_of_its_job_keeps_the_lead(
    two_replicas: tuple[Store, Store, str],
) -> None:
    first, second, _ = two_replicas
    a = AdvisoryLeadership(first.engine, "status-refresh", heartbeat_seconds=0.1)
    b = AdvisoryLeadership(second.engine, "status-refresh", stale_after_seconds=1.0)
    try:
        assert await a.lead() is True
        # Its job runs for longer than the others wait before taking a silent lead, without
        # asking ``lead`` meanwhile: the heartbeat speaks for it.
        await asyncio.sleep(1.5)
        assert await b.lead() is False
        assert await a.lead() is True
    finally:
        await a.step_down()
        await b.step_down()


class Leads:
    def __init__(self, leading: bool) -> None:
        self.leading = leading
        self.asked = 0

    async def lead(self) -> bool:
        self.asked += 1
        return self.leading

    async def step_down(self) -> None:
        self.leading = False


@pytest.mark.parametrize("leading", [True, False])
async def test_the_refresher_runs_only_while_it_leads(tmp_path: Path, leading: bool) -> None:
    store = Store.from_url(f"sqlite:///{tmp_path}/gateway.db")
    leadership = Leads(leading)
    refresher = StatusRefresher(
        store,
        {},
        pipeline=None,  # type: ignore[arg-type]  # run_once is counted, not run
        interval=0.001,
        clock=lambda: datetime.now(UTC),
        leadership=leadership,
    )
    runs = 0

    async def run_once() -> int:
        nonlocal runs
        runs += 1
        return 0

    refresher.run_once = run_once  # type: ignore[method-assign]
    task = asyncio.create_task(refresher.run_forever())
    for _ in range(5_000):  # a bound, not a timing claim: five cycles take ~5 ms
        if leadership.asked >= 5 or runs >= 5:
            break
        await asyncio.sleep(0.001)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await store.dispose()
    assert leadership.asked >= 5  # asked before every cycle
    assert (runs > 0) is leading
    assert runs <= leadership.asked


def cancel_at(point: str, task: asyncio.Task[bool]) -> tuple[str, Callable[..., None]]:
    """An engine event hook cancelling ``task`` at ``point`` of its ``lead``, the lock taken."""
    if point == "commit":
        return "commit", lambda *_: task.cancel()

    def after_statement(*args: object) -> None:
        statement = args[2]
        if isinstance(statement, str) and statement.startswith(point):
            task.cancel()

    return "after_cursor_execute", after_statement


@pytest.mark.postgres
@pytest.mark.parametrize(
    "point", ["SELECT pg_try_advisory_lock", "SET tcp_keepalives_idle", "commit"]
)
async def test_a_lead_cancelled_just_after_taking_the_lock_leaves_it_to_another(
    two_replicas: tuple[Store, Store, str], point: str
) -> None:
    """At shutdown the job asking for the lead is cancelled, possibly between the lock taken
    and the lock's session kept: that session must not go back to the pool holding the lock,
    where it would keep every other replica from leading until the pool closed. (SQLAlchemy
    discards a connection whose operation was cancelled; every wait in between is one.)"""
    first, second, _ = two_replicas
    a, b = first.leadership("status-refresh"), second.leadership("status-refresh")
    asking = asyncio.create_task(a.lead())
    hook, cancel = cancel_at(point, asking)
    event.listen(first.engine.sync_engine, hook, cancel)
    try:
        with pytest.raises(asyncio.CancelledError):
            await asking
    finally:
        event.remove(first.engine.sync_engine, hook, cancel)
    try:
        assert await b.lead() is True
    finally:
        await b.step_down()
        await a.step_down()
