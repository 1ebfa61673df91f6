"""Which simulator stands in for which provider in sandbox mode, and how it is set up."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import httpx
from fastapi import FastAPI

from payout_gateway.domain.enums import Provider


@dataclass(frozen=True, slots=True)
class SandboxOptions:
    # Pending statuses (verification, payouts) move on their own after this; None: never.
    status_delay: float | None = None
    # How the simulator reaches webhook endpoints (in-process: the gateway app itself).
    webhook_transport: httpx.AsyncBaseTransport | None = None
    # Balance every simulated organization starts with, in minor units.
    starting_balance: int = 0


def _commet(options: SandboxOptions) -> FastAPI:
    from payout_gateway.sandbox.commet import CommetSandboxConfig, create_commet_sandbox

    return create_commet_sandbox(
        CommetSandboxConfig(
            auto_verify_after_seconds=options.status_delay,
            auto_pay_after_seconds=options.status_delay,
            initial_available_amount=options.starting_balance,
            webhook_transport=options.webhook_transport,
        )
    )


def _paygentic(options: SandboxOptions) -> FastAPI:
    from payout_gateway.sandbox.paygentic import PaygenticSandboxConfig, create_paygentic_sandbox

    return create_paygentic_sandbox(
        PaygenticSandboxConfig(
            auto_verify_after_seconds=options.status_delay,
            auto_pay_after_seconds=options.status_delay,
        )
    )


SANDBOXES: dict[Provider, Callable[[SandboxOptions], FastAPI]] = {
    Provider.COMMET: _commet,
    Provider.PAYGENTIC: _paygentic,
}
