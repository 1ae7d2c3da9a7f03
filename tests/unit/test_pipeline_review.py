"""Adversarial review of the outcome path (poll loop, dead letters, receipts, revocations): each
test names the way a record could end with no outcome, two, or hold its partition, before the fix."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import KafkaException, TopicPartition

from consumer.config.resources import default_mapping_file
from consumer.config.settings import Settings
from consumer.delivery.attempts import RetryPolicy
from consumer.delivery.backoff import Backoff
from consumer.delivery.batching import Batcher, PendingEvent
from consumer.delivery.destination import Destination
from consumer.delivery.lanes import Lane, Lanes
from consumer.delivery.outcome import Outcome
from consumer.delivery.pisano import Accepted
from consumer.delivery.sender import FailurePolicy, Sender
from consumer.errors import StateStoreError
from consumer.ingest.avro import SchemalessDecoder
from consumer.ingest.mapping import DeclarativeMapper, Mapper, Recipient
from consumer.ingest.samples import default_schema, encode, phone_for, transaction
from consumer.operations.health import Health
from consumer.operations.metrics import Metrics
from consumer.outcomes.confirmed_commits import MARKS_KEEP_S
from consumer.outcomes.deadletter import Failure
from consumer.outcomes.receipts import PhoneHasher, ReceiptCodec, ReceiptWriter
from consumer.pipeline import Pipeline
from consumer.state.circuit import CircuitBreaker
from consumer.state.dead_letters import Origin
from consumer.state.limiter import NoLimiter
from consumer.state.memory import MemoryCircuitStore, MemoryDeadLetterMarks, MemoryDedup, MemoryReceiptMarks
from tests.support.fake_kafka import CAMPAIGN, FakeConsumer, FakeMessage, FakeProducer, IdleSender, pipeline
from tests.support.fakes import FakePisano

SALT = "a-salt-of-sixteen-or-more-characters"

MAPPER = DeclarativeMapper.from_file(default_mapping_file())


def good(offset: int) -> FakeMessage:
    record = transaction(f"e-{offset}", phone_for(offset), CAMPAIGN, n=offset)
    return FakeMessage("t", 0, offset, encode(record), key=f"e-{offset}".encode())


class EventTimeAsDatetime(Mapper):
    """A company's mapper that passes an Avro `timestamp-millis` on as it is: fastavro decodes it
    to a datetime, not epoch milliseconds."""

    def map(self, record: Mapping[str, Any]) -> Recipient:
        recipient = MAPPER.map(record)
        recipient.event_time_ms = datetime.now(UTC)  # type: ignore[assignment]
        return recipient


def test_a_mappers_event_time_that_is_not_epoch_ms_dead_letters_its_record_not_the_poll_loop() -> None:
    """Before: `check_recipient` let any `event_time_ms` through; with MAX_EVENT_AGE the poll loop
    raised TypeError (`now_ms - datetime`) in `Backlog.decode`, outside the record's guard: the
    replica died, restarted, read the same record and died again (a crash loop, the partition stuck);
    with receipts the receipt's encoder raised the same way after the SMS was sent."""
    loop, consumer, producer = pipeline(SchemalessDecoder(default_schema()), EventTimeAsDatetime(),
                                        max_event_age="1h")
    consumer.queue = [good(0), good(1)]
    for _ in range(3):
        loop._step()
    assert [p["headers"]["dlq.reason"] for p in producer.produced] == [b"invalid_event", b"invalid_event"]
    loop._commit()
    assert consumer.committed == {("t", 0): 2}


# ---------------------------------------------------------------- a rebalance while the DLQ is down


def owner(marks: MemoryDeadLetterMarks, **settings: Any) -> tuple[Pipeline, FakeConsumer, FakeProducer]:
    loop, consumer, producer = pipeline(SchemalessDecoder(default_schema()), MAPPER, revoke_grace_ms=0, **settings)
    loop.dlq.marks = marks  # shared by the fleet, as in Redis
    consumer.incremental_unassign = lambda partitions: None  # type: ignore[attr-defined]
    return loop, consumer, producer


def retry_now(*queues: Any) -> None:
    for q in queues:
        q._retry.all_due_now()


def test_a_dead_letter_that_waits_for_the_dlq_when_its_partition_is_revoked_is_not_written_twice() -> None:
    """Before: the old owner kept producing the revoked partition's dead-letter again after a
    backoff, for ever; its offset was not committed (no acknowledgement), so the next owner read
    the record and dead-lettered it too (the marks were empty: neither copy was acknowledged yet).
    Once the DLQ topic was back, both copies landed: two dead-letters for one record, without a
    crash. (And the old owner's `dlq.in_flight` counted the abandoned copy against its buffers.)"""
    marks = MemoryDeadLetterMarks(horizon_s=3600)
    old, old_consumer, old_producer = owner(marks)
    bad = FakeMessage("t", 0, 0, b"not avro")
    old_producer.refuse = True  # the DLQ topic refuses writes
    old_consumer.queue = [bad]
    for _ in range(3):
        old._step()
    assert old.dlq.in_flight == 1 and not old_producer.produced
    old._on_revoke(old_consumer, [TopicPartition("t", 0)])
    assert ("t", 0) not in old_consumer.committed  # no outcome: the next owner reads it again
    new, new_consumer, new_producer = owner(marks)
    new_producer.refuse = True
    new_consumer.queue = [bad]
    for _ in range(3):
        new._step()
    old_producer.refuse = new_producer.refuse = False  # the DLQ topic is back
    for _ in range(3):
        retry_now(old.dlq, new.dlq)
        old._step()
        new._step()
        new._commit()
    assert len(old_producer.produced) + len(new_producer.produced) == 1
    assert new_consumer.committed == {("t", 0): 1}
    assert old.dlq.in_flight == 0


class TopicProducer(FakeProducer):
    """Acknowledges on the next poll, except what goes to a topic in `down` (refused at once)."""

    def __init__(self) -> None:
        super().__init__()
        self.down: set[str] = set()
        self.topics: list[str] = []

    def produce(self, topic: str, key: Any = None, value: Any = None, headers: Any = None,
                on_delivery: Any = None) -> None:
        if topic in self.down:
            raise KafkaException(f"{topic}: topic authorization failed")
        self.topics.append(topic)
        super().produce(topic, key, value, headers, on_delivery)


def receipts_owner(marks: MemoryReceiptMarks) -> tuple[Pipeline, FakeConsumer, TopicProducer]:
    consumer, producer = FakeConsumer(), TopicProducer()
    consumer.incremental_unassign = lambda partitions: None  # type: ignore[attr-defined]
    config = Settings(kafka_topics=["t"], pisano_url="https://pisano.invalid", revoke_grace_ms=0,
                      outcome_topic="receipts", outcome_phone_salt=SALT, dlq_topic="dlq")
    lanes = Lanes({"default": Lane(Batcher(5000, 1.0), IdleSender())}, route=lambda campaign: "default")  # type: ignore[arg-type]
    receipts = ReceiptWriter(producer, "receipts", group=config.kafka_group_id, hasher=PhoneHasher(SALT),
                             codec=ReceiptCodec(), marks=marks)
    loop = Pipeline(config, consumer_factory=lambda on_commit: consumer, producer=producer,
                    decoder=SchemalessDecoder(default_schema()), mapper=MAPPER,
                    delivery_factory=lambda report: lanes, metrics=Metrics(), health=Health(joined=True),
                    receipts=receipts)
    loop.tracker.assign(("t", 0))
    receipts.assigned([("t", 0)])
    return loop, consumer, producer


def test_a_receipt_that_waits_for_its_topic_when_its_partition_is_revoked_is_not_written_twice() -> None:
    """Before: as for dead-letters, the old owner produced the revoked partition's receipt again
    after a backoff, for ever, while the next owner, reading the uncommitted record again, wrote
    its own (the marks it loaded at assignment could not know of a receipt not yet acknowledged):
    two receipts for one record without a crash, in whichever order the two backoffs ended."""
    marks = MemoryReceiptMarks()
    old, old_consumer, old_producer = receipts_owner(marks)
    bad = FakeMessage("t", 0, 0, b"not avro")
    old_producer.down.add("receipts")
    old_consumer.queue = [bad]
    for _ in range(3):
        old._step()
    assert old_producer.topics == ["dlq"] and old.receipts is not None and old.receipts.in_flight == 1
    old._on_revoke(old_consumer, [TopicPartition("t", 0)])
    assert ("t", 0) not in old_consumer.committed  # no receipt: the next owner reads it again
    new, new_consumer, new_producer = receipts_owner(marks)
    new_producer.down.add("receipts")
    new_consumer.queue = [bad]
    for _ in range(3):
        new._step()
    old_producer.down.clear()
    new_producer.down.clear()  # the receipt topic is back
    assert old.receipts is not None and new.receipts is not None
    for _ in range(3):
        retry_now(old.receipts, new.receipts)
        old._step()
        new._step()
        new._commit()
    assert old_producer.topics.count("receipts") + new_producer.topics.count("receipts") == 1
    assert new_consumer.committed == {("t", 0): 1}
    assert old.receipts.in_flight == 0


# ---------------------------------------------------------------- a request that outlives a revocation


class GatedPisano(FakePisano):
    """Holds every request until `gate` opens, as a slow Pisano or a retry's later slot would."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    def send(self, campaign_id: str, body: bytes, leave_by: float | None = None) -> Accepted:
        self.gate.wait(10)
        return super().send(campaign_id, body, leave_by)


def test_an_event_accepted_after_its_partition_was_revoked_still_gets_its_accepted_receipt() -> None:
    """Before: the revocation waits REVOKE_GRACE_MS for requests under way (10 s; a retry waiting
    for its throttle slot takes longer), then hands the partition over; the request accepted
    after that reported `delivered` for an old epoch, which the poll loop dropped. The next owner
    read the record again, found its id delivered and wrote the record's only receipt: `duplicate`,
    though this replica's request had it accepted, after a rebalance, not a crash."""
    pisano = GatedPisano()
    consumer, producer, metrics = FakeConsumer(), TopicProducer(), Metrics()
    consumer.incremental_unassign = lambda partitions: None  # type: ignore[attr-defined]
    config = Settings(kafka_topics=["t"], pisano_url="https://pisano.invalid", batch_max_wait_ms=0,
                      revoke_grace_ms=0, outcome_topic="receipts", outcome_phone_salt=SALT, dlq_topic="dlq")
    dedup = MemoryDedup(lease_ms=60_000, horizon_s=3600)
    circuit = CircuitBreaker(MemoryCircuitStore(), cooldown_ms=1000, max_cooldown_ms=2000, probe_lease_ms=1000)
    destination = Destination("default", pisano, NoLimiter(), circuit)
    policy = FailurePolicy(RetryPolicy(1, 10.0, Backoff(0.001, 0.002)), "dead_letter", 0.25)

    def delivery(report: Callable[[Outcome], None]) -> Lanes:
        batcher = Batcher(config.batch_max_recipients, 0.0)
        sender = Sender(destination=destination, batcher=batcher, dedup=dedup, metrics=metrics, report=report,
                        policy=policy, threads=1, throttle_horizon_s=30.0, claim_lease_ms=dedup.lease_ms)
        return Lanes({"default": Lane(batcher, sender)}, route=lambda campaign: "default")

    receipts = ReceiptWriter(producer, "receipts", group=config.kafka_group_id, hasher=PhoneHasher(SALT),
                             codec=ReceiptCodec(), route=lambda campaign: "default")
    loop = Pipeline(config, consumer_factory=lambda on_commit: consumer, producer=producer,
                    decoder=SchemalessDecoder(default_schema()), mapper=MAPPER, delivery_factory=delivery,
                    metrics=metrics, health=Health(joined=True), receipts=receipts)
    loop.tracker.assign(("t", 0))
    loop.delivery.start()
    consumer.queue = [good(0)]
    try:
        deadline = time.monotonic() + 5
        while loop.delivery.in_flight() == 0 and time.monotonic() < deadline:
            loop._step()
            time.sleep(0.01)
        assert loop.delivery.in_flight() == 1
        loop._on_revoke(consumer, [TopicPartition("t", 0)])  # the request is still under way
        pisano.gate.set()
        deadline = time.monotonic() + 5
        while dedup.state("e-0") != "d" or loop.delivery.in_flight():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        for _ in range(3):
            loop._step()
    finally:
        pisano.gate.set()
        loop.delivery.stop(2)
    written = [ReceiptCodec().decode(p["value"]) for p in producer.produced if p["key"] == b"e-0"]
    assert [(r.outcome, r.origin_offset) for r in written] == [("accepted", 0)]
    assert ("t", 0) not in consumer.committed  # the old owner commits nothing: the partition is not its own

# A partition's position moved back (a truncation, an offset reset) while the first copy's
# dead-letter or receipt waited for its topic: both copies were produced once the topic was back,
# two dead-letters for one record, or the superseded copy's receipt before the new record's
# (found by review). What waits is dropped once its record's outcome no longer counts.


def test_a_record_read_again_after_a_move_back_during_a_dlq_outage_is_dead_lettered_once() -> None:
    loop, consumer, producer = pipeline(SchemalessDecoder(default_schema()), MAPPER)
    loop.dlq.marks = MemoryDeadLetterMarks(horizon_s=3600)
    bad = FakeMessage("t", 0, 0, b"not avro")
    producer.refuse = True  # the DLQ topic refuses writes (a broker in trouble: the same that truncated)
    consumer.queue = [bad, good(1)]
    for _ in range(3):
        loop._step()
    assert loop.dlq.in_flight == 1 and not producer.produced
    consumer.queue = [bad]  # the position moved back to 0: the same record read again (offset reset)
    for _ in range(3):
        loop._step()
    assert loop.tracker.moves_back == 1
    producer.refuse = False  # the DLQ topic is back
    for _ in range(4):
        retry_now(loop.dlq)
        loop._step()
    origins = [p["headers"]["dlq.original.offset"] for p in producer.produced]
    assert origins == [b"0"], f"dead-letters written for offset 0: {len(origins)}"


def test_a_superseded_copys_receipt_is_not_written_after_a_move_back() -> None:
    loop, consumer, producer = receipts_owner(MemoryReceiptMarks())
    producer.down.add("receipts")  # the receipt topic refuses writes
    consumer.queue = [FakeMessage("t", 0, 0, b"not avro")]
    for _ in range(3):
        loop._step()
    assert loop.receipts is not None and loop.receipts.in_flight == 1  # dead-lettered, receipt waiting
    # Truncation: the log at offset 0 now holds another record, a good one, read again from there.
    consumer.queue = [good(0)]
    for _ in range(3):
        loop._step()
    assert loop.tracker.moves_back == 1
    events = loop.delivery.drop(lambda e: True)
    assert [e.offset for e in events] == [0]
    loop.outcomes.put(Outcome("delivered", events, accepted_at_ms=int(time.time() * 1000)))
    loop._step()
    producer.down.clear()  # the receipt topic is back
    for _ in range(4):
        retry_now(loop.receipts)
        loop._step()
    codec = ReceiptCodec()
    written = [codec.decode(p["value"]) for topic, p in zip(producer.topics, producer.produced, strict=True)
               if topic == "receipts"]
    at_zero = [r.outcome for r in written if r.origin_offset == 0]
    assert at_zero == ["accepted"], f"receipts of origin t[0]@0, in topic order: {at_zero}"


# ---------------------------------------------------------------- dead-letter marks end with the commit


def test_a_confirmed_commit_removes_the_dead_letter_marks_below_it() -> None:
    """Before: a dead-letter mark lived DEDUP_HORIZON_S whatever the commits, every one in the
    prefix's slot: ten million bad records a week were ~2.3 GB on one Redis master. A commit the
    broker confirmed now removes the marks below it (as the receipt marks')."""
    marks = MemoryDeadLetterMarks(horizon_s=3600)
    loop, consumer, _ = owner(marks)
    consumer.queue = [FakeMessage("t", 0, n, b"not avro") for n in range(3)]
    for _ in range(4):
        loop._step()
    assert len(marks) == 3 and loop.dlq.in_flight == 0
    loop._commit(sync=True, all_known=True)
    assert consumer.committed.get(("t", 0)) == 3
    loop._step()
    assert len(marks) == 3  # kept while the coordinator may still lose the commit (MARKS_KEEP_S)
    loop.dlq._commits.clock = lambda: time.monotonic() + MARKS_KEEP_S
    loop._step()
    assert len(marks) == 0


# ---------------------------------------------------------------- a record read again ends as it ended


RECORDS = [good(0), good(1), good(2)]  # one set of messages: a record read again is the same record


def throttled_past_offset_0(loop: Pipeline, consumer: FakeConsumer, records: list[FakeMessage]) -> None:
    """`loop` reads `records`; Pisano throttles all but offset 0 to the end (dead-lettered),
    offset 0 still waits for the limiter."""
    consumer.queue = list(records)
    for _ in range(2):
        loop._step()
    events = [e for e in loop.delivery.drop(lambda e: True) if e.offset > 0]
    throttled = Failure("throttled", "Too Many Requests", http_status=429, campaign_id=CAMPAIGN, attempts=6)
    loop.outcomes.put(Outcome("dead_letter", events, failure=throttled))
    for _ in range(4):
        loop._step()


def throttled_then_killed(old: Pipeline, old_consumer: FakeConsumer) -> None:
    """`old` dead-letters offsets 1 and 2 of RECORDS `throttled`; nothing is committed (offset 0
    waits) when the replica is SIGKILLed."""
    throttled_past_offset_0(old, old_consumer, RECORDS)
    old._commit(sync=True, all_known=True)
    assert old.dlq.in_flight == 0 and old_consumer.committed == {}


def read_again(new: Pipeline, new_consumer: FakeConsumer) -> list[PendingEvent]:
    """The next owner is assigned the partition and reads RECORDS again (the storm is over: Pisano
    would accept them now); the events it hands to the batches."""
    new_consumer.incremental_assign = lambda partitions: None  # type: ignore[attr-defined]
    new._on_assign(new_consumer, [TopicPartition("t", 0)])
    new_consumer.queue = list(RECORDS)
    for _ in range(3):
        new._step()
    return new.delivery.drop(lambda e: True)


def test_a_record_dead_lettered_before_a_crash_is_not_sent_by_the_next_owner() -> None:
    """Found by the scaled chaos run: a replica dead-lettered 77 events `throttled` in a 429 storm
    and was SIGKILLed 5 s later, their offsets not committed (older records of the partitions still
    waited for the limiter's fence). The next owner read them again after the storm and Pisano
    accepted them: each record had two outcomes, a dead-letter (its receipt `dead_lettered`) and an
    SMS. The marks stopped a second copy of the dead-letter only; the record was still sent."""
    marks = MemoryDeadLetterMarks(horizon_s=3600)
    old, old_consumer, _ = owner(marks)
    throttled_then_killed(old, old_consumer)
    assert len(marks) == 2
    new, new_consumer, new_producer = owner(marks)
    waiting = read_again(new, new_consumer)
    assert [e.offset for e in waiting] == [0], "records handed to the batches"
    assert not new_producer.produced  # not dead-lettered twice either
    new.outcomes.put(Outcome("delivered", waiting, accepted_at_ms=int(time.time() * 1000)))
    new._step()
    new._commit(sync=True, all_known=True)
    assert new_consumer.committed == {("t", 0): 3}  # 1 and 2 ended at once, as dead-letters


def receipts_of(producer: TopicProducer) -> list[tuple[int, str, str | None]]:
    codec = ReceiptCodec()
    return [(r.origin_offset, r.outcome, r.reason) for r in
            (codec.decode(p["value"]) for topic, p in zip(producer.topics, producer.produced, strict=True)
             if topic == "receipts")]


def test_a_record_dead_lettered_before_a_crash_keeps_its_receipt_and_its_reason() -> None:
    """With receipts: the next owner writes no second receipt for a record whose receipt is marked;
    for one whose receipt was not acknowledged before the SIGKILL, the receipt it writes says what
    the first pass did, `dead_lettered` for the same reason (the mark holds it), not `accepted`."""
    dead_letters = MemoryDeadLetterMarks(horizon_s=3600)
    old_receipts = MemoryReceiptMarks()
    old, old_consumer, old_producer = receipts_owner(old_receipts)
    old.dlq.marks = dead_letters
    throttled_then_killed(old, old_consumer)
    assert receipts_of(old_producer) == [(1, "dead_lettered", "throttled"), (2, "dead_lettered", "throttled")]
    # SIGKILLed after the receipt of offset 1 was marked, before offset 2's was.
    assert old.receipts is not None
    group = old.receipts.group
    marked = MemoryReceiptMarks()
    marked.mark(group, [Origin("t", 0, 1, old_receipts.receipted(group, ("t", 0))[1])])
    new, new_consumer, new_producer = receipts_owner(marked)
    new.dlq.marks = dead_letters
    assert [e.offset for e in read_again(new, new_consumer)] == [0]
    assert receipts_of(new_producer) == [(2, "dead_lettered", "throttled")]
    assert new_producer.topics == ["receipts"]  # no second dead-letter


def test_a_record_ended_from_its_mark_names_its_event_in_its_receipt() -> None:
    """Found by the scaled chaos run in CI: a record read again whose dead-letter was noted ends
    before it is decoded, and its receipt (the first, when the killed replica's was never
    acknowledged) had no event id: keyed by its origin, as for a record that cannot be decoded,
    though it can. Decoded for its receipt now (not sent: it ends as it ended)."""
    dead_letters = MemoryDeadLetterMarks(horizon_s=3600)
    old, old_consumer, _ = receipts_owner(MemoryReceiptMarks())
    old.dlq.marks = dead_letters
    throttled_then_killed(old, old_consumer)  # no receipt of it marked: the next owner writes them
    new, new_consumer, new_producer = receipts_owner(MemoryReceiptMarks())
    new.dlq.marks = dead_letters
    assert [e.offset for e in read_again(new, new_consumer)] == [0]
    codec = ReceiptCodec()
    written = [codec.decode(p["value"]) for topic, p in zip(new_producer.topics, new_producer.produced, strict=True)
               if topic == "receipts"]
    expected = [MAPPER.map(SchemalessDecoder(default_schema()).decode(m.value())).event_id for m in RECORDS[1:]]
    assert [(r.origin_offset, r.outcome, r.event_id) for r in written] == [
        (1, "dead_lettered", expected[0]), (2, "dead_lettered", expected[1])]
    assert new_producer.topics == ["receipts", "receipts"]  # not sent, no second dead-letter


def test_a_record_dead_lettered_before_its_position_moved_back_is_not_sent() -> None:
    """Found by review: the marks were loaded at assignment only. A position moved back within one
    assignment (an offset reset) read again records this replica had dead-lettered since: they
    were decoded and, the 429 storm over, sent; one record, two outcomes."""
    marks = MemoryDeadLetterMarks(horizon_s=3600)
    loop, consumer, producer = owner(marks)
    consumer.incremental_assign = lambda partitions: None  # type: ignore[attr-defined]
    loop._on_assign(consumer, [TopicPartition("t", 0)])
    records = [good(n) for n in range(4)]
    throttled_past_offset_0(loop, consumer, records[:3])
    assert len(marks) == 2 and loop.dlq.in_flight == 0
    consumer.queue = records[1:]  # the position moved back to 1 (an offset reset): the same records
    for _ in range(3):
        loop._step()
    assert loop.tracker.moves_back == 1
    assert [e.offset for e in loop.delivery.drop(lambda e: True)] == [3], "records handed to the batches"
    assert len(producer.produced) == 2  # not dead-lettered twice either


class MarksDownOnce(MemoryDeadLetterMarks):
    """Redis fails the first load (a failover at the moment of the rebalance), then answers."""

    def __init__(self) -> None:
        super().__init__(horizon_s=3600)
        self.down = True

    def load(self, tp: tuple[str, int]) -> dict[int, tuple[str, str | None]]:
        if self.down:
            self.down = False
            raise StateStoreError("connection refused")
        return super().load(tp)


def test_a_partition_assigned_while_its_marks_cannot_be_loaded_is_not_read_before_they_are() -> None:
    """Found by review: a Redis blip at the assignment paused the marks for MARKS_PAUSE_S, and the
    partition was fetched at once: the records the previous owner dead-lettered (a 429 storm)
    went to the batches and, Redis back a second later and the storm over, were sent; the marks
    loaded 30 s later changed nothing for them. The partition now waits for its marks."""
    marks = MarksDownOnce()
    records = [good(n) for n in range(3)]
    marks.mark([Origin.of(records[n]) for n in (1, 2)], ["throttled", "throttled"])
    loop, consumer, producer = owner(marks)
    consumer.incremental_assign = lambda partitions: None  # type: ignore[attr-defined]
    loop._on_assign(consumer, [TopicPartition("t", 0)])
    consumer.queue = list(records)
    for _ in range(3):
        loop._step()
    assert loop.delivery.drop(lambda e: True) == [], "records taken before their partition's marks were loaded"
    loop.dlq._marks_paused_until = 0.0  # MARKS_PAUSE_S later
    for _ in range(3):
        loop._step()
    assert [e.offset for e in loop.delivery.drop(lambda e: True)] == [0]
    assert not producer.produced


def test_a_record_whose_dead_letter_was_not_acknowledged_before_a_crash_is_dead_lettered_again_not_sent() -> None:
    """The window the marks left: a replica killed between producing dead-letters and their
    acknowledgement (milliseconds; seconds while a broker restarts) left no mark, and the next
    owner processed the records again: sent once the 429 storm was over, a dead-letter at the
    broker and an SMS for one record. Each dead-letter is now noted before it is produced; the next
    owner dead-letters such a record again (a second copy, maybe), never sends it."""
    marks = MemoryDeadLetterMarks(horizon_s=3600)
    old, old_consumer, old_producer = owner(marks)
    old_producer.poll = lambda timeout=0: 0  # type: ignore[method-assign]  # no acknowledgement comes
    throttled_past_offset_0(old, old_consumer, RECORDS)
    assert len(old_producer.produced) == 2 and len(marks) == 0  # produced, not acknowledged: SIGKILL
    new, new_consumer, new_producer = owner(marks)
    waiting = read_again(new, new_consumer)
    assert [e.offset for e in waiting] == [0], "records handed to the batches"
    new._step()
    assert [(p["headers"]["dlq.original.offset"], p["headers"]["dlq.reason"]) for p in new_producer.produced] \
        == [(b"1", b"throttled"), (b"2", b"throttled")]
    new.outcomes.put(Outcome("delivered", waiting, accepted_at_ms=int(time.time() * 1000)))
    new._step()
    new._commit(sync=True, all_known=True)
    assert new_consumer.committed == {("t", 0): 3}
