"""The ``payout-gateway`` command: serve, run one sandbox, export the schema, manage orgs."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import os
import re
import signal
import sys
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeVar

import click
import uvicorn
import uvicorn.config
from alembic.util import CommandError
from pydantic import SecretStr, ValidationError
from pydantic_settings import SettingsError
from pythonjsonlogger.core import RESERVED_ATTRS
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from uvicorn.supervisors import Multiprocess

import payout_gateway.store.migrate as migrations
from payout_gateway.domain.enums import HolderType, Provider
from payout_gateway.domain.errors import PayoutGatewayError, StoreUnavailableError
from payout_gateway.domain.models import (
    Organization,
    OrganizationProfile,
    ProviderCredentials,
    validated,
)
from payout_gateway.metrics import MULTIPROCESS_DIRECTORY
from payout_gateway.settings import Settings
from payout_gateway.store import Store, ensure_sqlite_directory
from payout_gateway.store.secrets import SecretsKeyError
from payout_gateway.tenancy import DEMO_ORGANIZATIONS, Tenancy

if TYPE_CHECKING:
    from fastapi import FastAPI

T = TypeVar("T")


def load_settings() -> Settings:
    """The settings, or a clear error naming each variable that is wrong, never its value
    (pydantic's own message would echo it, a secret included)."""
    try:
        return Settings()
    except ValidationError as error:
        problems = [
            f"  PAYOUT_GATEWAY_{'__'.join(str(part).upper() for part in item['loc'])}: "
            f"{item['msg']}"
            for item in error.errors(include_input=False, include_url=False)
        ]
        raise click.ClickException("invalid settings:\n" + "\n".join(problems)) from None
    except SettingsError as error:
        # A list or object given as a variable is read as JSON; pydantic-settings names only
        # the field that did not parse.
        field = re.search(r'field "(\w+)"', str(error))
        name = f"PAYOUT_GATEWAY_{field[1].upper()}" if field else "a PAYOUT_GATEWAY_ variable"
        raise click.ClickException(f"invalid settings:\n  {name}: not valid JSON") from None


@click.group()
def main() -> None:
    """payout-gateway: one GraphQL API in front of Commet and Paygentic."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Worker processes sharing the port. More than 1 needs both providers configured "
    "(the sandbox simulators live in one process) and a database file or server.",
)
def serve(host: str, port: int, workers: int) -> None:
    """Run the gateway. With no provider configured: sandbox mode with demo organizations."""
    from payout_gateway.web import create_app
    from payout_gateway.web.listeners import worker_listener

    settings = load_settings()
    if workers > 1:
        if settings.sandbox_mode:
            raise click.UsageError(
                "--workers > 1 needs PAYOUT_GATEWAY_COMMET__BASE_URL and "
                "PAYOUT_GATEWAY_PAYGENTIC__BASE_URL: each worker would get its own in-process "
                "simulators, with state the other workers cannot see."
            )
        if ":memory:" in settings.database_url:
            raise click.UsageError("--workers > 1 needs a database file or server, not :memory:.")
    # Migrated once here, so that the workers' start-ups find the schema current instead of
    # racing to migrate it (each worker then builds its app from the same environment), and
    # a database that cannot be reached is one line, not a traceback from the app's start-up.
    ensure_sqlite_directory(settings.database_url)
    asyncio.run(_upgrade(settings.database_url))
    if settings.redis_url is not None:
        # Likewise the replicas' fan-out: one line rather than the app's start-up failing
        # after its wait for the stream, with a traceback.
        asyncio.run(_reach_redis(settings.redis_url))
    base = f"http://{host}:{port}"
    database = make_url(settings.database_url).render_as_string(hide_password=True)
    click.echo(f"payout-gateway on {base}/graphql  (database: {database})")
    if settings.sandbox_mode:
        click.echo("Sandbox mode: provider simulators in-process:")
        if settings.commet.base_url is None:
            click.echo(f"  Commet     {base}/sandbox/commet/api/v1")
        if settings.paygentic.base_url is None:
            click.echo(f"  Paygentic  {base}/sandbox/paygentic/v0")
    if settings.demo_enabled:
        click.echo("Demo organizations (send 'Authorization: Bearer <key>'):")
        for demo in DEMO_ORGANIZATIONS:
            if demo.provider not in settings.demo_providers:
                continue
            click.echo(f"  {demo.name:<16} {demo.provider.value:<10} key: {demo.api_key}")
    server_options = uvicorn_options(settings, host, port)
    if workers == 1:
        lean_log_records()
        # uvicorn (>= 0.29, encode/uvicorn#1600) hands the SIGTERM it shut down on back to the
        # handler it found; Python's default one would then end the process by that signal,
        # exit status 143, after a finished graceful shutdown (answers sent, the lifespan's
        # commits awaited), which Kubernetes and Docker record as an error. This one exits 0,
        # as Ctrl-C (SIGINT) already did; before uvicorn starts, it exits 0 at once.
        # ``--workers N``: uvicorn's supervisor exits 0 on SIGTERM itself.
        signal.signal(signal.SIGTERM, _exit_successfully)
        uvicorn.run(create_app(settings, serving=True), **server_options)
        return
    config = uvicorn.Config(
        "payout_gateway.cli:served_app",
        factory=True,
        workers=workers,
        timeout_worker_healthcheck=WORKER_HEALTHCHECK_SECONDS,
        **server_options,
    )
    # A socket per worker where the kernel balances them (see web/listeners), else uvicorn's
    # one shared socket.
    try:
        listener = worker_listener(host, port) or config.bind_socket()
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc}") from None
    with worker_metrics_directory(), contextlib.suppress(KeyboardInterrupt):
        Multiprocess(config, sockets=[listener]).run()


# How long uvicorn's supervisor waits for a worker to answer its health check before killing
# and replacing it (uvicorn's default: 5 s). A new worker answers only once its interpreter
# has started and imported the gateway's command module (~1.5 s of CPU): on a busy host or
# a container with a fraction of a core, that took longer than 5 s, and every worker was
# killed before it could answer, again and again, so that the replica never served. The
# check answers from a thread of its own, so a running worker answers at once either way;
# only a hung one waits it out (the supervisor handles signals between checks: 30 s stays
# within the usual termination grace periods).
WORKER_HEALTHCHECK_SECONDS = 30


def _exit_successfully(_signal: int, _frame: FrameType | None) -> None:
    sys.exit(0)


def uvicorn_options(settings: Settings, host: str, port: int) -> dict[str, Any]:
    """How ``serve`` configures uvicorn, with one worker or several."""
    return {
        "host": host,
        "port": port,
        "log_config": logging_config(settings.log_level),
        "log_level": settings.log_level.lower(),
        # uvicorn's access log prints query strings; the app logs requests without them.
        "access_log": False,
        "proxy_headers": False,
        # A WebSocket message carries a GraphQL document as a POST body does: the same cap
        # (uvicorn's own is 16 MiB), so that a subscribe message is refused before it is read
        # whole, parsed and validated, as a body past the limit gets 413 before the app.
        "ws_max_size": settings.max_body_bytes,
        # No "server: uvicorn" on every answer: which server (and so which of its advisories)
        # is a scanner's first question, and no client needs it.
        "server_header": False,
    }


@contextlib.contextmanager
def worker_metrics_directory() -> Iterator[None]:
    """A fresh directory where the workers keep their metrics, so that /metrics on any of
    them answers for all (metrics.py); removed when serving ends. A directory the operator
    named (PROMETHEUS_MULTIPROC_DIR) is used as it is."""
    if os.environ.get(MULTIPROCESS_DIRECTORY):
        yield
        return
    with tempfile.TemporaryDirectory(prefix="payout-gateway-metrics-") as directory:
        os.environ[MULTIPROCESS_DIRECTORY] = directory
        try:
            yield
        finally:
            del os.environ[MULTIPROCESS_DIRECTORY]


def served_app() -> FastAPI:
    """The app of one ``serve --workers N`` worker process (uvicorn imports it by name)."""
    from payout_gateway.web import create_app

    lean_log_records()
    return create_app(load_settings(), serving=True)


def lean_log_records() -> None:
    """Log records of the serving process stop collecting what no formatter here prints: the
    calling file, function and line (a walk up the stack per record) and the thread's and
    process's names. The logging HOWTO's own optimizations; about 1.5 % of an add's
    instructions (bench/PROFILE.md, eighth round). Tracebacks are unaffected."""
    logging._srcfile = None
    logging.logThreads = False
    logging.logMultiprocessing = False


def logging_config(level: str) -> dict[str, Any]:
    """uvicorn's own logging set-up plus the gateway's loggers (access log, provider calls,
    webhooks, errors) and every library's (SQLAlchemy, asyncpg, Redis, asyncio), one JSON
    line per record on stderr with its structured extras, a traceback in ``exc_info``.
    uvicorn applies it in every worker process. Without it the gateway's records below
    WARNING were dropped: nothing configured the ``payout_gateway`` loggers."""
    config: dict[str, Any] = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    config["formatters"]["json"] = {
        "()": "pythonjsonlogger.orjson.OrjsonFormatter",
        "fmt": "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s",
        # Not uvicorn's copy of a message with terminal colour codes in it.
        "reserved_attrs": [*RESERVED_ATTRS, "color_message"],
    }
    # uvicorn's own lines (start-up, errors, WebSocket handshakes) in the gateway's shape too:
    # a log pipeline reading JSON lines took its plain ones for garbage, tracebacks included.
    for handler in config["handlers"].values():
        handler["formatter"] = "json"
    filters = config.setdefault("filters", {})
    filters["request_id"] = {"()": "payout_gateway.request_log.RequestIdFilter"}
    filters["handshake_query"] = {"()": "payout_gateway.request_log.HandshakeQueryFilter"}
    # uvicorn's own lines go through "default".
    config["handlers"]["default"].setdefault("filters", []).extend(
        ["handshake_query", "request_id"]
    )
    config["handlers"]["gateway"] = {
        "class": "logging.StreamHandler",
        "formatter": "json",
        "stream": "ext://sys.stderr",
        "filters": ["request_id"],
    }
    config["loggers"]["payout_gateway"] = {
        "handlers": ["gateway"],
        "level": level.upper(),
        "propagate": False,
    }
    # The libraries' records: their warnings and errors (their INFO is chatter an operator
    # did not ask for), or only what the level asks for if it is stricter. Without a handler
    # here Python's last resort printed them as bare text.
    config["root"] = {
        "handlers": ["gateway"],
        "level": max(logging.WARNING, logging.getLevelNamesMapping()[level.upper()]),
    }
    return config


_SANDBOX_CREDENTIALS = {
    "commet": "Credentials: any x-api-key ck_live_<8+ letters or digits>, each key its own "
    "organization (ck_sandbox_ keys get no payouts, as at Commet).",
    "paygentic": "Credentials: any 'Authorization: Bearer <8+ letters, digits, _ - .>' "
    "(sk_readonly_ ones only read).",
}


@main.command()
@click.argument("provider", type=click.Choice(["commet", "paygentic"]))
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8100, show_default=True, type=int)
def sandbox(provider: str, host: str, port: int) -> None:
    """Run one provider simulator on its own."""
    from payout_gateway.sandbox.registry import SANDBOXES, SandboxOptions

    root = "/api/v1" if provider == "commet" else "/v0"
    click.echo(f"{provider} sandbox on http://{host}:{port}{root}  (OpenAPI: /openapi.json)")
    # Which credentials it takes is otherwise learnt from a bare "Invalid API key.".
    click.echo(_SANDBOX_CREDENTIALS[provider])
    click.echo(
        "Statuses move only through its /_sandbox/ control routes; "
        f"point the gateway at it with PAYOUT_GATEWAY_{provider.upper()}__BASE_URL="
        f"http://{host}:{port}{root if provider == 'commet' else ''}"
    )
    uvicorn.run(
        SANDBOXES[Provider(provider.upper())](SandboxOptions()),
        host=host,
        port=port,
        log_level="warning",
    )


@main.command("export-schema")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None)
def export_schema(output: Path | None) -> None:
    """Print the GraphQL schema (SDL), or write it to --output."""
    from payout_gateway.graphql.schema import build_schema

    sdl = build_schema().as_str() + "\n"
    if output is None:
        click.echo(sdl, nl=False)
    else:
        output.write_text(sdl, encoding="utf-8")


# --- database schema -----------------------------------------------------------------------


@main.command()
@click.option("--revision", default="head", show_default=True, help="The revision to reach.")
@click.option("--show", is_flag=True, help="Print the current revision and change nothing.")
def migrate(revision: str, show: bool) -> None:
    """Bring the database (PAYOUT_GATEWAY_DATABASE_URL) to --revision with its migrations."""

    url = load_settings().database_url
    if not show:
        ensure_sqlite_directory(url)
        asyncio.run(_upgrade(url, revision))
    try:
        found = asyncio.run(migrations.current(url))
    except DATABASE_UNREACHABLE as exc:
        raise _unreachable(exc) from exc
    if found is None:
        shown = "none (no migration applied)"
    else:
        shown = f"{found} (head)" if found == migrations.head() else found
    click.echo(shown if show else f"database at revision {shown}")


async def _upgrade(url: str, revision: str = "head") -> None:
    """Migrate; a refused schema or an unknown revision is a plain command-line error."""
    try:
        await migrations.upgrade(url, revision)
    except (migrations.MigrationError, CommandError) as exc:
        raise click.ClickException(str(exc)) from exc
    except DATABASE_UNREACHABLE as exc:
        raise _unreachable(exc) from exc


async def _reach_redis(url: str) -> None:
    """Ping the Redis the replicas share once, or say in one line why it cannot be used."""
    from redis.asyncio import Redis
    from redis.exceptions import RedisError

    client = Redis.from_url(url, socket_connect_timeout=3.0, socket_timeout=3.0)
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        # redis-py's messages name the host and port, never the URL's password.
        reason = str(exc) or type(exc).__name__
        raise click.ClickException(
            f"cannot reach the Redis of PAYOUT_GATEWAY_REDIS_URL: {reason}"
        ) from exc
    finally:
        await client.aclose()


# A server that refuses or does not answer (asyncpg raises OSError and TimeoutError, one of
# them, as they are), a database or role that does not exist, a file SQLite cannot open.
DATABASE_UNREACHABLE = (DBAPIError, OSError)


def _unreachable(exc: BaseException) -> click.ClickException:
    said = exc.orig if isinstance(exc, DBAPIError) else exc
    reason = str(said) or type(said).__name__  # a TimeoutError says nothing
    return click.ClickException(f"cannot use the database of PAYOUT_GATEWAY_DATABASE_URL: {reason}")


# --- organizations and keys ----------------------------------------------------------------


def _run(action: Callable[[Tenancy, Store], Awaitable[T]]) -> T:
    async def run() -> T:
        settings = load_settings()

        ensure_sqlite_directory(settings.database_url)
        store = Store.from_url(
            settings.database_url,
            secrets=settings.secret_codec(),
            timeout_seconds=settings.database_timeout_seconds,
        )
        try:
            await _upgrade(settings.database_url)
            return await action(Tenancy(store, settings.api_key_pepper), store)
        finally:
            await store.dispose()

    try:
        return asyncio.run(run())
    except PayoutGatewayError as exc:
        click.echo(f"error: {exc.message}{_database_failure(exc)}", err=True)
        sys.exit(2)
    except SecretsKeyError as exc:
        raise click.ClickException(str(exc)) from exc


def _database_failure(exc: PayoutGatewayError) -> str:
    """For the operator at the command line, what the database driver said when the store
    failed (an API answer leaves it out): the driver's own message, without SQLAlchemy's
    statement and parameters."""
    cause = exc.__cause__
    if not isinstance(exc, StoreUnavailableError) or cause is None:
        return ""
    said = cause.orig if isinstance(cause, DBAPIError) else cause
    return f" ({type(said).__name__}: {said})"


async def _find_org(store: Store, ref: str) -> Organization:
    async with store.session() as session:
        org = await session.get_organization(ref) or await session.organization_by_name(ref)
    if org is None:
        raise click.ClickException(f"no organization named or with id {ref!r}")
    return org


@main.group()
def org() -> None:
    """Manage organizations and their gateway API keys."""


_PAYGENTIC_ORGANIZATION_ID = (
    "--provider-org-id must be a Paygentic organization id: org_ followed by letters and digits"
)


def _paygentic_organization_id(value: str | None) -> bool:
    from payout_gateway.providers.paygentic.wire import ORGANIZATION_ID

    return value is not None and ORGANIZATION_ID.fullmatch(value) is not None


@org.command("create")
@click.option("--name", required=True)
@click.option("--provider", required=True, type=click.Choice(["commet", "paygentic"]))
@click.option(
    "--provider-api-key",
    prompt=True,
    hide_input=True,
    envvar="PAYOUT_GATEWAY_PROVIDER_API_KEY",
    help="The provider credential (prompted for when omitted; never echoed).",
)
@click.option("--provider-org-id", default=None, help="Paygentic: the org_… id it acts for.")
@click.option("--payout-source-id", default=None, help="Paygentic: sourceId of payouts.")
@click.option("--country", required=True, help="ISO 3166-1 alpha-2.")
@click.option("--currency", required=True, help="ISO 4217.")
@click.option("--bank-name", default=None)
@click.option("--holder-type", type=click.Choice(["individual", "company"]), default=None)
def org_create(
    name: str,
    provider: str,
    provider_api_key: str,
    provider_org_id: str | None,
    payout_source_id: str | None,
    country: str,
    currency: str,
    bank_name: str | None,
    holder_type: str | None,
) -> None:
    """Create an organization with its provider, credentials and profile."""
    if provider == "paygentic" and not provider_org_id:
        raise click.UsageError("--provider-org-id is required for paygentic")
    if provider == "paygentic" and not _paygentic_organization_id(provider_org_id):
        raise click.UsageError(_PAYGENTIC_ORGANIZATION_ID)

    async def action(tenancy: Tenancy, _store: Store) -> Organization:
        profile = validated(
            OrganizationProfile,
            {
                "country": country,
                "currency": currency,
                "bank_name": bank_name,
                "holder_type": HolderType(holder_type.upper()) if holder_type else None,
            },
        )
        return await tenancy.create_organization(
            name=name,
            provider=Provider(provider.upper()),
            credentials=ProviderCredentials(
                api_key=SecretStr(provider_api_key),
                provider_organization_id=provider_org_id,
                payout_source_id=payout_source_id,
            ),
            profile=profile,
        )

    created = _run(action)
    click.echo(f"created organization {created.name} ({created.id}) on {created.provider.value}")


@org.command("list")
def org_list() -> None:
    """List organizations."""

    async def action(_tenancy: Tenancy, store: Store) -> list[Organization]:
        async with store.session() as session:
            return await session.list_organizations()

    for item in _run(action):
        profile = item.profile
        click.echo(
            f"{item.id}  {item.name:<24} {item.provider.value:<10} "
            f"{profile.country} {profile.currency}"
        )


@org.command("issue-key")
@click.argument("organization")
@click.option("--label", default=None)
def org_issue_key(organization: str, label: str | None) -> None:
    """Issue a gateway API key for ORGANIZATION (name or id). It is shown once."""

    async def action(tenancy: Tenancy, store: Store) -> tuple[str, str]:
        found = await _find_org(store, organization)
        record, plaintext = await tenancy.issue_api_key(found.id, label=label)
        return record.id, plaintext

    key_id, plaintext = _run(action)
    click.echo(f"key id: {key_id}")
    click.echo(f"api key (shown once, store it now): {plaintext}")


@org.command("keys")
@click.argument("organization")
def org_keys(organization: str) -> None:
    """List ORGANIZATION's API keys (prefixes only)."""

    async def action(_tenancy: Tenancy, store: Store) -> list[str]:
        found = await _find_org(store, organization)
        async with store.session() as session:
            keys = await session.list_api_keys(found.id)
        return [
            f"{k.id}  {k.prefix}…  {k.label or '-':<12} "
            f"{'revoked ' + k.revoked_at.isoformat() if k.revoked_at else 'active'}"
            for k in keys
        ]

    for line in _run(action):
        click.echo(line)


@org.command("revoke-key")
@click.argument("key_id")
def org_revoke_key(key_id: str) -> None:
    """Revoke the API key KEY_ID (see `org keys`)."""

    async def action(tenancy: Tenancy, _store: Store) -> None:
        await tenancy.revoke_api_key(key_id)

    _run(action)
    click.echo(f"revoked {key_id}")


@org.command("set-webhook-secret")
@click.argument("organization")
@click.option(
    "--secret",
    prompt="Webhook signing secret",
    hide_input=True,
    envvar="PAYOUT_GATEWAY_WEBHOOK_SECRET",
    help="The provider's signing secret (whsec_…) for this organization (prompted for when "
    "omitted; never echoed).",
)
@click.option(
    "--provider-org-id",
    default=None,
    help="Also set the provider's id of the organization: how its webhooks name it.",
)
def org_set_webhook_secret(organization: str, secret: str, provider_org_id: str | None) -> None:
    """Set the secret that signs ORGANIZATION's provider webhooks (name or id)."""
    secret = secret.strip()
    if not secret:
        raise click.UsageError("the webhook secret must not be empty")
    if provider_org_id is not None and not (
        0 < len(provider_org_id) <= 100 and all("!" <= char <= "~" for char in provider_org_id)
    ):
        raise click.UsageError("--provider-org-id must be 1 to 100 printable ASCII characters")

    async def action(_tenancy: Tenancy, store: Store) -> Organization:
        from payout_gateway.providers.paygentic.webhooks import is_usable_secret

        found = await _find_org(store, organization)
        # Svix secrets are base64 keys: refuse one the verifier could never use.
        if found.provider is Provider.PAYGENTIC and not is_usable_secret(secret):
            raise click.UsageError("a Paygentic (Svix) secret looks like whsec_<base64>")
        # The adapter names the same id in every Paygentic request.
        if (
            found.provider is Provider.PAYGENTIC
            and provider_org_id is not None
            and not _paygentic_organization_id(provider_org_id)
        ):
            raise click.UsageError(_PAYGENTIC_ORGANIZATION_ID)
        async with store.session() as session:
            await session.set_webhook_secret(found.id, secret)
            if provider_org_id is not None:
                await session.set_provider_organization_id(found.id, provider_org_id)
        async with store.session() as session:
            updated = await session.get_organization(found.id)
        return updated or found

    updated = _run(action)
    click.echo(f"webhook secret set for {updated.name} ({updated.provider.value})")
    provider_org = updated.credentials.provider_organization_id
    if provider_org is None:
        # Deliveries are matched to organizations by the provider's organization id.
        click.echo(
            "note: no provider organization id is set, so its webhooks cannot be matched "
            "to it yet; pass --provider-org-id",
            err=True,
        )
    else:
        click.echo(f"webhooks naming {provider_org} are verified with this secret")


@org.command("reseal-secrets")
def org_reseal_secrets() -> None:
    """Seal every organization's provider credential and webhook secret with the newest key of
    PAYOUT_GATEWAY_SECRETS_KEYS: those written before keys were set, and those sealed with an
    older key (run it after putting a new key first, then drop the old one)."""
    settings = load_settings()
    if not settings.secrets_keys:
        raise click.UsageError(
            "PAYOUT_GATEWAY_SECRETS_KEYS is not set: there is no key to seal with"
        )

    async def action(_tenancy: Tenancy, store: Store) -> int:
        async with store.session() as session:
            return await session.reseal_secrets()

    count = _run(action)
    click.echo(f"secrets of {count} organization(s) sealed with the newest key")


@main.command("secrets-key")
def secrets_key() -> None:
    """Print a new key for PAYOUT_GATEWAY_SECRETS_KEYS (put it first; keep older keys after it
    until `payout-gateway org reseal-secrets` has run)."""
    from cryptography.fernet import Fernet

    click.echo(Fernet.generate_key().decode("ascii"))
