"""The schema's extensions runner (graphql/runner.py): its own steps at Strawberry's extension
points, schema extensions still run around them, sync and async execution alike."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import strawberry
from strawberry.extensions import SchemaExtension
from strawberry.types import StreamExecutionResult

from payout_gateway.graphql.documents import DocumentChecks, document_cache
from payout_gateway.graphql.schema import GatewaySchema, build_schema


@strawberry.type
class Query:
    @strawberry.field
    def hello(self) -> str:
        return "world"

    @strawberry.field
    def broken(self) -> str:
        raise RuntimeError("internal detail")


class Recorder(SchemaExtension):
    """A schema extension someone added: every hook it has runs, in order."""

    calls: list[str] = []

    def on_operation(self) -> Iterator[None]:
        self.calls.append("operation")
        yield
        # Before the gateway masks the errors (it does so as the operation ends).
        result = self.execution_context.result
        self.calls.append(f"operation end: {[e.message for e in result.errors or ()]}")

    def on_parse(self) -> Iterator[None]:
        # The document checks ran first: the cached document is already there.
        self.calls.append(f"parse: {self.execution_context.graphql_document is not None}")
        yield

    def on_validate(self) -> Iterator[None]:
        self.calls.append("validate")
        yield

    def on_execute(self) -> Iterator[None]:
        self.calls.append("execute")
        yield

    def get_results(self) -> dict[str, Any]:
        return {"recorded": len(self.calls)}


def schema(*extensions: type[SchemaExtension]) -> GatewaySchema:
    return GatewaySchema(
        query=Query,
        extensions=list(extensions),
        document_checks=DocumentChecks(document_cache(max_tokens=100, maxsize=8), []),
    )


async def test_schema_extensions_run_around_the_gateway_s_own_steps() -> None:
    Recorder.calls = []
    result = await schema(Recorder).execute("{ hello broken }")
    assert Recorder.calls == [
        "operation",
        "parse: True",
        "validate",
        "execute",
        "operation end: ['internal detail']",
    ]
    assert result.data is None
    assert [error.message for error in result.errors or ()] == ["Unexpected error."]
    assert result.extensions == {"recorded": 5}


class StreamRecorder(SchemaExtension):
    """A schema extension looking at each streamed result before it is sent."""

    seen: list[list[str]] = []

    def on_stream_result(self, result: StreamExecutionResult) -> Iterator[None]:
        self.seen.append([error.message for error in getattr(result, "errors", None) or ()])
        yield


@pytest.mark.parametrize("extensions", [(), (StreamRecorder,)])
async def test_each_streamed_result_is_masked_before_it_is_sent(
    extensions: tuple[type[SchemaExtension], ...],
) -> None:
    """A stream (a WebSocket's operations) sends its results before the operation ends:
    each is masked as it is yielded, after any schema extension's own ``on_stream_result``."""
    StreamRecorder.seen = []
    # Read as each result is yielded: what a WebSocket's handler sends then.
    sent = [
        [error.message for error in result.errors or ()]
        async for result in await schema(*extensions).stream("{ hello broken }")
    ]
    assert sent == [["Unexpected error."]]
    assert StreamRecorder.seen == ([["internal detail"]] if extensions else [])


def test_sync_execution_runs_the_same_steps() -> None:
    checks_schema = schema()
    result = checks_schema.execute_sync("{ hello }")
    assert (result.data, result.errors) == ({"hello": "world"}, None)
    failed = checks_schema.execute_sync("{ broken }")
    assert [error.message for error in failed.errors or ()] == ["Unexpected error."]
    refused = checks_schema.execute_sync("{ goodbye }")
    assert refused.errors and "goodbye" in refused.errors[0].message
    assert checks_schema.document_checks.documents.parsed("{ goodbye }").errors == refused.errors


async def test_the_gateway_schema_builds_no_extension_per_operation() -> None:
    """The point of the runner: no per-operation extension instances or hook wrappers."""
    gateway_schema = build_schema()
    built: list[str] = []
    original = SchemaExtension.__init__

    def spy(self: SchemaExtension, *args: Any, **kwargs: Any) -> None:
        built.append(type(self).__name__)
        original(self, *args, **kwargs)

    SchemaExtension.__init__ = spy  # type: ignore[method-assign]
    try:
        result = await gateway_schema.execute("{ __typename }")
    finally:
        SchemaExtension.__init__ = original  # type: ignore[method-assign]
    assert result.data == {"__typename": "Query"}
    assert built == []
