"""Canonical vocabularies shared by every layer: providers, statuses, holder and account types."""

from __future__ import annotations

from enum import StrEnum


class Provider(StrEnum):
    COMMET = "COMMET"
    PAYGENTIC = "PAYGENTIC"


class BankAccountStatus(StrEnum):
    """A payout destination's state. ``UNKNOWN`` marks a provider value no table maps."""

    PENDING = "PENDING"
    ACTIVE = "ACTIVE"
    ERRORED = "ERRORED"
    UNKNOWN = "UNKNOWN"

    @property
    def usable(self) -> bool:
        return self is BankAccountStatus.ACTIVE


class PayoutAccountStatus(StrEnum):
    """The organization's payout account (KYC + bank). ``UNKNOWN``: unmapped provider value."""

    PENDING_VERIFICATION = "PENDING_VERIFICATION"
    VERIFIED = "VERIFIED"
    RESTRICTED = "RESTRICTED"
    DISABLED = "DISABLED"
    UNKNOWN = "UNKNOWN"

    @property
    def usable(self) -> bool:
        return self is PayoutAccountStatus.VERIFIED


class PayoutStatus(StrEnum):
    """A payout's progress. ``UNKNOWN``: unmapped provider value."""

    PENDING = "PENDING"
    IN_TRANSIT = "IN_TRANSIT"
    PAID = "PAID"
    FAILED = "FAILED"
    CANCELED = "CANCELED"
    UNKNOWN = "UNKNOWN"


class HolderType(StrEnum):
    INDIVIDUAL = "INDIVIDUAL"
    COMPANY = "COMPANY"


class BusinessType(StrEnum):
    INDIVIDUAL = "INDIVIDUAL"
    COMPANY = "COMPANY"


class AccountType(StrEnum):
    CHECKING = "CHECKING"
    SAVINGS = "SAVINGS"
