from consumer.outcomes.offsets import OffsetTracker

TP = ("t", 0)


def test_commits_only_the_contiguous_finished_prefix() -> None:
    tracker = OffsetTracker()
    tracker.assign(TP)
    epoch = 0
    for offset in range(10, 15):
        epoch = tracker.track(TP, offset)
    for offset in (11, 12, 14):
        tracker.finish(TP, offset, epoch)
    assert tracker.commit_points() == {}
    tracker.finish(TP, 10, epoch)
    assert tracker.commit_points() == {TP: 13}
    tracker.committed({TP: 13})
    assert tracker.commit_points() == {}
    tracker.finish(TP, 13, epoch)
    assert tracker.commit_points() == {TP: 15}


def test_outcomes_of_an_earlier_assignment_are_ignored() -> None:
    tracker = OffsetTracker()
    tracker.assign(TP)
    old = tracker.track(TP, 0)
    tracker.revoke(TP)
    tracker.assign(TP)
    new = tracker.track(TP, 0)
    assert old != new
    tracker.finish(TP, 0, old)
    assert tracker.commit_points() == {}
    tracker.finish(TP, 0, new)
    assert tracker.commit_points() == {TP: 1}


def test_gaps_in_offsets_are_fine() -> None:
    tracker = OffsetTracker()
    tracker.assign(TP)
    epoch = tracker.track(TP, 5)
    tracker.track(TP, 9)  # compacted topic or transaction markers
    tracker.finish(TP, 9, epoch)
    tracker.finish(TP, 5, epoch)
    assert tracker.commit_points() == {TP: 10}


def test_bytes_and_age_of_records_without_an_outcome() -> None:
    tracker = OffsetTracker()
    tracker.assign(TP)
    epoch = tracker.track(TP, 0, size=100, now=10.0)
    tracker.track(TP, 1, size=50, now=11.0)
    tracker.track(("t", 1), 0, size=7, now=12.0)
    assert tracker.unfinished_bytes == 157
    assert tracker.oldest_unfinished_age(20.0) == 10.0
    tracker.finish(TP, 1, epoch)
    tracker.finish(TP, 1, epoch)  # twice: counted once
    assert tracker.unfinished_bytes == 107
    assert tracker.oldest_unfinished_age(20.0) == 10.0  # offset 0 still has no outcome
    tracker.finish(TP, 0, epoch)
    assert tracker.unfinished_bytes == 7 and tracker.oldest_unfinished_age(20.0) == 8.0
    tracker.revoke(("t", 1))
    assert tracker.unfinished_bytes == 0 and tracker.oldest_unfinished_age(20.0) == 0.0
