"""Within ``one_read_per_object`` a provider object is read once, its answer or its error given
to every later asker; outside it each read asks."""

from __future__ import annotations

import pytest

from payout_gateway.domain.errors import NotFoundError
from payout_gateway.provider_reads import one_read_per_object, read_once


class Reader:
    def __init__(self, answer: str | None) -> None:
        self.answer = answer
        self.asked = 0

    async def __call__(self) -> str:
        self.asked += 1
        if self.answer is None:
            raise NotFoundError("No such bank account.")
        return self.answer


async def test_a_block_reads_each_key_once() -> None:
    read = Reader("acct")
    with one_read_per_object():
        assert [await read_once(("a", 1), read) for _ in range(3)] == ["acct"] * 3
        other = Reader("other")
        assert await read_once(("a", 2), other) == "other"
    assert (read.asked, other.asked) == (1, 1)


async def test_a_failed_read_fails_again_without_asking_again() -> None:
    read = Reader(None)
    with one_read_per_object():
        for _ in range(2):
            with pytest.raises(NotFoundError):
                await read_once("gone", read)
    assert read.asked == 1


async def test_outside_a_block_every_read_asks() -> None:
    read = Reader("acct")
    with one_read_per_object():
        await read_once("k", read)
    await read_once("k", read)
    await read_once("k", read)
    assert read.asked == 3
