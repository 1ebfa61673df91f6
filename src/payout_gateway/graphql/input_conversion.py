"""Input objects built by converters compiled once per input type, not re-derived per request.

Strawberry converts an argument by walking its type on every request (field types resolved,
names converted, a chain of isinstance checks per value): ~80 µs for one AddBankAccountInput,
about a fifth of the request's CPU, against ~10 µs with compiled converters. ``from_input`` is
the hook Strawberry documents for input types that build their own value; the converters
compiled here do what ``strawberry.types.arguments.convert_argument`` does for the kinds of
fields our inputs have (scalars, enums, optionals, nested inputs) and refuse any other kind.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import MISSING
from typing import Any

from strawberry.relay import GlobalID
from strawberry.scalars import is_scalar
from strawberry.schema.config import StrawberryConfig
from strawberry.types.arguments import InputContext
from strawberry.types.base import (
    StrawberryMaybe,
    StrawberryOptional,
    StrawberryType,
    get_object_definition,
)
from strawberry.types.enum import StrawberryEnumDefinition
from strawberry.types.scalar import ScalarDefinition, ScalarWrapper
from strawberry.types.unset import UNSET

Convert = Callable[[Any], Any]
ScalarRegistry = Mapping[object, ScalarWrapper | ScalarDefinition]


def _unchanged(value: Any) -> Any:
    """Scalars and enums: graphql-core already coerced them to their Python values."""
    return value


class _InputObject:
    """Builds one input class from its GraphQL value (keyed by GraphQL field names)."""

    def __init__(self, cls: type, implicit_nones: dict[str, None]) -> None:
        self.cls = cls
        # Like Strawberry: fields without a default start as None; present fields overwrite.
        self.implicit_nones = implicit_nones
        # (GraphQL name, Python name, converter); filled after this object is registered,
        # so that an input type reaching itself compiles.
        self.fields: list[tuple[str, str, Convert]] = []

    def __call__(self, value: Any) -> Any:
        if value is None or value is UNSET:
            return value
        return self.build(self.cls, value)

    def build(self, cls: type, value: Mapping[str, Any]) -> Any:
        kwargs: dict[str, Any] = dict(self.implicit_nones)
        for graphql_name, python_name, convert in self.fields:
            if graphql_name in value:
                kwargs[python_name] = convert(value[graphql_name])
        return cls(**kwargs)


class _Compiler:
    def __init__(self, config: StrawberryConfig, scalar_registry: ScalarRegistry) -> None:
        self.config = config
        self.scalar_registry = scalar_registry
        self.objects: dict[type, _InputObject] = {}

    def convert(self, type_: StrawberryType | type) -> Convert:
        # Maybe extends Optional and has its own null rules: not something our inputs use.
        if isinstance(type_, StrawberryOptional) and not isinstance(type_, StrawberryMaybe):
            return self.convert(type_.of_type)
        if isinstance(type_, StrawberryEnumDefinition) or (
            type_ is not GlobalID and is_scalar(type_, self.scalar_registry)
        ):
            return _unchanged
        if isinstance(type_, type):
            return self.input_object(type_)
        raise TypeError(f"no compiled conversion for input fields of type {type_!r}")

    def input_object(self, cls: type) -> _InputObject:
        if (compiled := self.objects.get(cls)) is not None:
            return compiled
        definition = get_object_definition(cls)
        if (
            definition is None
            or not definition.is_input
            or definition.from_input not in (None, build_input)
        ):
            raise TypeError(f"no compiled conversion for {cls!r}: not a plain input type")
        compiled = self.objects[cls] = _InputObject(
            cls,
            {
                field.python_name: None
                for field in definition.fields
                if field.default_value is MISSING and field.default_factory is MISSING
            },
        )
        try:
            compiled.fields = [
                (
                    self.config.name_converter.from_field(field),
                    field.python_name,
                    self.convert(field.resolve_type(type_definition=definition)),
                )
                for field in definition.fields
            ]
        except TypeError:
            del self.objects[cls]  # never left half compiled, to build with its fields missing
            raise
        return compiled


def argument_converter(
    type_: StrawberryType | type, config: StrawberryConfig, scalar_registry: ScalarRegistry
) -> Convert | None:
    """A converter compiled for a field argument of ``type_`` (graphql/compiled.py's direct
    calls), doing what ``convert_argument`` does for it; None for a kind not compiled here,
    which ``convert_argument`` must convert."""
    try:
        return _Compiler(config, scalar_registry).convert(type_)
    except TypeError:
        return None


class _CompiledInputs:
    """The ``from_input`` hook: compiles for the schema that calls it, then reuses that."""

    def __init__(self) -> None:
        self._compiler: _Compiler | None = None

    def __call__(self, cls: type, value: Mapping[str, Any], context: InputContext) -> Any:
        compiler = self._compiler
        if (
            compiler is None
            or compiler.config is not context.config
            or compiler.scalar_registry is not context.scalar_registry
        ):
            compiler = self._compiler = _Compiler(context.config, context.scalar_registry)
        return compiler.input_object(cls).build(cls, value)


build_input = _CompiledInputs()


def use_compiled_conversion(*input_types: type) -> None:
    """Have Strawberry build these input types (and the inputs nested in them) with
    converters compiled on first use."""
    for cls in input_types:
        definition = get_object_definition(cls, strict=True)
        definition.from_input = build_input
