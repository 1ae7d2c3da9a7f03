"""Receipts (consumer/outcomes/receipts.py): the schema round trip, the salted phone hash, the
writer that holds a record's commit until its receipt is acknowledged, and the poll loop writing
exactly one receipt per record whatever its outcome."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import random
import re
import time
import typing
from collections import Counter
from collections.abc import Callable
from typing import Any

import fastavro
import pytest
from confluent_kafka import KafkaError

from consumer.config.resources import default_mapping_file
from consumer.config.settings import Settings
from consumer.delivery.attempts import RetryPolicy
from consumer.delivery.backoff import Backoff
from consumer.delivery.batching import Batcher
from consumer.delivery.destination import Destination
from consumer.delivery.lanes import Lane, Lanes
from consumer.delivery.outcome import Outcome, OutcomeKind
from consumer.delivery.pisano import Accepted
from consumer.delivery.sender import FailurePolicy, Sender
from consumer.errors import ConfigError, PisanoApiError, StateStoreError
from consumer.ingest.avro import SchemalessDecoder
from consumer.ingest.mapping import DeclarativeMapper, Recipient
from consumer.ingest.records import InboundRecord
from consumer.ingest.samples import default_schema, encode, phone_for, transaction
from consumer.operations import metrics as metrics_module
from consumer.operations.health import Health
from consumer.operations.metrics import Metrics
from consumer.outcomes.confirmed_commits import MARKS_KEEP_S
from consumer.outcomes.deadletter import Failure
from consumer.outcomes.receipts import (
    MAX_SHARED_KEPT,
    RECEIPT_OUTCOMES,
    SCHEMA_FILE,
    PhoneHasher,
    Receipt,
    ReceiptCodec,
    ReceiptWriter,
    build_receipt,
    receipt_outcome,
)
from consumer.pipeline import Pipeline
from consumer.state.circuit import CircuitBreaker
from consumer.state.limiter import NoLimiter
from consumer.state.memory import MemoryCircuitStore, MemoryDedup, MemoryReceiptMarks
from tests.support.fake_kafka import FakeConsumer, FakeMessage
from tests.support.fakes import FakePisano

SALT = "a-salt-of-sixteen-or-more-characters"
PHONE = "+905321234567"
CAMPAIGN = "ae51458c-9e82-417f-8f1d-e074891ea5c1"
REFUSED = "9a1e0000-0000-4000-8000-000000000001"  # Pisano refuses it: unknown campaign


def message(offset: int = 7, value: bytes = b"v") -> InboundRecord:
    return InboundRecord("transactions", 3, offset, b"k", value, [], (1, 1_700_000_000_000))


def test_the_schema_lists_every_outcome_and_the_metric_the_same() -> None:
    schema = json.loads(SCHEMA_FILE.read_text())
    assert schema["namespace"] == "com.pisano.sms"
    outcome = next(f for f in schema["fields"] if f["name"] == "outcome")
    assert tuple(outcome["type"]["symbols"]) == RECEIPT_OUTCOMES == metrics_module.RECEIPT_OUTCOMES
    assert {f["name"] for f in schema["fields"]} == set(Receipt.__dataclass_fields__)


def test_every_final_outcome_kind_has_a_receipt_outcome() -> None:
    kinds = [k for k in typing.get_args(OutcomeKind) if k != "requeue"]
    assert {receipt_outcome(k) for k in kinds} >= {"accepted", "duplicate", "dead_lettered"}
    for policy in ("cooldown", "suppressed", "expired"):  # contact policies name their outcome as is
        assert receipt_outcome(policy) == policy
    with pytest.raises(ValueError):
        receipt_outcome("requeue")


def test_the_phone_is_a_salted_sha256_the_crm_can_compute() -> None:
    hasher = PhoneHasher(SALT)
    assert hasher(PHONE) == hashlib.sha256((SALT + PHONE).encode()).hexdigest()
    assert hasher(PHONE) != PhoneHasher(SALT + "x")(PHONE)
    assert SALT not in repr(hasher)
    with pytest.raises(ValueError):
        PhoneHasher("short")


@pytest.mark.parametrize("schema_id", [None, 42])
def test_a_receipt_round_trips_through_avro_without_the_phone_in_clear(schema_id: int | None) -> None:
    recipient = Recipient("tx-1", CAMPAIGN, PHONE, {"name": "Ayşe"})
    failure = Failure("pisano_error", f"refused {PHONE}: unknown campaign", code=13002, http_status=404,
                      campaign_id=CAMPAIGN, attempts=2, request_id="ab" * 16)
    receipt = build_receipt(message(), "dead_lettered", group="g", hasher=PhoneHasher(SALT), recipient=recipient,
                            failure=failure, destination="default")
    codec = ReceiptCodec(schema_id)
    value = codec.encode(receipt)
    assert codec.decode(value) == receipt
    assert PHONE.encode() not in value and PHONE[1:].encode() not in value and b"5321234567" not in value
    assert receipt.detail is not None and "5321234567" not in receipt.detail  # the error text is redacted too
    assert (receipt.reason, receipt.pisano_code, receipt.pisano_http_status, receipt.attempts) == \
        ("pisano_error", 13002, 404, 2)
    assert receipt.request_id == "ab" * 16 and receipt.event_time == 1_700_000_000_000
    assert receipt.key == b"tx-1"
    if schema_id is not None:
        assert value[:5] == b"\x00\x00\x00\x00\x2a"  # Confluent wire format: magic byte, schema id 42


def test_the_encoder_writes_what_fastavro_writes() -> None:
    """The codec encodes field by field for speed; byte for byte what fastavro makes of the schema."""
    codec = ReceiptCodec()
    hasher = PhoneHasher(SALT)
    samples = [
        build_receipt(message(offset=2**40), "accepted", group="g", hasher=hasher, destination="default",
                      recipient=Recipient("tx-é-" + "x" * 300, CAMPAIGN, PHONE), request_id="ab" * 16,
                      pisano_request_id="p-1", attempts=3, decided_at_ms=2**45),
        build_receipt(message(offset=0), "dead_lettered", group="", hasher=hasher,
                      failure=Failure("pisano_error", "Ünknown ✓", code=13002, http_status=404, attempts=70)),
        Receipt("t", 0, 0, "g", "expired", consumed_at=0, decided_at=-1, pisano_code=-64, pisano_http_status=63,
                event_time=None),
    ]
    for receipt in samples:
        expected = io.BytesIO()
        fastavro.schemaless_writer(expected, codec.schema, {name: getattr(receipt, name) for name in
                                                             Receipt.__dataclass_fields__})
        assert codec.encode(receipt) == expected.getvalue()
        assert codec.decode(codec.encode(receipt)) == receipt


def test_receipts_sharing_a_requests_fields_encode_as_fastavro_writes_each() -> None:
    """The fields a request's events share are encoded once and kept (a bounded memory, dropped
    whole when full), and a large number's high bytes are taken from the numbers encoded lately:
    every receipt's bytes are still exactly fastavro's, whatever came before it."""
    codec, hasher, rng = ReceiptCodec(), PhoneHasher(SALT), random.Random(7)
    longs = [0, 1, -1, 63, 64, -65, 8191, 8192, 16383, 16384, 2**31 - 1, -2**31, 2**63 - 1, -2**63]
    for n in range(MAX_SHARED_KEPT * 3):
        request = n // 7  # seven events a request, then another request's fields
        number = rng.choice(longs) if n % 5 == 0 else rng.randrange(-2**63, 2**63) if n % 5 == 1 else \
            1_700_000_000_000 + rng.randrange(10**6)
        receipt = build_receipt(
            InboundRecord("t", n % 3, abs(number) % 2**62, b"k", b"v", [], (1, number),
                          consumed_at_ms=abs(number) % 2**63),
            "accepted" if request % 2 else "dead_lettered", group=f"g{request % 3}", hasher=hasher,
            recipient=Recipient(f"tx-{n}", CAMPAIGN, PHONE) if request % 2 else None,
            failure=None if request % 2 else Failure("pisano_error", f"refused {request}", code=13002 + request,
                                                     http_status=404, attempts=request % 70),
            request_id=f"r{request}", attempts=request % 70, decided_at_ms=number)
        expected = io.BytesIO()
        fastavro.schemaless_writer(expected, codec.schema, {name: getattr(receipt, name) for name in
                                                             Receipt.__dataclass_fields__})
        assert codec.encode(receipt) == expected.getvalue(), n


def test_a_kept_requests_bytes_never_stand_for_values_equal_to_its_but_of_another_type() -> None:
    """The shared fields' bytes are kept by equality, and 1 == 1.0: a float where Avro wants a long
    is refused (as fastavro refuses it), whatever receipt came before, never written as the int's."""
    base = Receipt("t", 0, 5, "g", "dead_lettered", 1, 2, reason="pisano_error", detail="d",
                   pisano_http_status=404, pisano_code=13002, request_id="r", attempts=1)
    for name, number in [("pisano_code", 13002.0), ("pisano_http_status", 404.0), ("attempts", 1.0)]:
        other = dataclasses.replace(base, **{name: number})
        with pytest.raises((TypeError, ValueError)):
            ReceiptCodec().encode(other)
        codec = ReceiptCodec()
        codec.encode(base)
        with pytest.raises((TypeError, ValueError)):
            codec.encode(other)
    codec = ReceiptCodec()
    codec.encode(base)
    assert codec.encode(dataclasses.replace(base, attempts=True)) == ReceiptCodec().encode(base)  # True is 1 to Avro


def test_a_contact_policys_outcome_has_its_receipt_with_the_policy_as_reason() -> None:
    hasher = PhoneHasher(SALT)
    recipient = Recipient("tx-9", CAMPAIGN, PHONE, event_time_ms=1_600_000_000_000)
    expired = build_receipt(message(), receipt_outcome("expired"), group="g", hasher=hasher, recipient=recipient)
    suppressed = build_receipt(message(), receipt_outcome("suppressed"), group="g", hasher=hasher,
                               recipient=Recipient("tx-9", CAMPAIGN, PHONE))
    assert (expired.outcome, expired.reason, expired.event_time) == ("expired", "max_event_age", 1_600_000_000_000)
    assert (suppressed.outcome, suppressed.reason, suppressed.event_time) == \
        ("suppressed", "opt_out_list", 1_700_000_000_000)  # no event_time mapped: the Kafka timestamp
    assert suppressed.phone_hash == hasher(PHONE) and suppressed.request_id is None
    cooled = build_receipt(message(), receipt_outcome("cooldown"), group="g", hasher=hasher, recipient=recipient)
    assert (cooled.outcome, cooled.reason) == ("cooldown", "contact_cooldown")


def test_a_record_without_an_event_id_is_keyed_by_its_origin() -> None:
    failure = Failure("decode_error", "not Avro")
    receipt = build_receipt(message(offset=9), "dead_lettered", group="g", hasher=PhoneHasher(SALT), failure=failure)
    assert receipt.event_id is None and receipt.phone_hash is None
    assert receipt.key == b"transactions[3]@9"
    assert ReceiptCodec().decode(ReceiptCodec().encode(receipt)) == receipt


def test_outcome_topic_needs_a_salt() -> None:
    with pytest.raises(ValueError, match="OUTCOME_PHONE_SALT"):
        Settings(outcome_topic="receipts")
    with pytest.raises(ConfigError, match="16 characters"):
        Settings(outcome_topic="receipts", outcome_phone_salt="short").outcome_salt()
    assert Settings(outcome_topic="receipts", outcome_phone_salt=SALT).outcome_salt() == SALT
    for clash in ({"kafka_topics": ["a", "receipts"]}, {"dlq_topic": "receipts"}):
        with pytest.raises(ValueError, match="a topic of their own"):
            Settings(outcome_topic="receipts", outcome_phone_salt=SALT, **clash)


class HoldingProducer:
    """Records every record by topic; delivery reports wait until `ack()` (or fail with `fail()`)."""

    def __init__(self) -> None:
        self.produced: list[tuple[str, bytes, bytes]] = []
        self._reports: list[tuple[str, Callable[[Any, Any], None]]] = []
        self.hold: set[str] = set()  # topics whose reports wait
        self.failing: set[str] = set()  # topics whose reports say the delivery failed

    def produce(self, topic: str, key: Any = None, value: Any = None, headers: Any = None,
                on_delivery: Callable[[Any, Any], None] | None = None) -> None:
        self.produced.append((topic, key, value))
        if on_delivery is not None:
            self._reports.append((topic, on_delivery))

    def poll(self, timeout: float = 0) -> int:
        due = [(t, r) for t, r in self._reports if t not in self.hold]
        self._reports = [(t, r) for t, r in self._reports if t in self.hold]
        for topic, report in due:
            report(KafkaError(KafkaError._MSG_TIMED_OUT) if topic in self.failing else None, None)
        return len(due)

    def flush(self, timeout: float = 0) -> int:
        self.poll()
        return 0

    def on(self, topic: str) -> list[tuple[str, bytes, bytes]]:
        return [p for p in self.produced if p[0] == topic]


def test_the_writer_calls_back_only_once_acknowledged_and_produces_a_failed_receipt_again() -> None:
    producer = HoldingProducer()
    acknowledged: list[str] = []
    writer = ReceiptWriter(producer, "receipts", group="g", hasher=PhoneHasher(SALT), codec=ReceiptCodec(),
                           on_acknowledged=acknowledged.append)
    done: list[int] = []
    producer.failing.add("receipts")
    writer.record(message(), "skipped", lambda: done.append(1), recipient=Recipient("tx-1", CAMPAIGN, PHONE))
    writer.poll()
    assert done == [] and writer.in_flight == 1  # failed: produced again after a backoff, never dropped
    producer.failing.clear()
    writer._retry.all_due_now()
    writer.poll()
    writer.poll()
    assert done == [1] and writer.in_flight == 0 and acknowledged == ["duplicate"]
    assert len(producer.on("receipts")) == 2


def test_a_record_read_again_by_the_next_owner_gets_no_second_receipt() -> None:
    marks, producer, now = MemoryReceiptMarks(), HoldingProducer(), [1_000.0]

    def writer() -> ReceiptWriter:
        return ReceiptWriter(producer, "receipts", group="g", hasher=PhoneHasher(SALT), codec=ReceiptCodec(),
                             marks=marks, clock=lambda: now[0])

    first, done = writer(), []
    first.assigned([("transactions", 3)])
    first.record(message(offset=7), "delivered", lambda: done.append(7), recipient=Recipient("tx-1", CAMPAIGN, PHONE))
    first.poll()  # acknowledged, then marked in the same turn
    assert done == [7] and set(marks.receipted("g", ("transactions", 3))) == {7}
    second = writer()  # the partition's next owner, after a rebalance before the commit
    second.assigned([("transactions", 3)])
    second.record(message(offset=7), "skipped", lambda: done.append(-7), recipient=Recipient("tx-1", CAMPAIGN, PHONE))
    assert done == [7, -7] and len(producer.on("receipts")) == 1 and second.already_receipted == 1
    # Another record at that offset (the topic was created again) is not the one receipted.
    second.record(message(offset=7, value=b"other"), "dead_letter", lambda: done.append(70),
                  failure=Failure("decode_error", "not Avro"))
    second.poll()
    assert done[-1] == 70 and len(producer.on("receipts")) == 2
    second.committed({("transactions", 3): 8})
    second.poll()
    # Kept while the coordinator may still lose the commit (a next owner would read 7 again) ...
    assert set(marks.receipted("g", ("transactions", 3))) == {7}
    now[0] += MARKS_KEEP_S
    second.poll()
    assert marks.receipted("g", ("transactions", 3)) == {}  # ... then committed past: never read again


class AwayMarks:
    """Redis away: every call fails."""

    calls = 0

    def receipted(self, group: str, tp: Any) -> dict[int, str]:
        self.calls += 1
        raise StateStoreError("Redis unreachable")

    def mark(self, group: str, origins: Any) -> None:
        self.calls += 1
        raise StateStoreError("Redis unreachable")

    def forget_below(self, group: str, points: Any) -> None:
        self.calls += 1
        raise StateStoreError("Redis unreachable")


def test_receipts_go_on_without_marks_while_redis_is_away() -> None:
    producer, marks, done = HoldingProducer(), AwayMarks(), []
    writer = ReceiptWriter(producer, "receipts", group="g", hasher=PhoneHasher(SALT), codec=ReceiptCodec(),
                           marks=marks)
    writer.assigned([("transactions", 3)])  # fails: marks paused, the poll loop does not wait on Redis again
    for offset in range(3):
        writer.record(message(offset=offset), "skipped", lambda: done.append(1),
                      recipient=Recipient(f"tx-{offset}", CAMPAIGN, PHONE))
        writer.poll()
    assert done == [1, 1, 1] and len(producer.on("receipts")) == 3 and marks.calls == 1


# ---------------------------------------------------------------- the poll loop with receipts


def loop_with_receipts(pisano: FakePisano) -> tuple[Pipeline, FakeConsumer, HoldingProducer, Metrics]:
    consumer, producer, metrics = FakeConsumer(), HoldingProducer(), Metrics()
    config = Settings(kafka_topics=["t"], pisano_url="https://pisano.invalid", batch_max_wait_ms=0,
                      outcome_topic="receipts", outcome_phone_salt=SALT, dlq_topic="dlq")
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
                             codec=ReceiptCodec(), route=lambda campaign: "default",
                             on_acknowledged=lambda outcome: metrics.receipts.labels(outcome).inc())
    loop = Pipeline(config, consumer_factory=lambda on_commit: consumer, producer=producer,
                    decoder=SchemalessDecoder(default_schema()),
                    mapper=DeclarativeMapper.from_file(default_mapping_file()), delivery_factory=delivery,
                    metrics=metrics, health=Health(joined=True), receipts=receipts)
    loop.tracker.assign(("t", 0))
    loop.delivery.start()
    return loop, consumer, producer, metrics


def turn_until(loop: Pipeline, condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        loop._step()
        loop._commit()
        if condition():
            return
        time.sleep(0.01)
    raise AssertionError("condition not reached")


def mixed_records() -> list[FakeMessage]:
    """Delivered (0, 1), a duplicate of 0 (2), not Avro (3), refused by Pisano (4)."""
    values = [encode(transaction("tx-0", phone_for(0), CAMPAIGN, n=0)),
              encode(transaction("tx-1", phone_for(1), CAMPAIGN, n=1)),
              encode(transaction("tx-0", phone_for(0), CAMPAIGN, n=0)),
              b"not avro",
              encode(transaction("tx-4", phone_for(4), REFUSED, n=4))]
    return [FakeMessage("t", 0, offset, value) for offset, value in enumerate(values)]


def refusing(campaign: str) -> FakePisano:
    class Refusing(FakePisano):
        def send(self, campaign_id: str, body: bytes, leave_by: float | None = None) -> Accepted:
            if campaign_id == campaign:
                raise PisanoApiError(404, 13002, "campaign not found")
            return super().send(campaign_id, body, leave_by)

    return Refusing(default=Accepted(200, "pisano-req-1", 0.01))


def test_every_record_gets_exactly_one_receipt_and_commits_wait_for_it() -> None:
    loop, consumer, producer, metrics = loop_with_receipts(refusing(REFUSED))
    producer.hold.add("receipts")
    consumer.queue = mixed_records()[:2]
    try:
        turn_until(loop, lambda: len(producer.on("receipts")) == 2)
        for _ in range(5):
            loop._step()
            loop._commit()
        assert ("t", 0) not in consumer.committed  # delivered, but the receipts are not acknowledged
        producer.hold.clear()
        turn_until(loop, lambda: consumer.committed.get(("t", 0)) == 2)
        consumer.queue = mixed_records()[2:]
        turn_until(loop, lambda: consumer.committed.get(("t", 0)) == 5)
    finally:
        loop.delivery.stop(2)
    codec = ReceiptCodec()
    receipts = [codec.decode(value) for _, _, value in producer.on("receipts")]
    assert sorted(r.origin_offset for r in receipts) == [0, 1, 2, 3, 4]  # one per record
    by_offset = {r.origin_offset: r for r in receipts}
    assert [by_offset[n].outcome for n in range(5)] == ["accepted", "accepted", "duplicate", "dead_lettered",
                                                         "dead_lettered"]
    accepted = by_offset[0]
    assert accepted.pisano_request_id == "pisano-req-1" and re.fullmatch(r"[0-9a-f]{32}", accepted.request_id or "")
    assert accepted.phone_hash == PhoneHasher(SALT)(phone_for(0)) and accepted.destination == "default"
    assert accepted.event_time is not None and accepted.consumed_at <= accepted.decided_at
    assert accepted.attempts == 1 and by_offset[2].attempts == 0  # a duplicate made no request
    assert by_offset[3].reason == "decode_error" and by_offset[3].event_id is None
    refused = by_offset[4]
    assert (refused.reason, refused.pisano_code, refused.event_id) == ("pisano_error", 13002, "tx-4")
    assert re.fullmatch(r"[0-9a-f]{32}", refused.request_id or "")
    # A dead-lettered record's receipt comes after its dead-letter, which is there.
    assert len(producer.on("dlq")) == 2
    topics = [t for t, _, _ in producer.produced]
    assert topics.index("dlq") < topics.index("receipts", topics.index("dlq"))
    counts = Counter({s.labels["outcome"]: int(s.value) for f in metrics.registry.collect()
                      if f.name == "pisano_sms_receipts" for s in f.samples if s.name.endswith("_total")})
    assert +counts == Counter({"accepted": 2, "duplicate": 1, "dead_lettered": 2})


def test_a_dead_letter_is_committed_only_after_its_receipt() -> None:
    loop, consumer, producer, _ = loop_with_receipts(FakePisano())
    producer.hold.add("receipts")
    consumer.queue = [FakeMessage("t", 0, 0, b"not avro")]
    try:
        turn_until(loop, lambda: len(producer.on("receipts")) == 1)
        for _ in range(5):
            loop._step()
            loop._commit()
        assert len(producer.on("dlq")) == 1 and ("t", 0) not in consumer.committed
        producer.hold.clear()
        turn_until(loop, lambda: consumer.committed.get(("t", 0)) == 1)
    finally:
        loop.delivery.stop(2)
