"""Plain fields (an attribute holding a scalar, an enum or an object, a relay Node's id,
``__typename``) completed without a resolve info give graphql-core's own answers: values,
nulls, errors, their messages and paths."""

from __future__ import annotations

import asyncio
import enum
from datetime import UTC, datetime
from typing import Any

import pytest
import strawberry
from strawberry import relay
from strawberry.scalars import JSON
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from payout_gateway.graphql.execution import AcyclicExecutionContext, _plain_fields
from payout_gateway.graphql.schema import build_schema


@strawberry.enum
class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@strawberry.type
class Item:
    name: str
    nickname: str | None
    count: int
    ratio: float | None
    color: Color
    maybe_color: Color | None
    seen_at: datetime
    data: JSON
    flag: bool

    @strawberry.field
    def shout(self) -> str:
        return self.name.upper()

    @strawberry.field
    async def later(self) -> str:
        return await _later()

    @strawberry.field
    async def failing_later(self) -> str:
        await _later()
        raise RuntimeError("failed after a wait")


class Source:
    """What a resolver might hand back: attributes read by name, some of them wrong."""

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)


async def _later() -> str:
    await asyncio.sleep(0)
    return "awaited"


GOOD = {
    "name": "a",
    "nickname": None,
    "count": 3,
    "ratio": 0.5,
    "color": Color.RED,
    "maybe_color": None,
    "seen_at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    "data": {"k": [1, "v", None]},
    "flag": False,
}
SOURCES: dict[str, dict[str, Any]] = {
    "good": GOOD,
    "null for a non-null": {**GOOD, "name": None},
    "null for a nullable": {**GOOD, "ratio": None},
    "Int not representable": {**GOOD, "count": "three"},
    "enum value unknown": {**GOOD, "maybe_color": "green"},
    "an exception as the value": {**GOOD, "nickname": ValueError("stored error")},
    "an awaitable value": {**GOOD, "nickname": None},
}
FIELDS = "__typename name nickname count ratio color maybeColor seenAt data flag shout"


@strawberry.type
class Thing(relay.Node):
    id: relay.NodeID[str]
    label: str


@strawberry.type
class SpecialThing(Thing):
    """A subclass of a Node type handed back where a Thing is expected, with ids of its own
    (Strawberry's resolver asks the root's class)."""

    @classmethod
    def resolve_id(cls, root: Thing, *, info: strawberry.Info) -> str:
        return f"special-{root.id}"


@strawberry.type
class Custom(relay.Node):
    id: relay.NodeID[str]

    @classmethod
    def resolve_id(cls, root: Custom, *, info: strawberry.Info) -> str:
        return f"custom-{root.id}"


async def _later_id() -> str:
    await asyncio.sleep(0)
    return "later"


THING_IDS: dict[str, Any] = {
    "a string": "t_1",
    "a number": 42,
    "none": None,
    "an awaitable": "awaitable",
}


class _LaterItem:
    """An awaitable that gives an item, made anew each time it is awaited."""

    def __await__(self) -> Any:
        async def item() -> Source:
            await asyncio.sleep(0)
            return Source(**GOOD)

        return item().__await__()


def _later_item() -> _LaterItem:
    return _LaterItem()


def _thing(kind: str) -> Thing:
    node_id = _later_id() if kind == "an awaitable" else THING_IDS[kind]
    return Thing(id=node_id, label=kind)


@strawberry.type
class Holder:
    """Plain object fields: an object type without is_type_of (Item) and one with Strawberry's
    own (Thing, a Node)."""

    label: str
    item: Item | None
    strict_item: Item
    thing: Thing | None


def _holder(kind: str) -> Holder:
    values: dict[str, Any] = {
        "label": kind,
        "item": Source(**GOOD),
        "strict_item": Source(**GOOD),
        "thing": Thing(id="t_1", label="thing"),
    }
    values.update(HOLDER_KINDS[kind])
    return Source(**values)  # type: ignore[return-value]


HOLDER_KINDS: dict[str, dict[str, Any]] = {
    "good": {},
    "null for a nullable object": {"item": None, "thing": None},
    "null for a non-null object": {"strict_item": None},
    "an error inside a nullable object": {"item": Source(**{**GOOD, "name": None})},
    "an error inside a non-null object": {"strict_item": Source(**{**GOOD, "name": None})},
    # Strawberry's is_type_of refuses it (an error); a Node of another type passes it (a Node).
    "a value of another type": {"thing": Source(id="x_1", label="not a thing")},
    "another Node type": {"thing": Custom(id="c_1")},
    "a subclass of the type": {"thing": SpecialThing(id="s_1", label="special")},
    "an exception as the object": {"item": ValueError("stored error")},
    "an awaitable object": {"item": _later_item()},
}
HOLDER_ERRORS = {
    "null for a non-null object",
    "an error inside a nullable object",
    "an error inside a non-null object",
    "a value of another type",
    "another Node type",  # it has no label
    "an exception as the object",
}
HOLDER_FIELDS = (
    "label item { name later } strictItem { name count } thing { id label } "
    "again: item { failingLater }"
)


def _schema(context: type[StrawberryGraphQLCoreExecutionContext]) -> strawberry.Schema:
    @strawberry.type
    class Query:
        @strawberry.field
        def holder(self, kind: str) -> Holder | None:
            return _holder(kind)

        @strawberry.field
        def items(self, kind: str) -> list[Item | None]:
            return [Source(**SOURCES[kind]) for _ in range(2)]  # type: ignore[misc]

        @strawberry.field
        def strict_items(self, kind: str) -> list[Item]:
            return [Source(**SOURCES[kind]) for _ in range(2)]  # type: ignore[misc]

        @strawberry.field
        def things(self, kind: str) -> list[Thing | None]:
            if kind == "a subclass":
                return [SpecialThing(id="s_1", label=kind)]
            return [_thing(kind), _thing("a string")]

        @strawberry.field
        def customs(self) -> list[Custom]:
            return [Custom(id="1"), Custom(id="2")]

        @strawberry.field
        def item(self, kind: str) -> Item | None:
            values = dict(SOURCES[kind])
            if kind == "an awaitable value":
                values["nickname"] = _later()
            return Source(**values)  # type: ignore[return-value]

    return strawberry.Schema(query=Query, execution_context_class=context)


class GraphQLCoreOwnPath(AcyclicExecutionContext):
    """The context with graphql-core's ``execute_field`` for every field."""

    execute_field = StrawberryGraphQLCoreExecutionContext.execute_field  # type: ignore[assignment]


async def _same_answer_both_ways(query: str) -> list[dict[str, Any]]:
    """Runs ``query`` with the short path and with graphql-core's own; asserts the same data
    and errors (messages, locations, paths) and returns the errors."""
    ours = await _schema(AcyclicExecutionContext).execute(query)
    reference = await _schema(GraphQLCoreOwnPath).execute(query)
    errors = [dict(error.formatted) for error in ours.errors or []]
    assert ours.data == reference.data
    assert errors == [dict(error.formatted) for error in reference.errors or []]
    return errors


@pytest.mark.parametrize("kind", list(SOURCES))
@pytest.mark.parametrize("root", ["items", "strictItems", "item"])
async def test_answers_equal_graphql_core_s_own(kind: str, root: str) -> None:
    query = (
        f'{{ __typename {root}(kind: "{kind}") {{ {FIELDS} }} '
        f'alias: {root}(kind: "good") {{ name }} }}'
    )
    errors = await _same_answer_both_ways(query)
    if kind != "good":
        assert errors or kind in {"null for a nullable", "an awaitable value"}


@pytest.mark.parametrize("kind", list(HOLDER_KINDS))
async def test_plain_objects_equal_graphql_core_s_own(kind: str) -> None:
    query = f'{{ holder(kind: "{kind}") {{ {HOLDER_FIELDS} }} }}'
    errors = await _same_answer_both_ways(query)
    # Besides failingLater's own (an error after an await, inside a nullable object).
    others = [error for error in errors if error["path"][-1] != "failingLater"]
    assert bool(others) is (kind in HOLDER_ERRORS)


@pytest.mark.parametrize("kind", [*THING_IDS, "a subclass"])
async def test_node_ids_equal_graphql_core_s_own(kind: str) -> None:
    query = f'{{ things(kind: "{kind}") {{ id label __typename }} customs {{ id }} }}'
    errors = await _same_answer_both_ways(query)
    assert bool(errors) is (kind == "none")


def test_only_nodes_with_strawberry_s_own_ids_take_the_short_path() -> None:
    graphql_schema = _schema(AcyclicExecutionContext)._schema
    plain = _plain_fields(graphql_schema)
    thing = graphql_schema.type_map["Thing"].fields  # type: ignore[union-attr]
    custom = graphql_schema.type_map["Custom"].fields  # type: ignore[union-attr]
    assert plain[id(thing["id"])].node_type is Thing
    assert id(custom["id"]) not in plain  # resolve_id overridden


def test_the_gateway_s_plain_fields_take_the_short_path() -> None:
    # If Strawberry renamed or changed its resolver for basic fields, every field would quietly
    # go back to graphql-core's path: answers unchanged, the CPU per item back up.
    schema = build_schema(
        introspection=True, field_suggestions=True, max_depth=10, max_tokens=1000, max_aliases=10
    )
    graphql_schema = schema._schema
    plain = _plain_fields(graphql_schema)
    account = graphql_schema.type_map["BankAccount"].fields  # type: ignore[union-attr]
    for name in ("last4", "holderName", "status", "isDefault", "createdAt", "metadata"):
        assert id(account[name]) in plain, name
    assert plain[id(account["id"])].node_type is not None  # a relay GlobalID
    success = graphql_schema.type_map["AddBankAccountSuccess"].fields  # type: ignore[union-attr]
    assert plain[id(success["bankAccount"])].object_type is graphql_schema.type_map["BankAccount"]
    # A union, a list, a field with a resolver: graphql-core's path.
    mutation = graphql_schema.type_map["Mutation"].fields  # type: ignore[union-attr]
    assert id(mutation["addBankAccount"]) not in plain
