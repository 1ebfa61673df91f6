"""The schema's document checks answer as Strawberry's stock extensions did, and validate once;
its own extensions runner leaves schema extensions working."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
import strawberry
from graphql import ASTValidationRule, GraphQLError, NoSchemaIntrospectionCustomRule
from strawberry.extensions import (
    AddValidationRules,
    MaxTokensLimiter,
    ParserCache,
    SchemaExtension,
    ValidationCache,
)
from strawberry.extensions.max_aliases import create_validator as create_alias_rule
from strawberry.extensions.query_depth_limiter import create_validator as create_depth_rule
from strawberry.schema.config import StrawberryConfig
from strawberry.schema.exceptions import InvalidOperationTypeError
from strawberry.types import ExecutionContext
from strawberry.types.execution import PreExecutionError
from strawberry.types.graphql import OperationType

from payout_gateway.graphql.documents import DocumentChecks, document_cache
from payout_gateway.graphql.safety import log_errors, mask_errors
from payout_gateway.graphql.schema import (
    GatewaySchema,
    Mutation,
    Query,
    Subscription,
    build_schema,
)
from payout_gateway.graphql.types import BankAccount, Payout

LIMITS = {"max_depth": 2, "max_tokens": 60, "max_aliases": 2}


class SafeErrors(SchemaExtension):
    """The gateway's error masking as a schema extension, as it was before its runner."""

    def on_operation(self) -> Iterator[None]:
        yield
        mask_errors(self.execution_context)


class StockSchema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        log_errors(errors, execution_context)


def stock_schema(*, production: bool) -> strawberry.Schema:
    """The schema as build_schema made it with Strawberry's own extensions."""
    rules: list[type[ASTValidationRule]] = [
        create_depth_rule(LIMITS["max_depth"], should_ignore=None),
        create_alias_rule(LIMITS["max_aliases"]),
    ]
    if production:
        rules.append(NoSchemaIntrospectionCustomRule)
    return StockSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        types=[BankAccount, Payout],
        extensions=[
            SafeErrors,
            partial(MaxTokensLimiter, max_token_count=LIMITS["max_tokens"]),
            partial(AddValidationRules, rules),
            partial(ParserCache, maxsize=1024),
            partial(ValidationCache, maxsize=1024),
        ],
        config=StrawberryConfig(disable_field_suggestions=production),
    )


QUERIES = [
    "{ __typename }",
    "query Named { __typename }",
    "{ organization { name }",
    "{ organizaton { name } }",
    "{ " + " ".join(["__typename"] * 60) + " }",
    "{ organization { name } }",
    "{ bankAccounts { edges { node { id } } } }",
    "{ bankAccounts { edges { node { ... on Node { id } } } } }",
    "{ a: __typename b: __typename c: __typename }",
    "{ __schema { queryType { name } } }",
    "mutation { addBankAccount(input: {bankAccount: {accountNumber: 1}}) { __typename } }",
    "subscription { statusChanges { objectId } }",
    "subscription { payoutStatusChanged { toStatus } }",
]


def answer(result: Any) -> tuple[Any, Any]:
    return result.data, [error.formatted for error in result.errors or ()]


async def outcome(schema: strawberry.Schema, query: str, **options: Any) -> Any:
    """The answer, or the kind of operation refused before any check ran."""
    try:
        return answer(await schema.execute(query, **options))
    except InvalidOperationTypeError as refused:
        return ("refused", refused.operation_type)


@pytest.mark.parametrize("production", [False, True])
async def test_every_document_gets_the_stock_extensions_answer(production: bool) -> None:
    ours = build_schema(introspection=not production, field_suggestions=not production, **LIMITS)
    stock = stock_schema(production=production)
    # The gateway's schema never executes a subscription as one result (GatewaySchema.execute):
    # the stock one is asked the same way.
    one_result = {"allowed_operation_types": (OperationType.QUERY, OperationType.MUTATION)}
    for query in QUERIES:
        for _ in range(2):  # the second time from the caches
            expected = await outcome(stock, query, **one_result)
            assert await outcome(ours, query) == expected, query


@strawberry.type
class Hello:
    @strawberry.field
    def hello(self) -> str:
        return "world"


async def test_a_document_is_validated_once_and_its_errors_kept() -> None:
    documents = document_cache(max_tokens=100, maxsize=8)
    schema = GatewaySchema(query=Hello, document_checks=DocumentChecks(documents, []))
    for query, valid in (("{ hello }", True), ("{ goodbye }", False)):
        first = await schema.execute(query)
        checked = documents.parsed(query)
        errors = checked.errors
        assert errors is not None
        assert not errors if valid else errors
        second = await schema.execute(query)
        assert documents.parsed(query).errors is errors
        assert answer(first) == answer(second)


async def test_a_document_over_the_token_budget_is_refused_every_time() -> None:
    documents = document_cache(max_tokens=5, maxsize=8)
    schema = GatewaySchema(query=Hello, document_checks=DocumentChecks(documents, []))
    for _ in range(2):
        result = await schema.execute("{ hello hello hello hello }")
        assert result.errors
        assert "more than 5 tokens" in result.errors[0].message


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("{ hello } 987654321012", "Syntax Error: Unexpected Int."),
        (
            "{ hello hello hello hello }",
            "Syntax Error: Document contains more than 5 tokens. Parsing aborted.",
        ),
    ],
)
async def test_a_document_that_does_not_parse_is_answered_by_the_operation(
    query: str, message: str
) -> None:
    """Not raised as the parsing step starts, with the cache's token budget kept: executed,
    the answer is masked as the operation ends; streamed (a WebSocket's operations), it is
    the stream's one result, masked too, where it once escaped the stream."""
    documents = document_cache(max_tokens=5, maxsize=8)
    schema = GatewaySchema(query=Hello, document_checks=DocumentChecks(documents, []))
    executed = await schema.execute(query)
    assert [error.message for error in executed.errors or ()] == [message]
    # Read as each result is yielded: what a WebSocket's handler sends then.
    sent = [
        (type(result), [error.message for error in result.errors or ()])
        async for result in await schema.stream(query)
    ]
    assert sent == [(PreExecutionError, [message])]
