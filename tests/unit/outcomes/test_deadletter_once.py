"""Dead-lettering once per origin (issue 11, finding 9): a record read again after its dead-letter
was acknowledged (a SIGKILL or rebalance before the commit) ends without a second copy; while
Redis is unreachable, dead-letters wait for their note."""

from __future__ import annotations

import functools
import math
import time
from typing import Any

from consumer.errors import StateStoreError
from consumer.ingest.records import InboundRecord
from consumer.outcomes.confirmed_commits import MARKS_KEEP_S
from consumer.outcomes.deadletter import MARKS_PAUSE_S, REASONS, DeadLetterQueue, Failure
from consumer.state.dead_letters import REASON_CODES, REASON_SPAN, Origin, mark_reason, mark_score
from consumer.state.memory import MemoryDeadLetterMarks
from tests.support.fake_kafka import FakeProducer

FAILURE = Failure("invalid_event", "no phone")


def record(offset: int, value: bytes = b"v") -> InboundRecord:
    return InboundRecord("t", 0, offset, b"k", value, [], (1, 1_800_000_000_000))


def run(dlq: DeadLetterQueue, records: list[InboundRecord]) -> list[int]:
    done: list[int] = []
    for r in records:
        dlq.send(r, FAILURE, functools.partial(done.append, r.offset()))
    dlq.poll()  # looks the marks up, produces
    dlq.poll()  # acknowledgements, marks written
    return done


def test_a_record_read_again_after_its_dead_letter_was_acknowledged_is_not_dead_lettered_twice() -> None:
    marks = MemoryDeadLetterMarks(horizon_s=3600)
    before, producer = FakeProducer(), FakeProducer()
    assert run(DeadLetterQueue(before, "dlq", marks=marks), [record(1), record(2)]) == [1, 2]
    # The replica died before committing; the next owner reads 1, 2 and 3 again.
    counted: list[Failure] = []  # dead_letters_total: the copies Kafka acknowledged, not the records read again
    after = DeadLetterQueue(producer, "dlq", marks=marks, on_acknowledged=counted.append)
    assert sorted(run(after, [record(1), record(2), record(3)])) == [1, 2, 3]  # every record ends
    assert [p["headers"]["dlq.original.offset"] for p in producer.produced] == [b"3"]
    assert after.already_dead_lettered == 2 and after.in_flight == 0
    assert counted == [FAILURE]


def test_a_new_record_at_an_old_origin_is_dead_lettered() -> None:
    marks = MemoryDeadLetterMarks(horizon_s=3600)
    run(DeadLetterQueue(FakeProducer(), "dlq", marks=marks), [record(1)])
    producer = FakeProducer()
    run(DeadLetterQueue(producer, "dlq", marks=marks), [record(1, value=b"a topic created again")])
    assert len(producer.produced) == 1


class DownMarks:
    """Dead-letter marks in a Redis that does not answer, until `up` (then in memory)."""

    def __init__(self) -> None:
        self.calls = 0
        self.up: MemoryDeadLetterMarks | None = None

    def _call(self, what: str) -> MemoryDeadLetterMarks:
        self.calls += 1
        if self.up is None:
            raise StateStoreError(f"Redis unreachable for {what} dead-letter marks")
        return self.up

    def seen(self, origins: Any) -> list[bool]:
        return self._call("reading").seen(origins)

    def mark(self, origins: list[Origin], reasons: Any = None) -> None:
        self._call("writing").mark(origins, reasons)

    def sending(self, origins: list[Origin], reasons: Any) -> None:
        self._call("noting").sending(origins, reasons)

    def forget_below(self, points: Any) -> None:
        self._call("removing").forget_below(points)


def test_without_redis_dead_letters_wait_uncommitted_and_redis_is_not_asked_every_turn() -> None:
    """Before: while Redis was unreachable dead-letters were produced without their note; a record
    read again by a next owner (a SIGKILL before the commit) was judged again, and sent once what
    failed it was over: a dead-letter and an SMS for one record. Now they wait, their records
    unended (so uncommitted), and leave with their note once Redis answers."""
    marks, producer = DownMarks(), FakeProducer()
    now = [1_000.0]
    dlq = DeadLetterQueue(producer, "dlq", marks=marks, clock=lambda: now[0])
    assert run(dlq, [record(1)]) == []
    assert run(dlq, [record(2)]) == []
    assert producer.produced == [] and marks.calls == 1  # paused after the first failure
    assert dlq.in_flight == 2  # counted in the pipeline's load: fetching stops before memory runs out
    marks.up = MemoryDeadLetterMarks(horizon_s=3600)
    now[0] += MARKS_PAUSE_S
    done: list[int] = []
    dlq.send(record(3), FAILURE, functools.partial(done.append, 3))
    dlq.poll()
    dlq.poll()
    assert [p["headers"]["dlq.original.offset"] for p in producer.produced] == [b"1", b"2", b"3"]
    assert done == [3] and dlq.in_flight == 0
    # Noted before they left: a next owner reading them again ends them, sends nothing.
    assert sorted(marks.up.load(("t", 0))) == [1, 2, 3]


def test_dead_letters_waiting_for_redis_whose_note_fails_wait_too() -> None:
    """The lookup answered, the note did not (Redis went away in between): produced, a dead-letter
    without its note could still be sent by the next owner."""
    marks, producer = DownMarks(), FakeProducer()
    marks.up = MemoryDeadLetterMarks(horizon_s=3600)
    down = marks.up

    def sending(origins: Any, reasons: Any) -> None:
        raise StateStoreError("Redis unreachable for noting dead-letter marks")

    marks.sending = sending  # type: ignore[method-assign]
    dlq = DeadLetterQueue(producer, "dlq", marks=marks)
    assert run(dlq, [record(1)]) == []
    assert producer.produced == [] and dlq.in_flight == 1
    assert down.load(("t", 0)) == {}


def test_a_stored_value_no_one_expected_does_not_stop_dead_lettering() -> None:
    """Not an outage: waiting would stop the partition for good. Dead-lettering goes on without
    the marks (at worst a second copy of a record read again), as before."""

    class Corrupt(DownMarks):
        def seen(self, origins: Any) -> list[bool]:
            self.calls += 1
            raise ValueError("a mark's score that is not a number")

    marks, producer = Corrupt(), FakeProducer()
    dlq = DeadLetterQueue(producer, "dlq", marks=marks)
    assert run(dlq, [record(1)]) == [1]
    assert run(dlq, [record(2)]) == [2]
    assert len(producer.produced) == 2


def test_dead_letters_waiting_for_redis_of_a_revoked_partition_are_dropped() -> None:
    """Their records were not committed: the next owner reads them again and dead-letters them with
    its own note. Ours, produced once Redis answers, would be a second copy."""
    marks, producer = DownMarks(), FakeProducer()
    now = [1_000.0]
    dlq = DeadLetterQueue(producer, "dlq", marks=marks, clock=lambda: now[0])
    assert run(dlq, [record(1)]) == []
    dlq.forget({("t", 0)})
    marks.up = MemoryDeadLetterMarks(horizon_s=3600)
    now[0] += MARKS_PAUSE_S
    dlq.poll()
    assert producer.produced == [] and dlq.in_flight == 0


def test_marks_below_a_confirmed_commit_are_removed_and_those_past_it_still_count() -> None:
    """The marks' memory is bounded by the records past the commit point, not by a week of
    dead-letters: a record below a confirmed commit is never read again by the group."""
    marks, now = MemoryDeadLetterMarks(horizon_s=3600), [1_000.0]
    dlq = DeadLetterQueue(FakeProducer(), "dlq", marks=marks, clock=lambda: now[0])
    run(dlq, [record(n) for n in range(10)])
    assert len(marks) == 10
    dlq.committed({("t", 0): 8})
    now[0] += MARKS_KEEP_S  # removed once the commit was confirmed that long ago (the test below)
    dlq.poll()
    assert len(marks) == 2
    producer = FakeProducer()
    assert run(DeadLetterQueue(producer, "dlq", marks=marks), [record(8), record(9)]) == [8, 9]
    assert producer.produced == []  # read again past the commit: still dead-lettered once


def test_another_group_reading_the_topic_dead_letters_its_own_copy() -> None:
    marks = MemoryDeadLetterMarks(horizon_s=3600)
    run(DeadLetterQueue(FakeProducer(), "dlq", marks=marks.scoped("a", "dlq"), group="a"), [record(1)])
    producer = FakeProducer()
    run(DeadLetterQueue(producer, "dlq", marks=marks.scoped("b", "dlq"), group="b"), [record(1)])
    assert len(producer.produced) == 1


def test_a_mark_outlives_its_confirmed_commit_which_a_coordinator_failover_may_lose() -> None:
    """A coordinator that fails over can lose a commit it confirmed (the pipeline commits every
    position again each 15 s for that: RECOMMIT_INTERVAL_S). If the partition moves meanwhile, its
    next owner reads the records again from the older commit: their marks must still be there, or
    each is dead-lettered a second time. A mark goes only once the commit above it was confirmed
    MARKS_KEEP_S ago (a commit confirmed that long before a loss survives it)."""
    marks = MemoryDeadLetterMarks(horizon_s=3600)
    now = [1_000.0]
    dlq = DeadLetterQueue(FakeProducer(), "dlq", marks=marks, clock=lambda: now[0])
    run(dlq, [record(n) for n in range(10)])
    dlq.committed({("t", 0): 10})  # confirmed; the coordinator fails over and loses it
    dlq.poll()
    producer = FakeProducer()  # the partition moved: its next owner reads from the commit before
    assert run(DeadLetterQueue(producer, "dlq", marks=marks), [record(n) for n in range(10)]) == list(range(10))
    assert producer.produced == []  # every record dead-lettered once
    now[0] += MARKS_KEEP_S - 1
    dlq.poll()
    assert len(marks) == 10
    now[0] += 1  # confirmed MARKS_KEEP_S ago: the marks below it go
    dlq.poll()
    assert len(marks) == 0


def test_failed_dead_letters_are_logged_once_a_turn_not_once_each(caplog: Any) -> None:
    """A dead-letter topic refusing everything (down, not authorised) logged one ERROR line per
    record and retry: 10,000 lines for a failed round of 10,000 dead letters, and as many again
    after each backoff. One line a poll turn, with the count, the reason and where the first was
    from; the line keeps "dead-letter to ... failed", which the stuck-record alert tells SREs to
    look for (helm's alert rules)."""
    from tests.unit.outcomes.test_receipts import HoldingProducer

    producer = HoldingProducer()
    producer.failing.add("dlq")
    dlq = DeadLetterQueue(producer, "dlq")  # type: ignore[arg-type]
    for offset in range(500):
        dlq.send(record(offset), FAILURE, lambda: None)
    with caplog.at_level("ERROR", logger="consumer.outcomes.deadletter"):
        dlq.poll()
        dlq.poll()
    lines = [r for r in caplog.records if r.name == "consumer.outcomes.deadletter"]
    assert len(lines) == 1 and dlq.in_flight == 500
    text = lines[0].getMessage()
    assert "dead-letter to dlq failed for 500 records" in text and "timed out" in text.lower()
    assert lines[0].count == 500 and lines[0].offset == 0  # type: ignore[attr-defined]


def test_every_dead_letter_reason_has_a_code_of_its_own_in_the_marks() -> None:
    """A mark's score holds its reason's code (consumer/state/dead_letters.py): a reason without one
    would be read back as a mark of the previous version, and its record judged again."""
    assert set(REASON_CODES) == set(REASONS)
    assert len(set(REASON_CODES.values())) == len(REASON_CODES) and 0 not in REASON_CODES.values()
    assert max(REASON_CODES.values()) < REASON_SPAN
    for reason in REASONS:
        assert mark_reason(mark_score(2**47 + 3, reason)) == reason
    assert mark_reason(float(2**47 + 3)) is None


THROTTLED = Failure("throttled", "Too Many Requests", http_status=429)


def test_a_dead_letter_acknowledged_after_its_partition_came_back_ends_the_record_read_again() -> None:
    """Found by review: a partition lost (a session timeout) or revoked past REVOKE_GRACE_MS and
    assigned back to the same replica loads its marks from Redis; a dead-letter at the broker then,
    acknowledged after that load, was not in the loaded marks: the record read again was decoded
    and, the 429 storm over, sent (a dead-letter and an SMS). Likewise one acknowledged outside
    the DLQ's poll (the receipts' poll serves the shared producer) and not marked yet."""
    tp = ("t", 0)
    dlq = DeadLetterQueue(FakeProducer(), "dlq", marks=MemoryDeadLetterMarks(horizon_s=3600))
    dlq.assigned([tp])
    dlq.send(record(1), THROTTLED, lambda: None)
    dlq.send(record(2), THROTTLED, lambda: None)
    dlq._produce_unchecked()  # both at the broker
    reports, dlq.producer._reports = dlq.producer._reports, []  # acknowledged below, one by one
    ack_one, ack_two = reports
    ack_two(None, None)  # offset 2 acknowledged by another client's poll: marked in the DLQ's next poll
    dlq.forget({tp})  # lost ...
    dlq.assigned([tp])  # ... and assigned back: the marks loaded from Redis
    ack_one(None, None)  # offset 1's acknowledgement, after that load
    dlq.poll()
    for offset in (1, 2):
        before = dlq.read_again(record(offset), dlq.marked(tp) or {})
        assert before is not None and before[0].reason == "throttled", f"offset {offset} would be sent"
        assert before[1], f"offset {offset}: its acknowledged dead-letter would be written again"


def test_a_partition_whose_stored_mark_has_a_score_that_is_not_finite_is_loaded_and_fetched() -> None:
    """Found by review: `mark_reason(inf)` raised OverflowError out of every load of the marks, so
    the partition was held (not fetched) for good, on every replica given it."""
    tp = ("t", 0)
    marks = MemoryDeadLetterMarks(horizon_s=3600)
    marks.sets.mark(marks.scope, [Origin.of(record(1))], [math.inf])
    marks.sending_sets.mark(marks.scope, [Origin.of(record(2))], [-math.inf])
    marks.mark([Origin.of(record(3))], ["throttled"])
    dlq = DeadLetterQueue(FakeProducer(), "dlq", marks=marks)
    dlq.assigned([tp])
    assert dlq.unloaded() == set() and dlq._marks_paused_until == 0
    assert set(dlq.marked(tp) or {}) == {3}  # the others: judged again, as a previous version's mark


def test_loading_a_partitions_marks_and_notes_is_one_round_trip() -> None:
    """Found by review: the notes (`:sending`) doubled the round trips of each partition's load in
    the assign callback, and of each removal below commits, on the poll thread."""
    from consumer.state.dead_letters import RedisDeadLetterMarks
    from consumer.state.redis import Keys

    class Counting:
        def __init__(self) -> None:
            self.trips = 0

        def pipeline(self, transaction: bool = False) -> Any:
            client, queued = self, []

            class Pipe:
                def __getattr__(self, name: str) -> Any:
                    return lambda *a, **k: queued.append(0 if name == "zcard" else [])  # empty sets

                def execute(self) -> list[Any]:
                    client.trips += 1
                    return queued

            return Pipe()

        def __getattr__(self, name: str) -> Any:  # a command sent on its own
            def call(*a: Any, **k: Any) -> list[Any]:
                self.trips += 1
                return []
            return call

    client = Counting()
    marks = RedisDeadLetterMarks(client, Keys("p"), horizon_s=60, group="g", dlq_topic="dlq",
                                 previous_release=lambda: True)
    assert marks.load(("t", 0)) == {} and client.trips == 1
    marks.forget_below({("t", 0): 5, ("t", 1): 7})
    assert client.trips == 2


def test_an_ambiguous_dead_letter_is_not_noted_before_it_is_produced() -> None:
    """Found by review: a record dead-lettered again from a note got a Failure without the first
    pass's attempt id; for `ambiguous`, the copy that counts for `replay` needs it (its
    `dlq.attempt.id` may override that attempt's unknown mark, no other). An ambiguous record read
    again needs no note: the event id's unknown mark in Redis keeps it from being sent, and its
    second pass dead-letters it again with that attempt's id."""
    marks = MemoryDeadLetterMarks(horizon_s=3600)
    producer = FakeProducer()
    dlq = DeadLetterQueue(producer, "dlq", marks=marks)
    ambiguous = Failure("ambiguous", "read timeout", attempt_id="a-1")
    dlq.send(record(1), ambiguous, lambda: None)
    dlq.send(record(2), THROTTLED, lambda: None)
    dlq._produce_unchecked()  # produced, not acknowledged: the replica dies here
    assert len(producer.produced) == 2
    assert {offset: mark.reason for offset, mark in marks.load(("t", 0)).items()} == {2: "throttled"}


class _ForeignKeyClient:
    """A redis-py client whose dead-letter marks key holds a string someone else wrote: every
    pipeline fails as redis-py raises it, the reply annotated with the command's number."""

    def pipeline(self, transaction: bool = False) -> Any:
        import redis

        class Pipe:
            def __getattr__(self, name: str) -> Any:
                return lambda *a, **k: None

            def execute(self) -> list[Any]:
                raise redis.ResponseError("Command # 1 (ZMSCORE {p:dl:g:dlq:t:0} 1:1:abc) of pipeline caused error: "
                                          "WRONGTYPE Operation against a key holding the wrong kind of value")

        return Pipe()


def test_a_marks_key_of_the_wrong_type_does_not_hold_dead_letters_for_good() -> None:
    """Found by review: every Redis answer becomes a StateStoreError, so a marks key holding what
    this consumer did not write (WRONGTYPE: a stored value no one expected, the case the README
    says goes on without marks) was taken for an outage: its dead-letters waited, asked again every
    MARKS_PAUSE_S, for ever, and the partition behind them never committed again."""
    from consumer.state.dead_letters import RedisDeadLetterMarks
    from consumer.state.redis import Keys

    marks = RedisDeadLetterMarks(_ForeignKeyClient(), Keys("p"), horizon_s=60, group="g", dlq_topic="dlq",
                                 previous_release=lambda: False)
    producer = FakeProducer()
    now = [1_000.0]
    dlq = DeadLetterQueue(producer, "dlq", marks=marks, clock=lambda: now[0])
    done = run(dlq, [record(1)])
    for _ in range(3):
        now[0] += MARKS_PAUSE_S
        done += run(dlq, [])
    assert done == [1] and len(producer.produced) == 1 and dlq.in_flight == 0


def test_a_flush_does_not_wait_for_dead_letters_waiting_for_redis() -> None:
    """They cannot leave before the marks' pause ends: a shutdown or revoke waiting for them would
    only spend its grace. Uncommitted, the next owner reads their records again."""
    marks, producer = DownMarks(), FakeProducer()
    dlq = DeadLetterQueue(producer, "dlq", marks=marks)
    assert run(dlq, [record(1)]) == []
    started = time.monotonic()
    assert dlq.flush(5.0) and time.monotonic() - started < 1.0
    assert dlq.in_flight == 1 and dlq.unsettled == 0 and producer.produced == []
