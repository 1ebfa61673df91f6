"""Pure Commet webhooks: hex HMAC-SHA256 of the raw body, the envelope, payout events -> updates.

docs/providers/commet.md "Webhooks": ``X-Commet-Signature`` is the lower-case hex HMAC-SHA256 of
the raw body keyed with the endpoint secret as text (Commet's SDKs: ``secret.encode()``). No
timestamp is signed, so a captured delivery stays valid for ever: the caller must de-duplicate
by event id for good and move statuses forward only. Nothing here does I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from payout_gateway.domain.enums import Provider
from payout_gateway.domain.errors import WebhookRejectedError
from payout_gateway.domain.events import ChangeSource, ObjectType, StatusUpdate
from payout_gateway.providers.commet import wire
from payout_gateway.providers.commet.transformers import payout_status

PROVIDER = Provider.COMMET
SIGNATURE_HEADER = "x-commet-signature"

# The status each payout event reports (commet.md lists ``status`` "pending" / "paid" / "failed"
# in their data): the signed event name decides, ``data.status`` only repeats it.
PAYOUT_EVENTS: dict[str, wire.PayoutStatus] = {
    "payout.created": "pending",
    "payout.paid": "paid",
    "payout.failed": "failed",
}

_HEX_SHA256 = re.compile(r"[0-9a-f]{64}")
# Printable ASCII without spaces; the lengths fit the columns the values end up in
# (webhook_events.event_id 200, event_type 100; provider ids 100).
_EVENT_ID = re.compile(r"[\x21-\x7e]{1,200}")
_EVENT_TYPE = re.compile(r"[\x21-\x7e]{1,100}")
_PROVIDER_ID = re.compile(r"[\x21-\x7e]{1,100}")


@dataclass(frozen=True, slots=True)
class CommetWebhookEvent:
    """The envelope ``{id, event, timestamp, organizationId, mode, apiVersion, data}``."""

    id: str
    event: str
    organization_id: str
    data: dict[str, Any]
    timestamp: str | None = None
    mode: str | None = None
    api_version: str | None = None

    @property
    def actionable(self) -> bool:
        return self.event in PAYOUT_EVENTS


def sign(body: bytes, secret: str) -> str:
    """The ``X-Commet-Signature`` of ``body`` under ``secret``."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def read_signature(value: str | None) -> str:
    """The ``X-Commet-Signature`` header value, checked for shape before any secret is looked
    up: missing -> 401, not 64 lower-case hex digits -> 400."""
    if not value:
        raise WebhookRejectedError(401, "X-Commet-Signature is missing.")
    if _HEX_SHA256.fullmatch(value) is None:
        raise WebhookRejectedError(400, "X-Commet-Signature is not a lower-case hex SHA-256.")
    return value


def verify_signature(body: bytes, signature: str | None, secret: str) -> None:
    """Return when ``signature`` signs ``body`` under ``secret``, else raise
    WebhookRejectedError (401 missing or wrong, 400 not a hex digest). Constant-time."""
    signature = read_signature(signature)
    if not secret or not hmac.compare_digest(signature, sign(body, secret)):
        raise WebhookRejectedError(401, "X-Commet-Signature does not match.")


def parse_envelope(body: bytes) -> CommetWebhookEvent:
    """The envelope of ``body``; untrusted until ``verify_signature`` passed, and read before
    that only to learn whose secret to check it with. Malformed -> WebhookRejectedError(400)."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise WebhookRejectedError(400, "The body is not JSON.") from None
    if not isinstance(document, dict):
        raise WebhookRejectedError(400, "The body is not a JSON object.")
    event_id = _matching(document, "id", _EVENT_ID)
    event = _matching(document, "event", _EVENT_TYPE)
    organization_id = _matching(document, "organizationId", _PROVIDER_ID)
    data = document.get("data")
    if not isinstance(data, dict):
        raise WebhookRejectedError(400, "data is missing or not an object.")
    return CommetWebhookEvent(
        id=event_id,
        event=event,
        organization_id=organization_id,
        data=data,
        timestamp=_optional_text(document, "timestamp"),
        mode=_optional_text(document, "mode"),
        api_version=_optional_text(document, "apiVersion"),
    )


def status_update(
    event: CommetWebhookEvent, *, organization_id: str, at: datetime
) -> StatusUpdate | None:
    """The payout move a verified event reports; None for events the gateway does not act on
    (``payout.available`` and anything else, and payout events in sandbox mode)."""
    reported = PAYOUT_EVENTS.get(event.event)
    if reported is None:
        return None
    if event.mode == "sandbox":
        # Payouts are live-only at Commet (a sandbox key is refused on every payout route):
        # such an event names no payout the gateway made, even where an id matches one.
        return None
    return StatusUpdate(
        organization_id=organization_id,
        object_type=ObjectType.PAYOUT,
        status=payout_status(reported),
        provider_status=reported,
        source=ChangeSource.WEBHOOK,
        at=at,
        provider_object_id=_matching(event.data, "payoutId", _PROVIDER_ID, where="data."),
    )


def _matching(document: dict[str, Any], key: str, pattern: re.Pattern[str], where: str = "") -> str:
    value = document.get(key)
    if not isinstance(value, str) or pattern.fullmatch(value) is None:
        raise WebhookRejectedError(400, f"{where}{key} is missing or malformed.")
    return value


def _optional_text(document: dict[str, Any], key: str) -> str | None:
    value = document.get(key)
    if value is not None and not isinstance(value, str):
        raise WebhookRejectedError(400, f"{key} is not a string.")
    return value
