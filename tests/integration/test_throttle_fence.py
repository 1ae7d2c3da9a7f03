"""The limiter stays exact after its state is lost or rolled back, whoever happens to be busy.

Replicas are RedisLimiters on connections of their own, each with its heartbeat thread, as in a
replica process. Every slot granted to any of them is counted, per window, across the losses:
keys deleted (a restart without data, FLUSHALL), an older snapshot restored, Redis restarted with
its data, a failover that lost the last writes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from consumer.config.windows import parse_rate_limits
from consumer.state.accounts import AccountRecord, account_key
from consumer.state.limiter import LimiterHeartbeat, RedisLimiter
from consumer.state.redis import AccountKey, Keys, connect, token_fingerprint
from tests.conftest import Stack, localstack

WINDOWS = "4/1s,8/3s"
HORIZON_MS, GRACE_MS = 500, 1000
HOLD_MS = HORIZON_MS + 3000  # horizon + longest period (no margin)


@pytest.fixture
def replica(stack: Stack, redis_client) -> Iterator[Callable[[], RedisLimiter]]:  # type: ignore[no-untyped-def]
    """`replica()`: one more replica's limiter, with connections of its own (closed at the end)."""
    clients: list[Any] = []

    def build() -> RedisLimiter:
        clients.append(connect(stack.redis_url))
        return RedisLimiter(clients[-1], Keys("fence"), "tok", parse_rate_limits(WINDOWS), margin_ms=0,
                            horizon_ms=HORIZON_MS, grace_ms=GRACE_MS)

    yield build
    for client in clients:
        client.close()


def _over_limit(slots: list[int]) -> list[str]:
    ordered = sorted(slots)
    return [f"{w}: slots {ordered[j - w.limit]} .. {ordered[j]}"
            for w in parse_rate_limits(WINDOWS)
            for j in range(w.limit, len(ordered)) if ordered[j] - ordered[j - w.limit] < w.period_ms]


def _take(limiter: RedisLimiter, count: int, slots: list[int], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    taken = 0
    while taken < count:
        assert time.monotonic() < deadline, f"{taken} of {count} slots in {timeout_s}s"
        grant = limiter.acquire()
        if grant.granted:
            slots.append(grant.slot_ms)
            taken += 1
        else:
            time.sleep(min(max(grant.wait_s, 0.01), 0.1))


class Busy:
    """A replica sending back to back in a thread until stopped."""

    def __init__(self, limiter: RedisLimiter) -> None:
        self.limiter = limiter
        self.slots: list[int] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            grant = self.limiter.acquire()
            if grant.granted:
                self.slots.append(grant.slot_ms)
            self.stop.wait(min(max(grant.wait_s, 0.005), 0.1))


def _dump(client: Any) -> dict[str, Any]:
    return {key: client.dump(key) for key in Keys("fence").limiter("tok")}


def _restore(client: Any, snapshot: dict[str, Any]) -> None:
    for key, value in snapshot.items():
        if value is None:
            client.delete(key)
        else:
            client.restore(key, 0, value, replace=True)


@pytest.mark.timeout(90)
def test_two_busy_replicas_and_an_idle_one_stay_inside_every_window_through_losses(
        replica, redis_client) -> None:  # type: ignore[no-untyped-def]
    idle_limiter = replica()
    busy = [Busy(replica()), Busy(replica())]
    heartbeat = LimiterHeartbeat([idle_limiter, *(b.limiter for b in busy)], interval_s=0.2)
    idle: list[int] = []
    _take(idle_limiter, 1, idle)  # first use: waits out the grace
    heartbeat.start()
    try:
        for b in busy:
            b.thread.start()
        time.sleep(2.0)
        _take(idle_limiter, 2, idle)  # the idle replica's last requests for a while
        redis_client.delete(*Keys("fence").limiter("tok"))  # lost: a restart without data, FLUSHALL
        time.sleep(HOLD_MS / 1000 + 2.0)
        snapshot = _dump(redis_client)  # the last RDB file
        time.sleep(1.5)  # older than the grace
        _take(idle_limiter, 2, idle)
        _restore(redis_client, snapshot)  # an older snapshot restored
        time.sleep(HOLD_MS / 1000 + 2.0)
    finally:
        heartbeat.stop()
        for b in busy:
            b.stop.set()
            b.thread.join()
    slots = idle + busy[0].slots + busy[1].slots
    assert _over_limit(slots) == []
    assert len(slots) >= 20  # the fleet did send between the fences


@pytest.mark.timeout(60)
def test_a_redis_restart_that_kept_the_data_holds_the_fleet_for_the_grace_only(
        local_stack: Stack, replica, redis_client) -> None:  # type: ignore[no-untyped-def]
    rl, slots = replica(), []
    _take(rl, 1, slots)
    localstack.stop_redis()  # graceful: the append-only file holds every write
    localstack.start_redis()
    held = rl.acquire()  # another Redis: the last writes may be missing, until replicas report
    assert held.held and held.wait_s <= GRACE_MS / 1000
    rl.heartbeat()  # nothing this replica was given is missing
    started = time.monotonic()
    _take(rl, 1, slots)
    assert time.monotonic() - started <= GRACE_MS / 1000 + 0.2  # the grace only, no hold


@pytest.mark.timeout(60)
def test_a_failover_that_lost_writes_holds_the_fleet_though_their_replica_is_idle(
        local_stack: Stack, replica, redis_client) -> None:  # type: ignore[no-untyped-def]
    busy, idle = replica(), replica()
    slots: list[int] = []
    _take(busy, 1, slots)
    snapshot = _dump(redis_client)  # what the promoted replica had received
    _take(idle, 3, slots)  # acknowledged by the old primary, never replicated
    localstack.stop_redis(kill=True)
    localstack.start_redis()
    _restore(redis_client, snapshot)  # the new primary lacks the last writes
    assert busy.acquire().held  # another Redis: held for the grace
    idle.heartbeat()  # the idle replica's heartbeat proves the loss
    held = busy.acquire()
    assert held.held and held.wait_s > (HOLD_MS - 300) / 1000
    _take(busy, 4, slots)
    assert _over_limit(slots) == []


@pytest.mark.timeout(60)
def test_a_replica_started_with_a_rotated_token_after_a_loss_counts_with_the_fleet(
        stack: Stack, redis_client) -> None:  # type: ignore[no-untyped-def]
    """FLUSHALL (or Redis back without its data) takes the destination's account record with the
    limiter's state; a replica then started with a rotated token records its new fingerprint.
    The live replica follows that record on its heartbeat, proving the loss on those keys: no
    window is exceeded, neither by a fresh limiter granting after the short grace of a new state
    while the lost slots still count at Pisano, nor by two limiters for one account."""
    keys, windows = Keys("fence"), parse_rate_limits(WINDOWS)
    clients = [connect(stack.redis_url), connect(stack.redis_url)]
    try:
        def limiter(client: Any, token: str) -> RedisLimiter:
            return RedisLimiter(client, keys, AccountKey(account_key(client, keys, "default", token)), windows,
                                margin_ms=0, horizon_ms=HORIZON_MS, grace_ms=GRACE_MS,
                                account=AccountRecord(client, keys, "default"))

        live, slots_live = limiter(clients[0], "tok-old"), []
        _take(live, 8, slots_live)  # the 8/3s window full
        redis_client.flushall()
        started = limiter(clients[1], "tok-new")  # before the live replica's next heartbeat
        assert redis_client.get(keys.account("default")) == token_fingerprint("tok-new").encode()
        live.heartbeat()
        started.heartbeat()
        busy = [Busy(live), Busy(started)]
        for b in busy:
            b.thread.start()
        time.sleep(HOLD_MS / 1000 + 3.5)
        for b in busy:
            b.stop.set()
            b.thread.join()
        slots = slots_live + busy[0].slots + busy[1].slots
        assert _over_limit(slots) == []
        assert busy[0].slots and busy[1].slots  # both sent, on one set of keys, after the hold
    finally:
        for client in clients:
            client.close()
