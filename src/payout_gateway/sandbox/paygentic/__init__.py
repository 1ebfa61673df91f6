"""A faithful local simulator of Paygentic's external-accounts and payouts API (see ``app``)."""

from payout_gateway.sandbox.paygentic.app import create_paygentic_sandbox
from payout_gateway.sandbox.paygentic.config import PaygenticSandboxConfig
from payout_gateway.sandbox.paygentic.state import PaygenticSandboxState

__all__ = ["PaygenticSandboxConfig", "PaygenticSandboxState", "create_paygentic_sandbox"]
