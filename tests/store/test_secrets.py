"""Provider credentials and webhook secrets sealed at rest: the codec, the store on SQLite and
PostgreSQL (the raw column read back), key rotation, and the commands that drive it."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from click.testing import CliRunner
from cryptography.fernet import Fernet
from pydantic import SecretStr
from sqlalchemy import text

from payout_gateway.cli import main
from payout_gateway.domain.enums import Provider
from payout_gateway.domain.models import Organization, OrganizationProfile, ProviderCredentials
from payout_gateway.settings import Settings
from payout_gateway.store import Store
from payout_gateway.store.secrets import PREFIX, SecretCodec, SecretsKeyError
from tests.conftest import POSTGRES_URL, drop_postgres_schema

OLD, NEW = Fernet.generate_key().decode(), Fernet.generate_key().decode()
API_KEY = "ck_live_sealedCredential0001"
WEBHOOK_SECRET = "whsec_c2VhbGVkV2ViaG9va1NlY3JldDAwMDE="


# --- the codec ----------------------------------------------------------------------------------


def test_a_sealed_secret_opens_and_reads_as_nothing_like_it() -> None:
    codec = SecretCodec([NEW])
    sealed = codec.seal(API_KEY)
    assert sealed.startswith(PREFIX)
    assert API_KEY not in sealed
    assert codec.seal(API_KEY) != sealed  # a fresh IV each time
    assert codec.open(sealed) == API_KEY


def test_without_keys_secrets_are_kept_as_written() -> None:
    codec = SecretCodec()
    assert codec.seals is False
    assert codec.seal(API_KEY) == API_KEY
    assert codec.open(API_KEY) == API_KEY


def test_a_new_key_first_still_opens_what_the_old_one_sealed_and_reseals_with_itself() -> None:
    sealed_old = SecretCodec([OLD]).seal(API_KEY)
    rotating = SecretCodec([NEW, OLD])
    assert rotating.open(sealed_old) == API_KEY
    resealed = rotating.reseal(sealed_old)
    assert SecretCodec([NEW]).open(resealed) == API_KEY  # the old key can go now
    assert SecretCodec([NEW]).open(rotating.reseal(API_KEY)) == API_KEY  # written plainly


@pytest.mark.parametrize(
    ("codec", "message"),
    [
        (SecretCodec(), "no secrets key is configured"),
        (SecretCodec([OLD]), "none of the configured secrets keys opens"),
    ],
    ids=["no key", "another key"],
)
def test_a_sealed_secret_without_its_key_is_a_clear_error(codec: SecretCodec, message: str) -> None:
    sealed = SecretCodec([NEW]).seal(API_KEY)
    with pytest.raises(SecretsKeyError, match=message) as caught:
        codec.open(sealed)
    assert NEW not in str(caught.value) and OLD not in str(caught.value)


@pytest.mark.parametrize("key", ["not-a-key", "", Fernet.generate_key().decode()[:-4]])
def test_a_malformed_key_is_refused_without_echoing_it(key: str) -> None:
    with pytest.raises(SecretsKeyError, match="32 url-safe base64") as caught:
        SecretCodec([NEW, key])
    assert not key or key not in str(caught.value)


def test_settings_take_the_keys_comma_separated_newest_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PAYOUT_GATEWAY_SECRETS_KEYS", f" {NEW} ,{OLD}")
    settings = Settings()
    assert [key.get_secret_value() for key in settings.secrets_keys] == [NEW, OLD]
    assert SecretCodec([NEW]).open(settings.secret_codec().seal(API_KEY)) == API_KEY
    assert NEW not in repr(settings)


# --- the store, on SQLite and PostgreSQL ------------------------------------------------------

Opener = Callable[[SecretCodec], Store]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Opener]:
    """Stores on one database, each with the codec it is given."""
    opened: list[Store] = []
    schema = f"pgw_test_{uuid.uuid4().hex[:12]}"
    if request.param == "postgres":
        connection = await asyncpg.connect(POSTGRES_URL)
        await connection.execute(f'CREATE SCHEMA "{schema}"')
        await connection.close()

    def open_with(codec: SecretCodec) -> Store:
        if request.param == "sqlite":
            store = Store.from_url(f"sqlite:///{tmp_path}/gateway.db", secrets=codec)
        else:
            store = Store.from_url(
                POSTGRES_URL,
                secrets=codec,
                connect_args={"server_settings": {"search_path": schema}},
            )
        opened.append(store)
        return store

    yield open_with
    for store in opened:
        await store.dispose()
    if request.param == "postgres":
        await drop_postgres_schema(schema)


def organization() -> Organization:
    return Organization(
        id="org_sealed",
        name="sealed",
        provider=Provider.COMMET,
        credentials=ProviderCredentials(api_key=SecretStr(API_KEY)),
        profile=OrganizationProfile(country="US", currency="USD"),
        webhook_secret=SecretStr(WEBHOOK_SECRET),
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


async def raw_secrets(store: Store) -> tuple[str, str]:
    async with store.engine.connect() as connection:
        row = (
            await connection.execute(
                text("SELECT provider_api_key, webhook_secret FROM organizations")
            )
        ).one()
    return str(row[0]), str(row[1])


async def read_back(store: Store) -> tuple[str, str | None]:
    async with store.session(write=False) as session:
        found = await session.get_organization("org_sealed")
    assert found is not None
    secret = found.webhook_secret.get_secret_value() if found.webhook_secret else None
    return found.credentials.api_key.get_secret_value(), secret


async def test_the_database_keeps_secrets_sealed_and_the_store_reads_them_open(
    open_store: Opener,
) -> None:
    store = open_store(SecretCodec([NEW]))
    await store.create_schema()
    async with store.session() as session:
        await session.add_organization(organization())
    api_key, webhook = await raw_secrets(store)
    assert api_key.startswith(PREFIX) and webhook.startswith(PREFIX)
    assert API_KEY not in api_key and WEBHOOK_SECRET not in webhook
    assert await read_back(store) == (API_KEY, WEBHOOK_SECRET)

    async with store.session() as session:
        await session.set_webhook_secret("org_sealed", "whsec_bmV3U2VjcmV0MDAwMDAwMDAwMDAw")
    _, webhook = await raw_secrets(store)
    assert webhook.startswith(PREFIX) and "bmV3U2Vj" not in webhook
    assert (await read_back(store))[1] == "whsec_bmV3U2VjcmV0MDAwMDAwMDAwMDAw"


async def test_rows_written_before_keys_are_read_and_resealed_then_rotated(
    open_store: Opener,
) -> None:
    plain = open_store(SecretCodec())
    await plain.create_schema()
    async with plain.session() as session:
        await session.add_organization(organization())
    assert await raw_secrets(plain) == (API_KEY, WEBHOOK_SECRET)

    old = open_store(SecretCodec([OLD]))
    assert await read_back(old) == (API_KEY, WEBHOOK_SECRET)  # as written, still read
    async with old.session() as session:
        assert await session.reseal_secrets() == 1
    sealed_old = await raw_secrets(old)
    assert API_KEY not in sealed_old[0] and WEBHOOK_SECRET not in sealed_old[1]

    rotating = open_store(SecretCodec([NEW, OLD]))
    async with rotating.session() as session:
        assert await session.reseal_secrets() == 1
    assert await read_back(open_store(SecretCodec([NEW]))) == (API_KEY, WEBHOOK_SECRET)
    with pytest.raises(SecretsKeyError):
        await read_back(open_store(SecretCodec([OLD])))  # the old key opens nothing now


async def test_secrets_that_do_not_open_are_told_once_until_every_one_opens_again(
    open_store: Opener, caplog: pytest.LogCaptureFixture
) -> None:
    # A key missing from the list fails every read of every organization it sealed, on every
    # request: the operator reads one line of it, and one when each of them opens again.
    sealing = open_store(SecretCodec([NEW]))
    await sealing.create_schema()
    second = organization().model_copy(update={"id": "org_second", "name": "second"})
    async with sealing.session() as session:
        await session.add_organization(organization())
        await session.add_organization(second)
    caplog.set_level(logging.INFO, logger="payout_gateway")
    lacking = open_store(SecretCodec([OLD]))
    for _ in range(3):
        for org_id in ("org_sealed", "org_second"):
            with pytest.raises(SecretsKeyError):
                async with lacking.session(write=False) as session:
                    await session.get_organization(org_id)
    [error] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert error.levelname == "ERROR"
    assert error.getMessage().startswith("organization org_sealed: its stored secrets")
    assert NEW not in error.getMessage() and OLD not in error.getMessage()

    # Resealed with the key it has: the end is told once every organization opens again.
    async with open_store(SecretCodec([OLD, NEW])).session() as session:
        assert await session.reseal_secrets() == 2
    async with lacking.session(write=False) as session:
        assert await session.get_organization("org_sealed") is not None
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.INFO] == []
    async with lacking.session(write=False) as session:
        assert await session.get_organization("org_second") is not None
        assert await session.get_organization("org_second") is not None
    [ended] = [r for r in caplog.records if r.levelno == logging.INFO]
    assert ended.getMessage() == "the configured secrets keys open the stored secrets again"
    assert ended.__dict__["failed_reads"] == 6


# --- the commands -------------------------------------------------------------------------------


def test_organizations_made_and_resealed_from_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path}/cli.db"
    monkeypatch.setenv("PAYOUT_GATEWAY_DATABASE_URL", url)
    runner = CliRunner()
    created = runner.invoke(
        main,
        [
            *("org", "create", "--name", "acme", "--provider", "commet"),
            *("--provider-api-key", API_KEY, "--country", "US", "--currency", "USD"),
        ],
    )
    assert created.exit_code == 0, created.output

    refused = runner.invoke(main, ["org", "reseal-secrets"])
    assert refused.exit_code != 0
    assert "PAYOUT_GATEWAY_SECRETS_KEYS is not set" in refused.output

    key = runner.invoke(main, ["secrets-key"])
    assert key.exit_code == 0
    new_key = key.output.strip()
    monkeypatch.setenv("PAYOUT_GATEWAY_SECRETS_KEYS", new_key)
    resealed = runner.invoke(main, ["org", "reseal-secrets"])
    assert resealed.exit_code == 0, resealed.output
    assert "secrets of 1 organization(s) sealed" in resealed.output

    api_key = asyncio.run(raw_api_key(url))
    assert api_key.startswith(PREFIX) and API_KEY not in api_key
    assert SecretCodec([new_key]).open(api_key) == API_KEY

    monkeypatch.setenv("PAYOUT_GATEWAY_SECRETS_KEYS", Fernet.generate_key().decode())
    listed = runner.invoke(main, ["org", "list"])
    assert listed.exit_code != 0
    assert "none of the configured secrets keys opens" in listed.output
    assert "Traceback" not in listed.output


async def raw_api_key(url: str) -> str:
    store = Store.from_url(url)
    try:
        async with store.engine.connect() as connection:
            found = await connection.scalar(text("SELECT provider_api_key FROM organizations"))
    finally:
        await store.dispose()
    return str(found)
