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
