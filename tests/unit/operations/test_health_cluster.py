"""The health check on a Redis Cluster (review of the marks): every master is pinged, one that does
not answer is named with what still works and what to do, and the verdict is "not ready" while any
does not answer (README "Health": Redis reachable). The real cluster, a master frozen:
tests/integration/test_health_cluster.py."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pytest
import redis

from consumer.operations.health import Health, HealthProbe
from consumer.operations.metrics import Metrics


@dataclass(frozen=True)
class _Node:
    name: str


class _Cluster(redis.RedisCluster):
    """A cluster client whose masters in `down` time out (made without connecting: no __init__)."""

    def __new__(cls, *args: Any, **kwargs: Any) -> _Cluster:
        return object.__new__(cls)

    def __init__(self, masters: list[str]) -> None:
        self.masters = [_Node(m) for m in masters]
        self.down: set[str] = set()
        self.pinged: list[str] = []
        self.state = "ok"  # CLUSTER INFO's cluster_state

    def get_primaries(self) -> list[_Node]:  # type: ignore[override]
        return list(self.masters)

    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        # Without target_nodes, a keyless PING goes to the one node redis-py picks (at random): here the first.
        node = kwargs.get("target_nodes") or self.masters[0]
        if node.name in self.down:
            raise redis.TimeoutError(f"Timeout reading from {node.name}")
        if args == ("CLUSTER INFO",):
            return {"cluster_state": self.state, "cluster_slots_ok": 16384}
        self.pinged.append(node.name)
        return True

    def __del__(self) -> None:
        pass


class _Kafka:
    def list_topics(self, topic: str, timeout: float) -> None:
        return None


def _probe(cluster: _Cluster) -> tuple[Health, HealthProbe]:
    health = Health()
    return health, HealthProbe(health, Metrics(), redis_client=cluster, producer=_Kafka(), dlq_topic="dlq",
                               destinations=[])


def test_every_master_is_pinged_and_one_not_answering_is_named_with_what_still_serves(
        caplog: pytest.LogCaptureFixture) -> None:
    cluster = _Cluster(["10.0.0.1:6379", "10.0.0.2:6379", "10.0.0.3:6379"])
    health, probe = _probe(cluster)
    probe._check_redis()
    assert health.redis_ok and cluster.pinged == ["10.0.0.1:6379", "10.0.0.2:6379", "10.0.0.3:6379"]
    cluster.down = {"10.0.0.2:6379"}
    with caplog.at_level(logging.INFO, logger="consumer.operations.health"):
        for _ in range(3):
            probe._check_redis()
            assert not health.redis_ok  # every round: a batch's claim needs every master
    [line] = [r.getMessage() for r in caplog.records]  # once, not once a round
    assert "master 10.0.0.2:6379" in line and "unreachable" in line
    assert "the other 2 masters answer (10.0.0.1:6379, 10.0.0.3:6379)" in line and "still serve" in line
    assert "CLUSTER NODES" in line and "nothing is sent or committed" not in line
    caplog.clear()
    cluster.masters[1] = _Node("10.0.0.4:6379")  # its replica took over; the client read the slot map again
    with caplog.at_level(logging.INFO, logger="consumer.operations.health"):
        probe._check_redis()
    assert health.redis_ok
    assert [r.getMessage() for r in caplog.records] == ["every Redis Cluster master answers again"]


def test_every_master_not_answering_says_nothing_is_sent(caplog: pytest.LogCaptureFixture) -> None:
    cluster = _Cluster(["10.0.0.1:6379", "10.0.0.2:6379"])
    health, probe = _probe(cluster)
    cluster.down = {"10.0.0.1:6379", "10.0.0.2:6379"}
    with caplog.at_level(logging.ERROR, logger="consumer.operations.health"):
        probe._check_redis()
    assert not health.redis_ok
    [line] = [r.getMessage() for r in caplog.records]
    assert "every Redis Cluster master (10.0.0.1:6379, 10.0.0.2:6379)" in line
    assert "nothing is sent or committed until they answer" in line and "REDIS_URL" in line


def test_a_second_master_not_answering_is_said_too(caplog: pytest.LogCaptureFixture) -> None:
    cluster = _Cluster(["10.0.0.1:6379", "10.0.0.2:6379", "10.0.0.3:6379"])
    health, probe = _probe(cluster)
    cluster.down = {"10.0.0.1:6379"}
    probe._check_redis()
    cluster.down.add("10.0.0.3:6379")
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="consumer.operations.health"):
        probe._check_redis()
    [line] = [r.getMessage() for r in caplog.records]
    assert not health.redis_ok
    assert "masters 10.0.0.1:6379, 10.0.0.3:6379" in line and "the other master answers (10.0.0.2:6379)" in line
    assert "until they answer or their replicas take over" in line


def test_a_cluster_that_marked_the_master_failed_is_said_to_refuse_every_key(caplog: pytest.LogCaptureFixture) -> None:
    """Once the cluster marks the silent master failed (cluster-node-timeout), a cluster requiring
    full coverage (Redis's default) refuses every key until its replica takes over: the other
    masters answer PING, but no longer serve their keys. Said when it happens."""
    cluster = _Cluster(["10.0.0.1:6379", "10.0.0.2:6379", "10.0.0.3:6379"])
    health, probe = _probe(cluster)
    cluster.down = {"10.0.0.2:6379"}
    probe._check_redis()
    cluster.state = "fail"
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="consumer.operations.health"):
        probe._check_redis()
        probe._check_redis()
    [line] = [r.getMessage() for r in caplog.records]
    assert not health.redis_ok and "master 10.0.0.2:6379" in line
    assert "refuses every key (CLUSTERDOWN" in line and "nothing is sent or committed until it answers" in line
    assert "still serve" not in line and "CLUSTER NODES" in line
