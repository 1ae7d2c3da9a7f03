"""The health check on a Redis Cluster with one master that does not answer (review of the marks).

Before, the probe pinged the one node the cluster client picks for a keyless command (a random
one), so with one master frozen the verdict flipped between ready and not ready from one round to
the next, and when the frozen node was picked the line said "nothing is sent or committed until it
answers" while the other masters still served their slots. Now every master is pinged: the verdict
is "not ready" for as long as one does not answer (a batch's claim needs every master its ids'
buckets are on, README "Health"), and the line names that master, says that the others' keys still
serve and what to do. Once its replica took over, ready again.

The master is frozen with SIGSTOP, as tests/integration/test_claim_outage.py does: it takes the
commands in but never answers."""

from __future__ import annotations

import itertools
import logging
import time

import pytest

from consumer.operations.health import Health, HealthProbe
from consumer.operations.metrics import Metrics
from consumer.state.redis import connect
from tests.conftest import ClusterStack, close_redis, localstack


class _Kafka:
    def list_topics(self, topic: str, timeout: float) -> None:
        return None


def test_a_frozen_master_is_named_and_the_replica_is_not_ready_until_its_replica_takes_over(
        redis_cluster: ClusterStack, cluster_client: object, caplog: pytest.LogCaptureFixture) -> None:
    if not redis_cluster.local:
        pytest.skip("freezes a node of the suite's own cluster")
    client = connect(redis_cluster.url, cluster=True)
    health = Health()
    probe = HealthProbe(health, Metrics(), redis_client=client, producer=_Kafka(), dlq_topic="dlq", destinations=[])
    victim = int(client.get_node_from_key("x").port)
    others = sorted(n.name for n in client.get_primaries() if int(n.port) != victim)
    frozen_name = f"{client.get_node_from_key('x').host}:{victim}"
    probe._check_redis()
    assert health.redis_ok
    localstack.freeze_cluster_node(victim)
    try:
        rounds: list[tuple[bool, bool]] = []  # (ready, the frozen node among the masters pinged)
        with caplog.at_level(logging.INFO, logger="consumer.operations.health"):
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not (rounds and rounds[-1][0]):
                pinged = frozen_name in {n.name for n in client.get_primaries()}
                started = time.monotonic()
                probe._check_redis()
                rounds.append((health.redis_ok, pinged))
                assert time.monotonic() - started < 5  # one socket timeout, not one per retry
        # Before: the one node the client picked for a keyless PING answered, and the replica
        # was ready in the first round. Now not ready while the frozen master is one of the
        # masters; ready again once its replica took over (the cluster's 2 s node timeout here),
        # the failed ping having had the client read the slot map again.
        assert rounds[0] == (False, True), rounds
        assert all(not ready for ready, pinged in rounds if pinged), rounds
        assert rounds[-1][0], f"not ready 30 s after the freeze: {rounds}"
        errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        # Said once per change, not once a round. Seen here: the others serve (first line); the
        # cluster marked the master failed and refuses every key until the election ends
        # (CLUSTERDOWN); the replica took over, the others serve again, and the client's slot map,
        # not read again yet, still names the frozen master (the next round reads it).
        assert len(errors) <= 3 and all(a != b for a, b in itertools.pairwise(errors)), errors
        assert all("CLUSTERDOWN" in e or e == errors[0] for e in errors[1:]), errors
        line = errors[0]
        assert frozen_name in line and "nothing is sent or committed" not in line
        assert "the other 2 masters answer" in line and all(name in line for name in others)
        assert "CLUSTER NODES" in line and "not ready meanwhile" in line  # what to do, what it means
        assert any("every Redis Cluster master answers again" in r.getMessage() for r in caplog.records)
    finally:
        close_redis(client)
        localstack.kill_cluster_node(victim)  # frozen or killed already: SIGKILL either way
        localstack.restart_cluster_node(victim)  # waits until every master has a replica again
