"""Commet sandbox: a faithful local simulator of Commet's payout API (choices listed in ``app``)."""

from payout_gateway.sandbox.commet.app import create_commet_sandbox
from payout_gateway.sandbox.commet.config import CommetSandboxConfig

__all__ = ["CommetSandboxConfig", "create_commet_sandbox"]
