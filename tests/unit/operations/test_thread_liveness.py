"""A background thread the pipeline's progress depends on that dies makes the replica not alive
(found by review: `Sender._run` caught only `Exception`, so a BaseException that is not one, from
a plug-in, a token provider, a library's sys.exit, ended the thread silently; liveness watched only
the poll loop, and the pod kept running with fewer senders, or none, its batches piling up and
the dying thread's batch left without an outcome, its records never committed)."""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable

import pytest

from consumer.delivery.lanes import Lane, Lanes
from consumer.delivery.pisano import Accepted
from consumer.operations.health import Health, HealthProbe, HealthServer
from consumer.operations.metrics import Metrics
from consumer.state.limiter import LimiterHeartbeat, NoLimiter
from tests.support.fakes import FakePisano, Rig, event, rig

PHONE = "+905321234567"


class Cancelled(BaseException):
    """A plug-in's own BaseException (as asyncio.CancelledError is one), quoting a record."""


def until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def watched_lanes(r: Rig, health: Health) -> Lanes:
    """As consumer/app.py wires them: every sender thread watched before it starts."""
    lanes = Lanes({"default": Lane(r.batcher, r.sender)}, lambda campaign: "default")
    health.watch(*lanes.threads(), role="sender")
    return lanes


def send_one(r: Rig, n: int = 1) -> None:
    r.batcher.add([event(n)])
    r.batcher.flush_all()


@pytest.mark.parametrize("error", [Cancelled(f"no such contact {PHONE}"), SystemExit(3), GeneratorExit()],
                         ids=["plug-in BaseException", "SystemExit", "GeneratorExit"])
def test_a_sender_thread_ended_by_a_base_exception_makes_the_replica_not_alive(
        error: BaseException, caplog: pytest.LogCaptureFixture) -> None:
    r = rig(FakePisano([error]))
    health = Health(joined=True)
    lanes = watched_lanes(r, health)
    lanes.start()
    try:
        assert health.alive()
        with caplog.at_level(logging.ERROR, logger="consumer.operations.health"):
            send_one(r)
            assert until(lambda: not any(t.is_alive() for t in lanes.threads()))
        assert not health.alive()  # /healthz: 503, and Kubernetes restarts the pod
        report = health.report()
        assert report["alive"] is False
        assert report["ended_threads"] == {"sender-default-0": type(error).__name__}
        [line] = [rec for rec in caplog.records if getattr(rec, "reason", None) == "thread_ended"]
        message = line.getMessage()
        assert "sender-default-0" in message and type(error).__name__ in message
        if isinstance(error, Cancelled):  # its text is said, with the phone redacted
            assert "no such contact" in message and PHONE not in message
    finally:
        lanes.stop(1.0)


def test_an_exception_keeps_the_sender_thread_and_the_replica_alive() -> None:
    r = rig(FakePisano([ValueError("a bug")]))
    health = Health(joined=True)
    lanes = watched_lanes(r, health)
    lanes.start()
    try:
        send_one(r, 1)
        assert until(lambda: r.outcome_count() == 1)
        send_one(r, 2)  # the same thread sends the next batch
        assert until(lambda: r.kinds().get("e2") == {"delivered"})
        assert health.alive() and health.report()["ended_threads"] == {}
    finally:
        lanes.stop(1.0)


def test_threads_ended_by_the_shutdown_do_not_fail_liveness() -> None:
    r = rig(FakePisano(default=Accepted(200, "req", 0.01)))
    health = Health(joined=True)
    lanes = watched_lanes(r, health)
    lanes.start()
    health.stopping = True  # Pipeline._shutdown sets it before it stops the lanes
    lanes.stop(5.0)
    assert not any(t.is_alive() for t in lanes.threads())
    assert health.alive()


def test_a_thread_not_started_yet_is_not_ended_and_one_started_cannot_be_watched() -> None:
    health = Health()
    idle = threading.Thread(target=lambda: None, name="idle")
    health.watch(idle)
    assert health.alive()  # never started (a heartbeat without limiters, say)
    running = threading.Thread(target=time.sleep, args=(0.01,), name="running")
    running.start()
    with pytest.raises(ValueError, match="running is already started"):
        health.watch(running)
    running.join()


class DyingLimiter(NoLimiter):
    def heartbeat(self) -> None:
        raise SystemExit("a library called sys.exit")


def test_the_limiter_heartbeat_ending_makes_the_replica_not_alive() -> None:
    health = Health(joined=True)
    heartbeat = LimiterHeartbeat([DyingLimiter()], interval_s=0.01)
    probe = HealthProbe(health, Metrics(), redis_client=None, producer=None, dlq_topic="dlq", destinations=[],
                        heartbeat=heartbeat)
    probe.start()
    try:
        assert until(lambda: not health.alive())
        assert health.ended_threads() == {"limiter-heartbeat": "SystemExit"}
    finally:
        probe.stop()


def test_healthz_answers_503_once_a_watched_thread_ended() -> None:
    health = Health(joined=True)
    dying = threading.Thread(target=lambda: (_ for _ in ()).throw(GeneratorExit()), name="sender-x-0")
    health.watch(dying)
    server = HealthServer(0, health, Metrics(), "127.0.0.1")
    server.start()
    try:
        url = f"http://127.0.0.1:{server.port}"
        with urllib.request.urlopen(f"{url}/healthz", timeout=5) as answer:
            assert answer.status == 200
        dying.start()
        dying.join()
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{url}/healthz", timeout=5)
        refused.value.close()
        assert refused.value.code == 503
        with urllib.request.urlopen(f"{url}/readyz", timeout=5) as answer:  # readiness is not liveness
            assert json.loads(answer.read())["ended_threads"] == {"sender-x-0": "GeneratorExit"}
    finally:
        server.stop()
