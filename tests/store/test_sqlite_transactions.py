"""SQLite write sessions hold the file's write lock from their first statement, across engines
(as across ``serve --workers`` processes), so a read-then-write is one atomic step."""

from __future__ import annotations

import asyncio
from pathlib import Path

from payout_gateway.store import Store


async def test_a_write_session_that_only_read_so_far_keeps_other_writers_out(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path}/gateway.db"
    first, second = Store.from_url(url), Store.from_url(url)
    await first.create_schema()
    order: list[str] = []
    first_has_read = asyncio.Event()
    try:

        async def reader_then_writer() -> None:
            async with first.session() as session:
                # Only a read so far: with a deferred BEGIN the file would not be locked yet.
                assert not await session.has_bank_accounts("org_x")
                first_has_read.set()
                await asyncio.sleep(0.3)
                order.append("first commits")

        async def other_writer() -> None:
            await first_has_read.wait()
            async with second.session() as session:
                order.append("second runs")
                await session.has_bank_accounts("org_x")

        await asyncio.gather(reader_then_writer(), other_writer())
        assert order == ["first commits", "second runs"]
    finally:
        await first.dispose()
        await second.dispose()


async def test_read_sessions_do_not_wait_for_a_writer(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/gateway.db"
    writer, reader = Store.from_url(url), Store.from_url(url)
    await writer.create_schema()
    order: list[str] = []
    writing = asyncio.Event()
    try:

        async def write() -> None:
            async with writer.session() as session:
                await session.has_bank_accounts("org_x")
                writing.set()
                await asyncio.sleep(0.3)
                order.append("writer commits")

        async def read() -> None:
            await writing.wait()
            async with reader.session(write=False) as session:
                await session.has_bank_accounts("org_x")
                order.append("reader done")

        await asyncio.gather(write(), read())
        assert order == ["reader done", "writer commits"]
    finally:
        await writer.dispose()
        await reader.dispose()
