"""Which simulator stands in for which provider in sandbox mode."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI

from payout_gateway.domain.enums import Provider


def _commet() -> FastAPI:
    from payout_gateway.sandbox.commet import create_commet_sandbox

    return create_commet_sandbox()


def _paygentic() -> FastAPI:
    from payout_gateway.sandbox.paygentic import create_paygentic_sandbox

    return create_paygentic_sandbox()


SANDBOXES: dict[Provider, Callable[[], FastAPI]] = {
    Provider.COMMET: _commet,
    Provider.PAYGENTIC: _paygentic,
}
