"""Idempotency keys of gateway mutations, scoped per organization, with Stripe's semantics.

Same key + same request: the stored result, replayed. Same key + another request: conflict, no
provider call. Same key while the first request runs: in progress. A holder that died (its lease
ran out) or failed retryably is taken over by the next request with the key, which then
*recovers*: it reconciles with the provider instead of creating a second object.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, SecretStr

from payout_gateway.domain.errors import (
    IdempotencyConflictError,
    IdempotencyInProgressError,
    StoreUnavailableError,
)
from payout_gateway.domain.models import IdempotencyRecord
from payout_gateway.store import Store, StoreSession

logger = logging.getLogger("payout_gateway.idempotency")

STARTED = "started"
COMPLETED = "completed"
# Released by attempts that each certainly applied nothing (refused unsent: a rate limit, an
# open circuit): the next holder has no earlier outcome to reconcile or to report as unknown.
NOT_APPLIED = "not_applied"


@dataclass(frozen=True, slots=True)
class Replay:
    """The key's request already finished: answer with its stored result."""

    result: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Hold:
    """This request holds the key. ``recovering``: an earlier holder may have reached the
    provider without recording the outcome, so reconcile before creating anything."""

    record_id: str
    recovering: bool
    # The key's attempt count when this request took it: the key is still this request's only
    # while the count is unchanged (a later request takes it over once its lease lapses).
    attempts: int = 1


def _reveal(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, dict):
        return {k: _reveal(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_reveal(v) for v in value]
    return value


class IdempotencyKeys:
    def __init__(
        self,
        store: Store,
        *,
        pepper: SecretStr,
        retention: timedelta,
        lease: timedelta,
    ) -> None:
        self._store = store
        self._pepper = pepper.get_secret_value().encode()
        self.retention = retention
        self.lease = lease

    def fingerprint(self, operation: str, request: BaseModel) -> str:
        """HMAC of the whole request, secrets included, so that a different account number is a
        different request; the HMAC keeps the number itself out of the database."""
        canonical = json.dumps(
            _reveal(request.model_dump(mode="python")), sort_keys=True, default=str
        )
        return hmac.new(
            self._pepper, f"{operation}\x00{canonical}".encode(), hashlib.sha256
        ).hexdigest()

    async def begin(
        self,
        *,
        organization_id: str,
        key: str,
        operation: str,
        fingerprint: str,
        record_id: str,
        now: Any,
    ) -> Replay | Hold:
        record = IdempotencyRecord(
            id=record_id,
            organization_id=organization_id,
            key=key,
            operation=operation,
            fingerprint=fingerprint,
            state=STARTED,
            attempts=1,
            result=None,
            locked_until=now + self.lease,
            created_at=now,
            expires_at=now + self.retention,
        )
        claimed: Hold | None = None  # set once the claim is written, before its COMMIT
        try:
            async with self._store.session() as session:
                begun = await self._claim(session, record, now)
                if isinstance(begun, Hold):
                    claimed = begun
                return begun
        except StoreUnavailableError as failure:
            if not failure.outcome_unknown or claimed is None:
                raise
            # The COMMIT of the claim went unanswered: it may stand, though nothing reached
            # the provider.
            raise await self._after_an_unanswered_claim(claimed, record_id) from failure.__cause__

    async def _after_an_unanswered_claim(self, hold: Hold, record_id: str) -> StoreUnavailableError:
        """The failure to report for ``hold``, whose COMMIT went unanswered, once its claim is
        withdrawn if that is safe: a new key's record (``record_id``, minted by this request, so
        nobody else's) is deleted, and the retry claims the key at once. A taken-over key is
        left to its lease: had the take-over not been done, a concurrent request could hold
        the key at the same count of attempts, and releasing it would let a third one in while
        that one calls the provider. If the delete fails too, the lease bounds the wait."""
        if hold.record_id == record_id:
            try:
                async with self._store.session() as session:
                    await session.delete_idempotency_key(record_id, attempts=hold.attempts)
            except Exception as failure:
                logger.warning(
                    "could not withdraw an idempotency key whose claim went unanswered (%s); it "
                    "is released when its lease lapses",
                    type(failure).__name__,
                )
        # Nothing reached the provider; a taken-over key's earlier attempt may have, though,
        # and the caller must not hear otherwise.
        return StoreUnavailableError(outcome_unknown=hold.recovering)

    async def _claim(
        self, session: StoreSession, record: IdempotencyRecord, now: Any
    ) -> Replay | Hold:
        """Claim or take over ``record``'s key in ``session``, or replay its result."""
        organization_id, key, record_id = record.organization_id, record.key, record.id
        operation, fingerprint = record.operation, record.fingerprint
        if await session.claim_idempotency_key(record):
            return Hold(record_id, recovering=False)
        existing = await session.get_idempotency_record(organization_id, key, lock=True)
        if existing is None:  # expired and purged between the two statements
            raise IdempotencyInProgressError("Retry: the idempotency key was just released.")
        if existing.expires_at <= now:
            # Past its retention the key is a new one, as if already purged. Claimed in this
            # transaction: raising here would roll the delete back and refuse every retry
            # until the purge.
            await session.delete_idempotency_key(existing.id)
            if await session.claim_idempotency_key(record):
                return Hold(record_id, recovering=False)
            raise IdempotencyInProgressError("Retry: the idempotency key was just released.")
        if existing.operation != operation or existing.fingerprint != fingerprint:
            raise IdempotencyConflictError(
                "This idempotency key was already used with a different request."
            )
        if existing.state == COMPLETED and existing.result is not None:
            return Replay(existing.result)
        if existing.locked_until > now:
            raise IdempotencyInProgressError(
                "A request with this idempotency key is still being processed; retry later."
            )
        if not await session.take_over_idempotency_key(
            existing.id, expected_attempts=existing.attempts, locked_until=now + self.lease
        ):
            raise IdempotencyInProgressError(
                "A request with this idempotency key is still being processed; retry later."
            )
        return Hold(
            existing.id,
            recovering=existing.state != NOT_APPLIED,
            attempts=existing.attempts + 1,
        )

    async def finish_in(
        self, session: StoreSession, hold: Hold, result: dict[str, Any], now: Any
    ) -> None:
        """Record the result inside the transaction that records the outcome itself, so the
        two commit together. A request whose lease lapsed and whose key another request took
        over records nothing: that one records the outcome (raising rolls this one back)."""
        if not await session.finish_idempotency_key(
            hold.record_id, result=result, expires_at=now + self.retention, attempts=hold.attempts
        ):
            raise IdempotencyInProgressError(
                "This request took longer than its idempotency key's lease and a later request "
                "with the key took it over; retry to get that request's answer."
            )

    async def finish(self, hold: Hold, result: dict[str, Any], now: Any) -> None:
        async with self._store.session() as session:
            await self.finish_in(session, hold, result, now)

    async def release(self, hold: Hold, now: Any, *, not_applied: bool = False) -> None:
        """A retryable failure: the next request with the key takes over and reconciles (not
        if it already has: the key is no longer this request's to release). ``not_applied``:
        this attempt and any before it certainly applied nothing, so the next one need not
        reconcile, nor say an earlier attempt may have been applied."""
        async with self._store.session() as session:
            await session.release_idempotency_key(
                hold.record_id, at=now, attempts=hold.attempts, not_applied=not_applied
            )

    async def forget(self, hold: Hold) -> None:
        """Nothing reached the provider (invalid input): the key may be used afresh."""
        async with self._store.session() as session:
            await session.delete_idempotency_key(hold.record_id, attempts=hold.attempts)

    async def purge_expired(self, now: Any) -> int:
        async with self._store.session() as session:
            return await session.purge_expired_idempotency_keys(now)


async def purge_expired_forever(
    keys: IdempotencyKeys, *, interval: float, clock: Callable[[], datetime]
) -> None:
    """Delete keys past their retention, now and every ``interval`` seconds; expired keys are
    already ignored by ``begin``, this keeps the table from growing without bound."""
    failing = False
    while True:
        try:
            purged = await keys.purge_expired(clock())
            if purged:
                logger.info("purged expired idempotency keys", extra={"count": purged})
        except StoreUnavailableError:
            # Once per outage, not a traceback at every pass: the store logged the cause.
            if not failing:
                logger.warning(
                    "purging expired idempotency keys failed: the database is unavailable"
                )
            failing = True
        except Exception:  # housekeeping must not stop for one failed pass
            logger.exception("purging expired idempotency keys failed")
        else:
            failing = False
        await asyncio.sleep(interval)
