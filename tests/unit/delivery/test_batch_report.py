"""BatchReport (consumer/delivery/outcome.py) reports each event of a batch once, by identity: the
whole batch at once (a delivered request) as well as in parts, duplicates in a list, and two reads
of one record (equal fields, two events, two outcomes)."""

from __future__ import annotations

from consumer.delivery.outcome import BatchReport, Outcome
from tests.support.fakes import event


def test_a_whole_batch_is_reported_once_and_nothing_after() -> None:
    events = [event(i) for i in range(5)]
    got: list[Outcome] = []
    report = BatchReport(got.append, events)
    report(Outcome("delivered", list(events)))
    report(Outcome("dead_letter", list(events)))  # a fallback after the fact finds nothing open
    assert [(o.kind, o.events) for o in got] == [("delivered", events)]
    assert report.open_events() == []


def test_parts_and_duplicates_within_a_list_are_reported_once_each() -> None:
    a, b, c = event(1), event(2), event(3)
    got: list[Outcome] = []
    report = BatchReport(got.append, [a, b])
    report(Outcome("skipped", [a, a]))  # as many entries as open events, yet not all of them
    report.add([c])  # a top-up
    report(Outcome("requeue", [a, b, b, c]))
    assert [(o.kind, o.events) for o in got] == [("skipped", [a]), ("requeue", [b, c])]


def test_two_reads_of_one_record_are_two_events() -> None:
    first, again = event(7), event(7)
    assert first != again  # equal fields; compared by identity
    got: list[Outcome] = []
    report = BatchReport(got.append, [first, again])
    report(Outcome("delivered", [first]))
    assert report.open_events() == [again]
    report(Outcome("skipped", [again, first]))
    assert [(o.kind, o.events) for o in got] == [("delivered", [first]), ("skipped", [again])]
