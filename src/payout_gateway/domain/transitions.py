"""Which status moves are forward: webhooks and refreshes may arrive late, twice or out of order,
and a status must never move backwards."""

from __future__ import annotations

from enum import StrEnum

from payout_gateway.domain.enums import BankAccountStatus, PayoutAccountStatus, PayoutStatus

_B = BankAccountStatus
_PA = PayoutAccountStatus
_P = PayoutStatus

# Allowed moves (from -> to). A status absent as a key is final. UNKNOWN (a provider value no
# table maps) may be reported at any time and may resolve to anything: it is surfaced, never
# silently dropped, and a later known value replaces it.
BANK_ACCOUNT_MOVES: dict[StrEnum, frozenset[StrEnum]] = {
    _B.PENDING: frozenset({_B.ACTIVE, _B.ERRORED}),
    _B.ACTIVE: frozenset({_B.ERRORED}),
}
PAYOUT_ACCOUNT_MOVES: dict[StrEnum, frozenset[StrEnum]] = {
    _PA.PENDING_VERIFICATION: frozenset({_PA.VERIFIED, _PA.RESTRICTED, _PA.DISABLED}),
    _PA.VERIFIED: frozenset({_PA.RESTRICTED, _PA.DISABLED}),
    # The processor asked for more information; once given, the account is verified again.
    _PA.RESTRICTED: frozenset({_PA.VERIFIED, _PA.DISABLED}),
}
PAYOUT_MOVES: dict[StrEnum, frozenset[StrEnum]] = {
    _P.PENDING: frozenset({_P.IN_TRANSIT, _P.PAID, _P.FAILED, _P.CANCELED}),
    _P.IN_TRANSIT: frozenset({_P.PAID, _P.FAILED}),
}
_UNKNOWN = {_B.UNKNOWN, _PA.UNKNOWN, _P.UNKNOWN}


def is_forward(moves: dict[StrEnum, frozenset[StrEnum]], current: StrEnum, new: StrEnum) -> bool:
    """True when ``current -> new`` is a real move forward (a repeat of ``current`` is not)."""
    if new == current:
        return False
    if new in _UNKNOWN or current in _UNKNOWN:
        return True
    return new in moves.get(current, frozenset())


def is_final(moves: dict[StrEnum, frozenset[StrEnum]], status: StrEnum) -> bool:
    return status not in _UNKNOWN and not moves.get(status)
