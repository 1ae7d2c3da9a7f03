"""The in-memory copy of the marks of a replica's partitions (consumer/outcomes/owned_marks.py)."""

from __future__ import annotations

import pytest

from consumer.outcomes.owned_marks import OwnedMarks

TP0, TP1 = ("t", 0), ("t", 1)


def test_a_partition_that_failed_to_load_is_loaded_on_the_next_call_and_the_others_stay() -> None:
    store = {TP0: {1: "a", 5: "b"}, TP1: {2: "c"}}
    failing = {TP1}

    def load(tp: tuple[str, int]) -> dict[int, str]:
        if tp in failing:
            raise ConnectionError("Redis away")
        return store[tp]

    marks: OwnedMarks[str] = OwnedMarks(load)
    marks.assigned([TP0, TP1])
    with pytest.raises(ConnectionError):
        marks.load_all()
    assert marks.of(TP0) == {1: "a", 5: "b"} and marks.unloaded == {TP1}
    failing.clear()
    marks.load_all()
    assert marks.of(TP1) == {2: "c"} and not marks.unloaded


def test_marks_go_below_a_commit_and_with_their_partition() -> None:
    marks: OwnedMarks[str] = OwnedMarks(lambda tp: {1: "a", 5: "b"} if tp == TP0 else {})
    marks.assigned([TP0, TP1])
    marks.load_all()
    assert marks.of(TP1) is None and bool(marks)  # no marks: None, the common case
    marks.trim({TP0: 5})
    assert marks.of(TP0) == {5: "b"}
    marks.trim({TP0: 6})
    assert marks.of(TP0) is None and not marks  # nothing left: the common path again
    marks.remember(TP1, 7, "x")
    assert marks.of(TP1) == {7: "x"}
    marks.forget([TP1])
    assert marks.of(TP1) is None and marks.owned == {TP0}
