"""CPU per addBankAccount in the gateway's HTTP and GraphQL layers, measured in-process."""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import json
import pstats
import statistics
import tempfile
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, cast

import uvloop
from fastapi import FastAPI
from pydantic import SecretStr
from starlette.types import Message

from bench.run import ADD
from bench.stack import (
    PAYGENTIC_BANK_NAME,
    PAYGENTIC_HOLDER_TYPE,
    PAYGENTIC_ORG,
    PAYGENTIC_PAYOUT_SOURCE,
    PAYGENTIC_TOKEN,
)
from payout_gateway.domain.enums import BankAccountStatus, HolderType, Provider
from payout_gateway.domain.models import (
    AddBankAccountRequest,
    BankAccount,
    Organization,
    OrganizationProfile,
    ProviderCredentials,
)
from payout_gateway.ports import PayoutProvider
from payout_gateway.service import PayoutService
from payout_gateway.settings import ProviderSettings, Settings
from payout_gateway.store import Store
from payout_gateway.tenancy import Tenancy
from payout_gateway.web import create_app
from payout_gateway.web.app import Gateway

PEPPER = SecretStr("bench-pepper")
NOW = datetime.now(UTC)
ANSWER = BankAccount(
    id="ba_bench",
    organization_id="org_bench",
    provider=Provider.COMMET,
    provider_account_id="fake_ba_1",
    holder_name="Bench Holder",
    holder_type=None,
    bank_name=None,
    last4="6789",
    country="US",
    currency="USD",
    account_type=None,
    is_default=False,
    status=BankAccountStatus.ACTIVE,
    provider_status="active",
    livemode=False,
    created_at=NOW,
    updated_at=NOW,
    status_changed_at=NOW,
)


class InstantAddService(PayoutService):
    """Answers every add at once, so that only the layers above the service are measured."""

    async def add_bank_account(
        self,
        org: Organization,
        request: AddBankAccountRequest,
        *,
        idempotency_key: str | None = None,
    ) -> BankAccount:
        return ANSWER


async def seed(
    database_url: str,
    commet_api_key: str = "ck_live_bench0000001",
    provider: Provider = Provider.COMMET,
) -> str:
    """One organization of ``provider`` and its API key, as the benchmark's stack has (a
    Paygentic one with the stack's token, organization, payout source and profile)."""
    store = Store.from_url(database_url)
    await store.create_schema()
    tenancy = Tenancy(store, PEPPER)
    if provider is Provider.COMMET:
        credentials = ProviderCredentials(api_key=SecretStr(commet_api_key))
        profile = OrganizationProfile(country="US", currency="USD")
    else:
        credentials = ProviderCredentials(
            api_key=SecretStr(PAYGENTIC_TOKEN),
            provider_organization_id=PAYGENTIC_ORG,
            payout_source_id=PAYGENTIC_PAYOUT_SOURCE,
        )
        profile = OrganizationProfile(
            country="US",
            currency="USD",
            bank_name=PAYGENTIC_BANK_NAME,
            holder_type=HolderType(PAYGENTIC_HOLDER_TYPE.upper()),
        )
    org = await tenancy.create_organization(
        name="bench", provider=provider, credentials=credentials, profile=profile
    )
    _, key = await tenancy.issue_api_key(org.id)
    await store.dispose()
    return key


def gateway_settings(
    database_url: str,
    commet_base_url: str = "http://commet.invalid/api/v1",
    paygentic_base_url: str = "http://paygentic.invalid",
) -> Settings:
    """The gateway's production settings over ``database_url``, status refresh off."""
    return Settings(
        _env_file=None,
        environment="production",
        database_url=database_url,
        commet=ProviderSettings(base_url=commet_base_url),
        paygentic=ProviderSettings(base_url=paygentic_base_url),
        api_key_pepper=PEPPER,
        refresh_interval_seconds=0,
    )


def add_body(sequence: int) -> bytes:
    """The body bench/wrk/load.lua sends: a unique account number per request."""
    variables = {
        "input": {
            "bankAccount": {
                "accountNumber": f"1{sequence:010d}",
                "holderName": "Bench Holder",
                "routingNumber": "021000021",
            }
        }
    }
    return json.dumps({"query": ADD, "variables": variables}).encode()


async def post(app: FastAPI, api_key: str, body: bytes) -> bytes:
    """One request as uvicorn's httptools protocol hands it to the app; the answer's body."""
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "scheme": "http",
        "method": "POST",
        "root_path": "",
        "path": "/graphql",
        "raw_path": b"/graphql",
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"content-type", b"application/json"),
            (b"authorization", f"Bearer {api_key}".encode()),
            (b"content-length", str(len(body)).encode()),
        ],
        "state": {},
    }
    messages: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]
    answer: list[bytes] = []

    async def receive() -> Message:
        return messages.pop() if messages else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start" and message["status"] != 200:
            raise RuntimeError(f"status {message['status']}")
        if message["type"] == "http.response.body":
            answer.append(message.get("body", b""))

    await app(scope, receive, send)
    return b"".join(answer)


async def measure(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as workdir:
        database_url = f"sqlite:///{workdir}/gateway.db"
        api_key = await seed(database_url)
        providers: Mapping[Provider, PayoutProvider] | None = None
        if args.service:
            from tests.support.fakes import FakeProvider

            providers = {
                provider: cast(PayoutProvider, FakeProvider(provider)) for provider in Provider
            }
        app = create_app(gateway_settings(database_url), providers=providers)
        async with app.router.lifespan_context(app):
            gateway: Gateway = app.state.gateway
            if not args.service:
                instant = InstantAddService(
                    gateway.store, gateway.providers, pipeline=gateway.pipeline
                )
                app.state.gateway = dataclasses.replace(gateway, service=instant)
            sequence = 0
            first = await post(app, api_key, add_body(sequence))
            if b'"AddBankAccountSuccess"' not in first:
                raise RuntimeError(f"unexpected answer: {first[:300]!r}")
            for sequence in range(1, args.warmup + 1):
                await post(app, api_key, add_body(sequence))
            profiler = cProfile.Profile() if args.profile else None
            rounds = []
            for _ in range(args.rounds):
                bodies = [add_body(sequence + i) for i in range(1, args.requests + 1)]
                sequence += args.requests
                if profiler is not None:
                    profiler.enable()
                started = time.process_time()
                for body in bodies:
                    await post(app, api_key, body)
                rounds.append((time.process_time() - started) / args.requests * 1e6)
                if profiler is not None:
                    profiler.disable()
    mode = "service + SQLite store" if args.service else "service answers at once"
    print(
        f"{mode}: {statistics.median(rounds):.1f} µs CPU per add (median of {args.rounds} "
        f"rounds of {args.requests}; rounds: {', '.join(f'{r:.0f}' for r in rounds)})"
    )
    if profiler is not None:
        pstats.Stats(profiler).sort_stats(args.profile).print_stats(args.top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument(
        "--service", action="store_true", help="the real service and store, fake providers"
    )
    parser.add_argument(
        "--profile", choices=("tottime", "cumtime"), help="cProfile the rounds, sorted so"
    )
    parser.add_argument("--top", type=int, default=40, help="profile lines shown")
    uvloop.run(measure(parser.parse_args()))


if __name__ == "__main__":
    main()
