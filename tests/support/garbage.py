"""Finds the objects that only the cycle collector would free: what a block left in cycles."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def cyclic_garbage() -> Iterator[list[object]]:
    """Yield a list that, after the block, holds every object the block left unreachable in
    reference cycles. The collector is off inside the block, so none is freed early."""
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    found: list[object] = []
    try:
        yield found
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        found.extend(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        if was_enabled:
            gc.enable()
