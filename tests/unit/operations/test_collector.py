"""The collector's tuning: cyclic garbage is bounded in time, not only by allocations."""

from __future__ import annotations

import gc
import weakref

import pytest

from consumer.operations import collector
from consumer.operations.collector import FullPasses


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None
        self.payload = bytearray(1024)


def _cycle() -> weakref.ref[_Node]:
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    return weakref.ref(a)


@pytest.fixture
def tuned():
    before = gc.get_threshold()
    collector.tune_for_throughput()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


def test_a_cycle_is_freed_by_the_next_due_full_pass_though_few_containers_were_allocated(tuned) -> None:
    passes = FullPasses(now=100.0, every_s=60.0)
    gone = _cycle()
    assert gone() is not None  # refcounting alone never frees it, and 2 objects are far below the threshold
    assert not passes.collect_if_due(159.9)
    assert gone() is not None
    assert passes.collect_if_due(160.0)
    assert gone() is None


def test_full_passes_keep_their_period() -> None:
    passes = FullPasses(now=0.0, every_s=60.0)
    ran = [t for t in range(0, 301, 5) if passes.collect_if_due(float(t))]
    assert ran == [60, 120, 180, 240, 300]


def test_the_young_threshold_is_set_and_the_start_up_heap_frozen(tuned) -> None:
    assert gc.get_threshold() == (collector.YOUNG_THRESHOLD, collector.MIDDLE_EVERY, collector.OLD_EVERY)
    assert gc.get_freeze_count() > 0
