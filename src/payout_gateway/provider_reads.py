"""One provider read per object within a block (a refresh pass), its answer given to each asker."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar, cast

T = TypeVar("T")

# What the block's reads answered, by key: the object read, or the error the read raised.
_ANSWERS: ContextVar[dict[Hashable, Any] | None] = ContextVar(
    "payout_gateway_provider_reads", default=None
)


class _Raised:
    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error


@contextmanager
def one_read_per_object() -> Iterator[None]:
    """Inside the block, ``read_once`` asks the provider once per key. Two of the gateway's
    objects may be one provider object: Paygentic's payout account is its verification's
    destination account, which the gateway also keeps as a bank account, and a refresh pass
    that reads both read that account twice."""
    token = _ANSWERS.set({})
    try:
        yield
    finally:
        _ANSWERS.reset(token)


async def read_once(key: Hashable, read: Callable[[], Awaitable[T]]) -> T:
    """``read()``'s answer (or error), given again for ``key`` for the rest of the block;
    outside any block, ``read()`` each time."""
    answers = _ANSWERS.get()
    if answers is None:
        return await read()
    if key not in answers:
        try:
            answers[key] = await read()
        except Exception as error:
            answers[key] = _Raised(error)
    answer = answers[key]
    if isinstance(answer, _Raised):
        raise answer.error
    return cast(T, answer)
