"""CommitThread: calls run in order on its own thread, outcomes come back to the loop, a
cancelled caller does not stop a call, and shutdown waits for the calls before it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from payout_gateway.store.commit_thread import CommitThread


@pytest.fixture
def commits() -> Iterator[CommitThread]:
    thread = CommitThread("test-commit")
    yield thread
    thread.shutdown(wait=True)


async def test_calls_run_on_the_thread_in_order_and_their_results_come_back(
    commits: CommitThread,
) -> None:
    ran: list[tuple[int, str]] = []

    def record(number: int) -> int:
        ran.append((number, threading.current_thread().name))
        return number * 10

    results = await asyncio.gather(*(commits.call(record, number) for number in range(20)))
    assert results == [number * 10 for number in range(20)]
    assert ran == [(number, "test-commit") for number in range(20)]


async def test_an_exception_raised_on_the_thread_reaches_the_caller(commits: CommitThread) -> None:
    def fail() -> None:
        raise OSError("disk I/O error")

    with pytest.raises(OSError, match="disk I/O error"):
        await commits.call(fail)
    assert await commits.call(lambda: "still serving") == "still serving"


async def test_a_cancelled_caller_does_not_stop_its_call(commits: CommitThread) -> None:
    gate = threading.Event()
    done = threading.Event()

    def slow() -> None:
        gate.wait(5)
        done.set()

    outcome = commits.call(slow)
    outcome.cancel()
    gate.set()
    assert await asyncio.to_thread(done.wait, 5)
    # The thread goes on serving, the cancelled outcome left alone.
    assert await commits.call(lambda: 1) == 1
    assert outcome.cancelled()


async def test_shutdown_waits_for_the_calls_before_it_and_refuses_later_ones() -> None:
    commits = CommitThread("test-commit")
    gate = threading.Event()
    ran: list[str] = []
    commits.call(gate.wait, 5)
    before = commits.call(ran.append, "queued before shutdown")
    threading.Timer(0.05, gate.set).start()
    commits.shutdown(wait=True)
    assert ran == ["queued before shutdown"]
    await before  # settled on the loop once the thread had run it
    with pytest.raises(RuntimeError, match="shut down"):
        commits.call(ran.append, "after")
