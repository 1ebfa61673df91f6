"""The schema: root Query and Mutation with thin resolvers, and ``build_schema``."""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

import strawberry
from graphql import ASTValidationRule, GraphQLError, NoSchemaIntrospectionCustomRule
from strawberry import relay
from strawberry.extensions import SchemaExtension
from strawberry.extensions.max_aliases import create_validator as create_alias_rule
from strawberry.extensions.query_depth_limiter import create_validator as create_depth_rule
from strawberry.extensions.runner import SchemaExtensionsRunner
from strawberry.permission import BasePermission
from strawberry.schema.config import StrawberryConfig
from strawberry.schema.exceptions import InvalidOperationTypeError
from strawberry.schema.schema import DEFAULT_ALLOWED_OPERATION_TYPES
from strawberry.types import ExecutionContext, ExecutionResult, Info
from strawberry.types.graphql import OperationType

from payout_gateway.domain.enums import BankAccountStatus
from payout_gateway.domain.errors import InputValidationError, PayoutGatewayError
from payout_gateway.graphql.context import GatewayContext
from payout_gateway.graphql.documents import DocumentChecks, document_cache
from payout_gateway.graphql.errors import (
    MutationError,
    PathMapper,
    default_path,
    payout_path,
    to_graphql_error,
)
from payout_gateway.graphql.execution import AcyclicExecutionContext
from payout_gateway.graphql.inputs import (
    AddBankAccountInput,
    CompletePayoutVerificationInput,
    RequestPayoutInput,
)
from payout_gateway.graphql.runner import GatewayExtensionsRunner
from payout_gateway.graphql.safety import IsAuthenticated, log_errors
from payout_gateway.graphql.subscriptions import Subscription
from payout_gateway.graphql.types import (
    STATUS_OBJECT_TYPES,
    BankAccount,
    Organization,
    Payout,
    PayoutAccount,
    StatusChange,
)
from payout_gateway.service import BANK_ACCOUNT_ID_PREFIX, PAYOUT_ID_PREFIX, Page

Ctx = Info[GatewayContext, None]
AUTH: list[type[BasePermission]] = [IsAuthenticated]
MAX_IDEMPOTENCY_KEY = 255
MAX_NODES = 100

# Argument descriptions shared by the mutations and by the paged queries.
IdempotencyKey = Annotated[
    str | None,
    strawberry.argument(
        description=f"1 to {MAX_IDEMPOTENCY_KEY} printable characters, scoped to the "
        "organization: the same key with the same request answers the stored result again "
        "without calling the provider (keys are kept 24 hours unless configured). Null: the "
        "request is not deduplicated by key."
    ),
]
PageSize = Annotated[
    int | None,
    strawberry.argument(
        description="How many items, 1 to the maximum page size (100 unless configured); null: "
        "20 unless configured. Larger values are a BAD_USER_INPUT error."
    ),
]
After = Annotated[
    str | None,
    strawberry.argument(
        description="The `endCursor` of the previous page: the items after it. Null: from the "
        "newest. A cursor this API did not issue is a BAD_USER_INPUT error."
    ),
]


@strawberry.type(description="The bank account was added.")
class AddBankAccountSuccess:
    bank_account: BankAccount = strawberry.field(
        description="The new account, as the gateway recorded it."
    )


@strawberry.type(
    description="Payout verification was submitted, or the payout account already existed."
)
class CompletePayoutVerificationSuccess:
    payout_account: PayoutAccount = strawberry.field(
        description="The organization's payout account, as the gateway recorded it after this call."
    )
    bank_account: BankAccount | None = strawberry.field(
        description="The destination saved by this call; null when the payout account "
        "already existed and nothing was created."
    )
    already_existed: bool = strawberry.field(
        description="True when the organization already had a payout account (at the provider "
        "or in the gateway): it is returned in its current status instead of a new one."
    )


@strawberry.type(description="The provider accepted the payout.")
class RequestPayoutSuccess:
    payout: Payout = strawberry.field(
        description="The payout as the gateway recorded it; its status moves on by webhook "
        "(Commet) or refresh (Paygentic)."
    )


# Every mutation's result: its success, or any expected failure (errors.MutationError).
_ERRORS = MutationError
AddBankAccountResult = Annotated[
    AddBankAccountSuccess | _ERRORS,
    strawberry.union(
        "AddBankAccountResult",
        description="AddBankAccountSuccess, or a UserError type saying what went wrong.",
    ),
]
RequestPayoutResult = Annotated[
    RequestPayoutSuccess | _ERRORS,
    strawberry.union(
        "RequestPayoutResult",
        description="RequestPayoutSuccess, or a UserError type saying what went wrong.",
    ),
]
CompletePayoutVerificationResult = Annotated[
    CompletePayoutVerificationSuccess | _ERRORS,
    strawberry.union(
        "CompletePayoutVerificationResult",
        description="CompletePayoutVerificationSuccess, or a UserError type saying what went "
        "wrong.",
    ),
]


_CURSOR = "Opaque; pass it as `after` for the items after this one."
_PAGE_INFO = (
    "Whether more items follow, and the cursors of the page's first and last edges. Paging goes "
    "forwards only: hasPreviousPage is true when `after` was given."
)


@strawberry.type(description="A bank account in a page, with its cursor.")
class BankAccountEdge:
    cursor: str = strawberry.field(description=_CURSOR)
    node: BankAccount = strawberry.field(description="The bank account.")


@strawberry.type(description="A page of the organization's bank accounts, newest first.")
class BankAccountConnection:
    edges: list[BankAccountEdge] = strawberry.field(description="The page's accounts.")
    page_info: relay.PageInfo = strawberry.field(description=_PAGE_INFO)


@strawberry.type(description="A payout in a page, with its cursor.")
class PayoutEdge:
    cursor: str = strawberry.field(description=_CURSOR)
    node: Payout = strawberry.field(description="The payout.")


@strawberry.type(description="A page of the organization's payouts, newest first.")
class PayoutConnection:
    edges: list[PayoutEdge] = strawberry.field(description="The page's payouts.")
    page_info: relay.PageInfo = strawberry.field(description=_PAGE_INFO)


# What a gateway id can look like (service.new_id; the store's id columns hold 40 characters).
# A decoded id or cursor is checked against it before it reaches a query: PostgreSQL refuses a
# NUL in a text parameter, and a forged id holding one was an unexpected error.
_GATEWAY_ID = re.compile(r"[A-Za-z0-9_-]{1,40}")


def encode_cursor(created_at: datetime, account_id: str) -> str:
    raw = f"{created_at.isoformat()}|{account_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, id_prefix: str) -> tuple[datetime, str]:
    """(creation time, gateway id) of a cursor issued by the connection whose objects' ids
    start with ``id_prefix``; another connection's cursor is refused like a forged one (it
    would answer a plausible page of the wrong items)."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, account_id = raw.split("|", 1)
        created_at = datetime.fromisoformat(stamp)
        # Every cursor issued is in UTC. One edited to drop its offset, or to one that moves
        # it out of datetime's range, would fail in the store as an unexpected error.
        if created_at.tzinfo is None:
            raise ValueError("no UTC offset")
        if _GATEWAY_ID.fullmatch(account_id) is None:
            raise ValueError("not a gateway id")
        if not account_id.startswith(f"{id_prefix}_"):
            raise ValueError("another connection's cursor")
        return created_at.astimezone(UTC), account_id
    except (binascii.Error, UnicodeDecodeError, ValueError, OverflowError):
        raise GraphQLError(
            "The 'after' cursor is not one this API issued.",
            extensions={"code": "BAD_USER_INPUT"},
        ) from None


def decode_global_id(global_or_raw: str) -> tuple[str, str] | None:
    """(type name, gateway id) of a Relay global id; None when it is not one of ours."""
    try:
        global_id = relay.GlobalID.from_id(global_or_raw)
    except (relay.GlobalIDValueError, ValueError, binascii.Error, UnicodeDecodeError):
        return None
    if _GATEWAY_ID.fullmatch(global_id.node_id) is None:
        return None
    return global_id.type_name, global_id.node_id


def bank_account_id(global_or_raw: str) -> str | None:
    decoded = decode_global_id(global_or_raw)
    return decoded[1] if decoded and decoded[0] == "BankAccount" else None


async def _load_bank_account(info: Ctx, id: strawberry.ID) -> BankAccount | None:
    account_id = bank_account_id(str(id))
    if account_id is None:
        return None
    # A foreign id reads exactly like a nonexistent one: the loader is scoped to the org.
    account = await info.context.bank_accounts.load(account_id)
    return BankAccount.from_domain(account) if account is not None else None


async def _load_node(info: Ctx, id: strawberry.ID) -> relay.Node | None:
    decoded = decode_global_id(str(id))
    if decoded is None:
        return None
    type_name, object_id = decoded
    if type_name == "BankAccount":
        return await _load_bank_account(info, id)
    if type_name == "Payout":
        payout = await info.context.payouts.load(object_id)
        return Payout.from_domain(payout) if payout is not None else None
    return None


def _page_info(
    edges: Sequence[BankAccountEdge] | Sequence[PayoutEdge], page: Page[Any], after: str | None
) -> relay.PageInfo:
    return relay.PageInfo(
        has_next_page=page.has_next,
        has_previous_page=after is not None,
        start_cursor=edges[0].cursor if edges else None,
        end_cursor=edges[-1].cursor if edges else None,
    )


# statusChanges' `first` when left out (or the maximum page size, if smaller).
STATUS_CHANGES_DEFAULT = 50


def _page_size(info: Ctx, first: int | None) -> int:
    paging = info.context.paging
    size = paging.default if first is None else first
    if not 1 <= size <= paging.maximum:
        raise GraphQLError(
            f"'first' must be between 1 and {paging.maximum} (the maximum page size).",
            extensions={"code": "BAD_USER_INPUT"},
        )
    return size


def _checked_idempotency_key(key: str | None) -> None:
    if key is not None and not (0 < len(key) <= MAX_IDEMPOTENCY_KEY and key.isprintable()):
        raise InputValidationError.single(
            ("idempotency_key",), f"must be 1 to {MAX_IDEMPOTENCY_KEY} printable characters"
        )


def _argument_path(path: tuple[str | int, ...], of_input: PathMapper = default_path) -> list[str]:
    if path == ("idempotency_key",):
        return ["idempotencyKey"]
    return of_input(path)


def _payout_argument_path(path: tuple[str | int, ...]) -> list[str]:
    return _argument_path(path, payout_path)


@strawberry.type(
    description="Reads for the organization of the caller's API key or JWT, from the gateway's "
    "own records."
)
class Query:
    @strawberry.field(
        permission_classes=AUTH,
        description="Fetch a bank account or a payout by its global id; null when unknown or "
        "another organization's.",
    )
    async def node(
        self,
        info: Ctx,
        id: Annotated[
            strawberry.ID, strawberry.argument(description="A BankAccount or Payout global id.")
        ],
    ) -> relay.Node | None:
        return await _load_node(info, id)

    @strawberry.field(
        permission_classes=AUTH,
        description=f"Fetch up to {MAX_NODES} objects by global id in one batched read; "
        "unknown and foreign ids are null.",
    )
    async def nodes(
        self,
        info: Ctx,
        ids: Annotated[
            list[strawberry.ID],
            strawberry.argument(
                description=f"Up to {MAX_NODES} global ids (more is a BAD_USER_INPUT error); "
                "the answer lists them in the same order."
            ),
        ],
    ) -> list[relay.Node | None]:
        if len(ids) > MAX_NODES:
            raise GraphQLError(
                f"'ids' takes at most {MAX_NODES} ids.", extensions={"code": "BAD_USER_INPUT"}
            )
        return list(await asyncio.gather(*(_load_node(info, i) for i in ids)))

    @strawberry.field(
        permission_classes=AUTH,
        description="One of the organization's bank accounts; null when unknown or another "
        "organization's.",
    )
    async def bank_account(
        self,
        info: Ctx,
        id: Annotated[strawberry.ID, strawberry.argument(description="The account's global id.")],
    ) -> BankAccount | None:
        return await _load_bank_account(info, id)

    @strawberry.field(
        permission_classes=AUTH,
        description="The organization's bank accounts, newest first. `first` is at most the "
        "maximum page size (100 unless configured), default 20.",
    )
    async def bank_accounts(
        self,
        info: Ctx,
        first: PageSize = None,
        after: After = None,
        status: Annotated[
            BankAccountStatus | None,
            strawberry.argument(description="Only the accounts in this status; null: all."),
        ] = None,
    ) -> BankAccountConnection:
        size = _page_size(info, first)
        page = await info.context.service.page_bank_accounts(
            info.context.org,
            first=size,
            after=decode_cursor(after, BANK_ACCOUNT_ID_PREFIX) if after else None,
            status=status,
        )
        edges = [
            BankAccountEdge(
                cursor=encode_cursor(a.created_at, a.id), node=BankAccount.from_domain(a)
            )
            for a in page.items
        ]
        return BankAccountConnection(edges=edges, page_info=_page_info(edges, page, after))

    @strawberry.field(
        permission_classes=AUTH,
        description="The organization's payouts, newest first (same paging rules as bankAccounts).",
    )
    async def payouts(
        self, info: Ctx, first: PageSize = None, after: After = None
    ) -> PayoutConnection:
        size = _page_size(info, first)
        page = await info.context.service.page_payouts(
            info.context.org,
            first=size,
            after=decode_cursor(after, PAYOUT_ID_PREFIX) if after else None,
        )
        edges = [
            PayoutEdge(cursor=encode_cursor(p.created_at, p.id), node=Payout.from_domain(p))
            for p in page.items
        ]
        return PayoutConnection(edges=edges, page_info=_page_info(edges, page, after))

    @strawberry.field(
        permission_classes=AUTH,
        description="The audit trail: every status the organization's objects took (from, to, "
        "source, at), newest first; `objectId` narrows it to one object.",
    )
    async def status_changes(
        self,
        info: Ctx,
        first: Annotated[
            int,
            strawberry.argument(
                description="How many of the newest entries, 1 to the maximum page size (100 "
                "unless configured); 50, or that maximum if smaller, when left out. There is no "
                "cursor."
            ),
        ] = STATUS_CHANGES_DEFAULT,
        object_id: Annotated[
            strawberry.ID | None,
            strawberry.argument(
                description="Only this object's entries: its global id (as in "
                "StatusChange.objectId); an id that is not one, like one naming another type "
                "than its object's, gives an empty list (as node answers null)."
            ),
        ] = None,
    ) -> list[StatusChange]:
        # The schema's default, 50, is more than a configured maximum page size may be: left
        # out (or sent as it), it asks for the most there may be rather than an error.
        if first == STATUS_CHANGES_DEFAULT:
            first = min(first, info.context.paging.maximum)
        size = _page_size(info, first)
        of = None
        if object_id is not None:
            # Read like node's: an id that is not ours, or names a type without a status (or
            # another object's type than its own), is an unknown object's, with no entries.
            decoded = decode_global_id(str(object_id))
            object_type = STATUS_OBJECT_TYPES.get(decoded[0]) if decoded else None
            if decoded is None or object_type is None:
                return []
            of = (object_type, decoded[1])
        changes = await info.context.service.status_changes(info.context.org, first=size, of=of)
        return [StatusChange.from_domain(change) for change in changes]

    @strawberry.field(
        permission_classes=AUTH,
        description="The organization's payout account; null until completePayoutVerification "
        "has created it.",
    )
    async def payout_account(self, info: Ctx) -> PayoutAccount | None:
        record = await info.context.service.payout_account(info.context.org)
        return PayoutAccount.from_domain(record) if record is not None else None

    @strawberry.field(
        permission_classes=AUTH,
        description="The caller's organization, its provider and what that provider supports.",
    )
    def organization(self, info: Ctx) -> Organization:
        org = info.context.org
        return Organization.from_domain(org, info.context.service.capabilities(org))


@strawberry.type(
    description="Writes for the caller's organization; each answers a union of its success "
    "type and the UserError types."
)
class Mutation:
    @strawberry.mutation(
        permission_classes=AUTH,
        description="Add a payout destination bank account. Commet: only once payout "
        "verification is complete (else PayoutAccountRequiredError); Paygentic: needs a routing "
        "number, bank name, holder type, country and currency (the input or the organization's "
        "profile).",
    )
    async def add_bank_account(
        self,
        info: Ctx,
        input: Annotated[
            AddBankAccountInput, strawberry.argument(description="The account to add.")
        ],
        idempotency_key: IdempotencyKey = None,
    ) -> AddBankAccountResult:
        try:
            _checked_idempotency_key(idempotency_key)
            account = await info.context.service.add_bank_account(
                info.context.org, input.to_domain(), idempotency_key=idempotency_key
            )
        except PayoutGatewayError as exc:
            return to_graphql_error(exc, _argument_path)
        return AddBankAccountSuccess(bank_account=BankAccount.from_domain(account))

    @strawberry.mutation(
        permission_classes=AUTH,
        description="KYC + destination bank: creates the organization's payout account "
        "(Commet takes the KYC data; Paygentic's is validated, then discarded). A new payout "
        "account starts PENDING_VERIFICATION; when `alreadyExisted` is true nothing is created "
        "and the existing one is returned in its current status.",
    )
    async def complete_payout_verification(
        self,
        info: Ctx,
        input: Annotated[
            CompletePayoutVerificationInput,
            strawberry.argument(description="The KYC data and the destination bank account."),
        ],
        idempotency_key: IdempotencyKey = None,
    ) -> CompletePayoutVerificationResult:
        try:
            _checked_idempotency_key(idempotency_key)
            result = await info.context.service.complete_payout_verification(
                info.context.org, input.to_domain(), idempotency_key=idempotency_key
            )
        except PayoutGatewayError as exc:
            return to_graphql_error(exc, _argument_path)
        return CompletePayoutVerificationSuccess(
            payout_account=PayoutAccount.from_domain(result.payout_account),
            bank_account=BankAccount.from_domain(result.bank_account)
            if result.bank_account
            else None,
            already_existed=result.already_existed,
        )

    @strawberry.mutation(
        permission_classes=AUTH,
        description="Pay out to the organization's default bank account (Commet: its payout "
        "account's default; Paygentic: the gateway's default, which must be ACTIVE, else "
        "PayoutAccountRequiredError). Status changes arrive by webhook (Commet) or refresh "
        "(Paygentic).",
    )
    async def request_payout(
        self,
        info: Ctx,
        input: Annotated[
            RequestPayoutInput, strawberry.argument(description="The amount and description.")
        ],
        idempotency_key: IdempotencyKey = None,
    ) -> RequestPayoutResult:
        org = info.context.org
        try:
            _checked_idempotency_key(idempotency_key)
            payout = await info.context.service.request_payout(
                org, input.to_domain(org.profile.currency), idempotency_key=idempotency_key
            )
        except PayoutGatewayError as exc:
            return to_graphql_error(exc, _payout_argument_path)
        return RequestPayoutSuccess(payout=Payout.from_domain(payout))


class SubscriptionOverHttpError(InvalidOperationTypeError):
    """A subscription sent as a plain HTTP request: the HTTP view answers 400 with this."""

    def as_http_error_reason(self, method: str) -> str:
        return (
            f"subscriptions are not served over {method}: open a WebSocket on this path "
            "(graphql-transport-ws) and send the key in connection_init"
        )


class GatewaySchema(strawberry.Schema):
    """Strawberry's schema with the gateway's document checks and error masking run by its
    own extensions runner (graphql/runner.py), and errors logged redacted."""

    def __init__(self, *args: Any, document_checks: DocumentChecks, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.document_checks = document_checks

    async def execute(
        self,
        query: str | None,
        variable_values: dict[str, Any] | None = None,
        context_value: Any | None = None,
        root_value: Any | None = None,
        operation_name: str | None = None,
        allowed_operation_types: Iterable[OperationType] | None = None,
        operation_extensions: dict[str, Any] | None = None,
    ) -> ExecutionResult:
        """One operation, one result: never a subscription. Strawberry allows subscriptions
        on POST for its HTTP streaming transports, which the gateway does not offer (they go
        over the WebSocket); executed as a query, one failed as an unexpected error."""
        allowed = set(allowed_operation_types or DEFAULT_ALLOWED_OPERATION_TYPES)
        allowed.discard(OperationType.SUBSCRIPTION)
        try:
            return await super().execute(
                query,
                variable_values,
                context_value,
                root_value,
                operation_name,
                allowed,
                operation_extensions,
            )
        except InvalidOperationTypeError as error:
            if error.operation_type is OperationType.SUBSCRIPTION:
                raise SubscriptionOverHttpError(error.operation_type) from None
            raise

    def create_extensions_runner(
        self, execution_context: ExecutionContext, extensions: list[SchemaExtension]
    ) -> SchemaExtensionsRunner:
        return GatewayExtensionsRunner(execution_context, extensions, self.document_checks)

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        log_errors(errors, execution_context)


def build_schema(
    *,
    introspection: bool = True,
    field_suggestions: bool = True,
    max_depth: int = 12,
    max_tokens: int = 5000,
    max_aliases: int = 100,
) -> strawberry.Schema:
    # The document cache is built here once, so it spans requests. The depth and alias rules
    # are built once too: the stock limiters would make new rule classes per request, so a
    # validation result cached for a document would never be reused.
    rules: list[type[ASTValidationRule]] = [
        create_depth_rule(max_depth, should_ignore=None),
        create_alias_rule(max_aliases),
    ]
    if not introspection:
        rules.append(NoSchemaIntrospectionCustomRule)
    documents = document_cache(max_tokens=max_tokens, maxsize=1024)
    return GatewaySchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        types=[BankAccount, Payout],
        config=StrawberryConfig(disable_field_suggestions=not field_suggestions),
        execution_context_class=AcyclicExecutionContext,
        document_checks=DocumentChecks(documents, rules),
    )
