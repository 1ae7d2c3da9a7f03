"""Kafka clients, configured in one fixed order: defaults, the user's librdkafka settings
(security.protocol, sasl.*, ssl.*, ...), then what the consumer's guarantees depend on.

Offsets are stored and committed only by the pipeline, after each record's outcome is durable
(ARCHITECTURE.md invariant 1), so auto-commit and auto-store are enforced off whatever the user sets.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer

from consumer.config.secrets import mask_urls_in_text
from consumer.config.settings import Settings
from consumer.errors import ConfigError

log = logging.getLogger(__name__)
librdkafka_log = logging.getLogger("librdkafka")

CONSUMER_DEFAULTS: dict[str, Any] = {
    "auto.offset.reset": "earliest",
    "session.timeout.ms": 45_000,
    "max.poll.interval.ms": 300_000,
    # Bound what librdkafka prefetches; the pipeline buffers what it needs itself.
    "queued.max.messages.kbytes": 65_536,
    "fetch.wait.max.ms": 100,
}
CONSUMER_ENFORCED: dict[str, Any] = {
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "partition.assignment.strategy": "cooperative-sticky",
}
PRODUCER_DEFAULTS: dict[str, Any] = {
    "linger.ms": 5,
    "compression.type": "lz4",
}
PRODUCER_ENFORCED: dict[str, Any] = {
    "enable.idempotence": True,
    "acks": "all",
}


def _base(settings: Settings, on_error: Any = None) -> dict[str, Any]:
    def error_cb(error: KafkaError) -> None:
        if on_error is not None:
            on_error(error)
        level = logging.ERROR if error.fatal() or error.code() == KafkaError._ALL_BROKERS_DOWN else logging.WARNING
        log.log(level, "Kafka: %s", error.str())

    return {"bootstrap.servers": settings.kafka_bootstrap_servers, "error_cb": error_cb,
            "logger": librdkafka_log}


def consumer_config(settings: Settings, on_error: Any = None, **extra: Any) -> dict[str, Any]:
    return {
        **CONSUMER_DEFAULTS,
        **_base(settings, on_error),
        "group.id": settings.kafka_group_id,
        **{k: v for k, v in settings.kafka.items() if not k.startswith(_PRODUCER_ONLY)},
        **extra,
        **CONSUMER_ENFORCED,
        # A record as large as we accept must fit through the fetch path.
        "fetch.max.bytes": max(52_428_800, settings.max_message_bytes * 2),
    }


def producer_config(settings: Settings, on_error: Any = None, **extra: Any) -> dict[str, Any]:
    return {
        **PRODUCER_DEFAULTS,
        **_base(settings, on_error),
        **{k: v for k, v in settings.kafka.items() if not k.startswith(_CONSUMER_ONLY)},
        **extra,
        **PRODUCER_ENFORCED,
        # Dead-letters carry the original value, which may be far larger than we accept.
        "message.max.bytes": 64 * 1_048_576,
    }


# librdkafka warns about consumer properties given to a producer and the other way round; the
# user's settings go to both clients, so each gets only what applies to it.
_CONSUMER_ONLY = ("group.", "session.", "max.poll.", "auto.", "enable.auto.", "fetch.", "queued.",
                  "partition.assignment.", "isolation.", "heartbeat.", "check.crcs")
_PRODUCER_ONLY = ("message.timeout.", "delivery.timeout.", "acks", "request.required.acks", "linger.",
                  "queue.buffering.", "batch.", "compression.", "enable.idempotence", "retries",
                  "message.send.max.retries", "transactional.")


def produce_waiting(producer: Producer, topic: str, **record: Any) -> None:
    """Produce, waiting for room when librdkafka's local queue is full (delivery reports drain it).

    For batch tools (replay, the demo); the poll loop must not wait, so it does not use this."""
    while True:
        try:
            producer.produce(topic, **record)
            return
        except BufferError:
            producer.poll(0.1)


@contextmanager
def refused_settings() -> Iterator[None]:
    """Kafka clients created at start-up: one librdkafka refuses to create (a property out of its
    range or in conflict with another, a TLS file it cannot read) is a ConfigError saying what it
    refused, as any setting that cannot work, not a traceback: the same settings would be refused
    again after a restart. (Not around a client created later, `Pipeline._check_membership`'s: a
    file unreadable for a moment there is tried again.)"""
    try:
        yield
    except KafkaException as exc:
        error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
        said = mask_urls_in_text(error.str() if error is not None else str(exc))
        raise ConfigError(f"Kafka refused the client's settings: {said}. Fix the setting it names "
                          "(KAFKA_CONFIG_<PROPERTY> in the environment, dots as underscores, or the config "
                          "file's kafka: mapping), or make the file it names readable") from exc


def make_consumer(settings: Settings, on_error: Any = None, **extra: Any) -> Consumer:
    return Consumer(consumer_config(settings, on_error, **extra))


def make_producer(settings: Settings, on_error: Any = None, **extra: Any) -> Producer:
    return Producer(producer_config(settings, on_error, **extra))


def make_admin(settings: Settings) -> Any:
    """An AdminClient with the connection and security settings (kafka: in --config) alone: the
    clients' own properties would only draw librdkafka's warnings."""
    from confluent_kafka.admin import AdminClient

    return AdminClient({**_base(settings), **{k: v for k, v in settings.kafka.items()
                                              if not k.startswith(_CONSUMER_ONLY + _PRODUCER_ONLY)}})
