"""The garbage collector's settings for the consumer's long run.

Python's cyclic collector runs a young-generation pass every 700 container allocations. A
consumer holds up to MAX_BUFFERED_EVENTS events in memory while their batches fill and their
requests leave, each a handful of containers (the decoded record, its recipient, its pending
event), so at 20,000 events/s those passes, and the older generations' passes over every
buffered event, took a quarter of the process's CPU (README, "Benchmarks") while finding almost
nothing: the per-event objects hold no reference cycles and reference counting frees them.

So the start-up heap (modules, configuration, compiled schemas and mappings) is frozen out of
every pass, and the young generation is collected every 50,000 allocations: the few cycles that
do form (an exception's traceback and its frames) are still collected, within milliseconds at
full load, and their memory stays bounded by the threshold.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 50_000
# Passes of one generation between passes of the next: CPython's defaults for these two.
MIDDLE_EVERY = 10
OLD_EVERY = 10


def tune_for_throughput() -> None:
    """Call once, after start-up built everything that lives for the whole run."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, MIDDLE_EVERY, OLD_EVERY)
