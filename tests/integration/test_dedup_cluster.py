"""Deduplication on a real three-master Redis Cluster (issue 12, points 1 and 2): the marks spread
over the masters, one round trip per master, scripts reloaded, a master away fails closed, 0.2.0's
marks read from their own slot.

The cluster is three `redis-server` processes started for this module (about two seconds).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from consumer.errors import StateStoreError
from consumer.state.dedup import ClaimRequest, ClaimStatus, RedisDedup, Settlement
from consumer.state.redis import Keys, connect
from tests.support.redis_trips import count_round_trips

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")


def free_port_pair() -> int:
    """A port p with p + 10000 (its cluster bus) free as well."""
    for _ in range(100):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port + 10_000 < 65_536:
            try:
                with socket.socket() as bus:
                    bus.bind(("127.0.0.1", port + 10_000))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port pair")


class MiniCluster:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.ports = [free_port_pair() for _ in range(3)]
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    def start(self) -> None:
        for port in self.ports:
            self.processes[port] = subprocess.Popen(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                 "--cluster-config-file", f"nodes-{port}.conf", "--dir", str(self.tmp), "--save", "",
                 "--appendonly", "no", "--maxmemory-policy", "noeviction"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for port in self.ports:
            self._wait(lambda p=port: redis.Redis(port=p).ping())
        subprocess.run(["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
                        "--cluster-yes"], check=True, capture_output=True, timeout=30)
        self._wait(lambda: all(redis.Redis(port=p).cluster("info")["cluster_state"] == "ok" for p in self.ports))

    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def stop(self, port: int | None = None) -> None:
        for p in [port] if port else list(self.processes):
            self.processes[p].terminate()
            self.processes[p].wait(10)

    @staticmethod
    def _wait(ready: Any) -> None:
        deadline = time.monotonic() + 20
        while True:
            try:
                if ready():
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the cluster did not come up")
            time.sleep(0.1)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MiniCluster]:
    mini = MiniCluster(tmp_path_factory.mktemp("cluster"))
    try:
        mini.start()
        yield mini
    finally:
        mini.stop()


def make(cluster: MiniCluster, prefix: str, lease_ms: int = 60_000) -> RedisDedup:
    return RedisDedup(connect(cluster.url(), cluster=True), Keys(prefix), lease_ms=lease_ms, horizon_s=3600)


def per_master(cluster: MiniCluster, prefix: str) -> dict[int, tuple[int, int]]:
    """(keys, marks) of the prefix's slice hashes on each master."""
    out = {}
    for port in cluster.ports:
        node = redis.Redis(port=port)
        keys = list(node.scan_iter(match=f"{{{prefix}:d:*", count=1000))
        out[port] = (len(keys), sum(node.hlen(k) - 1 for k in keys))  # less the field '#' of each
    return out


def test_marks_spread_over_the_three_masters_none_above_forty_percent(cluster: MiniCluster) -> None:
    dedup = make(cluster, "spread")
    names = [f"evt-{n}" for n in range(9000)]
    for first in range(0, len(names), 3000):
        tag = dedup.new_tag()
        assert dedup.claim(tag, [ClaimRequest(n) for n in names[first:first + 3000]]) == [ClaimStatus.CLAIMED] * 3000
        dedup.settle(Settlement.DELIVERED, tag, names[first:first + 3000])
    spread = per_master(cluster, "spread")
    marks = sum(m for _, m in spread.values())
    assert marks == len(names)
    assert all(m / marks <= 0.40 and k > 0 for k, m in spread.values()), spread
    assert [s.value for s in make(cluster, "spread").claim("x|y", [ClaimRequest(n) for n in names[:5]])] == ["D"] * 5


def test_a_batch_costs_one_round_trip_per_master(cluster: MiniCluster) -> None:
    dedup = make(cluster, "trips")
    dedup.claim(dedup.new_tag(), [ClaimRequest("warm-up")])  # layout read, connections open
    for port in cluster.ports:  # a connection to every master, so none is opened while counting
        dedup.client.get_redis_connection(dedup.client.get_node("127.0.0.1", port)).ping()
    tag = dedup.new_tag()
    names = [f"e{i}" for i in range(2000)]
    with count_round_trips() as trips:
        dedup.claim(tag, [ClaimRequest(n) for n in names])
        dedup.settle(Settlement.DELIVERED, tag, names)
    assert trips.operations == 2 * 3, trips  # claim and settle: one pipeline packet per master


def test_a_master_without_the_scripts_gets_them_again(cluster: MiniCluster) -> None:
    dedup = make(cluster, "noscript")
    dedup.claim(dedup.new_tag(), [ClaimRequest("e0")])
    redis.Redis(port=cluster.ports[1]).script_flush()  # restarted, or a replica promoted
    names = [f"e{i}" for i in range(300)]
    assert dedup.claim(dedup.new_tag(), [ClaimRequest(n) for n in names]).count(ClaimStatus.CLAIMED) == 299


def test_0_2_0_marks_are_read_from_their_own_slot(cluster: MiniCluster) -> None:
    client = connect(cluster.url(), cluster=True)
    client.set(Keys("legacy").event("old"), "d", px=60_000)
    client.set(Keys("legacy").event("lost"), "u|0ld|0001", px=60_000)
    dedup = make(cluster, "legacy")
    found = dedup.claim(dedup.new_tag(), [ClaimRequest("old"), ClaimRequest("lost"), ClaimRequest("new")])
    assert "".join(s.value for s in found) == "DUC" and found.attempts == ["", "0ld|0001", ""]
    assert dedup.state("old") == "d"


def test_a_master_away_fails_the_whole_claim_closed(cluster: MiniCluster) -> None:
    # Last in this module: it stops a master. The other masters' scripts ran; the caller gets
    # StateStoreError, so nothing is sent, and a retry under the same tag finds its own claims.
    dedup = make(cluster, "away")
    names = [f"e{i}" for i in range(300)]
    dedup.claim(dedup.new_tag(), [ClaimRequest("warm-up")])
    cluster.stop(cluster.ports[2])
    tag = dedup.new_tag()
    with pytest.raises(StateStoreError):
        dedup.claim(tag, [ClaimRequest(n) for n in names])
