"""graphql-core's execution context without its reference cycle, so a request's state is freed
as soon as the request ends instead of waiting for the cycle collector, without a resolve info
built for fields that never read one, with a document's subfield collections kept across
requests, and with a root field's outcome replayed from the compiled path (graphql/compiled.py)."""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from typing import Any, NamedTuple, cast

from graphql import (
    FieldNode,
    GraphQLField,
    GraphQLLeafType,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLResolveInfo,
    GraphQLSchema,
    GraphQLString,
    TypeNameMetaFieldDef,
    Undefined,
    is_leaf_type,
    is_object_type,
)
from graphql.execution.collect_fields import CollectedFields, FieldDetailsList, FragmentDetails
from graphql.language import (
    DirectiveNode,
    Node,
    OperationDefinitionNode,
    VariableDefinitionNode,
)
from graphql.pyutils import Path, gather_with_cancel
from graphql.type.definition import GraphQLResolveInfoHelpers
from strawberry import relay
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.schema.schema_converter import GraphQLCoreConverter
from strawberry.types.field import StrawberryField


def _gather(values: Sequence[Awaitable[Any]]) -> Awaitable[list[Any]]:
    return gather_with_cancel(*values)


class _Tracker:
    """``track`` for resolvers: the context's own ``track_async_work`` through a weak
    reference. Only graphql-core calls it, while the context executes (so is alive)."""

    __slots__ = ("_context",)

    def __init__(self, context: AcyclicExecutionContext) -> None:
        self._context = weakref.ref(context)

    def __call__(self, values: Sequence[Any]) -> None:
        context = self._context()
        if context is None:
            raise RuntimeError("asynchronous work tracked after its execution ended")
        context.track_async_work(values)


class _PlainField(NamedTuple):
    """A field Strawberry resolves by reading an attribute, whose value is a scalar or enum:
    ``read(source, attribute)`` is what its resolver returns (StrawberryField.get_result for
    a field without a resolver: the schema's default resolver, ``getattr`` unless configured).

    Or, with ``node_type`` set, the ``id`` of a relay Node whose id and type name are
    Strawberry's own (``Node._id``): the GlobalID of the parent type's name and the value of
    the Node's id attribute, for a source of exactly ``node_type``.

    Or, with ``object_type`` set (``leaf_type`` then None), an attribute holding an object
    whose type checks its values, if at all, with Strawberry's own ``is_type_of`` (an
    isinstance that ignores the info)."""

    read: Callable[[Any, str], Any]
    attribute: str
    leaf_type: GraphQLLeafType | None
    non_null: bool
    node_type: type[relay.Node] | None = None
    object_type: GraphQLObjectType | None = None


def _function_of(method: object) -> object:
    """The function under a (class) method, None where there is none."""
    return getattr(method, "__func__", None)


# Strawberry's resolver of a Node's ``id`` and its defaults for the id and the type name. Looked
# up defensively: if Strawberry renamed them, no field takes the short path.
_NODE_ID_RESOLVER = _function_of(getattr(relay.Node, "_id", None))
_NODE_DEFAULTS = (
    _function_of(getattr(relay.Node, "resolve_id", None)),
    _function_of(getattr(relay.Node, "resolve_typename", None)),
)


def _node_id_type(field: StrawberryField, parent: GraphQLObjectType) -> type[relay.Node] | None:
    """The Node class whose ``id`` field ``field`` is, if Strawberry's ``Node._id`` resolves it
    and the class resolves ids and type names as Node does; otherwise None."""
    resolver = field.base_resolver
    definition = (parent.extensions or {}).get(GraphQLCoreConverter.DEFINITION_BACKREF)
    origin = getattr(definition, "origin", None)
    if (
        _NODE_ID_RESOLVER is None
        or resolver is None
        or _function_of(resolver.wrapped_func) is not _NODE_ID_RESOLVER
        or field.extensions
        or not isinstance(origin, type)
        or not issubclass(origin, relay.Node)
        or (
            _function_of(getattr(origin, "resolve_id", None)),
            _function_of(getattr(origin, "resolve_typename", None)),
        )
        != _NODE_DEFAULTS
    ):
        return None
    return origin


# Per schema: id of a GraphQLField -> how to complete it without a resolve info. The schema keeps
# its fields alive, so an id here never names another field.
_PLAIN_FIELDS: weakref.WeakKeyDictionary[GraphQLSchema, Mapping[int, _PlainField]] = (
    weakref.WeakKeyDictionary()
)


def _plain_fields(schema: GraphQLSchema) -> Mapping[int, _PlainField]:
    plain = _PLAIN_FIELDS.get(schema)
    if plain is not None:
        return plain
    found: dict[int, _PlainField] = {}
    strawberry_schema = getattr(schema, "_strawberry_schema", None)
    # A schema's exception handlers wrap resolvers in code that reads the info.
    handled = strawberry_schema is None or bool(strawberry_schema.exception_handlers)
    for named_type in schema.type_map.values():
        if not is_object_type(named_type):
            continue
        assert isinstance(named_type, GraphQLObjectType)
        for field in named_type.fields.values():
            definition = (field.extensions or {}).get(GraphQLCoreConverter.DEFINITION_BACKREF)
            return_type = field.type
            non_null = isinstance(return_type, GraphQLNonNull)
            inner = return_type.of_type if non_null else return_type
            if not isinstance(definition, StrawberryField) or field.args:
                continue
            if is_object_type(inner):
                assert isinstance(inner, GraphQLObjectType)
                if _is_basic(definition, field) and _checks_itself(inner):
                    found[id(field)] = _PlainField(
                        definition.default_resolver,
                        definition.python_name,
                        None,
                        non_null,
                        object_type=inner,
                    )
                continue
            if not is_leaf_type(inner):
                continue
            assert isinstance(inner, GraphQLLeafType)
            if _is_basic(definition, field):
                found[id(field)] = _PlainField(
                    definition.default_resolver, definition.python_name, inner, non_null
                )
            elif not handled and (node_type := _node_id_type(definition, named_type)):
                found[id(field)] = _PlainField(
                    getattr, node_type.resolve_id_attr(), inner, non_null, node_type
                )
    _PLAIN_FIELDS[schema] = found
    return found


# (return type, hidden suggestions, ids of the field nodes) -> their subfields and the nodes
# (kept alive with the entry, so that their ids name them as long as it exists).
_SubfieldsOfOperation = dict[
    tuple[GraphQLObjectType, bool, tuple[int, ...]],
    tuple[tuple[Node, ...], CollectedFields],
]


class _PerOperation:
    """What is kept per operation node of a parsed document (Strawberry caches documents, so
    requests sending the same text share one), by identity: graphql-core's nodes compare and
    hash by their structure, so two parses of one text would share an entry of a dict or a
    WeakKeyDictionary, and one's node ids would be looked up for the other's. An entry goes
    when its node is freed."""

    def __init__(self) -> None:
        self._entries: dict[
            int, tuple[weakref.ref[OperationDefinitionNode], _SubfieldsOfOperation | None]
        ] = {}

    def subfields(
        self, operation: OperationDefinitionNode, fragments: Mapping[str, FragmentDetails]
    ) -> _SubfieldsOfOperation | None:
        """The operation's subfield collections; None if what is collected may depend on the
        request: a directive anywhere in what it selects (``@skip``/``@include`` read
        variables) or a fragment taking arguments."""
        key = id(operation)
        entry = self._entries.get(key)
        if entry is not None and entry[0]() is operation:
            return entry[1]
        cacheable = not _holds(operation.selection_set, (DirectiveNode,)) and not any(
            _holds(fragment.definition, (DirectiveNode, VariableDefinitionNode))
            for fragment in fragments.values()
        )
        cache: _SubfieldsOfOperation | None = {} if cacheable else None
        # The callback runs before the node's memory can be reused for another.
        self._entries[key] = (weakref.ref(operation, partial(self._forget, key)), cache)
        return cache

    def _forget(self, key: int, _: object) -> None:
        self._entries.pop(key, None)


_PER_OPERATION = _PerOperation()


def _holds(node: Node, kinds: tuple[type[Node], ...]) -> bool:
    """Whether ``node`` or any node under it is of one of ``kinds``."""
    if isinstance(node, kinds):
        return True
    for key in node.keys:
        value = getattr(node, key, None)
        children = value if isinstance(value, tuple | list) else (value,)
        if any(isinstance(child, Node) and _holds(child, kinds) for child in children):
            return True
    return False


def _is_basic(definition: StrawberryField, field: GraphQLField) -> bool:
    """No resolver and no field extensions: Strawberry reads the attribute and never looks at
    the info (StrawberryField.is_basic_field), through its ``_get_basic_result``. A field whose
    errors an exception handler takes gets another resolver, which reads the info, and keeps
    graphql-core's path."""
    return definition.is_basic_field and (
        getattr(field.resolve, "__name__", "") == "_get_basic_result"
    )


def _checks_itself(object_type: GraphQLObjectType) -> bool:
    """Whether completing a value of ``object_type`` reads no resolve info: no ``is_type_of``,
    or the one Strawberry generates (an isinstance; its ``_info`` parameter unused)."""
    is_type_of = object_type.is_type_of
    return is_type_of is None or getattr(is_type_of, "__qualname__", "").endswith(
        "_get_is_type_of.<locals>.is_type_of"
    )


class ReplayedRoot:
    """A root field's outcome, resolved by the compiled path (graphql/compiled.py) before it
    gave way to graphql-core's: ``execute_field`` completes it instead of calling the resolver
    a second time. Its ``resolve`` stands in for the resolver: the value, or the error
    raised."""

    __slots__ = ("error", "node", "value")

    def __init__(
        self, node: FieldNode, *, value: Any = None, error: Exception | None = None
    ) -> None:
        self.node = node
        self.value = value
        self.error = error

    def answers(self, node: FieldNode) -> bool:
        """Whether ``node`` selects the replayed field: the same name under the same response
        key. By structure, not identity: the usual path may parse the query text again (the
        document cache may have dropped it meanwhile); the operation has that one root field
        either way (the compiled path covers no other)."""
        replayed = self.node
        alias = node.alias.value if node.alias is not None else None
        replayed_alias = replayed.alias.value if replayed.alias is not None else None
        return node.name.value == replayed.name.value and alias == replayed_alias

    def resolve(self, _source: Any, _info: Any, **_arguments: Any) -> Any:
        if self.error is not None:
            raise self.error
        return self.value


class _FirstResolverReplayed:
    """A middleware manager for one ``execute_field`` call: graphql-core asks it for the
    field's resolver, gets the replayed outcome's, and the context its own manager back, so
    that the fields completed under it (synchronously, inside the same call) resolve as
    usual."""

    __slots__ = ("_context", "_replayed", "_restored")

    def __init__(
        self, context: AcyclicExecutionContext, replayed: ReplayedRoot, restored: Any
    ) -> None:
        self._context = context
        self._replayed = replayed
        self._restored = restored

    def get_field_resolver(self, _resolver: Any) -> Any:
        self._context.middleware_manager = self._restored
        return self._replayed.resolve


class AcyclicExecutionContext(StrawberryGraphQLCoreExecutionContext):
    """graphql-core gives every resolver's ``info`` helpers that are bound methods of the
    context: a cycle (context -> helpers -> context) that kept each request's whole execution
    state, the GraphQL context, the HTTP request and response with it, alive until a
    collection of the cycle collector. Those collections were ~16 % of the gateway's CPU
    (bench/PROFILE.md, sixth round). The same helpers without a strong reference back.

    And fields whose resolvers never read the info are completed without building one (see
    ``execute_field``), a document's subfield collections are kept across requests (see
    ``collect_subfields``), and a root field the compiled path already resolved is completed
    from its outcome instead of being resolved again (see ``_execute_replayed``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.async_helpers = GraphQLResolveInfoHelpers(gather=_gather, track=_Tracker(self))
        self._plain_fields = _plain_fields(self.schema)
        middleware = self.middleware_manager
        self._plain_fields_apply = middleware is None or not middleware.middlewares
        self._subfields = _PER_OPERATION.subfields(self.operation, self.fragments)
        self._replayed: ReplayedRoot | None = getattr(self.context_value, "replayed_root", None)

    def collect_subfields(
        self, return_type: GraphQLObjectType, field_details_list: FieldDetailsList
    ) -> CollectedFields:
        """graphql-core's, remembered across requests: graphql-core collects a field's
        subfields again in every request (its memo lasts one execution), walking the
        selection sets and fragments of a document that is the same each time. About 2 % of
        an add's instructions (bench/PROFILE.md, eleventh round). Only where nothing the
        collection reads differs between requests (see ``_PerOperation.subfields``); a test compares
        answers with and without this."""
        cache = self._subfields
        if cache is None or any(
            details.defer_usage is not None or details.fragment_variable_values is not None
            for details in field_details_list
        ):
            return super().collect_subfields(return_type, field_details_list)
        nodes = tuple(details.node for details in field_details_list)
        key = (return_type, self.hide_suggestions, tuple(map(id, nodes)))
        found = cache.get(key)
        if found is None:
            found = cache[key] = (nodes, super().collect_subfields(return_type, field_details_list))
        return found[1]

    def execute_field(
        self,
        parent_type: GraphQLObjectType,
        source: Any,
        field_details_list: FieldDetailsList,
        path: Path,
        position_context: Any,
    ) -> Any:
        """graphql-core's ``execute_field``, except that ``__typename`` and a plain field (an
        attribute holding a scalar, an enum or an object, or a relay Node's id; see
        ``_plain_fields``) are completed without the resolve info graphql-core builds for every
        field: neither Strawberry's resolver for it nor its completion reads one (an object's
        subfields are executed as graphql-core executes them). It was about a quarter of a page
        of accounts' CPU (bench/PROFILE.md, tenth round). Errors take graphql-core's
        own path (``handle_field_error``) with graphql-core's messages; a test compares answers
        with and without this on every kind of leaf, null and error."""
        node = field_details_list[0].node
        replayed = self._replayed
        if replayed is not None and path.prev is None and replayed.answers(node):
            return self._execute_replayed(
                replayed, parent_type, source, field_details_list, path, position_context
            )
        field = self.schema.get_field(parent_type, node.name.value)
        if field is TypeNameMetaFieldDef and self._plain_fields_apply and not node.arguments:
            # What its resolver returns (``info.parent_type.name``), completed as a String.
            return self.complete_leaf_value(GraphQLString, parent_type.name)
        plain = self._plain_fields.get(id(field)) if field is not None else None
        if plain is None or node.arguments or not self._plain_fields_apply:
            return super().execute_field(
                parent_type, source, field_details_list, path, position_context
            )
        assert field is not None
        node_id: Any = None
        if plain.node_type is not None:
            node_id = (
                getattr(source, plain.attribute, None) if type(source) is plain.node_type else None
            )
            if node_id is None or self.is_awaitable(node_id):
                # Not the plain case (a subclass, no id, an id still to come): Strawberry's
                # resolver and graphql-core's path decide.
                return super().execute_field(
                    parent_type, source, field_details_list, path, position_context
                )
        try:
            if plain.node_type is None:
                result = plain.read(source, plain.attribute)
            else:
                # What Node._id returns: the type name is the path's, i.e. the parent type's.
                result = relay.GlobalID(type_name=parent_type.name, node_id=str(node_id))
            if self.is_awaitable(result):
                info = self.build_resolve_info(
                    field, [details.node for details in field_details_list], parent_type, path
                )
                return self.complete_awaitable_value(
                    field.type, field_details_list, info, path, result, position_context
                )
            if isinstance(result, Exception):
                raise result
            if result is None or result is Undefined:
                if plain.non_null:
                    raise TypeError(
                        "Cannot return null for non-nullable field"
                        f" {parent_type}.{node.name.value}."
                    )
                return None
            if plain.leaf_type is not None:
                return self.complete_leaf_value(plain.leaf_type, result)
            object_type = plain.object_type
            assert object_type is not None
            # Strawberry's own is_type_of never reads its info (see _checks_itself).
            no_info = cast("GraphQLResolveInfo[Any]", None)
            if object_type.is_type_of is not None and not object_type.is_type_of(result, no_info):
                # graphql-core's error for a value of another type, from its own path.
                return super().execute_field(
                    parent_type, source, field_details_list, path, position_context
                )
            completed = self.collect_and_execute_subfields(
                object_type, field_details_list, path, result, position_context
            )
            if self.is_awaitable(completed):
                return self._field_errors_handled(completed, field.type, field_details_list, path)
            return completed
        except Exception as raw_error:
            self.handle_field_error(raw_error, field.type, field_details_list, path)
            return None

    def _execute_replayed(
        self,
        replayed: ReplayedRoot,
        parent_type: GraphQLObjectType,
        source: Any,
        field_details_list: FieldDetailsList,
        path: Path,
        position_context: Any,
    ) -> Any:
        """graphql-core's ``execute_field`` for a root field the compiled path resolved: with
        the outcome standing in for its resolver (given by the middleware manager graphql-core
        asks for it; the schema has none where the compiled path runs), once."""
        self._replayed = None
        self.context_value.replayed_root = None
        middleware_manager = self.middleware_manager
        self.middleware_manager = _FirstResolverReplayed(  # type: ignore[assignment]
            self, replayed, middleware_manager
        )
        try:
            return super().execute_field(
                parent_type, source, field_details_list, path, position_context
            )
        finally:
            self.middleware_manager = middleware_manager

    async def _field_errors_handled(
        self,
        completed: Awaitable[Any],
        return_type: GraphQLOutputType,
        field_details_list: FieldDetailsList,
        path: Path,
    ) -> Any:
        """``completed``'s value, or None with its error handled as the field's: how
        graphql-core's ``execute_field`` awaits a completion."""
        try:
            return await completed
        except Exception as raw_error:
            self.handle_field_error(raw_error, return_type, field_details_list, path)
            return None
