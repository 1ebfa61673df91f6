"""The one error tree of the gateway; every layer raises these and nothing else crosses a layer.

    PayoutGatewayError
    ├── InputValidationError        caller input is invalid (field paths, nothing echoed)
    ├── NotFoundError               no such object for this organization
    ├── NotPermittedError           the organization is not set up at its provider for this
    ├── PayoutAccountRequiredError  complete payout verification first
    ├── UnsupportedOperationError   the organization's provider cannot do this
    ├── WebhookRejectedError        a provider webhook delivery refused (malformed or unsigned)
    ├── StoreUnavailableError       the gateway's own database failed or did not answer (retryable)
    ├── SecretsUnreadableError      the configured keys do not open the organization's stored
    │                               secrets: the gateway is misconfigured (retryable)
    ├── IdempotencyError
    │   ├── IdempotencyConflictError    same key, different request
    │   └── IdempotencyInProgressError  same key, first request still running
    └── ProviderError               anything about talking to a provider
        ├── ProviderRejectedError       the provider understood and said no (data)
        │   ├── ProviderAuthenticationError  bad or insufficient provider credentials
        │   └── OperationRetiredError        the provider retired the operation (Commet 410)
        ├── ProviderUnavailableError    could not reach it or it failed (retryable)
        │   ├── ProviderTimeoutError        no answer in time
        │   ├── ProviderRateLimitedError    429, with retry_after when sent
        │   └── ProviderCircuitOpenError    not sent: its last requests all failed (retry_after)
        └── ProviderBadResponseError    it answered something we cannot understand

Provider refusals (data) are kept apart from transport failures: only the latter may be retried,
and only they can leave the outcome unknown (``outcome_unknown``: the request may have been
applied upstream).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from payout_gateway.domain.enums import Provider


class PayoutGatewayError(Exception):
    """Base of every error the gateway raises on purpose."""

    code: str = "INTERNAL"
    retryable: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class FieldIssue:
    """One invalid input field: its path (``("bank", "routing_number")``) and why; no value."""

    path: tuple[str | int, ...]
    message: str

    @property
    def dotted(self) -> str:
        return ".".join(str(p) for p in self.path)


class InputValidationError(PayoutGatewayError):
    code = "VALIDATION_FAILED"

    def __init__(self, issues: Sequence[FieldIssue], message: str | None = None) -> None:
        if not issues:
            raise ValueError("InputValidationError needs at least one issue")
        self.issues = tuple(issues)
        first = self.issues[0]
        super().__init__(message or f"{first.dotted}: {first.message}")

    @property
    def path(self) -> tuple[str | int, ...]:
        return self.issues[0].path

    @classmethod
    def single(cls, path: tuple[str | int, ...], message: str) -> InputValidationError:
        return cls([FieldIssue(path, message)])


class NotFoundError(PayoutGatewayError):
    code = "NOT_FOUND"


class NotPermittedError(PayoutGatewayError):
    code = "NOT_PERMITTED"


class PayoutAccountRequiredError(PayoutGatewayError):
    code = "PAYOUT_ACCOUNT_REQUIRED"

    def __init__(
        self,
        message: str = "Complete payout verification before adding bank accounts or payouts.",
    ) -> None:
        super().__init__(message)


class UnsupportedOperationError(PayoutGatewayError):
    code = "UNSUPPORTED_OPERATION"

    def __init__(self, provider: Provider, operation: str) -> None:
        super().__init__(f"{provider.value} does not support {operation}.")
        self.provider = provider
        self.operation = operation


class WebhookRejectedError(PayoutGatewayError):
    """A webhook delivery the gateway refuses, with the HTTP status to answer: 400 malformed,
    401 not signed by the organization's secret (or no such organization), 413 too large."""

    code = "WEBHOOK_REJECTED"

    def __init__(self, status_code: int, reason: str) -> None:
        super().__init__(reason)
        self.status_code = status_code
        self.reason = reason


class StoreUnavailableError(PayoutGatewayError):
    """The gateway's database failed or did not answer in time (the store raises it for any
    connection, timeout or I/O failure; a constraint violation is a bug, not this).
    ``outcome_unknown``: the request may have been applied (a provider had already applied it
    when the store failed, so the gateway may hold no record of it; or a COMMIT went
    unanswered, so the database may have done it); retried with the same idempotency key, the
    gateway replays or reconciles with the provider instead of applying it twice."""

    code = "STORE_UNAVAILABLE"
    retryable = True

    def __init__(self, *, outcome_unknown: bool = False) -> None:
        message = "The gateway's database is unavailable. "
        message += (
            "The request may have been applied: retry with the same idempotency key."
            if outcome_unknown
            else "Nothing was changed; retry."
        )
        super().__init__(message)
        self.outcome_unknown = outcome_unknown


class SecretsUnreadableError(PayoutGatewayError):
    """The organization's provider credentials or webhook secret are sealed with a key the
    gateway does not list (PAYOUT_GATEWAY_SECRETS_KEYS): a request of it is refused before
    anything runs. Retryable: it is served again once an operator lists the key. The message
    names no key and no secret; the operator's log line says what to do."""

    code = "SECRETS_UNREADABLE"
    retryable = True

    def __init__(self) -> None:
        super().__init__(
            "The gateway is misconfigured: it cannot read this organization's provider "
            "credentials. Nothing ran; retry later."
        )


class IdempotencyError(PayoutGatewayError):
    code = "IDEMPOTENCY_ERROR"


class IdempotencyConflictError(IdempotencyError):
    code = "IDEMPOTENCY_KEY_REUSED"


class IdempotencyInProgressError(IdempotencyError):
    code = "IDEMPOTENCY_IN_PROGRESS"
    retryable = True


class ProviderError(PayoutGatewayError):
    """Anything that went wrong with a provider; carries what a support ticket needs."""

    code = "PROVIDER_ERROR"

    def __init__(
        self,
        message: str,
        *,
        provider: Provider,
        http_status: int | None = None,
        provider_code: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.provider = provider
        self.http_status = http_status
        self.provider_code = provider_code
        self.request_id = request_id


class ProviderRejectedError(ProviderError):
    """The provider understood the request and refused it."""

    code = "PROVIDER_REJECTED"

    def __init__(
        self,
        message: str,
        *,
        provider: Provider,
        http_status: int | None = None,
        provider_code: str | None = None,
        request_id: str | None = None,
        doc_url: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(
            message,
            provider=provider,
            http_status=http_status,
            provider_code=provider_code,
            request_id=request_id,
        )
        self.doc_url = doc_url
        self.param = param


class ProviderAuthenticationError(ProviderRejectedError):
    code = "PROVIDER_AUTHENTICATION_FAILED"


class OperationRetiredError(ProviderRejectedError):
    code = "OPERATION_RETIRED"


class ProviderUnavailableError(ProviderError):
    """Could not reach the provider, or it failed on its side. ``outcome_unknown``: the request
    may have been applied (sent, no answer) — a retry must reconcile, not repeat blindly.
    ``retry_after``: seconds the provider asked for (a 503's Retry-After), when it did."""

    code = "PROVIDER_UNAVAILABLE"
    retryable = True

    def __init__(
        self,
        message: str,
        *,
        provider: Provider,
        outcome_unknown: bool,
        http_status: int | None = None,
        provider_code: str | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(
            message,
            provider=provider,
            http_status=http_status,
            provider_code=provider_code,
            request_id=request_id,
        )
        self.outcome_unknown = outcome_unknown
        self.retry_after = retry_after


class ProviderTimeoutError(ProviderUnavailableError):
    code = "PROVIDER_TIMEOUT"


class ProviderRateLimitedError(ProviderUnavailableError):
    code = "PROVIDER_RATE_LIMITED"

    def __init__(
        self,
        message: str,
        *,
        provider: Provider,
        retry_after: float | None = None,
        http_status: int | None = 429,
        provider_code: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(
            message,
            provider=provider,
            outcome_unknown=False,
            http_status=http_status,
            provider_code=provider_code,
            request_id=request_id,
            retry_after=retry_after,
        )


class ProviderCircuitOpenError(ProviderUnavailableError):
    """Not sent: the provider's last requests all failed, so the gateway stops calling it for a
    while (providers/circuit.py); ``retry_after``: seconds until it tries again."""

    code = "PROVIDER_CIRCUIT_OPEN"

    def __init__(self, message: str, *, provider: Provider, retry_after: float) -> None:
        super().__init__(message, provider=provider, outcome_unknown=False, retry_after=retry_after)


class ProviderBadResponseError(ProviderError):
    """The provider answered with something that is not its documented contract."""

    code = "PROVIDER_BAD_RESPONSE"
    retryable = True

    def __init__(
        self,
        message: str,
        *,
        provider: Provider,
        outcome_unknown: bool = True,
        http_status: int | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message, provider=provider, http_status=http_status, request_id=request_id)
        self.outcome_unknown = outcome_unknown
