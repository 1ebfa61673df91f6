"""One-field operations executed by their compiled plans (graphql/compiled.py) answer exactly as
Strawberry's and graphql-core's execution does, call each resolver once whichever path
answers, and leave every document the plans do not cover to the usual path."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from enum import Enum
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated, Any, cast

import httpx
import pytest
import strawberry
from graphql import OperationDefinitionNode, parse
from starlette.requests import HTTPConnection
from strawberry import relay
from strawberry.extensions import FieldExtension
from strawberry.permission import BasePermission
from strawberry.scalars import JSON

from payout_gateway.domain import errors as domain
from payout_gateway.domain.enums import Provider
from payout_gateway.graphql.compiled import compiled_operations
from payout_gateway.graphql.context import GatewayContext, PagingLimits
from payout_gateway.graphql.documents import DocumentChecks, document_cache
from payout_gateway.graphql.execution import AcyclicExecutionContext
from payout_gateway.graphql.schema import GatewaySchema, build_schema
from payout_gateway.service import PayoutService
from payout_gateway.web.graphql_router import GatewayGraphQL
from tests.support.fakes import FakeProvider
from tests.support.gateway import RunningGateway, running_gateway

CALLS: Counter[str] = Counter()
# Run by the adopt resolver, as it resolves.
WHILE_ADOPTING: list[Callable[[], object]] = []


@strawberry.enum
class Color(Enum):
    RED = "red"
    BLUE = "blue"


@strawberry.type
class Owner:
    name: str
    nickname: str | None = None


@strawberry.type
class Pet(relay.Node):
    id: relay.NodeID[str]
    name: str
    color: Color
    owner: Owner
    sitter: Owner | None = None
    age: int | None = None
    # A Node, so its type checks its values (is_type_of), unlike Owner.
    friend: Pet | None = None
    # A scalar that takes any value.
    notes: JSON | None = None
    tags: list[str] = strawberry.field(default_factory=lambda: ["good", "small"])
    nicknames: list[str | None] | None = None
    friends: list[Pet] = strawberry.field(default_factory=list)
    colors: list[Color] = strawberry.field(default_factory=lambda: [Color.RED, Color.BLUE])
    vaccinated: bool = True


@strawberry.type
class Problem:
    message: str
    field: str | None = None


@strawberry.type
class Adopted:
    pet: Pet


@strawberry.interface
class Named:
    name: str


@strawberry.type
class Shelter(Named):
    city: str


Result = Annotated[Adopted | Problem, strawberry.union("Result")]


@strawberry.input
class Filter:
    name: str
    tags: list[str] | None = None
    # Recursive: values can nest as deep as a client sends them.
    inner: Filter | None = None
    colors: list[Color] = strawberry.field(default_factory=lambda: [Color.RED])


def _depth(filter_: Filter | None) -> int:
    return 0 if filter_ is None else 1 + _depth(filter_.inner)


class Allowed(BasePermission):
    message = "Not allowed."

    def has_permission(self, source: Any, info: strawberry.Info, **kwargs: Any) -> bool:
        return not kwargs.get("deny")


class AllowedLater(BasePermission):
    """Asked with an awaitable answer, which only the usual path awaits."""

    message = "Not allowed."

    async def has_permission(self, source: Any, info: strawberry.Info, **kwargs: Any) -> bool:
        return not kwargs.get("deny")


class SeesArguments(BasePermission):
    """Counts the names of the arguments it is asked with."""

    message = "Not allowed."

    def has_permission(self, source: Any, info: strawberry.Info, **kwargs: Any) -> bool:
        CALLS["seen:" + ",".join(sorted(kwargs))] += 1
        return True


class Renaming(FieldExtension):
    """A field extension other than permissions: its field's resolver is left to Strawberry's
    wrapper, which runs the extension."""

    def resolve(self, next_: Any, source: Any, info: strawberry.Info, **kwargs: Any) -> Any:
        return next_(source, info, **kwargs)

    async def resolve_async(
        self, next_: Any, source: Any, info: strawberry.Info, **kwargs: Any
    ) -> Any:
        result = await next_(source, info, **kwargs)
        return Adopted(pet=Pet(id="r", name="Renamed", color=Color.RED, owner=result.pet.owner))


def _pet(mode: str) -> Any:
    pet = Pet(id="p1", name="Rex", color=Color.RED, owner=Owner(name="Ada"), age=3)
    if mode == "null name":
        pet.name = None  # type: ignore[assignment]
    elif mode == "bad enum":
        pet.color = "purple"  # type: ignore[assignment]
    elif mode == "sitter":
        pet.sitter = Owner(name="Bob", nickname="B")
    elif mode == "owner of another type":
        pet.owner = Problem(message="not an owner")  # type: ignore[assignment]
    elif mode == "duck owner":  # an owner's attributes, not an Owner
        pet.owner = SimpleNamespace(name="Ada", nickname=None)
    elif mode == "an error in notes":
        pet.notes = ValueError("not a note")
    elif mode == "notes":
        pet.notes = {"fed": True}
    elif mode == "tags in a tuple":
        pet.tags = ("a", "b")  # type: ignore[assignment]
    elif mode == "tags in a generator":
        pet.tags = (tag for tag in ("a", "b"))  # type: ignore[assignment]
    elif mode == "no tags":
        pet.tags = None  # type: ignore[assignment]
    elif mode == "a null tag":
        pet.tags = ["a", None]  # type: ignore[list-item]
    # Strings and booleans of exactly str and bool complete as they are; anything else goes
    # through the scalar's serializer, as graphql-core's completion does.
    elif mode == "a name of a str subclass":
        pet.name = type("Name", (str,), {})("Rex")
        pet.owner = Owner(name=type("Name", (str,), {})("Ada"))
    elif mode == "a name that is a number":
        pet.name = 7  # type: ignore[assignment]
    elif mode == "a name that is a list":
        pet.name = ["Rex"]  # type: ignore[assignment]
    elif mode == "vaccinated as a number":
        pet.vaccinated = 1  # type: ignore[assignment]
    elif mode == "vaccinated as text":
        pet.vaccinated = "yes"  # type: ignore[assignment]
    elif mode == "not vaccinated":
        pet.vaccinated = False
    elif mode == "nicknames":
        pet.nicknames = ["Rexy", None]
    elif mode == "friends":
        pet.friends = [Pet(id="p4", name="Tom", color=Color.BLUE, owner=Owner(name="Ed"))]
    elif mode == "a duck among friends":
        pet.friends = [SimpleNamespace(name="Quack", color=Color.RED)]  # type: ignore[list-item]
    elif mode == "tags in a dict":
        pet.tags = {"a": "b"}  # type: ignore[assignment]
    elif mode == "friend":
        pet.friend = Pet(id="p3", name="Max", color=Color.BLUE, owner=Owner(name="Di"))
    elif mode == "duck friend":
        pet.friend = SimpleNamespace(name="Max")  # type: ignore[assignment]
    elif mode == "no id":
        pet.id = None  # type: ignore[assignment]
    elif mode == "duck":  # a pet's attributes, not a Pet
        return SimpleNamespace(**vars(pet))
    elif mode == "another type":
        return Owner(name="Ada")
    elif mode == "subclass":
        return type("Puppy", (Pet,), {})(id="p2", name="Pup", color=Color.BLUE, owner=Owner("Cy"))
    return pet


def _result(mode: str) -> Any:
    if mode == "problem":
        return Problem(message="nope", field="name")
    if mode == "raise":
        raise ValueError("the resolver failed")
    if mode == "none":
        return None
    if mode == "an error":  # returned, not raised
        return ValueError("returned")
    if mode == "not in the union":
        return Owner(name="Ada")
    if mode == "a string":
        return "adopted"
    return Adopted(pet=_pet(mode))


@strawberry.type
class Query:
    @strawberry.field
    def pet(self, mode: str = "ok") -> Pet:
        CALLS["pet"] += 1
        return cast(Pet, _pet(mode))

    @strawberry.field
    async def maybe_pet(self, mode: str = "ok") -> Pet | None:
        CALLS["maybe_pet"] += 1
        return None if mode == "none" else cast(Pet, _pet(mode))

    @strawberry.field
    def pets(self) -> list[Pet]:
        CALLS["pets"] += 1
        return [cast(Pet, _pet("ok"))]

    @strawberry.field
    def color(self, red: bool = True) -> Color:
        CALLS["color"] += 1
        return Color.RED if red else cast(Color, "purple")

    @strawberry.field
    def find(self, filter: Filter, limit: int | None = None) -> Pet:
        CALLS["find"] += 1
        tags = filter.tags
        colors = filter.colors
        return Pet(
            id=f"{_depth(filter)}-{limit}",
            name=filter.name,
            color=colors[0],
            owner=Owner(name="Ada"),
            tags=tags if tags is not None else [],
        )

    @strawberry.field
    def note(self, error: bool = False) -> JSON | None:
        CALLS["note"] += 1
        return ValueError("returned") if error else {"fed": True}

    @strawberry.field
    def named(self) -> Named:
        CALLS["named"] += 1
        return Shelter(name="Home", city="Oslo")

    @strawberry.field
    def whoami(self, info: strawberry.Info, shout: bool = False) -> str:
        CALLS["whoami"] += 1
        name = f"{info.field_name} at {info.path.key} of {info.parent_type.name}"
        return name.upper() if shout else name

    @strawberry.field
    def rooted(root: Any, suffix: str = "") -> str:
        CALLS["rooted"] += 1
        return f"{root!r}{suffix}"

    # Strawberry's wrapper keeps an info argument from the permissions only if it is named
    # "info".
    @strawberry.field(permission_classes=[SeesArguments])
    def odd(self, inf: strawberry.Info, level: int = 1) -> str:
        CALLS["odd"] += 1
        return f"{inf.field_name} {level}"

    @strawberry.field(permission_classes=[SeesArguments])
    def even(self, info: strawberry.Info, level: int = 1) -> str:
        CALLS["even"] += 1
        return f"{info.field_name} {level}"

    @strawberry.field
    def parented(self, parent: strawberry.Parent[Any]) -> str:
        CALLS["parented"] += 1
        return f"{self!r} {parent!r}"


@strawberry.type
class Mutation:
    @strawberry.mutation(permission_classes=[Allowed])
    async def adopt(self, name: str, mode: str = "ok", deny: bool = False) -> Result:
        CALLS["adopt"] += 1
        for run in WHILE_ADOPTING:
            run()
        return cast(Result, _result(mode))

    @strawberry.mutation
    def adopt_now(self, mode: str = "ok") -> Result:
        CALLS["adopt_now"] += 1
        return cast(Result, _result(mode))

    @strawberry.mutation
    async def count(self, by: int = 1) -> int:
        CALLS["count"] += 1
        return by

    @strawberry.mutation(permission_classes=[AllowedLater])
    async def adopt_later(self, name: str, deny: bool = False) -> Result:
        CALLS["adopt_later"] += 1
        return cast(Result, _result("ok"))

    @strawberry.mutation(extensions=[Renaming()])
    async def adopt_renamed(self, name: str) -> Result:
        CALLS["adopt_renamed"] += 1
        return cast(Result, _result("ok"))


def _schema() -> GatewaySchema:
    return GatewaySchema(
        query=Query,
        mutation=Mutation,
        types=[Shelter],
        execution_context_class=AcyclicExecutionContext,
        document_checks=DocumentChecks(document_cache(max_tokens=5000, maxsize=64), []),
    )


async def _context(connection: HTTPConnection) -> GatewayContext:
    return GatewayContext(
        service=cast(PayoutService, object()), organization=None, paging=PagingLimits(20, 100)
    )


def _view(*, compiled: bool) -> GatewayGraphQL:
    view = GatewayGraphQL(_schema(), context=_context, allow_queries_via_get=False)
    if not compiled:
        view._compiled = None
    return view


async def _post(view: GatewayGraphQL, body: dict[str, Any]) -> tuple[int, bytes]:
    transport = httpx.ASGITransport(app=view)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        response = await client.post("/graphql", json=body)
    return response.status_code, response.content


ADOPT = """mutation($name: String!, $mode: String!, $deny: Boolean!) {
  adopt(name: $name, mode: $mode, deny: $deny) {
    __typename
    ... on Adopted {
      pet {
        id name color age owner { name nickname } sitter { name } friend { name }
        tags nicknames friends { id name } vaccinated
      }
    }
    ... on Problem { message field }
  }
}"""
ADOPT_NOW = """mutation($mode: String!) {
  renamed: adoptNow(mode: $mode) { ... on Adopted { pet { ident: id name } } kind: __typename }
}"""
PET = """query($mode: String!) {
  pet(mode: $mode) {
    id name color owner { name } sitter { name } friend { id name } notes tags nicknames
    friends { name color } colors vaccinated
  }
}"""
MAYBE_PET = "query($mode: String!) { maybePet(mode: $mode) { __typename name color } }"
MODES = [
    "ok",
    "problem",
    "raise",
    "an error",
    "none",
    "not in the union",
    "a string",
    "null name",
    "bad enum",
    "sitter",
    "owner of another type",
    "another type",
    "subclass",
    "duck owner",
    "notes",
    "an error in notes",
    "friend",
    "duck friend",
    "tags in a tuple",
    "tags in a generator",
    "no tags",
    "a null tag",
    "nicknames",
    "friends",
    "a duck among friends",
    "tags in a dict",
    "no id",
    "duck",
    "a name of a str subclass",
    "a name that is a number",
    "a name that is a list",
    "vaccinated as a number",
    "vaccinated as text",
    "not vaccinated",
]

# (document, variables, the resolvers it calls): answered by the compiled plan where it covers
# the value, graphql-core's completion of the same value where not.
COVERED: list[tuple[str, dict[str, Any], str]] = [
    *((ADOPT, {"name": "Rex", "mode": mode, "deny": False}, "adopt") for mode in MODES),
    # The permission refuses before the resolver runs.
    (ADOPT, {"name": "Rex", "mode": "ok", "deny": True}, ""),
    *((ADOPT_NOW, {"mode": mode}, "adopt_now") for mode in MODES),
    *((PET, {"mode": mode}, "pet") for mode in MODES),
    *((MAYBE_PET, {"mode": mode}, "maybe_pet") for mode in ("ok", "none", "null name", "duck")),
    ("query { color }", {}, "color"),
    ("query { color(red: false) }", {}, "color"),
    ("query { note }", {}, "note"),
    ("query { note(error: true) }", {}, "note"),
    ("mutation { count(by: 3) }", {}, "count"),
    ("mutation($by: Int) { count(by: $by) }", {"by": 5}, "count"),
    ("mutation($by: Int) { count(by: $by) }", {}, "count"),
    ("{ named { __typename name ... on Shelter { city } } }", {}, "named"),
    ("query { whoami }", {}, "whoami"),
    ("query($s: Boolean!) { me: whoami(shout: $s) }", {"s": True}, "whoami"),
    ('query { rooted(suffix: "!") }', {}, "rooted"),
    ("query { parented }", {}, "parented"),
    ("query { odd }", {}, "seen:inf,level odd"),
    ("query { even(level: 2) }", {}, "seen:level even"),
    ('mutation { adoptLater(name: "Rex") { __typename } }', {}, "adopt_later"),
    ('mutation { adoptLater(name: "Rex", deny: true) { __typename } }', {}, ""),
    (
        'mutation { adoptRenamed(name: "Rex") { ... on Adopted { pet { name } } } }',
        {},
        "adopt_renamed",
    ),
]
FIND = "query($f: Filter!, $limit: Int) { find(filter: $f, limit: $limit) { id name tags color } }"
FIND_WITH_DEFAULT = 'query($f: Filter! = {name: "Dflt"}) { find(filter: $f) { id name tags } }'


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"name": "leaf"}
    for _ in range(depth):
        value = {"name": "n", "inner": value}
    return value


COVERED += [
    (FIND, {"f": {"name": "Rex"}}, "find"),
    (FIND, {"f": {"name": "Rex", "tags": "one"}, "limit": 3}, "find"),
    (FIND, {"f": {"name": "Rex", "tags": ["a", "b"], "colors": ["BLUE"]}}, "find"),
    (FIND, {"f": {"name": "Rex", "tags": None, "inner": {"name": "in"}}, "limit": None}, "find"),
    (FIND, {"f": _nested(150)}, "find"),
    (FIND, {"f": {"name": "Rex"}, "unknown": 1}, "find"),
    (FIND_WITH_DEFAULT, {}, "find"),
    (FIND_WITH_DEFAULT, {"f": {"name": "Sent"}}, "find"),
    ('query($m: String = "sitter") { pet(mode: $m) { sitter { name } } }', {}, "pet"),
    ('query($m: String = "sitter") { pet(mode: $m) { sitter { name } } }', {"m": "ok"}, "pet"),
]
# Documents the plans do not cover: Strawberry's execution answers them, each resolver once.
NOT_COVERED: list[tuple[str, dict[str, Any], str]] = [
    ("{ pets { name } }", {}, "pets"),
    ("{ pet { name } color }", {}, "pet color"),
    ("{ pet { ...P } } fragment P on Pet { name }", {}, "pet"),
    ("query($s: Boolean!) { pet { name @skip(if: $s) } }", {"s": True}, "pet"),
    ("{ pet { name name } }", {}, "pet"),
    ("{ pet { a: name a: name } }", {}, "pet"),
    ('{ pet(mode: "sitter") { sitter { name } sitter { nickname } } }', {}, "pet"),
    ("mutation { count(by: 1) other: count(by: 2) }", {}, "count count"),
]
# Refused before any resolver runs: the usual path answers, nothing is resolved.
REFUSED: list[tuple[str, dict[str, Any]]] = [
    (ADOPT, {"name": "Rex", "mode": 3, "deny": False}),
    (ADOPT, {"name": "Rex"}),
    ("mutation($by: Int) { count(by: $by) }", {"by": "many"}),
    ("{ nope }", {}),
    ("{ pet { name }", {}),
    ("{ __typename }", {}),
    (FIND, {"f": _nested(260)}),
    (FIND, {"f": {"name": "Rex", "colour": "RED"}}),
    (FIND, {"f": {"tags": ["a"]}}),
    (FIND, {"f": {"name": 3}}),
    (FIND, {"f": {"name": "Rex", "colors": ["GREEN"]}}),
    (FIND, {"f": {"name": "Rex"}, "limit": "3"}),
    (FIND, {"f": None}),
    (FIND, {"f": ["not", "an", "object"]}),
    # Valid but for the variable's type: only validation refuses it.
    ("query($m: Int) { pet(mode: $m) { name } }", {"m": 3}),
]


async def _answers(
    view: GatewayGraphQL, body: dict[str, Any], times: int = 2
) -> list[tuple[int, bytes]]:
    return [await _post(view, body) for _ in range(times)]


@pytest.mark.parametrize(("document", "variables", "resolver"), [*COVERED, *NOT_COVERED])
async def test_answers_as_the_usual_execution_and_resolves_once(
    document: str, variables: dict[str, Any], resolver: str
) -> None:
    body = {"query": document, "variables": variables}
    CALLS.clear()
    calls = Counter(resolver.split() * 2)
    expected = await _answers(_view(compiled=False), body)
    assert calls == CALLS
    CALLS.clear()
    # The first request validates the document through the usual path; the second may take
    # the plan.
    assert await _answers(_view(compiled=True), body) == expected
    assert calls == CALLS


@pytest.mark.parametrize(("document", "variables"), REFUSED)
async def test_refused_requests_are_answered_as_before(
    document: str, variables: dict[str, Any]
) -> None:
    body = {"query": document, "variables": variables}
    CALLS.clear()
    expected = await _answers(_view(compiled=False), body)
    assert await _answers(_view(compiled=True), body) == expected
    assert not CALLS


class CountingView(GatewayGraphQL):
    """Counts the requests that reach Strawberry's execution."""

    usual = 0

    async def execute_single(self, *args: Any, **kwargs: Any) -> Any:
        self.usual += 1
        return await super().execute_single(*args, **kwargs)


def _counting() -> CountingView:
    return CountingView(_schema(), context=_context, allow_queries_via_get=False)


@pytest.mark.parametrize(
    ("document", "variables"),
    [
        (ADOPT, {"name": "Rex", "mode": "ok", "deny": False}),
        (ADOPT, {"name": "Rex", "mode": "problem", "deny": False}),
        (ADOPT_NOW, {"mode": "sitter"}),
        (PET, {"mode": "ok"}),
        (MAYBE_PET, {"mode": "none"}),
        ("mutation { count(by: 3) }", {}),
        ("{ named { __typename name ... on Shelter { city } } }", {}),
    ],
)
async def test_covered_documents_take_the_plan_once_validated(
    document: str, variables: dict[str, Any]
) -> None:
    view = _counting()
    body = {"query": document, "variables": variables}
    await _answers(view, body, times=3)
    assert view.usual == 1  # the first request only


@pytest.mark.parametrize(
    ("document", "variables"),
    [
        (ADOPT, {"name": "Rex", "mode": "raise", "deny": False}),
        (ADOPT, {"name": "Rex", "mode": "ok", "deny": True}),
        (ADOPT, {"name": "Rex", "mode": "null name", "deny": False}),
        (PET, {"mode": "subclass"}),
        ("{ pets { name } }", {}),
    ],
)
async def test_errors_and_uncovered_values_reach_the_usual_execution(
    document: str, variables: dict[str, Any]
) -> None:
    view = _counting()
    await _answers(view, {"query": document, "variables": variables}, times=3)
    assert view.usual == 3


async def test_a_replayed_outcome_is_used_once() -> None:
    view = _view(compiled=True)
    body = {"query": ADOPT, "variables": {"name": "Rex", "mode": "raise", "deny": False}}
    await _post(view, body)
    contexts: list[GatewayContext] = []

    async def recording(connection: HTTPConnection) -> GatewayContext:
        context = await _context(connection)
        contexts.append(context)
        return context

    view._build_context = recording
    CALLS.clear()
    status, content = await _post(view, body)
    assert status == 200
    assert json.loads(content)["errors"][0]["path"] == ["adopt"]
    assert CALLS == {"adopt": 1}
    assert contexts[0].replayed_root is None


@pytest.mark.parametrize("mode", ["raise", "null name"])
async def test_the_replay_holds_when_the_document_is_parsed_again(mode: str) -> None:
    view = _view(compiled=True)
    body = {"query": ADOPT, "variables": {"name": "Rex", "mode": mode, "deny": False}}
    expected = await _post(_view(compiled=False), body)
    await _post(view, body)
    checks = cast(GatewaySchema, view.schema).document_checks
    # The cache drops the document while the resolver runs: the usual path parses it again.
    WHILE_ADOPTING.append(checks.documents.parsed.cache_clear)  # type: ignore[attr-defined]
    CALLS.clear()
    try:
        assert await _post(view, body) == expected
    finally:
        WHILE_ADOPTING.clear()
    assert CALLS == {"adopt": 1}


def _plan_of(schema: GatewaySchema, document: str) -> Any:
    """The compiled plan of ``document``'s one operation (not validated here)."""
    compiled = compiled_operations(schema)
    assert compiled is not None
    operation = parse(document).definitions[0]
    assert isinstance(operation, OperationDefinitionNode)
    return compiled._plan_for(operation, fragments=False)


@pytest.mark.parametrize(
    ("document", "direct"),
    [
        (ADOPT, True),  # a permission, asked by the plan
        ("mutation { count }", True),
        ("query { whoami }", True),
        ('query { rooted(suffix: "!") }', True),
        ("query { parented }", True),
        ('mutation { adoptLater(name: "Rex") { __typename } }', True),  # asked; answers later
        ('mutation { adoptRenamed(name: "Rex") { __typename } }', False),  # another extension
        ("{ named { name } }", True),
    ],
)
def test_resolvers_are_called_directly_unless_the_field_has_other_extensions(
    document: str, direct: bool
) -> None:
    plan = _plan_of(_schema(), document)
    assert plan is not None
    assert (plan.direct is not None) is direct


async def test_a_permission_answering_later_is_awaited_by_the_usual_path() -> None:
    view = _counting()
    body = {"query": 'mutation { adoptLater(name: "Rex") { __typename } }'}
    CALLS.clear()
    answers = await _answers(view, body, times=3)
    assert [json.loads(content) for _, content in answers] == [
        {"data": {"adoptLater": {"__typename": "Adopted"}}}
    ] * 3
    assert view.usual == 3  # the plan never resolves it: the permission's answer is awaitable
    assert CALLS == {"adopt_later": 3}


def test_the_gateway_s_root_fields_are_called_directly() -> None:
    plan = _plan_of(build_schema(), GATEWAY_ADD)
    assert plan is not None and plan.direct is not None
    assert [type(p).__name__ for p in plan.direct.permissions] == ["IsAuthenticated"]
    # Both arguments by converters compiled for their types, not convert_argument.
    assert [(name, convert is not None) for name, _, _, convert in plan.direct.arguments] == [
        ("input", True),
        ("idempotencyKey", True),
    ]


def test_arguments_of_kinds_not_compiled_are_converted_by_strawberry() -> None:
    plan = _plan_of(_schema(), FIND)
    assert plan is not None and plan.direct is not None
    # Filter holds lists, which input_conversion does not compile.
    assert [(name, convert is not None) for name, _, _, convert in plan.direct.arguments] == [
        ("filter", False),
        ("limit", True),
    ]


def test_schemas_with_extensions_or_handlers_are_not_compiled() -> None:
    assert compiled_operations(_schema()) is not None
    assert compiled_operations(build_schema()) is not None
    with_extension = _schema()
    with_extension.extensions = [strawberry.extensions.MaskErrors]
    assert compiled_operations(with_extension) is None
    plain = strawberry.Schema(query=Query, execution_context_class=AcyclicExecutionContext)
    assert compiled_operations(plain) is None


# The gateway's own schema and documents, over a socket: each request sent twice, the first
# answered by the usual path (it validates the document), the second by the plan.
GATEWAY_ADD = """
mutation Add($input: AddBankAccountInput!, $key: String) {
  addBankAccount(input: $input, idempotencyKey: $key) {
    __typename
    ... on AddBankAccountSuccess { bankAccount { id last4 isDefault status holderName } }
    ... on UserError { message code retryable }
    ... on ValidationError { field issues { field message } }
  }
}
"""


def _add_input(**bank: Any) -> dict[str, Any]:
    return {"bankAccount": {"accountNumber": "000123456789", "holderName": "Ada", **bank}}


@pytest.fixture
def fake_providers() -> dict[Provider, FakeProvider]:
    return {provider: FakeProvider(provider) for provider in Provider}


@pytest.fixture
def gateway(
    tmp_path: Path, fake_providers: dict[Provider, FakeProvider]
) -> Iterator[RunningGateway]:
    with running_gateway(tmp_path, providers=fake_providers, refresh_interval_seconds=0) as gw:
        yield gw


@pytest.fixture
def usual_executions(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The documents of the requests Strawberry's execution answered."""
    seen: list[str] = []
    usual = GatewayGraphQL.execute_single

    async def counted(self: GatewayGraphQL, *args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs["request_data"].query)
        return await usual(self, *args, **kwargs)

    monkeypatch.setattr(GatewayGraphQL, "execute_single", counted)
    return seen


async def _twice(
    gateway: RunningGateway, body: dict[str, Any], org: str | None = "commet-a"
) -> list[Any]:
    # One request id for both: a masked error names it, and the answers must read alike.
    headers = {**(gateway.headers(org) if org else {}), "X-Request-Id": "compare-paths"}
    answers = []
    async with httpx.AsyncClient() as client:
        for _ in range(2):
            response = await client.post(gateway.graphql_url, json=body, headers=headers)
            answers.append((response.status_code, response.json()))
    return answers


async def test_the_gateway_s_add_takes_the_plan_and_answers_alike(
    gateway: RunningGateway,
    fake_providers: dict[Provider, FakeProvider],
    usual_executions: list[str],
) -> None:
    # The same idempotency key: the second add is the first one's replay, the same answer.
    body = {"query": GATEWAY_ADD, "variables": {"input": _add_input(), "key": "k-1"}}
    first, second = await _twice(gateway, body)
    assert first == second
    assert first[1]["data"]["addBankAccount"]["__typename"] == "AddBankAccountSuccess"
    assert usual_executions == [GATEWAY_ADD]
    assert fake_providers[Provider.COMMET].calls["add_bank_account"] == 1


@pytest.mark.parametrize(
    ("variables", "org", "fails_with"),
    [
        ({"input": _add_input(routingNumber="021000022")}, "commet-a", None),
        ({"input": _add_input(), "key": "x" * 256}, "commet-a", None),
        ({"input": _add_input()}, "commet-a", domain.NotFoundError("none")),
        ({"input": _add_input()}, "commet-a", RuntimeError("secret internals")),
        ({"input": _add_input()}, None, None),
    ],
)
async def test_the_gateway_s_errors_read_alike_on_both_paths(
    gateway: RunningGateway,
    fake_providers: dict[Provider, FakeProvider],
    variables: dict[str, Any],
    org: str | None,
    fails_with: Exception | None,
) -> None:
    fake_providers[Provider.COMMET].fail_with = fails_with
    first, second = await _twice(gateway, {"query": GATEWAY_ADD, "variables": variables}, org)
    assert first == second
    assert "secret internals" not in str(first)
