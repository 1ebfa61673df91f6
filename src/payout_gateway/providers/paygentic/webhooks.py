"""Pure Paygentic webhooks: Svix (Standard Webhooks) signatures, the timestamp window, the body.

docs/providers/paygentic.md "Webhooks": Paygentic delivers through Svix. Headers ``svix-id``,
``svix-timestamp`` (Unix seconds) and ``svix-signature`` (space-separated ``v1,<base64>``); the
signed content is ``{id}.{timestamp}.{raw body}``, keyed with the base64 part of ``whsec_…``.
The signature check is the maintained ``standardwebhooks`` library's; every exception it raises
becomes a WebhookRejectedError here (docs/hardening.md: it raises unwrapped exceptions on
malformed signature headers). Nothing here does I/O.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from payout_gateway.domain.enums import Provider
from payout_gateway.domain.errors import WebhookRejectedError

logger = logging.getLogger("payout_gateway.webhooks")

PROVIDER = Provider.PAYGENTIC
DEFAULT_TOLERANCE_SECONDS = 300

# paygentic.md "Webhooks": none of these concerns payouts or external accounts, so every
# verified event is acknowledged and recorded, and changes nothing.
DOCUMENTED_EVENT_TYPES = frozenset(
    {
        "customer.created.v0",
        "customer.creation_failed.v0",
        "subscription.created.v0",
        "subscription.cancelled.v0",
        "subscription.updated.v0",
        "source.activated.v0",
        "source.activation_failed.v0",
        "source.disconnected.v0",
        "invoice.paid.v0",
    }
)

# Svix's names first; the Standard Webhooks names are what Svix sends when asked to.
_HEADER_SETS = (
    ("svix-id", "svix-timestamp", "svix-signature"),
    ("webhook-id", "webhook-timestamp", "webhook-signature"),
)
# Unix seconds as ASCII digits only: int() would also take "+1", " 1", "1_0" and full-width
# digits, and the library's float() "1e3", "nan" and fractions it would then sign differently.
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_MESSAGE_ID = re.compile(r"[\x21-\x7e]{1,200}")
_EVENT_TYPE = re.compile(r"[\x21-\x7e]{1,100}")
_PROVIDER_ID = re.compile(r"[\x21-\x7e]{1,100}")
# Room for a few ``v1,<44 base64>`` entries during a secret rotation, far below header limits.
MAX_SIGNATURE_HEADER = 2048


@dataclass(frozen=True, slots=True)
class SvixHeaders:
    message_id: str
    timestamp: int
    signature: str


@dataclass(frozen=True, slots=True)
class PaygenticWebhookEvent:
    """The body ``{eventType, eventId, timestamp, data}``; ``event_id`` falls back to the
    ``svix-id`` (stable across Svix's retries) when the body carries none."""

    event_type: str
    event_id: str
    data: dict[str, Any]
    timestamp: str | None = None

    @property
    def organization_id(self) -> str | None:
        """``data.organizationId`` when it is a plausible id; untrusted until verified."""
        value = self.data.get("organizationId")
        if isinstance(value, str) and _PROVIDER_ID.fullmatch(value):
            return value
        return None


def svix_headers(headers: Mapping[str, str]) -> SvixHeaders:
    """The three signature headers (case-insensitive names). Missing -> 401, malformed -> 400."""
    lowered = {name.lower(): value for name, value in headers.items()}
    for id_name, timestamp_name, signature_name in _HEADER_SETS:
        message_id = lowered.get(id_name)
        timestamp = lowered.get(timestamp_name)
        signature = lowered.get(signature_name)
        if message_id is None and timestamp is None and signature is None:
            continue
        if not (message_id and timestamp and signature):
            raise WebhookRejectedError(401, "A Svix signature header is missing.")
        if _MESSAGE_ID.fullmatch(message_id) is None:
            raise WebhookRejectedError(400, f"{id_name} is malformed.")
        if _TIMESTAMP.fullmatch(timestamp) is None:
            raise WebhookRejectedError(400, f"{timestamp_name} is not Unix seconds.")
        if len(signature) > MAX_SIGNATURE_HEADER or not signature.isascii():
            raise WebhookRejectedError(400, f"{signature_name} is malformed.")
        return SvixHeaders(message_id, int(timestamp), signature)
    raise WebhookRejectedError(401, "The Svix signature headers are missing.")


def check_timestamp(headers: SvixHeaders, *, now: datetime, tolerance_seconds: int) -> None:
    """Refuse (401) a timestamp more than ``tolerance_seconds`` before or after ``now``."""
    if abs(headers.timestamp - now.timestamp()) > tolerance_seconds:
        raise WebhookRejectedError(401, "The webhook timestamp is outside the tolerance window.")


def verify(
    body: bytes,
    headers: SvixHeaders,
    secret: str,
    *,
    now: datetime,
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
) -> None:
    """Return when the delivery is signed by ``secret`` and timely, else raise
    WebhookRejectedError: 401 outside the window, wrong signature or unusable secret; 400 when
    the library chokes on the headers or the body (non-UTF-8, bad base64, bad entries)."""
    check_timestamp(headers, now=now, tolerance_seconds=tolerance_seconds)
    try:
        verifier = _WindowCheckedWebhook(secret)
    except Exception:  # binascii.Error, EmptyWebhookSecretError, …: the stored secret is unusable
        logger.warning("Paygentic webhook secret is not a usable whsec_ secret")
        raise WebhookRejectedError(401, "The webhook cannot be verified.") from None
    library_headers = {
        "webhook-id": headers.message_id,
        "webhook-timestamp": str(headers.timestamp),
        "webhook-signature": headers.signature,
    }
    try:
        verifier.verify(body, library_headers, json_parse=False)
    except WebhookVerificationError:
        raise WebhookRejectedError(401, "The Svix signature does not match.") from None
    except Exception:  # ValueError, binascii.Error, UnicodeDecodeError, … (unwrapped upstream)
        raise WebhookRejectedError(400, "The Svix signature or body is malformed.") from None


def is_usable_secret(secret: str) -> bool:
    """True when the library accepts ``secret`` (``whsec_`` + base64 of a non-empty key)."""
    try:
        Webhook(secret)
    except Exception:  # binascii.Error, EmptyWebhookSecretError, …
        return False
    return True


class _WindowCheckedWebhook(Webhook):
    """The library's Webhook minus its own timestamp check, which compares with the wall clock
    over a fixed five minutes inside a private method; ``check_timestamp`` has already applied
    the configured window on the injected clock. The library still reads the headers, signs and
    compares. A test pins this override, so a library release that renames the method fails
    loudly (and would only refuse more, never accept more)."""

    def _Webhook__verify_timestamp(self, timestamp_header: str) -> datetime:
        return datetime.fromtimestamp(int(timestamp_header), tz=UTC)


def parse_event(body: bytes, *, message_id: str) -> PaygenticWebhookEvent:
    """The event in ``body``; untrusted until ``verify`` passed. Malformed -> 400."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise WebhookRejectedError(400, "The body is not JSON.") from None
    if not isinstance(document, dict):
        raise WebhookRejectedError(400, "The body is not a JSON object.")
    event_type = document.get("eventType")
    if not isinstance(event_type, str) or _EVENT_TYPE.fullmatch(event_type) is None:
        raise WebhookRejectedError(400, "eventType is missing or malformed.")
    event_id = document.get("eventId")
    if event_id is None:
        event_id = message_id
    if not isinstance(event_id, str) or _MESSAGE_ID.fullmatch(event_id) is None:
        raise WebhookRejectedError(400, "eventId is malformed.")
    data = document.get("data", {})
    if not isinstance(data, dict):
        raise WebhookRejectedError(400, "data is not an object.")
    timestamp = document.get("timestamp")
    return PaygenticWebhookEvent(
        event_type=event_type,
        event_id=event_id,
        data=data,
        timestamp=timestamp if isinstance(timestamp, str) else None,
    )
