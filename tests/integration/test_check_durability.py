"""`pisano-sms check` reads the real broker's topic and broker configs, and the real Redis's
persistence, and warns on what would lose or resend events (consumer/operations/durability.py)."""

from __future__ import annotations

from collections.abc import Callable

from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
)

from tests.conftest import Stack
from tests.integration.test_cli_commands import base_env, pisano_sms


def set_configs(bootstrap: str, topic: str, **configs: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    entries = [ConfigEntry(name.replace("_", "."), value, incremental_operation=AlterConfigOpType.SET)
               for name, value in configs.items()]
    for future in admin.incremental_alter_configs([ConfigResource(ConfigResource.Type.TOPIC, topic,
                                                                  incremental_configs=entries)]).values():
        future.result(30)


def kafka_and_redis_lines(env: dict[str, str]) -> tuple[str, str]:
    # Pisano is not asked here (no simulator): its line fails, the others are what is read.
    result = pisano_sms("check", env={**env, "PISANO_URL": "http://127.0.0.1:9", "PISANO_API_TOKEN": "t" * 20})
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    return lines["kafka"], lines["redis"]


def test_check_warns_on_compacted_or_short_lived_topics_and_not_on_the_stacks_defaults(
        stack: Stack, new_topic: Callable[..., str]) -> None:
    topic, dlq = new_topic(), new_topic("dlq")
    env = base_env(stack, KAFKA_TOPICS=topic, DLQ_TOPIC=dlq)
    kafka, redis = kafka_and_redis_lines(env)
    assert "ok" in kafka and "WARNING" not in kafka and "unchecked" not in kafka, kafka  # defaults agree
    assert "ok" in redis and "WARNING (persistence)" not in redis, redis  # the local stack runs appendonly yes

    set_configs(stack.bootstrap, topic, cleanup_policy="compact", retention_ms="600000")
    set_configs(stack.bootstrap, dlq, retention_ms="3600000")
    kafka, _ = kafka_and_redis_lines(env)
    assert kafka.startswith("kafka") and "ok" in kafka, kafka  # warnings, not a failure
    # The names are left out: the report masks digit runs that could be phones, and test topics have some.
    assert " is compacted (cleanup.policy=compact): it keeps one record per key" in kafka
    assert " keeps records 10m (retention.ms), less than a record may wait uncommitted (15m" in kafka
    assert " keeps dead letters 1h (retention.ms), less than the stale limit (6d" in kafka
    assert kafka.count("WARNING (retention): ") == 3
