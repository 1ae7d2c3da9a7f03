"""Redis losing the dedup or contact state is noticed: each bucket's origin, seen by every replica
(consumer/state/origins.py), and said by the health probe in an error and a metric."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

import pytest

from consumer.errors import StateStoreError
from consumer.operations.health import Health, HealthProbe
from consumer.operations.metrics import Metrics
from consumer.state.origins import (
    CONTACTS,
    DEDUP,
    ORIGIN_CHECK_INTERVAL_S,
    Buckets,
    MemoryOrigins,
    Origin,
    OriginWatch,
    origin_key,
    origins_summary,
)

DEDUP_TAGS = [f"{{t:d:{b}:0}}" for b in range(64)]
PHONE_TAGS = [f"{{t:p:{b}:0}}" for b in range(64)]
LAYOUT = '{"what": "pisano-sms dedup layout"}'


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        self.now += 10
        return self.now


def watch(store: MemoryOrigins, clock: Clock | None = None, contacts: bool = True) -> OriginWatch:
    sources = [lambda: Buckets(DEDUP, DEDUP_TAGS, LAYOUT)]
    if contacts:
        sources.append(lambda: Buckets(CONTACTS, PHONE_TAGS))
    return OriginWatch(store, sources, clock=clock or Clock())


def keys(tags: Sequence[str]) -> list[str]:
    return [origin_key(tag) for tag in tags]


def test_the_first_sight_and_an_unchanged_state_report_nothing() -> None:
    store = MemoryOrigins()
    replica = watch(store)
    assert replica.check() == []  # a first start, or an upgrade: nothing to compare with
    assert replica.check() == []
    assert len(store.stored) == 128
    assert all(store.stored[key]["#"] == LAYOUT for key in keys(DEDUP_TAGS))
    assert all("#" not in store.stored[key] for key in keys(PHONE_TAGS))


def test_keys_lost_between_two_checks_are_reported_once_per_state_with_when_they_were_seen() -> None:
    store, clock = MemoryOrigins(), Clock()
    replica = watch(store, clock)
    replica.check()
    seen = clock.now
    store.lose(keys(DEDUP_TAGS[:21]) + keys(PHONE_TAGS[40:]))
    losses = replica.check()
    assert [(loss.state, loss.lost, loss.buckets, loss.seen_at) for loss in losses] == \
        [(DEDUP, 21, 64, seen), (CONTACTS, 24, 64, seen)]
    assert replica.check() == []  # said once: the new origins are what it knows now


def test_another_replica_that_wrote_the_new_origin_first_does_not_hide_the_loss() -> None:
    store = MemoryOrigins()
    first, second = watch(store), watch(store)
    first.check()
    second.check()
    store.lose()
    assert [(loss.state, loss.lost) for loss in first.check()] == [(DEDUP, 64), (CONTACTS, 64)]
    # The second finds the origins the first wrote after the loss: changed, so lost too.
    assert [(loss.state, loss.lost) for loss in second.check()] == [(DEDUP, 64), (CONTACTS, 64)]


def test_a_replica_started_after_the_loss_cannot_tell_and_says_nothing() -> None:
    store = MemoryOrigins()
    watch(store).check()
    store.lose()
    assert watch(store).check() == []


def test_the_message_names_the_state_the_consequence_and_what_to_do() -> None:
    store = MemoryOrigins()
    replica = watch(store, contacts=True)
    replica.check()
    store.lose()
    dedup, contacts = replica.check()
    assert dedup.message().startswith("Redis lost the dedup state of 64 of 64 buckets since 2027-01-15T08:00:10Z")
    assert "second SMS" in dedup.message() and "appendonly yes" in dedup.message()
    assert "DEDUP_WAIT_REPLICAS" in dedup.message() and "README" in dedup.message()
    assert "surveyed again within its cooldown" in contacts.message()


def test_a_source_that_cannot_load_fails_the_check_and_the_next_one_compares_with_the_last_sight() -> None:
    store = MemoryOrigins()
    failing = [False]

    def dedup() -> Buckets:
        if failing[0]:
            raise StateStoreError("Redis unreachable")
        return Buckets(DEDUP, DEDUP_TAGS, LAYOUT)

    replica = OriginWatch(store, [dedup])
    replica.check()
    failing[0] = True
    with pytest.raises(StateStoreError):
        replica.check()
    failing[0] = False
    store.lose(keys(DEDUP_TAGS[:3]))
    assert [(loss.state, loss.lost) for loss in replica.check()] == [(DEDUP, 3)]


def probe(origins: OriginWatch, metrics: Metrics) -> HealthProbe:
    return HealthProbe(Health(), metrics, redis_client=None, producer=None, dlq_topic="dlq", destinations=[],
                       origins=origins)


def lost(metrics: Metrics, state: str) -> float | None:
    return metrics.registry.get_sample_value("pisano_sms_redis_state_lost_total", {"state": state})


def test_the_probe_counts_the_lost_buckets_and_logs_one_error_per_state(caplog: pytest.LogCaptureFixture) -> None:
    store, metrics = MemoryOrigins(), Metrics()
    checker = probe(watch(store), metrics)
    checker._check_origins(checker.origins)  # type: ignore[arg-type]
    assert lost(metrics, DEDUP) == 0  # exported from the start
    store.lose(keys(DEDUP_TAGS[:5]))
    with caplog.at_level(logging.ERROR):
        checker._check_origins(checker.origins)  # type: ignore[arg-type]
        checker._check_origins(checker.origins)  # type: ignore[arg-type]
    assert lost(metrics, DEDUP) == 5
    assert lost(metrics, CONTACTS) == 0
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.reason for r in errors] == ["redis_state_lost"]  # type: ignore[attr-defined]
    assert "lost the dedup state of 5 of 64 buckets" in errors[0].getMessage()


def test_the_probe_leaves_a_redis_that_does_not_answer_to_the_reachability_check() -> None:
    def unreachable() -> Buckets:
        raise StateStoreError("Redis unreachable")

    metrics = Metrics()
    checker = probe(OriginWatch(MemoryOrigins(), [unreachable]), metrics)
    checker._check_origins(checker.origins)  # type: ignore[arg-type]  # no raise: asked again next time
    assert lost(metrics, DEDUP) == 0


def test_the_probe_round_asks_for_the_origins_at_most_every_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    store = MemoryOrigins()
    calls = []
    origins = watch(store)
    monkeypatch.setattr(origins, "check", lambda: calls.append(1) or [])
    checker = probe(origins, Metrics())
    for name in ("_check_redis", "_check_kafka", "_check_circuit", "_check_memory"):
        monkeypatch.setattr(checker, name, lambda: None)
    now = [0.0]
    monkeypatch.setattr("consumer.operations.health.time.monotonic", lambda: now[0])
    for now[0] in (100.0, 101.0, 109.0, 110.5, 111.0):
        checker._round(0.0)
        wait_for(lambda: not checker._origins_running())
    assert len(calls) == 2  # at 100 and at 110.5


def test_check_says_since_when_and_warns_of_buckets_begun_later_than_the_others() -> None:
    first = 1_800_000_000_000
    same = [f"{first + n}-{n:016x}" for n in range(64)]
    assert origins_summary(DEDUP, same) == ("dedup state since 2027-01-15T08:00:00Z", None)
    text, warning = origins_summary(DEDUP, same[:43] + [f"{first + 7_200_000 + n}-{n:016x}" for n in range(21)])
    assert text == "dedup state since 2027-01-15T08:00:00Z"
    assert warning is not None and warning.startswith(
        "21 of 64 dedup buckets began at 2027-01-15T10:00:00Z, after the others: their keys were lost")
    assert '"Redis lost the dedup state"' in warning and "README" in warning
    # Within 10 minutes: the first checks (a master unreachable for a while, writers' clocks apart).
    assert origins_summary(CONTACTS, [f"{first + 590_000}-0", *same[1:]])[1] is None


def test_check_counts_buckets_without_an_origin_and_says_when_there_is_none() -> None:
    assert origins_summary(DEDUP, [None] * 64) == \
        ("dedup state: no origins yet (no replica of this release has checked it)", None)
    assert origins_summary(DEDUP, ["1800000000000-ab", None, "not a time"])[0] == \
        "dedup state since 2027-01-15T08:00:00Z (1 of 3 buckets without an origin yet)"
def test_origins_that_cannot_be_read_are_said_once_and_their_return_too(caplog: pytest.LogCaptureFixture) -> None:
    """The check failing (all of it or some buckets) while Redis answers the probe's ping used to
    be silent: losses went unsaid with nothing saying the watch was blind."""
    failing = [True]

    def dedup() -> Buckets:
        if failing[0]:
            raise StateStoreError("Redis refused reading the buckets' origins (ResponseError: WRONGTYPE)")
        return Buckets(DEDUP, DEDUP_TAGS, LAYOUT)

    checker = probe(OriginWatch(MemoryOrigins(), [dedup]), Metrics())
    with caplog.at_level(logging.INFO):
        for _ in range(3):
            checker._check_origins(checker.origins)  # type: ignore[arg-type]
        failing[0] = False
        checker._check_origins(checker.origins)  # type: ignore[arg-type]
        checker._check_origins(checker.origins)  # type: ignore[arg-type]
    said = [(r.levelno, getattr(r, "reason", "")) for r in caplog.records if r.name == "consumer.operations.health"]
    assert said == [(logging.WARNING, "redis_state_unchecked"), (logging.INFO, "redis_state_unchecked")]
    assert "WRONGTYPE" in caplog.records[0].getMessage()


def test_redis_gone_back_to_an_older_state_is_said_by_every_replica_once() -> None:
    """A restart from the last RDB snapshot keeps the origins and loses the marks written since:
    the check counts, lower than each replica read two checks ago, say it."""
    store, clock = MemoryOrigins(), Clock()
    first, second = watch(store, clock), watch(store, clock)
    for _ in range(2):
        assert first.check() == [] and second.check() == []
    snapshot = store.snapshot()
    when = clock.now
    for _ in range(3):  # the fleet goes on: 30 s of checks, and marks, after the snapshot
        assert first.check() == [] and second.check() == []
    store.go_back(snapshot)
    for replica in (first, second):  # the second reads after the first's check: still said
        losses = replica.check()
        said = [(loss.state, loss.lost, loss.rolled_back) for loss in losses]
        assert said == [(DEDUP, 64, True), (CONTACTS, 64, True)]
        assert losses[0].seen_at > when
        assert "went back to a state of 64 of 64 buckets of the dedup state older than" in losses[0].message()
        assert "second SMS" in losses[0].message()
    assert first.check() == [] and second.check() == []  # said once


def test_redis_that_lost_only_the_last_check_says_nothing() -> None:
    store = MemoryOrigins()
    replica = watch(store)
    replica.check()
    replica.check()
    snapshot = store.snapshot()
    replica.check()
    store.go_back(snapshot)  # an AOF written every second lost the last second
    assert replica.check() == [] and replica.check() == []


def test_with_dedup_wait_replicas_what_only_the_checks_wrote_and_a_failover_lost_is_no_loss() -> None:
    """The replica holds what its master had when the link was cut: every mark relied on (the
    senders fail closed meanwhile), not the checks counted, nor an origin first written, since."""
    store, cut = MemoryOrigins(), [False]

    def wait() -> None:
        if cut[0]:
            raise StateStoreError("only 0 of 1 Redis replicas acknowledged")

    replica = OriginWatch(store, [lambda: Buckets(DEDUP, DEDUP_TAGS[:32], LAYOUT)], clock=Clock(),
                          replicated=wait)
    replica.check()
    replica.check()
    on_the_replica = store.snapshot()
    cut[0] = True
    later = OriginWatch(store, [lambda: Buckets(DEDUP, DEDUP_TAGS[32:], LAYOUT)], clock=Clock(), replicated=wait)
    for _ in range(3):
        assert replica.check() == [] and later.check() == []  # the later buckets' origins: first written now
    store.go_back(on_the_replica)  # the failover
    cut[0] = False
    assert replica.check() == [] and later.check() == []
    assert replica.check() == [] and later.check() == []
    # Once replicated again, going back is said as before.
    snapshot = store.snapshot()
    for _ in range(3):
        replica.check()
    store.go_back(snapshot)
    assert [(loss.state, loss.lost, loss.rolled_back) for loss in replica.check()] == [(DEDUP, 32, True)]


def test_a_check_that_hangs_never_holds_up_the_probe_round(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a cluster a master that hangs (not refusing: a machine frozen, packets dropped) costs one
    timeout per command of its buckets, retried one by one by redis-py's cluster pipeline: a check
    took 100 s and more on the local cluster (a node SIGSTOPped, no failover). The probe's other
    checks (Redis and Kafka reachability, the circuit's probe) must go on meanwhile."""
    release = threading.Event()
    started = []

    def hangs() -> list[object]:
        started.append(1)
        release.wait(30)
        return []

    origins = watch(MemoryOrigins())
    monkeypatch.setattr(origins, "check", hangs)
    checker = probe(origins, Metrics())
    rounds = []
    monkeypatch.setattr(checker, "_check_redis", lambda: rounds.append(1))
    for name in ("_check_kafka", "_check_circuit", "_check_memory"):
        monkeypatch.setattr(checker, name, lambda: None)
    now = [100.0]
    monkeypatch.setattr("consumer.operations.health.time.monotonic", lambda: now[0])
    try:
        for _ in range(3):
            done = threading.Thread(target=checker._round, args=(0.0,), daemon=True)
            done.start()
            done.join(2)
            assert not done.is_alive(), "the probe round waits for the origins check"
            now[0] += ORIGIN_CHECK_INTERVAL_S
        assert len(rounds) == 3 and len(started) == 1  # one check at a time
        # The next check starts an interval after the last one ended, not after it began: two
        # checks' counts close together would let the last second an AOF loses take both.
        release.set()
        wait_for(lambda: not checker._origins_running())
        checker._round(0.0)
        assert len(started) == 1
        now[0] += ORIGIN_CHECK_INTERVAL_S
        checker._round(0.0)
        wait_for(lambda: len(started) == 2)
    finally:
        release.set()


def wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 5
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_keys_lost_in_the_middle_of_a_check_are_said_once() -> None:
    """RedisOrigins reads `since` as "" when the key vanished between the bucket's HSETNX and its
    HGET (FLUSHALL or keys deleted between two reads of the pipeline): a loss, said then. The next
    check writes a new origin; that is the same loss, not a second one."""
    class Vanishing(MemoryOrigins):
        def __init__(self) -> None:
            super().__init__()
            self.vanish: list[str] = []

        def origins(self, buckets: Sequence[tuple[str, str]]) -> list[Origin | StateStoreError]:
            found = super().origins(buckets)
            for i, (key, _) in enumerate(buckets):
                if key in self.vanish:
                    self.lose([key])
                    origin = found[i]
                    assert isinstance(origin, Origin)
                    found[i] = Origin("", origin.checks)
            self.vanish = []
            return found

    store = Vanishing()
    replica = watch(store, contacts=False)
    assert replica.check() == [] and replica.check() == []
    store.vanish = keys(DEDUP_TAGS[:2])
    assert [(loss.state, loss.lost) for loss in replica.check()] == [(DEDUP, 2)]
    assert replica.check() == [] and replica.check() == []
