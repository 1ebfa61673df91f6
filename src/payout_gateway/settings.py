"""The one Settings class: every knob, from ``PAYOUT_GATEWAY_*`` variables or an optional file."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from payout_gateway.domain.enums import Provider
from payout_gateway.providers.transport import HttpBackend, HttpPolicy
from payout_gateway.store.database import (
    DEFAULT_DATABASE_TIMEOUT_SECONDS,
    normalize_database_url,
)
from payout_gateway.store.secrets import SecretCodec, SecretsKeyError

# The messages below never quote the value: a URL may carry a password.

# API keys and request fingerprints are hashed with this unless a pepper is set: fine for
# development and the sandbox, refused in production.
DEVELOPMENT_PEPPER = "payout-gateway-development-pepper"


def _scheme(url: str) -> str | None:
    try:
        return urlsplit(url).scheme
    except ValueError:
        return None


def _http_url(value: str) -> str:
    if _scheme(value) not in ("http", "https") or not urlsplit(value).hostname:
        raise ValueError("must be an http:// or https:// URL")
    return value


HttpUrl = Annotated[str, AfterValidator(_http_url)]
Seconds = Annotated[float, Field(gt=0)]


class Environment(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


class ProviderSettings(BaseModel):
    """How to reach one provider. No ``base_url``: the in-process sandbox (sandbox mode)."""

    base_url: HttpUrl | None = None
    connect_timeout: Seconds = 3.0
    read_timeout: Seconds = 10.0
    total_deadline: Seconds = 25.0
    max_retries: Annotated[int, Field(ge=0, le=5)] = 2
    max_connections: Annotated[int, Field(ge=1)] = 100
    # Failed requests in a row that open the provider's circuit, and for how long (seconds).
    circuit_failures: Annotated[int, Field(ge=1)] = 5
    circuit_reset_seconds: Annotated[float, Field(gt=0)] = 30.0
    # httpcore: httpx's own transport, to measure the aiohttp lever both ways.
    http_backend: HttpBackend = HttpBackend.AIOHTTP

    def http_policy(self) -> HttpPolicy:
        return HttpPolicy(
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            write_timeout=self.read_timeout,
            total_deadline=self.total_deadline,
            max_retries=self.max_retries,
            max_connections=self.max_connections,
            max_keepalive_connections=self.max_connections,
            backend=self.http_backend,
            circuit_failures=self.circuit_failures,
            circuit_reset_seconds=self.circuit_reset_seconds,
        )


class JwtSettings(BaseModel):
    """Frontends' JWTs (jwt_tokens.py): off unless ``secret`` or ``jwks_url`` is set."""

    # HS256 with a secret the customer's backend shares, or the identity provider's keys.
    secret: SecretStr | None = None
    jwks_url: HttpUrl | None = None
    # Required once JWTs are on: a token minted for another service is not one for this.
    audience: str | None = None
    # Required with a JWKS URL (it names the identity provider); optional with a secret.
    issuer: str | None = None
    # The claim holding the gateway organization's id (Auth0 wants namespaced claims).
    organization_claim: Annotated[str, Field(min_length=1)] = "org_id"

    @model_validator(mode="after")
    def _complete(self) -> JwtSettings:
        if self.secret is not None and self.jwks_url is not None:
            raise ValueError("set either JWT__SECRET or JWT__JWKS_URL, not both")
        if self.enabled and not self.audience:
            raise ValueError("JWT__AUDIENCE is required once JWTs are on")
        if self.jwks_url is not None and not self.issuer:
            raise ValueError("JWT__ISSUER is required with JWT__JWKS_URL")
        if self.secret is not None and len(self.secret.get_secret_value()) < 32:
            raise ValueError("JWT__SECRET must have at least 32 characters (RFC 7518: 256 bits)")
        return self

    @property
    def enabled(self) -> bool:
        return self.secret is not None or self.jwks_url is not None


class Settings(BaseSettings):
    """``PAYOUT_GATEWAY_DATABASE_URL``, ``PAYOUT_GATEWAY_COMMET__BASE_URL`` (nested with ``__``),
    ``PAYOUT_GATEWAY_ENVIRONMENT=production``, … An optional ``.env`` file is read too
    (``PAYOUT_GATEWAY_ENV_FILE`` names another)."""

    model_config = SettingsConfigDict(
        env_prefix="PAYOUT_GATEWAY_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
    )

    environment: Environment = Environment.DEVELOPMENT
    database_url: str = "sqlite+aiosqlite:///./var/payout-gateway.db"
    # PostgreSQL: a connection attempt, a statement or a wait for a pooled connection taking
    # longer fails (a server that stopped answering), instead of holding the request.
    database_timeout_seconds: Annotated[float, Field(gt=0, le=300)] = (
        DEFAULT_DATABASE_TIMEOUT_SECONDS
    )
    commet: ProviderSettings = ProviderSettings()
    paygentic: ProviderSettings = ProviderSettings()
    # None: on in development, off in production.
    graphiql: bool | None = None
    introspection: bool | None = None
    # Demo organizations with the documented keys; None: those of the providers whose
    # simulator runs in-process, outside production.
    demo_organizations: bool | None = None
    max_page_size: Annotated[int, Field(ge=1, le=1000)] = 100
    default_page_size: Annotated[int, Field(ge=1, le=1000)] = 20
    max_query_depth: Annotated[int, Field(ge=2, le=100)] = 12
    max_query_tokens: Annotated[int, Field(ge=100)] = 5000
    max_aliases: Annotated[int, Field(ge=1)] = 100
    max_body_bytes: Annotated[int, Field(ge=1024)] = 256 * 1024
    cors_origins: list[str] = []
    # Pepper for hashing gateway API keys (HMAC-SHA256); change it and every key is void.
    # Validated even when not set: production refuses the public development one.
    api_key_pepper: Annotated[SecretStr, Field(validate_default=True)] = SecretStr(
        DEVELOPMENT_PEPPER
    )
    # Fernet keys sealing provider credentials and webhook secrets at rest, newest first,
    # comma-separated (store/secrets.py); none: kept as written.
    secrets_keys: Annotated[list[SecretStr], NoDecode] = []
    log_level: str = "INFO"
    # GET /metrics in Prometheus' format (keep it off the public internet, or turn it off).
    metrics: bool = True
    # Frontends' credentials besides API keys (off by default).
    jwt: JwtSettings = JwtSettings()
    # Fan-out across replicas: unset = in-process (one replica); redis://host:6379/0 = Redis.
    redis_url: str | None = None
    # The replicas' stream is <prefix>stream; deployments sharing one Redis need distinct ones.
    # (The name is from when fan-out used pub/sub channels; kept so deployments need no change.)
    redis_channel_prefix: Annotated[str, Field(min_length=1, max_length=200)] = (
        "payout-gateway:status:"
    )
    # Changes the stream keeps, about: what a replica away from Redis can still catch up on.
    redis_stream_max_length: Annotated[int, Field(ge=100)] = 10_000
    # With Redis: a move still in the status outbox this long after its commit is published
    # by the relay's leader (its replica stopped before Redis took it).
    status_outbox_grace_seconds: Annotated[float, Field(gt=0)] = 15.0
    # Idempotency keys are kept this long after the first request (Stripe: 24 h).
    idempotency_retention_hours: Annotated[float, Field(gt=0)] = 24.0
    # A request holding a key longer than this is presumed dead; a retry may take over.
    idempotency_lease_seconds: Annotated[float, Field(gt=0)] = 60.0
    # Refresh of non-final objects from providers that can be read (Paygentic).
    refresh_interval_seconds: Annotated[float, Field(ge=0)] = 5.0
    # Sandbox mode: simulators move pending statuses on their own after this delay.
    sandbox_status_delay_seconds: Annotated[float, Field(ge=0)] = 5.0
    # Paygentic (Svix) webhooks older or newer than this are refused (replay protection).
    webhook_tolerance_seconds: Annotated[int, Field(ge=1)] = 300

    @field_validator("default_page_size")
    @classmethod
    def _default_within_maximum(cls, value: int, info: ValidationInfo) -> int:
        # Otherwise every page asked for without `first` would be refused.
        maximum = info.data.get("max_page_size")
        if maximum is not None and value > maximum:
            raise ValueError("must be at most PAYOUT_GATEWAY_MAX_PAGE_SIZE")
        return value

    @field_validator("api_key_pepper")
    @classmethod
    def _secret_pepper_in_production(cls, value: SecretStr, info: ValidationInfo) -> SecretStr:
        # The pepper also keys the request fingerprints of idempotency records, HMACs of
        # requests holding account numbers: with a public pepper, a copy of the database lets
        # anyone recover a number by trying the few candidates it can have.
        pepper = value.get_secret_value()
        if info.data.get("environment") is Environment.PRODUCTION and (
            not pepper.strip() or pepper == DEVELOPMENT_PEPPER
        ):
            raise ValueError(
                "set a secret of your own in production (the development pepper is public)"
            )
        return value

    @field_validator("commet", "paygentic")
    @classmethod
    def _provider_reached_in_production(
        cls, value: ProviderSettings, info: ValidationInfo
    ) -> ProviderSettings:
        # Without a base URL the provider's in-process simulator stands in, and with it its
        # control routes, which anyone may call unauthenticated to mark payouts paid or
        # accounts verified: a development tool, never a production one.
        if info.data.get("environment") is Environment.PRODUCTION and value.base_url is None:
            variable = f"PAYOUT_GATEWAY_{(info.field_name or '').upper()}__BASE_URL"
            raise ValueError(
                f"production needs {variable}: without it the provider's in-process "
                "simulator would stand in, with its unauthenticated control routes"
            )
        return value

    @field_validator("secrets_keys", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()]
        return value

    @field_validator("secrets_keys")
    @classmethod
    def _fernet_keys(cls, value: list[SecretStr]) -> list[SecretStr]:
        try:
            SecretCodec([key.get_secret_value() for key in value])
        except SecretsKeyError as error:
            raise ValueError(str(error)) from None
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        try:
            driver = make_url(normalize_database_url(value)).drivername
        except (ArgumentError, ValueError):  # ValueError: a port that is not a number
            driver = None
        if driver not in ("sqlite+aiosqlite", "postgresql+asyncpg"):
            raise ValueError("must be a sqlite:/// or postgresql:// URL")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is not None and _scheme(value) not in ("redis", "rediss", "unix"):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        value = value.upper()
        if value not in ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"):
            raise ValueError("must be one of CRITICAL, ERROR, WARNING, INFO, DEBUG")
        return value

    def secret_codec(self) -> SecretCodec:
        return SecretCodec([key.get_secret_value() for key in self.secrets_keys])

    @property
    def sandbox_mode(self) -> bool:
        """True when any provider has no base URL: its in-process simulator stands in."""
        return self.commet.base_url is None or self.paygentic.base_url is None

    @property
    def is_production(self) -> bool:
        return self.environment is Environment.PRODUCTION

    @property
    def graphiql_enabled(self) -> bool:
        return self.graphiql if self.graphiql is not None else not self.is_production

    @property
    def introspection_enabled(self) -> bool:
        return self.introspection if self.introspection is not None else not self.is_production

    @property
    def demo_enabled(self) -> bool:
        return bool(self.demo_providers)

    @property
    def demo_providers(self) -> frozenset[Provider]:
        """The providers whose demo organization exists. By default only the simulated ones:
        a demo organization's dummy credential sent to a configured (real) provider is only
        ever refused, behind a key printed in the README."""
        if self.demo_organizations is not None:
            return frozenset(Provider) if self.demo_organizations else frozenset()
        if self.is_production:
            return frozenset()
        return frozenset(
            provider
            for provider, policy in (
                (Provider.COMMET, self.commet),
                (Provider.PAYGENTIC, self.paygentic),
            )
            if policy.base_url is None
        )
