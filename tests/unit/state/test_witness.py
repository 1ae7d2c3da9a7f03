"""Redis losing the dedup or contact state while no replica ran is said by the first replica that
starts: the group's commits stamp the state they were made under (consumer/state/witness.py)."""

from __future__ import annotations

import itertools
import logging

import pytest

from consumer.operations.metrics import Metrics
from consumer.state import origins as origins_module
from consumer.state.origins import CONTACTS, DEDUP, Buckets, MemoryOrigins, OriginWatch, origin_key
from consumer.state.witness import (
    MAX_STAMP_CHARS,
    CommittedStamps,
    StateStamp,
    parse_stamp,
    stamp_of,
    stamp_text,
)
from tests.unit.state.test_origins import DEDUP_TAGS, LAYOUT, PHONE_TAGS, Clock, probe

HOUR = 3600.0
KEPT = "{t}:witnessed"


@pytest.fixture(autouse=True)
def numbered_origins(monkeypatch: pytest.MonkeyPatch) -> None:
    """Origins written anew differ from the lost ones in every byte of the stamp (their random
    part would collide with a lost one's byte once in 256)."""
    counter = itertools.count(1)
    monkeypatch.setattr(origins_module, "new_since", lambda: f"1800000000000-{next(counter):016x}")


def replica(store: MemoryOrigins, clock: Clock, contacts: bool = True, keeps_s: float = 7 * 24 * HOUR
            ) -> OriginWatch:
    sources = [lambda: Buckets(DEDUP, DEDUP_TAGS, LAYOUT, keeps_s=keeps_s)]
    if contacts:
        sources.append(lambda: Buckets(CONTACTS, PHONE_TAGS, keeps_s=30 * 24 * HOUR))
    return OriginWatch(store, sources, clock=clock, witnessed_key=KEPT)


def running(store: MemoryOrigins, clock: Clock, checks: int = 3, contacts: bool = True) -> str:
    """A replica that started on a group with no stamps, checked `checks` times and committed: its stamp."""
    watch = replica(store, clock, contacts)
    CommittedStamps(watch).read([])
    for _ in range(checks):
        assert watch.check() == []
    stamp = watch.stamp
    assert stamp is not None
    return stamp


def starting(store: MemoryOrigins, clock: Clock, *stamps: str, contacts: bool = True) -> OriginWatch:
    """A replica that starts after the fleet stopped, on a group whose commits carry these stamps."""
    watch = replica(store, clock, contacts)
    CommittedStamps(watch).read(("t", n, stamp) for n, stamp in enumerate(stamps))
    return watch


def said(watch: OriginWatch) -> list[tuple[str, int, bool]]:
    return [(loss.state, loss.lost, loss.rolled_back) for loss in watch.check()]


def test_a_loss_of_every_bucket_while_no_replica_ran_is_said_by_the_next_start() -> None:
    """Before: the new replica saw the new origins for the first time and said nothing."""
    store, clock = MemoryOrigins(), Clock()
    stamp = running(store, clock)
    store.lose()  # Redis restarted without its data while the fleet was stopped
    watch = starting(store, clock, stamp)
    losses = watch.check()
    assert [(loss.state, loss.lost, loss.buckets, loss.witnessed) for loss in losses] == \
        [(DEDUP, 64, 64, True), (CONTACTS, 64, 64, True)]
    assert losses[0].message().startswith("Redis lost the dedup state of 64 of 64 buckets while no replica watched")
    assert "second SMS" in losses[0].message() and "appendonly yes" in losses[0].message()
    assert watch.check() == []  # said once


def test_an_unchanged_state_says_nothing_and_the_new_stamp_is_the_same_state() -> None:
    store, clock = MemoryOrigins(), Clock()
    stamp = running(store, clock)
    watch = starting(store, clock, stamp)
    assert watch.stamp is None  # not compared yet: commits keep the stamps they replace
    assert watch.check() == []
    assert watch.stamp is not None
    assert parse_stamp(watch.stamp)[DEDUP].digest == parse_stamp(stamp)[DEDUP].digest


def test_the_buckets_lost_are_counted() -> None:
    store, clock = MemoryOrigins(), Clock()
    stamp = running(store, clock)
    store.lose([origin_key(tag) for tag in DEDUP_TAGS[:21]])  # one master of three lost its data
    assert said(starting(store, clock, stamp)) == [(DEDUP, 21, False)]


def test_redis_gone_back_to_an_older_snapshot_while_no_replica_ran_is_said() -> None:
    store, clock = MemoryOrigins(), Clock()
    watch = replica(store, clock)
    CommittedStamps(watch).read([])
    watch.check()
    snapshot = store.snapshot()  # the last RDB snapshot
    for _ in range(3):
        watch.check()
    stamp = watch.stamp
    assert stamp is not None
    store.go_back(snapshot)  # restarted from it, without an AOF
    losses = starting(store, clock, stamp).check()
    assert [(loss.state, loss.rolled_back, loss.witnessed) for loss in losses] == \
        [(DEDUP, True, True), (CONTACTS, True, True)]
    assert losses[0].message().startswith("Redis went back, while no replica watched, to a state of the dedup state")


def test_losing_the_last_check_as_an_aof_loses_its_last_second_is_no_rollback() -> None:
    store, clock = MemoryOrigins(), Clock()
    watch = replica(store, clock)
    CommittedStamps(watch).read([])
    for _ in range(3):
        watch.check()
    before_last = store.snapshot()
    watch.check()
    stamp = watch.stamp
    assert stamp is not None
    store.go_back(before_last)  # the last check's counts were in the last second
    assert starting(store, clock, stamp).check() == []


def test_a_stamp_older_than_the_marks_matter_witnesses_nothing() -> None:
    store, clock = MemoryOrigins(), Clock()
    stamp = running(store, clock, contacts=False)
    store.lose()
    clock.now += 8 * 24 * HOUR  # stopped for longer than DEDUP_HORIZON_S (7 days here)
    assert starting(store, clock, stamp, contacts=False).check() == []


def test_a_loss_a_later_commit_already_saw_is_not_said_again() -> None:
    """A partition whose last commit predates a loss a running replica reported (it stopped before
    committing that partition again) must not make every later start report it once more."""
    store, clock = MemoryOrigins(), Clock()
    old = running(store, clock)
    store.lose()
    new = running(store, clock)  # a replica that started after it and committed the other partitions
    assert starting(store, clock, old, new).check() == []


def test_stamps_of_other_tools_or_damaged_ones_are_passed_over() -> None:
    store, clock = MemoryOrigins(), Clock()
    running(store, clock)
    watch = starting(store, clock, "", "kafka-consumer-groups reset", "pisano-sms/1 dedup=1.zz.00.-",
                     "pisano-sms/1 dedup=12.abcdefabcdef.0.5", "pisano-sms/1 " + "x" * MAX_STAMP_CHARS)
    assert watch.check() == []


def test_the_stamp_is_small_enough_for_any_broker_and_reads_back() -> None:
    origins = [f"1800000000000-{n:016x}" for n in range(64)]
    states = {DEDUP: stamp_of(1_800_000_000, origins, list(range(64))),
              CONTACTS: stamp_of(1_800_000_000, origins, [None] * 64)}
    text = stamp_text(states)
    assert len(text) < 700 < MAX_STAMP_CHARS <= 4096  # offset.metadata.max.bytes defaults to 4096
    assert parse_stamp(text) == states
    assert states[CONTACTS].checks is None and states[DEDUP].checks == sum(range(64))
    assert StateStamp.parse(states[DEDUP].text()) == states[DEDUP]


def test_commits_keep_the_stamp_they_replace_until_the_watch_has_compared() -> None:
    """A replica stopped before its first check must leave the evidence for the next one."""
    store, clock = MemoryOrigins(), Clock()
    stamp = running(store, clock)
    watch = replica(store, clock)
    stamps = CommittedStamps(watch)
    stamps.read([("t", 0, stamp), ("t", 1, "another tool's"), ("t", 2, None)])
    assert stamps.metadata(("t", 0)) == stamp
    assert stamps.metadata(("t", 1)) == "another tool's"
    assert stamps.metadata(("t", 2)) is None and stamps.metadata(("t", 9)) is None
    watch.check()
    assert stamps.metadata(("t", 1)) == watch.stamp != stamp  # the same state, seen later
    stamps.refuse()
    assert stamps.metadata(("t", 0)) is None


class MasterDown(MemoryOrigins):
    """`store`, with one bucket's origin unread while `down` (its cluster master down)."""

    def __init__(self, store: MemoryOrigins) -> None:
        super().__init__()
        self.store, self.down = store, True

    def origins(self, buckets):  # type: ignore[no-untyped-def]
        found = self.store.origins(buckets)
        if self.down:
            found[5] = origins_module.StateStoreError("a master down")
        return found

    def witnessed(self, key: str) -> str | None:
        return self.store.witnessed(key)

    def keep_witnessed(self, key: str, stamp: str) -> None:
        self.store.keep_witnessed(key, stamp)


def test_a_state_with_unread_buckets_is_compared_once_every_bucket_is_read() -> None:
    store, clock = MemoryOrigins(), Clock()
    stamp = running(store, clock, contacts=False)
    store.lose()
    flaky = MasterDown(store)
    watch = OriginWatch(flaky, [lambda: Buckets(DEDUP, DEDUP_TAGS, LAYOUT, keeps_s=HOUR)], clock=clock)
    CommittedStamps(watch).read([("t", 0, stamp)])
    assert watch.check() == [] and watch.stamp is None
    flaky.down = False
    assert [(loss.state, loss.lost) for loss in watch.check()] == [(DEDUP, 64)]
    assert watch.stamp is not None


def test_the_group_read_after_the_first_check_is_compared_at_the_next() -> None:
    store, clock = MemoryOrigins(), Clock()
    stamp = running(store, clock, contacts=False)
    store.lose()
    watch = replica(store, clock, contacts=False)
    assert watch.check() == []
    CommittedStamps(watch).read([("t", 0, stamp)])
    assert [(loss.state, loss.lost) for loss in watch.check()] == [(DEDUP, 64)]


def test_an_unread_group_is_said_and_the_watch_stamps_what_it_sees(caplog: pytest.LogCaptureFixture) -> None:
    store, clock = MemoryOrigins(), Clock()
    watch = replica(store, clock, contacts=False)
    with caplog.at_level(logging.WARNING):
        CommittedStamps(watch).unread("KafkaError{code=_TIMED_OUT}")
    assert [r.reason for r in caplog.records] == ["redis_state_unchecked"]  # type: ignore[attr-defined]
    assert "goes unsaid this time" in caplog.records[0].getMessage()
    assert watch.check() == [] and watch.stamp is not None


def test_the_probe_counts_a_witnessed_loss_like_any_other(caplog: pytest.LogCaptureFixture) -> None:
    store, clock, metrics = MemoryOrigins(), Clock(), Metrics()
    stamp = running(store, clock)
    store.lose([origin_key(tag) for tag in PHONE_TAGS[:10]])
    checker = probe(starting(store, clock, stamp), metrics)
    with caplog.at_level(logging.ERROR):
        checker._check_origins(checker.origins)  # type: ignore[arg-type]
    assert metrics.registry.get_sample_value("pisano_sms_redis_state_lost_total", {"state": CONTACTS}) == 10
    assert metrics.registry.get_sample_value("pisano_sms_redis_state_lost_total", {"state": DEDUP}) == 0
    assert [r.reason for r in caplog.records] == ["redis_state_lost"]  # type: ignore[attr-defined]


def test_a_loss_the_last_start_said_is_not_said_again_by_the_next_over_idle_partitions() -> None:
    """The partitions of an idle topic keep the stamps of their last commits, from before the
    loss: without the stamp the first start kept in Redis, every start would say it again."""
    store, clock = MemoryOrigins(), Clock()
    old = running(store, clock)
    store.lose()
    assert [loss.state for loss in starting(store, clock, old).check()] == [DEDUP, CONTACTS]
    assert store.witnessed(KEPT) is not None
    assert starting(store, clock, old).check() == []  # no record since: nothing committed anew
    store.lose()  # and lost again, the kept stamp with it
    assert [(loss.state, loss.lost) for loss in starting(store, clock, old).check()] == [(DEDUP, 64), (CONTACTS, 64)]


def test_a_loss_a_running_replica_said_is_not_said_again_by_the_next_start_over_idle_partitions() -> None:
    """No record since the loss (a quiet night): no commit carries the state a running replica saw
    after it, and only the stamp it keeps in Redis tells the next start that the loss was said."""
    store, clock = MemoryOrigins(), Clock()
    watch = replica(store, clock)
    CommittedStamps(watch).read([])
    for _ in range(3):
        assert watch.check() == []
    old = watch.stamp  # the last commits', before the loss
    assert old is not None
    store.lose()  # Redis restarted without its data while the replica ran: said there and then
    assert [(loss.state, loss.witnessed) for loss in watch.check()] == [(DEDUP, False), (CONTACTS, False)]
    assert watch.check() == []
    assert starting(store, clock, old).check() == []  # the rolling restart that follows


def test_a_rollback_a_running_replica_said_is_not_said_again_by_the_next_start_over_idle_partitions() -> None:
    store, clock = MemoryOrigins(), Clock()
    watch = replica(store, clock)
    CommittedStamps(watch).read([])
    watch.check()
    snapshot = store.snapshot()
    for _ in range(6):
        assert watch.check() == []
    old = watch.stamp
    assert old is not None
    store.go_back(snapshot)  # restarted from an RDB snapshot a minute old while the replica ran
    assert [(loss.rolled_back, loss.witnessed) for loss in watch.check()] == [(True, False), (True, False)]
    assert watch.check() == []
    assert starting(store, clock, old).check() == []


def test_the_group_read_while_a_check_runs_is_compared_with_the_kept_stamp_too() -> None:
    """The probe's thread checks while the loop reads the group: a check that began before the
    stamps came must not compare them without the stamp the last start kept."""
    store, clock = MemoryOrigins(), Clock()
    old = running(store, clock)
    store.lose()
    assert [loss.state for loss in starting(store, clock, old).check()] == [DEDUP, CONTACTS]  # said, kept

    watch = replica(store, clock)
    stamps = CommittedStamps(watch)

    class ReadMeanwhile(MemoryOrigins):
        def witnessed(self, key: str) -> str | None:
            return store.witnessed(key)

        def keep_witnessed(self, key: str, stamp: str) -> None:
            store.keep_witnessed(key, stamp)

        def origins(self, buckets):  # type: ignore[no-untyped-def]
            stamps.read([("t", 0, old)])  # the pipeline's thread, during this check
            return store.origins(buckets)

    watch.store = ReadMeanwhile()
    assert watch.check() == [] and watch.check() == []


@pytest.mark.parametrize("at", ["99999999999999999999", "4102444800"])  # past time_t; 2100
def test_a_stamp_dated_in_the_future_witnesses_nothing(at: str, caplog: pytest.LogCaptureFixture) -> None:
    """Another tool's metadata in the stamp's form, or a replica whose clock was years ahead:
    sorted last, it would be said as a loss at every start (and past time_t, its date raised in
    the message, the loss counted but never logged)."""
    store, clock, metrics = MemoryOrigins(), Clock(), Metrics()
    stamp = running(store, clock, contacts=False)
    hostile = f"pisano-sms/1 dedup={at}.abcdefabcdef.{'00' * 64}.5"
    checker = probe(starting(store, clock, stamp, hostile, contacts=False), metrics)
    with caplog.at_level(logging.ERROR):
        checker._check_origins(checker.origins)  # type: ignore[arg-type]
    assert caplog.records == []
    assert metrics.registry.get_sample_value("pisano_sms_redis_state_lost_total", {"state": DEDUP}) == 0


def test_a_loss_said_by_a_running_replica_before_a_start_first_read_every_bucket_is_not_witnessed() -> None:
    """A starting replica compares once it has read every bucket, maybe much later (a master
    down): the stamp kept in Redis is read then, not at its first check, or it misses the one the
    running replica kept after saying the loss, and says it again as one while no replica ran."""
    store, clock = MemoryOrigins(), Clock()
    running_one = replica(store, clock, contacts=False)
    CommittedStamps(running_one).read([])
    for _ in range(3):
        assert running_one.check() == []
    old = running_one.stamp
    assert old is not None
    flaky = MasterDown(store)
    starting_one = OriginWatch(flaky, [lambda: Buckets(DEDUP, DEDUP_TAGS, LAYOUT, keeps_s=HOUR)], clock=clock,
                               witnessed_key=KEPT)
    CommittedStamps(starting_one).read([("t", 0, old)])
    assert starting_one.check() == []  # a bucket unread: not compared yet
    store.lose()
    assert [loss.witnessed for loss in running_one.check()] == [False]  # said there and then
    flaky.down = False
    assert [loss for loss in starting_one.check() if loss.witnessed] == []


def test_a_kept_stamp_that_cannot_be_read_defers_the_comparison_not_the_check() -> None:
    """On a cluster the kept stamp lives on one master: that master down must not blind the watch
    to the buckets of the others (a loss there goes unsaid), only put off the comparison."""
    store, clock = MemoryOrigins(), Clock()
    old = running(store, clock, contacts=False)
    away = [True]

    class KeptAway(MemoryOrigins):
        def origins(self, buckets):  # type: ignore[no-untyped-def]
            return store.origins(buckets)

        def witnessed(self, key: str) -> str | None:
            if away[0]:
                raise origins_module.StateStoreError("the master of the kept stamp is down")
            return store.witnessed(key)

        def keep_witnessed(self, key: str, stamp: str) -> None:
            store.keep_witnessed(key, stamp)

    watch = OriginWatch(KeptAway(), [lambda: Buckets(DEDUP, DEDUP_TAGS, LAYOUT, keeps_s=HOUR)], clock=clock,
                        witnessed_key=KEPT)
    CommittedStamps(watch).read([("t", 0, old)])
    assert watch.check() == [] and watch.stamp is None  # not compared: commits keep the stamps they replace
    store.lose([origin_key(tag) for tag in DEDUP_TAGS[:3]])
    assert [(loss.lost, loss.witnessed) for loss in watch.check()] == [(3, False)]  # still watched
    away[0] = False
    assert watch.check() == [] and watch.stamp is not None  # compared: the loss was this replica's to say
