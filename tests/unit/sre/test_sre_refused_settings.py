"""`replay` and `dlq stats` when librdkafka refuses to make the client (found by review, sre): a
Kafka setting it cannot use (a CA file missing on the SRE's machine, a property out of range)
ended in a traceback and exit 1, naming nothing to do. Now one line, as `run` and `check` say it
(consumer/ingest/kafka.py `refused_settings`), exit 2: the command did not start."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner
from confluent_kafka import KafkaError, KafkaException

import consumer.sre.dlq_stats as dlq_stats
import consumer.sre.replay as replay
from consumer.cli import main
from tests.unit.sre.fake_dlq import Cluster, install, replay_env
from tests.unit.sre.test_replay_run import dlq_records

REFUSED = KafkaException(KafkaError(KafkaError._INVALID_ARG, "Failed to create consumer: ssl.ca.location failed: "
                                    "error:05880020:x509 certificate routines::BIO lib"))


def _refuse(settings: Any, **extra: Any) -> Any:
    raise REFUSED


@pytest.mark.parametrize("command", [["replay", "--group", "g"], ["replay", "--dry-run"], ["dlq", "stats"]])
def test_client_settings_librdkafka_refuses_are_said_with_what_to_fix(monkeypatch: pytest.MonkeyPatch,
                                                                      command: list[str]) -> None:
    replay_env(monkeypatch)
    cluster = Cluster(dlq_records(2))
    install(monkeypatch, cluster)
    monkeypatch.setattr(replay, "make_consumer", _refuse)
    monkeypatch.setattr(dlq_stats, "make_consumer", _refuse)
    result = CliRunner().invoke(main, command)
    assert result.exit_code == 2, (result.output, repr(result.exception))
    assert "Kafka refused the client's settings" in result.stderr and "ssl.ca.location" in result.stderr
    assert "KAFKA_CONFIG_" in result.stderr and not cluster.published and not cluster.committed


def test_a_producer_librdkafka_refuses_is_said_too(monkeypatch: pytest.MonkeyPatch) -> None:
    replay_env(monkeypatch)
    cluster = Cluster(dlq_records(2))
    install(monkeypatch, cluster)
    monkeypatch.setattr(replay, "make_producer", _refuse)
    result = CliRunner().invoke(main, ["replay", "--group", "g"])
    assert result.exit_code == 2, (result.output, repr(result.exception))
    assert "Kafka refused the client's settings" in result.stderr and not cluster.committed
