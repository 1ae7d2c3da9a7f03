"""`replay` for a fleet subscribed by pattern (`^...` in KAFKA_TOPICS), on the real local Kafka
(found by review, sre; tests/unit/sre/test_replay_topic_patterns.py): each dead-letter goes back to
its own topic, which the consumers' own subscription (librdkafka's regular expressions) reads.
Before, every one was refused as `other topic` and the group's position committed past them all."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

from confluent_kafka import Consumer

from tests.conftest import Stack
from tests.integration.test_replay import TOKEN_13001, Spec, build_dlq, cli_env, count_in, pisano_sms
from tests.support.kafka import read_all


def test_a_pattern_fleet_gets_each_replay_on_its_own_topic(stack: Stack, new_topic: Callable[..., str]) -> None:
    first, second, dlq = new_topic("patsrc"), new_topic("patsrc"), new_topic("dlq")
    build_dlq(stack, first, dlq, [Spec(TOKEN_13001)] * 3)
    build_dlq(stack, second, dlq, [Spec(TOKEN_13001)] * 2)
    pattern = f"^({first}|{second})$"
    result = pisano_sms("replay", env=cli_env(stack, dlq, KAFKA_TOPICS=pattern))
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert count_in(result.stdout, "replayed") == 5 and count_in(result.stdout, "refused: other topic") == 0
    assert len(read_all(stack.bootstrap, first)) == 3 + 3 and len(read_all(stack.bootstrap, second)) == 2 + 2

    # The consumers' subscription is librdkafka's: it reads the replays where replay put them.
    consumer = Consumer({"bootstrap.servers": stack.bootstrap, "group.id": f"pattern-fleet-{dlq}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([pattern])
    replays: Counter[str] = Counter()
    deadline = time.monotonic() + 60
    try:
        while sum(replays.values()) < 5 and time.monotonic() < deadline:
            for message in consumer.consume(100, 0.5):
                if message.error() is None and any(k == "dlq.replays" for k, _ in message.headers() or ()):
                    replays[message.topic()] += 1
    finally:
        consumer.close()
    assert replays == {first: 3, second: 2}
