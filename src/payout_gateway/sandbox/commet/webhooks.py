"""Webhook delivery of the Commet sandbox: each new outbox event, signed as Commet signs it,
POSTed to the organization's endpoint and retried with backoff until a 2xx.

docs/providers/commet.md "Webhooks": body = the envelope ``{id, event, timestamp,
organizationId, mode, apiVersion, data}``; ``X-Commet-Signature`` = lower-case hex HMAC-SHA256
of the raw body keyed with the secret as text; ``X-Commet-Event``, ``X-Commet-Timestamp``,
``X-Commet-Event-Id``. The signing here is written independently of the gateway's verifier on
purpose: the simulator must not share the code it is meant to test.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import string
from dataclasses import dataclass

import httpx

from payout_gateway.sandbox.commet.errors import CommetError
from payout_gateway.sandbox.commet.state import Organization, SandboxEvent, SandboxState, iso8601
from payout_gateway.sandbox.commet.versions import resolve_version
from payout_gateway.sandbox.commet.wire import dumps

logger = logging.getLogger("payout_gateway.sandbox.commet.webhooks")

USER_AGENT = "Commet-Webhooks/sandbox"
_SECRET_ALPHABET = string.ascii_letters + string.digits


def new_secret() -> str:
    return "whsec_" + "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(32))


def signature(body: bytes, secret: str) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class WebhookEndpoint:
    url: str
    secret: str


@dataclass(frozen=True, slots=True)
class DeliveryAttempt:
    """One POST of one event; ``status_code`` None when no answer came (refused, timeout)."""

    event_id: str
    event: str
    attempt: int
    status_code: int | None
    error: str | None
    at: str

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class WebhookDispatcher:
    """Listens to ``SandboxState`` and delivers each new event of an organization that set an
    endpoint, as its own asyncio task. Works mounted in another app (no lifespan needed): tasks
    run on the loop that served the request, and each delivery opens and closes its own
    client."""

    def __init__(self, state: SandboxState) -> None:
        self._state = state
        self.endpoints: dict[str, WebhookEndpoint] = {}
        # The exact bytes of each event: retries and redeliveries send the same body.
        self.bodies: dict[str, bytes] = {}
        self.attempts: list[DeliveryAttempt] = []
        self._tasks: set[asyncio.Task[None]] = set()
        state.event_listeners.append(self._on_event)

    # --- endpoints --------------------------------------------------------------------------

    def configure(self, org: Organization, url: str, secret: str | None) -> WebhookEndpoint:
        endpoint = WebhookEndpoint(url=url, secret=secret or new_secret())
        self.endpoints[org.id] = endpoint
        return endpoint

    def remove(self, org: Organization) -> bool:
        return self.endpoints.pop(org.id, None) is not None

    def attempts_of(self, org: Organization) -> list[DeliveryAttempt]:
        ids = {event.id for event in self._state.events if event.organization_id == org.id}
        return [attempt for attempt in self.attempts if attempt.event_id in ids]

    # --- delivery ---------------------------------------------------------------------------

    def body_of(self, org: Organization, event: SandboxEvent) -> bytes:
        body = self.bodies.get(event.id)
        if body is None:
            version = (
                resolve_version(org.version_pin)
                if org.version_pin
                else self._state.config.default_version
            )
            body = dumps(
                {
                    "id": event.id,
                    "event": event.name,
                    "timestamp": iso8601(event.created_at),
                    "organizationId": event.organization_id,
                    "mode": "live" if event.livemode else "sandbox",
                    "apiVersion": version,
                    "data": event.data,
                }
            )
            self.bodies[event.id] = body
        return body

    def _on_event(self, org: Organization, event: SandboxEvent) -> None:
        body = self.body_of(org, event)
        endpoint = self.endpoints.get(org.id)
        if endpoint is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # emitted outside an event loop (a test driving the state): outbox only
        task = loop.create_task(self._deliver(event, body, endpoint))
        # The loop keeps only weak references to tasks: hold them until they finish.
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, event: SandboxEvent, body: bytes, endpoint: WebhookEndpoint) -> None:
        delays = (0.0, *self._state.config.webhook_retry_delays)
        async with self._client() as client:
            for number, delay in enumerate(delays, start=1):
                if delay:
                    await asyncio.sleep(delay)
                if (await self._attempt(client, event, body, endpoint, number)).delivered:
                    return
        logger.info("webhook given up after %d attempts", len(delays))

    async def redeliver(self, org: Organization, event_id: str) -> DeliveryAttempt:
        """Send one event again now, once (the same id and bytes): replay tests use it."""
        event = next(
            (e for e in self._state.events if e.id == event_id and e.organization_id == org.id),
            None,
        )
        if event is None:
            raise CommetError("not_found", f"No event {event_id!r} in this organization.")
        endpoint = self.endpoints.get(org.id)
        if endpoint is None:
            raise CommetError("not_found", "No webhook endpoint is set (POST /_sandbox/webhooks).")
        previous = sum(1 for attempt in self.attempts if attempt.event_id == event_id)
        async with self._client() as client:
            return await self._attempt(
                client, event, self.body_of(org, event), endpoint, previous + 1
            )

    async def _attempt(
        self,
        client: httpx.AsyncClient,
        event: SandboxEvent,
        body: bytes,
        endpoint: WebhookEndpoint,
        number: int,
    ) -> DeliveryAttempt:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "X-Commet-Signature": signature(body, endpoint.secret),
            "X-Commet-Event": event.name,
            "X-Commet-Timestamp": iso8601(event.created_at),
            "X-Commet-Event-Id": event.id,
        }
        status_code: int | None = None
        error: str | None = None
        try:
            response = await client.post(endpoint.url, content=body, headers=headers)
            status_code = response.status_code
        except Exception as exc:  # no answer (refused, reset, timeout, …): retried like a 5xx
            error = type(exc).__name__
        attempt = DeliveryAttempt(
            event_id=event.id,
            event=event.name,
            attempt=number,
            status_code=status_code,
            error=error,
            at=iso8601(self._state.now()),
        )
        self.attempts.append(attempt)
        return attempt

    def _client(self) -> httpx.AsyncClient:
        config = self._state.config
        # Redirects are not followed: a webhook answer is the endpoint's own.
        return httpx.AsyncClient(
            timeout=config.webhook_timeout_seconds,
            transport=config.webhook_transport,
            follow_redirects=False,
        )

    async def idle(self) -> None:
        """Wait until every scheduled delivery has finished (tests)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def aclose(self) -> None:
        """Cancel deliveries still retrying."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
