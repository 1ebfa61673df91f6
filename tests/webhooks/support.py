"""Webhook test helpers: deliveries signed as each provider signs them, payout rows, audit reads."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from standardwebhooks.webhooks import Webhook

from payout_gateway.domain.enums import PayoutStatus, Provider
from payout_gateway.domain.events import StatusChanged
from payout_gateway.domain.models import Money, Payout
from payout_gateway.store import Store
from payout_gateway.store.tables import PayoutRow, WebhookEventRow

COMMET_SECRET = "whsec_commetTestSecret00000001"
OTHER_COMMET_SECRET = "whsec_commetTestSecret00000002"
SVIX_SECRET = "whsec_" + base64.b64encode(b"paygentic-test-signing-key-0001").decode()
OTHER_SVIX_SECRET = "whsec_" + base64.b64encode(b"paygentic-test-signing-key-0002").decode()

T0 = datetime(2026, 7, 15, 12, 0, tzinfo=UTC)


def new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


# --- Commet: hex HMAC-SHA256 of the raw body, keyed with the secret's text ---------------------


def commet_body(
    event: str,
    *,
    payout_id: str | None = None,
    organization_id: str = "org_commetA",
    event_id: str | None = None,
    **data: Any,
) -> bytes:
    payload: dict[str, Any] = dict(data)
    if payout_id is not None:
        status = {"payout.created": "pending", "payout.paid": "paid", "payout.failed": "failed"}
        payload = {
            "payoutId": payout_id,
            "amount": 5000,
            "fee": 25,
            "netAmount": 4975,
            "currency": "usd",
            "status": status.get(event, "pending"),
            "destinationBank": {"bankName": "STRIPE TEST BANK", "last4": "6789"},
            "createdAt": "2026-07-15T12:00:00.000Z",
            **data,
        }
    envelope = {
        "id": event_id or new_id("whev_"),
        "event": event,
        "timestamp": "2026-07-15T12:00:00.000Z",
        "organizationId": organization_id,
        "mode": "live",
        "apiVersion": "2026-07-11",
        "data": payload,
    }
    return json.dumps(envelope, separators=(",", ":")).encode()


def commet_signature(body: bytes, secret: str = COMMET_SECRET) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def commet_headers(body: bytes, secret: str = COMMET_SECRET) -> dict[str, str]:
    envelope = json.loads(body)
    return {
        "Content-Type": "application/json",
        "X-Commet-Signature": commet_signature(body, secret),
        "X-Commet-Event": envelope["event"],
        "X-Commet-Timestamp": envelope["timestamp"],
        "X-Commet-Event-Id": envelope["id"],
    }


# --- Paygentic: Svix / Standard Webhooks -----------------------------------------------------


def paygentic_body(
    event_type: str = "invoice.paid.v0",
    *,
    organization_id: str | None = "org_paygenticA",
    event_id: str | None = None,
) -> bytes:
    data: dict[str, Any] = {"invoiceId": "inv_1"}
    if organization_id is not None:
        data["organizationId"] = organization_id
    return json.dumps(
        {
            "eventType": event_type,
            "eventId": event_id or new_id("evt_"),
            "timestamp": "2026-07-15T12:00:00Z",
            "data": data,
        }
    ).encode()


def svix_headers(
    body: bytes,
    secret: str = SVIX_SECRET,
    *,
    timestamp: int,
    message_id: str | None = None,
) -> dict[str, str]:
    """Signed by the reference library itself, so the gateway is checked against it."""
    message_id = message_id or new_id("msg_")
    moment = datetime.fromtimestamp(timestamp, tz=UTC)
    return {
        "Content-Type": "application/json",
        "svix-id": message_id,
        "svix-timestamp": str(timestamp),
        "svix-signature": Webhook(secret).sign(message_id, moment, body.decode()),
    }


# --- the gateway's store ----------------------------------------------------------------------


async def add_payout(
    store: Store, organization_id: str, provider_payout_id: str, *, provider: Provider
) -> str:
    """A pending payout as the gateway records it after requesting one."""
    payout_id = new_id("po_gw_")
    async with store.session() as session:
        await session.add_payout(
            Payout(
                id=payout_id,
                organization_id=organization_id,
                provider=provider,
                provider_payout_id=provider_payout_id,
                status=PayoutStatus.PENDING,
                provider_status="pending",
                amount=Money(amount_minor=5000, currency="USD"),
                fee=None,
                net_amount=None,
                description=None,
                destination_provider_account_id=None,
                destination_bank_account_id=None,
                livemode=True,
                created_at=T0,
                updated_at=T0,
                status_changed_at=T0,
            )
        )
    return payout_id


async def payout_status(store: Store, payout_id: str) -> str:
    async with store.engine.connect() as connection:
        status = await connection.scalar(select(PayoutRow.status).where(PayoutRow.id == payout_id))
    assert status is not None
    return str(status)


async def changes_of(store: Store, organization_id: str, payout_id: str) -> list[StatusChanged]:
    async with store.session() as session:
        return await session.status_changes(organization_id, first=100, object_id=payout_id)


async def recorded_events(store: Store, event_id: str) -> list[tuple[str, str | None, str]]:
    """(event type, organization id, outcome) of each record of ``event_id``."""
    async with store.engine.connect() as connection:
        rows = await connection.execute(
            select(
                WebhookEventRow.event_type,
                WebhookEventRow.organization_id,
                WebhookEventRow.outcome,
            ).where(WebhookEventRow.event_id == event_id)
        )
        return [(row[0], row[1], row[2]) for row in rows]


async def organization_ids(store: Store) -> dict[str, str]:
    async with store.session() as session:
        return {org.name: org.id for org in await session.list_organizations()}
