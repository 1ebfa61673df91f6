"""Subfields collected once per document and kept across requests give graphql-core's own
answers, and are not kept where what is collected may differ between requests."""

from __future__ import annotations

import gc
from typing import Any

import pytest
import strawberry
from strawberry.extensions import ParserCache
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from payout_gateway.graphql.execution import _PER_OPERATION, AcyclicExecutionContext


@strawberry.type
class Owner:
    name: str


@strawberry.type
class Dog:
    name: str
    barks: bool
    owner: Owner


@strawberry.type
class Cat:
    name: str
    lives: int
    owner: Owner


def _pets() -> list[Dog | Cat]:
    return [
        Dog(name="Rex", barks=True, owner=Owner(name="Ada")),
        Cat(name="Tom", lives=9, owner=Owner(name="Bob")),
        Dog(name="Fido", barks=False, owner=Owner(name="Cy")),
    ]


def _schema(context: type[StrawberryGraphQLCoreExecutionContext]) -> strawberry.Schema:
    @strawberry.type
    class Query:
        @strawberry.field
        def pets(self) -> list[Dog | Cat]:
            return _pets()

        @strawberry.field
        def pet(self, index: int) -> Dog | Cat | None:
            pets = _pets()
            return pets[index] if index < len(pets) else None

    # A parser cache, as the gateway has: requests sending one text share its parsed document.
    return strawberry.Schema(query=Query, execution_context_class=context, extensions=[ParserCache])


class GraphQLCoreOwnCollection(AcyclicExecutionContext):
    """The context with graphql-core's per-execution collection only."""

    collect_subfields = StrawberryGraphQLCoreExecutionContext.collect_subfields  # type: ignore[assignment]


CACHING = _schema(AcyclicExecutionContext)
REFERENCE = _schema(GraphQLCoreOwnCollection)

FRAGMENTS = """
fragment Named on Dog { name owner { ...OwnerName } }
fragment OwnerName on Owner { name }
"""
CACHEABLE = {
    "inline fragments": (
        "{ pets { __typename ... on Dog { name barks } ... on Cat { name lives } } }"
    ),
    "named fragments": "query { pets { ...Named ... on Cat { owner { ...OwnerName } } } }"
    + FRAGMENTS,
    "aliases and merged fields": (
        "{ first: pet(index: 0) { ... on Dog { name owner { name } } ... on Dog { barks "
        "owner { n: name } } } second: pet(index: 1) { ... on Cat { lives } } "
        "none: pet(index: 9) { __typename } again: pet(index: 2) { ... on Dog { barks } } }"
    ),
    "variables outside directives": (
        "query($i: Int!) { pet(index: $i) { ... on Dog { name } ... on Cat { lives } } }"
    ),
}


def _live_for(query: str) -> list[Any]:
    """What is kept for each live parse of ``query``."""
    kept = []
    for reference, subfields in list(_PER_OPERATION._entries.values()):
        operation = reference()
        if operation is not None and operation.loc and operation.loc.source.body == query:
            kept.append(subfields)
    return kept


def _kept_for(query: str) -> list[Any]:
    kept = _live_for(query)
    assert kept, f"nothing kept for {query!r}"
    return kept


async def _both_ways(query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    ours = await CACHING.execute(query, variable_values=variables)
    reference = await REFERENCE.execute(query, variable_values=variables)
    assert ours.errors is None and reference.errors is None
    assert ours.data == reference.data
    assert ours.data is not None
    return ours.data


@pytest.mark.parametrize("kind", list(CACHEABLE))
async def test_kept_subfields_give_graphql_core_s_answers(kind: str) -> None:
    query = CACHEABLE[kind]
    variables = {"i": 1} if "$i" in query else None
    first = await _both_ways(query, variables)
    # The reference schema's context never fills its own.
    [cache] = [kept for kept in _kept_for(query) if kept]
    kept = dict(cache)
    # Again, from what was kept (and with another variable value where there is one).
    assert await _both_ways(query, variables) == first
    assert dict(cache) == kept
    if variables:
        other = await _both_ways(query, {"i": 0})
        assert other != first and other["pet"] == {"name": "Rex"}


@pytest.mark.parametrize(
    "query",
    [
        "query($full: Boolean!) { pets { ... on Dog { name barks @include(if: $full) } } }",
        "query($full: Boolean!) { pets { ...Full } }"
        " fragment Full on Dog { name barks @skip(if: $full) }",
    ],
)
async def test_a_document_whose_collection_reads_variables_keeps_none(query: str) -> None:
    shown = await _both_ways(query, {"full": True})
    hidden = await _both_ways(query, {"full": False})
    assert shown != hidden  # the same document, two selections
    assert all(kept is None for kept in _kept_for(query))


async def test_two_parses_of_one_text_keep_their_own_and_let_them_go() -> None:
    """graphql-core's nodes compare equal by structure: each parse keeps its own collections
    (keyed by its own node ids), and they go with the document."""
    query = "{ pets { ... on Cat { name } } }"
    plain = _schema(AcyclicExecutionContext)
    plain.extensions = []  # a new document per request
    for _ in range(3):
        assert (await plain.execute(query)).data == {"pets": [{}, {"name": "Tom"}, {}]}
    gc.collect()
    assert _live_for(query) == []
    assert all(reference() is not None for reference, _ in _PER_OPERATION._entries.values())
