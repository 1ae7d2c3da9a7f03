import random

import pytest

from consumer.delivery.batching import PendingEvent
from consumer.ingest.mapping import Recipient
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
    assert tracker.committed({TP: 13}) == {TP: 13}
    assert tracker.committed({TP: 12}) == {}  # an older one confirmed late
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


def _state(tracker: OffsetTracker) -> tuple[object, ...]:
    tps = sorted(tracker.assigned())
    return (tracker.commit_points(), tracker.unfinished_bytes, [tracker.unfinished(tp) for tp in tps],
            tracker.oldest_unfinished_age(1_000.0),
            [sorted(tracker._partitions[tp].finished) for tp in tps])  # nothing left behind in it


@pytest.mark.parametrize("seed", range(20))
def test_finishing_a_request_s_events_at_once_leaves_the_state_one_finish_each_would(seed: int) -> None:
    """finish_events (a delivered request's 5000 events, a partition at a time) against finish per
    event: outcomes out of order, twice, for an earlier assignment, for offsets committed already."""
    rng = random.Random(seed)
    one, many = OffsetTracker(), OffsetTracker()
    tps = [("t", p) for p in range(3)]
    events: list[PendingEvent] = []
    for tracker in (one, many):
        for tp in tps:
            tracker.assign(tp)
    for tp in tps:
        for offset in range(0, 60, rng.choice((1, 1, 2))):  # a compacted partition has gaps
            epoch = one.track(tp, offset, size=rng.randrange(1, 500), now=float(offset))
            many.track(tp, offset, size=one._partitions[tp].sizes[offset], now=float(offset))
            recipient = Recipient(f"{tp}-{offset}", "c", "+905320000000")
            events.append(PendingEvent(None, tp, offset, epoch if rng.random() > 0.1 else epoch - 1, recipient, 0.0))
    for tp in tps:  # a new assignment's epoch differs: make both trackers agree on it
        many._partitions[tp].epoch = one._partitions[tp].epoch
    rng.shuffle(events)
    ended: list[PendingEvent] = []
    while events:
        request = [events.pop() for _ in range(min(len(events), rng.randrange(1, 25)))]
        request += rng.sample(request, k=min(2, len(request)))  # some twice
        request += rng.sample(ended, k=min(2, len(ended)))  # some again, in a later request
        ended += request
        for event in request:
            one.finish(event.tp, event.offset, event.epoch)
        current = many.finish_events(request)
        assert sorted(id(e) for e in current) == sorted(id(e) for e in request
                                                        if e.epoch == many._partitions[e.tp].epoch)
        assert _state(many) == _state(one)
        for tracker in (one, many):
            tracker.committed(tracker.commit_points())


# A partition's fetch position can move back within one assignment: librdkafka resets it after it
# detects log truncation (an unclean leader election) or an out-of-range offset with
# auto.offset.reset=earliest. The records from there on are read again, and may not be the ones
# read before at the same offsets.

def _read(tracker: OffsetTracker, offsets: range) -> int:
    epoch = 0
    for offset in offsets:
        epoch = tracker.track(TP, offset, size=10)
    return epoch


def test_a_position_moved_back_is_committed_before_anything_past_it() -> None:
    tracker = OffsetTracker()
    tracker.assign(TP)
    first = _read(tracker, range(100, 110))
    for offset in range(100, 110):
        tracker.finish(TP, offset, first)
    tracker.committed(tracker.commit_points())
    again = _read(tracker, range(105, 108))
    # A restart now must read 105 again: the commit point goes back to it at once.
    assert tracker.commit_points() == {TP: 105}
    tracker.committed({TP: 105})
    for offset in range(105, 108):
        tracker.finish(TP, offset, again)
    assert tracker.commit_points() == {TP: 108}
    assert tracker.unfinished_bytes == 0


def test_the_first_copy_s_outcome_does_not_finish_the_record_read_again() -> None:
    tracker = OffsetTracker()
    tracker.assign(TP)
    first = _read(tracker, range(100, 110))
    again = _read(tracker, range(105, 108))
    assert again != first
    for offset in range(100, 110):  # the first copies' outcomes, 105 to 109 included
        tracker.finish(TP, offset, first)
    assert tracker.commit_points() == {TP: 105}
    assert not tracker.live(TP, first, 105) and tracker.live(TP, again, 105)
    for offset in range(105, 108):
        tracker.finish(TP, offset, again)
    assert tracker.commit_points() == {TP: 108}
    assert tracker.unfinished(TP) == 0 and tracker.unfinished_bytes == 0


def test_records_below_the_new_position_still_hold_the_commit_point() -> None:
    tracker = OffsetTracker()
    tracker.assign(TP)
    first = _read(tracker, range(100, 110))
    again = _read(tracker, range(105, 106))
    tracker.finish(TP, 105, again)
    assert tracker.commit_points() == {}  # 100 to 104 have no outcome yet: they are not read again
    assert tracker.live(TP, first, 104)
    for offset in range(100, 105):
        tracker.finish(TP, offset, first)
    assert tracker.commit_points() == {TP: 106}
    # Only the bytes of records that can still get an outcome are counted: 100-104 and 105 twice
    # would be 70; the first 105 to 109 were dropped when the position moved back.
    assert tracker.unfinished_bytes == 0


def test_a_position_moved_back_twice() -> None:
    tracker = OffsetTracker()
    tracker.assign(TP)
    first = _read(tracker, range(100, 110))
    second = _read(tracker, range(106, 110))
    third = _read(tracker, range(103, 104))
    assert tracker.live(TP, first, 102) and not tracker.live(TP, first, 103)
    assert not tracker.live(TP, second, 106) and tracker.live(TP, third, 103)
    tracker.finish(TP, 103, third)
    for offset in range(100, 110):
        tracker.finish(TP, offset, first)
        tracker.finish(TP, offset, second)
    assert tracker.commit_points() == {TP: 104}
    assert tracker.unfinished(TP) == 0 and tracker.unfinished_bytes == 0


def test_a_confirmation_of_a_commit_sent_before_the_position_moved_back_is_not_taken_for_the_broker_s() -> None:
    """Found in review: the late confirmation of 110 was kept as what the broker holds, the real
    one of 105 ignored as lower, and 110 was never committed again once the records read again
    reached it (the broker stayed at 105)."""
    tracker = OffsetTracker()
    tracker.assign(TP)
    first = _read(tracker, range(100, 110))
    for offset in range(100, 110):
        tracker.finish(TP, offset, first)
    before = tracker.commit_points()
    again = _read(tracker, range(105, 106))
    after = tracker.commit_points()
    assert (before, after) == ({TP: 110}, {TP: 105})
    # Late, sent before the move back: neither tells what the broker holds (receipt marks below
    # a confirmed commit are removed, so it must not be taken for one).
    assert tracker.committed(before) == {} and tracker.committed(after) == {}
    _read(tracker, range(106, 110))
    for offset in range(105, 110):
        tracker.finish(TP, offset, again)
    assert tracker.commit_points() == {TP: 110}
