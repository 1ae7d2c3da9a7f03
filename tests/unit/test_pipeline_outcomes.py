"""The poll loop with a real sender lane on in-memory parts: offsets committed only behind
outcomes, backpressure while Pisano is slow, and a revocation that hands buffered events over."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import TopicPartition

from consumer.config.resources import default_mapping_file
from consumer.config.settings import Settings
from consumer.delivery.attempts import RetryPolicy
from consumer.delivery.backoff import Backoff
from consumer.delivery.batching import Batcher
from consumer.delivery.destination import Destination
from consumer.delivery.lanes import Lane, Lanes
from consumer.delivery.outcome import Outcome
from consumer.delivery.pisano import Accepted
from consumer.delivery.sender import FailurePolicy, Sender
from consumer.ingest.avro import SchemalessDecoder
from consumer.ingest.mapping import DeclarativeMapper
from consumer.ingest.samples import default_schema, encode, phone_for, transaction
from consumer.operations.health import Health
from consumer.operations.metrics import Metrics
from consumer.pipeline import Pipeline
from consumer.state.circuit import CircuitBreaker
from consumer.state.limiter import NoLimiter
from consumer.state.memory import MemoryCircuitStore, MemoryDedup
from tests.support.fake_kafka import FakeConsumer, FakeMessage, FakeProducer
from tests.support.fakes import FakePisano

CAMPAIGN_A = "ae51458c-9e82-417f-8f1d-e074891ea5c1"
CAMPAIGN_B = "9a1e0000-0000-4000-8000-000000000001"


class GatedPisano(FakePisano):
    """Holds every request for a campaign until its gate opens, as a slow Pisano would."""

    def __init__(self) -> None:
        super().__init__()
        self.gates: dict[str, threading.Event] = {}

    def send(self, campaign_id: str, body: bytes, leave_by: float | None = None) -> Accepted:
        gate = self.gates.get(campaign_id)
        if gate is not None:
            gate.wait(10)
        return super().send(campaign_id, body, leave_by)


def record(offset: int, campaign: str, partition: int = 0) -> FakeMessage:
    value = encode(transaction(f"e-{offset}", phone_for(offset), campaign, n=offset))
    return FakeMessage("t", partition, offset, value, key=f"e-{offset}".encode())


def loop_with_sender(pisano: FakePisano, **settings: Any) -> tuple[Pipeline, FakeConsumer, MemoryDedup]:
    consumer, producer = FakeConsumer(), FakeProducer()
    config = Settings(kafka_topics=["t"], pisano_url="https://pisano.invalid", **settings)
    dedup = MemoryDedup(lease_ms=60_000, horizon_s=3600)
    circuit = CircuitBreaker(MemoryCircuitStore(), cooldown_ms=1000, max_cooldown_ms=2000, probe_lease_ms=1000)
    destination = Destination("default", pisano, NoLimiter(), circuit)
    policy = FailurePolicy(RetryPolicy(2, 10.0, Backoff(0.001, 0.002)), "dead_letter", 0.25)

    def delivery(report: Callable[[Outcome], None]) -> Lanes:
        batcher = Batcher(config.batch_max_recipients, config.batch_max_wait_ms / 1000)
        sender = Sender(destination=destination, batcher=batcher, dedup=dedup, metrics=Metrics(), report=report,
                        policy=policy, threads=2, throttle_horizon_s=30.0, claim_lease_ms=dedup.lease_ms)
        return Lanes({"default": Lane(batcher, sender)}, route=lambda campaign: "default")

    loop = Pipeline(config, consumer_factory=lambda on_commit: consumer, producer=producer,
                    decoder=SchemalessDecoder(default_schema()), mapper=DeclarativeMapper.from_file(
                        default_mapping_file()), delivery_factory=delivery, metrics=Metrics(),
                    health=Health(joined=True))
    loop.tracker.assign(("t", 0))
    loop.tracker.assign(("t", 1))
    loop.delivery.start()
    return loop, consumer, dedup


def turn_until(loop: Pipeline, condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        loop._step()
        loop._commit()
        if condition():
            return
        time.sleep(0.01)
    raise AssertionError("condition not reached")


def test_offsets_are_committed_only_behind_outcomes() -> None:
    pisano = GatedPisano()
    pisano.gates[CAMPAIGN_A] = threading.Event()
    loop, consumer, _ = loop_with_sender(pisano, batch_max_wait_ms=0)
    consumer.queue = [record(0, CAMPAIGN_A), record(1, CAMPAIGN_B), record(2, CAMPAIGN_B)]
    try:
        turn_until(loop, lambda: len(pisano.requests) >= 1 and loop.delivery.in_flight() == 1)
        time.sleep(0.2)
        for _ in range(5):
            loop._step()
            loop._commit()
        # B's two events are delivered, A's is still in flight: nothing may be committed past it.
        assert ("t", 0) not in consumer.committed or consumer.committed[("t", 0)] == 0
        pisano.gates[CAMPAIGN_A].set()
        turn_until(loop, lambda: consumer.committed.get(("t", 0)) == 3)
        assert sorted(pisano.sent_phones) == sorted(phone_for(n) for n in range(3))
    finally:
        pisano.gates[CAMPAIGN_A].set()
        loop.delivery.stop(2)


def test_fetching_pauses_while_pisano_is_slow_and_resumes_after() -> None:
    pisano = GatedPisano()
    pisano.gates[CAMPAIGN_A] = threading.Event()
    loop, consumer, _ = loop_with_sender(pisano, batch_max_wait_ms=0, max_buffered_events=10, batch_max_recipients=2)
    consumer.per_consume = 5
    consumer.queue = [record(n, CAMPAIGN_A) for n in range(60)]
    try:
        turn_until(loop, lambda: consumer.paused)
        assert loop._load() <= 10 + 5  # one fetch may overshoot by at most what it asked for
        assert len(consumer.queue) > 30  # the rest stays in Kafka
        pisano.gates[CAMPAIGN_A].set()
        turn_until(loop, lambda: consumer.committed.get(("t", 0)) == 60, timeout=10)
        assert not consumer.paused
        assert len(pisano.sent_phones) == len(set(pisano.sent_phones)) == 60
    finally:
        pisano.gates[CAMPAIGN_A].set()
        loop.delivery.stop(2)


def test_a_revoked_partition_hands_its_buffered_events_to_the_next_owner() -> None:
    pisano = FakePisano()
    loop, consumer, dedup = loop_with_sender(pisano, batch_max_wait_ms=60_000)
    consumer.queue = [record(0, CAMPAIGN_A, partition=0), record(1, CAMPAIGN_A, partition=1)]
    unassigned: list[Any] = []
    consumer.incremental_unassign = unassigned.extend  # type: ignore[attr-defined]
    try:
        turn_until(loop, lambda: loop.delivery.buffered == 2)
        loop._on_revoke(consumer, [TopicPartition("t", 0)])
        assert loop.delivery.buffered == 1 and unassigned
        assert ("t", 0) not in consumer.committed  # no outcome: the next owner reads it again
        loop.delivery.flush_all()
        turn_until(loop, lambda: consumer.committed.get(("t", 1)) == 2)
        assert pisano.sent_phones == [phone_for(1)]  # the revoked event was not sent by us
        assert dedup.state("e-0") is None  # and not claimed either
    finally:
        loop.delivery.stop(2)
