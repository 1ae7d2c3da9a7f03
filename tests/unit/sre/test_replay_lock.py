"""One `replay` at a time per dead-letter topic and group (consumer/sre/replay_lock.py)."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from click.testing import CliRunner, Result

from consumer.cli import main
from consumer.sre.replay_lock import MemoryLockStore, ReplayLock, lock_key
from tests.unit.sre.fake_dlq import DLQ, Cluster, FakeDlqConsumer, install, replay_env
from tests.unit.sre.test_replay_run import dlq_records

KEY = lock_key("pisano-sms", DLQ, "g")
OTHER = json.dumps({"user": "ayse", "host": "sre-box-7", "pid": 4242, "started": "2026-12-06T00:00:00Z",
                    "nonce": "n"})


def _replay(*args: str) -> Result:
    return CliRunner().invoke(main, ["replay", "--group", "g", *args])


def test_a_second_replay_of_the_same_group_refuses_to_start_while_the_first_runs(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Found by review: two runs at once each read from the group's committed position and
    # re-published the same records.
    replay_env(monkeypatch)
    second: list[Result] = []
    started: list[int] = []

    def start_another(offset: int) -> None:
        if offset == 2 and not started:
            started.append(offset)
            second.append(_replay())  # the same command, in another terminal, while the first runs

    cluster = Cluster(dlq_records(4), on_read=start_another)
    install(monkeypatch, cluster)
    first = _replay()
    assert first.exit_code == 0, first.output
    refused = second[0]
    assert refused.exit_code == 2, refused.output
    said = " ".join(refused.stderr.split())
    assert f"another replay of {DLQ} with group g is running: pid " in said
    assert "Wait for it to finish" in said and "--force" in said
    assert [key for _, key, _, _ in cluster.published] == [f"evt-{n}".encode() for n in range(4)]  # once each
    assert KEY not in cluster.locks.held  # released at the end


def test_the_refusal_names_the_holder_and_force_takes_the_lock_over(monkeypatch: pytest.MonkeyPatch) -> None:
    replay_env(monkeypatch)
    cluster = Cluster(dlq_records(2))
    install(monkeypatch, cluster)
    cluster.locks.take(KEY, OTHER, 30_000, force=False)
    refused = _replay()
    assert refused.exit_code == 2 and not cluster.published and "g" not in cluster.committed
    assert "pid 4242 on sre-box-7 (user ayse), started 2026-12-06T00:00:00Z" in " ".join(refused.stderr.split())
    forced = _replay("--force")
    assert forced.exit_code == 0, forced.output
    assert "took the replay lock" in forced.stderr and "pid 4242" in forced.stderr
    assert len(cluster.published) == 2 and KEY not in cluster.locks.held


def test_another_group_or_a_dry_run_is_not_held_back(monkeypatch: pytest.MonkeyPatch) -> None:
    replay_env(monkeypatch)
    cluster = Cluster(dlq_records(2))
    install(monkeypatch, cluster)
    cluster.locks.take(KEY, OTHER, 30_000, force=False)
    assert _replay("--dry-run").exit_code == 0
    other = CliRunner().invoke(main, ["replay", "--group", "h"])
    assert other.exit_code == 0, other.output and len(cluster.published) == 2


def test_a_run_whose_lock_was_taken_over_stops_at_its_next_checkpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    import consumer.sre.replay as replay

    replay_env(monkeypatch)
    monkeypatch.setattr(replay, "CHECKPOINT_INTERVAL_S", 0.0)

    def take_over(offset: int) -> None:
        if offset == 2:
            cluster.locks.take(KEY, OTHER, 30_000, force=True)  # `--force` elsewhere
            # its next checkpoint asks the store (`ReplayLock.lost`): no renewal need come first

    cluster = Cluster(dlq_records(6), on_read=take_over, lock_renew_s=0.02)
    install(monkeypatch, cluster)
    result = _replay()
    assert result.exit_code == 1, result.output
    assert "no longer holds the replay lock" in " ".join(result.stderr.split())
    assert cluster.committed["g"] <= 4 and cluster.locks.held[KEY][0] == OTHER  # the holder's lock is left alone


class _StuckRenewal(MemoryLockStore):
    """Renewals that never come back (Redis hanging, the thread starved): the lease still runs out."""

    def __init__(self) -> None:
        super().__init__()
        self.release_renewals = threading.Event()

    def renew(self, key: str, value: str, ttl_ms: int) -> bool:
        self.release_renewals.wait(5)
        return False


def test_a_run_whose_lease_ran_out_has_lost_the_lock_even_while_its_renewal_hangs() -> None:
    """Found by review: `lost()` only said what the renewal thread had concluded, so a renewal stuck
    (or a process suspended) past the TTL left the run publishing and committing after its lock
    lapsed and another run had taken it. The lease is counted from the last renewal's sending."""
    store = _StuckRenewal()
    lock = ReplayLock(store, "k", "dlq with group g", ttl_ms=300, renew_every_s=0.02)
    lock.acquire()
    time.sleep(0.4)  # the lock lapsed in the store
    assert store._live("k") is None
    try:
        assert lock.lost() is not None
    finally:
        store.release_renewals.set()
        lock.release()


def test_a_run_taken_over_with_force_knows_it_at_its_next_checkpoint() -> None:
    """Found by review: the holder learnt of a --force takeover only at its next renewal (every
    10 s), so both runs published meanwhile. `lost()` asks the store whether the lock is still ours."""
    store = MemoryLockStore()
    first = ReplayLock(store, "k", "dlq with group g")
    first.acquire()
    second = ReplayLock(store, "k", "dlq with group g")
    assert second.acquire(force=True) is not None
    try:
        assert first.lost() is not None
        assert second.lost() is None
    finally:
        second.release()
        first.release()
    assert store._live("k") is None  # the second run released it; the first, which lost it, did not touch it


def test_a_run_that_stopped_on_a_short_lease_still_releases_the_lock_it_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    import consumer.sre.replay_lock as replay_lock

    now = [1000.0]  # the lock's and the store's clock: a loaded machine's sleep would overshoot the lease
    monkeypatch.setattr(replay_lock, "time", type("Clock", (), {"monotonic": staticmethod(lambda: now[0])}))
    store = MemoryLockStore()
    lock = ReplayLock(store, "k", "dlq with group g", ttl_ms=300, renew_every_s=10)
    lock.acquire()
    now[0] += 0.22  # less than a third of the lease left: lost, though the store still holds it
    assert lock.lost() is not None and store.holds("k", lock.value)
    lock.release()
    assert store._live("k") is None  # the next run need not wait for it to lapse


class Cancelled(BaseException):
    """A Redis client's own BaseException (as asyncio.CancelledError is one), quoting its URL."""


class _DyingRenewal(MemoryLockStore):
    """A renewal that raises what is not an Exception: the renewal thread ends there."""

    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.error = error
        self.renewals = 0

    def renew(self, key: str, value: str, ttl_ms: int) -> bool:
        self.renewals += 1
        raise self.error


def test_a_renewal_ended_by_a_base_exception_loses_the_lock_at_once_saying_why() -> None:
    """Found by review: `_renew` caught only Exception, so a BaseException ended the renewal
    silently (a SystemExit without even a traceback); the run went on for 20 s on a lease nobody
    renewed, then said only that it was not renewed. The renewal is a LongLivedThread now: its end
    is the lock's loss at the next checkpoint, naming the exception (redacted) and what to do."""
    store = _DyingRenewal(Cancelled("redis://sre:s3cret@redis:6379 went away"))
    lock = ReplayLock(store, "k", "dlq with group g", renew_every_s=0.01)  # a 30 s lease: far from lapsing
    lock.acquire()
    try:
        deadline = time.monotonic() + 5
        while lock.lost() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        lost = lock.lost()
        assert lost is not None and "renewal" in lost and "Cancelled" in lost, lost
        assert "s3cret" not in lost
        assert "run the same command again" in lost
        assert store.renewals == 1  # no renewal after the thread ended
    finally:
        lock.release()
    assert store._live("k") is None  # released by the run: the rerun need not wait for it to lapse


def test_a_replay_whose_renewal_ended_stops_at_its_next_checkpoint_with_what_to_do(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import consumer.sre.replay as replay

    replay_env(monkeypatch)
    monkeypatch.setattr(replay, "CHECKPOINT_INTERVAL_S", 0.0)
    cluster = Cluster(dlq_records(6), lock_renew_s=0.01)
    dying = _DyingRenewal(SystemExit("a library called sys.exit"))
    cluster.locks = dying

    def renewal_ended(offset: int) -> None:
        if offset == 2:  # the renewal thread ends while the run reads
            deadline = time.monotonic() + 5
            while not dying.renewals and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.05)

    cluster.on_read = renewal_ended
    install(monkeypatch, cluster)
    result = _replay()
    assert result.exit_code == 1, result.output
    said = " ".join(result.stderr.split())
    assert "no longer holds the replay lock" in said and "SystemExit" in said, said
    assert "run the same command again" in said
    assert cluster.committed.get("g", 0) <= 4 and KEY not in cluster.locks.held  # released: a rerun may start


def test_a_run_reads_the_groups_position_only_once_it_holds_the_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    # Found by review (sre): the run read the group's committed positions (TopicReader.open) before
    # it took the lock. A run started while another was finishing read the position the first had
    # when it began, then took the lock the first had just released, and re-published every record
    # the first had re-published and committed (the consumers' dedup absorbed them: what the lock
    # exists to prevent). Taken before the positions are read, the second run either is refused
    # (exit 2, the first still holds the lock) or reads the first's final position.
    replay_env(monkeypatch)
    cluster = Cluster(dlq_records(4))
    install(monkeypatch, cluster)
    cluster.locks.take(KEY, OTHER, 30_000, force=False)  # the first run: all 4 re-published, not committed yet
    cluster.published.extend((DLQ, f"evt-{n}".encode(), None, []) for n in range(4))
    committed_before = cluster.consumer("g").committed
    finished: list[bool] = []

    def committed(consumer: Any, tps: list[Any], timeout: float = 0) -> list[Any]:
        positions = committed_before.__func__(consumer, tps, timeout)  # type: ignore[attr-defined]
        if not finished:  # the first run ends right now: it commits behind them and releases its lock
            finished.append(True)
            cluster.committed["g"] = 4
            cluster.locks.release(KEY, OTHER)
        return positions

    monkeypatch.setattr(FakeDlqConsumer, "committed", committed)
    second = _replay()
    assert second.exit_code in (0, 2), second.output
    keys = [key for _, key, _, _ in cluster.published]
    assert sorted(keys) == [f"evt-{n}".encode() for n in range(4)], keys  # each once: none re-published
