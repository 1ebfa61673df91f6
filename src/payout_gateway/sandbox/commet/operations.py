"""The three Commet payout operations: raw body in, ``data`` of the success envelope out."""

from __future__ import annotations

import re
from typing import Any

from payout_gateway.sandbox.commet.errors import RequestRejected
from payout_gateway.sandbox.commet.pipeline import Call, Operation
from payout_gateway.sandbox.commet.versions import CURRENT, VerificationShape, verification_shape
from payout_gateway.sandbox.commet.wire import (
    AddPayoutBankAccountParams,
    CompletePayoutVerificationParams,
    RequestPayoutParams,
    bank_account_out,
    parse_json_object,
    payout_out,
    validate,
    verification_out,
)

# A few well-known US test routing numbers; any other yields ``bankName: null``.
TEST_BANKS: dict[str, str] = {
    "110000000": "STRIPE TEST BANK",
    "021000021": "JPMORGAN CHASE BANK, NA",
    "026009593": "BANK OF AMERICA, N.A.",
    "121000248": "WELLS FARGO BANK, NA",
    "011401533": "BANK OF AMERICA, N.A.",
}

_SEPARATORS = re.compile(r"[\s-]")


def bank_name_for(routing_number: str | None) -> str | None:
    if routing_number is None:
        return None
    return TEST_BANKS.get(_SEPARATORS.sub("", routing_number))


def last4(account_number: str) -> str:
    # The only part of the number that outlives the request.
    return _SEPARATORS.sub("", account_number)[-4:]


def _complete_verification(call: Call, body: bytes) -> dict[str, Any]:
    shape = verification_shape(call.version)
    if shape is VerificationShape.RETIRED:
        raise RequestRejected(
            "endpoint_deprecated",
            f"POST /payouts/verification was retired in API version {CURRENT}: complete KYC "
            "in the Commet dashboard (Settings > Payouts) instead.",
        )
    params = validate(CompletePayoutVerificationParams, parse_json_object(body))
    account, created = call.state.complete_verification(
        call.org,
        business_type=params.business_type,
        holder_name=params.bank.account_holder_name,
        last4=last4(params.bank.account_number),
        bank_name=bank_name_for(params.bank.routing_number),
        account_type=params.bank.account_type,
    )
    return verification_out(
        account, created=created, outcome_union=shape is VerificationShape.OUTCOME_UNION
    )


def _add_bank_account(call: Call, body: bytes) -> dict[str, Any]:
    params = validate(AddPayoutBankAccountParams, parse_json_object(body))
    bank = call.state.add_bank_account(
        call.org,
        holder_name=params.account_holder_name,
        last4=last4(params.account_number),
        bank_name=bank_name_for(params.routing_number),
        account_type=params.account_type,
        set_default=bool(params.set_default),
    )
    return bank_account_out(bank).model_dump(by_alias=True)


def _request_payout(call: Call, body: bytes) -> dict[str, Any]:
    params = validate(RequestPayoutParams, parse_json_object(body))
    payout = call.state.request_payout(
        call.org, amount=params.amount, description=params.description
    )
    return payout_out(payout).model_dump(by_alias=True)


COMPLETE_VERIFICATION = Operation("POST /payouts/verification", _complete_verification)
ADD_BANK_ACCOUNT = Operation("POST /payouts/bank-accounts", _add_bank_account)
REQUEST_PAYOUT = Operation("POST /payouts", _request_payout)
OPERATIONS: tuple[Operation, ...] = (COMPLETE_VERIFICATION, ADD_BANK_ACCOUNT, REQUEST_PAYOUT)
