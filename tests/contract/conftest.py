"""Contract tests: each runs against the in-memory implementation, a single Redis and a Redis Cluster.

The memory variants need nothing; the Redis variants use the suite's real local Redis (db 0,
flushed per test), the cluster variants the local stack's Redis Cluster (three masters, three
replicas, every master flushed per test; started once, on the first cluster test). A fake that
passes here behaves like Redis for the sender's unit tests.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from consumer.config.windows import parse_rate_limits
from consumer.state.circuit import CircuitStore, RedisCircuitStore
from consumer.state.cooldown import CooldownStore, MemoryCooldown, RedisCooldown
from consumer.state.dead_letters import MARKS_PAGE, MAX_PARTITION_MARKS, DeadLetterMarks, RedisDeadLetterMarks
from consumer.state.dedup import DedupStore, RedisDedup
from consumer.state.limiter import RedisLimiter
from consumer.state.memory import (
    MemoryCircuitStore,
    MemoryCircuitStores,
    MemoryDeadLetterMarks,
    MemoryDedup,
    MemoryLimiter,
    MemoryReceiptMarks,
)
from consumer.state.receipt_marks import ReceiptMarks, RedisReceiptMarks
from consumer.state.redis import Keys
from tests.conftest import close_redis, flushed_client, localstack

IMPLEMENTATIONS = ["memory", "redis", "cluster"]


def _connect(request: pytest.FixtureRequest) -> Any:
    """A new client of the Redis of this variant (single or cluster), flushed once per test."""
    return flushed_client(request, request.param)


@pytest.fixture(params=IMPLEMENTATIONS)
def make_dedup(request: pytest.FixtureRequest) -> Callable[..., list[DedupStore]]:
    """`make_dedup(replicas, lease_ms=...)`: that many processes' views of one store."""

    def build(replicas: int = 1, lease_ms: int = 60_000, horizon_s: int = 3600) -> list[Any]:
        if request.param == "memory":
            first = MemoryDedup(lease_ms=lease_ms, horizon_s=horizon_s)
            return [first, *(first.replica() for _ in range(replicas - 1))]
        return [RedisDedup(_connect(request), Keys("t"), lease_ms=lease_ms, horizon_s=horizon_s)
                for _ in range(replicas)]

    return build


@pytest.fixture(params=IMPLEMENTATIONS)
def make_cooldown(request: pytest.FixtureRequest) -> Callable[..., list[CooldownStore]]:
    """`make_cooldown(replicas, lease_ms=..., ttl_ms=...)`: that many processes' views of one store."""

    def build(replicas: int = 1, lease_ms: int = 60_000, ttl_ms: int = 3_600_000) -> list[Any]:
        if request.param == "memory":
            first = MemoryCooldown(lease_ms=lease_ms, ttl_ms=ttl_ms)
            return [first, *(first.replica() for _ in range(replicas - 1))]
        return [RedisCooldown(_connect(request), lease_ms=lease_ms, ttl_ms=ttl_ms) for _ in range(replicas)]

    return build


class _CountingList(list[int]):
    """A log of slots that counts how many entries are read from it (by index or by iterating)."""

    reads = 0

    def __getitem__(self, index: Any) -> Any:
        item = super().__getitem__(index)
        self.reads += len(item) if isinstance(index, slice) else 1
        return item

    def __iter__(self) -> Iterator[int]:
        for item in super().__iter__():
            self.reads += 1
            yield item


class LimiterFleet:
    """`fleet(windows, ...)`: one more replica's limiter on one shared store; and the losses that
    store can suffer (`flush`, `snapshot`/`restore`), the same on Redis and in memory."""

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self.request = request
        self.memory: dict[str, MemoryLimiter] = {}
        self.redis: Any = None
        self.clients: list[Any] = []
        self.replicas: list[Any] = []

    def __call__(self, windows: str, margin_ms: int = 0, horizon_ms: int = 60_000, grace_ms: int = 0) -> Any:
        if self.request.param == "memory":
            if windows not in self.memory:
                # Replicas configured with other windows (a rolling upgrade) share the one store.
                shared = next(iter(self.memory.values())).state if self.memory else None
                self.memory[windows] = MemoryLimiter(parse_rate_limits(windows), margin_ms=margin_ms,
                                                     horizon_ms=horizon_ms, grace_ms=grace_ms, shared=shared)
                self.replicas.append(self.memory[windows])
            else:
                self.replicas.append(self.memory[windows].replica())
            return self.replicas[-1]
        if self.redis is None:
            self.redis = _connect(self.request)
            self.clients.append(self.redis)
        self.clients.append(_connect(self.request))  # each replica its own connections
        self.replicas.append(RedisLimiter(self.clients[-1], Keys("t"), "tok", parse_rate_limits(windows),
                                          margin_ms=margin_ms, horizon_ms=horizon_ms, grace_ms=grace_ms))
        return self.replicas[-1]

    def close(self) -> None:
        for client in self.clients:
            close_redis(client)

    def _keys(self) -> list[str]:
        return list(Keys("t").limiter("tok"))

    def flush(self) -> None:
        """Redis restarted without its data (or FLUSHALL, or the keys deleted)."""
        if self.request.param == "memory":
            for limiter in self.memory.values():
                limiter.state.flush()
        else:
            self.redis.delete(*self._keys())

    def flush_log(self) -> None:
        """Only the log of slots deleted (by hand, or a restore that missed it): the meta hash stays."""
        if self.request.param == "memory":
            for limiter in self.memory.values():
                limiter.state.data.slots = []
        else:
            self.redis.delete(self._keys()[0])

    def fill_log(self, slots: list[int]) -> None:
        """Slots (ms, the store's clock) appended to the log, as a fleet's reservations would be."""
        if self.request.param == "memory":
            next(iter(self.memory.values())).state.data.slots.extend(slots)
            return
        for first in range(0, len(slots), 10_000):
            self.redis.rpush(self._keys()[0], *slots[first:first + 10_000])

    def log_reads(self) -> Callable[[], int]:
        """From now on, count the log entries the store reads: LINDEX calls on Redis (an LRANGE
        counts the whole log), item reads of the log in memory. Returns the reader of the count."""
        if self.request.param == "memory":
            state = next(iter(self.memory.values())).state
            state.data.slots = counting = _CountingList(state.data.slots)
            return lambda: counting.reads
        key = self._keys()[0]
        length = self.redis.llen(key)
        node = {} if self.request.param == "redis" else {"target_nodes": self.redis.get_node_from_key(key)}

        def calls() -> tuple[int, int]:
            stats = self.redis.info("commandstats", **node)
            return tuple(stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in ("lindex", "lrange"))

        before = calls()
        return lambda: (lambda now: now[0] - before[0] + (now[1] - before[1]) * length)(calls())

    def restore_log(self, snapshot: Any) -> None:
        """Only the log of slots put back from an older snapshot: the meta hash stays current."""
        if self.request.param == "memory":
            for windows, data in snapshot.items():
                self.memory[windows].state.data.slots = list(data.slots)
            return
        log_key = self._keys()[0]
        if snapshot[log_key] is None:
            self.redis.delete(log_key)
        else:
            self.redis.restore(log_key, 0, snapshot[log_key], replace=True)

    def snapshot(self) -> Any:
        """What an RDB file taken now holds."""
        if self.request.param == "memory":
            return {w: limiter.state.snapshot() for w, limiter in self.memory.items()}
        return {key: self.redis.dump(key) for key in self._keys()}

    def restart(self) -> None:
        """Another server serves the same data: Redis restarted with its append-only file, or a
        failover to a replica that had every write. Needs the suite's own local stack."""
        if self.request.param == "memory":
            for limiter in self.memory.values():
                limiter.state.restart()
            return
        if self.request.param == "cluster":
            self._failover()
            return
        if not self.request.getfixturevalue("stack").local:
            pytest.skip("restarting Redis needs the suite's own local stack")
        localstack.stop_redis()
        localstack.start_redis()

    def _failover(self) -> None:
        """On a cluster: the replica of the limiter's master takes over (CLUSTER FAILOVER, which
        waits until the replica has every write), as in a planned maintenance."""
        if not self.request.getfixturevalue("redis_cluster").local:
            pytest.skip("a failover needs the suite's own local cluster")
        master = localstack.cluster_master_of(self._keys()[0])
        (replica,) = localstack.cluster_topology()[master][:1]
        localstack.node_command(replica, "CLUSTER FAILOVER")
        deadline = time.monotonic() + 30
        while localstack.cluster_master_of(self._keys()[0]) != replica:
            assert time.monotonic() < deadline, "the replica did not take over"
            time.sleep(0.1)
        localstack.wait_cluster()

    # Every time the limiter's state holds (ms, the store's clock); `*_at` say when a replica last
    # said what the field before them holds.
    _TIMES = ("fence_until", "pause_until", "beat", "last", "keep_at", "reach_at", "horizon_at", "fenced")

    def step_clock(self, delta_ms: int) -> None:
        """Redis's clock steps forward by `delta_ms` (a failover to a node whose clock is ahead, an
        NTP step). Redis's TIME cannot be set, so this is its exact equivalent: everything written
        before the step was written by a clock `delta_ms` behind the one read from now on. Every
        time the store holds moves back by `delta_ms`, and so does each replica's record of its
        previous reply (`_reply`: the script's clock, and the local monotonic time it came back).
        Slots stay comparable across the step: the ones granted before it are in the clock read
        from now on (the true time)."""
        for replica in self.replicas:
            reply = getattr(replica, "_reply", None)
            if reply is not None:
                replica._reply = (reply[0] - delta_ms, *reply[1:])
        if self.request.param == "memory":
            data = next(iter(self.memory.values())).state.data
            data.slots[:] = [slot - delta_ms for slot in data.slots]
            for name in ("fence_until", "pause_until", "beat", "last", "fenced"):
                if getattr(data, name):
                    setattr(data, name, getattr(data, name) - delta_ms)
            for name in ("keep", "reach", "horizon"):
                if getattr(data, name):
                    value, at = getattr(data, name)
                    setattr(data, name, (value, at - delta_ms))
            return
        log_key, meta = self._keys()
        slots = [int(slot) for slot in self.redis.lrange(log_key, 0, -1)]
        if slots:
            self.redis.delete(log_key)
            self.redis.rpush(log_key, *[slot - delta_ms for slot in slots])
        for name, value in zip(self._TIMES, self.redis.hmget(meta, self._TIMES), strict=True):
            if value is not None and int(value):
                self.redis.hset(meta, name, int(value) - delta_ms)

    def restore(self, snapshot: Any) -> None:
        """Redis comes back from that snapshot, in place (same server)."""
        if self.request.param == "memory":
            for windows, data in snapshot.items():
                self.memory[windows].state.restore(data)
            return
        for key, value in snapshot.items():
            if value is None:
                self.redis.delete(key)
            else:
                self.redis.restore(key, 0, value, replace=True)


@pytest.fixture(params=IMPLEMENTATIONS)
def make_limiter(request: pytest.FixtureRequest) -> Iterator[LimiterFleet]:
    fleet = LimiterFleet(request)
    yield fleet
    fleet.close()


@pytest.fixture(params=IMPLEMENTATIONS)
def circuit_store(request: pytest.FixtureRequest) -> CircuitStore:
    if request.param == "memory":
        return MemoryCircuitStore()
    return RedisCircuitStore(_connect(request), Keys("t"), "tok")


@pytest.fixture(params=IMPLEMENTATIONS)
def make_marks(request: pytest.FixtureRequest) -> Callable[..., DeadLetterMarks]:
    shared: dict[str, Any] = {}  # every build's marks in one store, as every replica's are in one Redis

    def build(horizon_s: int = 3600, group: str = "g", dlq_topic: str = "dlq", previous_release: bool = True,
              most: int = MAX_PARTITION_MARKS, page: int = MARKS_PAGE) -> Any:
        """`most`, `page`: a load's bound and page (consumer/state/dead_letters.py `read_sets`); the
        memory twin has no pages, and its bound is its first build's."""
        if request.param == "memory":
            store = shared.setdefault("store", MemoryDeadLetterMarks(horizon_s=horizon_s, most=most))
            return store.scoped(group, dlq_topic)
        client = shared.setdefault("client", _connect(request))
        return RedisDeadLetterMarks(client, Keys("t"), horizon_s=horizon_s, group=group, dlq_topic=dlq_topic,
                                    previous_release=lambda: previous_release, most=most, page=page)

    return build


@pytest.fixture(params=IMPLEMENTATIONS)
def campaign_stores(request: pytest.FixtureRequest) -> Callable[[str], CircuitStore]:
    """A store per campaign of one destination, as `consumer.state.campaigns` uses them."""
    if request.param == "memory":
        return MemoryCircuitStores()
    client = _connect(request)
    return lambda campaign: RedisCircuitStore(client, Keys("t"), "tok", campaign)


@pytest.fixture(params=IMPLEMENTATIONS)
def receipt_marks(request: pytest.FixtureRequest) -> ReceiptMarks:
    if request.param == "memory":
        return MemoryReceiptMarks()
    return RedisReceiptMarks(_connect(request), Keys("t"), horizon_s=3600)


@pytest.fixture(params=IMPLEMENTATIONS)
def make_receipt_marks(request: pytest.FixtureRequest) -> Callable[..., ReceiptMarks]:
    """Receipt marks with a load's bound and page of the test's (`read_sets`)."""
    def build(most: int = MAX_PARTITION_MARKS, page: int = MARKS_PAGE) -> ReceiptMarks:
        if request.param == "memory":
            return MemoryReceiptMarks(most=most)
        return RedisReceiptMarks(_connect(request), Keys("t"), horizon_s=3600, most=most, page=page)

    return build
