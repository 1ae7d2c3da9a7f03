"""The garbage collector's settings for the consumer's long run.

Python's cyclic collector runs a young-generation pass every 700 container allocations. A
consumer holds up to MAX_BUFFERED_EVENTS events in memory while their batches fill and their
requests leave, each a handful of containers (the decoded record, its recipient, its pending
event), so at 20,000 events/s those passes, and the older generations' passes over every
buffered event, took a quarter of the process's CPU (README, "Benchmarks") while finding almost
nothing: the per-event objects hold no reference cycles and reference counting frees them.

So the start-up heap (modules, configuration, compiled schemas and mappings) is frozen out of
every pass, and a young pass waits for 200,000 more containers than were freed since the last
one. CPython's count drops on every free only while it is above zero: the rarer the passes, the
more the events leaving offset the events arriving, so a replica working through a backlog (its
buffer filling) makes one or two passes where a threshold of 50,000 made twenty, each over the
newest buffered events: 0.9 s of 300,000 events' 8 s of CPU (3 us per event), now under 0.05.

What the count no longer bounds, time does: the few cycles that form (an exception kept with
its traceback, whose frames may hold a whole batch) are freed by a full pass every FULL_EVERY_S,
called from the poll loop (`collect_if_due`), and sooner when they pile up past the threshold.
A full pass visits everything live besides the frozen start-up heap: about 0.2 s of CPU with
300,000 events buffered, once a minute (under 0.5% of a core, and one short pause of the poll loop).

Before that, `run`'s start-up (its imports, the settings, the builders) allocates a few hundred
thousand containers that live for the whole run, and the default thresholds passed over them
about 180 times, 0.035 s of CPU that freed nearly nothing (issue 14: start-up CPU). So `run`
pauses the collector for its start-up (`pause_for_start_up`); the full pass of
`tune_for_throughput` frees what garbage the start-up left, and turns it back on.

That pass visited the 73,000 objects the imports leave, 0.02 s of CPU, to free about 800 of them:
throwaway classes, functions and tuples of the libraries' class construction (typing, pydantic,
dataclasses), holding no file, socket or thread. So the imports' objects are frozen as they are,
with no pass (`freeze_imports`, as the gc module's documentation advises before a fork), that
garbage with them (about 0.2 MB, once); the pass at the end of the start-up visits only what the
settings and the builders made, where the garbage that may hold a resource (a probe's client) is.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 200_000
# Passes of one generation between passes of the next: CPython's defaults for these two.
MIDDLE_EVERY = 10
OLD_EVERY = 10
FULL_EVERY_S = 60.0


_paused = False  # by pause_for_start_up, until end_start_up
_imports_frozen = False  # by freeze_imports, until tune_for_throughput freezes for good or end_start_up


def pause_for_start_up() -> None:
    """No automatic pass until `end_start_up` (or `tune_for_throughput`); nothing changes when
    the collector is off already."""
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def freeze_imports() -> None:
    """Called by `run` once its modules are imported: while the start-up pause holds, what they
    made is frozen without a pass (module docstring); nothing otherwise."""
    global _imports_frozen
    if _paused:
        gc.freeze()
        _imports_frozen = True


def end_start_up() -> None:
    """The collector back on, if `pause_for_start_up` turned it off (and not since); a start-up
    that ended before `tune_for_throughput` (a bad setting, in a process that goes on: a test)
    also leaves the heap unfrozen, as it found it."""
    global _paused, _imports_frozen
    if _imports_frozen:
        _imports_frozen = False
        gc.unfreeze()
    if _paused:
        _paused = False
        gc.enable()


def tune_for_throughput() -> None:
    """Call once, after start-up built everything that lives for the whole run."""
    global _imports_frozen
    gc.collect()
    gc.freeze()
    _imports_frozen = False  # frozen for good now, with the rest of the start-up heap
    gc.set_threshold(YOUNG_THRESHOLD, MIDDLE_EVERY, OLD_EVERY)
    end_start_up()


class FullPasses:
    """A full collection every `every_s` of the caller's clock (module docstring)."""

    def __init__(self, now: float, every_s: float | None = None) -> None:
        self.every_s = FULL_EVERY_S if every_s is None else every_s
        self._due = now + self.every_s

    def collect_if_due(self, now: float) -> bool:
        """Run a full pass if one is due; True if it ran."""
        if now < self._due:
            return False
        self._due = now + self.every_s
        gc.collect()
        return True
