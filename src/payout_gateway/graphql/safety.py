"""Error hygiene: mask unexpected errors, strip submitted values from messages, log safely.

graphql-core's coercion errors repeat the offending value ("… got invalid value 123456789 …"),
and that value may be an account number; Strawberry also logs every error as is. Both paths
go through :func:`redact` here.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import Any

from graphql import GraphQLError
from strawberry.extensions import SchemaExtension
from strawberry.permission import BasePermission
from strawberry.types import ExecutionContext, Info

logger = logging.getLogger("payout_gateway.graphql")

MASKED_MESSAGE = "Unexpected error."

_VARIABLE_VALUE = re.compile(
    r"^(Variable '\$\w+') got invalid value .*?(?:( at '[^']*');|;)(.*)$", re.S
)
_REPRESENT_VALUE = re.compile(r"(cannot represent [^:]*?value)\s*:.*$", re.S)
_EXPECTED_FOUND = re.compile(r"^(Expected value of type '[^']+'), found .*$", re.S)
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


def redact(message: str) -> str:
    """The message without any submitted value, keeping where and what was wrong."""
    match = _VARIABLE_VALUE.match(message)
    if match:
        where = match.group(2) or ""
        return f"{match.group(1)} got an invalid value{where}; {redact(match.group(3).strip())}"
    for pattern, keep in (
        (_EXPECTED_FOUND, r"\1; the value given is not valid."),
        (_ENUM_VALUE, r"\1 \2."),
        (_INT_VALUE, r"\1."),
    ):
        if pattern.match(message):
            return pattern.sub(keep, message)
    message = _REPRESENT_VALUE.sub(r"\1.", message)
    return message


def is_unexpected(error: GraphQLError) -> bool:
    """An exception our code did not mean to show: anything but GraphQL's own errors."""
    original = error.original_error
    return original is not None and not isinstance(original, GraphQLError)


class SafeErrors(SchemaExtension):
    """Masks unexpected errors and redacts values from the rest, before the response is built."""

    def on_operation(self) -> Iterator[None]:
        yield
        result = self.execution_context.result
        errors = getattr(result, "errors", None)
        if result is None or not errors:
            return
        result.errors = [self._clean(error) for error in errors]

    @staticmethod
    def _clean(error: GraphQLError) -> GraphQLError:
        message = MASKED_MESSAGE if is_unexpected(error) else redact(error.message)
        extensions = None if is_unexpected(error) else error.extensions
        return GraphQLError(
            message=message,
            nodes=error.nodes,
            source=error.source,
            positions=error.positions,
            path=error.path,
            original_error=None,
            extensions=extensions,
        )


def log_errors(errors: list[GraphQLError], execution_context: ExecutionContext | None) -> None:
    """Replaces Strawberry's logging: values redacted; tracebacks only for unexpected errors."""
    operation = execution_context.operation_name if execution_context else None
    for error in errors:
        if is_unexpected(error):
            logger.error(
                "unexpected error in %s at %s",
                operation or "anonymous operation",
                ".".join(str(p) for p in error.path or ()) or "-",
                exc_info=error.original_error,
            )
        else:
            logger.info("graphql error: %s", redact(error.message))


class IsAuthenticated(BasePermission):
    """Every root field needs a credential; the organization comes only from it."""

    message = "Authentication required: send 'Authorization: Bearer <API key>'."
    error_extensions = {"code": "UNAUTHENTICATED"}

    def has_permission(self, source: Any, info: Info[Any, Any], **kwargs: Any) -> bool:
        return getattr(info.context, "organization", None) is not None
