"""FastAPI app factory (the one composition root), health and webhook routes."""

from payout_gateway.web.app import create_app

__all__ = ["create_app"]
