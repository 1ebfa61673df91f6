"""Use cases: route an organization to its provider, keep the gateway's record, report results."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, SecretStr

from payout_gateway.domain import errors
from payout_gateway.domain.enums import BankAccountStatus, Provider
from payout_gateway.domain.events import ChangeSource, ObjectType, StatusChanged
from payout_gateway.domain.models import (
    AddBankAccountRequest,
    BankAccount,
    Organization,
    Payout,
    PayoutAccountRecord,
    PayoutRequest,
    PayoutVerificationOutcome,
    PayoutVerificationRequest,
    ProviderBankAccount,
    ProviderCapabilities,
    ProviderPayout,
)
from payout_gateway.events.broker import InProcessBroker
from payout_gateway.events.pipeline import StatusPipeline, StatusUpdate
from payout_gateway.idempotency import Hold, IdempotencyKeys, Replay
from payout_gateway.ports import PayoutProvider
from payout_gateway.store import Store, StoreSession

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]
T = TypeVar("T")
Item = TypeVar("Item")


def utcnow() -> datetime:
    return datetime.now(UTC)


# The type prefixes of gateway ids (``new_id``): a page cursor names an object by its id, and
# is good only for the connection listing that type of object.
BANK_ACCOUNT_ID_PREFIX = "ba"
PAYOUT_ID_PREFIX = "po"


def new_id(prefix: str) -> str:
    """Gateway ids: a type prefix, the microsecond they were made and 72 random bits; never a
    provider's id. They sort in the order they were made, which orders the objects a page
    lists with the same creation time (Paygentic's have whole seconds) newest first."""
    return f"{prefix}_{time.time_ns() // 1000:014x}{secrets.token_hex(9)}"


def provider_reference(organization_id: str, operation: str, key: str | None) -> str:
    """The key sent to (or recorded at) the provider for one logical call.

    Derived from the caller's key so that a retried mutation reaches the provider with the same
    key; scoped by organization and operation so that two organizations' keys never collide.
    Without a caller key each call gets a fresh one (still stable across the adapter's own
    retries, and usable to reconcile a lost answer).
    """
    if key is None:
        return f"pgw_{secrets.token_hex(16)}"
    return _hashed_reference(organization_id, operation, key)


def organization_reference(organization_id: str, purpose: str) -> str:
    """The reference of what an organization has one of at its provider (``purpose``), the
    same whichever call makes it; never one ``provider_reference`` gives (two fields hashed,
    not three)."""
    return _hashed_reference(organization_id, purpose)


def _hashed_reference(*fields: str) -> str:
    digest = hashlib.sha256("\x00".join(fields).encode()).hexdigest()
    return f"pgw_{digest[:32]}"


@dataclass(frozen=True, slots=True)
class VerificationResult:
    payout_account: PayoutAccountRecord
    bank_account: BankAccount | None
    already_existed: bool


@dataclass(frozen=True, slots=True)
class Page(Generic[Item]):
    items: list[Item]
    has_next: bool


class _VerificationSnapshot(BaseModel):
    """How a finished verification is kept for replay."""

    payout_account: PayoutAccountRecord
    bank_account: BankAccount | None
    already_existed: bool


# Refusals that do not change on retry: remembered with the key and replayed (Stripe keeps every
# result but 5xx/429). Transport failures are not: the next request with the key reconciles.
_REMEMBERED_REFUSALS: tuple[type[errors.PayoutGatewayError], ...] = (
    errors.ProviderRejectedError,
    errors.PayoutAccountRequiredError,
)


def _encode_refusal(exc: errors.PayoutGatewayError) -> dict[str, Any]:
    fields = {
        name: getattr(exc, name)
        for name in ("http_status", "provider_code", "request_id", "doc_url", "param")
        if hasattr(exc, name)
    }
    provider = getattr(exc, "provider", None)
    return {
        "refusal": type(exc).__name__,
        "message": exc.message,
        "provider": provider.value if provider else None,
        **fields,
    }


# The lease a payout verification holds (``_one_verification_at_a_time``).
PAYOUT_VERIFICATION_LEASE = "payout_verification"


@contextlib.contextmanager
def _keeping_the_failure(action: str) -> Iterator[None]:
    """Around the key's bookkeeping after its request failed: if that fails too (the database
    went down), the request's own failure is what the caller hears, not the bookkeeping's.
    The key then stays claimed until its lease lapses, after which a retry reconciles."""
    try:
        yield
    except Exception as bookkeeping:
        logger.warning(
            "could not %s an idempotency key after its request failed (%s); it is released "
            "when its lease lapses",
            action,
            type(bookkeeping).__name__,
        )


# Failures that say whether the provider may have applied the request (``outcome_unknown``).
_OUTCOME_ERRORS = (
    errors.ProviderUnavailableError,
    errors.ProviderBadResponseError,
    errors.StoreUnavailableError,
)


def _not_applied(exc: BaseException) -> bool:
    """A failure that says the request was certainly not applied (not sent, refused unread)."""
    return isinstance(exc, _OUTCOME_ERRORS) and not exc.outcome_unknown


def _mark_earlier_attempt_unknown(exc: BaseException) -> None:
    """``exc``, of an attempt that changed nothing after taking over a key whose earlier
    attempt's outcome is unknown, made to say so."""
    if isinstance(exc, _OUTCOME_ERRORS):
        exc.outcome_unknown = True
        exc.message += (
            " An earlier attempt with this idempotency key may have been applied: retry with "
            "the same key."
        )
        exc.args = (exc.message,)


def _decode_refusal(result: dict[str, Any]) -> errors.PayoutGatewayError:
    kind = result["refusal"]
    if kind == "PayoutAccountRequiredError":
        return errors.PayoutAccountRequiredError(result["message"])
    cls: type[errors.ProviderRejectedError] = {
        "ProviderRejectedError": errors.ProviderRejectedError,
        "ProviderAuthenticationError": errors.ProviderAuthenticationError,
        "OperationRetiredError": errors.OperationRetiredError,
    }[kind]
    return cls(
        result["message"],
        provider=Provider(result["provider"]),
        http_status=result.get("http_status"),
        provider_code=result.get("provider_code"),
        request_id=result.get("request_id"),
        doc_url=result.get("doc_url"),
        param=result.get("param"),
    )


class PayoutService:
    """The gateway's use cases. Every method acts for the organization it is given, which the
    caller's credential decided; nothing here takes an organization from input."""

    def __init__(
        self,
        store: Store,
        providers: Mapping[Provider, PayoutProvider],
        *,
        pipeline: StatusPipeline | None = None,
        keys: IdempotencyKeys | None = None,
        clock: Clock = utcnow,
    ) -> None:
        self._store = store
        self._providers = dict(providers)
        self._pipeline = pipeline or StatusPipeline(store, InProcessBroker())
        self._keys = keys or IdempotencyKeys(
            store,
            pepper=SecretStr("payout-gateway-development-pepper"),
            retention=timedelta(hours=24),
            lease=timedelta(seconds=60),
        )
        self._clock = clock

    def provider_for(self, org: Organization) -> PayoutProvider:
        return self._providers[org.provider]

    def capabilities(self, org: Organization) -> ProviderCapabilities:
        return self.provider_for(org).capabilities

    # idempotency --------------------------------------------------------------------------

    async def _idempotent(
        self,
        org: Organization,
        key: str | None,
        operation: str,
        request: BaseModel,
        run: Callable[[Hold | None], Awaitable[T]],
        decode: Callable[[dict[str, Any]], T],
    ) -> T:
        """Run ``run`` once per (organization, key); replay, refuse or recover otherwise."""
        if key is None:
            return await run(None)
        now = self._clock()
        begun = await self._keys.begin(
            organization_id=org.id,
            key=key,
            operation=operation,
            fingerprint=self._keys.fingerprint(operation, request),
            record_id=new_id("idem"),
            now=now,
        )
        if isinstance(begun, Replay):
            if "refusal" in begun.result:
                raise _decode_refusal(begun.result)
            return decode(begun.result)
        try:
            return await run(begun)
        except _REMEMBERED_REFUSALS as exc:
            with _keeping_the_failure("record the refusal of"):
                await self._keys.finish(begun, _encode_refusal(exc), self._clock())
            raise
        except errors.InputValidationError:
            with _keeping_the_failure("forget"):
                await self._keys.forget(begun)
            raise
        except BaseException as exc:
            applied_nothing = _not_applied(exc)
            # Kept (not forgotten) but marked, so that a retry after a rate limit or an open
            # circuit is not told an earlier attempt may have been applied.
            nothing_applied = not begun.recovering and applied_nothing
            # Shielded: a cancelled request must still hand its key on to the next one.
            with _keeping_the_failure("release"):
                await asyncio.shield(
                    self._keys.release(begun, self._clock(), not_applied=nothing_applied)
                )
            if begun.recovering and applied_nothing:
                # This attempt changed nothing, but it settled nothing either: the earlier one
                # it took over may have been applied, and the caller must not hear otherwise.
                _mark_earlier_attempt_unknown(exc)
            raise

    @contextlib.asynccontextmanager
    async def _recording(self) -> AsyncIterator[StoreSession]:
        """A store session for what a provider has just applied: if the database fails now,
        the caller is told the outcome is unknown (the provider has it, the gateway may not),
        so that it retries with the same key and the gateway reconciles."""
        try:
            async with self._store.session() as session:
                yield session
        except errors.StoreUnavailableError as failure:
            raise errors.StoreUnavailableError(outcome_unknown=True) from failure.__cause__

    # mutations ----------------------------------------------------------------------------

    async def add_bank_account(
        self,
        org: Organization,
        request: AddBankAccountRequest,
        *,
        idempotency_key: str | None = None,
    ) -> BankAccount:
        reference = provider_reference(org.id, "addBankAccount", idempotency_key)

        async def run(hold: Hold | None) -> BankAccount:
            adapter = self.provider_for(org)
            created = None
            if hold is not None and hold.recovering and not adapter.capabilities.has_idempotency:
                # An earlier attempt may have created it: find it instead of creating another.
                created = await adapter.find_bank_account_by_reference(
                    org.provider_context(), reference
                )
            if created is None:
                created = await adapter.add_bank_account(
                    org.provider_context(), request, idempotency_key=reference
                )
            async with self._recording() as session:
                if adapter.capabilities.has_default_accounts:
                    is_default = created.is_default
                else:
                    # The gateway keeps defaults where the provider has none: asked, or first.
                    is_default = request.set_default or not await session.has_bank_accounts(org.id)
                account = await self._record_bank_account(
                    session, org, created, is_default=is_default, metadata=request.metadata
                )
                if hold is not None:
                    await self._keys.finish_in(
                        session, hold, account.model_dump(mode="json"), self._clock()
                    )
            return account

        return await self._idempotent(
            org, idempotency_key, "addBankAccount", request, run, BankAccount.model_validate
        )

    async def complete_payout_verification(
        self,
        org: Organization,
        request: PayoutVerificationRequest,
        *,
        idempotency_key: str | None = None,
    ) -> VerificationResult:
        reference = provider_reference(org.id, "completePayoutVerification", idempotency_key)

        async def run(hold: Hold | None) -> VerificationResult:
            result, change = await self._verify(org, request, reference, hold)
            if change is not None:
                await self._pipeline.publish(change)
            return result

        def decode(stored: dict[str, Any]) -> VerificationResult:
            snapshot = _VerificationSnapshot.model_validate(stored)
            return VerificationResult(
                snapshot.payout_account, snapshot.bank_account, snapshot.already_existed
            )

        return await self._idempotent(
            org, idempotency_key, "completePayoutVerification", request, run, decode
        )

    async def _verify(
        self,
        org: Organization,
        request: PayoutVerificationRequest,
        reference: str,
        hold: Hold | None,
    ) -> tuple[VerificationResult, StatusChanged | None]:
        adapter = self.provider_for(org)
        # One verification of an organization at a time, whatever the process or replica. Two
        # at once (a double submit, two keys) would both find no payout account: at a provider
        # without a KYC API both would create a destination there, and at Commet, which
        # dedupes them itself, both would record the payout account (the second refused by
        # the database as a duplicate, an unexpected error to its caller).
        async with self._one_verification_at_a_time(org):
            if not adapter.capabilities.takes_kyc:
                # Such providers cannot dedupe per organization; the gateway does.
                async with self._store.session() as session:
                    existing = await session.get_payout_account(org.id)
                if existing is not None:
                    result = VerificationResult(existing, None, already_existed=True)
                    if hold is not None:
                        await self._keys.finish(hold, _snapshot(result), self._clock())
                    return result, None
            return await self._verify_at_provider(org, adapter, request, reference, hold)

    @contextlib.asynccontextmanager
    async def _one_verification_at_a_time(self, org: Organization) -> AsyncIterator[None]:
        """Hold the organization's payout verification lease (store ``organization_leases``)
        for the block; another caller meanwhile is told to retry. The lease lapses after the
        idempotency keys' lease if its holder never gives it back (it died)."""
        purpose = PAYOUT_VERIFICATION_LEASE
        holder = new_id("lease")
        now = self._clock()
        async with self._store.session() as session:
            taken = await session.take_lease(
                org.id, purpose, holder, now=now, until=now + self._keys.lease
            )
        if not taken:
            raise errors.IdempotencyInProgressError(
                "Another payout verification of this organization is under way: retry once it "
                "has finished."
            )
        try:
            yield
        finally:
            try:
                # Shielded: a cancelled request must still let the next caller in.
                await asyncio.shield(self._give_back_lease(org, purpose, holder))
            except Exception as failure:
                # The block's own outcome is what the caller hears; the lease lapses.
                logger.warning(
                    "could not give back the %s lease (%s); it lapses on its own",
                    purpose,
                    type(failure).__name__,
                )

    async def _give_back_lease(self, org: Organization, purpose: str, holder: str) -> None:
        async with self._store.session() as session:
            await session.give_back_lease(org.id, purpose, holder)

    async def _verify_at_provider(
        self,
        org: Organization,
        adapter: PayoutProvider,
        request: PayoutVerificationRequest,
        reference: str,
        hold: Hold | None,
    ) -> tuple[VerificationResult, StatusChanged | None]:
        outcome = None
        looked_for: list[str] = []
        if hold is not None and hold.recovering and not adapter.capabilities.has_idempotency:
            looked_for.append(reference)  # also what verifications created before 2026-12-08
        if not adapter.capabilities.takes_kyc:
            # The destination standing for the payout account is named for the organization,
            # not the call: a verification that created it and died before recording it (a
            # crash, a lost store) is found by the next one, whatever its key or none, instead
            # of a second destination being created beside it.
            reference = organization_reference(org.id, "payoutDestination")
            looked_for.insert(0, reference)
        for looked_up in looked_for:
            found = await adapter.find_bank_account_by_reference(org.provider_context(), looked_up)
            if found is not None and found.provider_account_id is not None:
                payout_account = await adapter.get_payout_account(
                    org.provider_context(),
                    found.provider_account_id,
                    business_type=request.business_type,
                )
                outcome = PayoutVerificationOutcome(
                    payout_account=payout_account, bank_account=found, already_existed=False
                )
                break
        if outcome is None:
            outcome = await adapter.complete_payout_verification(
                org.provider_context(), request, idempotency_key=reference
            )
        now = self._clock()
        change = None
        async with self._recording() as session:
            existing = await session.get_payout_account(org.id)
            reported = outcome.payout_account
            if existing is None:
                record = PayoutAccountRecord(
                    **reported.model_dump(),
                    id=new_id("pa"),
                    organization_id=org.id,
                    created_at=now,
                    updated_at=now,
                    status_changed_at=now,
                )
                await session.save_payout_account(record)
                await self._audit(session, ObjectType.PAYOUT_ACCOUNT, record, now)
            else:
                # The provider's answer is one more status report: forward moves only.
                change = await self._pipeline.apply_in(
                    session,
                    StatusUpdate(
                        organization_id=org.id,
                        object_type=ObjectType.PAYOUT_ACCOUNT,
                        object_id=existing.id,
                        status=reported.status,
                        provider_status=reported.provider_status,
                        source=ChangeSource.PROVIDER_RESPONSE,
                        at=now,
                    ),
                )
                record = await session.get_payout_account(org.id) or existing
            bank_account = None
            if outcome.bank_account is not None and not outcome.already_existed:
                # The verification's destination becomes the organization's default account.
                bank_account = await self._record_bank_account(
                    session, org, outcome.bank_account, is_default=True, metadata={}
                )
            result = VerificationResult(
                record,
                bank_account,
                already_existed=outcome.already_existed or existing is not None,
            )
            if hold is not None:
                await self._keys.finish_in(session, hold, _snapshot(result), now)
        return result, change

    async def request_payout(
        self,
        org: Organization,
        request: PayoutRequest,
        *,
        idempotency_key: str | None = None,
    ) -> Payout:
        reference = provider_reference(org.id, "requestPayout", idempotency_key)

        async def run(hold: Hold | None) -> Payout:
            adapter = self.provider_for(org)
            created = None
            if hold is not None and hold.recovering and not adapter.capabilities.has_idempotency:
                # Looked for before the default is checked: an earlier attempt may have paid
                # the account that was the default then, whatever the default is now.
                created = await adapter.find_payout_by_reference(org.provider_context(), reference)
            if created is not None:
                destination = await self._paid_destination(org, created)
            else:
                destination = await self._payout_destination(org, adapter)
                created = await adapter.request_payout(
                    org.provider_context(),
                    request,
                    destination_provider_account_id=None
                    if adapter.capabilities.has_default_accounts or destination is None
                    else destination.provider_account_id,
                    idempotency_key=reference,
                )
            now = self._clock()
            payout = Payout(
                **created.model_dump(exclude={"destination_provider_account_id"}),
                destination_provider_account_id=None,
                id=new_id(PAYOUT_ID_PREFIX),
                organization_id=org.id,
                destination_bank_account_id=destination.id if destination else None,
                updated_at=now,
                status_changed_at=now,
            )
            async with self._recording() as session:
                await session.add_payout(payout)
                await self._audit(session, ObjectType.PAYOUT, payout, now)
                if hold is not None:
                    await self._keys.finish_in(session, hold, payout.model_dump(mode="json"), now)
            return payout

        return await self._idempotent(
            org, idempotency_key, "requestPayout", request, run, Payout.model_validate
        )

    async def _paid_destination(
        self, org: Organization, payout: ProviderPayout
    ) -> BankAccount | None:
        """The gateway's account a payout found at the provider was paid to."""
        if payout.destination_provider_account_id is None:
            return None
        async with self._store.session(write=False) as session:
            return await session.bank_account_by_provider_id(
                org.id, payout.destination_provider_account_id
            )

    async def _payout_destination(
        self, org: Organization, adapter: PayoutProvider
    ) -> BankAccount | None:
        """The organization's default account; where the gateway keeps defaults it must be
        usable (active), since the gateway names it to the provider. Money goes to the account
        the organization made its default or nowhere: never to another one because the default
        is not verified yet (README "Payouts", the mutation's description)."""
        async with self._store.session(write=False) as session:
            default = await session.default_bank_account(org.id)
        if adapter.capabilities.has_default_accounts:
            return default
        if default is None:
            raise errors.PayoutAccountRequiredError(
                "No verified destination account yet: payouts need a bank account the provider "
                "has verified."
            )
        if default.status is not BankAccountStatus.ACTIVE:
            raise errors.PayoutAccountRequiredError(
                f"The default bank account is {default.status.value}, not verified by the "
                "provider yet: payouts go to it once it is ACTIVE."
            )
        return default

    # reads --------------------------------------------------------------------------------

    async def bank_accounts_by_ids(
        self, org: Organization, ids: Sequence[str]
    ) -> list[BankAccount | None]:
        """One store read for any number of ids, in order; foreign ids read as missing."""
        async with self._store.session(write=False) as session:
            found = await session.bank_accounts_by_ids(org.id, ids)
        return [found.get(account_id) for account_id in ids]

    async def payouts_by_ids(self, org: Organization, ids: Sequence[str]) -> list[Payout | None]:
        async with self._store.session(write=False) as session:
            found = await session.payouts_by_ids(org.id, ids)
        return [found.get(payout_id) for payout_id in ids]

    async def page_bank_accounts(
        self,
        org: Organization,
        *,
        first: int,
        after: tuple[datetime, str] | None = None,
        status: BankAccountStatus | None = None,
    ) -> Page[BankAccount]:
        async with self._store.session(write=False) as session:
            items, has_next = await session.page_bank_accounts(
                org.id, first=first, after=after, status=status
            )
        return Page(items, has_next)

    async def page_payouts(
        self, org: Organization, *, first: int, after: tuple[datetime, str] | None = None
    ) -> Page[Payout]:
        async with self._store.session(write=False) as session:
            items, has_next = await session.page_payouts(org.id, first=first, after=after)
        return Page(items, has_next)

    async def payout_account(self, org: Organization) -> PayoutAccountRecord | None:
        async with self._store.session(write=False) as session:
            return await session.get_payout_account(org.id)

    async def status_changes(
        self, org: Organization, *, first: int, of: tuple[ObjectType, str] | None = None
    ) -> list[StatusChanged]:
        """The organization's newest entries; ``of``: only those of this (type, id) object."""
        object_type, object_id = of or (None, None)
        async with self._store.session(write=False) as session:
            return await session.status_changes(
                org.id, first=first, object_id=object_id, object_type=object_type
            )

    # helpers ------------------------------------------------------------------------------

    async def _record_bank_account(
        self,
        session: StoreSession,
        org: Organization,
        created: ProviderBankAccount,
        *,
        is_default: bool,
        metadata: Mapping[str, str],
    ) -> BankAccount:
        now = self._clock()
        account = BankAccount(
            **created.model_dump(exclude={"is_default", "metadata", "updated_at"}),
            id=new_id(BANK_ACCOUNT_ID_PREFIX),
            organization_id=org.id,
            is_default=is_default,
            metadata=dict(metadata),
            updated_at=created.updated_at or now,
            status_changed_at=now,
        )
        await session.add_bank_account(account)
        if is_default:
            await session.clear_default_bank_accounts(org.id, account.id, at=now)
        await self._audit(session, ObjectType.BANK_ACCOUNT, account, now)
        return account

    async def _audit(
        self,
        session: StoreSession,
        object_type: ObjectType,
        created: BankAccount | PayoutAccountRecord | Payout,
        at: datetime,
    ) -> None:
        """The first audit row of an object: its status at creation."""
        await session.record_status_change(
            organization_id=created.organization_id,
            object_type=object_type.value,
            object_id=created.id,
            from_status=None,
            to_status=created.status.value,
            provider_status=created.provider_status,
            source=ChangeSource.PROVIDER_RESPONSE.value,
            at=at,
        )


def _snapshot(result: VerificationResult) -> dict[str, Any]:
    return _VerificationSnapshot(
        payout_account=result.payout_account,
        bank_account=result.bank_account,
        already_existed=result.already_existed,
    ).model_dump(mode="json")
