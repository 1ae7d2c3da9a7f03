"""`replay --to-topic` (found by review, sre): it took any existing topic, so an SRE could replay
dead-letters (raw events, phones in clear) into another team's topic, where no pisano-sms consumer
reads them, and move the group's position past them. Now only a topic the fleet consumes
(KAFKA_TOPICS, patterns included) unless --to-unconsumed-topic; the DLQ and the receipts never."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from consumer.cli import main
from tests.unit.sre.fake_dlq import DLQ, Cluster, install, replay_env
from tests.unit.sre.test_replay_run import dlq_records


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    replay_env(monkeypatch)




def test_to_topic_outside_the_fleets_topics_is_refused_with_what_to_do(monkeypatch: pytest.MonkeyPatch,
                                                                        env: None) -> None:
    cluster = Cluster(dlq_records(2), topics={DLQ, "transactions", "billing.other-team"})
    install(monkeypatch, cluster)
    result = CliRunner().invoke(main, ["replay", "--to-topic", "billing.other-team"])
    assert result.exit_code == 2, result.output
    assert "KAFKA_TOPICS" in result.output and "--to-unconsumed-topic" in result.output
    assert cluster.published == [] and cluster.committed == {}
    forced = CliRunner().invoke(main, ["replay", "--to-topic", "billing.other-team", "--to-unconsumed-topic"])
    assert forced.exit_code == 0, forced.output
    assert [topic for topic, _, _, _ in cluster.published] == ["billing.other-team"] * 2


def test_to_topic_matching_a_pattern_of_the_fleet_is_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    replay_env(monkeypatch, topics="^transactions-v[0-9]+$")
    cluster = Cluster(dlq_records(1), topics={DLQ, "transactions-v2"})
    install(monkeypatch, cluster)
    result = CliRunner().invoke(main, ["replay", "--to-topic", "transactions-v2"])
    assert result.exit_code == 0, result.output
    assert [topic for topic, _, _, _ in cluster.published] == ["transactions-v2"]


def test_the_dlq_is_refused_as_a_target_even_with_the_override(monkeypatch: pytest.MonkeyPatch,
                                                                env: None) -> None:
    cluster = Cluster(dlq_records(1))
    install(monkeypatch, cluster)
    result = CliRunner().invoke(main, ["replay", "--to-topic", DLQ, "--to-unconsumed-topic"])
    assert result.exit_code == 2, result.output
    assert cluster.published == []


def test_without_kafka_topics_to_topic_needs_the_override(monkeypatch: pytest.MonkeyPatch, env: None) -> None:
    monkeypatch.setenv("KAFKA_TOPICS", "")
    cluster = Cluster(dlq_records(1))
    install(monkeypatch, cluster)
    result = CliRunner().invoke(main, ["replay", "--to-topic", "transactions"])
    assert result.exit_code == 2, result.output
    assert "--to-unconsumed-topic" in result.output
    forced = CliRunner().invoke(main, ["replay", "--to-topic", "transactions", "--to-unconsumed-topic"])
    assert forced.exit_code == 0, forced.output
