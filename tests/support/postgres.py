"""Databases of their own on the test PostgreSQL server, and the server behind a proxy that
can stall."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import asyncpg

from tests.conftest import POSTGRES_URL
from tests.support.stalling_proxy import StallingProxy, stalling_proxy


async def _admin(statement: str) -> None:
    connection = await asyncpg.connect(POSTGRES_URL)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@contextmanager
def fresh_database() -> Iterator[str]:
    """A database of its own on the shared server (one state for several processes), dropped
    after."""
    name = f"pgw_rt_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{POSTGRES_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextmanager
def through_stalling_proxy(url: str) -> Iterator[tuple[StallingProxy, str]]:
    """A stalling proxy to ``url``'s server, and ``url`` through it."""
    server = urlsplit(url)
    with stalling_proxy((server.hostname or "127.0.0.1", server.port or 5432)) as proxy:
        user = f"{server.username}@" if server.username else ""
        yield proxy, server._replace(netloc=f"{user}127.0.0.1:{proxy.port}").geturl()
