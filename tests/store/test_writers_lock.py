"""The store's writers lock: first come, first served, one holder at a time, and a release that
lets every writer queued behind it through on the loop's next turn, not one writer per turn."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from payout_gateway.store.writers_lock import WritersLock


async def turns_until(done: Callable[[], bool], most: int = 50) -> int:
    """How many turns of the event loop pass before ``done()`` holds."""
    for turn in range(most):
        if done():
            return turn
        await asyncio.sleep(0)
    raise AssertionError(f"not done after {most} turns of the loop")


async def hold_briefly(lock: WritersLock, order: list[str], name: str) -> None:
    """A writer whose block runs without suspending."""
    async with lock:
        assert lock.locked()
        order.append(name)


async def held_with_writers_queued(
    lock: WritersLock, order: list[str], names: list[str]
) -> list[asyncio.Task[None]]:
    """``lock`` taken, then one brief writer per name started and queued behind it."""
    await lock.acquire()
    writers = [asyncio.create_task(hold_briefly(lock, order, name)) for name in names]
    await turns_until(lambda: len(lock._waiting) == len(names))
    return writers


async def test_a_free_lock_is_taken_at_once_and_given_back() -> None:
    lock = WritersLock()
    await lock.acquire()
    assert lock.locked()
    lock.release()
    assert not lock.locked()


async def test_releasing_a_lock_nobody_holds_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="not held"):
        WritersLock().release()


async def test_writers_queued_behind_a_holder_all_get_through_on_one_turn_of_the_loop() -> None:
    lock = WritersLock()
    order: list[str] = []
    writers = await held_with_writers_queued(lock, order, [f"w{n}" for n in range(10)])
    lock.release()
    # asyncio.Lock would take ten turns here, one per writer.
    assert await turns_until(lambda: all(writer.done() for writer in writers)) <= 2
    assert order == [f"w{n}" for n in range(10)]


async def test_a_newcomer_waits_behind_writers_woken_before_it() -> None:
    lock = WritersLock()
    order: list[str] = []
    early = await held_with_writers_queued(lock, order, ["early0", "early1", "early2"])
    lock.release()
    # Woken, not yet run: the lock is free, yet a newcomer must not take it before them.
    assert not lock.locked()
    await hold_briefly(lock, order, "newcomer")
    await asyncio.gather(*early)
    assert order == ["early0", "early1", "early2", "newcomer"]


async def test_writers_woken_while_the_holder_suspends_keep_their_places() -> None:
    lock = WritersLock()
    order: list[str] = []
    suspended = asyncio.Event()
    go_on = asyncio.Event()

    async def suspending_holder() -> None:
        async with lock:
            order.append("holder")
            suspended.set()
            await go_on.wait()

    await lock.acquire()
    holder = asyncio.create_task(suspending_holder())
    others = [asyncio.create_task(hold_briefly(lock, order, f"w{n}")) for n in range(3)]
    await turns_until(lambda: len(lock._waiting) == 4)
    lock.release()
    await suspended.wait()
    # The three others were woken too, found the lock taken again and wait once more,
    # ahead of a later arrival and in their order.
    late = asyncio.create_task(hold_briefly(lock, order, "late"))
    await turns_until(lambda: len(lock._waiting) == 4)
    go_on.set()
    await asyncio.gather(holder, *others, late)
    assert order == ["holder", "w0", "w1", "w2", "late"]


@pytest.mark.parametrize("woken", [False, True], ids=["while waiting", "once woken"])
async def test_a_cancelled_waiter_keeps_nobody_else_waiting(woken: bool) -> None:
    lock = WritersLock()
    order: list[str] = []
    cancelled, after = await held_with_writers_queued(lock, order, ["cancelled", "after"])
    if woken:
        lock.release()  # both woken; the first is cancelled before it runs
        cancelled.cancel()
    else:
        cancelled.cancel()
        await turns_until(lambda: len(lock._waiting) == 1)
        lock.release()
    await asyncio.wait_for(after, 1)
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert order == ["after"]
    assert not lock.locked()
    await asyncio.wait_for(hold_briefly(lock, order, "next"), 1)


async def test_a_writer_raising_inside_gives_the_lock_back() -> None:
    lock = WritersLock()

    async def failing() -> None:
        async with lock:
            raise ValueError("inside")

    with pytest.raises(ValueError, match="inside"):
        await failing()
    assert not lock.locked()
    await asyncio.wait_for(hold_briefly(lock, [], "next"), 1)
