"""Commet payout adapter: wire shapes, pure transformers and the HTTP shell."""

from payout_gateway.providers.commet.adapter import CommetAdapter

__all__ = ["CommetAdapter"]
