"""Settings of one Commet sandbox instance: default API version, idempotency window, clock."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

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
    default_country: str = "US"
    default_currency: str = "usd"
    initial_available_amount: int = 0

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
        if self.initial_available_amount < 0:
            raise ValueError("initial_available_amount must not be negative")
