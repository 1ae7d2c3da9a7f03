"""Every thread that lives as long as the process is watched (`Health.watch`), by construction
(found by review: the token watchers `token-<destination>` and the `send-window-clock` were not:
ended by a BaseException, they left /healthz passing while the replica sent with a stale token,
every request refused with 401 after a rotation and its events dead-lettered, or judged quiet
hours by a frozen clock, its events held for good or sent at night)."""

from __future__ import annotations

import logging
import re
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

import consumer.app
from consumer.app import build_pipeline
from consumer.config.settings import Settings
from consumer.operations.health import Health, HealthProbe, HealthServer
from consumer.operations.metrics import Metrics
from consumer.operations.threads import long_lived
from tests.support.offline_build import stand_in_state

OLD = "tok-old-0123456789"
ROOT = Path(__file__).resolve().parents[3]


class Cancelled(BaseException):
    """A token provider's own BaseException (as asyncio.CancelledError is one)."""


# The token provider of these tests (PISANO_TOKEN_PROVIDER=module:callable): raises once told to.
PROVIDER = f"{__name__}:provider"
RAISE: dict[str, BaseException | None] = {"error": None}


def provider(destination: str) -> str:
    error = RAISE["error"]
    if error is not None:
        raise error
    return OLD


def until(condition: Callable[[], bool], timeout: float = 15.0) -> bool:  # returns as soon as it holds
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., tuple[Health, Any, mock.MagicMock]]]:
    """`build_pipeline` as `pisano-sms run` calls it, on a stand-in Redis, registry and producer."""
    RAISE["error"] = None
    redis = stand_in_state(monkeypatch)
    monkeypatch.setattr(consumer.app, "make_producer", lambda *args: mock.MagicMock(name="producer"))
    probes: list[HealthProbe] = []

    def build(**settings: Any) -> tuple[Health, HealthProbe, mock.MagicMock]:
        health = Health(joined=True)
        config = Settings(kafka_topics=["t"], pisano_url="https://pisano.invalid", pisano_token_provider=PROVIDER,
                          pisano_token_refresh_ms=100, **settings)
        _, probe = build_pipeline(config, Metrics(), health)
        probes.append(probe)
        return health, probe, redis

    yield build
    RAISE["error"] = None
    for probe in probes:
        probe.stop()


def test_a_token_watcher_ended_by_a_base_exception_makes_the_replica_not_alive(
        built: Callable[..., tuple[Health, HealthProbe, mock.MagicMock]], caplog: pytest.LogCaptureFixture) -> None:
    before = set(threading.enumerate())
    health, _, _ = built()
    # This build's watcher: a watcher left running by another build asks the same provider, and
    # would log its own line (the line is logged on the thread that ended).
    [watcher] = [t for t in set(threading.enumerate()) - before if t.name == "token-default"]
    assert health.alive() and health.ended_threads() == {}

    def lines() -> list[logging.LogRecord]:
        return [rec for rec in caplog.records
                if getattr(rec, "reason", None) == "thread_ended" and rec.thread == watcher.ident]

    with caplog.at_level(logging.ERROR, logger="consumer.operations.health"):
        RAISE["error"] = Cancelled("the secret store's session was cancelled")
        assert until(lambda: not health.alive())  # /healthz: 503, and Kubernetes restarts the pod
        # The ended thread marks itself ended, then logs: the line may come a moment after.
        assert until(lambda: bool(lines()))
    assert health.ended_threads() == {"token-default": "Cancelled"}
    [line] = lines()
    assert "token-default" in line.getMessage() and "Cancelled" in line.getMessage()


def test_the_send_window_clock_ended_by_a_base_exception_makes_the_replica_not_alive(
        built: Callable[..., tuple[Health, HealthProbe, mock.MagicMock]]) -> None:
    health, _, redis = built(send_window="09:00-21:00 Europe/Istanbul", send_window_clock="redis")
    assert health.alive() and health.ended_threads() == {}
    redis.get.side_effect = SystemExit("a library called sys.exit")
    assert until(lambda: not health.alive())
    assert health.ended_threads() == {"send-window-clock": "SystemExit"}


def test_the_threads_a_build_starts_are_all_watched(
        built: Callable[..., tuple[Health, HealthProbe, mock.MagicMock]]) -> None:
    """Whatever long-lived thread the build starts (now or added later) is watched by the build,
    the limiter heartbeat too, before anything starts it (it was watched only by the probe's start)."""
    before = set(threading.enumerate())
    health, probe, _ = built(send_window="09:00-21:00 Europe/Istanbul", send_window_clock="redis")
    assert {"health-probe", "limiter-heartbeat"} <= set(health.watched_threads())
    probe.start()
    started = {t.name for t in set(threading.enumerate()) - before}
    assert started >= {"token-default", "send-window-clock", "health-probe", "limiter-heartbeat"}
    assert started <= set(health.watched_threads())


def test_a_long_lived_thread_watched_once_ended_is_counted_once_and_by_its_role() -> None:
    """A LongLivedThread may be watched after it started, even after it ended; watched twice, once."""
    thread = long_lived(lambda: (_ for _ in ()).throw(GeneratorExit()), name="token-retail", role="token_watcher")
    thread.start()
    thread.join()
    health = Health(joined=True)
    health.watch(thread)
    health.watch(thread)
    assert health.ended_threads() == {"token-retail": "GeneratorExit"} and not health.alive()
    assert health.ended_roles()["token_watcher"] == 1 and sum(health.ended_roles().values()) == 1
    health.stopping = True  # during a shutdown threads end on purpose: nothing counted
    assert sum(health.ended_roles().values()) == 0


def test_the_metric_counts_the_ended_threads_by_role_at_each_scrape() -> None:
    health, metrics = Health(joined=True), Metrics()
    dying = long_lived(lambda: (_ for _ in ()).throw(SystemExit(3)), name="sender-retail-0", role="sender")
    health.watch(dying)
    server = HealthServer(0, health, metrics, "127.0.0.1")
    server.start()
    try:
        url = f"http://127.0.0.1:{server.port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as answer:
            assert 'pisano_sms_threads_ended{role="sender"} 0.0' in answer.read().decode()
        dying.start()
        dying.join()
        with urllib.request.urlopen(url, timeout=5) as answer:
            text = answer.read().decode()
        assert 'pisano_sms_threads_ended{role="sender"} 1.0' in text
        assert 'pisano_sms_threads_ended{role="token_watcher"} 0.0' in text
    finally:
        server.stop()


def test_a_role_is_a_bounded_label() -> None:
    with pytest.raises(ValueError, match="role 'sender-retail-0'"):
        Health().watch(long_lived(lambda: None, name="sender-retail-0", role="sender-retail-0"))


# Every `threading.Thread(` of the consumer, by file: long-lived threads are made by
# `consumer.operations.threads.long_lived`, which a build collects and watches; these are either
# short-lived (they end on their own, soon) or watched explicitly by their owner, or not the
# consumer's `run` process at all. A new one fails here until it is judged.
THREAD_SITES = {
    "consumer/operations/threads.py": "LongLivedThread itself",
    "consumer/delivery/resolution.py": "short-lived: one DNS lookup",
    "consumer/delivery/token_refresh.py": "short-lived: one read of the token source after a 401",
    "consumer/pipeline.py": "short-lived: kafka-close, the consumer's close at shutdown",
    "consumer/operations/health.py": "short-lived: origin-check, one check of the origins (one at a time)",
    "consumer/simulator/server.py": "the Pisano simulator: not the consumer process",
    "consumer/demo.py": "the demo's consumer loop: not the consumer process",
    "consumer/sre/position_commit.py": "short-lived: the replay command's commit of its position, waited for "
                                       "with a bound (librdkafka's has none); not the consumer process",
    "consumer/sre/dlq_read.py": "short-lived: one metadata request of replay or dlq stats (up to "
                                "METADATA_TIMEOUT_S), waited for with progress lines; not the consumer process",
}


def test_every_thread_the_consumer_creates_is_long_lived_and_watched_or_judged() -> None:
    sites = {str(path.relative_to(ROOT)) for path in (ROOT / "consumer").rglob("*.py")
             if re.search(r"\bThread\(", path.read_text())}
    unjudged = sites - set(THREAD_SITES)
    assert not unjudged, f"a new thread: make it with long_lived() (watched by the build) or judge it here: {unjudged}"
    # A judged site that no longer makes a plain thread leaves the list: it only ever shrinks.
    stale = set(THREAD_SITES) - sites
    assert not stale, f"no `Thread(` left in {stale}: take it off THREAD_SITES"


def test_the_watched_threads_of_the_consumer_are_all_long_lived() -> None:
    """The senders, the limiter heartbeat, the health server and the replay lock's renewal were
    plain threads (found by review: two ways to watch a thread, `Health.watch` wrapping a plain
    thread's `run` beside LongLivedThread); each is made by `long_lived` now."""
    made = {str(path.relative_to(ROOT)) for path in (ROOT / "consumer").rglob("*.py")
            if "long_lived(" in path.read_text()}
    assert made >= {"consumer/delivery/sender.py", "consumer/state/limiter.py", "consumer/operations/health.py",
                    "consumer/sre/replay_lock.py"}


def test_each_destinations_request_deadline_thread_has_a_name_of_its_own(
        built: Callable[..., tuple[Health, HealthProbe, mock.MagicMock]]) -> None:
    """Found by review: every client's deadline thread was `request-deadlines`, so with two
    destinations /healthz's `ended_threads` (keyed by name) showed one where two had ended, and
    its error line did not say which destination had lost its deadlines."""
    health, _, _ = built(destinations={"retail": {"url": "https://eu.pisano.co",
                                                  "campaigns": ["ae51458c-9e82-417f-8f1d-e074891ea5c1"]}})
    names = health.watched_threads()
    assert len(names) == len(set(names)), names
    assert {"request-deadlines-default", "request-deadlines-retail"} <= set(names), names
