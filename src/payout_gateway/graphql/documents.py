"""One schema extension for the document checks: token limit, cached parsing and validation.

It replaces Strawberry's MaxTokensLimiter, AddValidationRules, ParserCache and ValidationCache
with the same behaviour at a lower cost per request: one extension instance instead of four,
and validation results kept with the parsed document instead of in an LRU keyed by the
document, which graphql-core hashes node by node on every lookup.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache

from graphql import ASTValidationRule, DocumentNode, GraphQLError
from graphql.language.parser import parse
from strawberry.extensions import SchemaExtension
from strawberry.schema.schema import validate_document

ValidationRules = tuple[type[ASTValidationRule], ...]


@dataclass(slots=True)
class CheckedDocument:
    """A parsed document and, once validated, the rules it was validated with and the errors."""

    document: DocumentNode
    rules: ValidationRules | None = None
    errors: list[GraphQLError] | None = None


def document_cache(*, max_tokens: int, maxsize: int) -> Callable[[str], CheckedDocument]:
    """Query text -> its parsed document, parsed at most ``max_tokens`` deep into the text.

    Failures are not cached: a document that does not parse is parsed again each time, as
    Strawberry's ParserCache does.
    """

    @lru_cache(maxsize=maxsize)
    def checked_document(query: str) -> CheckedDocument:
        return CheckedDocument(parse(query, max_tokens=max_tokens))

    return checked_document


class DocumentChecks(SchemaExtension):
    """Parses through ``documents`` and validates with the schema's rules plus ``rules``.

    Build it per request with a factory over one shared ``documents`` cache (see
    :func:`document_cache`), like the Strawberry extensions it replaces.
    """

    def __init__(
        self,
        documents: Callable[[str], CheckedDocument],
        rules: Sequence[type[ASTValidationRule]],
    ) -> None:
        super().__init__()
        self.documents = documents
        self.rules = tuple(rules)
        self.checked: CheckedDocument | None = None

    def on_parse(self) -> Iterator[None]:
        # As in ParserCache: a query that does not parse raises from here, before Strawberry's
        # own parsing step, which then finds the document set and does nothing.
        query = self.execution_context.query
        if query:
            self.checked = self.documents(query)
            self.execution_context.graphql_document = self.checked.document
        yield

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        rules = context.validation_rules + self.rules
        context.validation_rules = rules
        checked = self.checked
        if checked is not None and checked.document is context.graphql_document:
            if checked.rules != rules:
                checked.errors = validate_document(context.schema._schema, checked.document, rules)
                checked.rules = rules
            # Setting them tells Strawberry validation already ran (an empty list: no errors).
            # A copy: the cached list must not change with what a request does to its own.
            context.pre_execution_errors = None if checked.errors is None else list(checked.errors)
        yield
