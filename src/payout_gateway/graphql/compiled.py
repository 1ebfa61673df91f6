"""One-field operations executed by a plan compiled once per document, graphql-core's and
Strawberry's own execution for everything else.

Around the resolver of an ``addBankAccount``, Strawberry's ``Schema.execute`` and graphql-core's
executor cost about three times what the request needs (bench/PROFILE.md, thirteenth round:
0.98 M instructions for the HTTP and GraphQL layers against 0.23 M for a path written by hand
for the one document). Most of it is generality paid again on every request: the extension
phases, the execution context, the serial reducer, and a completion that decides per value what
the document decided once. For an operation selecting one root field, a plan made the first time
its (cached, validated) document is executed holds what the completion needs: per possible
type of the field's value, its response keys in order, each a ``__typename``, or a field
Strawberry reads from an attribute (``execution._plain_fields``), completed as graphql-core
completes it.

What runs per request is the semantic part, each by graphql-core's or Strawberry's own code:
the variables coerced (``coerce_input_value``, with the signatures ``get_variable_values``
would build made once), the arguments (``get_argument_values``), the field's resolver as
graphql-core calls it (Strawberry's wrapper: permissions, argument conversion), the value's
type resolved by the union's own resolver, leaves by their scalars' ``coerce_output_value``.

Anything the plan does not cover gives way to the usual path:

- before the resolver runs (a document not yet validated, several operations, variables or
  arguments refused, a schema with extensions or exception handlers): ``execute`` returns None
  and the view executes the request as before, which answers as it always did;
- after it ran (the resolver raised, or a value the plan cannot complete: a null where the type
  says non-null, a value of no possible type, an awaitable attribute): the field must not be
  resolved again, a mutation would run twice. ``execute`` records the resolver's outcome on the
  context (``GatewayContext.replayed_root``) and returns None; the usual path then executes the
  whole operation, and ``AcyclicExecutionContext`` hands graphql-core that outcome in place of a
  second call to the resolver. Errors, nulls and masking are then graphql-core's and
  Strawberry's own, from the same value.

Tests (tests/api/test_compiled_operations.py) compare the answers of both paths.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple, TypeGuard, cast

from graphql import (
    DirectiveNode,
    FieldNode,
    FragmentSpreadNode,
    GraphQLAbstractType,
    GraphQLBoolean,
    GraphQLError,
    GraphQLField,
    GraphQLID,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLLeafType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLResolveInfo,
    GraphQLSchema,
    GraphQLString,
    InlineFragmentNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    Undefined,
    VariableDefinitionNode,
    get_operation_ast,
    is_abstract_type,
    is_leaf_type,
    is_object_type,
)
from graphql.execution.get_variable_signature import (
    GraphQLVariableSignature,
    get_variable_signature,
)
from graphql.execution.values import (
    VariableValues,
    VariableValueSource,
    get_argument_values,
    input_is_nested_too_deeply,
)
from graphql.language.parser import MAX_NESTING_DEPTH
from graphql.pyutils import Path
from graphql.type.definition import GraphQLResolveInfoHelpers
from graphql.utilities import coerce_input_value
from strawberry import relay
from strawberry.execution.is_awaitable import optimized_is_awaitable
from strawberry.http import GraphQLRequestData
from strawberry.permission import BasePermission, PermissionExtension
from strawberry.schema.config import StrawberryConfig
from strawberry.schema.schema_converter import GraphQLCoreConverter
from strawberry.types import ExecutionResult
from strawberry.types.arguments import convert_argument
from strawberry.types.base import StrawberryType
from strawberry.types.field import StrawberryField
from strawberry.types.scalar import ScalarDefinition, ScalarWrapper

from payout_gateway.graphql.context import GatewayContext
from payout_gateway.graphql.documents import DocumentChecks
from payout_gateway.graphql.execution import (
    AcyclicExecutionContext,
    ReplayedRoot,
    _checks_itself,
    _gather,
    _holds,
    _is_basic,
    _plain_fields,
    _PlainField,
)
from payout_gateway.graphql.input_conversion import Convert, argument_converter


class _CannotComplete(Exception):
    """A value the plan leaves to graphql-core's completion."""


class _Ineligible(Exception):
    """A document the plan does not cover."""


# Strawberry's check, which it has graphql-core use for every execution.
_is_awaitable = cast("Callable[[Any], TypeGuard[Awaitable[Any]]]", optimized_is_awaitable)
_complete_leaf = AcyclicExecutionContext.complete_leaf_value


def _untracked(values: Sequence[Any]) -> None:
    # graphql-core's ``track`` lets a resolver hand it work to await before the operation ends;
    # nothing here would await it, so a resolver that asks must not take this path.
    raise RuntimeError("async work tracked on a compiled operation")


_HELPERS = GraphQLResolveInfoHelpers(gather=_gather, track=_untracked)


def _is_null(value: Any, *, non_null: bool) -> bool:
    """Whether ``value`` completes as null; ``_CannotComplete`` for a null where the type
    says non-null (graphql-core's error)."""
    if value is None or value is Undefined:
        if non_null:
            raise _CannotComplete
        return True
    return False


class _Field(NamedTuple):
    """One response key of an object: how to complete it from the object (None:
    ``__typename``)."""

    key: str
    completion: _PlainCompletion | _ListCompletion | None


@dataclass(frozen=True, slots=True)
class _Object:
    """How to complete a value of ``object_type`` for one selection set."""

    object_type: GraphQLObjectType
    fields: tuple[_Field, ...]

    def complete(self, value: Any) -> dict[str, Any]:
        completed: dict[str, Any] = {}
        for key, completion in self.fields:
            if completion is None:
                completed[key] = self.object_type.name
            else:
                completed[key] = completion.complete(self.object_type, value)
        return completed

    def complete_checked(self, value: Any) -> dict[str, Any]:
        """``complete`` for a value graphql-core first checks with the type's ``is_type_of``
        (Strawberry's own, which reads no info: see ``execution._checks_itself``)."""
        is_type_of = self.object_type.is_type_of
        if is_type_of is not None and not is_type_of(value, None):  # type: ignore[arg-type]
            raise _CannotComplete
        return self.complete(value)


# graphql-core's own scalars whose ``serialize`` returns a value of exactly this type as it
# is (``serialize_string``, ``serialize_id``, ``serialize_boolean``). A schema that overrides
# one (Strawberry's ``scalar_overrides``) has another object there, and no pass-through.
_SERIALIZED_AS_IS: dict[int, type] = {
    id(GraphQLString): str,
    id(GraphQLID): str,
    id(GraphQLBoolean): bool,
}


def _passes_through(leaf_type: GraphQLLeafType | None) -> type | None:
    """The Python type whose values ``leaf_type`` serializes unchanged, if any."""
    if leaf_type is None:
        return None
    return _SERIALIZED_AS_IS.get(id(leaf_type))


@dataclass(frozen=True, slots=True)
class _PlainCompletion:
    """A field ``execution._plain_fields`` found: an attribute holding a scalar, an enum or an
    object (then ``subfields``), or a relay Node's id."""

    plain: _PlainField
    subfields: _Object | None
    # A value of exactly this type is its own completion (see _SERIALIZED_AS_IS): a string
    # or a boolean field, a page's most frequent leaves, skips the checks and the serializer
    # call that would hand it back unchanged.
    passthrough: type | None = None

    def complete(self, parent: GraphQLObjectType, source: Any) -> Any:
        """What ``AcyclicExecutionContext.execute_field`` gives for the field, or
        ``_CannotComplete`` where it would take graphql-core's path or report an error."""
        plain = self.plain
        if plain.node_type is not None:
            node_id = (
                getattr(source, plain.attribute, None) if type(source) is plain.node_type else None
            )
            if node_id is None or optimized_is_awaitable(node_id):
                raise _CannotComplete
            result: Any = relay.GlobalID(type_name=parent.name, node_id=str(node_id))
        else:
            result = plain.read(source, plain.attribute)
            if type(result) is self.passthrough:
                return result
            if optimized_is_awaitable(result) or isinstance(result, Exception):
                raise _CannotComplete
        if _is_null(result, non_null=plain.non_null):
            return None
        if plain.leaf_type is not None:
            return _complete_leaf(plain.leaf_type, result)
        assert self.subfields is not None
        return self.subfields.complete_checked(result)


@dataclass(frozen=True, slots=True)
class _ListCompletion:
    """A list Strawberry reads from an attribute (no resolver, arguments or extensions), of
    scalars, enums or objects (then ``items``): completed as graphql-core's
    ``complete_list_value`` completes a list or a tuple."""

    read: Callable[[Any, str], Any]
    attribute: str
    non_null: bool
    item_non_null: bool
    item_leaf: GraphQLLeafType | None
    items: _Object | None

    def complete(self, parent: GraphQLObjectType, source: Any) -> Any:
        result = self.read(source, self.attribute)
        if _is_null(result, non_null=self.non_null):
            return None
        if type(result) not in (list, tuple):  # another iterable, or none: graphql-core's
            raise _CannotComplete
        completed: list[Any] = []
        for item in result:
            if optimized_is_awaitable(item) or isinstance(item, Exception):
                raise _CannotComplete
            if _is_null(item, non_null=self.item_non_null):
                completed.append(None)
            elif self.item_leaf is not None:
                completed.append(_complete_leaf(self.item_leaf, item))
            else:
                assert self.items is not None
                completed.append(self.items.complete_checked(item))
        return completed


def _list_completion(
    schema: GraphQLSchema,
    plain_fields: Mapping[int, _PlainField],
    field: GraphQLField,
    node: FieldNode,
) -> _ListCompletion:
    """The completion of a list field Strawberry reads from an attribute without reading the
    info (as ``execution._plain_fields`` finds scalar and object fields): a list of scalars,
    enums, or objects that check their own values."""
    definition = (field.extensions or {}).get(GraphQLCoreConverter.DEFINITION_BACKREF)
    if (
        not isinstance(definition, StrawberryField)
        or field.args
        or not _is_basic(definition, field)
    ):
        raise _Ineligible
    field_type = field.type
    non_null = isinstance(field_type, GraphQLNonNull)
    list_type = field_type.of_type if isinstance(field_type, GraphQLNonNull) else field_type
    if not isinstance(list_type, GraphQLList):
        raise _Ineligible
    item_type = list_type.of_type
    item_non_null = isinstance(item_type, GraphQLNonNull)
    item = item_type.of_type if isinstance(item_type, GraphQLNonNull) else item_type
    read, attribute = definition.default_resolver, definition.python_name
    if is_leaf_type(item):
        return _ListCompletion(read, attribute, non_null, item_non_null, item, None)
    if isinstance(item, GraphQLObjectType) and _checks_itself(item):
        items = _object_plan(schema, plain_fields, item, node.selection_set)
        return _ListCompletion(read, attribute, non_null, item_non_null, None, items)
    raise _Ineligible  # lists of lists, of interfaces or of unions


class _Variable(NamedTuple):
    signature: GraphQLVariableSignature
    # Left to graphql-core when no value is sent: a default to coerce, or a non-null type.
    needed: bool
    # Whether a value may nest deeper than graphql-core allows (a recursive input type).
    may_nest_too_deeply: bool


class _Variables(tuple[_Variable, ...]):
    """An operation's variables, their signatures made once: coerced as graphql-core's
    ``get_variable_values`` coerces values it accepts."""

    __slots__ = ()

    def coerce(self, inputs: Mapping[str, Any]) -> VariableValues | None:
        """The values graphql-core would coerce; None for any it would refuse or where it
        would use a default (graphql-core then says why, or applies it)."""
        sources: dict[str, VariableValueSource] = {}
        coerced: dict[str, Any] = {}
        for signature, needed, may_nest_too_deeply in self:
            name = signature.name
            value = inputs.get(name, Undefined)
            if value is Undefined:
                if needed:
                    return None
                sources[name] = VariableValueSource(signature)
                continue
            sources[name] = VariableValueSource(signature, value)
            if may_nest_too_deeply and input_is_nested_too_deeply(value, signature.type):
                return None
            try:
                coerced_value = coerce_input_value(value, signature.type)
            except Exception:  # a scalar's own failure, or a recursion: graphql-core's to report
                return None
            if coerced_value is Undefined:
                return None
            coerced[name] = coerced_value
        return VariableValues(sources, coerced)


def _nesting_depth(type_: GraphQLInputType, seen: frozenset[str] = frozenset()) -> int | None:
    """How deep graphql-core's ``input_is_nested_too_deeply`` can find a value of ``type_``
    nested; None for a recursive input type (no bound)."""
    if isinstance(type_, GraphQLNonNull):
        return _nesting_depth(type_.of_type, seen)
    if isinstance(type_, GraphQLList):
        inner = _nesting_depth(type_.of_type, seen)
        return None if inner is None else inner + 1
    if isinstance(type_, GraphQLInputObjectType):
        if type_.name in seen:
            return None
        depths = [
            _nesting_depth(field.type, seen | {type_.name}) for field in type_.fields.values()
        ]
        if None in depths:
            return None
        return 1 + max((depth for depth in depths if depth is not None), default=0)
    return 0


def _variables(schema: GraphQLSchema, definitions: Sequence[VariableDefinitionNode]) -> _Variables:
    variables = []
    for definition in definitions:
        signature = get_variable_signature(schema, definition)
        if isinstance(signature, GraphQLError):
            raise _Ineligible
        depth = _nesting_depth(signature.type)
        variables.append(
            _Variable(
                signature,
                needed=definition.default_value is not None
                or isinstance(signature.type, GraphQLNonNull),
                may_nest_too_deeply=depth is None or depth > MAX_NESTING_DEPTH,
            )
        )
    return _Variables(variables)


# A permission of the root field did not grant access: the usual path asks again, and answers.
_NOT_GRANTED = object()


@dataclass(frozen=True, slots=True)
class _DirectCall:
    """A root field's Strawberry resolver called as Strawberry's wrapper calls it, with what
    the wrapper derives per request derived once (bench/PROFILE.md, eighteenth round: 7 % of
    an add's instructions). Made only for a field whose extensions are all Strawberry's
    permission extensions. Per request:

    - each argument sent is converted: by a converter compiled for its type where
      ``input_conversion`` compiles one, else by Strawberry's own ``convert_argument``;
    - the extensions map the arguments; the source and info are added where the resolver
      asks for them;
    - each permission is asked with the arguments Strawberry asks it with. One that does not
      answer ``True`` (denied, or an awaitable the usual path would await) leaves the field,
      not yet resolved, to the usual path, which asks again and answers.
    """

    field: StrawberryField
    # (GraphQL name, Python name, type, its compiled converter or None) of each argument, as
    # Strawberry's conversion pairs them.
    arguments: tuple[tuple[str, str, StrawberryType | type, Convert | None], ...]
    permissions: tuple[BasePermission, ...]
    config: StrawberryConfig
    scalar_registry: Mapping[object, ScalarWrapper | ScalarDefinition]

    def call(self, info: GraphQLResolveInfo[Any], arguments: Mapping[str, Any]) -> Any:
        """The resolver's value (or awaitable), or ``_NOT_GRANTED``; raises what converting
        the arguments or the resolver raises, as Strawberry's wrapper would."""
        field = self.field
        strawberry_info = self.config.info_class(_raw_info=info, _field=field)
        kwargs: dict[str, Any] = {}
        for name, python_name, type_, convert in self.arguments:
            if name not in arguments:
                continue
            if convert is not None:
                kwargs[python_name] = convert(arguments[name])
            else:
                kwargs[python_name] = convert_argument(
                    arguments[name],
                    type_,
                    self.scalar_registry,
                    self.config,
                    strawberry_info,
                    path=(name,),
                )
        for extension in field.extensions:
            kwargs = extension.map_arguments(kwargs)
        resolver = field.base_resolver
        assert resolver is not None
        # A root field's source is the root value, which the gateway never sets.
        args = [None] if resolver.self_parameter else []
        for parameter in (resolver.parent_parameter, resolver.root_parameter):
            if parameter is not None:
                kwargs[parameter.name] = None
        if resolver.info_parameter is not None:
            kwargs[resolver.info_parameter.name] = strawberry_info
        # As the wrapper does: an info argument named "info" is kept from the permissions.
        info_argument = kwargs.pop("info", None)
        for permission in self.permissions:
            granted = permission.has_permission(None, strawberry_info, **kwargs)
            if granted is not True:
                if inspect.iscoroutine(granted):
                    granted.close()
                return _NOT_GRANTED
        if info_argument is not None:
            kwargs["info"] = info_argument
        # Typed for its own arguments (str), though it takes the source first as here.
        return cast(Callable[..., Any], resolver)(*args, **kwargs)


def _direct_call(
    field: GraphQLField,
    config: StrawberryConfig,
    scalar_registry: Mapping[object, ScalarWrapper | ScalarDefinition],
) -> _DirectCall | None:
    """The direct call of ``field``'s resolver, or None where Strawberry's wrapper must
    call it (a field extension other than permissions, no resolver of its own)."""
    definition = (field.extensions or {}).get(GraphQLCoreConverter.DEFINITION_BACKREF)
    if not isinstance(definition, StrawberryField) or definition.base_resolver is None:
        return None
    permissions: list[BasePermission] = []
    for extension in definition.extensions:
        if type(extension) is not PermissionExtension:
            return None
        permissions.extend(extension.permissions)
    arguments = []
    for argument in definition.arguments:
        assert argument.python_name
        name = config.name_converter.from_argument(argument)
        convert = argument_converter(argument.type, config, scalar_registry)
        arguments.append((name, argument.python_name, argument.type, convert))
    return _DirectCall(definition, tuple(arguments), tuple(permissions), config, scalar_registry)


@dataclass(frozen=True, slots=True)
class _Plan:
    """An operation's one root field and how to complete its value."""

    response_key: str
    field_name: str
    root_type: GraphQLObjectType
    field: GraphQLField
    field_nodes: list[FieldNode]
    return_type: GraphQLOutputType
    non_null: bool
    leaf_type: GraphQLLeafType | None
    # By the name of the value's runtime type: for an object return type, its one entry.
    objects: Mapping[str, _Object]
    abstract_type: GraphQLAbstractType | None
    variables: _Variables
    # None: Strawberry's wrapper (the field's ``resolve``) calls the resolver.
    direct: _DirectCall | None

    def complete(self, value: Any, info: GraphQLResolveInfo[Any]) -> Any:
        """The field's completed value as graphql-core's ``complete_value`` gives it, or
        ``_CannotComplete`` where graphql-core would report an error or take a path the plan
        does not mirror."""
        if isinstance(value, Exception) or optimized_is_awaitable(value):
            raise _CannotComplete
        if _is_null(value, non_null=self.non_null):
            return None
        if self.leaf_type is not None:
            return _complete_leaf(self.leaf_type, value)
        if self.abstract_type is not None:
            resolve_type = self.abstract_type.resolve_type
            if resolve_type is None:
                raise _CannotComplete
            name = resolve_type(value, info, self.abstract_type)
            # Not a name (an awaitable graphql-core would await): left to graphql-core.
            found = self.objects.get(name) if isinstance(name, str) else None
        else:
            found = next(iter(self.objects.values()))
        if found is None:
            raise _CannotComplete
        is_type_of = found.object_type.is_type_of
        if is_type_of is not None and is_type_of(value, info) is not True:
            raise _CannotComplete  # False, or an awaitable graphql-core would await
        return found.complete(value)


def _collect(
    schema: GraphQLSchema, runtime_type: GraphQLObjectType, selection_set: SelectionSetNode
) -> list[FieldNode]:
    """The field nodes graphql-core collects for ``runtime_type``, where each response key
    has one node; a fragment spread or a key selected twice is not covered."""
    found: list[FieldNode] = []
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            found.append(selection)
        elif isinstance(selection, InlineFragmentNode):
            condition = selection.type_condition
            if condition is not None:
                condition_type = schema.get_type(condition.name.value)
                applies = condition_type is runtime_type or (
                    condition_type is not None
                    and is_abstract_type(condition_type)
                    and schema.is_sub_type(condition_type, runtime_type)
                )
                if not applies:
                    continue
            found.extend(_collect(schema, runtime_type, selection.selection_set))
        else:
            assert isinstance(selection, FragmentSpreadNode)
            raise _Ineligible
    keys = [(node.alias or node.name).value for node in found]
    if len(set(keys)) != len(keys):
        raise _Ineligible
    return found


def _object_plan(
    schema: GraphQLSchema,
    plain_fields: Mapping[int, _PlainField],
    object_type: GraphQLObjectType,
    selection_set: SelectionSetNode | None,
) -> _Object:
    if selection_set is None:
        raise _Ineligible
    fields = []
    for node in _collect(schema, object_type, selection_set):
        key = (node.alias or node.name).value
        name = node.name.value
        if node.arguments:
            raise _Ineligible
        if name == "__typename":
            fields.append(_Field(key, None))
            continue
        field = object_type.fields.get(name)
        if field is None:
            raise _Ineligible
        plain = plain_fields.get(id(field))
        if plain is not None:
            subfields = None
            if plain.object_type is not None:
                subfields = _object_plan(
                    schema, plain_fields, plain.object_type, node.selection_set
                )
            passthrough = _passes_through(plain.leaf_type) if plain.node_type is None else None
            fields.append(_Field(key, _PlainCompletion(plain, subfields, passthrough)))
            continue
        fields.append(_Field(key, _list_completion(schema, plain_fields, field, node)))
    return _Object(object_type, tuple(fields))


def _plan(
    schema: GraphQLSchema,
    operation: OperationDefinitionNode,
    config: StrawberryConfig,
    scalar_registry: Mapping[object, ScalarWrapper | ScalarDefinition],
) -> _Plan:
    if operation.operation not in (OperationType.QUERY, OperationType.MUTATION):
        raise _Ineligible
    root_type = schema.get_root_type(operation.operation)
    selections = operation.selection_set.selections
    if root_type is None or len(selections) != 1 or not isinstance(selections[0], FieldNode):
        raise _Ineligible
    node = selections[0]
    field = root_type.fields.get(node.name.value)
    if field is None or field.resolve is None:  # introspection, or a default resolver
        raise _Ineligible
    return_type = field.type
    non_null = isinstance(return_type, GraphQLNonNull)
    inner = return_type.of_type if isinstance(return_type, GraphQLNonNull) else return_type
    plain_fields = _plain_fields(schema)
    leaf_type: GraphQLLeafType | None = None
    abstract_type: GraphQLAbstractType | None = None
    objects: dict[str, _Object] = {}
    if is_leaf_type(inner):
        leaf_type = inner
    elif is_object_type(inner):
        assert isinstance(inner, GraphQLObjectType)
        objects[inner.name] = _object_plan(schema, plain_fields, inner, node.selection_set)
    elif is_abstract_type(inner):
        abstract_type = inner
        for possible in schema.get_possible_types(abstract_type):
            objects[possible.name] = _object_plan(
                schema, plain_fields, possible, node.selection_set
            )
    else:  # a list
        raise _Ineligible
    return _Plan(
        (node.alias or node.name).value,
        node.name.value,
        root_type,
        field,
        [node],
        return_type,
        non_null,
        leaf_type,
        objects,
        abstract_type,
        _variables(schema, operation.variable_definitions or ()),
        _direct_call(field, config, scalar_registry),
    )


class CompiledOperations:
    """The plans of one schema's documents, kept per operation node (by identity, as
    ``execution._PerOperation`` keeps subfields) until the node is freed."""

    def __init__(
        self,
        schema: GraphQLSchema,
        checks: DocumentChecks,
        config: StrawberryConfig,
        scalar_registry: Mapping[object, ScalarWrapper | ScalarDefinition],
    ) -> None:
        self._schema = schema
        self._checks = checks
        self._config = config
        self._scalar_registry = scalar_registry
        self._plans: dict[int, tuple[weakref.ref[OperationDefinitionNode], _Plan | None]] = {}

    def _plan_for(self, operation: OperationDefinitionNode, fragments: bool) -> _Plan | None:
        key = id(operation)
        entry = self._plans.get(key)
        if entry is not None and entry[0]() is operation:
            return entry[1]
        plan: _Plan | None
        try:
            # Directives (@skip and @include read variables) and fragment definitions (the
            # collection would need them) are not covered.
            if fragments or _holds(operation, (DirectiveNode,)):
                raise _Ineligible
            plan = _plan(self._schema, operation, self._config, self._scalar_registry)
        except _Ineligible:
            plan = None
        self._plans[key] = (weakref.ref(operation, partial(self._forget, key)), plan)
        return plan

    def _forget(self, key: int, _: object) -> None:
        self._plans.pop(key, None)

    async def execute(
        self, request: GraphQLRequestData, context: GatewayContext
    ) -> ExecutionResult | None:
        """The operation's result; None where the usual path must execute it (see the
        module's docstring), with the root field's outcome on ``context`` if it was
        resolved."""
        if not request.query or request.extensions:
            return None
        try:
            checked = self._checks.documents.parsed(request.query)
        except Exception:  # the usual path raises it again, and answers it
            return None
        # Validated once by the usual path, with no errors: only then is a plan made.
        if checked.rules is None or checked.errors:
            return None
        document = checked.document
        operation = get_operation_ast(document, request.operation_name)
        if operation is None:
            return None
        plan = self._plan_for(operation, fragments=len(document.definitions) > 1)
        if plan is None:
            return None
        schema = self._schema
        variable_values = plan.variables.coerce(request.variables or {})
        if variable_values is None:
            return None
        node = plan.field_nodes[0]
        try:
            arguments = (
                get_argument_values(plan.field, node, variable_values)
                if plan.field.args or node.arguments
                else {}
            )
        except Exception:  # refused arguments: the usual path reports them
            return None
        info = GraphQLResolveInfo(
            plan.field_name,
            plan.field_nodes,
            plan.return_type,
            plan.root_type,
            Path(None, plan.response_key, plan.root_type.name),
            schema,
            {},
            None,
            operation,
            variable_values,
            context,
            _is_awaitable,
            None,
            _HELPERS,
        )
        try:
            if plan.direct is not None:
                value = plan.direct.call(info, arguments)
                if value is _NOT_GRANTED:
                    return None
            else:
                resolve = plan.field.resolve
                assert resolve is not None
                value = resolve(None, info, **arguments)
            if optimized_is_awaitable(value):
                value = await value
        except Exception as error:  # graphql-core reports it, from the replay
            context.replayed_root = ReplayedRoot(node, error=error)
            return None
        try:
            completed = plan.complete(value, info)
        except Exception:  # graphql-core completes it again, and reports it
            context.replayed_root = ReplayedRoot(node, value=value)
            return None
        return ExecutionResult(data={plan.response_key: completed}, errors=None, extensions={})


def compiled_operations(schema: Any) -> CompiledOperations | None:
    """The compiled path for a gateway schema without schema extensions, directives or
    exception handlers (each changes what executing a field does); None otherwise."""
    checks = getattr(schema, "document_checks", None)
    if (
        not isinstance(checks, DocumentChecks)
        or schema.extensions
        or schema.directives
        or schema.exception_handlers
        or schema.execution_context_class is not AcyclicExecutionContext
        or schema.config.enable_experimental_incremental_execution
    ):
        return None
    return CompiledOperations(
        schema._schema, checks, schema.config, schema.schema_converter.scalar_registry
    )
