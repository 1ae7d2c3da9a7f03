"""A per-partition error in `committed()`'s answer (found by review, sre): confluent_kafka hands back
such a partition with `error` set and offset -1001, the offset of a partition never committed, and
`replay` read it so: from the beginning of the DLQ, re-publishing what earlier runs had (the
consumers' dedup drops the delivered ones, not those that failed again). Now the run stops, exit 2,
nothing read or published."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner
from confluent_kafka import KafkaError, TopicPartition

from consumer.cli import main
from tests.unit.sre.fake_dlq import Cluster, FakeDlqConsumer, install, replay_env
from tests.unit.sre.test_replay_run import dlq_records


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    replay_env(monkeypatch)




class _CommittedError(FakeDlqConsumer):
    def committed(self, tps: list[TopicPartition], timeout: float = 0) -> list[Any]:
        # What confluent_kafka hands back for a partition the coordinator could not answer for.
        return [SimpleNamespace(topic=tp.topic, partition=tp.partition, offset=-1001, metadata=None,
                                error=KafkaError(KafkaError.COORDINATOR_LOAD_IN_PROGRESS)) for tp in tps]


def test_a_partition_error_of_committed_stops_the_run_instead_of_starting_over(monkeypatch: pytest.MonkeyPatch,
                                                                                env: None) -> None:
    import consumer.sre.replay as replay

    cluster = Cluster(dlq_records(3), committed={"g": 2})
    install(monkeypatch, cluster)
    monkeypatch.setattr(replay, "make_consumer", lambda settings, **extra: _CommittedError(cluster, extra["group.id"]))
    result = CliRunner().invoke(main, ["replay", "--group", "g"])
    assert cluster.published == [], "started over from the beginning of the DLQ"
    assert result.exit_code == 2, result.output
    assert "partition 0" in result.output and "position" in result.output and "run again" in result.output
    assert cluster.committed == {"g": 2}
