"""During a token rotation, a refresh of the token source answers a request's refusal (401) only
if it began reading after that refusal came back (consumer/delivery/token_refresh.py).

The defect: request A is refused and starts a refresh R1, which reads the source before the new
token is in place; request B, whose POST left after R1 began, is refused too and reused R1 (under
way, or just finished): B's refusal was taken as final on a stale read, B dead-lettered with the
token error and the circuit opened, though reading the source again gave the new token.

The source here is a fake whose every read takes the value its store holds when the read begins,
and hands it out only once the test releases that read (threading.Event): the threads are ordered
by events, never by sleeps."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from consumer.delivery.token_refresh import TokenRefresh
from consumer.errors import PisanoApiError
from tests.support.fakes import FakePisano, event, rig

OLD, NEW = "old-token", "new-token"
REFUSED = PisanoApiError(401, 13001, "Wrong authentication token")
READS = 4
EVENT_S = 5.0  # how long a test waits for an event that must come (a failure, never a pause)


class RotatingSource:
    """A token provider whose reads the test holds and releases one by one: read n takes the token
    the store holds when it begins (`began[n]`), waits for `release[n]`, then hands it out."""

    source = "PISANO_TOKEN_PROVIDER"

    def __init__(self) -> None:
        self.store = OLD  # what the secret store holds (the rotation writes here)
        self.token = OLD  # what the source hands out (`current`)
        self.began = [threading.Event() for _ in range(READS)]
        self.release = [threading.Event() for _ in range(READS)]
        self.ended = [threading.Event() for _ in range(READS)]
        self.calls = 0
        self.reading = 0
        self.most_reading = 0
        self._lock = threading.Lock()

    def current(self) -> str:
        return self.token

    def refresh(self) -> bool:
        with self._lock:
            n, self.calls = self.calls, self.calls + 1
            self.reading += 1
            self.most_reading = max(self.most_reading, self.reading)
            value = self.store
        self.began[n].set()
        self.release[n].wait(30.0)
        with self._lock:
            self.reading -= 1
        changed, self.token = value != self.token, value
        self.ended[n].set()
        return changed

    def close(self) -> None:
        for release in self.release:
            release.set()


class Beats:
    """A request's heartbeat wait (True: cut short): `waiting` once the request waits; `on_wait`
    runs at each wait first (the test acting at that moment)."""

    def __init__(self, on_wait: Callable[[], bool] | None = None) -> None:
        self.stop = threading.Event()
        self.waiting = threading.Event()
        self.on_wait = on_wait

    def __call__(self, seconds: float) -> bool:
        self.waiting.set()
        if self.on_wait is not None and self.on_wait():
            return True
        return self.stop.wait(seconds)


class Refusal:
    """A request's call of the refresh after its 401, on a thread of its own."""

    def __init__(self, refresh: TokenRefresh, refused_at: float, beats: Beats, bound_s: float = EVENT_S) -> None:
        self.result: Any = "unanswered"
        self.elapsed = 0.0

        def run() -> None:
            started = time.monotonic()
            self.result = refresh(beats, bound_s, refused_at=refused_at)
            self.elapsed = time.monotonic() - started

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def answer(self) -> Any:
        self.thread.join(EVENT_S)
        assert not self.thread.is_alive(), "the request is still waiting for the refresh"
        return self.result


@pytest.fixture
def source() -> Any:
    tokens = RotatingSource()
    yield tokens
    tokens.close()


def _first_refusal(source: RotatingSource, refresh: TokenRefresh) -> Refusal:
    """Request A, refused: its refresh R1 begins reading (the store still holds the old token)."""
    a = Refusal(refresh, time.monotonic(), Beats())
    assert source.began[0].wait(EVENT_S)
    return a


@pytest.mark.parametrize("r1", ["under way", "finished"])
def test_a_refresh_begun_before_the_post_left_does_not_answer_its_refusal(source: RotatingSource, r1: str) -> None:
    refresh = TokenRefresh(source, "default")
    a = _first_refusal(source, refresh)
    b_sent = time.monotonic()  # B's refusal comes back after R1 began reading
    source.store = NEW  # the rotation lands
    if r1 == "finished":
        source.release[0].set()
        assert a.answer() is True and source.token == OLD  # R1 read the old token
    b_beats = Beats()
    b = Refusal(refresh, b_sent, b_beats)
    if r1 == "under way":
        assert b_beats.waiting.wait(EVENT_S)
        assert not source.began[1].is_set(), "a second read began while R1 was still reading"
        source.release[0].set()
    assert source.began[1].wait(EVENT_S), "B's refusal was answered by a read begun before it came back"
    source.release[1].set()
    assert b.answer() is True
    assert source.token == NEW  # B retries with it instead of a dead letter and an open circuit
    assert source.calls == 2 and source.most_reading == 1
    if r1 == "under way":
        assert a.answer() is True


@pytest.mark.parametrize("r1", ["under way", "finished"])
def test_a_refresh_begun_after_the_refusal_answers_it(source: RotatingSource, r1: str) -> None:
    refresh = TokenRefresh(source, "default")
    b_sent = time.monotonic()  # B's refusal comes back before A's refusal starts R1
    source.store = NEW
    a = _first_refusal(source, refresh)
    if r1 == "finished":
        source.release[0].set()
        assert a.answer() is True
    b_beats = Beats()
    b = Refusal(refresh, b_sent, b_beats)
    if r1 == "under way":
        assert b_beats.waiting.wait(EVENT_S)
        source.release[0].set()
    assert b.answer() is True
    assert source.token == NEW
    assert source.calls == 1, "a refresh begun after the refusal was not reused: the source was read again"
    assert a.answer() is True


def test_a_hung_source_costs_one_thread_and_each_refusal_waits_within_its_bound(
        source: RotatingSource, caplog: pytest.LogCaptureFixture) -> None:
    refresh = TokenRefresh(source, "default")
    _first_refusal(source, refresh)  # R1 hangs: never released
    with caplog.at_level(logging.ERROR):
        for _ in range(3):  # later refusals, each POST after R1 began
            b = Refusal(refresh, time.monotonic(), Beats(), bound_s=0.2)
            assert b.answer() is False
            assert b.elapsed < 0.2 + 1.0
    assert source.calls == 1, "each refusal left another thread stuck in the provider"
    assert any("did not answer" in m and "PISANO_TOKEN_PROVIDER" in m for m in caplog.messages)


def test_the_bound_covers_the_wait_for_the_older_refresh_and_the_new_one(source: RotatingSource) -> None:
    """R1 (begun before B's POST) answers late in B's bound; R2, B's own, hangs: B still answers
    within its one bound, not a bound for each, and one thread at a time read the source."""
    bound_s = 1.0
    refresh = TokenRefresh(source, "default")
    _first_refusal(source, refresh)
    b_sent = time.monotonic()
    b_started = time.monotonic()

    def release_r1_late() -> bool:  # R1 answers when 70% of B's bound is gone
        if not source.release[0].is_set() and time.monotonic() - b_started >= 0.7 * bound_s:
            source.release[0].set()
        return False

    b = Refusal(refresh, b_sent, Beats(release_r1_late), bound_s=bound_s)
    assert b.answer() is False
    assert source.began[1].is_set(), "B did not read the source again once R1 answered"
    assert b.elapsed < bound_s + 0.4, f"B waited {b.elapsed:.2f}s: a bound for each refresh"
    assert source.calls == 2 and source.most_reading == 1


@pytest.mark.parametrize("stage", ["older refresh under way", "older refresh finishing", "own refresh"])
def test_a_wait_cut_short_before_a_read_answers_the_refusal_returns_none(source: RotatingSource, stage: str) -> None:
    refresh = TokenRefresh(source, "default")
    a = _first_refusal(source, refresh)
    b_sent = time.monotonic()
    source.store = NEW
    if stage == "own refresh":  # R1 answers before B calls: B starts R2, which hangs
        source.release[0].set()
        assert a.answer() is True
    b_beats = Beats()
    if stage == "older refresh finishing":  # R1 answers just as B's wait is cut short: not B's answer
        def finish_r1_and_stop() -> bool:
            source.release[0].set()
            assert source.ended[0].wait(EVENT_S)
            return True

        b_beats.on_wait = finish_r1_and_stop
    b = Refusal(refresh, b_sent, b_beats)
    assert b_beats.waiting.wait(EVENT_S)
    if stage == "own refresh":
        assert source.began[1].wait(EVENT_S)
    b_beats.stop.set()  # stopping, or a claim found lost
    assert b.answer() is None
    if stage == "older refresh finishing":
        assert source.token == OLD  # what R1 read says nothing of B's token


class Watched:
    """The sender's TokenRefresh, with the moment its request first waits for it seen by the test."""

    def __init__(self, inner: TokenRefresh) -> None:
        self.inner = inner
        self.tokens = inner.tokens
        self.waiting = threading.Event()

    def __call__(self, wait: Callable[[float], bool], *args: Any, **kwargs: Any) -> bool | None:
        def watched(seconds: float) -> bool:
            self.waiting.set()
            return wait(seconds)

        return self.inner(watched, *args, **kwargs)


def _sender(source: RotatingSource, answer: Callable[[list[str]], Any]) -> tuple[Any, Watched]:
    r = rig(FakePisano([answer]))
    watched = Watched(TokenRefresh(source, "default"))
    r.sender.attempts.tokens = source  # type: ignore[assignment]
    r.sender.attempts._refresh = watched  # type: ignore[assignment]
    return r, watched


def _release_once_waiting(watched: Watched, release: threading.Event) -> None:
    """Let the older read (R1) answer once the request waits for it, not before."""

    def release_when_waiting() -> None:
        if watched.waiting.wait(EVENT_S):
            release.set()

    threading.Thread(target=release_when_waiting, daemon=True).start()


def test_a_request_whose_post_left_after_a_refresh_began_is_sent_again_with_the_new_token(
        source: RotatingSource) -> None:
    """The defect end to end: B is refused while A's refresh R1 (begun before B's POST) still reads
    the old token; B was dead-lettered and the circuit opened."""

    def refused(phones: list[str]) -> PisanoApiError:  # B's POST: the rotation lands meanwhile
        source.store = NEW
        return REFUSED

    r, watched = _sender(source, refused)
    Refusal(watched.inner, time.monotonic(), Beats())  # A's refusal: R1 begins reading the old token
    assert source.began[0].wait(EVENT_S)
    source.release[1].set()  # B's own read answers at once
    _release_once_waiting(watched, source.release[0])
    r.process([event(1)])
    assert r.kinds() == {"e1": {"delivered"}}, r.kinds()
    assert len(r.pisano.requests) == 2
    assert r.sender.destination.circuit.state()[0] == "closed"
    assert source.calls == 2


def test_a_refresh_begun_during_the_post_is_waited_for_then_the_source_read_again(source: RotatingSource) -> None:
    """A refresh begun while B's POST was in flight (A's) does not answer B's refusal, which came
    back later: B waits for it (one thread reads the source at a time), then reads again."""

    def refused(phones: list[str]) -> PisanoApiError:  # during B's POST: rotation, then A's refusal
        source.store = NEW
        Refusal(watched.inner, time.monotonic(), Beats())
        assert source.began[0].wait(EVENT_S)
        return REFUSED

    r, watched = _sender(source, refused)

    def release_r1_once_b_waits() -> None:
        if watched.waiting.wait(EVENT_S):
            assert not source.began[1].is_set(), "a second read began while R1 was still reading"
            source.release[0].set()
            source.release[1].set()

    threading.Thread(target=release_r1_once_b_waits, daemon=True).start()
    r.process([event(1)])
    assert r.kinds() == {"e1": {"delivered"}}, r.kinds()
    assert source.calls == 2 and source.most_reading == 1


def test_a_refresh_begun_while_the_post_was_in_flight_does_not_answer_a_refusal_that_came_back_later(
        source: RotatingSource) -> None:
    """The token is regenerated in Pisano (the old one revoked at once) and reaches the secret store
    a moment later. A's refusal starts R1 while B's POST is in flight; R1 reads the store before the
    new token lands; B's 401 comes back after it landed. R1 began after B's POST left, yet says
    nothing of the token B's refusal is about: only a read begun after the refusal came back does."""

    def refused(phones: list[str]) -> PisanoApiError:  # B's POST, in flight
        Refusal(watched.inner, time.monotonic(), Beats())  # A's refusal: R1 begins, reads the old token
        assert source.began[0].wait(EVENT_S)
        source.release[0].set()
        assert source.ended[0].wait(EVENT_S)
        source.store = NEW  # the new token lands, then B's refusal comes back
        return REFUSED

    r, watched = _sender(source, refused)
    source.release[1].set()  # B's own read answers at once
    r.process([event(1)])
    assert r.kinds() == {"e1": {"delivered"}}, r.kinds()
    assert source.calls == 2 and source.token == NEW
    assert r.sender.destination.circuit.state()[0] == "closed"
