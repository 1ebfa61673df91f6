"""Status changes as the pipeline reports them: persisted in the audit trail, then published."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict


class ObjectType(StrEnum):
    BANK_ACCOUNT = "bank_account"
    PAYOUT_ACCOUNT = "payout_account"
    PAYOUT = "payout"


class ChangeSource(StrEnum):
    PROVIDER_RESPONSE = "provider_response"
    WEBHOOK = "webhook"
    REFRESH = "refresh"


class StatusChanged(BaseModel):
    """One applied move of one gateway object; ``object_id`` is the gateway's id."""

    model_config = ConfigDict(frozen=True)

    organization_id: str
    object_type: ObjectType
    object_id: str
    from_status: str | None
    to_status: str
    provider_status: str
    source: ChangeSource
    at: datetime
