"""SIGTERM with a request still under way when SHUTDOWN_GRACE_MS runs out: `_shutdown` stops at its
deadline, then `consumer.close()` makes librdkafka call the revoke callback, and `_on_revoke`
waited REVOKE_GRACE_MS again for the same requests. The chart's terminationGracePeriodSeconds is
SHUTDOWN_GRACE_MS + 15 s: with the defaults 30 + 10 + 5 (the final flush) s and the flushes' floors,
the pod could be killed instead of leaving the group (found by review)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from confluent_kafka import TopicPartition

from consumer import pipeline as pipeline_module
from consumer.config.resources import default_mapping_file
from consumer.config.settings import Settings
from consumer.delivery.batching import Batcher
from consumer.delivery.lanes import Lane, Lanes
from consumer.ingest.avro import SchemalessDecoder
from consumer.ingest.mapping import DeclarativeMapper
from consumer.ingest.samples import default_schema
from consumer.operations.health import Health
from consumer.operations.metrics import Metrics
from consumer.pipeline import Pipeline
from tests.support.fake_kafka import FakeConsumer, FakeProducer, IdleSender


class StuckSender:
    """One request under way that outlives every grace (a Pisano read timeout, a retry's slot)."""

    def start(self) -> None: ...

    def stop(self, timeout: float) -> None:
        time.sleep(timeout)

    def in_flight(self, partitions: Any = None) -> int:
        return 1


class ClosingConsumer(FakeConsumer):
    def __init__(self) -> None:
        super().__init__()
        self.loop: Pipeline | None = None

    def subscribe(self, topics: Any, **callbacks: Any) -> None:
        self.callbacks = callbacks

    def assignment(self) -> list[Any]:
        return [TopicPartition("t", 0)]

    def incremental_unassign(self, partitions: Any) -> None: ...

    def close(self) -> None:  # librdkafka: close() of a subscribed consumer revokes its assignment first
        self.callbacks["on_revoke"](self, self.assignment())


def stuck_loop(consumer: ClosingConsumer, *, revoke_grace_ms: int, sender: Any = None) -> Pipeline:
    """A loop owning partition t[0], SHUTDOWN_GRACE_MS 1 s, and by default a request under way that
    outlives every grace."""
    config = Settings(kafka_topics=["t"], pisano_url="https://pisano.invalid", shutdown_grace_ms=1000,
                      revoke_grace_ms=revoke_grace_ms)
    lanes = Lanes({"default": Lane(Batcher(5000, 1.0), sender or StuckSender())}, route=lambda c: "default")
    loop = Pipeline(config, consumer_factory=lambda on_commit: consumer, producer=FakeProducer(),
                    decoder=SchemalessDecoder(default_schema()),
                    mapper=DeclarativeMapper.from_file(default_mapping_file()),
                    delivery_factory=lambda report: lanes, metrics=Metrics(), health=Health(joined=True))
    loop.tracker.assign(("t", 0))
    return loop


def test_sigterm_with_a_request_under_way_exits_within_the_shutdown_grace() -> None:
    consumer = ClosingConsumer()
    loop = stuck_loop(consumer, revoke_grace_ms=3000)
    loop.request_stop()
    started = time.monotonic()
    loop.run()
    elapsed = time.monotonic() - started
    # SHUTDOWN_GRACE_MS plus the dead-letter / receipt flushes' 0.5 s floors at most.
    assert elapsed < 1.0 + 1.5, f"shutdown took {elapsed:.1f}s with SHUTDOWN_GRACE_MS=1s"


# SIGTERM while a rebalance's revocation waits (a rolling update: new pods join, the old ones get
# SIGTERM at once): the wait ran its whole REVOKE_GRACE_MS, then the shutdown its whole
# SHUTDOWN_GRACE_MS (found by review). The stop's deadline starts at the signal.


class RebalancingConsumer(ClosingConsumer):
    """The first consume() serves a rebalance that revokes the partition (as librdkafka does)."""

    def __init__(self) -> None:
        super().__init__()
        self.rebalanced = False

    def consume(self, num_messages: int, timeout: float) -> list[Any]:
        if not self.rebalanced:
            self.rebalanced = True
            self.callbacks["on_revoke"](self, self.assignment())
        return []


def test_sigterm_during_a_revoke_wait_exits_within_the_shutdown_grace() -> None:
    consumer = RebalancingConsumer()
    loop = stuck_loop(consumer, revoke_grace_ms=4000)
    stopped_at: list[float] = []

    def sigterm() -> None:
        stopped_at.append(time.monotonic())
        loop.request_stop()

    threading.Timer(0.3, sigterm).start()
    loop.run()
    elapsed = time.monotonic() - stopped_at[0]
    assert elapsed < 1.0 + 1.5, f"exited {elapsed:.1f}s after SIGTERM with SHUTDOWN_GRACE_MS=1s"


# Leaving the group (`Pipeline._close`): close() of a consumer in the middle of a cooperative
# rebalance was seen to wait for good in CI (SIGTERM right after another replica left), and the
# replica never exited. The subscription is dropped first, its revocation served by the loop, and
# close() bounded.


class LeavingConsumer(ClosingConsumer):
    """unsubscribe() revokes the assignment at the next consume(), as librdkafka does."""

    def __init__(self, close_hangs: bool = False) -> None:
        super().__init__()
        self.assigned = [TopicPartition("t", 0)]
        self.leaving = False
        self.close_hangs = close_hangs
        self.calls: list[str] = []

    def assignment(self) -> list[Any]:
        return list(self.assigned)

    def unsubscribe(self) -> None:
        self.calls.append("unsubscribe")
        self.leaving = True

    def consume(self, num_messages: int, timeout: float) -> list[Any]:
        if self.leaving and self.assigned:
            self.calls.append("revoke")
            self.callbacks["on_revoke"](self, self.assignment())
            self.assigned = []
        return []

    def close(self) -> None:
        self.calls.append("close")
        if self.close_hangs:
            threading.Event().wait()  # for good
        super().close()


def idle_loop(consumer: ClosingConsumer) -> Pipeline:
    return stuck_loop(consumer, revoke_grace_ms=10_000, sender=IdleSender())


def test_the_group_is_left_before_close_so_close_has_nothing_to_revoke() -> None:
    consumer = LeavingConsumer()
    loop = idle_loop(consumer)
    loop.request_stop()
    loop.run()
    assert consumer.calls == ["unsubscribe", "revoke", "close"]


def test_a_close_that_never_returns_does_not_keep_the_replica(monkeypatch: pytest.MonkeyPatch,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(pipeline_module, "CLOSE_TIMEOUT_S", 0.3)
    consumer = LeavingConsumer(close_hangs=True)
    loop = idle_loop(consumer)
    loop.request_stop()
    started = time.monotonic()
    loop.run()
    assert time.monotonic() - started < 1.0 + 1.5 + 0.3
    assert "close" in consumer.calls
    assert any("did not close within" in m for m in caplog.messages)


def test_dead_letters_waiting_for_redis_hold_neither_a_revocation_nor_the_shutdown() -> None:
    """Found by review: a dead-letter waits for Redis (its marks) until it answers, asked again
    every 30 s; the revocation's flush and the shutdown's loop counted it as one Kafka had still
    to acknowledge, and waited REVOKE_GRACE_MS, then SHUTDOWN_GRACE_MS, for nothing on every
    rebalance and stop of a Redis outage. Their records stay uncommitted for the next owner."""
    from consumer.outcomes.deadletter import Failure
    from tests.unit.outcomes.test_deadletter_once import DownMarks, record

    consumer = ClosingConsumer()
    config = Settings(kafka_topics=["t"], pisano_url="https://pisano.invalid", shutdown_grace_ms=3000,
                      revoke_grace_ms=3000)
    lanes = Lanes({"default": Lane(Batcher(5000, 1.0), IdleSender())}, route=lambda c: "default")
    loop = Pipeline(config, consumer_factory=lambda on_commit: consumer, producer=FakeProducer(),
                    decoder=SchemalessDecoder(default_schema()),
                    mapper=DeclarativeMapper.from_file(default_mapping_file()),
                    delivery_factory=lambda report: lanes, metrics=Metrics(), health=Health(joined=True),
                    dead_letter_marks=DownMarks())
    loop.tracker.assign(("t", 0))
    loop.dlq.send(record(1), Failure("invalid_event", "no phone"), lambda: None)
    loop.dlq.poll()
    assert loop.dlq.in_flight == 1  # waiting for Redis
    started = time.monotonic()
    loop._on_revoke(consumer, [TopicPartition("t", 1)])  # another partition's revocation
    assert time.monotonic() - started < 1.0
    loop.request_stop()
    started = time.monotonic()
    loop.run()
    assert time.monotonic() - started < 2.0  # the dead-letter and receipt flushes' 0.5 s floors at most
