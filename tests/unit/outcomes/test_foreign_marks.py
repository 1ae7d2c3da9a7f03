"""A partition whose marks key holds what this consumer did not write (WRONGTYPE) is consumed
without those marks, with a warning naming the key and what to do (found in the review of the
Kafka side: the load failed the same way every MARKS_PAUSE_S for ever, and the partition was
never fetched; Redis answered, so no wait could end it). An outage still holds the partition."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from consumer.errors import StateStoreError
from consumer.outcomes.deadletter import DeadLetterQueue
from consumer.outcomes.owned_marks import OwnedMarks
from consumer.outcomes.receipts import PhoneHasher, ReceiptCodec, ReceiptWriter
from consumer.state.dead_letters import RedisDeadLetterMarks, dead_letter_key
from consumer.state.receipt_marks import RedisReceiptMarks
from consumer.state.redis import Keys, translated
from tests.support.fake_kafka import FakeProducer

TP0, TP1 = ("t", 0), ("t", 1)
WRONGTYPE = "WRONGTYPE Operation against a key holding the wrong kind of value"


class _Client:
    """A redis-py client whose keys named in `foreign` hold a string someone else wrote: a
    pipeline touching one fails as redis-py raises it; every other key is an empty sorted set."""

    def __init__(self, foreign: set[str]) -> None:
        self.foreign = foreign
        self.reads = 0

    def zrange(self, key: str, start: int, stop: int, withscores: bool = False) -> list[Any]:
        self.reads += 1
        if key in self.foreign:
            raise redis.ResponseError(WRONGTYPE)
        return []

    def pipeline(self, transaction: bool = False) -> Any:
        client, touched = self, []

        class Pipe:
            def __getattr__(self, name: str) -> Any:
                return lambda key, *a, **k: touched.append((name, key))

            def execute(self) -> list[Any]:
                client.reads += 1
                bad = [(n, name, key) for n, (name, key) in enumerate(touched) if key in client.foreign]
                if bad:
                    n, name, key = bad[0]
                    raise redis.ResponseError(f"Command # {n + 1} ({name.upper()} {key} ...) "
                                              f"of pipeline caused error: {WRONGTYPE}")
                return [0 if name == "zcard" else [] for name, _ in touched]

        return Pipe()


def _dlq(client: _Client, errors: list[str]) -> DeadLetterQueue:
    marks = RedisDeadLetterMarks(client, Keys("p"), horizon_s=60, group="g", dlq_topic="dlq",
                                 previous_release=lambda: False)
    return DeadLetterQueue(FakeProducer(), "dlq", marks=marks, on_marks_error=lambda: errors.append("marks"))


def test_a_partition_whose_dead_letter_marks_key_is_foreign_is_fetched_without_them(
        caplog: pytest.LogCaptureFixture) -> None:
    key = dead_letter_key("p", "g:dlq", *TP0)
    client, errors = _Client({key}), []  # type: ignore[var-annotated]
    dlq = _dlq(client, errors)
    with caplog.at_level("WARNING", logger="consumer.outcomes.deadletter"):
        dlq.assigned([TP0, TP1])
    assert dlq.unloaded() == set()  # both fetched: before, t[0] stayed unloaded for good
    assert dlq._marks_paused_until == 0  # t[1]'s marks, and the others' writes, are not paused by it
    assert errors == ["marks"]  # redis_errors_total{operation="marks"}
    [line] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert key in line and "t[0]" in line and "wrong type" in line  # which key, and what is wrong with it
    assert "delete that key" in line and "consumed without them" in line  # what to do, and what it costs
    reads = client.reads
    dlq.poll()
    assert client.reads == reads  # not asked again every turn


def test_an_outage_still_holds_a_newly_assigned_partition_until_its_marks_load() -> None:
    class Away(_Client):
        def pipeline(self, transaction: bool = False) -> Any:
            raise redis.ConnectionError("Connection refused")

    errors: list[str] = []
    dlq = _dlq(Away(set()), errors)
    dlq.assigned([TP0])
    assert dlq.unloaded() == {TP0} and errors == ["marks"]


def test_a_partition_whose_receipt_marks_key_is_foreign_goes_on_without_them_and_pauses_no_other() -> None:
    keys = Keys("p")
    client, errors = _Client({keys.receipts("g", *TP0)}), []  # type: ignore[var-annotated]
    writer = ReceiptWriter(FakeProducer(), "receipts", group="g", hasher=PhoneHasher("s" * 20), codec=ReceiptCodec(),
                           marks=RedisReceiptMarks(client, keys, horizon_s=60),
                           on_marks_error=lambda: errors.append("marks"))
    writer.assigned([TP0, TP1])
    assert writer._receipted.unloaded == set() and not writer._marks_paused()
    assert errors == ["marks"]
    reads = client.reads
    writer.poll()
    assert client.reads == reads  # before: read again every MARKS_PAUSE_S, failing, pausing every partition's marks


def test_owned_marks_go_on_without_a_partition_the_caller_gives_up_and_raise_the_rest() -> None:
    def load(tp: tuple[str, int]) -> dict[int, str]:
        with translated("reading marks"):
            if tp == TP0:
                raise redis.ResponseError(WRONGTYPE)
            raise redis.ConnectionError("refused")

    given_up: list[tuple[str, int]] = []

    def without(tp: tuple[str, int], exc: Exception) -> bool:
        given_up.append(tp)
        return tp == TP0

    marks: OwnedMarks[str] = OwnedMarks(load, without=without)
    marks.assigned([TP0, TP1])
    with pytest.raises(StateStoreError):
        marks.load_all()
    assert marks.unloaded == {TP1} and given_up == [TP0, TP1] and marks.of(TP0) is None


class _Recording(_Client):
    """`_Client` that keeps the keys each successful pipeline wrote to."""

    def __init__(self, foreign: set[str]) -> None:
        super().__init__(foreign)
        self.written: list[str] = []

    def pipeline(self, transaction: bool = False) -> Any:
        client, touched, inner = self, [], super().pipeline(transaction)

        class Pipe:
            def __getattr__(self, name: str) -> Any:
                def queue(key: str, *a: Any, **k: Any) -> None:
                    touched.append((name, key))
                    getattr(inner, name)(key, *a, **k)
                return queue

            def execute(self) -> list[Any]:
                replies = inner.execute()
                client.written += [key for name, key in touched if name in ("zadd", "zremrangebyscore")]
                return [[None] if name == "zmscore" else reply for (name, _), reply in zip(touched, replies,
                                                                                           strict=True)]

        return Pipe()


def _queue_with_a_foreign_key_at_t0() -> tuple[_Recording, FakeProducer, DeadLetterQueue, list[float]]:
    """A dead-letter queue whose marks keys of t[0] hold what it did not write; `now[0]` its clock."""
    key = dead_letter_key("p", "g:dlq", *TP0)
    client = _Recording({key, key + ":sending"})
    marks = RedisDeadLetterMarks(client, Keys("p"), horizon_s=60, group="g", dlq_topic="dlq",
                                 previous_release=lambda: False)
    producer = FakeProducer()
    now = [1_000.0]
    return client, producer, DeadLetterQueue(producer, "dlq", marks=marks, clock=lambda: now[0]), now


def test_a_foreign_marks_key_of_one_partition_leaves_the_other_partitions_marks_working() -> None:
    """Found with the item above: the partition consumed without its marks still had its
    dead-letters looked up, noted and marked in the one pipeline of every poll turn, whose WRONGTYPE
    paused the marks of every partition of the replica (a record of any of them dead-lettered then
    could be sent by its next owner), again after every pause, for as long as the key stayed."""
    from consumer.ingest.records import InboundRecord
    from consumer.outcomes.deadletter import Failure

    client, producer, dlq, now = _queue_with_a_foreign_key_at_t0()
    dlq.assigned([TP0, TP1])
    done: list[tuple[str, int]] = []
    for tp in (TP0, TP1):
        record = InboundRecord(tp[0], tp[1], 7, b"k", b"v", [], (1, 1_800_000_000_000))
        dlq.send(record, Failure("throttled", "429"), lambda tp=tp: done.append(tp))  # type: ignore[misc]
    dlq.poll()
    producer.poll()
    dlq.poll()
    assert sorted(done) == [TP0, TP1] and len(producer.produced) == 2
    assert dlq._marks_paused_until == 0  # t[1]'s marks go on
    other = dead_letter_key("p", "g:dlq", *TP1)
    assert other + ":sending" in client.written and other in client.written  # noted, then marked
    dlq.committed({TP0: 8, TP1: 8})
    now[0] += 3600  # past MARKS_KEEP_S: the marks below the commits go, t[1]'s only
    written = len(client.written)
    dlq.poll()
    assert dlq._marks_paused_until == 0 and client.written[written:] == [other, other + ":sending"]


def test_a_foreign_receipt_marks_key_of_one_partition_leaves_the_other_partitions_marks_working() -> None:
    from consumer.ingest.records import InboundRecord

    keys = Keys("p")
    client = _Recording({keys.receipts("g", *TP0)})
    producer = FakeProducer()
    writer = ReceiptWriter(producer, "receipts", group="g", hasher=PhoneHasher("s" * 20), codec=ReceiptCodec(),
                           marks=RedisReceiptMarks(client, keys, horizon_s=60))
    writer.assigned([TP0, TP1])
    done: list[tuple[str, int]] = []
    for tp in (TP0, TP1):
        record = InboundRecord(tp[0], tp[1], 7, b"k", b"v", [], (1, 1_800_000_000_000))
        writer.record(record, "expired", lambda tp=tp: done.append(tp))  # type: ignore[misc]
    producer.poll()
    writer.poll()
    assert sorted(done) == [TP0, TP1] and not writer._marks_paused()
    assert client.written == [keys.receipts("g", *TP1)]  # t[1]'s receipt marked; before: the call failed whole


def test_a_revoked_partition_whose_marks_key_is_foreign_pauses_no_other_partitions_marks_later() -> None:
    """Found by review: a revoke commits the partition's last position, then forgets it, and
    forgetting it also took it out of the partitions consumed without marks. MARKS_KEEP_S later,
    the removal below that commit (and below those confirmed in the minute before) touched its
    foreign key again: WRONGTYPE failed the replica's whole marks call, and the marks of every
    other partition paused MARKS_PAUSE_S (their dead-letters produced unnoted, their acknowledged
    marks dropped: a record of any of them read again by its next owner was judged again), after
    every revoke of such a partition."""
    from consumer.ingest.records import InboundRecord
    from consumer.outcomes.deadletter import Failure

    client, producer, dlq, now = _queue_with_a_foreign_key_at_t0()
    dlq.assigned([TP0, TP1])
    dlq.committed({TP0: 8, TP1: 8})  # the revoke's last commit of t[0], and t[1]'s
    dlq.forget({TP0})  # revoked
    now[0] += 3600  # past MARKS_KEEP_S
    dlq.poll()
    assert dlq._marks_paused_until == 0  # before: paused by t[0]'s key
    other = dead_letter_key("p", "g:dlq", *TP1)
    assert client.written == [other, other + ":sending"]
    # t[1]'s dead-letters are still looked up and noted
    record = InboundRecord(TP1[0], TP1[1], 9, b"k", b"v", [], (1, 1_800_000_000_000))
    dlq.send(record, Failure("throttled", "429"), lambda: None)
    written = len(client.written)
    dlq.poll()
    assert client.written[written:] and dlq._marks_paused_until == 0 and len(producer.produced) == 1


def test_a_revoked_partition_whose_receipt_marks_key_is_foreign_pauses_no_other_partitions_marks_later() -> None:
    keys = Keys("p")
    client = _Recording({keys.receipts("g", *TP0)})
    now = [1_000.0]
    writer = ReceiptWriter(FakeProducer(), "receipts", group="g", hasher=PhoneHasher("s" * 20), codec=ReceiptCodec(),
                           marks=RedisReceiptMarks(client, keys, horizon_s=60))
    writer._commits.clock = lambda: now[0]
    writer.assigned([TP0, TP1])
    writer.committed({TP0: 8, TP1: 8})
    writer.forget({TP0})
    now[0] += 3600
    writer.poll()
    assert not writer._marks_paused()  # before: paused by t[0]'s key
    assert client.written == [keys.receipts("g", *TP1)]


def test_a_partition_assigned_again_is_loaded_again_and_its_mended_key_used() -> None:
    """The partitions kept out of the marks' calls stay out after their revoke (above), until a
    load of their marks succeeds: assigned again with the key mended, they have their marks."""
    key = dead_letter_key("p", "g:dlq", *TP0)
    client = _Recording({key})
    marks = RedisDeadLetterMarks(client, Keys("p"), horizon_s=60, group="g", dlq_topic="dlq",
                                 previous_release=lambda: False)
    dlq = DeadLetterQueue(FakeProducer(), "dlq", marks=marks)
    dlq.assigned([TP0])
    assert TP0 in dlq._before.without
    dlq.forget({TP0})
    assert TP0 in dlq._before.without  # still out of the marks' calls
    client.foreign.clear()  # an SRE deleted the key
    dlq.assigned([TP0])
    assert TP0 not in dlq._before.without and dlq.unloaded() == set()


def _dead_letter(dlq: DeadLetterQueue, tp: tuple[str, int], offset: int, done: list[tuple[str, int]]) -> None:
    from consumer.ingest.records import InboundRecord
    from consumer.outcomes.deadletter import Failure

    record = InboundRecord(tp[0], tp[1], offset, b"k", f"v{offset}".encode(), [], (1, 1_800_000_000_000))
    dlq.send(record, Failure("throttled", "429"), lambda: done.append(tp))


def test_a_dead_letter_marks_key_turned_foreign_after_its_load_stops_its_partitions_marks_only(
        caplog: pytest.LogCaptureFixture) -> None:
    """Found in the review of the marks: a key that turned foreign after its partition's marks
    loaded (someone wrote it, another program sharing the prefix) failed the one pipelined lookup,
    note and mark of every poll turn with WRONGTYPE: the marks of every partition paused
    MARKS_PAUSE_S, then failed again, for as long as the key stayed. While paused, a record
    dead-lettered on any partition was produced without its note and never marked: its next
    owner judged it again (sent, what failed it being over). Now the partition whose key fails is
    found and left out of the marks' calls, as at its load; the others' go on, every turn."""
    from consumer.outcomes.deadletter import MARKS_PAUSE_S

    key = dead_letter_key("p", "g:dlq", *TP0)
    other = dead_letter_key("p", "g:dlq", *TP1)
    client = _Recording(set())
    marks = RedisDeadLetterMarks(client, Keys("p"), horizon_s=60, group="g", dlq_topic="dlq",
                                 previous_release=lambda: False)
    producer, now, errors = FakeProducer(), [1_000.0], []  # type: ignore[var-annotated]
    dlq = DeadLetterQueue(producer, "dlq", marks=marks, clock=lambda: now[0],
                          on_marks_error=lambda: errors.append("marks"))
    dlq.assigned([TP0, TP1])
    assert dlq.unloaded() == set() and not dlq._before.without  # both loaded: the key was ours then
    client.foreign |= {key, key + ":sending"}  # then someone else wrote it
    done: list[tuple[str, int]] = []
    with caplog.at_level("WARNING", logger="consumer.outcomes.deadletter"):
        for turn in range(4):
            for tp in (TP0, TP1):
                _dead_letter(dlq, tp, 10 + turn, done)
            written = len(client.written)
            dlq.poll()  # looked up and noted, then produced
            producer.poll()  # acknowledged
            dlq.poll()  # marked
            assert client.written[written:] == [other + ":sending", other], turn  # t[1]'s, every turn
            assert dlq._marks_paused_until == 0, turn  # before: every partition's marks paused
            now[0] += MARKS_PAUSE_S  # a pause, had there been one, would be over
    assert len(done) == 8 and len(producer.produced) == 8  # every record ended once
    assert errors == ["marks"]  # counted once, for t[0]
    [line] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert key in line and "t[0]" in line and "delete that key" in line and "without them" in line
    assert TP0 in dlq._before.without and TP1 not in dlq._before.without


def test_a_dead_letter_marks_key_turned_foreign_after_its_load_fails_no_commit_points_of_the_others() -> None:
    """The removal below a confirmed commit, a minute later, goes on for the others too."""
    key = dead_letter_key("p", "g:dlq", *TP0)
    other = dead_letter_key("p", "g:dlq", *TP1)
    client = _Recording(set())
    marks = RedisDeadLetterMarks(client, Keys("p"), horizon_s=60, group="g", dlq_topic="dlq",
                                 previous_release=lambda: False)
    now = [1_000.0]
    dlq = DeadLetterQueue(FakeProducer(), "dlq", marks=marks, clock=lambda: now[0])
    dlq.assigned([TP0, TP1])
    client.foreign.add(key)
    dlq.committed({TP0: 8, TP1: 8})
    now[0] += 3600  # past MARKS_KEEP_S
    dlq.poll()
    assert dlq._marks_paused_until == 0 and TP0 in dlq._before.without
    assert client.written == [other, other + ":sending"]


def test_a_0_2_0_dead_letter_mark_key_holding_another_type_stops_its_partitions_lookups_only() -> None:
    """During an upgrade the lookup also reads 0.2.0's per-record keys, `{p}:dl:<topic>:<partition>:<offset>`,
    in the same pipeline: one of them holding another type failed the whole lookup, as above."""
    legacy = Keys("p").dead_letter(*TP0, 10)
    other = dead_letter_key("p", "g:dlq", *TP1)
    client = _Recording(set())
    marks = RedisDeadLetterMarks(client, Keys("p"), horizon_s=60, group="g", dlq_topic="dlq",
                                 previous_release=lambda: True)
    producer, now = FakeProducer(), [1_000.0]
    dlq = DeadLetterQueue(producer, "dlq", marks=marks, clock=lambda: now[0])
    dlq.assigned([TP0, TP1])
    client.foreign.add(legacy)
    done: list[tuple[str, int]] = []
    for tp in (TP0, TP1):
        _dead_letter(dlq, tp, 10, done)
    dlq.poll()
    producer.poll()
    dlq.poll()
    assert dlq._marks_paused_until == 0 and TP0 in dlq._before.without
    assert client.written == [other + ":sending", other] and len(producer.produced) == 2


def test_a_receipt_marks_key_turned_foreign_after_its_load_stops_its_partitions_marks_only() -> None:
    from consumer.ingest.records import InboundRecord

    keys = Keys("p")
    client = _Recording(set())
    producer, errors = FakeProducer(), []  # type: ignore[var-annotated]
    writer = ReceiptWriter(producer, "receipts", group="g", hasher=PhoneHasher("s" * 20), codec=ReceiptCodec(),
                           marks=RedisReceiptMarks(client, keys, horizon_s=60),
                           on_marks_error=lambda: errors.append("marks"))
    writer.assigned([TP0, TP1])
    client.foreign.add(keys.receipts("g", *TP0))
    done: list[tuple[str, int]] = []
    for turn in range(3):
        for tp in (TP0, TP1):
            record = InboundRecord(tp[0], tp[1], 10 + turn, b"k", b"v", [], (1, 1_800_000_000_000))
            writer.record(record, "expired", lambda tp=tp: done.append(tp))  # type: ignore[misc]
        written = len(client.written)
        producer.poll()
        writer.poll()
        assert client.written[written:] == [keys.receipts("g", *TP1)], turn  # t[1]'s receipts marked, every turn
        assert not writer._marks_paused(), turn
    assert len(done) == 6 and errors == ["marks"] and TP0 in writer._receipted.without


def test_isolating_raises_an_outage_met_in_a_partitions_own_call_and_isolates_only_foreign_keys() -> None:
    """`OwnedMarks.isolating`: after a failure no wait ends, each partition alone. A partition
    whose own call meets an outage is not given up: the outage is raised (the caller pauses, its
    dead-letters wait for Redis), as it would have been for the whole call."""
    calls: list[list[tuple[str, int]]] = []

    def call(part: list[tuple[str, int]]) -> list[str]:
        calls.append(part)
        with translated("writing marks"):
            if TP0 in part:
                raise redis.ResponseError(WRONGTYPE)
            if len(calls) > 2:
                raise redis.ConnectionError("refused")
        return ["ok"] * len(part)

    given_up: list[tuple[str, int]] = []
    marks: OwnedMarks[str] = OwnedMarks(lambda tp: {}, without=lambda tp, exc: (given_up.append(tp), True)[1]
                                        if not isinstance(exc.__cause__, redis.ConnectionError) else False)
    assert marks.isolating(call, [TP1, TP0, TP1], lambda tp: tp) == ["ok", None, "ok"]
    assert calls == [[TP1, TP0, TP1], [TP1, TP1], [TP0]] and given_up == [TP0] and marks.without == {TP0}
    calls.clear()
    with pytest.raises(StateStoreError):  # t[0] fails whole, then t[2] alone meets the outage
        marks.isolating(call, [TP0, ("t", 2)], lambda tp: tp)
    assert marks.without == {TP0}
