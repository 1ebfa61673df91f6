"""Settings of one Commet sandbox instance: default API version, idempotency window, clock,
webhook delivery."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx

from payout_gateway.sandbox.commet.versions import VersionError, resolve_version


def utc_now() -> datetime:
    return datetime.now(UTC)


_CURRENCY = re.compile(r"[a-z]{3}")
_COUNTRY = re.compile(r"[A-Z]{2}")


@dataclass(frozen=True, slots=True)
class CommetSandboxConfig:
    """How one sandbox behaves. Every field has a default, so ``CommetSandboxConfig()`` works.

    ``clock`` must return timezone-aware datetimes; it drives ``createdAt`` values, the
    idempotency window and ``auto_verify_after_seconds``, so tests inject a fake one.
    """

    default_version: str = "2026-07-11"
    idempotency_ttl_seconds: int = 86_400
    clock: Callable[[], datetime] = field(default=utc_now)
    # None: payout accounts stay pending until a control route moves them.
    auto_verify_after_seconds: float | None = None
    # When set, a new payout is paid this long after its creation by a timer (not lazily: the
    # point is the ``payout.paid`` webhook it sends when nobody is reading).
    auto_pay_after_seconds: float | None = None
    default_country: str = "US"
    default_currency: str = "usd"
    initial_available_amount: int = 0
    # Webhooks: Commet makes 8 attempts over about 4 hours (1 m, 5 m, 15 m, 30 m, 1 h, 1 h, 1 h
    # apart); the sandbox makes as many, seconds apart, so tests and demos see retries happen.
    webhook_retry_delays: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
    webhook_timeout_seconds: float = 10.0
    # Where deliveries go through (tests: httpx.ASGITransport or MockTransport); None: network.
    # A per-delivery client closes it when done, so pass one without pooled connections.
    webhook_transport: httpx.AsyncBaseTransport | None = None

    def __post_init__(self) -> None:
        try:
            resolve_version(self.default_version)
        except VersionError as exc:
            raise ValueError(f"default_version: {exc}") from None
        if self.idempotency_ttl_seconds <= 0:
            raise ValueError("idempotency_ttl_seconds must be positive")
        if self.auto_verify_after_seconds is not None and self.auto_verify_after_seconds < 0:
            raise ValueError("auto_verify_after_seconds must not be negative")
        if _COUNTRY.fullmatch(self.default_country) is None:
            raise ValueError("default_country must be an upper-case ISO 3166-1 alpha-2 code")
        if _CURRENCY.fullmatch(self.default_currency) is None:
            raise ValueError("default_currency must be a lower-case ISO 4217 code")
        if self.auto_pay_after_seconds is not None and self.auto_pay_after_seconds < 0:
            raise ValueError("auto_pay_after_seconds must not be negative")
        if self.initial_available_amount < 0:
            raise ValueError("initial_available_amount must not be negative")
        if any(delay < 0 for delay in self.webhook_retry_delays):
            raise ValueError("webhook_retry_delays must not be negative")
        if self.webhook_timeout_seconds <= 0:
            raise ValueError("webhook_timeout_seconds must be positive")
