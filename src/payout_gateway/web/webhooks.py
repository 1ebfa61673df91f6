"""Provider webhook routes: ``POST /webhooks/commet`` and ``POST /webhooks/paygentic``.

One delivery: read the raw body (capped) -> parse it, untrusted, only to learn which organization
it names -> verify it with that organization's secret -> record the event id for good and act
(the status pipeline) or acknowledge. Answers:

- 200 ``{"received": true}``: applied, not a forward move, nothing to act on, or a duplicate;
- 400 malformed, 401 unsigned / wrong secret / unknown organization / outside the time window,
  413 too large: nothing recorded, never a 5xx for anything a caller can send;
- 409 a verified payout event for a payout the gateway does not have yet (its creation may not
  be committed): nothing is recorded, so the provider's retry applies it later and no event is
  lost;
- 503 when the store fails, or when the organization's webhook secret is sealed with a key the
  gateway does not list (it is misconfigured): the provider retries.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from payout_gateway.domain.enums import Provider
from payout_gateway.domain.errors import (
    SecretsUnreadableError,
    StoreUnavailableError,
    WebhookRejectedError,
)
from payout_gateway.domain.models import Organization
from payout_gateway.events.pipeline import DeliveredEvent, StatusPipeline, StatusUpdate
from payout_gateway.metrics import WEBHOOKS
from payout_gateway.providers.commet import webhooks as commet
from payout_gateway.providers.paygentic import webhooks as paygentic
from payout_gateway.service import utcnow
from payout_gateway.store import Store

if TYPE_CHECKING:
    from payout_gateway.web.app import Gateway

logger = logging.getLogger("payout_gateway.webhooks")

router = APIRouter()

# Provider events are small; anything larger is refused before it is parsed.
MAX_WEBHOOK_BYTES = 256 * 1024
# Secrets tried for one delivery: a provider organization shared by a few gateway organizations,
# or a Paygentic event that names no organization. Bounds the work an unsigned request causes.
MAX_CANDIDATES = 20

Clock = Callable[[], datetime]


class Outcome(StrEnum):
    APPLIED = "applied"  # moved an object forward
    UNCHANGED = "unchanged"  # recorded before, or not a forward move: nothing changed
    IGNORED = "ignored"  # verified and acknowledged: nothing the gateway acts on
    RETRY_LATER = "retry_later"  # names an object the gateway does not have yet


class WebhookReceiver:
    """Verify, de-duplicate and apply one delivery; HTTP-free so tests can drive it directly."""

    def __init__(
        self,
        store: Store,
        pipeline: StatusPipeline,
        *,
        tolerance_seconds: int = paygentic.DEFAULT_TOLERANCE_SECONDS,
        clock: Clock = utcnow,
    ) -> None:
        self._store = store
        self._pipeline = pipeline
        self._tolerance = tolerance_seconds
        self._clock = clock

    async def commet(self, body: bytes, headers: Mapping[str, str]) -> Outcome:
        # Only the signature header is read: X-Commet-Event, -Event-Id and -Timestamp repeat
        # envelope fields without being signed.
        signature = commet.read_signature(_header(headers, commet.SIGNATURE_HEADER))
        event = commet.parse_envelope(body)
        org = await self._verified_organization(
            Provider.COMMET,
            event.organization_id,
            lambda secret: commet.verify_signature(body, signature, secret),
        )
        now = self._clock()
        delivered = DeliveredEvent(Provider.COMMET, event.id, event.event)
        update = commet.status_update(event, organization_id=org.id, at=now)
        if update is None:
            return await self._acknowledge(delivered, org, now)
        return await self._apply(update, delivered)

    async def paygentic(self, body: bytes, headers: Mapping[str, str]) -> Outcome:
        svix = paygentic.svix_headers(headers)
        now = self._clock()
        # Cheap refusals first: a stale or future timestamp needs no secret.
        paygentic.check_timestamp(svix, now=now, tolerance_seconds=self._tolerance)
        event = paygentic.parse_event(body, message_id=svix.message_id)
        org = await self._verified_organization(
            Provider.PAYGENTIC,
            event.organization_id,
            lambda secret: paygentic.verify(
                body, svix, secret, now=now, tolerance_seconds=self._tolerance
            ),
        )
        delivered = DeliveredEvent(Provider.PAYGENTIC, event.event_id, event.event_type)
        # paygentic.md: no documented event concerns payouts or external accounts.
        return await self._acknowledge(delivered, org, now)

    async def _verified_organization(
        self,
        provider: Provider,
        provider_organization_id: str | None,
        verify: Callable[[str], None],
    ) -> Organization:
        """The organization whose secret signs the delivery. Unknown organization, no secret and
        wrong signature all answer the same 401, so a caller cannot probe which ids exist.

        A candidate whose secrets the configured keys do not open is left out, the others
        tried; if none of them verifies, the delivery may be that one's, so it is not refused
        for good: SecretsUnreadableError, answered 503, and the provider delivers it again
        once an operator lists the key (the store has told them)."""
        unreadable: list[str] = []
        # A read: an unsigned caller never joins the queue of writers (SQLite has one at a
        # time), where forgeries would hold up mutations and wait out other processes' writes.
        async with self._store.session(write=False) as session:
            if provider_organization_id is not None:
                found = await session.organizations_by_provider_id(
                    provider, provider_organization_id, unreadable=unreadable
                )
            else:
                found = await session.organizations_of_provider(provider, unreadable=unreadable)
        candidates = sorted(
            ((org, org.webhook_secret) for org in found if org.webhook_secret is not None),
            key=lambda pair: (pair[0].created_at, pair[0].id),
        )[:MAX_CANDIDATES]
        for org, secret in candidates:
            try:
                verify(secret.get_secret_value())
            except WebhookRejectedError as exc:
                if exc.status_code != 401:
                    raise  # malformed: the same under every secret
                continue
            return org
        if unreadable:
            raise SecretsUnreadableError()
        raise WebhookRejectedError(401, "The webhook cannot be verified.")

    async def _acknowledge(
        self, delivered: DeliveredEvent, org: Organization, now: datetime
    ) -> Outcome:
        async with self._store.session() as session:
            # False for a replay: either way it is on record, and nothing changes.
            await session.record_webhook_event(
                provider=delivered.provider,
                event_id=delivered.event_id,
                event_type=delivered.event_type,
                organization_id=org.id,
                outcome="ignored",
                at=now,
            )
        return Outcome.IGNORED

    async def _apply(self, update: StatusUpdate, delivered: DeliveredEvent) -> Outcome:
        # The pipeline records the event id before it looks for the object, so an event for an
        # object not committed yet would be recorded as done and its retries dropped as
        # duplicates. Payouts are never deleted: once found here, the pipeline finds it too.
        async with self._store.session() as session:
            found = await session.lock_status(
                update.object_type,
                update.organization_id,
                provider_object_id=update.provider_object_id,
            )
        if found is None:
            return Outcome.RETRY_LATER
        change = await self._pipeline.apply(update, event=delivered)
        return Outcome.APPLIED if change is not None else Outcome.UNCHANGED


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    return next((v for k, v in headers.items() if k.lower() == name), None)


async def _read_capped(request: Request) -> bytes:
    declared = request.headers.get("content-length", "")
    # The length check first: int() refuses strings of over 4,300 digits.
    if (
        declared.isascii()
        and declared.isdigit()
        and (len(declared) > 12 or int(declared) > MAX_WEBHOOK_BYTES)
    ):
        raise WebhookRejectedError(413, "The body is too large.")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_WEBHOOK_BYTES:
            raise WebhookRejectedError(413, "The body is too large.")
        chunks.append(chunk)
    return b"".join(chunks)


async def _receive(request: Request, provider: Provider) -> JSONResponse:
    gateway: Gateway = request.app.state.gateway
    receiver = WebhookReceiver(
        gateway.store,
        gateway.pipeline,
        tolerance_seconds=gateway.settings.webhook_tolerance_seconds,
    )
    handle = receiver.commet if provider is Provider.COMMET else receiver.paygentic
    # Read apart from the handling: the body-limit middleware's own 413 must pass through.
    try:
        body = await _read_capped(request)
    except WebhookRejectedError as exc:
        return _refused(provider, exc)
    try:
        outcome = await handle(body, request.headers)
    except WebhookRejectedError as exc:
        return _refused(provider, exc)
    except (StoreUnavailableError, SecretsUnreadableError):
        # The store has logged the failure (the database's cause's type, with the request's
        # id; secrets that do not open, once per outage). No traceback here: an outage fails
        # every delivery alike, and anyone may post one, signed or not, so a traceback each
        # would let any caller write a page of log per request.
        return _failed(provider)
    except Exception:
        # Only the store can fail here (input errors are WebhookRejectedError): retryable.
        logger.exception("webhook processing failed", extra={"provider": provider.value})
        return _failed(provider)
    WEBHOOKS.labels(provider.value, outcome.value).inc()
    if outcome is Outcome.RETRY_LATER:
        return JSONResponse(
            {"received": False, "error": "Unknown payout; retry later."}, status_code=409
        )
    logger.info("webhook received", extra={"provider": provider.value, "outcome": outcome.value})
    return JSONResponse({"received": True})


def _failed(provider: Provider) -> JSONResponse:
    """The store failed, or a secret did not open: retryable (the provider delivers again
    later)."""
    WEBHOOKS.labels(provider.value, "failed").inc()
    return JSONResponse(
        {"received": False, "error": "Temporarily unavailable."},
        status_code=503,
        headers={"Retry-After": "5"},
    )


def _refused(provider: Provider, exc: WebhookRejectedError) -> JSONResponse:
    WEBHOOKS.labels(provider.value, "refused").inc()
    logger.info(
        "webhook refused",
        extra={"provider": provider.value, "status": exc.status_code, "reason": exc.reason},
    )
    return JSONResponse({"received": False, "error": exc.reason}, status_code=exc.status_code)


@router.post("/commet", summary="Commet webhooks (X-Commet-Signature)")
async def commet_webhook(request: Request) -> JSONResponse:
    return await _receive(request, Provider.COMMET)


@router.post("/paygentic", summary="Paygentic webhooks (Svix signatures)")
async def paygentic_webhook(request: Request) -> JSONResponse:
    return await _receive(request, Provider.PAYGENTIC)
