"""The Commet adapter: Commet's only I/O (auth, version, idempotency keys) around transformers."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import partial
from types import TracebackType
from typing import Self

import httpx

from payout_gateway.domain.enums import (
    BankAccountStatus,
    BusinessType,
    PayoutAccountStatus,
    PayoutStatus,
    Provider,
)
from payout_gateway.domain.errors import (
    IdempotencyInProgressError,
    ProviderAuthenticationError,
    ProviderTimeoutError,
    UnsupportedOperationError,
)
from payout_gateway.domain.models import (
    AddBankAccountRequest,
    PayoutAccount,
    PayoutRequest,
    PayoutVerificationOutcome,
    PayoutVerificationRequest,
    ProviderBankAccount,
    ProviderBankAccountPage,
    ProviderCapabilities,
    ProviderContext,
    ProviderPayout,
)
from payout_gateway.ports import PayoutProvider
from payout_gateway.providers.commet import transformers, wire
from payout_gateway.providers.transport import (
    HttpPolicy,
    ProviderHttp,
    RawResponse,
    parse_retry_after,
    with_earlier_attempts,
)

logger = logging.getLogger("payout_gateway.providers.commet")

# The last version with payout verification over the API (commet.md "API versions").
DEFAULT_API_VERSION = "2026-07-11"

CAPABILITIES = ProviderCapabilities(
    takes_kyc=True,
    has_default_accounts=True,
    has_account_types=True,
    # Commet has no list or get endpoint for payout bank accounts (commet.md "Endpoints").
    can_read_bank_accounts=False,
    has_idempotency=True,
    # Commet opens a bank account in its organization's country and currency (commet.md).
    account_country_from_input=False,
    required_bank_fields=("account_number", "holder_name"),
)

_API_VERSION = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
# Header values must be visible ASCII: httpx raises a bare UnicodeEncodeError otherwise.
_HEADER_TOKEN = re.compile(r"[\x21-\x7e]{1,255}")


class CommetAdapter:
    """Speaks Commet's payout API for every organization through one shared HTTP client; the
    organization's API key travels per call."""

    def __init__(
        self,
        *,
        base_url: str,
        policy: HttpPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        api_version: str = DEFAULT_API_VERSION,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if _API_VERSION.fullmatch(api_version) is None:
            raise ValueError("api_version must be a Commet version date, YYYY-MM-DD")
        policy = policy or HttpPolicy()
        self.api_version = api_version
        self._http = ProviderHttp(
            Provider.COMMET,
            base_url,
            policy,
            transport=transport,
            headers={"commet-version": api_version, "accept": "application/json"},
            sleep=sleep,
        )

    @property
    def provider(self) -> Provider:
        return Provider.COMMET

    @property
    def capabilities(self) -> ProviderCapabilities:
        return CAPABILITIES

    async def add_bank_account(
        self,
        context: ProviderContext,
        request: AddBankAccountRequest,
        *,
        idempotency_key: str | None = None,
    ) -> ProviderBankAccount:
        transformers.refuse_another_place(request.bank, context.profile, country_from_kyc=False)
        body = transformers.add_bank_account_body(request)
        raw = await self._post(
            context, "/payouts/bank-accounts", body, idempotency_key, "add_bank_account"
        )
        account = transformers.convert_response(
            raw.status_code,
            raw.body,
            raw.request_id,
            wire.PayoutBankAccount,
            partial(
                transformers.bank_account_from_wire,
                holder_type=request.bank.holder_type or context.profile.holder_type,
                metadata=request.metadata,
            ),
        )
        if account.status is BankAccountStatus.UNKNOWN:
            _log_unmapped("payout_bank_account", account.provider_status, raw)
        return account

    async def complete_payout_verification(
        self,
        context: ProviderContext,
        request: PayoutVerificationRequest,
        *,
        idempotency_key: str | None = None,
    ) -> PayoutVerificationOutcome:
        transformers.refuse_another_place(request.bank, context.profile, country_from_kyc=True)
        body = transformers.verification_body(request)
        raw = await self._post(
            context, "/payouts/verification", body, idempotency_key, "complete_payout_verification"
        )
        outcome = transformers.convert_response(
            raw.status_code,
            raw.body,
            raw.request_id,
            wire.PayoutVerification,
            partial(
                transformers.verification_outcome_from_wire,
                request=request,
                profile=context.profile,
                now=datetime.now(UTC),
            ),
        )
        if outcome.payout_account.status is PayoutAccountStatus.UNKNOWN:
            _log_unmapped("payout_account", outcome.payout_account.provider_status, raw)
        return outcome

    async def get_bank_account(
        self, context: ProviderContext, provider_account_id: str
    ) -> ProviderBankAccount:
        raise UnsupportedOperationError(Provider.COMMET, "reading a bank account")

    async def list_bank_accounts(
        self, context: ProviderContext, *, limit: int = 100, offset: int = 0
    ) -> ProviderBankAccountPage:
        raise UnsupportedOperationError(Provider.COMMET, "listing bank accounts")

    async def find_bank_account_by_reference(
        self, context: ProviderContext, reference: str
    ) -> ProviderBankAccount | None:
        # Commet dedupes POSTs by Idempotency-Key for 24 h: resending with the same key is the
        # safe recovery, so there is nothing to look up.
        return None

    async def get_payout_account(
        self,
        context: ProviderContext,
        provider_account_id: str,
        *,
        business_type: BusinessType | None = None,
    ) -> PayoutAccount:
        # Commet's only way to read it is resending the full KYC body (commet.md).
        raise UnsupportedOperationError(Provider.COMMET, "reading the payout account")

    async def get_payout(self, context: ProviderContext, provider_payout_id: str) -> ProviderPayout:
        # No read endpoint; payout status arrives by payout.* webhooks.
        raise UnsupportedOperationError(Provider.COMMET, "reading payouts")

    async def find_payout_by_reference(
        self, context: ProviderContext, reference: str
    ) -> ProviderPayout | None:
        # Commet dedupes by Idempotency-Key: resending with the same key is the safe path.
        return None

    async def request_payout(
        self,
        context: ProviderContext,
        request: PayoutRequest,
        *,
        destination_provider_account_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> ProviderPayout:
        if destination_provider_account_id is not None:
            # POST /payouts has no destination: Commet pays the default bank account, and money
            # must never go somewhere other than where the caller asked.
            raise UnsupportedOperationError(Provider.COMMET, "choosing a payout destination")
        body = transformers.payout_body(request)
        raw = await self._post(context, "/payouts", body, idempotency_key, "request_payout")
        payout = transformers.convert_response(
            raw.status_code, raw.body, raw.request_id, wire.Payout, transformers.payout_from_wire
        )
        if payout.status is PayoutStatus.UNKNOWN:
            _log_unmapped("payout", payout.provider_status, raw)
        return payout

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _post(
        self,
        context: ProviderContext,
        path: str,
        body: wire.WireBody,
        idempotency_key: str | None,
        operation: transformers.Operation,
    ) -> RawResponse:
        headers = {
            "x-api-key": _api_key(context),
            # One key for every retry of this call: Commet then applies the POST at most once,
            # which is what makes it replay-safe (commet.md "Transport"; its SDKs do the same).
            "Idempotency-Key": _header_idempotency_key(idempotency_key),
        }
        raw = await self._http.request(
            "POST", path, headers=headers, json=body.to_json(), replay_safe=True
        )
        if 200 <= raw.status_code < 300:
            return raw
        error = with_earlier_attempts(
            transformers.error_from_response(
                raw.status_code,
                raw.body,
                raw.request_id,
                operation,
                retry_after=parse_retry_after(raw.headers.get("retry-after")),
            ),
            raw,
        )
        if isinstance(error, IdempotencyInProgressError) and raw.attempts > 1:
            # Our own earlier attempt timed out and Commet is still running it: to the caller
            # this is a timeout whose outcome is unknown, not a clash of their keys. Sending the
            # mutation again with the same key gets the stored result once Commet finishes.
            raise ProviderTimeoutError(
                "Commet is still processing the request after the gateway stopped waiting; "
                "retry with the same idempotency key.",
                provider=Provider.COMMET,
                outcome_unknown=True,
                http_status=raw.status_code,
                provider_code="idempotency_in_progress",
                request_id=raw.request_id,
            ) from error
        raise error


def _api_key(context: ProviderContext) -> str:
    key = context.credentials.api_key.get_secret_value()
    if _HEADER_TOKEN.fullmatch(key) is None:
        raise ProviderAuthenticationError(
            "The organization's Commet API key is malformed; nothing was sent.",
            provider=Provider.COMMET,
        )
    return key


def _header_idempotency_key(key: str | None) -> str:
    if key is None:
        return str(uuid.uuid4())
    if _HEADER_TOKEN.fullmatch(key) is not None:
        return key
    # Still one stable key per logical request, in a form a header can carry.
    return hashlib.sha256(key.encode()).hexdigest()


def _log_unmapped(kind: str, provider_status: str, raw: RawResponse) -> None:
    logger.warning(
        "unmapped Commet status",
        extra={
            "provider": Provider.COMMET.value,
            "object": kind,
            "provider_status": provider_status[:64],
            "provider_request_id": raw.request_id,
        },
    )


# mypy proves the adapter satisfies the port.
_: type[PayoutProvider] = CommetAdapter
