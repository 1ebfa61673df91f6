"""The in-memory world of one Commet sandbox: organizations, accounts, payouts, idempotency, faults.

Nothing here is module-level: ``create_commet_sandbox`` builds one ``SandboxState`` per app.
Full account and routing numbers never reach this module; callers hand over ``last4`` and the
derived bank name only, and idempotency records keep a hash of the request, not the request.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import string
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from payout_gateway.sandbox.commet.config import CommetSandboxConfig
from payout_gateway.sandbox.commet.errors import CommetError

PayoutAccountStatus = Literal["pending_verification", "verified", "restricted", "disabled"]
BankAccountStatus = Literal["active", "errored"]
PayoutStatus = Literal["pending", "in_transit", "paid", "failed", "canceled"]
BusinessType = Literal["individual", "company"]
AccountType = Literal["checking", "savings"]
FaultKind = Literal["status", "latency", "malformed", "unknown_status"]

# The sandbox's documented fee rule: 0.25 % of the amount, rounded up, at least 25 cents.
FEE_BASIS_POINTS = 25
FEE_MINIMUM = 25

# Forward-only, like a real processor: a settled payout never moves again.
PAYOUT_TRANSITIONS: dict[PayoutStatus, frozenset[PayoutStatus]] = {
    "pending": frozenset({"in_transit", "paid", "failed", "canceled"}),
    "in_transit": frozenset({"paid", "failed"}),
    "paid": frozenset(),
    "failed": frozenset(),
    "canceled": frozenset(),
}

_ID_ALPHABET = string.ascii_letters + string.digits


logger = logging.getLogger("payout_gateway.sandbox.commet")


def new_id(prefix: str) -> str:
    return prefix + "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


def iso8601(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def payout_fee(amount: int) -> int:
    return max(FEE_MINIMUM, -(-amount * FEE_BASIS_POINTS // 10_000))


@dataclass(slots=True)
class BankAccountRecord:
    id: str
    provider_external_account_id: str | None
    holder_name: str
    last4: str
    bank_name: str | None
    country: str
    currency: str
    account_type: AccountType | None
    is_default: bool
    status: BankAccountStatus
    created_at: datetime
    livemode: bool


@dataclass(slots=True)
class PayoutAccountRecord:
    id: str
    status: PayoutAccountStatus
    business_type: BusinessType
    country: str
    livemode: bool
    created_at: datetime
    status_changed_at: datetime

    @property
    def transfers_enabled(self) -> bool:
        return self.status == "verified"


@dataclass(slots=True)
class PayoutRecord:
    id: str
    status: PayoutStatus
    amount: int
    fee: int
    net_amount: int
    currency: str
    description: str | None
    provider_transfer_id: str | None
    bank_account_id: str | None
    created_at: datetime
    livemode: bool
    status_changed_at: datetime
    failure_code: str | None = None
    failure_message: str | None = None


@dataclass(slots=True)
class Fault:
    """One injected fault, consumed by the organization's next ``remaining`` matching requests."""

    kind: FaultKind
    operation: str | None
    remaining: int
    status: int = 500
    latency_ms: int = 300
    # True: the operation runs (and its real result is kept for idempotency) before the fault
    # replaces the answer on the wire, i.e. the caller cannot know the outcome.
    applied: bool = False
    code: str | None = None
    retry_after_seconds: int = 1
    unknown_status: str = "under_review"

    def matches(self, operation: str) -> bool:
        return self.remaining > 0 and self.operation in (None, operation)


@dataclass(frozen=True, slots=True)
class StoredResponse:
    status_code: int
    body: bytes
    version: str


@dataclass(slots=True)
class IdempotencyRecord:
    fingerprint: str
    created_at: datetime
    # None while the first request is still running.
    response: StoredResponse | None = None


@dataclass(frozen=True, slots=True)
class SandboxEvent:
    """An event Commet announces by webhook. Every event stays in ``SandboxState.events`` (the
    outbox); ``webhooks.WebhookDispatcher`` delivers it when the organization set an endpoint."""

    id: str
    name: str
    organization_id: str
    livemode: bool
    created_at: datetime
    data: dict[str, Any]


@dataclass(slots=True)
class Organization:
    """One API key's organization: each distinct well-formed key is its own organization."""

    api_key: str
    id: str
    livemode: bool
    country: str
    currency: str
    available_amount: int
    version_pin: str | None = None
    payout_account: PayoutAccountRecord | None = None
    bank_accounts: dict[str, BankAccountRecord] = field(default_factory=dict)
    payouts: dict[str, PayoutRecord] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)

    def take_fault(self, operation: str) -> Fault | None:
        for fault in self.faults:
            if fault.matches(operation):
                fault.remaining -= 1
                if fault.remaining == 0:
                    self.faults.remove(fault)
                return fault
        return None

    def default_bank_account(self) -> BankAccountRecord | None:
        return next((bank for bank in self.bank_accounts.values() if bank.is_default), None)


def _payout_account_required() -> CommetError:
    return CommetError(
        "not_found",
        "This organization has no payout account. Complete payout verification "
        "(POST /payouts/verification) first.",
    )


class SandboxState:
    """Everything one sandbox app knows; exposed as ``app.state.sandbox`` for tests."""

    def __init__(self, config: CommetSandboxConfig) -> None:
        self.config = config
        self.organizations: dict[str, Organization] = {}
        self.idempotency: dict[tuple[str, str], IdempotencyRecord] = {}
        # Every API request received, keyed by operation ("POST /payouts"), counted before
        # authentication so a test can assert how many attempts reached the provider.
        self.request_counts: Counter[str] = Counter()
        self.events: list[SandboxEvent] = []
        # Called with each new event (the webhook dispatcher listens here).
        self.event_listeners: list[Callable[[Organization, SandboxEvent], None]] = []

    def now(self) -> datetime:
        moment = self.config.clock()
        return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)

    # --- organizations ----------------------------------------------------------------------

    def organization(self, api_key: str) -> Organization:
        """The key's organization, created on first use and brought up to date."""
        org = self.organizations.get(api_key)
        if org is None:
            org = Organization(
                api_key=api_key,
                id=new_id("org_"),
                livemode="_live_" in api_key,
                country=self.config.default_country,
                currency=self.config.default_currency,
                available_amount=self.config.initial_available_amount,
            )
            self.organizations[api_key] = org
        self._apply_auto_verification(org)
        return org

    def _apply_auto_verification(self, org: Organization) -> None:
        # Evaluated lazily on every read instead of by a timer task: deterministic under an
        # injected clock, and it works when the app is mounted inside another app, where a
        # sub-application's lifespan never runs.
        delay = self.config.auto_verify_after_seconds
        account = org.payout_account
        if delay is None or account is None or account.status != "pending_verification":
            return
        flips_at = account.status_changed_at + timedelta(seconds=delay)
        if self.now() >= flips_at:
            account.status = "verified"
            account.status_changed_at = flips_at

    # --- idempotency ------------------------------------------------------------------------

    def _expired(self, record: IdempotencyRecord) -> bool:
        ttl = timedelta(seconds=self.config.idempotency_ttl_seconds)
        return self.now() - record.created_at >= ttl

    def idempotency_lookup(self, org: Organization, key: str) -> IdempotencyRecord | None:
        record = self.idempotency.get((org.api_key, key))
        if record is not None and self._expired(record):
            del self.idempotency[(org.api_key, key)]
            return None
        return record

    def idempotency_claim(self, org: Organization, key: str, fingerprint: str) -> IdempotencyRecord:
        # Records sit in creation order (a re-claimed key moves to the end), so the expired
        # ones are a prefix: trimming it costs O(expired), not a scan of every stored key.
        while self.idempotency:
            oldest_key, oldest = next(iter(self.idempotency.items()))
            if not self._expired(oldest):
                break
            del self.idempotency[oldest_key]
        record = IdempotencyRecord(fingerprint=fingerprint, created_at=self.now())
        self.idempotency.pop((org.api_key, key), None)
        self.idempotency[(org.api_key, key)] = record
        return record

    def idempotency_release(self, org: Organization, key: str, record: IdempotencyRecord) -> None:
        if self.idempotency.get((org.api_key, key)) is record and record.response is None:
            del self.idempotency[(org.api_key, key)]

    # --- events (the webhook outbox) --------------------------------------------------------

    def emit(self, org: Organization, name: str, data: dict[str, Any]) -> SandboxEvent:
        event = SandboxEvent(
            id=new_id("whev_"),
            name=name,
            organization_id=org.id,
            livemode=org.livemode,
            created_at=self.now(),
            data=data,
        )
        self.events.append(event)
        for listener in self.event_listeners:
            listener(org, event)
        return event

    def _payout_event_data(self, org: Organization, payout: PayoutRecord) -> dict[str, Any]:
        bank = org.bank_accounts.get(payout.bank_account_id or "")
        return {
            "payoutId": payout.id,
            "amount": payout.amount,
            "fee": payout.fee,
            "netAmount": payout.net_amount,
            "currency": payout.currency,
            "status": payout.status,
            "destinationBank": (
                {"bankName": bank.bank_name, "last4": bank.last4} if bank is not None else None
            ),
            "createdAt": iso8601(payout.created_at),
        }

    # --- the three payout operations --------------------------------------------------------

    def _new_bank_account(
        self,
        org: Organization,
        *,
        holder_name: str,
        last4: str,
        bank_name: str | None,
        account_type: AccountType | None,
        is_default: bool,
    ) -> BankAccountRecord:
        bank = BankAccountRecord(
            id=new_id("pba_"),
            provider_external_account_id=new_id("ba_"),
            holder_name=holder_name,
            last4=last4,
            bank_name=bank_name,
            country=org.country,
            currency=org.currency,
            account_type=account_type,
            is_default=is_default,
            status="active",
            created_at=self.now(),
            livemode=org.livemode,
        )
        if is_default:
            for other in org.bank_accounts.values():
                other.is_default = False
        org.bank_accounts[bank.id] = bank
        return bank

    def complete_verification(
        self,
        org: Organization,
        *,
        business_type: BusinessType,
        holder_name: str,
        last4: str,
        bank_name: str | None,
        account_type: AccountType | None,
    ) -> tuple[PayoutAccountRecord, bool]:
        """Provision the payout account; ``(account, created)``. Idempotent per organization."""
        if org.payout_account is not None:
            return org.payout_account, False
        now = self.now()
        org.payout_account = PayoutAccountRecord(
            id=new_id("acct_"),
            status="pending_verification",
            business_type=business_type,
            country=org.country,
            livemode=org.livemode,
            created_at=now,
            status_changed_at=now,
        )
        self._new_bank_account(
            org,
            holder_name=holder_name,
            last4=last4,
            bank_name=bank_name,
            account_type=account_type,
            is_default=True,
        )
        return org.payout_account, True

    def add_bank_account(
        self,
        org: Organization,
        *,
        holder_name: str,
        last4: str,
        bank_name: str | None,
        account_type: AccountType | None,
        set_default: bool,
    ) -> BankAccountRecord:
        if org.payout_account is None:
            raise _payout_account_required()
        return self._new_bank_account(
            org,
            holder_name=holder_name,
            last4=last4,
            bank_name=bank_name,
            account_type=account_type,
            is_default=set_default,
        )

    def request_payout(
        self, org: Organization, *, amount: int, description: str | None
    ) -> PayoutRecord:
        account = org.payout_account
        if account is None:
            raise _payout_account_required()
        if account.status != "verified":
            raise CommetError(
                "payout_account_not_verified",
                f"The payout account is {account.status}; payouts need a verified account.",
            )
        if amount > org.available_amount:
            raise CommetError(
                "insufficient_balance",
                f"Requested {amount} but only {org.available_amount} is available.",
                param="amount",
            )
        fee = payout_fee(amount)
        bank = org.default_bank_account()
        now = self.now()
        payout = PayoutRecord(
            id=new_id("po_"),
            status="pending",
            amount=amount,
            fee=fee,
            net_amount=amount - fee,
            currency=org.currency,
            description=description,
            provider_transfer_id=None,
            bank_account_id=bank.id if bank is not None else None,
            created_at=now,
            livemode=org.livemode,
            status_changed_at=now,
        )
        org.available_amount -= amount
        org.payouts[payout.id] = payout
        self.emit(org, "payout.created", self._payout_event_data(org, payout))
        if self.config.auto_pay_after_seconds is not None:
            asyncio.get_running_loop().call_later(
                self.config.auto_pay_after_seconds, self._auto_pay, org, payout.id
            )
        return payout

    def _auto_pay(self, org: Organization, payout_id: str) -> None:
        try:
            self.set_payout_status(org, payout_id, "paid")
        except CommetError:  # moved meanwhile (e.g. canceled through a control route)
            logger.info("auto-pay skipped a payout that had already moved")

    # --- control operations (sandbox only) --------------------------------------------------

    def set_payout_account_status(
        self, org: Organization, status: PayoutAccountStatus
    ) -> PayoutAccountRecord:
        account = org.payout_account
        if account is None:
            raise _payout_account_required()
        if account.status != status:
            account.status = status
            account.status_changed_at = self.now()
        return account

    def set_bank_account_status(
        self, org: Organization, bank_account_id: str, status: BankAccountStatus
    ) -> BankAccountRecord:
        bank = org.bank_accounts.get(bank_account_id)
        if bank is None:
            raise CommetError(
                "not_found", f"No bank account {bank_account_id!r} in this organization."
            )
        bank.status = status
        return bank

    def set_available_amount(self, org: Organization, amount: int) -> None:
        org.available_amount = amount
        self.emit(org, "payout.available", {"availableAmount": amount, "currency": org.currency})

    def set_payout_status(
        self,
        org: Organization,
        payout_id: str,
        status: PayoutStatus,
        *,
        failure_code: str | None = None,
        failure_message: str | None = None,
    ) -> PayoutRecord:
        payout = org.payouts.get(payout_id)
        if payout is None:
            raise CommetError("not_found", f"No payout {payout_id!r} in this organization.")
        if status == payout.status:
            return payout
        if status not in PAYOUT_TRANSITIONS[payout.status]:
            raise CommetError(
                "invalid_status_transition",
                f"A {payout.status} payout cannot become {status}.",
                param="status",
            )
        now = self.now()
        payout.status = status
        payout.status_changed_at = now
        if status in ("in_transit", "paid") and payout.provider_transfer_id is None:
            payout.provider_transfer_id = new_id("tr_")
        if status in ("failed", "canceled"):
            # The funds never left: they return to the available balance.
            org.available_amount += payout.amount
        if status == "paid":
            self.emit(
                org, "payout.paid", {**self._payout_event_data(org, payout), "paidAt": iso8601(now)}
            )
        elif status == "failed":
            payout.failure_code = failure_code or "account_closed"
            payout.failure_message = failure_message or "The destination bank account is closed."
            self.emit(
                org,
                "payout.failed",
                {
                    **self._payout_event_data(org, payout),
                    "failedAt": iso8601(now),
                    "failureCode": payout.failure_code,
                    "failureMessage": payout.failure_message,
                },
            )
        return payout
