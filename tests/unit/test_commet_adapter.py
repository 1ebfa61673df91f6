"""The Commet adapter over httpx.MockTransport: request shapes, idempotency, errors, secrets."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import date
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from payout_gateway.domain.enums import (
    AccountType,
    BankAccountStatus,
    HolderType,
    PayoutAccountStatus,
    PayoutStatus,
    Provider,
)
from payout_gateway.domain.errors import (
    IdempotencyConflictError,
    IdempotencyInProgressError,
    InputValidationError,
    OperationRetiredError,
    PayoutAccountRequiredError,
    ProviderAuthenticationError,
    ProviderBadResponseError,
    ProviderRateLimitedError,
    ProviderRejectedError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    UnsupportedOperationError,
)
from payout_gateway.domain.models import (
    AddBankAccountRequest,
    Money,
    OrganizationProfile,
    PayoutRequest,
    PayoutVerificationRequest,
    ProviderCapabilities,
    ProviderContext,
    ProviderCredentials,
)
from payout_gateway.ports import PayoutProvider
from payout_gateway.providers.commet import CommetAdapter
from payout_gateway.providers.transport import HttpPolicy

BASE_URL = "https://commet.test/api/v1"
API_KEY = "ck_live_secret_key_123"
ACCOUNT_NUMBER = "987654321012"
ROUTING_NUMBER = "110000000"

Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    """A scripted Commet: answers in order (the last answer repeats) and records each request."""

    def __init__(self, *answers: httpx.Response) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers[min(len(self.requests), len(self.answers)) - 1]
        # A fresh response per request: a response body can be consumed only once.
        return httpx.Response(answer.status_code, headers=answer.headers, content=answer.content)

    def bodies(self) -> list[Any]:
        return [json.loads(r.content) for r in self.requests]


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def ok(data: dict[str, Any], request_id: str = "req_ok") -> httpx.Response:
    return httpx.Response(
        200, json={"success": True, "data": data}, headers={"x-request-id": request_id}
    )


def fail(
    status: int, code: str, type_: str, message: str = "nope", **headers: str
) -> httpx.Response:
    body = {
        "success": False,
        "error": {
            "type": type_,
            "code": code,
            "message": message,
            "param": None,
            "details": None,
            "doc_url": f"https://commet.co/docs/api-reference/2026-07-11/errors/{code}.md",
        },
    }
    return httpx.Response(status, json=body, headers={"x-request-id": "req_err", **headers})


BANK_ACCOUNT = {
    "id": "pba_1",
    "providerExternalAccountId": "ba_1",
    "holderName": "Ada Lovelace",
    "last4": "1012",
    "bankName": "Test Bank",
    "country": "US",
    "currency": "usd",
    "accountType": "savings",
    "isDefault": False,
    "status": "active",
    "createdAt": "2026-07-20T10:00:00Z",
    "object": "payout_bank_account",
    "livemode": True,
}
VERIFICATION = {
    "providerAccountId": "acct_1",
    "status": "pending_verification",
    "transfersEnabled": False,
    "alreadyExists": False,
    "businessType": "individual",
    "country": "US",
    "object": "payout_account",
    "livemode": True,
}
PAYOUT = {
    "id": "po_1",
    "status": "pending",
    "amount": 1500,
    "fee": 15,
    "netAmount": 1485,
    "currency": "usd",
    "description": None,
    "providerTransferId": "tr_1",
    "createdAt": "2026-07-20T10:00:00Z",
    "object": "payout",
    "livemode": True,
}


def context(api_key: str = API_KEY) -> ProviderContext:
    return ProviderContext(
        organization_id="org_1",
        credentials=ProviderCredentials(api_key=SecretStr(api_key)),
        profile=OrganizationProfile(country="US", currency="USD", holder_type="INDIVIDUAL"),
    )


def add_request() -> AddBankAccountRequest:
    return AddBankAccountRequest.model_validate(
        {
            "bank": {
                "account_number": ACCOUNT_NUMBER,
                "routing_number": ROUTING_NUMBER,
                "holder_name": "Ada Lovelace",
                "account_type": "SAVINGS",
            },
            "set_default": False,
            "metadata": {"ref": "r1"},
        }
    )


def verification_request() -> PayoutVerificationRequest:
    return PayoutVerificationRequest.model_validate(
        {
            "email": "ada@example.com",
            "business_type": "INDIVIDUAL",
            "business_url": "https://example.com",
            "document_url": "https://example.com/id.png",
            "bank": {
                "account_number": ACCOUNT_NUMBER,
                "routing_number": ROUTING_NUMBER,
                "holder_name": "Ada Lovelace",
            },
            "individual": {
                "first_name": "Ada",
                "last_name": "Lovelace",
                "phone": "+14155550123",
                "date_of_birth": date(1990, 1, 2),
                "address": {
                    "line1": "1 Main St",
                    "city": "Springfield",
                    "postal_code": "62701",
                    "country": "US",
                },
            },
        }
    )


def payout_request(amount: int = 1500, currency: str = "USD") -> PayoutRequest:
    return PayoutRequest(amount=Money(amount_minor=amount, currency=currency))


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
async def make_adapter(sleeps: Sleeps) -> AsyncIterator[Callable[..., CommetAdapter]]:
    adapters: list[CommetAdapter] = []

    def make(handler: Handler, **kwargs: Any) -> CommetAdapter:
        kwargs.setdefault("base_url", BASE_URL)
        adapter = CommetAdapter(transport=httpx.MockTransport(handler), sleep=sleeps, **kwargs)
        adapters.append(adapter)
        return adapter

    yield make
    for adapter in adapters:
        await adapter.aclose()


async def test_the_adapter_satisfies_the_port() -> None:
    adapter: PayoutProvider = CommetAdapter(base_url=BASE_URL)
    assert adapter.provider is Provider.COMMET
    assert adapter.capabilities == ProviderCapabilities(
        takes_kyc=True,
        has_default_accounts=True,
        has_account_types=True,
        can_read_bank_accounts=False,
        has_idempotency=True,
        account_country_from_input=False,
        required_bank_fields=("account_number", "holder_name"),
    )
    await adapter.aclose()


async def test_the_http_policy_is_honoured(make_adapter: Callable[..., CommetAdapter]) -> None:
    commet = Recorder(fail(503, "internal_error", "internal_error"))
    adapter = make_adapter(commet, policy=HttpPolicy(max_retries=0))
    with pytest.raises(ProviderUnavailableError):
        await adapter.request_payout(context(), payout_request())
    assert len(commet.requests) == 1


def test_a_malformed_api_version_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        CommetAdapter(base_url=BASE_URL, api_version="latest")


# --- request shapes ---------------------------------------------------------------------------


async def test_add_bank_account_request_shape(make_adapter: Callable[..., CommetAdapter]) -> None:
    commet = Recorder(ok(BANK_ACCOUNT))
    account = await make_adapter(commet).add_bank_account(
        context(), add_request(), idempotency_key="org_1:key-1"
    )
    (request,) = commet.requests
    assert request.method == "POST"
    assert request.url == "https://commet.test/api/v1/payouts/bank-accounts"
    assert request.headers["x-api-key"] == API_KEY
    assert request.headers["commet-version"] == "2026-07-11"
    assert request.headers["idempotency-key"] == "org_1:key-1"
    assert request.headers["content-type"] == "application/json"
    assert commet.bodies() == [
        {
            "accountNumber": ACCOUNT_NUMBER,
            "accountHolderName": "Ada Lovelace",
            "routingNumber": ROUTING_NUMBER,
            "accountType": "savings",
            "setDefault": False,
        }
    ]
    assert account.provider_account_id == "pba_1"
    assert account.currency == "USD"
    assert account.account_type is AccountType.SAVINGS
    assert account.status is BankAccountStatus.ACTIVE
    assert account.holder_type is HolderType.INDIVIDUAL
    assert account.metadata == {"ref": "r1"}


async def test_one_client_serves_every_organization_with_its_own_key(
    make_adapter: Callable[..., CommetAdapter],
) -> None:
    commet = Recorder(ok(BANK_ACCOUNT))
    adapter = make_adapter(commet, base_url=BASE_URL + "/", api_version="2026-07-24")
    await adapter.add_bank_account(context("ck_live_org_a"), add_request())
    await adapter.add_bank_account(context("ck_live_org_b"), add_request())
    assert [r.headers["x-api-key"] for r in commet.requests] == ["ck_live_org_a", "ck_live_org_b"]
    assert {r.headers["commet-version"] for r in commet.requests} == {"2026-07-24"}
    assert {r.url.path for r in commet.requests} == {"/api/v1/payouts/bank-accounts"}


async def test_without_a_key_each_call_gets_a_fresh_uuid(
    make_adapter: Callable[..., CommetAdapter],
) -> None:
    commet = Recorder(ok(PAYOUT))
    adapter = make_adapter(commet)
    await adapter.request_payout(context(), payout_request())
    await adapter.request_payout(context(), payout_request())
    keys = [r.headers["idempotency-key"] for r in commet.requests]
    assert keys[0] != keys[1]
    for key in keys:
        assert uuid.UUID(key).version == 4


async def test_a_key_no_header_can_carry_is_hashed_stably(
    make_adapter: Callable[..., CommetAdapter],
) -> None:
    commet = Recorder(ok(PAYOUT))
    adapter = make_adapter(commet)
    for _ in range(2):
        await adapter.request_payout(context(), payout_request(), idempotency_key="org 1 · clé")
    keys = {r.headers["idempotency-key"] for r in commet.requests}
    assert len(keys) == 1
    assert len(keys.pop()) == 64


# --- idempotency across retries ---------------------------------------------------------------


async def test_a_500_then_success_is_one_logical_call_with_one_key(
    make_adapter: Callable[..., CommetAdapter], sleeps: Sleeps
) -> None:
    commet = Recorder(fail(500, "internal_error", "internal_error"), ok(BANK_ACCOUNT))
    account = await make_adapter(commet).add_bank_account(context(), add_request())
    assert account.provider_account_id == "pba_1"
    assert len(commet.requests) == 2
    first, second = commet.requests
    assert first.headers["idempotency-key"] == second.headers["idempotency-key"]
    assert first.content == second.content
    assert len(sleeps.delays) == 1


async def test_in_progress_after_our_own_timed_out_attempt_is_a_timeout(
    make_adapter: Callable[..., CommetAdapter],
) -> None:
    attempts: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        attempts.append(request)
        if len(attempts) == 1:
            raise httpx.ReadTimeout("slow", request=request)
        return fail(409, "idempotency_in_progress", "conflict_error")

    with pytest.raises(ProviderTimeoutError) as caught:
        await make_adapter(handler).add_bank_account(context(), add_request())
    assert caught.value.outcome_unknown is True
    assert caught.value.provider_code == "idempotency_in_progress"
    assert len(attempts) == 2


async def test_in_progress_on_the_first_attempt_is_the_callers_key_clash(
    make_adapter: Callable[..., CommetAdapter],
) -> None:
    commet = Recorder(fail(409, "idempotency_in_progress", "conflict_error"))
    with pytest.raises(IdempotencyInProgressError):
        await make_adapter(commet).add_bank_account(context(), add_request())


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
async def test_every_status_commet_sdks_retry_is_retried_with_the_same_key(
    make_adapter: Callable[..., CommetAdapter], sleeps: Sleeps, status: int
) -> None:
    first = httpx.Response(status, headers={"retry-after": "1"}, text="busy")
    commet = Recorder(first, ok(PAYOUT))
    await make_adapter(commet).request_payout(context(), payout_request(), idempotency_key="k1")
    assert [r.headers["idempotency-key"] for r in commet.requests] == ["k1", "k1"]
    assert sleeps.delays == [1.0]


async def test_persistent_500s_end_as_unavailable_with_unknown_outcome(
    make_adapter: Callable[..., CommetAdapter], sleeps: Sleeps
) -> None:
    commet = Recorder(fail(500, "internal_error", "internal_error"))
    with pytest.raises(ProviderUnavailableError) as caught:
        await make_adapter(commet).add_bank_account(context(), add_request())
    assert caught.value.outcome_unknown is True
    assert caught.value.request_id == "req_err"
    assert len(commet.requests) == 3
    assert len(sleeps.delays) == 2
    assert len({r.headers["idempotency-key"] for r in commet.requests}) == 1


async def test_429_without_retry_after_is_not_retried(
    make_adapter: Callable[..., CommetAdapter],
) -> None:
    commet = Recorder(fail(429, "rate_limited", "rate_limit_error"))
    with pytest.raises(ProviderRateLimitedError) as caught:
        await make_adapter(commet).request_payout(context(), payout_request())
    assert caught.value.retry_after is None
    assert len(commet.requests) == 1


async def test_429_with_a_retry_after_beyond_the_cap_reports_it(
    make_adapter: Callable[..., CommetAdapter],
) -> None:
    commet = Recorder(fail(429, "rate_limited", "rate_limit_error", **{"retry-after": "120"}))
    with pytest.raises(ProviderRateLimitedError) as caught:
        await make_adapter(commet).request_payout(context(), payout_request())
    assert caught.value.retry_after == 120.0
    assert len(commet.requests) == 1


async def test_a_503_past_its_retries_reports_the_retry_after_it_sent(
    make_adapter: Callable[..., CommetAdapter],
) -> None:
    # Beyond the gateway's own cap for waiting (30 s): not retried, and the caller is told.
    commet = Recorder(fail(503, "internal_error", "api_error", **{"retry-after": "120"}))
    with pytest.raises(ProviderUnavailableError) as caught:
        await make_adapter(commet).request_payout(context(), payout_request())
    assert type(caught.value) is ProviderUnavailableError
    assert caught.value.retry_after == 120.0
    assert len(commet.requests) == 1


async def test_connection_refused_is_retried_and_reported_as_not_applied(
    make_adapter: Callable[..., CommetAdapter], sleeps: Sleeps
) -> None:
    calls: list[httpx.Request] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(ProviderUnavailableError) as caught:
        await make_adapter(refuse).request_payout(context(), payout_request())
    assert caught.value.outcome_unknown is False
    assert len(calls) == 3


# --- operation-specific errors ----------------------------------------------------------------


async def test_adding_a_bank_account_before_verification_needs_a_payout_account(
    make_adapter: Callable[..., CommetAdapter],
) -> None:
    commet = Recorder(fail(404, "not_found", "not_found_error", "Complete payout verification"))
    with pytest.raises(PayoutAccountRequiredError):
        await make_adapter(commet).add_bank_account(context(), add_request())
    assert len(commet.requests) == 1


async def test_verification_retired_by_410_points_at_the_dashboard(
    make_adapter: Callable[..., CommetAdapter],
) -> None:
    commet = Recorder(fail(410, "endpoint_deprecated", "not_found_error"))
    adapter = make_adapter(commet, api_version="2026-08-27")
    with pytest.raises(OperationRetiredError) as caught:
        await adapter.complete_payout_verification(context(), verification_request())
    assert "dashboard" in caught.value.message
    assert caught.value.http_status == 410
    assert caught.value.provider_code == "endpoint_deprecated"
    assert len(commet.requests) == 1


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (fail(402, "insufficient_balance", "billing_error"), ProviderRejectedError),
        (
            fail(403, "payouts_not_available_in_sandbox", "authentication_error"),
            ProviderAuthenticationError,
        ),
        (fail(409, "idempotency_key_mismatch", "conflict_error"), IdempotencyConflictError),
        (httpx.Response(200, text="<html>maintenance</html>"), ProviderBadResponseError),
    ],
)
async def test_payout_refusals_are_typed(
    make_adapter: Callable[..., CommetAdapter], answer: httpx.Response, expected: type[Exception]
) -> None:
    commet = Recorder(answer)
    with pytest.raises(expected):
        await make_adapter(commet).request_payout(context(), payout_request())
    assert len(commet.requests) == 1


async def test_redirects_are_never_followed(make_adapter: Callable[..., CommetAdapter]) -> None:
    commet = Recorder(
        httpx.Response(307, headers={"location": "http://169.254.169.254/latest/meta-data/"})
    )
    with pytest.raises(ProviderBadResponseError):
        await make_adapter(commet).request_payout(context(), payout_request())
    assert {r.url.host for r in commet.requests} == {"commet.test"}


# --- verification -----------------------------------------------------------------------------


async def test_verification_sends_the_full_kyc_body_and_reports_the_new_bank(
    make_adapter: Callable[..., CommetAdapter],
) -> None:
    commet = Recorder(ok(VERIFICATION))
    outcome = await make_adapter(commet).complete_payout_verification(
        context(), verification_request(), idempotency_key="org_1:verify"
    )
    (request,) = commet.requests
    assert request.url.path == "/api/v1/payouts/verification"
    assert request.headers["idempotency-key"] == "org_1:verify"
    body = commet.bodies()[0]
    assert body["businessType"] == "individual"
    assert body["individual"]["dateOfBirth"] == "1990-01-02"
    assert body["bank"]["accountNumber"] == ACCOUNT_NUMBER
    assert outcome.already_existed is False
    assert outcome.payout_account.status is PayoutAccountStatus.PENDING_VERIFICATION
    bank = outcome.bank_account
    assert bank is not None
    assert bank.provider_account_id is None
    assert bank.last4 == ACCOUNT_NUMBER[-4:]
    assert bank.is_default is True
    assert bank.currency == "USD"
    assert bank.livemode is True


async def test_verification_of_an_existing_account_saves_no_bank(
    make_adapter: Callable[..., CommetAdapter],
) -> None:
    existing = {
        "providerAccountId": "acct_1",
        "status": "verified",
        "transfersEnabled": True,
        "outcome": "existing",
        "object": "payout_account",
        "livemode": True,
    }
    commet = Recorder(ok(existing))
    outcome = await make_adapter(commet, api_version="2026-07-24").complete_payout_verification(
        context(), verification_request()
    )
    assert outcome.already_existed is True
    assert outcome.bank_account is None
    assert outcome.payout_account.status is PayoutAccountStatus.VERIFIED


# --- operations Commet does not have ----------------------------------------------------------


async def test_reads_are_unsupported_and_cost_no_call(
    make_adapter: Callable[..., CommetAdapter],
) -> None:
    commet = Recorder(ok(BANK_ACCOUNT))
    adapter = make_adapter(commet)
    with pytest.raises(UnsupportedOperationError) as caught:
        await adapter.get_bank_account(context(), "pba_1")
    assert caught.value.provider is Provider.COMMET
    with pytest.raises(UnsupportedOperationError):
        await adapter.list_bank_accounts(context())
    assert await adapter.find_bank_account_by_reference(context(), "org_1:key") is None
    assert commet.requests == []


# --- payouts ----------------------------------------------------------------------------------


async def test_request_payout(make_adapter: Callable[..., CommetAdapter]) -> None:
    commet = Recorder(ok(PAYOUT))
    payout = await make_adapter(commet).request_payout(
        context(), PayoutRequest(amount=Money(amount_minor=1500, currency="USD"), description="x")
    )
    assert commet.requests[0].url.path == "/api/v1/payouts"
    assert commet.bodies() == [{"amount": 1500, "description": "x"}]
    assert payout.provider_payout_id == "po_1"
    assert payout.status is PayoutStatus.PENDING
    assert payout.amount == Money(amount_minor=1500, currency="USD")


@pytest.mark.parametrize(
    ("amount", "currency", "path"),
    [(999, "USD", ("amount",)), (5000, "EUR", ("amount", "currency"))],
)
async def test_payout_rules_are_checked_before_any_call(
    make_adapter: Callable[..., CommetAdapter], amount: int, currency: str, path: tuple[str, ...]
) -> None:
    commet = Recorder(ok(PAYOUT))
    with pytest.raises(InputValidationError) as caught:
        await make_adapter(commet).request_payout(context(), payout_request(amount, currency))
    assert caught.value.path == path
    assert commet.requests == []


async def test_a_chosen_payout_destination_is_refused_before_any_call(
    make_adapter: Callable[..., CommetAdapter],
) -> None:
    commet = Recorder(ok(PAYOUT))
    with pytest.raises(UnsupportedOperationError):
        await make_adapter(commet).request_payout(
            context(), payout_request(), destination_provider_account_id="pba_2"
        )
    assert commet.requests == []


async def test_unknown_statuses_are_reported_and_logged(
    make_adapter: Callable[..., CommetAdapter], caplog: pytest.LogCaptureFixture
) -> None:
    commet = Recorder(ok({**PAYOUT, "status": "reversed"}))
    with caplog.at_level(logging.WARNING, logger="payout_gateway"):
        payout = await make_adapter(commet).request_payout(context(), payout_request())
    assert payout.status is PayoutStatus.UNKNOWN
    assert payout.provider_status == "reversed"
    assert any(getattr(r, "provider_status", None) == "reversed" for r in caplog.records)


# --- secrets ----------------------------------------------------------------------------------


async def test_a_malformed_api_key_is_refused_without_a_call(
    make_adapter: Callable[..., CommetAdapter],
) -> None:
    commet = Recorder(ok(PAYOUT))
    with pytest.raises(ProviderAuthenticationError) as caught:
        await make_adapter(commet).request_payout(context("ck_live_\nx"), payout_request())
    assert "ck_live" not in str(caught.value)
    assert commet.requests == []


async def test_secrets_never_reach_logs_errors_or_reprs(
    make_adapter: Callable[..., CommetAdapter], caplog: pytest.LogCaptureFixture
) -> None:
    echo = f"accountNumber {ACCOUNT_NUMBER} / routing {ROUTING_NUMBER} rejected"
    commet = Recorder(
        fail(500, "internal_error", "internal_error", echo),
        fail(400, "validation_error", "validation_error", echo),
    )
    adapter = make_adapter(commet)
    errors: list[Exception] = []
    with caplog.at_level(logging.DEBUG):
        for call in (
            adapter.add_bank_account(context(), add_request()),
            adapter.complete_payout_verification(context(), verification_request()),
        ):
            with pytest.raises(ProviderRejectedError) as caught:
                await call
            errors.append(caught.value)
    assert len(commet.requests) == 3
    texts = [repr(adapter), repr(add_request()), repr(verification_request())]
    texts += [f"{e!s} {e!r} {vars(e)}" for e in errors]
    texts += [f"{r.getMessage()} {vars(r)}" for r in caplog.records]
    assert caplog.records
    for text in texts:
        assert ACCOUNT_NUMBER not in text
        assert ROUTING_NUMBER not in text
        assert API_KEY not in text


async def test_aclose_closes_the_shared_client() -> None:
    adapter = CommetAdapter(base_url=BASE_URL, transport=httpx.MockTransport(Recorder(ok(PAYOUT))))
    async with adapter:
        await adapter.request_payout(context(), payout_request())
    assert adapter._http.is_closed
