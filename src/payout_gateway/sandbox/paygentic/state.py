"""In-memory state of one Paygentic sandbox: accounts, payouts, request counters and faults."""

from __future__ import annotations

import random
import string
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal, TypeVar

from payout_gateway.sandbox.paygentic.config import PaygenticSandboxConfig
from payout_gateway.sandbox.paygentic.errors import PaygenticApiError
from payout_gateway.sandbox.paygentic.models import (
    AccountStatus,
    ExternalAccountCreate,
    ExternalBankAccount,
    Fault,
    FaultSpec,
    Payout,
    PayoutCreate,
    PayoutStatus,
    PayoutStatusChange,
)

_ID_ALPHABET = string.ascii_letters + string.digits
_T = TypeVar("_T")


@dataclass(slots=True)
class _AccountRecord:
    account: ExternalBankAccount
    # When the account last entered its current status: the auto-verify delay counts from here.
    status_since: datetime


@dataclass(frozen=True, slots=True)
class StatusChange:
    """One status transition, kept in order.

    This is where webhooks will hook in: Paygentic documents no event for external accounts or
    payouts today, so nothing is delivered yet; a future sender reads this log.
    """

    resource: Literal["externalBankAccount", "payout"]
    id: str
    previous: str
    current: str
    at: datetime


@dataclass(slots=True)
class FaultQueue:
    """Faults waiting to hit API requests, consumed first-registered first."""

    faults: list[Fault] = field(default_factory=list)

    def add(self, fault: Fault) -> None:
        self.faults.append(fault)

    def take(self, operation: str) -> Fault | None:
        for index, fault in enumerate(self.faults):
            if fault.operation in (None, operation):
                fault.remaining -= 1
                if fault.remaining <= 0:
                    del self.faults[index]
                return fault
        return None

    def clear(self) -> None:
        self.faults.clear()


class PaygenticSandboxState:
    """Everything one sandbox app remembers; ``app.state.sandbox`` is an instance of this."""

    def __init__(self, config: PaygenticSandboxConfig) -> None:
        self.config = config
        # Keyed by "METHOD /path/template", e.g. "POST /v0/externalAccounts".
        self.request_counts: Counter[str] = Counter()
        # Every API operation the app serves; faults may only target one of these.
        self.operations: set[str] = set()
        self.faults = FaultQueue()
        self.status_changes: list[StatusChange] = []
        self._accounts: dict[str, _AccountRecord] = {}
        self._payouts: dict[str, Payout] = {}
        self._rng = random.Random(config.seed)

    def reset(self) -> None:
        """Forget every object, counter and fault (ids keep coming from the same generator)."""
        self.request_counts.clear()
        self.faults.clear()
        self.status_changes.clear()
        self._accounts.clear()
        self._payouts.clear()

    # ---- helpers ----

    def now(self) -> datetime:
        current = self.config.clock()
        if current.tzinfo is None:
            current = current.replace(tzinfo=UTC)
        # Whole seconds, like the timestamps in Paygentic's documentation.
        return current.astimezone(UTC).replace(microsecond=0)

    def new_id(self, prefix: str) -> str:
        return prefix + "".join(self._rng.choices(_ID_ALPHABET, k=24))

    def new_fault(self, spec: FaultSpec) -> Fault:
        fault = Fault(**spec.model_dump(), id=self.new_id("flt_"), remaining=spec.count)
        self.faults.add(fault)
        return fault

    def _record_change(
        self,
        resource: Literal["externalBankAccount", "payout"],
        id: str,
        previous: str,
        current: str,
        at: datetime,
    ) -> None:
        if previous != current:
            self.status_changes.append(StatusChange(resource, id, previous, current, at))

    def _settle(self, record: _AccountRecord) -> ExternalBankAccount:
        """Apply a due auto-verification before anyone reads the account."""
        delay = self.config.auto_verify_after_seconds
        account = record.account
        if delay is None or account.status != "new":
            return account
        due = record.status_since + timedelta(seconds=delay)
        if self.now() < due:
            return account
        at = due.replace(microsecond=0)
        record.account = account.model_copy(update={"status": "verified", "updatedAt": at})
        record.status_since = at
        self._record_change("externalBankAccount", account.id, "new", "verified", at)
        return record.account

    def _record(self, account_id: str) -> _AccountRecord:
        record = self._accounts.get(account_id)
        if record is None:
            raise PaygenticApiError.not_found("External account")
        return record

    @staticmethod
    def _page(items: list[_T], limit: int, offset: int) -> list[_T]:
        # Newest first: a client looking for what it just created finds it on the first page.
        return list(reversed(items))[offset : offset + limit]

    # ---- external accounts ----

    def create_account(self, body: ExternalAccountCreate) -> ExternalBankAccount:
        now = self.now()
        account = ExternalBankAccount(
            id=self.new_id("eba_"),
            organizationId=body.organizationId,
            countryCode=body.countryCode,
            bankName=body.bankName,
            currency=body.currency,
            # Only the last four digits are kept; the full numbers die with the request.
            last4=body.accountNumber[-4:],
            accountHolderName=body.accountHolderName,
            accountHolderType=body.accountHolderType,
            status="new",
            metadata=dict(body.metadata or {}),
            createdAt=now,
            updatedAt=now,
        )
        self._accounts[account.id] = _AccountRecord(account, now)
        return account

    def get_account(self, account_id: str) -> ExternalBankAccount:
        return self._settle(self._record(account_id))

    def list_accounts(
        self, organization_id: str, limit: int, offset: int
    ) -> tuple[list[ExternalBankAccount], int]:
        matching = [
            self._settle(record)
            for record in self._accounts.values()
            if record.account.organizationId == organization_id
        ]
        return self._page(matching, limit, offset), len(matching)

    def update_account(self, account_id: str, changes: dict[str, object]) -> ExternalBankAccount:
        record = self._record(account_id)
        before = self._settle(record)
        after = before.model_copy(update=changes)
        if after == before:
            return before
        now = self.now()
        after = after.model_copy(update={"updatedAt": now})
        # model_copy does not validate; re-validate so a bad change cannot be stored.
        record.account = ExternalBankAccount.model_validate(after.model_dump())
        if after.status != before.status:
            record.status_since = now
            self._record_change("externalBankAccount", account_id, before.status, after.status, now)
        return record.account

    def set_account_status(self, account_id: str, status: AccountStatus) -> ExternalBankAccount:
        return self.update_account(account_id, {"status": status})

    def delete_account(self, account_id: str) -> None:
        self._record(account_id)
        del self._accounts[account_id]

    # ---- payouts ----

    def create_payout(self, body: PayoutCreate) -> Payout:
        record = self._accounts.get(body.destinationId)
        if record is None:
            raise PaygenticApiError.plain(
                422, "The destination external account does not exist", code="DESTINATION_NOT_FOUND"
            )
        destination = self._settle(record)
        if destination.organizationId != body.organizationId:
            raise PaygenticApiError.plain(
                422,
                "The destination external account belongs to another organization",
                code="DESTINATION_ORGANIZATION_MISMATCH",
            )
        if destination.status != "verified":
            raise PaygenticApiError.plain(
                422,
                f"The destination external account is {destination.status}, not verified",
                code="DESTINATION_NOT_VERIFIED",
                details={"destinationStatus": destination.status},
            )
        if destination.currency != body.currency:
            raise PaygenticApiError.plain(
                422,
                "The payout currency differs from the destination account's currency",
                code="CURRENCY_MISMATCH",
                details={"destinationCurrency": destination.currency},
            )
        fees = self.config.platform_fee_cents + self.config.method_fee_cents
        if body.amountInCents <= fees:
            raise PaygenticApiError.plain(
                422,
                "The amount does not cover the payout fees",
                code="AMOUNT_BELOW_FEES",
                details={"feesInCents": fees},
            )
        now = self.now()
        payout = Payout(
            id=self.new_id("po_"),
            organizationId=body.organizationId,
            status="pending",
            description=body.description,
            amountInCents=body.amountInCents,
            currency=body.currency,
            method=body.method,
            sourceId=body.sourceId,
            destinationId=body.destinationId,
            metadata=dict(body.metadata or {}),
            createdAt=now,
            updatedAt=now,
            platformFee=self.config.platform_fee_cents,
            methodFee=self.config.method_fee_cents,
            transactionId=None,
            failureCode=None,
            failureMessage=None,
            transferredAmountInCents=None,
        )
        self._payouts[payout.id] = payout
        return payout

    def get_payout(self, payout_id: str) -> Payout:
        payout = self._payouts.get(payout_id)
        if payout is None:
            raise PaygenticApiError.not_found("Payout")
        return self._auto_pay(payout)

    def _auto_pay(self, payout: Payout) -> Payout:
        """Apply a due auto-settlement before anyone reads the payout."""
        delay = self.config.auto_pay_after_seconds
        if delay is None or payout.status != "pending":
            return payout
        if self.now() < payout.createdAt + timedelta(seconds=delay):
            return payout
        return self._settle_pending(payout, PayoutStatusChange(status="success"))

    def list_payouts(
        self, organization_id: str, status: PayoutStatus | None, limit: int, offset: int
    ) -> tuple[list[Payout], int]:
        matching = [
            payout
            for payout in map(self._auto_pay, list(self._payouts.values()))
            if payout.organizationId == organization_id and status in (None, payout.status)
        ]
        return self._page(matching, limit, offset), len(matching)

    def settle_payout(self, payout_id: str, change: PayoutStatusChange) -> Payout:
        payout = self.get_payout(payout_id)
        if payout.status != "pending":
            raise PaygenticApiError.plain(
                409,
                f"The payout is already {payout.status}; only pending payouts can change",
                code="INVALID_STATUS_TRANSITION",
            )
        return self._settle_pending(payout, change)

    def _settle_pending(self, payout: Payout, change: PayoutStatusChange) -> Payout:
        now = self.now()
        update: dict[str, object] = {"status": change.status, "updatedAt": now}
        if change.status == "success":
            update["transactionId"] = self.new_id("txn_")
            update["transferredAmountInCents"] = (
                payout.amountInCents - payout.platformFee - payout.methodFee
            )
        elif change.status == "failed":
            update["failureCode"] = change.failureCode or "PAYOUT_FAILED"
            update["failureMessage"] = change.failureMessage or "The bank rejected the transfer"
        settled = payout.model_copy(update=update)
        self._payouts[payout.id] = settled
        self._record_change("payout", payout.id, payout.status, settled.status, now)
        return settled
