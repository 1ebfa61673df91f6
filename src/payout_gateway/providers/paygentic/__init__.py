"""Paygentic adapter: external bank accounts and payouts over Paygentic's REST API."""

from payout_gateway.providers.paygentic.adapter import PaygenticAdapter

__all__ = ["PaygenticAdapter"]
