"""What the on-call engineer reads when the probe finds Redis or Kafka gone: the cause, and what
to do about it, never a password from the URL the client's error may quote."""

from __future__ import annotations

import logging

import pytest
import redis

from consumer.operations.health import Health, HealthProbe
from consumer.operations.metrics import Metrics


class _DownRedis:
    def ping(self) -> None:
        raise redis.ConnectionError("Error 111 connecting to redis://u:pw-secret-99@10.0.0.5:6379. Connection refused.")


class _DownKafka:
    def list_topics(self, topic: str, timeout: float) -> None:
        raise RuntimeError('KafkaError{code=_TRANSPORT,val=-195,str="Failed to get metadata: '
                           'Local: Broker transport failure"}')


def _probe() -> HealthProbe:
    return HealthProbe(Health(), Metrics(), redis_client=_DownRedis(), producer=_DownKafka(), dlq_topic="dlq",
                       destinations=[])


def test_redis_unreachable_says_why_and_what_to_do(caplog: pytest.LogCaptureFixture) -> None:
    checker = _probe()
    with caplog.at_level(logging.ERROR):
        checker._check_redis()
    assert not checker.health.redis_ok
    line = caplog.records[-1].getMessage()
    assert "Connection refused" in line and "REDIS_URL" in line and "pw-secret-99" not in line


def test_kafka_unreachable_says_why_and_what_to_do(caplog: pytest.LogCaptureFixture) -> None:
    checker = _probe()
    with caplog.at_level(logging.ERROR):
        checker._check_kafka()
    assert not checker.health.kafka_ok
    line = caplog.records[-1].getMessage()
    assert "Broker transport failure" in line and "KAFKA_BOOTSTRAP_SERVERS" in line


class _ReadOnlyRedis:
    def ping(self) -> None:
        raise redis.exceptions.AuthenticationError("invalid username-password pair or user is disabled.")


def test_a_redis_that_answers_with_a_refusal_is_not_called_unreachable(caplog: pytest.LogCaptureFixture) -> None:
    """A wrong password is an answer: the network is the wrong place to look (consumer/state/redis_errors.py)."""
    checker = HealthProbe(Health(), Metrics(), redis_client=_ReadOnlyRedis(), producer=_DownKafka(), dlq_topic="dlq",
                          destinations=[])
    with caplog.at_level(logging.ERROR):
        checker._check_redis()
    assert not checker.health.redis_ok
    line = caplog.records[-1].getMessage()
    assert "unreachable" not in line and "credentials" in line and "REDIS_URL" in line
