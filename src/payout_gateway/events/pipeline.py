"""The one status pipeline: dedupe by event id -> refuse backwards moves -> persist with an
audit row -> publish. Mutation responses, webhooks and refreshes all feed it."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from enum import StrEnum

from payout_gateway.domain.enums import BankAccountStatus, PayoutAccountStatus, PayoutStatus
from payout_gateway.domain.events import (
    DeliveredEvent,
    ObjectType,
    StatusChanged,
    StatusUpdate,
)
from payout_gateway.domain.transitions import (
    BANK_ACCOUNT_MOVES,
    PAYOUT_ACCOUNT_MOVES,
    PAYOUT_MOVES,
    is_forward,
)
from payout_gateway.events.broker import EventBroker
from payout_gateway.metrics import STATUS_CHANGES
from payout_gateway.store import Store, StoreSession

logger = logging.getLogger("payout_gateway.events")

MOVES = {
    ObjectType.BANK_ACCOUNT: BANK_ACCOUNT_MOVES,
    ObjectType.PAYOUT_ACCOUNT: PAYOUT_ACCOUNT_MOVES,
    ObjectType.PAYOUT: PAYOUT_MOVES,
}
STATUS_TYPES: dict[ObjectType, type[StrEnum]] = {
    ObjectType.BANK_ACCOUNT: BankAccountStatus,
    ObjectType.PAYOUT_ACCOUNT: PayoutAccountStatus,
    ObjectType.PAYOUT: PayoutStatus,
}


class StatusPipeline:
    """``outbox``: each move is also kept in the status outbox until the replicas' fan-out
    has it (events/outbox.py); only a fan-out between replicas needs that."""

    def __init__(self, store: Store, broker: EventBroker, *, outbox: bool = False) -> None:
        self._store = store
        self._broker = broker
        self._outbox = outbox

    async def apply(
        self, update: StatusUpdate, *, event: DeliveredEvent | None = None
    ) -> StatusChanged | None:
        """Apply one update; the change when it moved the object forward, else None."""
        async with self._store.session() as session:
            if event is not None and not await session.record_webhook_event(
                provider=event.provider,
                event_id=event.event_id,
                event_type=event.event_type,
                organization_id=update.organization_id,
                outcome="received",
                at=update.at,
            ):
                logger.info("duplicate delivery ignored", extra={"event_id": event.event_id})
                return None
            change = await self.apply_in(session, update)
            if event is not None:
                await session.set_webhook_outcome(
                    event.provider, event.event_id, "applied" if change else "stale"
                )
        if change is not None:
            await self.publish(change)
        return change

    async def publish(self, change: StatusChanged) -> None:
        """Fan out a change whose transaction has committed."""
        STATUS_CHANGES.labels(change.object_type.value, change.to_status, change.source.value).inc()
        await self._broker.publish(change)

    async def apply_in(self, session: StoreSession, update: StatusUpdate) -> StatusChanged | None:
        """The persist step inside the caller's transaction (publish after commit is theirs)."""
        found = await session.lock_status(
            update.object_type,
            update.organization_id,
            object_id=update.object_id,
            provider_object_id=update.provider_object_id,
        )
        if found is None:
            return None
        object_id, current_value = found
        current = STATUS_TYPES[update.object_type](current_value)
        if not is_forward(MOVES[update.object_type], current, update.status):
            return None
        await session.set_status(
            update.object_type,
            object_id,
            status=update.status.value,
            provider_status=update.provider_status,
            at=update.at,
            transfers_enabled=update.status is PayoutAccountStatus.VERIFIED
            if update.object_type is ObjectType.PAYOUT_ACCOUNT
            else None,
        )
        change = StatusChanged(
            organization_id=update.organization_id,
            object_type=update.object_type,
            object_id=object_id,
            from_status=current.value,
            to_status=update.status.value,
            provider_status=update.provider_status,
            source=update.source,
            at=update.at,
        )
        sequence = await session.record_status_move(change)
        if self._outbox:
            await session.add_to_outbox(sequence, at=datetime.now(UTC))
        return change.model_copy(update={"sequence": sequence})


__all__ = ["MOVES", "DeliveredEvent", "StatusPipeline", "StatusUpdate"]
