"""Error hygiene: mask unexpected errors, strip submitted values from messages, log safely.

graphql-core's coercion errors repeat the offending value ("… has invalid value …, found:
{'accountNumber': '…'}"), and that value may be an account number; Strawberry also logs
every error as is. Both paths go through :func:`redact_all` here.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Sequence
from typing import Any, Protocol

from graphql import (
    DocumentNode,
    EnumValueNode,
    FloatValueNode,
    GraphQLError,
    IntValueNode,
    Node,
    StringValueNode,
    Visitor,
    visit,
)
from starlette.requests import Request
from strawberry.exceptions import MissingQueryError
from strawberry.permission import BasePermission
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.types import ExecutionContext, Info

from payout_gateway.domain.errors import SecretsUnreadableError, StoreUnavailableError
from payout_gateway.request_log import current_request_id

logger = logging.getLogger("payout_gateway.graphql")

MASKED_MESSAGE = "Unexpected error."

# graphql-core 3.3: "Variable '$x' has invalid value at .a.b: <reason>" (the reason may
# repeat the value); 3.2: "Variable '$x' got invalid value <value> at 'x.a'; <reason>".
_VARIABLE_REASON = re.compile(r"^(Variable '\$\w+') has invalid value((?: at [^:]*)?): (.*)$", re.S)
_VARIABLE_VALUE = re.compile(
    r"^(Variable '\$\w+') got invalid value .*?(?:( at '[^']*');|;)(.*)$", re.S
)
_REPRESENT_VALUE = re.compile(r"(cannot represent [^:]*?value)\s*:.*$", re.S)
# "Expected value of type 'T' to include required field 'f', found: {…}." and every other
# "…, found …" form: what follows "found" is the submitted value.
_FOUND = re.compile(r"^(.*?), found\b.*$", re.S)
# An unknown input field with a suggestion: "…unknown field 'f'. Did you mean 'g'? Found: {…}."
_SUGGESTED_FOUND = re.compile(r"^(.*?\?) Found\b.*$", re.S)
_ENUM_VALUE = re.compile(r"^(Value) .* (does not exist in '[^']+' enum)\.?.*$", re.S)
_SCALAR_MESSAGES = (
    "Int cannot represent non-integer value",
    "Int cannot represent non 32-bit signed integer value",
    "Float cannot represent non numeric value",
    "Boolean cannot represent a non boolean value",
    "String cannot represent a non string value",
    "ID cannot represent value",
)
_INT_VALUE = re.compile("^(" + "|".join(map(re.escape, _SCALAR_MESSAGES)) + ").*$", re.S)
# A syntax error ends quoting what the parser stopped at: a token ("Unexpected Int '…'.",
# "Expected Name, found String '…'.") or the escape sequence of a string. An unparsed
# document has no literals to cut by value (``submitted_values``), so the quote goes by shape.
_SYNTAX_ERROR = "Syntax Error: "
_SYNTAX_QUOTE = re.compile(
    r"^(Syntax Error: (?:.*?\b(?:Name|Int|Float|String|BlockString)"
    r"|Invalid Unicode escape sequence)):? '.*'\.$",
    re.S,
)
# graphql-core's suggestion of a name, for a field, argument, type, enum value or input field;
# Strawberry's ``disable_field_suggestions`` drops only a field's.
_SUGGESTION = re.compile(r" Did you mean [^?]*\?")
# Submitted values shorter than this are left in messages: they could not hold a number or
# a KYC detail, and would mangle the message's own words.
_SHORTEST_SCRUBBED = 4
REDACTED = "[redacted]"


def redact_all(messages: Sequence[str], submitted: Collection[str]) -> list[str]:
    """Each message without any submitted value, keeping where and what was wrong: first by
    the shapes graphql-core's messages are known to have, then every one of the request's own
    values (:func:`submitted_values`) is cut wherever it still appears, so that a shape not
    known yet echoes nothing either."""
    messages = [_redact_patterns(message) for message in messages]
    echoed = _echoed(submitted, messages)
    for value in echoed:
        messages = [message.replace(value, REDACTED) for message in messages]
    return messages


def _echoed(values: Collection[str], messages: Sequence[str]) -> list[str]:
    """The values that appear in the messages, longest first. A request may carry tens of
    thousands of values: each is first looked up by its opening characters among the
    messages' substrings of that length, so the work stays linear in the request's size."""
    if not values:
        return []
    text = "\n".join(messages)
    width = _SHORTEST_SCRUBBED
    openings = {text[start : start + width] for start in range(len(text) - width + 1)}
    found = [value for value in values if value[:width] in openings and value in text]
    return sorted(found, key=len, reverse=True)


def _redact_patterns(message: str) -> str:
    if message.startswith(_SYNTAX_ERROR):
        # Only the quote: the coercion shapes below would read "found <EOF>" as a value.
        return _SYNTAX_QUOTE.sub(r"\1.", message)
    match = _VARIABLE_REASON.match(message)
    if match:
        return f"{match.group(1)} has an invalid value{match.group(2)}: " + _redact_patterns(
            match.group(3).strip()
        )
    match = _VARIABLE_VALUE.match(message)
    if match:
        where = match.group(2) or ""
        reason = _redact_patterns(match.group(3).strip())
        return f"{match.group(1)} got an invalid value{where}; {reason}"
    for pattern, keep in (
        (_SUGGESTED_FOUND, r"\1 The value given is not valid."),
        (_FOUND, r"\1; the value given is not valid."),
        (_ENUM_VALUE, r"\1 \2."),
        (_INT_VALUE, r"\1."),
    ):
        if pattern.match(message):
            return pattern.sub(keep, message)
    return _REPRESENT_VALUE.sub(r"\1.", message)


class _Literals(Visitor):
    def __init__(self, found: set[str]) -> None:
        super().__init__()
        self.found = found

    def enter(self, node: Node, *_: Any) -> None:
        if isinstance(node, StringValueNode | IntValueNode | FloatValueNode | EnumValueNode):
            self.found.add(node.value)


def submitted_values(variables: object, document: DocumentNode | None) -> frozenset[str]:
    """Every scalar the request carried, in its variables or as a literal in its document, as
    a message would print it (at least ``_SHORTEST_SCRUBBED`` characters). Walked without
    recursion: a hostile body may nest deeply."""
    found: set[str] = set()
    pending: list[Any] = [variables]
    while pending:
        value = pending.pop()
        # Decoded JSON: exact types only (a bool is not an int here).
        kind = type(value)
        if kind is dict:
            pending.extend(value.values())
        elif kind is list:
            pending.extend(value)
        elif kind is str:
            found.add(value)
        elif kind is int or kind is float:
            found.add(str(value))
    if document is not None:
        visit(document, _Literals(found))
    return frozenset(value for value in found if len(value.strip()) >= _SHORTEST_SCRUBBED)


# What an error may be made of and still be shown: GraphQL's own errors, a database outage
# (which a query answers as a retryable error, see ``_clean``), and Strawberry's refusals of
# the request (no query, no operation to run, an operation type not allowed), which its HTTP
# view answers with a 400 and its stream, a WebSocket's operation, as the operation's error.
_EXPECTED = (
    GraphQLError,
    StoreUnavailableError,
    MissingQueryError,
    CannotGetOperationTypeError,
    InvalidOperationTypeError,
)


def is_unexpected(error: GraphQLError) -> bool:
    """An error made of an exception our code did not mean to show (see ``_EXPECTED``)."""
    original = error.original_error
    return original is not None and not isinstance(original, _EXPECTED)


class _Result(Protocol):
    """A result of an operation, as Strawberry or graphql-core built it."""

    errors: list[GraphQLError] | None


def mask_errors(context: ExecutionContext) -> None:
    """Mask the operation's unexpected errors and redact submitted values from the rest,
    before the response is built (the schema runs it as its operation ends)."""
    result = context.result
    if result is not None and result.errors:
        mask_result_errors(result, context)


def mask_result_errors(result: _Result, context: ExecutionContext) -> None:
    """:func:`mask_errors` for one of the operation's results: a stream, which runs a
    WebSocket's operations, sends each result before the operation ends."""
    errors = result.errors
    if not errors:
        return
    messages = redact_all(
        [error.message for error in errors],
        submitted_values(context.variables, context.graphql_document),
    )
    if context.schema.config.disable_field_suggestions:
        # Production: the schema is not to be discovered by guessing names either.
        messages = [_SUGGESTION.sub("", message) for message in messages]
    result.errors = [
        _clean(error, message) for error, message in zip(errors, messages, strict=True)
    ]


def _clean(error: GraphQLError, redacted_message: str) -> GraphQLError:
    unexpected = is_unexpected(error)
    message = MASKED_MESSAGE if unexpected else redacted_message
    extensions = error.extensions
    request_id = current_request_id()
    if unexpected:
        # Nothing of the error itself; the request's id finds its log line (X-Request-Id).
        extensions = {"requestId": request_id} if request_id is not None else None
    elif isinstance(outage := error.original_error, StoreUnavailableError):
        # A query's answer to a database outage (a mutation's is its StoreUnavailableError).
        extensions = store_unavailable_extensions(outage)
    return GraphQLError(
        message=message,
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        original_error=None,
        extensions=extensions,
    )


def store_unavailable_extensions(
    outage: StoreUnavailableError | SecretsUnreadableError,
) -> dict[str, Any]:
    """The extensions of an error that answers a database outage (or secrets the configured
    keys do not open): its code, that a retry may succeed, and the id of the request or
    WebSocket operation it answers, where there is one."""
    extensions: dict[str, Any] = {"code": outage.code, "retryable": True}
    request_id = current_request_id()
    if request_id is not None:
        extensions["requestId"] = request_id
    return extensions


def log_errors(errors: list[GraphQLError], execution_context: ExecutionContext | None) -> None:
    """Replaces Strawberry's logging: values redacted; tracebacks only for unexpected errors."""
    operation = execution_context.operation_name if execution_context else None
    expected = [error for error in errors if not is_unexpected(error)]
    if expected:
        submitted = (
            submitted_values(execution_context.variables, execution_context.graphql_document)
            if execution_context
            else frozenset()
        )
        for message in redact_all([error.message for error in expected], submitted):
            logger.info("graphql error: %s", message)
    for error in errors:
        if is_unexpected(error):
            logger.error(
                "unexpected error in %s at %s",
                operation or "anonymous operation",
                ".".join(str(p) for p in error.path or ()) or "-",
                exc_info=error.original_error,
            )


# Why a credential was refused, over HTTP and at a WebSocket's connection_init alike. An
# unknown, revoked or expired one is answered alike, so that nothing tells what a guess hit.
NOT_BEARER = 'The Authorization must read "Bearer <API key or JWT>".'
NOT_ACCEPTED = "The API key or JWT was not accepted (unknown, revoked or expired)."


def bearer_credential(authorization: str) -> str | None:
    """The credential of ``Bearer <credential>``; None for any other shape."""
    scheme, _, credential = authorization.partition(" ")
    credential = credential.strip()
    return credential if scheme.lower() == "bearer" and credential else None


class IsAuthenticated(BasePermission):
    """Every root field needs a credential; the organization comes only from it."""

    message = "Authentication required: send 'Authorization: Bearer <API key or JWT>'."
    error_extensions = {"code": "UNAUTHENTICATED"}

    def has_permission(self, source: Any, info: Info[Any, Any], **kwargs: Any) -> bool:
        if getattr(info.context, "organization", None) is not None:
            return True
        # A request that sent a credential was told to send one, which reads as if the header
        # had not arrived: say what was wrong with it instead.
        request = getattr(info.context, "request", None)
        if isinstance(request, Request):
            authorization = request.headers.get("authorization")
            if authorization:
                refused = NOT_BEARER if bearer_credential(authorization) is None else NOT_ACCEPTED
                raise self.error_class(refused, extensions=dict(self.error_extensions))
        return False
