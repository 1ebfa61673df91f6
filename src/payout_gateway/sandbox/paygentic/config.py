"""Settings of one Paygentic sandbox instance: clock, sleeper, delays, page size, fees."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class PaygenticSandboxConfig:
    """How a sandbox behaves. Every field has a default; tests inject ``clock`` and ``sleep``.

    - ``clock``: returns the current time (timezone-aware; naive values are read as UTC).
    - ``sleep``: awaited for latency faults, so tests can observe delays without waiting.
    - ``auto_verify_after_seconds``: when set, an account in ``new`` reads as ``verified`` once
      this many seconds have passed since it entered ``new`` (evaluated lazily on every read,
      so no background task exists and a fake clock drives it deterministically).
    - ``page_max``: the largest accepted ``limit`` (Paygentic documents 100).
    - ``page_default``: the ``limit`` used when the query has none (Paygentic documents 10).
    - ``seed``: makes generated ids reproducible; ``None`` draws from the OS.
    - ``platform_fee_cents`` / ``method_fee_cents``: fixed fees reported on every payout.
    """

    clock: Callable[[], datetime] = _utc_now
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    auto_verify_after_seconds: float | None = None
    # When set, a pending payout reads as ``success`` this long after its creation (lazily on
    # read, like auto-verification): the demo's payouts settle on their own.
    auto_pay_after_seconds: float | None = None
    page_max: int = 100
    page_default: int = 10
    seed: int | None = None
    platform_fee_cents: int = 0
    method_fee_cents: int = 0

    def __post_init__(self) -> None:
        if self.auto_verify_after_seconds is not None and self.auto_verify_after_seconds < 0:
            raise ValueError("auto_verify_after_seconds must be >= 0")
        if self.auto_pay_after_seconds is not None and self.auto_pay_after_seconds < 0:
            raise ValueError("auto_pay_after_seconds must be >= 0")
        if self.page_max < 1:
            raise ValueError("page_max must be >= 1")
        if not 1 <= self.page_default <= self.page_max:
            raise ValueError("page_default must be between 1 and page_max")
        if self.platform_fee_cents < 0 or self.method_fee_cents < 0:
            raise ValueError("fees must be >= 0")
