"""`replay` and `dlq stats` when Kafka fails part-way (consume, poll, commit) and when the DLQ was
deleted and recreated behind the replay group's position: one line saying what failed and what to
do, the counts so far, exit 1, never a traceback, never a position past an unpublished record."""

from __future__ import annotations

import time
from typing import Any

import pytest
from click.testing import CliRunner
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from consumer.cli import main
from tests.unit.sre.fake_dlq import Cluster, FakeDlqConsumer, FakeProducer, install, replay_env
from tests.unit.sre.test_replay_run import dlq_records


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    replay_env(monkeypatch)


def broker_says(code: int) -> KafkaException:
    return KafkaException(KafkaError(code))


def last_error_line(result: Any) -> str:
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("pisano-sms: error: "), result.stderr
    return lines[-1]


def assert_clean_failure(result: Any) -> None:
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exc_info  # not a KafkaException: no traceback
    assert "Traceback" not in result.output


def test_consume_failing_part_way_ends_with_one_line_the_counts_and_exit_1(monkeypatch: pytest.MonkeyPatch) -> None:
    # Found in review: a KafkaException out of consume() (broker gone, topic deleted) was a traceback.
    import consumer.sre.replay as replay

    def broker_gone(offset: int) -> None:
        if offset == 4:
            raise broker_says(KafkaError._TRANSPORT)

    cluster = Cluster(dlq_records(6), on_read=broker_gone)
    install(monkeypatch, cluster)
    monkeypatch.setattr(replay, "CHECKPOINT_INTERVAL_S", 0.0)  # a checkpoint after each record
    result = CliRunner().invoke(main, ["replay", "--group", "g"])
    assert_clean_failure(result)
    assert "replayed" in result.stdout and "read" in result.stdout  # the summary so far
    line = last_error_line(result)
    assert "KAFKA_BOOTSTRAP_SERVERS" in line and "resume" in line and "Local: Broker transport failure" in line
    # Never past a record that was not acknowledged: 4 read, 4 published, committed at most 4.
    assert cluster.committed["g"] <= len(cluster.published) == 4


class RefusesCommits(FakeDlqConsumer):
    def commit(self, offsets: list[TopicPartition], asynchronous: bool = True) -> None:
        raise broker_says(KafkaError.GROUP_AUTHORIZATION_FAILED)


def test_a_commit_refused_says_what_to_check_with_the_counts_and_exit_1(monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = Cluster(dlq_records(3))
    install(monkeypatch, cluster)
    import consumer.sre.replay as replay

    monkeypatch.setattr(replay, "make_consumer", lambda settings, **extra: RefusesCommits(cluster, extra["group.id"]))
    result = CliRunner().invoke(main, ["replay", "--group", "g"])
    assert_clean_failure(result)
    assert "replayed" in result.stdout  # the summary so far
    line = last_error_line(result)
    assert "group g" in line and "ACL" in line and "Group authorization failed" in line
    assert cluster.committed == {}


class FatalPoll(FakeProducer):
    """The idempotent producer's fatal error surfaces from poll()."""

    def poll(self, timeout: float = 0) -> int:
        if self.pending:
            raise broker_says(KafkaError._FATAL)
        return 0


def test_a_producer_poll_failing_commits_nothing_unacknowledged_and_exits_1(monkeypatch: pytest.MonkeyPatch) -> None:
    import consumer.sre.replay as replay

    cluster = Cluster(dlq_records(3))
    install(monkeypatch, cluster)
    monkeypatch.setattr(replay, "make_producer", lambda settings, **extra: FatalPoll(cluster))
    result = CliRunner().invoke(main, ["replay", "--group", "g"])
    assert_clean_failure(result)
    assert "read" in result.stdout
    assert "resume" in last_error_line(result)
    assert cluster.committed == {}


def test_dlq_stats_consume_failing_is_one_line_and_exit_1(monkeypatch: pytest.MonkeyPatch) -> None:
    import consumer.sre.dlq_stats as dlq_stats

    def broker_gone(offset: int) -> None:
        if offset == 2:
            raise broker_says(KafkaError._TRANSPORT)

    cluster = Cluster(dlq_records(4), on_read=broker_gone)
    monkeypatch.setattr(dlq_stats, "make_consumer", lambda settings, **extra: cluster.consumer(extra["group.id"]))
    result = CliRunner().invoke(main, ["dlq", "stats"])
    assert_clean_failure(result)
    line = last_error_line(result)
    assert "KAFKA_BOOTSTRAP_SERVERS" in line and "Local: Broker transport failure" in line
    assert result.stdout == ""  # no partial table that could pass for the whole topic


def test_a_position_past_the_end_of_a_recreated_dlq_reads_it_from_the_beginning(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Found in review: the SRE purged the DLQ (deleted, recreated); the group's position (5) was
    # past the new topic's end (3), so the run started at the end and its 3 records were skipped
    # for good: the next run started at 5.
    cluster = Cluster(dlq_records(3), committed={"g": 5})
    install(monkeypatch, cluster)
    result = CliRunner().invoke(main, ["replay", "--group", "g"])
    assert result.exit_code == 0, result.output
    assert len(cluster.published) == 3 and cluster.committed["g"] == 3
    warning = next(line for line in result.output.splitlines() if "warning" in line and "recreated" in line)
    assert "partition 0" in warning and "beginning" in warning


def test_a_position_past_the_end_of_an_empty_recreated_dlq_is_moved_to_its_beginning(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Recreated and still empty: the next run must not find records 0..4 of the new topic behind it.
    cluster = Cluster([], committed={"g": 5})
    install(monkeypatch, cluster)
    dry = CliRunner().invoke(main, ["replay", "--group", "g", "--dry-run"])
    assert dry.exit_code == 0 and "recreated" in dry.output and cluster.committed["g"] == 5  # dry: nothing moved
    result = CliRunner().invoke(main, ["replay", "--group", "g"])
    assert result.exit_code == 0, result.output
    assert cluster.committed["g"] == 0
    cluster.records.extend(dlq_records(7))
    CliRunner().invoke(main, ["replay", "--group", "g"])
    assert len(cluster.published) == 7


class GoesSilent(FakeDlqConsumer):
    """The broker gone mid-read as librdkafka shows it: consume() raises nothing, returns nothing."""

    def consume(self, count: int, timeout: float = 0) -> list[Any]:
        return super().consume(count, timeout) if self.position < 2 else []


def test_a_read_that_stalls_part_way_prints_the_counts_and_exits_1(monkeypatch: pytest.MonkeyPatch) -> None:
    # The broker gone usually raises nothing: the read stalls until IDLE_TIMEOUT_S. That was exit 2
    # (as for a bad option) and no counts, although records were re-published.
    import consumer.sre.dlq_read as dlq_read
    import consumer.sre.replay as replay

    cluster = Cluster(dlq_records(4))
    install(monkeypatch, cluster)
    monkeypatch.setattr(dlq_read, "IDLE_TIMEOUT_S", 0.2)
    monkeypatch.setattr(replay, "make_consumer", lambda settings, **extra: GoesSilent(cluster, extra["group.id"]))
    result = CliRunner().invoke(main, ["replay", "--group", "g"])
    assert_clean_failure(result)
    assert "replayed" in result.stdout
    assert "check that Kafka is up" in last_error_line(result)
    assert cluster.committed == {}  # the 2 re-published were never acknowledged: nothing committed past them


def test_dlq_stats_read_that_stalls_part_way_exits_1(monkeypatch: pytest.MonkeyPatch) -> None:
    import consumer.sre.dlq_read as dlq_read
    import consumer.sre.dlq_stats as dlq_stats

    cluster = Cluster(dlq_records(4))
    monkeypatch.setattr(dlq_read, "IDLE_TIMEOUT_S", 0.2)
    monkeypatch.setattr(dlq_stats, "make_consumer", lambda settings, **extra: GoesSilent(cluster, extra["group.id"]))
    result = CliRunner().invoke(main, ["dlq", "stats"])
    assert_clean_failure(result)
    assert "check that Kafka is up" in last_error_line(result) and "2 of 4" in last_error_line(result)
    assert result.stdout == ""


class SlowAcks(FakeProducer):
    """A broker slow to acknowledge: each flush (a checkpoint) takes longer than IDLE_TIMEOUT_S."""

    def flush(self, timeout: float = 0) -> int:
        time.sleep(0.3)
        return super().flush(timeout)


class FetchInFlight(FakeDlqConsumer):
    """The next fetch not back yet when the replay asks again: one empty consume() after each batch."""

    def __init__(self, cluster: Cluster, group: str) -> None:
        super().__init__(cluster, group)
        self.empty_next = False

    def consume(self, count: int, timeout: float = 0) -> list[Any]:
        if self.empty_next:
            self.empty_next = False
            return []
        self.empty_next = True
        return super().consume(count, timeout)


def test_a_slow_checkpoint_is_not_taken_for_a_read_that_stalled(monkeypatch: pytest.MonkeyPatch) -> None:
    # Found in review: the idle time was counted from the last batch received, so the time the
    # replay spent with it (checkpoints waiting for a slow broker's acknowledgements, up to
    # ACK_TIMEOUT_S) counted as the broker's silence: one empty consume() after a long checkpoint
    # ended a healthy run with exit 1 "check that Kafka is up".
    import consumer.sre.dlq_read as dlq_read
    import consumer.sre.replay as replay

    cluster = Cluster(dlq_records(6))
    install(monkeypatch, cluster)
    monkeypatch.setattr(dlq_read, "IDLE_TIMEOUT_S", 0.2)
    monkeypatch.setattr(replay, "CHECKPOINT_INTERVAL_S", 0.0)
    monkeypatch.setattr(replay, "make_consumer", lambda settings, **extra: FetchInFlight(cluster, extra["group.id"]))
    monkeypatch.setattr(replay, "make_producer", lambda settings, **extra: SlowAcks(cluster))
    result = CliRunner().invoke(main, ["replay", "--group", "g"])
    assert result.exit_code == 0, result.output
    assert len(cluster.published) == 6 and cluster.committed["g"] == 6
