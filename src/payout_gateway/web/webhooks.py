"""Provider webhook routes: ``POST /webhooks/commet`` and ``POST /webhooks/paygentic``."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
