"""In-memory stand-ins for the poll loop's Kafka clients and sender, for unit tests only (the
integration tests use real Kafka): enough of confluent_kafka's Consumer, Producer and Message
for `consumer.pipeline.Pipeline` to run turn by turn with `_step()`."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaException

from consumer.config.settings import Settings
from consumer.delivery.batching import Batcher
from consumer.delivery.lanes import Lane, Lanes
from consumer.ingest.avro import Decoder
from consumer.ingest.mapping import Mapper
from consumer.operations.health import Health
from consumer.operations.metrics import Metrics
from consumer.pipeline import Pipeline

CAMPAIGN = "ae51458c-9e82-417f-8f1d-e074891ea5c1"


class FakeMessage:
    def __init__(self, topic: str, partition: int, offset: int, value: bytes | None, key: bytes | None = None,
                 headers: list[tuple[str, bytes]] | None = None, header_names_invalid: bool = False) -> None:
        self._topic, self._partition, self._offset = topic, partition, offset
        self._value, self._key, self._headers = value, key, headers
        self.header_names_invalid = header_names_invalid
        self.header_calls = 0
        self._timestamp = int(time.time() * 1000)  # produced just now: never stale

    def error(self) -> None:
        return None

    def headers(self) -> list[tuple[str, bytes]] | None:
        self.header_calls += 1
        if self.header_names_invalid:
            # What confluent_kafka does with a header name that is not UTF-8; a second call on the
            # same message crashes the interpreter, so a test fails on it instead.
            if self.header_calls > 1:
                raise AssertionError("Message.headers() called twice on a message whose headers raised")
            raise SystemError("<built-in method headers> returned a result with an exception set")
        return self._headers

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def timestamp(self) -> tuple[int, int]:
        return (1, self._timestamp)


class FakeConsumer:
    def __init__(self) -> None:
        self.queue: list[FakeMessage] = []
        self.paused = False
        self.committed: dict[tuple[str, int], int] = {}
        self.on_commit: Callable[..., None] | None = None
        self.per_consume = 1000  # what librdkafka has queued is bounded too (queued.max.messages.kbytes)

    def consume(self, num_messages: int, timeout: float) -> list[FakeMessage]:
        if self.paused:
            return []
        count = min(num_messages, self.per_consume)
        taken, self.queue = self.queue[:count], self.queue[count:]
        return taken

    def assignment(self) -> list[Any]:
        return [object()]

    def pause(self, partitions: list[Any]) -> None:
        self.paused = True

    def resume(self, partitions: list[Any]) -> None:
        self.paused = False

    def commit(self, offsets: list[Any], asynchronous: bool) -> list[Any]:
        for tp in offsets:
            self.committed[(tp.topic, tp.partition)] = tp.offset
        return offsets

    def get_watermark_offsets(self, tp: Any, cached: bool) -> tuple[int, int]:
        raise KafkaException("not in a unit test")

    def memberid(self) -> str | None:
        return "member-1"  # in the group, as far as the poll loop's membership check asks


class FakeProducer:
    """Acknowledges every dead-letter on the next poll, or refuses them all (`refuse`)."""

    def __init__(self) -> None:
        self.produced: list[dict[str, Any]] = []
        self._reports: list[Callable[[Any, Any], None]] = []
        self.refuse = False

    def produce(self, topic: str, key: Any = None, value: Any = None, headers: Any = None,
                on_delivery: Callable[[Any, Any], None] | None = None) -> None:
        if self.refuse:
            raise KafkaException("topic authorization failed")
        self.produced.append({"key": key, "value": value, "headers": dict(headers or [])})
        if on_delivery is not None:
            self._reports.append(on_delivery)

    def poll(self, timeout: float = 0) -> int:
        reports, self._reports = self._reports, []
        for report in reports:
            report(None, None)
        return len(reports)

    def flush(self, timeout: float = 0) -> int:
        self.poll()
        return 0


class IdleSender:
    """Takes nothing from the batches: the events stay buffered, as behind a slow Pisano."""

    def start(self) -> None: ...

    def stop(self, timeout: float) -> None: ...

    def in_flight(self, partitions: Any = None) -> int:
        return 0


def pipeline(decoder: Decoder, mapper: Mapper, **settings: Any) -> tuple[Pipeline, FakeConsumer, FakeProducer]:
    consumer, producer = FakeConsumer(), FakeProducer()
    config = Settings(kafka_topics=["t"], pisano_url="https://pisano.invalid", **settings)
    lanes = Lanes({"default": Lane(Batcher(5000, 1.0), IdleSender())}, route=lambda campaign: "default")  # type: ignore[arg-type]
    loop = Pipeline(config, consumer_factory=lambda on_commit: consumer, producer=producer, decoder=decoder,
                    mapper=mapper, delivery_factory=lambda report: lanes, metrics=Metrics(), health=Health(joined=True))
    loop.tracker.assign(("t", 0))
    return loop, consumer, producer
