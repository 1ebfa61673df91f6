"""The gateway's tables: organizations, API keys, bank and payout accounts, status audit trail.

Never stored: full account or routing numbers, KYC data. Only ``last4`` of any number.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on every backend (SQLite keeps no offset of its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UtcDateTime, dict[str, Any]: JSON}


class OrganizationRow(Base):
    __tablename__ = "organizations"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    provider: Mapped[str] = mapped_column(String(20))
    # The provider credential must be usable to call the provider, so it is kept (secret),
    # unlike gateway API keys which are kept only as hashes.
    provider_api_key: Mapped[str] = mapped_column(Text)
    provider_organization_id: Mapped[str | None] = mapped_column(String(100))
    payout_source_id: Mapped[str | None] = mapped_column(String(100))
    country: Mapped[str] = mapped_column(String(2))
    currency: Mapped[str] = mapped_column(String(3))
    bank_name: Mapped[str | None] = mapped_column(String(200))
    holder_type: Mapped[str | None] = mapped_column(String(20))
    # Secret that signs the provider's webhooks to this organization (Commet hex HMAC key or
    # Paygentic/Svix ``whsec_…``).
    webhook_secret: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]


class ApiKeyRow(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(40))
    label: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class BankAccountRow(Base):
    __tablename__ = "bank_accounts"
    __table_args__ = (Index("ix_bank_accounts_org_page", "organization_id", "created_at", "id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    provider: Mapped[str] = mapped_column(String(20))
    provider_account_id: Mapped[str | None] = mapped_column(String(100), index=True)
    holder_name: Mapped[str] = mapped_column(String(200))
    holder_type: Mapped[str | None] = mapped_column(String(20))
    bank_name: Mapped[str | None] = mapped_column(String(200))
    last4: Mapped[str] = mapped_column(String(4))
    country: Mapped[str] = mapped_column(String(2))
    currency: Mapped[str] = mapped_column(String(3))
    account_type: Mapped[str | None] = mapped_column(String(20))
    is_default: Mapped[bool] = mapped_column(Boolean)
    status: Mapped[str] = mapped_column(String(30))
    provider_status: Mapped[str] = mapped_column(String(60))
    livemode: Mapped[bool] = mapped_column(Boolean)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSON)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    status_changed_at: Mapped[datetime]


class PayoutAccountRow(Base):
    __tablename__ = "payout_accounts"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), unique=True)
    provider: Mapped[str] = mapped_column(String(20))
    provider_account_id: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(30))
    provider_status: Mapped[str] = mapped_column(String(60))
    transfers_enabled: Mapped[bool] = mapped_column(Boolean)
    business_type: Mapped[str | None] = mapped_column(String(20))
    country: Mapped[str | None] = mapped_column(String(2))
    livemode: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    status_changed_at: Mapped[datetime]


class StatusChangeRow(Base):
    """Audit trail: every status a gateway object took, where it came from, and when."""

    __tablename__ = "status_changes"
    __table_args__ = (Index("ix_status_changes_org_at", "organization_id", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    object_type: Mapped[str] = mapped_column(String(30))
    object_id: Mapped[str] = mapped_column(String(40))
    from_status: Mapped[str | None] = mapped_column(String(30))
    to_status: Mapped[str] = mapped_column(String(30))
    provider_status: Mapped[str] = mapped_column(String(60))
    source: Mapped[str] = mapped_column(String(30))
    at: Mapped[datetime]


class StatusOutboxRow(Base):
    """Moves committed while the replicas' fan-out (the Redis stream) had not yet taken them:
    written in the move's own transaction and removed once the stream has it, so that a move
    whose replica died in between is still published (events/outbox.py)."""

    __tablename__ = "status_outbox"

    sequence: Mapped[int] = mapped_column(
        ForeignKey("status_changes.id"), primary_key=True, autoincrement=False
    )
    committed_at: Mapped[datetime]


class PayoutRow(Base):
    __tablename__ = "payouts"
    __table_args__ = (Index("ix_payouts_org_page", "organization_id", "created_at", "id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    provider: Mapped[str] = mapped_column(String(20))
    provider_payout_id: Mapped[str] = mapped_column(String(100), index=True)
    status: Mapped[str] = mapped_column(String(30))
    provider_status: Mapped[str] = mapped_column(String(60))
    currency: Mapped[str] = mapped_column(String(3))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    fee_minor: Mapped[int | None] = mapped_column(BigInteger)
    net_minor: Mapped[int | None] = mapped_column(BigInteger)
    description: Mapped[str | None] = mapped_column(String(500))
    destination_bank_account_id: Mapped[str | None] = mapped_column(String(40))
    livemode: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    status_changed_at: Mapped[datetime]


class OrganizationLeaseRow(Base):
    """A step of one organization that one caller at a time may take, whichever process or
    replica it runs in (a payout verification at a provider that has no KYC API): held by
    ``holder`` until it gives it back, or until ``locked_until`` if it never does."""

    __tablename__ = "organization_leases"

    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(60), primary_key=True)
    holder: Mapped[str] = mapped_column(String(40))
    locked_until: Mapped[datetime]


class IdempotencyRow(Base):
    """One idempotency key of one organization: who holds it, for which request, what it gave."""

    __tablename__ = "idempotency_records"
    __table_args__ = (UniqueConstraint("organization_id", "key"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    key: Mapped[str] = mapped_column(String(255))
    operation: Mapped[str] = mapped_column(String(60))
    # HMAC of the canonical request (numbers included), so no number is stored or guessable.
    fingerprint: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(20))
    attempts: Mapped[int] = mapped_column(Integer)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    locked_until: Mapped[datetime]
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)


class WebhookEventRow(Base):
    """Every delivery the gateway accepted, kept for good: Commet signs no timestamp, so only
    permanent de-duplication by event id stops a replayed delivery."""

    __tablename__ = "webhook_events"
    __table_args__ = (UniqueConstraint("provider", "event_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    provider: Mapped[str] = mapped_column(String(20))
    event_id: Mapped[str] = mapped_column(String(200))
    event_type: Mapped[str] = mapped_column(String(100))
    organization_id: Mapped[str | None] = mapped_column(String(40))
    outcome: Mapped[str] = mapped_column(String(30))
    received_at: Mapped[datetime]
