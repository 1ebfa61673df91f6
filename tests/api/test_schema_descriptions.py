"""Every part of the public schema says what it is in GraphiQL's docs pane: no blank entries."""

from __future__ import annotations

from enum import StrEnum

import pytest
from graphql import (
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLInterfaceType,
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLSchema,
    specified_scalar_types,
)
from graphql import build_schema as build_sdl

from payout_gateway.graphql.schema import build_schema
from payout_gateway.graphql.types import _graphql_enum


def _blank(description: str | None) -> bool:
    return description is None or not description.strip()


def undescribed(schema: GraphQLSchema) -> list[str]:
    """Schema coordinates (``Type``, ``Type.field``, ``Type.field(arg:)``, ``Enum.VALUE``) of
    every public type, field, argument, input field and enum value without a description.
    Introspection types (``__*``) and GraphQL's built-in scalars are not the schema's own."""
    missing: list[str] = []
    for name, named in sorted(schema.type_map.items()):
        if name.startswith("__") or name in specified_scalar_types:
            continue
        missing.extend(_undescribed_type(name, named))
    return missing


def _undescribed_type(name: str, named: GraphQLNamedType) -> list[str]:
    missing = [name] if _blank(named.description) else []
    if isinstance(named, GraphQLObjectType | GraphQLInterfaceType):
        for field_name, field in named.fields.items():
            if _blank(field.description):
                missing.append(f"{name}.{field_name}")
            missing.extend(
                f"{name}.{field_name}({arg_name}:)"
                for arg_name, arg in field.args.items()
                if _blank(arg.description)
            )
    elif isinstance(named, GraphQLInputObjectType):
        missing.extend(
            f"{name}.{field_name}"
            for field_name, field in named.fields.items()
            if _blank(field.description)
        )
    elif isinstance(named, GraphQLEnumType):
        missing.extend(
            f"{name}.{value_name}"
            for value_name, value in named.values.items()
            if _blank(value.description)
        )
    return missing


def test_every_type_field_argument_input_field_and_enum_value_has_a_description() -> None:
    missing = undescribed(build_schema()._schema)
    assert missing == [], f"{len(missing)} schema elements have no description:\n" + "\n".join(
        missing
    )


def test_the_walk_finds_each_kind_of_undescribed_element() -> None:
    """The check itself: a schema describing nothing is reported in full, kind by kind."""
    bare = build_sdl(
        """
        type Query { things(first: Int): [Thing!]! }
        type Thing { name: String! kind: Kind! }
        input Filter { name: String }
        enum Kind { BIG SMALL }
        union Any = Thing
        interface Named { name: String! }
        scalar Stamp
        type Mutation { add(filter: Filter): Boolean }
        """
    )
    assert undescribed(bare) == [
        "Any",
        "Filter",
        "Filter.name",
        "Kind",
        "Kind.BIG",
        "Kind.SMALL",
        "Mutation",
        "Mutation.add",
        "Mutation.add(filter:)",
        "Named",
        "Named.name",
        "Query",
        "Query.things",
        "Query.things(first:)",
        "Stamp",
        "Thing",
        "Thing.name",
        "Thing.kind",
    ]


def test_a_domain_enum_value_without_a_description_is_refused_at_registration() -> None:
    """A member added to a domain enum cannot reach the schema undescribed."""

    class Colour(StrEnum):
        RED = "RED"
        BLUE = "BLUE"

    with pytest.raises(ValueError, match="Colour: describe exactly its values"):
        _graphql_enum(Colour, description="Colours.", values={Colour.RED: "Red."})
