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

import consumer.operations.health as health_module
from consumer.delivery.lanes import Lane, Lanes
from consumer.delivery.pisano import Accepted
from consumer.operations.health import Health, HealthProbe, HealthServer
from consumer.operations.metrics import Metrics
from consumer.operations.threads import LongLivedThread, long_lived
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
    """As consumer/app.py wires them: every sender thread watched before it starts, under the
    role it was made with (`long_lived`)."""
    lanes = Lanes({"default": Lane(r.batcher, r.sender)}, lambda campaign: "default")
    health.watch(*lanes.threads())
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
        # Said by the thread itself (a LongLivedThread), counted under its own role.
        [thread] = lanes.threads()
        assert isinstance(thread, LongLivedThread) and type(thread.ended_by) is type(error)
        assert health.ended_roles()["sender"] == 1 and sum(health.ended_roles().values()) == 1
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


def test_a_thread_not_started_yet_is_not_ended_and_one_started_may_be_watched() -> None:
    health = Health()
    idle = long_lived(lambda: None, name="idle", role="other")
    health.watch(idle)
    assert health.alive()  # never started (a heartbeat without limiters, say)
    running = long_lived(lambda: time.sleep(0.01), name="running", role="other")
    running.start()
    health.watch(running)  # it says what ended it to a watcher that came late
    running.join()
    assert health.ended_threads() == {"running": "returned"}


def test_only_a_long_lived_thread_can_be_watched() -> None:
    """One mechanism (found by review: `watch` also wrapped the `run` of plain threads, the senders'
    and the limiter heartbeat's, a second path beside LongLivedThread's): a plain thread is refused."""
    with pytest.raises(TypeError, match="long_lived"):
        Health().watch(threading.Thread(target=lambda: None, name="plain"))  # type: ignore[arg-type]


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
        assert isinstance(heartbeat.thread, LongLivedThread)
        assert health.ended_roles()["limiter_heartbeat"] == 1
    finally:
        probe.stop()


class Stopped(BaseException):
    """A BaseException out of the health server's accept loop."""


def test_the_health_server_thread_ended_by_a_base_exception_says_so_in_one_line(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by review: health-http was a plain thread, its end a bare traceback on stderr (none
    at all for a SystemExit). Nobody answers the kubelet then (it restarts the pod); the log says why."""
    def serve_forever(*args: object) -> None:
        raise Stopped(f"no such contact {PHONE}")

    monkeypatch.setattr(health_module._BoundedHTTPServer, "serve_forever", serve_forever)
    health = Health(joined=True)
    server = HealthServer(0, health, Metrics(), "127.0.0.1")

    def lines() -> list[logging.LogRecord]:
        return [rec for rec in caplog.records if getattr(rec, "reason", None) == "thread_ended"]

    with caplog.at_level(logging.ERROR):
        server.start()
        assert until(lambda: not health.alive())
        assert until(lambda: bool(lines()))  # the ended thread marks itself ended, then logs
    try:
        assert health.ended_threads() == {"health-http": "Stopped"}
        [line] = lines()
        assert "health-http" in line.getMessage() and PHONE not in line.getMessage()
    finally:
        server.server.server_close()


def test_healthz_answers_503_once_a_watched_thread_ended() -> None:
    health = Health(joined=True)
    dying = long_lived(lambda: (_ for _ in ()).throw(GeneratorExit()), name="sender-x-0", role="sender")
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
