"""Runs the gateway app in this process to count the store statements a query costs."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from typing import Any

import httpx

from payout_gateway.settings import Settings
from payout_gateway.web import create_app
from payout_gateway.web.app import Gateway

AUTH_ONLY = "{ organization { name } }"
ATTEMPTS = 3


async def _provider_calls(client: httpx.AsyncClient, sandboxes: Mapping[str, str]) -> int:
    total = 0
    for base in sandboxes.values():
        answer = (await client.get(f"{base}/_sandbox/requests")).json()
        total += int(answer.get("data", answer)["total"])
    return total


async def count_statements(
    env: Mapping[str, str], api_key: str, queries: Mapping[str, str], sandboxes: Mapping[str, str]
) -> dict[str, dict[str, Any]]:
    """For each query: SQL statements sent and provider requests made, measured in-process with
    the same configuration as the gateway process (same database, same sandboxes)."""
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        settings = Settings(_env_file=None)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    app = create_app(settings)
    results: dict[str, dict[str, Any]] = {}
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gateway", timeout=30
        ) as client,
        httpx.AsyncClient(timeout=10) as plain,
    ):
        gateway: Gateway = app.state.gateway
        headers = {"authorization": f"Bearer {api_key}"}
        for name, query in {"auth only": AUTH_ONLY, **queries}.items():
            await client.post("/graphql", json={"query": query}, headers=headers)  # warm
            # The counter is process-wide: a background task (the idempotency purge runs at
            # start-up) can land in a window. Its statements only ever add, so the fewest seen
            # over a few tries is the query's own count.
            tries = []
            for _ in range(ATTEMPTS):
                statements = gateway.store.statements
                calls = await _provider_calls(plain, sandboxes)
                answer = await client.post("/graphql", json={"query": query}, headers=headers)
                body = answer.json()
                tries.append(
                    {
                        "statements": gateway.store.statements - statements,
                        "provider_calls": await _provider_calls(plain, sandboxes) - calls,
                        "status": answer.status_code,
                        "errors": body.get("errors"),
                    }
                )
            results[name] = min(tries, key=lambda attempt: attempt["statements"])
    return results


def run(
    env: Mapping[str, str],
    api_key: str,
    queries: Mapping[str, str],
    sandboxes: Mapping[str, str],
    timeout: float = 60.0,
) -> dict[str, dict[str, Any]]:
    return asyncio.run(
        asyncio.wait_for(count_statements(env, api_key, queries, sandboxes), timeout)
    )
