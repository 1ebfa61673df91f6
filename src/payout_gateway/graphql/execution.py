"""graphql-core's execution context without its reference cycle, so a request's state is freed
as soon as the request ends instead of waiting for the cycle collector."""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Sequence
from typing import Any

from graphql.pyutils import gather_with_cancel
from graphql.type.definition import GraphQLResolveInfoHelpers
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext


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


class AcyclicExecutionContext(StrawberryGraphQLCoreExecutionContext):
    """graphql-core gives every resolver's ``info`` helpers that are bound methods of the
    context: a cycle (context -> helpers -> context) that kept each request's whole execution
    state, the GraphQL context, the HTTP request and response with it, alive until a
    collection of the cycle collector. Those collections were ~16 % of the gateway's CPU
    (bench/PROFILE.md, sixth round). The same helpers without a strong reference back."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.async_helpers = GraphQLResolveInfoHelpers(gather=_gather, track=_Tracker(self))
