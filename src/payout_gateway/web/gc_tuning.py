"""Cycle-collector settings for a serving process, applied once its app has started."""

from __future__ import annotations

import gc

# Net allocations of tracked objects between two collections of the youngest generation
# (CPython's default is 700). At 32 requests in flight, 700 was reached every ~3 requests, and
# each collection traversed the in-flight requests' objects and moved them to older
# generations, to be traversed again there. Requests leave no cyclic garbage behind
# (graphql/execution.py; tests/api/test_cycle_collector.py), so collecting less often frees
# nothing later.
YOUNG_GENERATION_THRESHOLD = 10_000


def tune_cycle_collector() -> None:
    """Freeze what start-up built and collect the youngest generation less often.

    Everything alive after start-up (the schema, the ORM's mappers, the imported modules,
    ~165,000 objects) lives as long as the process, and every full collection traversed it
    again: ~100 ms each. Garbage is collected first, so only live objects are frozen.
    Together with requests that leave no cycles, the collector's share of the gateway's CPU
    went from ~16 % to under 1 % (bench/PROFILE.md, sixth round). Only for a process that serves:
    an app embedded in another process (tests) leaves that process's collector alone."""
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, middle, oldest)
