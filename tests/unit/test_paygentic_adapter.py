"""PaygenticAdapter against an in-memory fake of Paygentic served through httpx.MockTransport."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from payout_gateway.domain.enums import (
    BankAccountStatus,
    BusinessType,
    HolderType,
    PayoutAccountStatus,
    PayoutStatus,
    Provider,
)
from payout_gateway.domain.errors import (
    InputValidationError,
    NotFoundError,
    NotPermittedError,
    ProviderAuthenticationError,
    ProviderBadResponseError,
    ProviderRateLimitedError,
    ProviderRejectedError,
    ProviderTimeoutError,
    ProviderUnavailableError,
)
from payout_gateway.domain.models import (
    AddBankAccountRequest,
    Money,
    OrganizationProfile,
    PayoutRequest,
    PayoutVerificationRequest,
    ProviderContext,
    ProviderCredentials,
)
from payout_gateway.providers.paygentic import PaygenticAdapter
from payout_gateway.providers.transport import HttpPolicy

ACCOUNT_NUMBER = "987654321012"
ROUTING_NUMBER = "021000021"
API_KEY = "pk_test_canary_key"
ORG = "org_abc123"
LIVE_URL = "https://api.paygentic.io"
SANDBOX_URL = "https://api.sandbox.paygentic.io"

ACCOUNT_BODY_KEYS = {
    "organizationId",
    "countryCode",
    "bankName",
    "currency",
    "accountNumber",
    "routingNumber",
    "accountHolderName",
    "accountHolderType",
    "metadata",
}


# --- a fake Paygentic -----------------------------------------------------------------------


@dataclass
class Fault:
    """What the fake does instead of answering normally, for one matching request.

    ``apply``: perform the operation first (the provider applied it), then misbehave.
    """

    method: str
    path: str
    apply: bool = False
    status: int | None = None
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    exception: type[httpx.TransportError] | None = None


class FakePaygentic:
    """Paygentic as paygentic.md documents it, keeping every request it saw."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.accounts: list[dict[str, Any]] = []
        self.payouts: list[dict[str, Any]] = []
        self.faults: list[Fault] = []
        self._ids = 0

    # helpers for assertions
    def calls(self, method: str, path: str | None = None) -> list[httpx.Request]:
        return [
            r for r in self.requests if r.method == method and (path is None or r.url.path == path)
        ]

    def json_bodies(self) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.requests if r.content]

    def seed_accounts(self, count: int, organization_id: str = ORG) -> None:
        for _ in range(count):
            self._store_account(
                {
                    "organizationId": organization_id,
                    "countryCode": "US",
                    "bankName": "Seed Bank",
                    "currency": "USD",
                    "accountNumber": "000011112222",
                    "accountHolderName": "Seed",
                    "accountHolderType": "individual",
                    "metadata": {"gatewayReference": f"other-{self._ids}"},
                }
            )

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        for fault in self.faults:
            if fault.method == request.method and fault.path == request.url.path:
                self.faults.remove(fault)
                if fault.apply:
                    self._route(request)
                if fault.exception is not None:
                    raise fault.exception("injected", request=request)
                assert fault.status is not None
                return httpx.Response(fault.status, content=fault.body, headers=fault.headers)
        return self._route(request)

    def _route(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "POST" and path == "/v0/externalAccounts":
            return httpx.Response(201, json=self._store_account(json.loads(request.content)))
        if request.method == "POST" and path == "/v0/payouts":
            return httpx.Response(201, json=self._store_payout(json.loads(request.content)))
        if request.method == "GET" and path == "/v0/externalAccounts":
            return self._list(self.accounts, request)
        if request.method == "GET" and path == "/v0/payouts":
            return self._list(self.payouts, request)
        if request.method == "GET" and path.startswith("/v0/externalAccounts/"):
            wanted = path.rsplit("/", 1)[1]
            for account in self.accounts:
                if account["id"] == wanted:
                    return httpx.Response(200, json=account)
            return httpx.Response(404, json={"message": "Not found", "error": "not_found"})
        return httpx.Response(404, json={"message": "No route", "error": "not_found"})

    def _list(self, items: list[dict[str, Any]], request: httpx.Request) -> httpx.Response:
        params = request.url.params
        limit = int(params.get("limit", "10"))
        offset = int(params.get("offset", "0"))
        assert 1 <= limit <= 100
        mine = [i for i in items if i["organizationId"] == params.get("organizationId")]
        return httpx.Response(
            200,
            json={
                "object": "list",
                "data": mine[offset : offset + limit],
                "pagination": {"limit": limit, "offset": offset, "total": len(mine)},
            },
        )

    def _next_id(self, prefix: str) -> str:
        self._ids += 1
        return f"{prefix}_{self._ids:04d}"

    def _store_account(self, body: dict[str, Any]) -> dict[str, Any]:
        account = {
            "id": self._next_id("eba"),
            "object": "externalBankAccount",
            "organizationId": body["organizationId"],
            "countryCode": body["countryCode"],
            "bankName": body["bankName"],
            "currency": body["currency"],
            "last4": body["accountNumber"][-4:],
            "accountHolderName": body["accountHolderName"],
            "accountHolderType": body["accountHolderType"],
            "status": "new",
            "metadata": body.get("metadata", {}),
            "createdAt": "2024-05-01T10:00:00Z",
            "updatedAt": "2024-05-01T10:00:00Z",
        }
        self.accounts.append(account)
        return account

    def _store_payout(self, body: dict[str, Any]) -> dict[str, Any]:
        payout = {
            "id": self._next_id("po"),
            "object": "payout",
            "status": "pending",
            **body,
            "createdAt": "2024-05-01T10:00:00Z",
            "updatedAt": "2024-05-01T10:00:00Z",
        }
        self.payouts.append(payout)
        return payout


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture
def fake() -> FakePaygentic:
    return FakePaygentic()


@pytest.fixture
def delays() -> list[float]:
    return []


@pytest.fixture
def make_adapter(fake: FakePaygentic, delays: list[float]) -> Callable[..., PaygenticAdapter]:
    async def record(seconds: float) -> None:
        delays.append(seconds)

    def make(base_url: str = LIVE_URL, **policy: Any) -> PaygenticAdapter:
        return PaygenticAdapter(
            base_url=base_url,
            policy=HttpPolicy(**policy),
            transport=httpx.MockTransport(fake.handler),
            sleep=record,
        )

    return make


@pytest.fixture
async def adapter(make_adapter: Callable[..., PaygenticAdapter]) -> AsyncIterator[PaygenticAdapter]:
    instance = make_adapter()
    yield instance
    await instance.aclose()


def make_context(
    *,
    organization_id: str | None = ORG,
    source_id: str | None = "src_main",
    bank_name: str | None = "Profile Bank",
    holder_type: HolderType | None = HolderType.COMPANY,
) -> ProviderContext:
    return ProviderContext(
        organization_id="gw_org_1",
        credentials=ProviderCredentials(
            api_key=SecretStr(API_KEY),
            provider_organization_id=organization_id,
            payout_source_id=source_id,
        ),
        profile=OrganizationProfile(
            country="us", currency="usd", bank_name=bank_name, holder_type=holder_type
        ),
    )


def add_request(**bank: Any) -> AddBankAccountRequest:
    data: dict[str, Any] = {
        "account_number": ACCOUNT_NUMBER,
        "routing_number": ROUTING_NUMBER,
        "holder_name": "Ada Lovelace",
    }
    data.update(bank)
    return AddBankAccountRequest.model_validate({"bank": data, "metadata": {"team": "ops"}})


KYC_VALUES = [
    "Grace",
    "Hopper",
    "+14155550123",
    "1906-12-09",
    "7913",
    "ID-998877",
    "kyc-canary@example.com",
    "https://docs.example.com/passport.pdf",
    "https://grace.example.com",
    "1 Navy Way",
    "Arlington",
    "22201",
]


def verification_request(**bank: Any) -> PayoutVerificationRequest:
    bank_data: dict[str, Any] = {
        "account_number": ACCOUNT_NUMBER,
        "routing_number": ROUTING_NUMBER,
        # The holder name is bank data and goes out; it differs from the KYC names on purpose.
        "holder_name": "Cobol Consulting",
    }
    bank_data.update(bank)
    return PayoutVerificationRequest.model_validate(
        {
            "email": "kyc-canary@example.com",
            "business_type": "INDIVIDUAL",
            "business_url": "https://grace.example.com",
            "document_url": "https://docs.example.com/passport.pdf",
            "bank": bank_data,
            "individual": {
                "first_name": "Grace",
                "last_name": "Hopper",
                "phone": "+14155550123",
                "date_of_birth": date(1906, 12, 9),
                "ssn_last4": "7913",
                "id_number": "ID-998877",
                "address": {
                    "line1": "1 Navy Way",
                    "city": "Arlington",
                    "state": "VA",
                    "postal_code": "22201",
                    "country": "US",
                },
            },
        }
    )


def payout_request() -> PayoutRequest:
    return PayoutRequest(amount=Money(amount_minor=1500, currency="USD"), description="May")


# --- capabilities ---------------------------------------------------------------------------


def test_capabilities(adapter: PaygenticAdapter) -> None:
    caps = adapter.capabilities
    assert adapter.provider is Provider.PAYGENTIC
    assert caps.can_read_bank_accounts
    assert not caps.takes_kyc
    assert not caps.has_default_accounts
    assert not caps.has_account_types
    assert not caps.has_idempotency
    assert set(caps.required_bank_fields) == {
        "account_number",
        "routing_number",
        "holder_name",
        "holder_type",
        "bank_name",
        "country",
        "currency",
    }


# --- add_bank_account -----------------------------------------------------------------------


async def test_add_bank_account_sends_the_documented_request(
    adapter: PaygenticAdapter, fake: FakePaygentic
) -> None:
    account = await adapter.add_bank_account(
        make_context(), add_request(account_type="CHECKING"), idempotency_key="key-1"
    )

    (request,) = fake.requests
    assert request.method == "POST"
    assert request.url == "https://api.paygentic.io/v0/externalAccounts"
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    body = json.loads(request.content)
    assert set(body) == ACCOUNT_BODY_KEYS
    assert body == {
        "organizationId": ORG,
        "countryCode": "US",
        "bankName": "Profile Bank",
        "currency": "USD",
        "accountNumber": ACCOUNT_NUMBER,
        "routingNumber": ROUTING_NUMBER,
        "accountHolderName": "Ada Lovelace",
        "accountHolderType": "company",
        "metadata": {"team": "ops", "gatewayReference": "key-1"},
    }

    assert account.provider is Provider.PAYGENTIC
    assert account.provider_account_id == "eba_0001"
    assert account.last4 == "1012"
    assert account.status is BankAccountStatus.PENDING
    assert account.provider_status == "new"
    assert account.account_type is None
    assert account.is_default is False
    assert account.livemode is True
    assert account.metadata == {"team": "ops"}
    assert (account.country, account.currency) == ("US", "USD")


async def test_add_bank_account_without_key_sends_no_reference(
    adapter: PaygenticAdapter, fake: FakePaygentic
) -> None:
    await adapter.add_bank_account(make_context(), add_request())
    assert fake.json_bodies()[0]["metadata"] == {"team": "ops"}


async def test_input_fields_override_the_profile(
    adapter: PaygenticAdapter, fake: FakePaygentic
) -> None:
    request = add_request(
        bank_name="Input Bank", holder_type="INDIVIDUAL", country="CA", currency="CAD"
    )
    account = await adapter.add_bank_account(make_context(), request)
    body = fake.json_bodies()[0]
    assert (body["bankName"], body["accountHolderType"]) == ("Input Bank", "individual")
    assert (body["countryCode"], body["currency"]) == ("CA", "CAD")
    assert account.holder_type is HolderType.INDIVIDUAL


async def test_missing_fields_are_one_validation_error_before_any_call(
    adapter: PaygenticAdapter, fake: FakePaygentic
) -> None:
    context = make_context(bank_name=None, holder_type=None)
    request = add_request(routing_number=None)
    with pytest.raises(InputValidationError) as caught:
        await adapter.add_bank_account(context, request, idempotency_key="k")
    assert {issue.path for issue in caught.value.issues} == {
        ("bank", "bank_name"),
        ("bank", "holder_type"),
        ("bank", "routing_number"),
    }
    assert ACCOUNT_NUMBER not in str(caught.value)
    assert fake.requests == []


async def test_reserved_metadata_keys_are_refused(
    adapter: PaygenticAdapter, fake: FakePaygentic
) -> None:
    request = AddBankAccountRequest.model_validate(
        {
            "bank": {
                "account_number": ACCOUNT_NUMBER,
                "routing_number": ROUTING_NUMBER,
                "holder_name": "A",
            },
            "metadata": {"gatewayReference": "spoof"},
        }
    )
    with pytest.raises(InputValidationError) as caught:
        await adapter.add_bank_account(make_context(), request)
    assert caught.value.path == ("metadata", "gatewayReference")
    assert fake.requests == []


async def test_missing_paygentic_organization_is_not_permitted(
    adapter: PaygenticAdapter, fake: FakePaygentic
) -> None:
    with pytest.raises(NotPermittedError, match="no Paygentic organization id"):
        await adapter.add_bank_account(make_context(organization_id=None), add_request())
    with pytest.raises(NotPermittedError):
        await adapter.list_bank_accounts(make_context(organization_id=None))
    assert fake.requests == []


async def test_500_on_create_is_not_retried(
    adapter: PaygenticAdapter, fake: FakePaygentic, delays: list[float]
) -> None:
    fake.faults.append(Fault("POST", "/v0/externalAccounts", status=500, body=b"{}"))
    with pytest.raises(ProviderUnavailableError) as caught:
        await adapter.add_bank_account(make_context(), add_request())
    assert caught.value.outcome_unknown is True
    assert caught.value.http_status == 500
    assert len(fake.requests) == 1
    assert delays == []


async def test_500_that_applied_the_create_is_reconciled(
    adapter: PaygenticAdapter, fake: FakePaygentic
) -> None:
    fake.faults.append(Fault("POST", "/v0/externalAccounts", apply=True, status=500))
    account = await adapter.add_bank_account(make_context(), add_request(), idempotency_key="k-500")
    assert account.provider_account_id == fake.accounts[0]["id"]
    assert len(fake.calls("POST")) == 1
    assert len(fake.accounts) == 1


async def test_read_timeout_after_send_is_reconciled_from_the_list(
    adapter: PaygenticAdapter, fake: FakePaygentic
) -> None:
    fake.faults.append(
        Fault("POST", "/v0/externalAccounts", apply=True, exception=httpx.ReadTimeout)
    )
    account = await adapter.add_bank_account(make_context(), add_request(), idempotency_key="k-1")
    assert len(fake.calls("POST")) == 1
    assert len(fake.accounts) == 1
    assert account.provider_account_id == fake.accounts[0]["id"]
    assert account.metadata == {"team": "ops"}
    (listing,) = fake.calls("GET", "/v0/externalAccounts")
    assert listing.url.params["organizationId"] == ORG
    assert listing.url.params["limit"] == "100"
    assert listing.headers["authorization"] == f"Bearer {API_KEY}"


async def test_read_timeout_with_nothing_found_yet_stays_unknown(
    adapter: PaygenticAdapter, fake: FakePaygentic
) -> None:
    # No answer: the create may still land at Paygentic after the lookup, so "not applied"
    # would be a guess, and a caller told so could send it again without its key.
    fake.faults.append(Fault("POST", "/v0/externalAccounts", exception=httpx.ReadTimeout))
    with pytest.raises(ProviderTimeoutError) as caught:
        await adapter.add_bank_account(make_context(), add_request(), idempotency_key="k-2")
    assert caught.value.outcome_unknown is True
    assert len(fake.calls("POST")) == 1
    assert len(fake.calls("GET", "/v0/externalAccounts")) == 1  # looked, found nothing yet
    assert fake.accounts == []


async def test_timeout_without_key_stays_unknown_and_is_not_reconciled(
    adapter: PaygenticAdapter, fake: FakePaygentic
) -> None:
    fake.faults.append(
        Fault("POST", "/v0/externalAccounts", apply=True, exception=httpx.ReadTimeout)
    )
    with pytest.raises(ProviderTimeoutError) as caught:
        await adapter.add_bank_account(make_context(), add_request())
    assert caught.value.outcome_unknown is True
    assert len(fake.requests) == 1


async def test_reconciliation_pages_through_the_whole_list(
    adapter: PaygenticAdapter, fake: FakePaygentic
) -> None:
    fake.seed_accounts(250)
    fake.seed_accounts(30, organization_id="org_other")
    fake.faults.append(
        Fault("POST", "/v0/externalAccounts", apply=True, exception=httpx.RemoteProtocolError)
    )
    account = await adapter.add_bank_account(make_context(), add_request(), idempotency_key="late")
    assert account.provider_account_id == fake.accounts[-1]["id"]
    offsets = [r.url.params["offset"] for r in fake.calls("GET", "/v0/externalAccounts")]
    assert offsets == ["0", "100", "200"]
    assert len(fake.calls("POST")) == 1


async def test_reconciliation_that_cannot_read_keeps_the_outcome_unknown(
    adapter: PaygenticAdapter, fake: FakePaygentic
) -> None:
    fake.faults.append(
        Fault("POST", "/v0/externalAccounts", apply=True, exception=httpx.ReadTimeout)
    )
    for _ in range(3):  # the list GET and both of its retries fail
        fake.faults.append(Fault("GET", "/v0/externalAccounts", status=503))
    with pytest.raises(ProviderTimeoutError) as caught:
        await adapter.add_bank_account(make_context(), add_request(), idempotency_key="k-3")
    assert caught.value.outcome_unknown is True
    assert len(fake.calls("POST")) == 1


async def test_html_201_is_reconciled(adapter: PaygenticAdapter, fake: FakePaygentic) -> None:
    fake.faults.append(
        Fault("POST", "/v0/externalAccounts", apply=True, status=201, body=b"<html>ok</html>")
    )
    account = await adapter.add_bank_account(make_context(), add_request(), idempotency_key="k-4")
    assert account.provider_account_id == fake.accounts[0]["id"]
    assert len(fake.calls("POST")) == 1


async def test_html_201_without_key_is_a_bad_response(
    adapter: PaygenticAdapter, fake: FakePaygentic
) -> None:
    fake.faults.append(Fault("POST", "/v0/externalAccounts", apply=True, status=201, body=b"<p>"))
    with pytest.raises(ProviderBadResponseError) as caught:
        await adapter.add_bank_account(make_context(), add_request())
    assert caught.value.outcome_unknown is True


async def test_connection_refused_is_retried_because_nothing_was_sent(
    adapter: PaygenticAdapter, fake: FakePaygentic, delays: list[float]
) -> None:
    fake.faults.append(Fault("POST", "/v0/externalAccounts", exception=httpx.ConnectError))
    account = await adapter.add_bank_account(make_context(), add_request(), idempotency_key="k")
    assert account.provider_account_id == "eba_0001"
    assert len(fake.calls("POST")) == 2
    assert len(delays) == 1


async def test_429_is_retried_after_the_advertised_delay(
    adapter: PaygenticAdapter, fake: FakePaygentic, delays: list[float]
) -> None:
    fake.faults.append(
        Fault("POST", "/v0/externalAccounts", status=429, headers={"retry-after": "2"})
    )
    await adapter.add_bank_account(make_context(), add_request())
    assert delays == [2.0]
    assert len(fake.accounts) == 1


async def test_429_without_retry_after_is_rate_limited_and_not_reconciled(
    adapter: PaygenticAdapter, fake: FakePaygentic
) -> None:
    fake.faults.append(Fault("POST", "/v0/externalAccounts", status=429, body=b"{}"))
    with pytest.raises(ProviderRateLimitedError):
        await adapter.add_bank_account(make_context(), add_request(), idempotency_key="k")
    assert len(fake.requests) == 1


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (401, ProviderAuthenticationError),
        (403, ProviderAuthenticationError),
        (422, ProviderRejectedError),
    ],
)
async def test_refusals_are_typed_and_not_reconciled(
    adapter: PaygenticAdapter,
    fake: FakePaygentic,
    status: int,
    error_type: type[ProviderRejectedError],
) -> None:
    body = json.dumps({"message": "no", "error": "x", "code": "NOPE"}).encode()
    fake.faults.append(Fault("POST", "/v0/externalAccounts", status=status, body=body))
    with pytest.raises(error_type) as caught:
        await adapter.add_bank_account(make_context(), add_request(), idempotency_key="k")
    assert caught.value.provider_code == "NOPE"
    assert len(fake.requests) == 1


# --- reads ----------------------------------------------------------------------------------


async def test_get_bank_account(adapter: PaygenticAdapter, fake: FakePaygentic) -> None:
    created = await adapter.add_bank_account(make_context(), add_request())
    assert created.provider_account_id is not None
    fake.accounts[0]["status"] = "verified"
    account = await adapter.get_bank_account(make_context(), created.provider_account_id)
    assert account.status is BankAccountStatus.ACTIVE
    request = fake.requests[-1]
    assert (request.method, request.url.path) == (
        "GET",
        f"/v0/externalAccounts/{created.provider_account_id}",
    )
    assert request.headers["authorization"] == f"Bearer {API_KEY}"


async def test_get_missing_account_is_not_found(adapter: PaygenticAdapter) -> None:
    with pytest.raises(NotFoundError):
        await adapter.get_bank_account(make_context(), "eba_nope")


async def test_another_organizations_account_looks_absent(
    adapter: PaygenticAdapter, fake: FakePaygentic
) -> None:
    fake.seed_accounts(1, organization_id="org_other")
    with pytest.raises(NotFoundError):
        await adapter.get_bank_account(make_context(), fake.accounts[0]["id"])


@pytest.mark.parametrize("account_id", ["..", "../payouts", "a/b", "x?y=1", "", "é"])
async def test_unsafe_ids_never_reach_the_provider(
    adapter: PaygenticAdapter, fake: FakePaygentic, account_id: str
) -> None:
    with pytest.raises(NotFoundError):
        await adapter.get_bank_account(make_context(), account_id)
    assert fake.requests == []


async def test_reads_are_retried_on_503(
    adapter: PaygenticAdapter, fake: FakePaygentic, delays: list[float]
) -> None:
    fake.seed_accounts(1)
    fake.faults.append(Fault("GET", "/v0/externalAccounts/eba_0001", status=503))
    account = await adapter.get_bank_account(make_context(), "eba_0001")
    assert account.provider_account_id == "eba_0001"
    assert len(delays) == 1


async def test_list_bank_accounts_maps_the_page(
    adapter: PaygenticAdapter, fake: FakePaygentic
) -> None:
    fake.seed_accounts(5)
    page = await adapter.list_bank_accounts(make_context(), limit=2, offset=2)
    assert [a.provider_account_id for a in page.items] == ["eba_0003", "eba_0004"]
    assert (page.total, page.offset, page.limit) == (5, 2, 2)
    params = fake.requests[0].url.params
    assert dict(params) == {"organizationId": ORG, "limit": "2", "offset": "2"}


async def test_list_limit_is_clamped_to_the_documented_maximum(
    adapter: PaygenticAdapter, fake: FakePaygentic
) -> None:
    await adapter.list_bank_accounts(make_context(), limit=1000)
    assert fake.requests[0].url.params["limit"] == "100"
    with pytest.raises(InputValidationError):
        await adapter.list_bank_accounts(make_context(), offset=-1)
    with pytest.raises(InputValidationError):
        await adapter.list_bank_accounts(make_context(), limit=0)


async def test_find_bank_account_by_reference(
    adapter: PaygenticAdapter, fake: FakePaygentic
) -> None:
    await adapter.add_bank_account(make_context(), add_request(), idempotency_key="ref-x")
    found = await adapter.find_bank_account_by_reference(make_context(), "ref-x")
    assert found is not None
    assert found.provider_account_id == "eba_0001"
    assert await adapter.find_bank_account_by_reference(make_context(), "ref-y") is None


async def test_get_payout_account_derives_from_the_destination(
    adapter: PaygenticAdapter, fake: FakePaygentic
) -> None:
    fake.seed_accounts(1)
    fake.accounts[0]["status"] = "errored"
    account = await adapter.get_payout_account(
        make_context(), "eba_0001", business_type=BusinessType.COMPANY
    )
    assert account.status is PayoutAccountStatus.RESTRICTED
    assert account.transfers_enabled is False
    assert account.business_type is BusinessType.COMPANY


# --- complete_payout_verification -----------------------------------------------------------


async def test_verification_forwards_only_the_bank_part(
    make_adapter: Callable[..., PaygenticAdapter], fake: FakePaygentic
) -> None:
    adapter = make_adapter(SANDBOX_URL)
    outcome = await adapter.complete_payout_verification(
        make_context(holder_type=HolderType.COMPANY),
        verification_request(),
        idempotency_key="verify-1",
    )
    await adapter.aclose()

    (request,) = fake.requests
    body = json.loads(request.content)
    assert set(body) == ACCOUNT_BODY_KEYS
    assert body["accountHolderType"] == "individual"  # from business_type, not the profile
    assert body["metadata"] == {
        "gatewayReference": "verify-1",
        "gatewayPurpose": "payout_verification",
    }
    for request in fake.requests:
        seen = request.content.decode() + str(request.url) + str(request.headers)
        for value in KYC_VALUES:
            assert value not in seen

    payout_account = outcome.payout_account
    assert payout_account.provider_account_id == "eba_0001"
    assert payout_account.status is PayoutAccountStatus.PENDING_VERIFICATION
    assert payout_account.transfers_enabled is False
    assert payout_account.business_type is BusinessType.INDIVIDUAL
    assert payout_account.country == "US"
    assert payout_account.livemode is False
    assert outcome.bank_account is not None
    assert outcome.bank_account.provider_account_id == "eba_0001"
    assert outcome.bank_account.livemode is False
    assert outcome.already_existed is False


async def test_verification_uses_the_bank_holder_type_when_given(
    adapter: PaygenticAdapter, fake: FakePaygentic
) -> None:
    await adapter.complete_payout_verification(
        make_context(), verification_request(holder_type="COMPANY")
    )
    assert fake.json_bodies()[0]["accountHolderType"] == "company"


async def test_verification_missing_fields_fail_before_any_call(
    adapter: PaygenticAdapter, fake: FakePaygentic
) -> None:
    with pytest.raises(InputValidationError) as caught:
        await adapter.complete_payout_verification(
            make_context(bank_name=None), verification_request(routing_number=None)
        )
    assert {i.path for i in caught.value.issues} == {
        ("bank", "bank_name"),
        ("bank", "routing_number"),
    }
    assert fake.requests == []


async def test_verification_timeout_is_reconciled(
    adapter: PaygenticAdapter, fake: FakePaygentic
) -> None:
    fake.faults.append(
        Fault("POST", "/v0/externalAccounts", apply=True, exception=httpx.ReadTimeout)
    )
    outcome = await adapter.complete_payout_verification(
        make_context(), verification_request(), idempotency_key="verify-2"
    )
    assert outcome.payout_account.provider_account_id == fake.accounts[0]["id"]
    assert len(fake.calls("POST")) == 1


# --- payouts --------------------------------------------------------------------------------


async def test_request_payout_sends_the_documented_body(
    adapter: PaygenticAdapter, fake: FakePaygentic
) -> None:
    payout = await adapter.request_payout(
        make_context(),
        payout_request(),
        destination_provider_account_id="eba_dest",
        idempotency_key="pay-1",
    )
    (request,) = fake.requests
    assert (request.method, request.url.path) == ("POST", "/v0/payouts")
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert json.loads(request.content) == {
        "organizationId": ORG,
        "amountInCents": 1500,
        "currency": "USD",
        "method": "bank_transfer",
        "sourceId": "src_main",
        "destinationId": "eba_dest",
        "description": "May",
        "metadata": {"gatewayReference": "pay-1"},
    }
    assert payout.status is PayoutStatus.PENDING
    assert payout.amount == Money(amount_minor=1500, currency="USD")
    assert payout.destination_provider_account_id == "eba_dest"


async def test_payout_needs_source_and_destination(
    adapter: PaygenticAdapter, fake: FakePaygentic
) -> None:
    with pytest.raises(NotPermittedError, match="payout source"):
        await adapter.request_payout(
            make_context(source_id=None), payout_request(), destination_provider_account_id="d"
        )
    with pytest.raises(InputValidationError) as caught:
        await adapter.request_payout(make_context(), payout_request())
    assert caught.value.path == ("destination",)
    assert fake.requests == []


async def test_payout_timeout_is_reconciled_from_the_payout_list(
    adapter: PaygenticAdapter, fake: FakePaygentic
) -> None:
    fake.faults.append(Fault("POST", "/v0/payouts", apply=True, exception=httpx.ReadTimeout))
    payout = await adapter.request_payout(
        make_context(),
        payout_request(),
        destination_provider_account_id="eba_d",
        idempotency_key="p",
    )
    assert payout.provider_payout_id == fake.payouts[0]["id"]
    assert len(fake.calls("POST")) == 1
    (listing,) = fake.calls("GET", "/v0/payouts")
    assert listing.url.params["organizationId"] == ORG


async def test_payout_500_not_applied_is_reported_as_not_applied(
    adapter: PaygenticAdapter, fake: FakePaygentic
) -> None:
    fake.faults.append(Fault("POST", "/v0/payouts", status=500))
    with pytest.raises(ProviderUnavailableError) as caught:
        await adapter.request_payout(
            make_context(),
            payout_request(),
            destination_provider_account_id="d",
            idempotency_key="p",
        )
    assert caught.value.outcome_unknown is False
    assert len(fake.calls("POST")) == 1
    assert await adapter.find_payout_by_reference(make_context(), "p") is None


# --- PII ------------------------------------------------------------------------------------


async def test_numbers_never_reach_logs_errors_or_reprs(
    adapter: PaygenticAdapter, fake: FakePaygentic, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    context = make_context()
    results: list[object] = [
        await adapter.add_bank_account(context, add_request(), idempotency_key="a"),
        await adapter.complete_payout_verification(context, verification_request()),
    ]
    fake.faults.append(
        Fault("POST", "/v0/externalAccounts", apply=True, exception=httpx.ReadTimeout)
    )
    results.append(await adapter.add_bank_account(context, add_request(), idempotency_key="b"))
    echo = json.dumps(
        {"message": f"bad {ACCOUNT_NUMBER} / {ROUTING_NUMBER}", "error": "validation_error",
         "errors": [{"field": "accountNumber", "message": f"{ACCOUNT_NUMBER} invalid"}]}
    ).encode()  # fmt: skip
    fake.faults.append(Fault("POST", "/v0/externalAccounts", status=400, body=echo))
    with pytest.raises(ProviderRejectedError) as caught:
        await adapter.add_bank_account(context, add_request())
    results.append(caught.value)
    assert caught.value.param == "accountNumber"

    texts = [caplog.text, *(repr(r) for r in results), *(str(r) for r in results)]
    texts += [repr(record.__dict__) for record in caplog.records]
    for text in texts:
        assert ACCOUNT_NUMBER not in text
        assert ROUTING_NUMBER not in text
        assert API_KEY not in text


async def test_aclose_closes_the_shared_client(fake: FakePaygentic) -> None:
    closed: list[bool] = []

    class Transport(httpx.MockTransport):
        async def aclose(self) -> None:
            closed.append(True)

    adapter = PaygenticAdapter(base_url=LIVE_URL, transport=Transport(fake.handler))
    await adapter.list_bank_accounts(make_context())
    await adapter.list_bank_accounts(make_context(organization_id="org_other"))
    await adapter.aclose()
    assert closed == [True]
