"""The schema's own steps (document checks, error masking) at Strawberry's extension points,
without Strawberry's per-request extension machinery.

As schema extensions, the two steps cost more to run than they do: per operation Strawberry
built both extensions, four context managers, looked every hook of every extension up again
and wrapped each one found in a new ``contextlib`` decorator (bench/PROFILE.md, eighth round).
``GatewayExtensionsRunner`` is what ``Schema.create_extensions_runner`` returns: it calls the
steps directly as the operation is parsed, validated and ends, and as a stream (a WebSocket's
operations) sends each result. Schema extensions still work: when the schema has any,
Strawberry's own context managers run them inside these steps.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any, Protocol

from strawberry.extensions import SchemaExtension
from strawberry.extensions.runner import SchemaExtensionsRunner
from strawberry.types import ExecutionContext, ExecutionResult, StreamExecutionResult

from payout_gateway.graphql.documents import CheckedDocument, DocumentChecks
from payout_gateway.graphql.safety import mask_errors, mask_result_errors


class _ContextManager(Protocol):
    """Strawberry's phase context managers, used both ways (sync and async execution)."""

    def __enter__(self) -> Any: ...

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool | None: ...

    async def __aenter__(self) -> Any: ...

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> bool | None: ...


class _Phase:
    """``enter`` as the phase starts, then the schema extensions' hooks for it (if any), then
    ``entered``; ``leave`` once they are done, unless the phase raised."""

    __slots__ = ("_enter", "_entered", "_extensions", "_leave")

    def __init__(
        self,
        extensions: _ContextManager | None,
        enter: Callable[[], None] | None = None,
        leave: Callable[[], None] | None = None,
        entered: Callable[[], None] | None = None,
    ) -> None:
        self._extensions = extensions
        self._enter = enter
        self._entered = entered
        self._leave = leave

    def __enter__(self) -> None:
        if self._enter is not None:
            self._enter()
        if self._extensions is not None:
            self._extensions.__enter__()
        if self._entered is not None:
            self._entered()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        return self._left(
            exc_type,
            suppressed=self._extensions is not None
            and bool(self._extensions.__exit__(exc_type, exc, tb)),
        )

    async def __aenter__(self) -> None:
        if self._enter is not None:
            self._enter()
        if self._extensions is not None:
            await self._extensions.__aenter__()
        if self._entered is not None:
            self._entered()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        return self._left(
            exc_type,
            suppressed=self._extensions is not None
            and bool(await self._extensions.__aexit__(exc_type, exc, tb)),
        )

    def _left(self, exc_type: type[BaseException] | None, *, suppressed: bool) -> bool:
        if (exc_type is None or suppressed) and self._leave is not None:
            self._leave()
        return suppressed


class GatewayExtensionsRunner(SchemaExtensionsRunner):
    """One operation's runner: the document checks as it is parsed and validated, errors
    masked and redacted as it ends (after any schema extension's own ``on_operation``) or,
    when it is streamed, in each result as it is sent (after any ``on_stream_result``)."""

    def __init__(
        self,
        execution_context: ExecutionContext,
        extensions: list[SchemaExtension],
        checks: DocumentChecks,
    ) -> None:
        super().__init__(execution_context, extensions)
        self._checks = checks
        self._checked: CheckedDocument | None = None
        self._streamed = False

    def operation(self) -> _Phase:  # type: ignore[override]
        return _Phase(super().operation() if self.extensions else None, leave=self._operation_ends)

    def on_stream_result(self, result: StreamExecutionResult) -> _Phase:  # type: ignore[override]
        # Strawberry's stream (``Schema.stream``: every operation of a WebSocket, queries and
        # mutations included) sends each result to the client before the operation ends:
        # each is masked here, just before it is sent. Every result it yields passes here,
        # its refusals of the document before it runs (sent as an ``error`` message) and an
        # exception raised mid-stream included.
        return _Phase(
            super().on_stream_result(result) if self.extensions else None,
            entered=lambda: self._mask_streamed_result(result),
        )

    def _operation_ends(self) -> None:
        # A streamed operation's last result is already masked, as Strawberry's MaskErrors
        # extension leaves it too.
        if not self._streamed:
            mask_errors(self.execution_context)

    def _mask_streamed_result(self, result: StreamExecutionResult) -> None:
        self._streamed = True
        # Or a frame of incremental delivery (@defer, @stream), which the schema does not
        # enable and the WebSocket's handler refuses to send.
        if isinstance(result, ExecutionResult):
            mask_result_errors(result, self.execution_context)

    def parsing(self) -> _Phase:  # type: ignore[override]
        return _Phase(super().parsing() if self.extensions else None, enter=self._parse)

    def validation(self) -> _Phase:  # type: ignore[override]
        return _Phase(super().validation() if self.extensions else None, enter=self._validate)

    def executing(self) -> _Phase:  # type: ignore[override]
        return _Phase(super().executing() if self.extensions else None)

    def _parse(self) -> None:
        self._checked = self._checks.parse(self.execution_context)

    def _validate(self) -> None:
        self._checks.validate(self.execution_context, self._checked)
