"""`replay` when a target topic is missing part-way (deleted while the replay runs, or a dead-letter's
original topic gone): the counts so far, one line naming the topic and what to do, how to resume,
exit 1, as for the other Kafka failures part-way; never exit 2 with no summary after a commit."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner
from confluent_kafka import KafkaError

from consumer.cli import main
from tests.unit.sre.fake_dlq import DLQ, Cluster, DlqMessage, FakeProducer, install, replay_env
from tests.unit.sre.test_replay_kafka_failures import assert_clean_failure, last_error_line
from tests.unit.sre.test_replay_run import dlq_records


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    replay_env(monkeypatch, "transactions,orders")


def from_topic(message: DlqMessage, topic: str, offset: int) -> DlqMessage:
    headers = [(k, topic.encode() if k == "dlq.original.topic" else v) for k, v in message.headers() or []]
    return DlqMessage(headers, topic=DLQ, partition=0, offset=offset, key=message.key())


def test_an_original_topic_missing_after_a_checkpoint_prints_the_counts_and_exits_1(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Found in review: three records replayed and their position committed, then the fourth's
    # topic (`orders`) did not exist: exit 2 and one line, as for a bad option, with no counts.
    import consumer.sre.replay as replay

    records = dlq_records(3)
    records.append(from_topic(dlq_records(4)[3], "orders", 3))
    cluster = Cluster(records)  # `orders` is not among its topics
    install(monkeypatch, cluster)
    monkeypatch.setattr(replay, "CHECKPOINT_INTERVAL_S", 0.0)
    result = CliRunner().invoke(main, ["replay", "--group", "g"])
    assert_clean_failure(result)
    assert "replayed" in result.stdout and "positions up to the last checkpoint committed for group g" in result.stdout
    line = last_error_line(result)
    assert "topic orders does not exist" in line and "create it" in line and "run again" in line
    assert "after 4 record(s) read" in line
    assert len(cluster.published) == 3 and cluster.committed["g"] == 3  # resumes at the record not replayed


def test_an_original_topic_missing_before_anything_was_committed_is_still_exit_2(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The run changed nothing: a missing topic at the start, as README's exit statuses say.
    cluster = Cluster([from_topic(dlq_records(1)[0], "orders", 0)])
    install(monkeypatch, cluster)
    result = CliRunner().invoke(main, ["replay", "--group", "g"])
    assert result.exit_code == 2, result.output
    assert "topic orders does not exist" in result.output and result.stdout == ""
    assert cluster.committed == {} and cluster.published == []


class TopicGone(FakeProducer):
    """Deleted after replay checked it: librdkafka fails the records once its metadata says so."""

    def __init__(self, cluster: Cluster, after: int, code: int = KafkaError._UNKNOWN_PARTITION) -> None:
        super().__init__(cluster)
        self.after = after
        self.code = code

    def produce(self, topic: str, key: Any = None, value: Any = None, headers: Any = None,
                on_delivery: Any = None) -> None:
        if len(self.cluster.published) + len(self.pending) < self.after:
            super().produce(topic, key, value, headers, on_delivery)
        else:
            self.cluster.topics.discard(topic)
            self.pending.append(lambda: on_delivery(KafkaError(self.code), None))


# What librdkafka reports for the records to a topic deleted under it depends on the moment: its
# metadata's partitions gone (_UNKNOWN_PARTITION), or the partition's handle destroyed with them
# (_DESTROY: seen in a CI run, "Broker handle destroyed for termination"). Found in CI: the second
# was taken for a refusal of unknown cause, and the message did not name the topic.
@pytest.mark.parametrize("code", [KafkaError._UNKNOWN_PARTITION, KafkaError._DESTROY])
def test_a_target_deleted_while_the_replay_runs_is_named_with_what_to_do_and_exit_1(
        monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    import consumer.sre.replay as replay

    cluster = Cluster(dlq_records(5))
    install(monkeypatch, cluster)
    monkeypatch.setattr(replay, "CHECKPOINT_INTERVAL_S", 0.0)
    monkeypatch.setattr(replay, "make_producer", lambda settings, **extra: TopicGone(cluster, after=2, code=code))
    result = CliRunner().invoke(main, ["replay", "--group", "g", "--to-topic", "transactions"])
    assert_clean_failure(result)
    assert "replayed" in result.stdout
    line = last_error_line(result)
    assert "topic transactions" in line and "no longer exists" in line and "create it" in line
    assert "run again" in line and "resumes" in line
    assert cluster.committed["g"] == 2  # never past the records Kafka did not take


def test_a_dry_run_reaching_a_missing_topic_is_exit_2_and_says_nothing_of_resuming(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Found in review: a dry run that would replay 3 records before `orders` exited 1 saying "run
    # again: it resumes from group g's committed position", though a dry run commits nothing (and
    # publishes nothing): README's exit 2, a topic missing before anything was committed or published.
    import consumer.sre.replay as replay

    records = dlq_records(3)
    records.append(from_topic(dlq_records(4)[3], "orders", 3))
    cluster = Cluster(records)
    install(monkeypatch, cluster)
    monkeypatch.setattr(replay, "CHECKPOINT_INTERVAL_S", 0.0)
    result = CliRunner().invoke(main, ["replay", "--group", "g", "--dry-run"])
    assert result.exit_code == 2, result.output
    assert "topic orders does not exist" in result.output and "resumes" not in result.output
    assert cluster.committed == {} and cluster.published == []
