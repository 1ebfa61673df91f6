"""Expected failures as schema types (union members), and the one map from domain errors."""

from __future__ import annotations

import re
from collections.abc import Callable

import strawberry

from payout_gateway.domain import errors as domain
from payout_gateway.graphql.types import ProviderName

_REQUEST_ID = "The provider's request id, for support; null when it sent none."


@strawberry.interface(description="Every expected failure of a mutation.")
class UserError:
    message: str = strawberry.field(
        description="What went wrong, in words for people; programs should branch on the type "
        "and `code`."
    )
    code: str = strawberry.field(description="Stable machine-readable code.")
    retryable: bool = strawberry.field(
        description="Whether sending the same mutation again (same idempotency key) may succeed."
    )


@strawberry.type(description="One invalid input field and why.")
class FieldError:
    field: list[str] = strawberry.field(
        description='Path of the input field as a list of segments, e.g. ["input", '
        '"bankAccount", "routingNumber"] (["idempotencyKey"] for the argument).'
    )
    message: str = strawberry.field(
        description="Why the field is invalid; the value sent is not repeated."
    )


@strawberry.type(description="The input is invalid. Nothing was sent to the provider.")
class ValidationError(UserError):
    field: list[str] = strawberry.field(
        description="Path of the first invalid input field as a list of segments (as in "
        "FieldError.field)."
    )
    issues: list[FieldError] = strawberry.field(
        description="Every invalid field found, the first being `field`."
    )


@strawberry.type(
    description="No usable payout destination yet. Commet: complete payout verification before "
    "adding bank accounts or requesting payouts. A payout at Paygentic: the default bank "
    "account is missing or not ACTIVE (verified) yet."
)
class PayoutAccountRequiredError(UserError):
    pass


@strawberry.type(description="The provider understood the request and refused it.")
class ProviderRejectedError(UserError):
    provider: ProviderName = strawberry.field(description="The provider that refused.")
    provider_code: str | None = strawberry.field(
        description="The provider's error code (e.g. Commet `insufficient_balance`); null when "
        "it sent none."
    )
    doc_url: str | None = strawberry.field(
        description="The provider's documentation of the error (Commet sends one); null otherwise."
    )
    http_status: int | None = strawberry.field(
        description="The HTTP status the provider answered with; null when not known."
    )
    request_id: str | None = strawberry.field(description=_REQUEST_ID)
    provider_field: list[str] | None = strawberry.field(
        description="The refused parameter as the provider names it, as path segments in "
        "camelCase (not necessarily this API's input path); null when it named none."
    )
    # Kept for the clients that read it, but selected next to ValidationError.field ([String!]!)
    # it is refused by GraphQL validation (one response name, two types): providerField is it.
    field: list[str] | None = strawberry.field(
        description="The same as providerField.",
        deprecation_reason="Use providerField (the same value): selected next to "
        "ValidationError.field, a field of another type under the same name, this one is refused "
        "by GraphQL validation.",
    )


@strawberry.type(
    description="The provider retired this operation (Commet: 410 `endpoint_deprecated`, e.g. "
    "for payout verification over its API): finish it in the provider's dashboard."
)
class OperationRetiredError(UserError):
    provider: ProviderName = strawberry.field(description="The provider that retired it.")
    provider_code: str | None = strawberry.field(
        description="The provider's error code (Commet `endpoint_deprecated`)."
    )
    doc_url: str | None = strawberry.field(
        description="The provider's documentation of the change, when it sends one."
    )


@strawberry.type(description="The provider could not be reached, failed, or answered nonsense.")
class ProviderUnavailableError(UserError):
    provider: ProviderName = strawberry.field(description="The provider that failed.")
    outcome_unknown: bool = strawberry.field(
        description="True: the request may have been applied. Retry with the same idempotency "
        "key; the gateway reconciles instead of creating a duplicate."
    )
    retry_after_seconds: float | None = strawberry.field(
        description="Seconds to wait before retrying: the provider's Retry-After on a rate "
        "limit or a failure that sent one (a 503), or until the circuit breaker tries the "
        "provider again; null otherwise."
    )
    request_id: str | None = strawberry.field(description=_REQUEST_ID)


@strawberry.type(
    description="The gateway's own database failed or did not answer in time. Retry with the "
    "same idempotency key."
)
class StoreUnavailableError(UserError):
    outcome_unknown: bool = strawberry.field(
        description="True: the request may have been applied (by a provider before the "
        "database failed, or by the database's COMMIT whose answer was lost). Retry with the "
        "same idempotency key; the gateway replays or reconciles instead of creating a "
        "duplicate. False: nothing was changed."
    )


@strawberry.type(description="This idempotency key was used with a different request.")
class IdempotencyConflictError(UserError):
    pass


@strawberry.type(
    description="A request with this idempotency key is still running (or, for "
    "completePayoutVerification, another verification of the organization); retry later."
)
class IdempotencyInProgressError(UserError):
    pass


@strawberry.type(
    description="The organization is not set up for this at its provider (e.g. no Paygentic "
    "organization id or payout source configured)."
)
class NotPermittedError(UserError):
    pass


@strawberry.type(description="The organization's provider does not support this.")
class UnsupportedOperationError(UserError):
    provider: ProviderName = strawberry.field(description="The organization's provider.")


@strawberry.type(
    description="An object the request needs does not exist for this organization (another "
    "organization's reads the same)."
)
class NotFoundError(UserError):
    pass


MutationError = (
    ValidationError
    | PayoutAccountRequiredError
    | ProviderRejectedError
    | OperationRetiredError
    | ProviderUnavailableError
    | StoreUnavailableError
    | IdempotencyConflictError
    | IdempotencyInProgressError
    | NotPermittedError
    | UnsupportedOperationError
    | NotFoundError
)

PathMapper = Callable[[tuple[str | int, ...]], list[str]]


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


# Input fields whose next path segment is a key the caller chose (a JSON object's), not a field
# name: it is shown as sent, never camelCased.
_KEYED_FIELDS = frozenset({"metadata"})


def input_path(path: tuple[str | int, ...], renames: dict[str, str] | None = None) -> list[str]:
    """Domain field path -> GraphQL input path: ``("bank", "routing_number")`` ->
    ``["input", "bankAccount", "routingNumber"]``; ``("metadata", "order_id")`` ->
    ``["input", "metadata", "order_id"]`` (a metadata key is the caller's, as sent)."""
    renames = renames or {}
    segments = ["input"]
    for index, segment in enumerate(path):
        if index > 0 and path[index - 1] in _KEYED_FIELDS:
            segments.append(str(segment))
        else:
            segments.append(renames.get(str(segment), _camel(str(segment))))
    return segments


DOMAIN_TO_INPUT_RENAMES = {"bank": "bankAccount"}


def default_path(path: tuple[str | int, ...]) -> list[str]:
    return input_path(path, DOMAIN_TO_INPUT_RENAMES)


def payout_path(path: tuple[str | int, ...]) -> list[str]:
    """A requestPayout path: RequestPayoutInput's ``amount`` and ``currency`` are one domain
    Money, ``amount``, whose ``currency`` is the input's currency and whose ``amount_minor`` (or
    the Money as a whole) the input's amount."""
    if len(path) > 1 and path[0] == "amount":
        return ["input", "currency" if path[1] == "currency" else "amount"]
    return default_path(path)


def to_graphql_error(
    exc: domain.PayoutGatewayError, path_of: PathMapper = default_path
) -> MutationError:
    """The one map from the domain error tree to schema types (most specific first)."""
    message = exc.message
    code = exc.code
    retryable = exc.retryable
    match exc:
        case domain.InputValidationError():
            issues = [FieldError(field=path_of(i.path), message=i.message) for i in exc.issues]
            return ValidationError(
                message=f"{'.'.join(issues[0].field)}: {issues[0].message}",
                code=code,
                retryable=False,
                field=issues[0].field,
                issues=issues,
            )
        case domain.PayoutAccountRequiredError():
            return PayoutAccountRequiredError(message=message, code=code, retryable=False)
        case domain.OperationRetiredError():
            return OperationRetiredError(
                message=message,
                code=code,
                retryable=False,
                provider=exc.provider,
                provider_code=exc.provider_code,
                doc_url=exc.doc_url,
            )
        case domain.ProviderRejectedError():
            refused = (
                [_camel(p) for p in re.split(r"[.\[\]]+", exc.param) if p] if exc.param else None
            )
            return ProviderRejectedError(
                message=message,
                code=code,
                retryable=False,
                provider=exc.provider,
                provider_code=exc.provider_code,
                doc_url=exc.doc_url,
                http_status=exc.http_status,
                request_id=exc.request_id,
                provider_field=refused,
                field=refused,
            )
        case domain.ProviderRateLimitedError() | domain.ProviderCircuitOpenError():
            return ProviderUnavailableError(
                message=message,
                code=code,
                retryable=True,
                provider=exc.provider,
                # A rate limit answering a resend leaves the first attempt's outcome unknown.
                outcome_unknown=exc.outcome_unknown,
                retry_after_seconds=exc.retry_after,
                request_id=exc.request_id,
            )
        case domain.ProviderUnavailableError() | domain.ProviderBadResponseError():
            return ProviderUnavailableError(
                message=message,
                code=code,
                retryable=True,
                provider=exc.provider,
                outcome_unknown=exc.outcome_unknown,
                retry_after_seconds=getattr(exc, "retry_after", None),
                request_id=exc.request_id,
            )
        case domain.ProviderError():
            return ProviderUnavailableError(
                message=message,
                code=code,
                retryable=retryable,
                provider=exc.provider,
                outcome_unknown=False,
                retry_after_seconds=None,
                request_id=exc.request_id,
            )
        case domain.StoreUnavailableError():
            return StoreUnavailableError(
                message=message, code=code, retryable=True, outcome_unknown=exc.outcome_unknown
            )
        case domain.IdempotencyConflictError():
            return IdempotencyConflictError(message=message, code=code, retryable=False)
        case domain.IdempotencyInProgressError():
            return IdempotencyInProgressError(message=message, code=code, retryable=True)
        case domain.NotPermittedError():
            return NotPermittedError(message=message, code=code, retryable=False)
        case domain.UnsupportedOperationError():
            return UnsupportedOperationError(
                message=message, code=code, retryable=False, provider=exc.provider
            )
        case domain.NotFoundError():
            return NotFoundError(message=message, code=code, retryable=False)
    return NotPermittedError(
        message="The request could not be completed.", code=code, retryable=retryable
    )
