"""Status moves: every status of every table is covered, and nothing moves backwards."""

from __future__ import annotations

from enum import StrEnum

import pytest

from payout_gateway.domain.enums import BankAccountStatus, PayoutAccountStatus, PayoutStatus
from payout_gateway.domain.transitions import (
    BANK_ACCOUNT_MOVES,
    PAYOUT_ACCOUNT_MOVES,
    PAYOUT_MOVES,
    is_final,
    is_forward,
)

TABLES: list[tuple[dict[StrEnum, frozenset[StrEnum]], type[StrEnum], StrEnum]] = [
    (BANK_ACCOUNT_MOVES, BankAccountStatus, BankAccountStatus.PENDING),
    (PAYOUT_ACCOUNT_MOVES, PayoutAccountStatus, PayoutAccountStatus.PENDING_VERIFICATION),
    (PAYOUT_MOVES, PayoutStatus, PayoutStatus.PENDING),
]


@pytest.mark.parametrize(("moves", "enum", "start"), TABLES)
def test_every_known_status_is_reachable_from_the_start(
    moves: dict[StrEnum, frozenset[StrEnum]], enum: type[StrEnum], start: StrEnum
) -> None:
    reached = {start}
    frontier = [start]
    while frontier:
        for nxt in moves.get(frontier.pop(), frozenset()):
            if nxt not in reached:
                reached.add(nxt)
                frontier.append(nxt)
    assert reached == {member for member in enum if member.value != "UNKNOWN"}


@pytest.mark.parametrize(("moves", "enum", "start"), TABLES)
def test_no_move_leads_back_to_the_start_or_repeats(
    moves: dict[StrEnum, frozenset[StrEnum]], enum: type[StrEnum], start: StrEnum
) -> None:
    for current in enum:
        assert not is_forward(moves, current, current)
        if current.value != "UNKNOWN" and current != start:
            assert not is_forward(moves, current, start)


@pytest.mark.parametrize(
    ("moves", "current", "new", "forward"),
    [
        (PAYOUT_MOVES, PayoutStatus.PAID, PayoutStatus.PENDING, False),
        (PAYOUT_MOVES, PayoutStatus.PAID, PayoutStatus.FAILED, False),
        (PAYOUT_MOVES, PayoutStatus.IN_TRANSIT, PayoutStatus.PAID, True),
        (PAYOUT_MOVES, PayoutStatus.IN_TRANSIT, PayoutStatus.CANCELED, False),
        (
            PAYOUT_ACCOUNT_MOVES,
            PayoutAccountStatus.VERIFIED,
            PayoutAccountStatus.PENDING_VERIFICATION,
            False,
        ),
        (PAYOUT_ACCOUNT_MOVES, PayoutAccountStatus.RESTRICTED, PayoutAccountStatus.VERIFIED, True),
        (PAYOUT_ACCOUNT_MOVES, PayoutAccountStatus.DISABLED, PayoutAccountStatus.VERIFIED, False),
        (BANK_ACCOUNT_MOVES, BankAccountStatus.ACTIVE, BankAccountStatus.PENDING, False),
        (BANK_ACCOUNT_MOVES, BankAccountStatus.ERRORED, BankAccountStatus.ACTIVE, False),
        (BANK_ACCOUNT_MOVES, BankAccountStatus.ACTIVE, BankAccountStatus.UNKNOWN, True),
        (BANK_ACCOUNT_MOVES, BankAccountStatus.UNKNOWN, BankAccountStatus.ACTIVE, True),
    ],
)
def test_moves(
    moves: dict[StrEnum, frozenset[StrEnum]], current: StrEnum, new: StrEnum, forward: bool
) -> None:
    assert is_forward(moves, current, new) is forward


def test_final_statuses() -> None:
    assert {s for s in PayoutStatus if is_final(PAYOUT_MOVES, s)} == {
        PayoutStatus.PAID,
        PayoutStatus.FAILED,
        PayoutStatus.CANCELED,
    }
    assert {s for s in PayoutAccountStatus if is_final(PAYOUT_ACCOUNT_MOVES, s)} == {
        PayoutAccountStatus.DISABLED
    }
    assert {s for s in BankAccountStatus if is_final(BANK_ACCOUNT_MOVES, s)} == {
        BankAccountStatus.ERRORED
    }
