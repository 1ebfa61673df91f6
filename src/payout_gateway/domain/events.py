"""Status changes as the pipeline reports them: persisted in the audit trail, then published."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from payout_gateway.domain.enums import Provider


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
    # The change's place in the audit trail: a later change of the same object has a larger
    # one (its row is written under the object's lock), so fan-out can drop one that arrives
    # late. None from a version that did not send it.
    sequence: int | None = None


@dataclass(frozen=True, slots=True)
class DeliveredEvent:
    """A provider event that carries the update: recorded once, for good, by its id."""

    provider: Provider
    event_id: str
    event_type: str


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    """What a source learned: object (by gateway id or provider id) is now ``status``."""

    organization_id: str
    object_type: ObjectType
    status: StrEnum
    provider_status: str
    source: ChangeSource
    at: datetime
    object_id: str | None = None
    provider_object_id: str | None = None
