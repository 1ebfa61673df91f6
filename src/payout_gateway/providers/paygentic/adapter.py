"""PaygenticAdapter: the only Paygentic I/O, an HTTP shell around the pure transformers."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Final, Protocol, TypeVar

import httpx

from payout_gateway.domain.enums import BusinessType, HolderType, Provider
from payout_gateway.domain.errors import (
    InputValidationError,
    NotFoundError,
    NotPermittedError,
    PayoutGatewayError,
    ProviderBadResponseError,
    ProviderUnavailableError,
)
from payout_gateway.domain.models import (
    AddBankAccountRequest,
    BankDetails,
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
from payout_gateway.provider_reads import read_once
from payout_gateway.providers.paygentic import transformers as tf
from payout_gateway.providers.paygentic import wire
from payout_gateway.providers.transport import (
    HttpPolicy,
    ProviderHttp,
    RawResponse,
    parse_retry_after,
    with_earlier_attempts,
)

if TYPE_CHECKING:
    from payout_gateway.ports import PayoutProvider

logger = logging.getLogger("payout_gateway.providers.paygentic")

_ACCOUNTS: Final = "/v0/externalAccounts"
_PAYOUTS: Final = "/v0/payouts"
# Paygentic's list limit is 1-100 (paygentic.md, "Lists").
_MAX_PAGE: Final = 100
# Reconciliation scans an organization's whole list; this bounds it if pagination misbehaves.
_MAX_RECONCILE_PAGES: Final = 500
# Ids go into URL paths: anything else (``..``, ``/``, ``?``) could address another resource.
_SAFE_ID: Final = re.compile(r"[A-Za-z0-9_\-]{1,128}")

_CAPABILITIES: Final = ProviderCapabilities(
    takes_kyc=False,
    has_default_accounts=False,
    has_account_types=False,
    can_read_bank_accounts=True,
    has_idempotency=False,
    account_country_from_input=True,
    required_bank_fields=(
        "account_number",
        "routing_number",
        "holder_name",
        "holder_type",
        "bank_name",
        "country",
        "currency",
    ),
)

_T = TypeVar("_T")
_Item_co = TypeVar("_Item_co", covariant=True)


class PaygenticAdapter:
    """Speaks to Paygentic for every organization routed to it: one shared HTTP client, and per
    call the organization's own API key and ``organizationId``.

    ``livemode`` is True unless the base URL's host contains "sandbox" (Paygentic's test host is
    ``api.sandbox.paygentic.io``) or is a loopback address (the gateway's simulator).
    """

    def __init__(
        self,
        *,
        base_url: str,
        policy: HttpPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        policy = policy or HttpPolicy()
        self._livemode = tf.is_livemode(base_url)
        self._http = ProviderHttp(
            Provider.PAYGENTIC,
            base_url,
            policy,
            transport=transport,
            headers={"accept": "application/json"},
            sleep=sleep,
        )

    @property
    def provider(self) -> Provider:
        return Provider.PAYGENTIC

    @property
    def capabilities(self) -> ProviderCapabilities:
        return _CAPABILITIES

    @property
    def livemode(self) -> bool:
        return self._livemode

    # --- bank accounts --------------------------------------------------------------------

    async def add_bank_account(
        self,
        context: ProviderContext,
        request: AddBankAccountRequest,
        *,
        idempotency_key: str | None = None,
    ) -> ProviderBankAccount:
        account = await self._create_external_account(
            context,
            request.bank,
            metadata=request.metadata,
            reference=idempotency_key,
            purpose=None,
            fallback_holder_type=None,
        )
        return tf.bank_account_from_wire(account, livemode=self._livemode)

    async def complete_payout_verification(
        self,
        context: ProviderContext,
        request: PayoutVerificationRequest,
        *,
        idempotency_key: str | None = None,
    ) -> PayoutVerificationOutcome:
        """Paygentic has no KYC API (paygentic.md, "KYC / payout verification"): the KYC part,
        already validated by the domain model, is neither forwarded nor kept; only the bank part
        goes out, as the destination whose status stands for the payout account."""
        account = await self._create_external_account(
            context,
            request.bank,
            metadata=None,
            reference=idempotency_key,
            purpose=tf.VERIFICATION_PURPOSE,
            fallback_holder_type=tf.HOLDER_TYPE_OF_BUSINESS[request.business_type],
        )
        return PayoutVerificationOutcome(
            payout_account=tf.payout_account_from_wire(
                account, business_type=request.business_type, livemode=self._livemode
            ),
            bank_account=tf.bank_account_from_wire(account, livemode=self._livemode),
            # Per-organization idempotency is the gateway service's job: Paygentic cannot tell.
            already_existed=False,
        )

    async def get_bank_account(
        self, context: ProviderContext, provider_account_id: str
    ) -> ProviderBankAccount:
        account = await self._get_external_account(context, provider_account_id)
        return tf.bank_account_from_wire(account, livemode=self._livemode)

    async def get_payout_account(
        self,
        context: ProviderContext,
        provider_account_id: str,
        *,
        business_type: BusinessType | None = None,
    ) -> PayoutAccount:
        """Re-read the verification destination and derive the payout account from it (no
        webhook reports these changes, paygentic.md "Status meaning")."""
        account = await self._get_external_account(context, provider_account_id)
        return tf.payout_account_from_wire(
            account, business_type=business_type, livemode=self._livemode
        )

    async def list_bank_accounts(
        self, context: ProviderContext, *, limit: int = 100, offset: int = 0
    ) -> ProviderBankAccountPage:
        if limit < 1 or offset < 0:
            path = ("limit",) if limit < 1 else ("offset",)
            raise InputValidationError.single(path, "must be positive" if limit < 1 else ">= 0")
        page = await self._list_accounts(context, limit=min(limit, _MAX_PAGE), offset=offset)
        organization_id = self._organization_id(context)
        return ProviderBankAccountPage(
            items=tuple(
                tf.bank_account_from_wire(account, livemode=self._livemode)
                for account in page.data
                if account.organization_id == organization_id
            ),
            total=page.pagination.total,
            offset=page.pagination.offset,
            limit=page.pagination.limit,
        )

    async def find_bank_account_by_reference(
        self, context: ProviderContext, reference: str
    ) -> ProviderBankAccount | None:
        account = await self._find_account(context, reference)
        return (
            None if account is None else tf.bank_account_from_wire(account, livemode=self._livemode)
        )

    # --- payouts --------------------------------------------------------------------------

    async def request_payout(
        self,
        context: ProviderContext,
        request: PayoutRequest,
        *,
        destination_provider_account_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> ProviderPayout:
        organization_id = self._organization_id(context)
        source_id = context.credentials.payout_source_id
        if not source_id:
            raise NotPermittedError(
                "The organization has no Paygentic payout source id configured."
            )
        if not destination_provider_account_id:
            raise InputValidationError.single(
                ("destination",), "is required: Paygentic pays out to an external account"
            )
        body = tf.payout_body(
            organization_id,
            request,
            source_id=source_id,
            destination_id=destination_provider_account_id,
            metadata=tf.tagged_metadata(None, idempotency_key),
        )
        try:
            raw = await self._http.request(
                "POST", _PAYOUTS, headers=_auth(context), json=body.to_json(), replay_safe=False
            )
            self._raise_for_status(raw, "create_payout")
            payout = tf.parse_payout(
                raw.body, http_status=raw.status_code, request_id=raw.request_id
            )
        except (ProviderUnavailableError, ProviderBadResponseError) as exc:
            payout = await self._reconcile(exc, idempotency_key, self._find_payout, context)
        return tf.payout_from_wire(payout, livemode=self._livemode)

    async def get_payout(self, context: ProviderContext, provider_payout_id: str) -> ProviderPayout:
        organization_id = self._organization_id(context)
        if _SAFE_ID.fullmatch(provider_payout_id) is None:
            raise NotFoundError("No such payout.")
        raw = await self._http.request(
            "GET", f"{_PAYOUTS}/{provider_payout_id}", headers=_auth(context), replay_safe=True
        )
        self._raise_for_status(raw, "get_payout")
        payout = tf.parse_payout(raw.body, http_status=raw.status_code, request_id=raw.request_id)
        if payout.organization_id != organization_id:
            raise NotFoundError("No such payout.")
        return tf.payout_from_wire(payout, livemode=self._livemode)

    async def find_payout_by_reference(
        self, context: ProviderContext, reference: str
    ) -> ProviderPayout | None:
        """Recover a payout created with ``idempotency_key=reference`` whose answer was lost."""
        payout = await self._find_payout(context, reference)
        return None if payout is None else tf.payout_from_wire(payout, livemode=self._livemode)

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- internals ------------------------------------------------------------------------

    async def _create_external_account(
        self,
        context: ProviderContext,
        bank: BankDetails,
        *,
        metadata: dict[str, str] | None,
        reference: str | None,
        purpose: str | None,
        fallback_holder_type: HolderType | None,
    ) -> wire.ExternalBankAccount:
        organization_id = self._organization_id(context)
        resolved = tf.resolve_bank(
            bank, context.profile, metadata=metadata, fallback_holder_type=fallback_holder_type
        )
        body = tf.external_account_body(
            organization_id, bank, resolved, tf.tagged_metadata(metadata, reference, purpose)
        )
        secrets = (body.account_number, body.routing_number)
        try:
            raw = await self._http.request(
                "POST", _ACCOUNTS, headers=_auth(context), json=body.to_json(), replay_safe=False
            )
            self._raise_for_status(raw, "create_external_account", redact=secrets)
            return tf.parse_account(
                raw.body, http_status=raw.status_code, request_id=raw.request_id
            )
        except (ProviderUnavailableError, ProviderBadResponseError) as exc:
            return await self._reconcile(exc, reference, self._find_account, context)

    async def _reconcile(
        self,
        error: ProviderUnavailableError | ProviderBadResponseError,
        reference: str | None,
        find: Callable[[ProviderContext, str], Awaitable[_T | None]],
        context: ProviderContext,
    ) -> _T:
        """Paygentic cannot dedupe a resent create (paygentic.md, "No idempotency support"), so
        an unknown outcome is settled by looking for the reference, never by POSTing again."""
        if reference is None or not error.outcome_unknown:
            raise error
        try:
            found = await find(context, reference)
        except PayoutGatewayError as lookup_error:
            logger.warning(
                "paygentic reconciliation failed; outcome stays unknown",
                extra={"error_code": lookup_error.code},
            )
            raise error from lookup_error
        if found is None:
            if error.http_status is None:
                # No answer at all (a timeout, a dropped connection): the create may still be
                # under way at Paygentic, and a read now cannot tell. The outcome stays unknown;
                # the service keeps the key, so a retry with it looks again before any new POST.
                logger.info("paygentic reconciliation found nothing yet; the outcome stays unknown")
                raise error
            # Paygentic answered (a 5xx, an unreadable body): it was done with the request, so
            # what a read does not find was not created.
            logger.info("paygentic reconciliation found nothing; the create did not apply")
            error.outcome_unknown = False
            raise error
        logger.info("paygentic reconciliation recovered the created object")
        return found

    async def _get_external_account(
        self, context: ProviderContext, provider_account_id: str
    ) -> wire.ExternalBankAccount:
        # The payout account and the bank account of a verification are this one account.
        return await read_once(
            (Provider.PAYGENTIC, context.organization_id, provider_account_id),
            lambda: self._read_external_account(context, provider_account_id),
        )

    async def _read_external_account(
        self, context: ProviderContext, provider_account_id: str
    ) -> wire.ExternalBankAccount:
        organization_id = self._organization_id(context)
        if _SAFE_ID.fullmatch(provider_account_id) is None:
            raise NotFoundError("No such bank account.")
        raw = await self._http.request(
            "GET", f"{_ACCOUNTS}/{provider_account_id}", headers=_auth(context), replay_safe=True
        )
        self._raise_for_status(raw, "get_external_account")
        account = tf.parse_account(
            raw.body, http_status=raw.status_code, request_id=raw.request_id, outcome_unknown=False
        )
        # A platform key can read other organizations' accounts: a foreign id must look absent.
        if account.organization_id != organization_id:
            raise NotFoundError("No such bank account.")
        return account

    async def _list_accounts(
        self, context: ProviderContext, *, limit: int, offset: int
    ) -> wire.ExternalAccountList:
        raw = await self._list(context, _ACCOUNTS, "list_external_accounts", limit, offset)
        return tf.parse_account_list(
            raw.body, http_status=raw.status_code, request_id=raw.request_id
        )

    async def _list_payouts(
        self, context: ProviderContext, *, limit: int, offset: int
    ) -> wire.PayoutList:
        raw = await self._list(context, _PAYOUTS, "list_payouts", limit, offset)
        return tf.parse_payout_list(
            raw.body, http_status=raw.status_code, request_id=raw.request_id
        )

    async def _list(
        self,
        context: ProviderContext,
        path: str,
        operation: tf.Operation,
        limit: int,
        offset: int,
    ) -> RawResponse:
        """One page of one organization's list (paygentic.md "Lists": limit/offset)."""
        raw = await self._http.request(
            "GET",
            path,
            headers=_auth(context),
            params={
                "organizationId": self._organization_id(context),
                "limit": limit,
                "offset": offset,
            },
            replay_safe=True,
        )
        self._raise_for_status(raw, operation)
        return raw

    async def _find_account(
        self, context: ProviderContext, reference: str
    ) -> wire.ExternalBankAccount | None:
        organization_id = self._organization_id(context)
        async for account in _all_pages(
            lambda offset: self._list_accounts(context, limit=_MAX_PAGE, offset=offset)
        ):
            if (
                account.organization_id == organization_id
                and tf.reference_of(account.metadata) == reference
            ):
                return account
        return None

    async def _find_payout(self, context: ProviderContext, reference: str) -> wire.Payout | None:
        organization_id = self._organization_id(context)
        async for payout in _all_pages(
            lambda offset: self._list_payouts(context, limit=_MAX_PAGE, offset=offset)
        ):
            if (
                payout.organization_id == organization_id
                and tf.reference_of(payout.metadata) == reference
            ):
                return payout
        return None

    def _organization_id(self, context: ProviderContext) -> str:
        organization_id = context.credentials.provider_organization_id
        if not organization_id:
            raise NotPermittedError("The organization has no Paygentic organization id configured.")
        if wire.ORGANIZATION_ID.fullmatch(organization_id) is None:
            # Paygentic refuses every request naming it (400 on organizationId): say what is
            # wrong with the set-up instead of relaying that refusal, and send nothing.
            raise NotPermittedError(
                "The organization's Paygentic organization id is not one Paygentic accepts "
                "(org_ followed by letters and digits); nothing was sent."
            )
        return organization_id

    @staticmethod
    def _raise_for_status(
        raw: RawResponse, operation: tf.Operation, *, redact: Iterable[str] = ()
    ) -> None:
        if 200 <= raw.status_code < 300:
            return
        raise with_earlier_attempts(
            tf.error_from_response(
                raw.status_code,
                raw.body,
                raw.request_id,
                operation,
                retry_after=parse_retry_after(raw.headers.get("retry-after")),
                redact=redact,
            ),
            raw,
        )


class _Page(Protocol[_Item_co]):
    @property
    def data(self) -> Sequence[_Item_co]: ...

    @property
    def pagination(self) -> wire.Pagination: ...


async def _all_pages(fetch: Callable[[int], Awaitable[_Page[_Item_co]]]) -> AsyncIterator[_Item_co]:
    offset = 0
    for _ in range(_MAX_RECONCILE_PAGES):
        page = await fetch(offset)
        for item in page.data:
            yield item
        offset += len(page.data)
        if not page.data or offset >= page.pagination.total:
            return
    raise ProviderBadResponseError(
        "Paygentic's list did not end within the pages the gateway reads.",
        provider=Provider.PAYGENTIC,
        outcome_unknown=False,
    )


def _auth(context: ProviderContext) -> dict[str, str]:
    return {"authorization": f"Bearer {context.credentials.api_key.get_secret_value()}"}


if TYPE_CHECKING:

    def _implements_port(adapter: PaygenticAdapter) -> PayoutProvider:
        return adapter  # mypy proves the adapter satisfies the PayoutProvider protocol
