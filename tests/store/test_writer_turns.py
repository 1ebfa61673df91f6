"""Processes writing one SQLite file take turns, fairly, without blocking their event loops.

Two ``WriterTurns`` on the same file stand for two processes: ``flock`` locks belong to each
open file, so they exclude each other exactly as two processes' would.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import event

from payout_gateway.store import Store, database
from payout_gateway.store.writer_turns import WriterTurns
from tests.store.test_loop_sessions import write_audit_row
from tests.support.loop_ticks import loop_ticks
from tests.support.store_errors import raises_store_unavailable


@pytest.fixture
async def turns(tmp_path: Path) -> AsyncIterator[Callable[[], WriterTurns]]:
    made: list[WriterTurns] = []

    def make() -> WriterTurns:
        made.append(WriterTurns(str(tmp_path / "gateway.db")))
        return made[-1]

    yield make
    for each in made:
        each.close()


@contextmanager
def lock_held(path: Path) -> Iterator[None]:
    """``path`` locked as another process would lock it: its own open file."""
    holder = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)
        yield
    finally:
        os.close(holder)


async def test_nobody_barges_in_front_of_a_process_queued_for_the_turn(
    tmp_path: Path, turns: Callable[[], WriterTurns]
) -> None:
    # A waiting process holds the queue lock: the turn itself is free at this very moment
    # (just given back), yet a process asking now queues behind the waiting one instead of
    # taking it again and again while the other starves.
    first = turns()
    with lock_held(tmp_path / "gateway.db-writers.queue"):
        asking = asyncio.create_task(first.take())
        await asyncio.sleep(0.1)
        assert not asking.done()
    await asyncio.wait_for(asking, 5)
    first.give_back()


async def test_a_process_giving_the_turn_back_lets_the_waiting_one_have_it(
    turns: Callable[[], WriterTurns],
) -> None:
    first, second = turns(), turns()
    await first.take()
    waiting = asyncio.create_task(second.take())
    await asyncio.sleep(0.05)
    assert not waiting.done()
    first.give_back()
    again = asyncio.create_task(first.take())
    await asyncio.wait_for(waiting, 5)
    await asyncio.sleep(0.05)
    assert not again.done()
    second.give_back()
    await asyncio.wait_for(again, 5)
    first.give_back()


async def test_waiting_for_the_turn_leaves_the_event_loop_running(
    turns: Callable[[], WriterTurns],
) -> None:
    first, second = turns(), turns()
    await first.take()
    async with loop_ticks() as ticks:
        waiting = asyncio.create_task(second.take())
        await asyncio.sleep(0.3)
        assert not waiting.done()
        assert ticks.count >= 10
    first.give_back()
    await asyncio.wait_for(waiting, 5)
    second.give_back()


async def test_a_turn_given_up_while_waiting_goes_straight_back_when_it_comes(
    turns: Callable[[], WriterTurns],
) -> None:
    first, second, third = turns(), turns(), turns()
    await first.take()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):
            await second.take()
    first.give_back()
    # second's thread gets the turn now and gives it back unused: third is not kept out.
    await asyncio.wait_for(third.take(), 5)
    third.give_back()


async def test_a_store_waits_its_turn_and_gives_it_back_after_every_group(
    sqlite_store: Store, turns: Callable[[], WriterTurns]
) -> None:
    other = turns()
    await other.take()

    async def write() -> None:
        async with sqlite_store.session() as session:
            await write_audit_row(session)

    writing = asyncio.create_task(write())
    await asyncio.sleep(0.1)
    assert not writing.done()
    other.give_back()
    await asyncio.wait_for(writing, 5)
    # Given back after the COMMIT: the other process takes it at once.
    await asyncio.wait_for(other.take(), 1)
    other.give_back()


async def test_a_store_gives_the_turn_back_when_its_first_writer_raises(
    sqlite_store: Store, turns: Callable[[], WriterTurns]
) -> None:
    with pytest.raises(RuntimeError):
        async with sqlite_store.session() as session:
            await write_audit_row(session)
            raise RuntimeError("after the write")
    other = turns()
    await asyncio.wait_for(other.take(), 1)
    other.give_back()


async def test_a_store_kept_from_its_turn_fails_as_a_locked_database(
    sqlite_store: Store, turns: Callable[[], WriterTurns], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database, "BUSY_TIMEOUT_MS", 200)
    other = turns()
    await other.take()
    with raises_store_unavailable(database.sqlite3.OperationalError, match="locked"):
        async with sqlite_store.session() as session:
            await write_audit_row(session)
    other.give_back()
    async with sqlite_store.session() as session:
        await write_audit_row(session)


async def test_a_store_gives_the_turn_back_from_its_commit_thread_before_its_loop_hears(
    sqlite_store: Store, tmp_path: Path
) -> None:
    # The other processes must not wait for this one's event loop to get round to hearing
    # that the COMMIT is done: under load that took milliseconds.
    committing = threading.Event()
    event.listen(sqlite_store.session_engine, "commit", lambda _connection: committing.set())

    async def write() -> None:
        async with sqlite_store.session() as session:
            await write_audit_row(session)

    writing = asyncio.create_task(write())
    async with asyncio.timeout(5):
        while not committing.is_set():
            await asyncio.sleep(0.001)
    taken = threading.Event()

    def take_as_another_process() -> None:
        with lock_held(tmp_path / "gateway.db-writers.turn"):
            taken.set()

    taker = threading.Thread(target=take_as_another_process)
    taker.start()
    # Blocks the event loop: only the commit thread can give the turn back meanwhile.
    assert taken.wait(5)
    taker.join()
    await asyncio.wait_for(writing, 5)


async def test_giving_back_a_turn_not_held_does_nothing(turns: Callable[[], WriterTurns]) -> None:
    first, second = turns(), turns()
    await first.take()
    second.give_back()  # not second's to give: first keeps it
    third = turns()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):
            await third.take()
    first.give_back()
    first.give_back()
    await asyncio.wait_for(third.take(), 5)
    third.close()
    third.give_back()  # closed: the turn went with its file, and giving it back is no error
    await asyncio.wait_for(first.take(), 5)
    first.give_back()
