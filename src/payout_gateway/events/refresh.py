"""Refresh of non-final objects from providers that can be read (Paygentic publishes no
webhook for account or payout status): a GET, then the same pipeline as webhooks."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from payout_gateway.domain.enums import (
    BankAccountStatus,
    PayoutAccountStatus,
    PayoutStatus,
    Provider,
)
from payout_gateway.domain.errors import (
    NotFoundError,
    PayoutGatewayError,
    ProviderUnavailableError,
)
from payout_gateway.domain.events import ChangeSource, ObjectType
from payout_gateway.domain.models import Organization
from payout_gateway.events.pipeline import StatusPipeline, StatusUpdate
from payout_gateway.ports import PayoutProvider
from payout_gateway.provider_reads import one_read_per_object
from payout_gateway.store import NonFinalObject, Store
from payout_gateway.store.leadership import AlwaysLeads, Leadership

logger = logging.getLogger("payout_gateway.refresh")

# Statuses still expected to move. ACTIVE bank accounts and VERIFIED payout accounts could in
# principle fail later, but polling every settled object forever would not scale.
NON_FINAL: dict[ObjectType, tuple[str, ...]] = {
    ObjectType.BANK_ACCOUNT: (BankAccountStatus.PENDING, BankAccountStatus.UNKNOWN),
    ObjectType.PAYOUT_ACCOUNT: (
        PayoutAccountStatus.PENDING_VERIFICATION,
        PayoutAccountStatus.RESTRICTED,
        PayoutAccountStatus.UNKNOWN,
    ),
    ObjectType.PAYOUT: (PayoutStatus.PENDING, PayoutStatus.IN_TRANSIT, PayoutStatus.UNKNOWN),
}
BATCH = 200


@dataclass
class _Backoff:
    """Per object: when to look again. Unchanged answers double the wait, up to a cap."""

    base: float
    cap: float
    due: dict[str, float] = field(default_factory=dict)
    wait: dict[str, float] = field(default_factory=dict)
    # Where in [0, wait) a first look at a long-unchanged object falls (see ``first_seen``).
    spread: Callable[[float], float] = field(default=lambda wait: random.uniform(0.0, wait))

    def is_due(self, object_id: str, now: float) -> bool:
        return self.due.get(object_id, 0.0) <= now

    def first_seen(self, object_id: str, unchanged_for: float, now: float) -> None:
        """An object this process has not looked at yet (it just started, or just took the
        lead). One that has not changed for a while would have been looked at about once per
        its age by now (the wait doubles from ``base`` up to ``cap``): it gets that wait, its
        first look spread over it, instead of every such object read in the first cycle, a
        burst against the provider's rate limit. A recent one is due at once."""
        if object_id in self.due:
            return
        wait = min(self.cap, unchanged_for)
        if wait <= self.base:
            return
        self.wait[object_id] = wait
        self.due[object_id] = now + self.spread(wait)

    def unchanged(self, object_id: str, now: float) -> None:
        wait = min(self.cap, self.wait.get(object_id, self.base / 2) * 2)
        self.wait[object_id] = wait
        self.due[object_id] = now + wait

    def changed(self, object_id: str) -> None:
        self.wait.pop(object_id, None)
        self.due.pop(object_id, None)

    def keep_only(self, object_ids: set[str]) -> None:
        """Forget the objects a whole pass did not list: they became final some other way (a
        webhook, a mutation), and would otherwise be remembered for the process's life."""
        for gone in self.due.keys() - object_ids:
            self.changed(gone)


class StatusRefresher:
    def __init__(
        self,
        store: Store,
        providers: Mapping[Provider, PayoutProvider],
        pipeline: StatusPipeline,
        *,
        interval: float,
        clock: Callable[[], datetime],
        monotonic: Callable[[], float] | None = None,
        max_backoff: float = 300.0,
        leadership: Leadership | None = None,
        batch: int = BATCH,
    ) -> None:
        """``leadership``: which of the processes sharing the store refreshes (see
        store/leadership.py); by default this one, alone. ``batch``: objects listed per read."""
        self._store = store
        self._providers = providers
        self._pipeline = pipeline
        self._interval = interval
        self._clock = clock
        self._monotonic = monotonic or asyncio.get_running_loop().time
        self._backoff = _Backoff(base=interval, cap=max_backoff)
        self._leadership = leadership or AlwaysLeads()
        self._batch = batch
        # Providers whose last read failed as unavailable, with how many passes failed so.
        self._unavailable: dict[Provider, int] = {}

    async def run_forever(self) -> None:
        # The kind of failure the cycles before this one ended with, and how many in a row:
        # an outage of the database fails every cycle of every process alike, and one
        # traceback per kind tells as much as one per cycle.
        failing: type[BaseException] | None = None
        failed_cycles = 0
        while True:
            try:
                # The others wait for the leader's place: each object is fetched once per
                # cycle, not once per worker and replica.
                if await self._leadership.lead():
                    await self.run_once()
            except Exception as exc:  # one bad cycle must not stop refreshing for good
                if type(exc) is not failing:
                    logger.exception("status refresh cycle failed")
                failing = type(exc)
                failed_cycles += 1
            else:
                if failing is not None:
                    logger.warning(
                        "status refresh works again", extra={"failed_cycles": failed_cycles}
                    )
                failing, failed_cycles = None, 0
            await asyncio.sleep(self._interval)

    async def run_once(self) -> int:
        """One pass over every readable provider; returns how many objects moved."""
        with one_read_per_object():
            return await self._pass()

    async def _pass(self) -> int:
        moved = 0
        listed: set[str] = set()
        for provider, adapter in self._providers.items():
            if not adapter.capabilities.can_read_bank_accounts:
                continue
            # Reads only: on SQLite a writing session would hold the file's writer turn. An
            # organization whose secrets the configured keys do not open is left out (its
            # objects wait), the others refreshed; the store tells the operator once.
            async with self._store.session(write=False) as session:
                orgs = {
                    o.id: o
                    for o in await session.organizations_of_provider(provider, unreadable=[])
                }
            # Once a read finds the provider unavailable (down, failing, rate limiting, its
            # circuit open), the pass reads none of its other objects: each would fail alike.
            unavailable: ProviderUnavailableError | None = None
            read = False
            for object_type, statuses in NON_FINAL.items():
                async for organization_id, object_id, provider_id, changed_at in self._non_final(
                    object_type, provider, [str(s) for s in statuses]
                ):
                    listed.add(object_id)
                    unchanged_for = (self._clock() - changed_at).total_seconds()
                    self._backoff.first_seen(object_id, unchanged_for, self._monotonic())
                    org = orgs.get(organization_id)
                    if (
                        org is None
                        or unavailable is not None
                        or not self._backoff.is_due(object_id, self._monotonic())
                    ):
                        continue
                    try:
                        refreshed = await self._refresh(
                            adapter, org, object_type, object_id, provider_id
                        )
                    except ProviderUnavailableError as exc:
                        unavailable = exc
                        # Backed off as if unchanged: an object whose reads alone fail must
                        # not be the first read of every pass, stopping the provider's others.
                        self._backoff.unchanged(object_id, self._monotonic())
                        continue
                    read = True
                    if refreshed:
                        moved += 1
                        self._backoff.changed(object_id)
                    else:
                        self._backoff.unchanged(object_id, self._monotonic())
            self._note_availability(provider, unavailable, read=read)
        self._backoff.keep_only(listed)
        return moved

    def _note_availability(
        self, provider: Provider, unavailable: ProviderUnavailableError | None, *, read: bool
    ) -> None:
        """An outage of the provider is logged when its first pass fails and when a pass reads
        again, not for every object of every pass between."""
        if unavailable is not None:
            if provider not in self._unavailable:
                logger.warning(
                    "refresh: %s could not be read (%s)", provider.value, unavailable.code
                )
            self._unavailable[provider] = self._unavailable.get(provider, 0) + 1
        elif read and provider in self._unavailable:
            logger.info(
                "refresh: %s reads work again",
                provider.value,
                extra={"failed_passes": self._unavailable.pop(provider)},
            )

    async def _non_final(
        self, object_type: ObjectType, provider: Provider, statuses: list[str]
    ) -> AsyncIterator[NonFinalObject]:
        """Every non-final object of the type, a page per read session (none held while the
        provider is asked). Every page, every cycle: the backoff is this process's memory, so
        the first page alone would be the same objects each cycle, mostly backing off, and
        those past it would never be read at all."""
        after: str | None = None
        while True:
            async with self._store.session(write=False) as session:
                rows = await session.non_final_objects(
                    object_type, provider, statuses, self._batch, after=after
                )
            for row in rows:
                yield row
            if len(rows) < self._batch:
                return
            after = rows[-1].object_id

    async def _refresh(
        self,
        adapter: PayoutProvider,
        org: Organization,
        object_type: ObjectType,
        object_id: str,
        provider_id: str,
    ) -> bool:
        context = org.provider_context()
        status: StrEnum
        try:
            if object_type is ObjectType.BANK_ACCOUNT:
                account = await adapter.get_bank_account(context, provider_id)
                status, provider_status = account.status, account.provider_status
            elif object_type is ObjectType.PAYOUT_ACCOUNT:
                payout_account = await adapter.get_payout_account(context, provider_id)
                status, provider_status = payout_account.status, payout_account.provider_status
            else:
                payout = await adapter.get_payout(context, provider_id)
                status, provider_status = payout.status, payout.provider_status
        except ProviderUnavailableError:
            raise  # the provider's, not the object's: the pass tells it once (run_once)
        except NotFoundError:
            logger.warning(
                "refresh: the provider no longer knows an object",
                extra={"object_type": object_type.value, "object_id": object_id},
            )
            return False
        except PayoutGatewayError as exc:
            logger.warning(
                "refresh: provider read failed",
                extra={"object_type": object_type.value, "object_id": object_id, "code": exc.code},
            )
            return False
        change = await self._pipeline.apply(
            StatusUpdate(
                organization_id=org.id,
                object_type=object_type,
                object_id=object_id,
                status=status,
                provider_status=provider_status,
                source=ChangeSource.REFRESH,
                at=self._clock(),
            )
        )
        return change is not None
