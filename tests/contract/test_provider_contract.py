"""One contract suite for every PayoutProvider adapter, run against its sandbox over real sockets.

Each test runs once per provider and asserts the same behaviour through the port: domain objects
and domain errors only. A test departs from that only where the adapter's capabilities (or a
harness field standing for a documented provider rule) say the providers differ.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any, Literal

import httpx
import pytest
from pydantic import SecretStr

from payout_gateway.domain.enums import (
    AccountType,
    BankAccountStatus,
    HolderType,
    PayoutAccountStatus,
    PayoutStatus,
)
from payout_gateway.domain.errors import (
    InputValidationError,
    NotFoundError,
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
    PayoutAccount,
    PayoutRequest,
    PayoutVerificationOutcome,
    PayoutVerificationRequest,
    ProviderContext,
    ProviderCredentials,
)
from payout_gateway.ports import PayoutProvider
from payout_gateway.providers.commet.adapter import CommetAdapter
from payout_gateway.providers.paygentic.adapter import PaygenticAdapter
from payout_gateway.providers.transport import HttpPolicy
from payout_gateway.sandbox.commet import create_commet_sandbox
from payout_gateway.sandbox.paygentic import create_paygentic_sandbox
from tests.support.live_server import live_server

PROVIDERS = ["commet", "paygentic"]

ACCOUNT_NUMBER = "000123456789"
ROUTING_NUMBER = "021000021"
HOLDER_NAME = "Ada Lovelace"

# Tight enough to keep the suite fast, loose enough for a loaded loopback.
READ_TIMEOUT = 0.5
POLICY = HttpPolicy(
    connect_timeout=2.0,
    read_timeout=READ_TIMEOUT,
    write_timeout=2.0,
    pool_timeout=2.0,
    total_deadline=5.0,
    max_retries=2,
    backoff_base=0.01,
    backoff_cap=0.05,
    retry_after_cap=1.0,
)
SLOWER_THAN_READ_TIMEOUT_MS = int(READ_TIMEOUT * 1000) + 700

# Operations as the port names them; each harness maps them to its sandbox's counter keys.
Operation = Literal["add_bank_account", "complete_payout_verification", "request_payout"]
FaultKind = Literal["status", "latency", "malformed", "unknown_status"]
CredentialProblem = Literal["malformed", "restricted"]


class Sleeps:
    """The adapters' back-off sleeper: records the delays and waits for none of them."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


@dataclass(frozen=True, slots=True)
class Refusal:
    """What a provider answers when it refuses something: the code and HTTP status it sends."""

    provider_code: str
    http_status: int


@dataclass
class ProviderHarness:
    """One provider's adapter, wired to its live sandbox, plus the sandbox's control routes.

    Subclasses hold what differs per provider: how an organization is made, the sandbox's
    counter keys and fault vocabulary, and the provider's documented tables (design.md).
    """

    adapter: PayoutProvider
    control: httpx.AsyncClient
    sleeps: Sleeps
    # design.md "Canonical statuses": the provider's raw values and what each must become.
    bank_account_statuses: Mapping[str, BankAccountStatus]
    payout_account_statuses: Mapping[str, PayoutAccountStatus]
    # The provider refuses bank accounts until payout verification created its payout account.
    requires_verification_before_accounts: bool
    # Smallest payout the provider documents (minor units), checked before any call.
    minimum_payout: int | None
    sends_request_id: bool
    # What the provider answers for a payout to a destination it has not verified.
    unverified_payout_refusal: Refusal
    # Credentials that must fail authentication, and the refusal each one gets.
    bad_credentials: Mapping[CredentialProblem, tuple[str, Refusal]]
    counter_keys: Mapping[Operation, str] = field(default_factory=dict)
    # Another adapter on the same sandbox and sleeper, under another HTTP policy.
    with_policy: Callable[[HttpPolicy], PayoutProvider] | None = None

    def new_context(self, api_key: str | None = None) -> ProviderContext:
        """A fresh organization at the provider (``api_key`` replaces its credential)."""
        raise NotImplementedError

    async def verify(self, context: ProviderContext, outcome: PayoutVerificationOutcome) -> None:
        """Make the provider verify what ``outcome`` submitted (sandbox control route)."""
        raise NotImplementedError

    async def fund(self, context: ProviderContext, amount_minor: int) -> None:
        """Give the organization a balance it can pay out, where the provider keeps one."""

    async def inject_fault(
        self,
        context: ProviderContext,
        operation: Operation,
        kind: FaultKind,
        *,
        status: int | None = None,
        applied: bool = False,
        latency_ms: int | None = None,
        unknown_status: str | None = None,
        retry_after_seconds: int | None = None,
        count: int | None = None,
    ) -> None:
        raise NotImplementedError

    async def accounts_at_sandbox(self, context: ProviderContext) -> list[str]:
        """Ids of every bank account the sandbox holds for the organization."""
        raise NotImplementedError

    async def read_payout_account(
        self, context: ProviderContext, provider_account_id: str
    ) -> PayoutAccount:
        raise NotImplementedError

    async def request_counts(self) -> dict[str, int]:
        raise NotImplementedError

    async def reset(self) -> None:
        """Forget counters and faults left by an earlier test (organizations are per test)."""
        raise NotImplementedError

    async def count(self, operation: Operation) -> int:
        return (await self.request_counts()).get(self.counter_keys[operation], 0)

    async def total_requests(self) -> int:
        return sum((await self.request_counts()).values())


def _random(length: int = 16) -> str:
    # Letters only: a long digit run in an id would look like an account number in the logs.
    return "".join(secrets.choice(string.ascii_letters) for _ in range(length))


PROFILE = OrganizationProfile(
    country="US", currency="USD", bank_name="Contract Test Bank", holder_type=HolderType.INDIVIDUAL
)


@dataclass
class CommetHarness(ProviderHarness):
    def new_context(self, api_key: str | None = None) -> ProviderContext:
        # Each distinct key is its own organization at the sandbox (app.py choice 1).
        key = api_key or f"ck_live_{_random()}"
        return ProviderContext(
            organization_id=f"gw_{_random()}",
            credentials=ProviderCredentials(api_key=SecretStr(key)),
            profile=PROFILE,
        )

    def _headers(self, context: ProviderContext) -> dict[str, str]:
        return {"x-api-key": context.credentials.api_key.get_secret_value()}

    async def _control(
        self, method: str, path: str, context: ProviderContext | None, body: Any = None
    ) -> Any:
        headers = self._headers(context) if context is not None else None
        response = await self.control.request(method, path, json=body, headers=headers)
        assert response.is_success, response.text
        return response.json()["data"]

    async def verify(self, context: ProviderContext, outcome: PayoutVerificationOutcome) -> None:
        await self._control(
            "POST", "/_sandbox/payout-account/status", context, {"status": "verified"}
        )

    async def fund(self, context: ProviderContext, amount_minor: int) -> None:
        await self._control("POST", "/_sandbox/balance", context, {"availableAmount": amount_minor})

    async def inject_fault(
        self,
        context: ProviderContext,
        operation: Operation,
        kind: FaultKind,
        *,
        status: int | None = None,
        applied: bool = False,
        latency_ms: int | None = None,
        unknown_status: str | None = None,
        retry_after_seconds: int | None = None,
        count: int | None = None,
    ) -> None:
        body: dict[str, Any] = {"operation": self.counter_keys[operation], "kind": kind}
        if status is not None:
            body["status"] = status
        if kind == "status":
            body["applied"] = applied
        if latency_ms is not None:
            body["latencyMs"] = latency_ms
        if unknown_status is not None:
            body["unknownStatus"] = unknown_status
        if retry_after_seconds is not None:
            body["retryAfterSeconds"] = retry_after_seconds
        if count is not None:
            body["count"] = count
        await self._control("POST", "/_sandbox/faults", context, body)

    async def accounts_at_sandbox(self, context: ProviderContext) -> list[str]:
        organization = await self._control("GET", "/_sandbox/organization", context)
        return [account["id"] for account in organization["bankAccounts"]]

    async def request_counts(self) -> dict[str, int]:
        counts: dict[str, int] = (await self._control("GET", "/_sandbox/requests", None))["counts"]
        return counts

    async def reset(self) -> None:
        await self._control("DELETE", "/_sandbox/requests", None)


@dataclass
class PaygenticHarness(ProviderHarness):
    paygentic: PaygenticAdapter | None = None

    def new_context(self, api_key: str | None = None) -> ProviderContext:
        return ProviderContext(
            organization_id=f"gw_{_random()}",
            credentials=ProviderCredentials(
                api_key=SecretStr(api_key or f"sk_test_{_random()}"),
                provider_organization_id=f"org_{_random()}",
                payout_source_id=f"src_{_random()}",
            ),
            profile=PROFILE,
        )

    async def _control(self, method: str, path: str, body: Any = None) -> Any:
        response = await self.control.request(method, path, json=body)
        assert response.is_success, response.text
        return response.json() if response.content else None

    async def verify(self, context: ProviderContext, outcome: PayoutVerificationOutcome) -> None:
        # The verification destination's status stands for the payout account (design.md).
        account_id = outcome.payout_account.provider_account_id
        await self._control(
            "POST", f"/_sandbox/externalAccounts/{account_id}/status", {"status": "verified"}
        )

    async def inject_fault(
        self,
        context: ProviderContext,
        operation: Operation,
        kind: FaultKind,
        *,
        status: int | None = None,
        applied: bool = False,
        latency_ms: int | None = None,
        unknown_status: str | None = None,
        retry_after_seconds: int | None = None,
        count: int | None = None,
    ) -> None:
        # The sandbox's "status" fault never runs the request; "apply_then_fail" runs it first.
        wire_kind = "apply_then_fail" if kind == "status" and applied else kind
        body: dict[str, Any] = {"operation": self.counter_keys[operation], "kind": wire_kind}
        if status is not None:
            body["status"] = status
        if latency_ms is not None:
            body["latencyMs"] = latency_ms
        if unknown_status is not None:
            body["unknownStatus"] = unknown_status
        if retry_after_seconds is not None:
            body["retryAfterSeconds"] = retry_after_seconds
        if count is not None:
            body["count"] = count
        await self._control("POST", "/_sandbox/faults", body)

    async def accounts_at_sandbox(self, context: ProviderContext) -> list[str]:
        # Paygentic's own list endpoint (the sandbox has no control route for it): read the
        # request counters before calling this.
        response = await self.control.get(
            "/v0/externalAccounts",
            params={"organizationId": context.credentials.provider_organization_id, "limit": 100},
            headers={"authorization": f"Bearer {context.credentials.api_key.get_secret_value()}"},
        )
        assert response.status_code == 200, response.text
        return [account["id"] for account in response.json()["data"]]

    async def read_payout_account(
        self, context: ProviderContext, provider_account_id: str
    ) -> PayoutAccount:
        assert self.paygentic is not None
        return await self.paygentic.get_payout_account(context, provider_account_id)

    async def request_counts(self) -> dict[str, int]:
        counts: dict[str, int] = (await self._control("GET", "/_sandbox/requests"))["counts"]
        return counts

    async def reset(self) -> None:
        await self._control("DELETE", "/_sandbox/requests")
        await self._control("DELETE", "/_sandbox/faults")


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def commet_sandbox_url() -> Iterator[str]:
    with live_server(create_commet_sandbox()) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def paygentic_sandbox_url() -> Iterator[str]:
    with live_server(create_paygentic_sandbox()) as base_url:
        yield base_url


def _commet_harness(base_url: str, control: httpx.AsyncClient, sleeps: Sleeps) -> CommetHarness:
    return CommetHarness(
        adapter=CommetAdapter(base_url=f"{base_url}/api/v1", policy=POLICY, sleep=sleeps),
        control=control,
        sleeps=sleeps,
        bank_account_statuses={"active": BankAccountStatus.ACTIVE},
        payout_account_statuses={
            "pending_verification": PayoutAccountStatus.PENDING_VERIFICATION,
            "verified": PayoutAccountStatus.VERIFIED,
        },
        requires_verification_before_accounts=True,
        minimum_payout=1000,
        sends_request_id=True,
        unverified_payout_refusal=Refusal("payout_account_not_verified", 409),
        bad_credentials={
            "malformed": ("bad!key", Refusal("unauthorized", 401)),
            # Payouts are live-only: a sandbox key is the wrong credential (commet.md).
            "restricted": (
                f"ck_sandbox_{_random()}",
                Refusal("payouts_not_available_in_sandbox", 403),
            ),
        },
        counter_keys={
            "add_bank_account": "POST /payouts/bank-accounts",
            "complete_payout_verification": "POST /payouts/verification",
            "request_payout": "POST /payouts",
        },
        with_policy=lambda policy: CommetAdapter(
            base_url=f"{base_url}/api/v1", policy=policy, sleep=sleeps
        ),
    )


def _paygentic_harness(
    base_url: str, control: httpx.AsyncClient, sleeps: Sleeps
) -> PaygenticHarness:
    adapter = PaygenticAdapter(base_url=base_url, policy=POLICY, sleep=sleeps)
    return PaygenticHarness(
        adapter=adapter,
        paygentic=adapter,
        control=control,
        sleeps=sleeps,
        bank_account_statuses={
            "new": BankAccountStatus.PENDING,
            "verified": BankAccountStatus.ACTIVE,
        },
        payout_account_statuses={
            "new": PayoutAccountStatus.PENDING_VERIFICATION,
            "verified": PayoutAccountStatus.VERIFIED,
        },
        requires_verification_before_accounts=False,
        minimum_payout=None,
        sends_request_id=False,
        unverified_payout_refusal=Refusal("DESTINATION_NOT_VERIFIED", 422),
        bad_credentials={
            "malformed": ("bad!key", Refusal("unauthorized", 401)),
            "restricted": (f"sk_readonly_{_random()}", Refusal("forbidden", 403)),
        },
        counter_keys={
            "add_bank_account": "POST /v0/externalAccounts",
            "complete_payout_verification": "POST /v0/externalAccounts",
            "request_payout": "POST /v0/payouts",
        },
        with_policy=lambda policy: PaygenticAdapter(base_url=base_url, policy=policy, sleep=sleeps),
    )


@pytest.fixture(params=PROVIDERS)
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[ProviderHarness]:
    name: str = request.param
    base_url: str = request.getfixturevalue(f"{name}_sandbox_url")
    sleeps = Sleeps()
    async with httpx.AsyncClient(base_url=base_url, timeout=5.0) as control:
        built = (_commet_harness if name == "commet" else _paygentic_harness)(
            base_url, control, sleeps
        )
        await built.reset()
        try:
            yield built
        finally:
            await built.adapter.aclose()
            await built.reset()


# --- requests ------------------------------------------------------------------------------


def add_request(*, set_default: bool = True) -> AddBankAccountRequest:
    return AddBankAccountRequest.model_validate(
        {
            "bank": {
                "account_number": ACCOUNT_NUMBER,
                "routing_number": ROUTING_NUMBER,
                "holder_name": HOLDER_NAME,
                "account_type": "SAVINGS",
            },
            "set_default": set_default,
            "metadata": {"ref": "contract"},
        }
    )


def add_request_with(**bank: Any) -> AddBankAccountRequest:
    """``add_request()`` with these bank fields in place of its own (not validated again)."""
    request = add_request()
    return request.model_copy(update={"bank": request.bank.model_copy(update=bank)})


def verification_request() -> PayoutVerificationRequest:
    return PayoutVerificationRequest.model_validate(
        {
            "email": "ada@example.com",
            "business_type": "INDIVIDUAL",
            "business_url": "https://example.com",
            "document_url": "https://example.com/id.png",
            "bank": {
                "account_number": "000987654321",
                "routing_number": ROUTING_NUMBER,
                "holder_name": HOLDER_NAME,
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


def payout_request(amount_minor: int = 1500) -> PayoutRequest:
    return PayoutRequest(amount=Money(amount_minor=amount_minor, currency="USD"))


def key() -> str:
    return f"contract-{_random()}"


async def verified_organization(
    harness: ProviderHarness, *, verify: bool = False
) -> tuple[ProviderContext, PayoutVerificationOutcome]:
    """A fresh organization that completed payout verification (and is verified if asked)."""
    context = harness.new_context()
    outcome = await harness.adapter.complete_payout_verification(
        context, verification_request(), idempotency_key=key()
    )
    if verify:
        await harness.verify(context, outcome)
    return context, outcome


def payout_destination(harness: ProviderHarness, outcome: PayoutVerificationOutcome) -> str | None:
    # A provider with default accounts pays the default one and takes no destination.
    if harness.adapter.capabilities.has_default_accounts:
        return None
    assert outcome.bank_account is not None
    return outcome.bank_account.provider_account_id


# --- 1. create -----------------------------------------------------------------------------


async def test_add_bank_account_reports_last4_only_and_a_status_from_the_providers_table(
    harness: ProviderHarness,
) -> None:
    context, _ = await verified_organization(harness)
    request = add_request(set_default=True)
    capabilities = harness.adapter.capabilities

    account = await harness.adapter.add_bank_account(context, request, idempotency_key=key())

    assert account.provider is harness.adapter.provider
    assert account.provider_account_id
    assert account.last4 == ACCOUNT_NUMBER[-4:]
    assert account.holder_name == HOLDER_NAME
    assert account.holder_type is HolderType.INDIVIDUAL
    assert (account.country, account.currency) == ("US", "USD")
    assert account.account_type == (AccountType.SAVINGS if capabilities.has_account_types else None)
    assert account.is_default is capabilities.has_default_accounts
    assert account.metadata == {"ref": "contract"}
    assert account.created_at.tzinfo is not None
    assert account.status in (BankAccountStatus.ACTIVE, BankAccountStatus.PENDING)
    assert harness.bank_account_statuses[account.provider_status] is account.status
    for shown in (repr(account), account.model_dump_json(), str(account.model_dump())):
        assert ACCOUNT_NUMBER not in shown
        assert ROUTING_NUMBER not in shown


async def test_a_bank_account_opens_in_the_country_and_currency_asked_for_or_not_at_all(
    harness: ProviderHarness,
) -> None:
    context, _ = await verified_organization(harness)
    await harness.reset()
    elsewhere = add_request_with(country="CA", currency="CAD")

    if harness.adapter.capabilities.account_country_from_input:
        account = await harness.adapter.add_bank_account(context, elsewhere, idempotency_key=key())
        assert (account.country, account.currency) == ("CA", "CAD")
    else:
        with pytest.raises(InputValidationError) as refused:
            await harness.adapter.add_bank_account(context, elsewhere, idempotency_key=key())
        assert [issue.path for issue in refused.value.issues] == [
            ("bank", "country"),
            ("bank", "currency"),
        ]
        assert await harness.total_requests() == 0


async def test_an_iban_of_another_country_than_the_accounts_is_refused_before_any_call(
    harness: ProviderHarness,
) -> None:
    context, _ = await verified_organization(harness)
    await harness.reset()
    assert context.profile.country == "US"
    german = add_request_with(account_number=SecretStr("DE89370400440532013000"))

    with pytest.raises(InputValidationError) as refused:
        await harness.adapter.add_bank_account(context, german, idempotency_key=key())

    assert refused.value.path == ("bank", "account_number")
    assert await harness.total_requests() == 0


# --- 2. verify -----------------------------------------------------------------------------


async def test_payout_verification_starts_pending_and_reads_verified_once_the_provider_verifies(
    harness: ProviderHarness,
) -> None:
    capabilities = harness.adapter.capabilities
    context = harness.new_context()
    request = verification_request()

    outcome = await harness.adapter.complete_payout_verification(
        context, request, idempotency_key=key()
    )

    assert outcome.already_existed is False
    payout_account = outcome.payout_account
    assert payout_account.provider is harness.adapter.provider
    assert payout_account.status is PayoutAccountStatus.PENDING_VERIFICATION
    assert harness.payout_account_statuses[payout_account.provider_status] is payout_account.status
    assert payout_account.transfers_enabled is False
    bank = outcome.bank_account
    if bank is not None:
        assert bank.last4 == request.bank.last4
        assert bank.is_default is capabilities.has_default_accounts
        assert request.bank.account_number.get_secret_value() not in bank.model_dump_json()

    await harness.verify(context, outcome)

    if capabilities.takes_kyc:
        # The provider's verification is idempotent per organization: asking again reads it.
        again = await harness.adapter.complete_payout_verification(
            context, request, idempotency_key=key()
        )
        assert again.already_existed is True
        assert again.bank_account is None
        verified = again.payout_account
    else:
        assert capabilities.can_read_bank_accounts
        assert bank is not None and bank.provider_account_id is not None
        reread = await harness.adapter.get_bank_account(context, bank.provider_account_id)
        assert reread.status is BankAccountStatus.ACTIVE
        assert harness.bank_account_statuses[reread.provider_status] is BankAccountStatus.ACTIVE
        verified = await harness.read_payout_account(context, payout_account.provider_account_id)
    assert verified.provider_account_id == payout_account.provider_account_id
    assert verified.status is PayoutAccountStatus.VERIFIED
    assert harness.payout_account_statuses[verified.provider_status] is verified.status
    assert verified.transfers_enabled is True


# --- 3. not found --------------------------------------------------------------------------


async def test_reading_an_unknown_bank_account_is_not_found_or_unsupported_without_a_call(
    harness: ProviderHarness,
) -> None:
    context, _ = await verified_organization(harness)
    await harness.reset()

    if harness.adapter.capabilities.can_read_bank_accounts:
        with pytest.raises(NotFoundError):
            await harness.adapter.get_bank_account(context, "eba_NoSuchAccountAtAll")
        assert await harness.total_requests() == 1
    else:
        with pytest.raises(UnsupportedOperationError):
            await harness.adapter.get_bank_account(context, "pba_NoSuchAccountAtAll")
        assert await harness.total_requests() == 0


async def test_adding_a_bank_account_before_payout_verification_needs_it_where_required(
    harness: ProviderHarness,
) -> None:
    context = harness.new_context()

    if harness.requires_verification_before_accounts:
        with pytest.raises(PayoutAccountRequiredError):
            await harness.adapter.add_bank_account(context, add_request(), idempotency_key=key())
    else:
        account = await harness.adapter.add_bank_account(
            context, add_request(), idempotency_key=key()
        )
        assert account.last4 == ACCOUNT_NUMBER[-4:]
    assert await harness.count("add_bank_account") == 1


# --- 4. provider rejection -----------------------------------------------------------------


async def test_a_payout_to_an_unverified_destination_is_a_provider_rejection(
    harness: ProviderHarness,
) -> None:
    context, outcome = await verified_organization(harness)
    await harness.fund(context, 10_000)
    await harness.reset()

    with pytest.raises(ProviderRejectedError) as caught:
        await harness.adapter.request_payout(
            context,
            payout_request(),
            destination_provider_account_id=payout_destination(harness, outcome),
            idempotency_key=key(),
        )

    error = caught.value
    assert not isinstance(error, ProviderAuthenticationError)
    assert error.provider is harness.adapter.provider
    assert error.provider_code == harness.unverified_payout_refusal.provider_code
    assert error.http_status == harness.unverified_payout_refusal.http_status
    assert (error.request_id is not None) is harness.sends_request_id
    assert error.retryable is False
    assert await harness.count("request_payout") == 1


# --- 5. auth failure -----------------------------------------------------------------------


@pytest.mark.parametrize("problem", ["malformed", "restricted"])
async def test_a_refused_credential_is_an_authentication_error_and_not_retried(
    harness: ProviderHarness, problem: CredentialProblem
) -> None:
    api_key, refusal = harness.bad_credentials[problem]
    context = harness.new_context(api_key=api_key)

    with pytest.raises(ProviderAuthenticationError) as caught:
        await harness.adapter.complete_payout_verification(
            context, verification_request(), idempotency_key=key()
        )

    assert caught.value.http_status == refusal.http_status
    assert caught.value.provider_code == refusal.provider_code
    assert caught.value.retryable is False
    assert api_key not in str(caught.value)
    assert await harness.total_requests() == 1
    assert harness.sleeps.delays == []


# --- 6. unknown status ---------------------------------------------------------------------


async def test_an_unmapped_bank_account_status_is_unknown_and_never_usable(
    harness: ProviderHarness,
) -> None:
    context, _ = await verified_organization(harness)
    await harness.inject_fault(
        context, "add_bank_account", "unknown_status", unknown_status="under_review"
    )

    account = await harness.adapter.add_bank_account(context, add_request(), idempotency_key=key())

    assert account.status is BankAccountStatus.UNKNOWN
    assert not account.status.usable
    assert account.provider_status == "under_review"


async def test_an_unmapped_payout_account_status_is_unknown_and_never_usable(
    harness: ProviderHarness,
) -> None:
    context = harness.new_context()
    await harness.inject_fault(
        context, "complete_payout_verification", "unknown_status", unknown_status="under_review"
    )

    outcome = await harness.adapter.complete_payout_verification(
        context, verification_request(), idempotency_key=key()
    )

    assert outcome.payout_account.status is PayoutAccountStatus.UNKNOWN
    assert not outcome.payout_account.status.usable
    assert outcome.payout_account.transfers_enabled is False
    assert outcome.payout_account.provider_status == "under_review"


# --- 7. transport faults -------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 503])
async def test_a_5xx_after_the_create_applied_ends_with_exactly_one_account_returned(
    harness: ProviderHarness, status: int
) -> None:
    context, _ = await verified_organization(harness)
    before = await harness.accounts_at_sandbox(context)
    await harness.reset()
    await harness.inject_fault(context, "add_bank_account", "status", status=status, applied=True)

    account = await harness.adapter.add_bank_account(context, add_request(), idempotency_key=key())

    # With idempotency the adapter resends under the same key and gets the stored answer;
    # without it, it must not POST again but find what the first POST created.
    posts = await harness.count("add_bank_account")
    assert posts == (2 if harness.adapter.capabilities.has_idempotency else 1)
    created = [a for a in await harness.accounts_at_sandbox(context) if a not in before]
    assert created == [account.provider_account_id]


async def test_a_5xx_before_the_create_applied_is_resent_only_where_the_provider_dedupes(
    harness: ProviderHarness,
) -> None:
    context, _ = await verified_organization(harness)
    before = await harness.accounts_at_sandbox(context)
    await harness.reset()
    await harness.inject_fault(context, "add_bank_account", "status", status=503)

    if harness.adapter.capabilities.has_idempotency:
        account = await harness.adapter.add_bank_account(
            context, add_request(), idempotency_key=key()
        )
        assert await harness.count("add_bank_account") == 2
        expected = [account.provider_account_id]
    else:
        with pytest.raises(ProviderUnavailableError) as caught:
            await harness.adapter.add_bank_account(context, add_request(), idempotency_key=key())
        # Reconciled by the key: nothing was created, so the outcome is known.
        assert caught.value.outcome_unknown is False
        assert caught.value.http_status == 503
        assert await harness.count("add_bank_account") == 1
        expected = []
    created = [a for a in await harness.accounts_at_sandbox(context) if a not in before]
    assert created == expected


async def test_a_5xx_on_a_create_without_a_key_is_retried_only_where_the_provider_dedupes(
    harness: ProviderHarness,
) -> None:
    context, _ = await verified_organization(harness)
    before = await harness.accounts_at_sandbox(context)
    await harness.reset()
    await harness.inject_fault(context, "add_bank_account", "status", status=500, applied=True)

    if harness.adapter.capabilities.has_idempotency:
        # The adapter's own key, reused by its retry, still applies the create once.
        account = await harness.adapter.add_bank_account(context, add_request())
        assert await harness.count("add_bank_account") == 2
        expected_id = account.provider_account_id
    else:
        with pytest.raises(ProviderUnavailableError) as caught:
            await harness.adapter.add_bank_account(context, add_request())
        assert caught.value.outcome_unknown is True
        assert caught.value.http_status == 500
        assert await harness.count("add_bank_account") == 1
        expected_id = None
    created = [a for a in await harness.accounts_at_sandbox(context) if a not in before]
    assert len(created) == 1
    if expected_id is not None:
        assert created == [expected_id]


async def test_a_malformed_html_answer_is_a_bad_response_and_not_retried(
    harness: ProviderHarness,
) -> None:
    context, _ = await verified_organization(harness)
    await harness.reset()
    await harness.inject_fault(context, "add_bank_account", "malformed")

    with pytest.raises(ProviderBadResponseError) as caught:
        await harness.adapter.add_bank_account(context, add_request())

    assert caught.value.http_status == 200
    # A 200 that cannot be read may have applied the write.
    assert caught.value.outcome_unknown is True
    assert await harness.count("add_bank_account") == 1


async def test_an_answer_slower_than_the_read_timeout_is_a_timeout_with_unknown_outcome(
    harness: ProviderHarness,
) -> None:
    context, _ = await verified_organization(harness)
    await harness.inject_fault(
        context, "add_bank_account", "latency", latency_ms=SLOWER_THAN_READ_TIMEOUT_MS
    )

    with pytest.raises(ProviderTimeoutError) as caught:
        await harness.adapter.add_bank_account(context, add_request())

    assert caught.value.outcome_unknown is True
    assert caught.value.retryable is True


async def test_a_rate_limit_asking_for_longer_than_the_deadline_leaves_is_answered_at_once(
    harness: ProviderHarness,
) -> None:
    # Both providers send Retry-After with a 429 (commet.md "Transport"; Paygentic's sandbox
    # likewise). A wait the gateway accepts (within its cap) but that ends past its deadline
    # would end in a timeout with the outcome unknown, for a request the provider refused
    # before doing anything: the caller gets the rate limit and the provider's delay at once.
    assert harness.with_policy is not None
    adapter = harness.with_policy(replace(POLICY, total_deadline=2.0, retry_after_cap=30.0))
    context = harness.new_context()
    await harness.inject_fault(
        context,
        "complete_payout_verification",
        "status",
        status=429,
        retry_after_seconds=3,
        count=3,
    )
    try:
        with pytest.raises(ProviderRateLimitedError) as caught:
            await adapter.complete_payout_verification(
                context, verification_request(), idempotency_key=key()
            )
    finally:
        await adapter.aclose()

    assert caught.value.retry_after == 3
    assert caught.value.outcome_unknown is False
    assert harness.sleeps.delays == []
    assert await harness.count("complete_payout_verification") == 1


# --- 8. request_payout ---------------------------------------------------------------------


async def test_a_payout_from_a_verified_funded_account_is_pending_in_minor_units(
    harness: ProviderHarness,
) -> None:
    context, outcome = await verified_organization(harness, verify=True)
    await harness.fund(context, 10_000)
    destination = payout_destination(harness, outcome)

    payout = await harness.adapter.request_payout(
        context,
        payout_request(1500),
        destination_provider_account_id=destination,
        idempotency_key=key(),
    )

    assert payout.provider is harness.adapter.provider
    assert payout.provider_payout_id
    assert payout.status is PayoutStatus.PENDING
    assert payout.amount == Money(amount_minor=1500, currency="USD")
    assert payout.destination_provider_account_id == destination
    if payout.fee is not None and payout.net_amount is not None:
        assert payout.fee.currency == payout.net_amount.currency == "USD"
        assert payout.fee.amount_minor + payout.net_amount.amount_minor == 1500
    assert payout.created_at.tzinfo is not None


async def test_a_payout_below_the_provider_minimum_is_refused_without_a_call(
    harness: ProviderHarness,
) -> None:
    if harness.minimum_payout is None:
        pytest.skip("the provider documents no minimum payout")
    context, outcome = await verified_organization(harness, verify=True)
    await harness.fund(context, 10_000)
    await harness.reset()

    with pytest.raises(InputValidationError) as caught:
        await harness.adapter.request_payout(
            context,
            payout_request(harness.minimum_payout - 1),
            destination_provider_account_id=payout_destination(harness, outcome),
        )

    assert caught.value.path == ("amount",)
    assert await harness.total_requests() == 0
