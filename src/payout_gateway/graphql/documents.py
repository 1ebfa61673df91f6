"""The document checks: token limit, cached parsing and validation.

They replace Strawberry's MaxTokensLimiter, AddValidationRules, ParserCache and ValidationCache
with the same behaviour at a lower cost per request: no extension instances at all (the
schema's runner calls them, see graphql/runner.py), and validation results kept with the parsed
document instead of in an LRU keyed by the document, which graphql-core hashes node by node on
every lookup.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from graphql import ASTValidationRule, DocumentNode, GraphQLError, OperationDefinitionNode
from graphql.language.parser import parse
from strawberry.schema.schema import validate_document
from strawberry.types import ExecutionContext

ValidationRules = tuple[type[ASTValidationRule], ...]


@dataclass(slots=True)
class CheckedDocument:
    """A parsed document and, once validated, the rules it was validated with and the errors."""

    document: DocumentNode
    rules: ValidationRules | None = None
    errors: list[GraphQLError] | None = None


@dataclass(frozen=True, slots=True)
class DocumentCache:
    """``parsed``: query text -> its parsed document, parsed at most ``max_tokens`` deep into
    the text (see :func:`document_cache`)."""

    parsed: Callable[[str], CheckedDocument]
    max_tokens: int


def document_cache(*, max_tokens: int, maxsize: int) -> DocumentCache:
    """The documents of up to ``maxsize`` query texts.

    Failures are not cached: a document that does not parse is parsed again each time, as
    Strawberry's ParserCache does.
    """

    @lru_cache(maxsize=maxsize)
    def checked_document(query: str) -> CheckedDocument:
        return CheckedDocument(parse(query, max_tokens=max_tokens))

    return DocumentCache(checked_document, max_tokens)


class DocumentChecks:
    """Parses through ``documents`` and validates with the schema's rules plus ``rules``; one
    per schema, over one shared ``documents`` cache (see :func:`document_cache`). The schema's
    extensions runner (graphql/runner.py) calls it as Strawberry parses and validates."""

    __slots__ = ("documents", "rules")

    def __init__(self, documents: DocumentCache, rules: Sequence[type[ASTValidationRule]]) -> None:
        self.documents = documents
        self.rules = tuple(rules)

    def parse(self, context: ExecutionContext) -> CheckedDocument | None:
        """The operation's document from the cache, set on ``context``; Strawberry's own
        parsing step, which runs next, then finds it set and does nothing.

        A query that does not parse is left to that step, with the cache's token budget: it
        fails there the same way, inside Strawberry's handling of a document that does not
        parse. Raised from here, as the step starts (where Strawberry's ParserCache raises
        it), the error would bypass that handling: an HTTP answer skipped the masking that
        runs as the operation ends, and a WebSocket's operation failed outside its stream,
        the client told nothing and the document quoted in a logged traceback."""
        query = context.query
        if not query:
            return None
        try:
            checked = self.documents.parsed(query)
        except GraphQLError:
            context.parse_options["max_tokens"] = self.documents.max_tokens
            return None
        context.graphql_document = checked.document
        return checked

    def validate(self, context: ExecutionContext, checked: CheckedDocument | None) -> None:
        """Validation errors of the document ``parse`` gave, from the cache once validated
        with the same rules; Strawberry then skips its own validation."""
        rules = context.validation_rules + self.rules
        context.validation_rules = rules
        if checked is not None and checked.document is context.graphql_document:
            if checked.rules != rules:
                checked.errors = validate_document(context.schema._schema, checked.document, rules)
                checked.rules = rules
            # Setting them tells Strawberry validation already ran (an empty list: no errors).
            # A copy: the cached list must not change with what a request does to its own.
            context.pre_execution_errors = None if checked.errors is None else list(checked.errors)
            if context.pre_execution_errors is not None and _names_no_operation(context):
                context.pre_execution_errors.append(GraphQLError(MISSING_OPERATION_NAME))


# graphql-core's own words for it (GetOperation's request error in the GraphQL spec).
MISSING_OPERATION_NAME = "Must provide operation name if query contains multiple operations."
_UNKNOWN = object()


def _names_no_operation(context: ExecutionContext) -> bool:
    """Whether the request sends no operation name for a document of several operations.

    Strawberry then runs the first one (its ExecutionContext names it), where the GraphQL spec
    makes it a request error: a client that left the name out ran whichever operation came
    first, a mutation included. The name as sent is read from Strawberry's private attribute;
    if that ever goes, nothing is refused (a test fails)."""
    provided = getattr(context, "_provided_operation_name", _UNKNOWN)
    document = context.graphql_document
    if provided is not None or document is None:
        return False
    operations = (d for d in document.definitions if isinstance(d, OperationDefinitionNode))
    return next(operations, None) is not None and next(operations, None) is not None
