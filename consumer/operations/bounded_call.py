"""A blocking client call given up after a bound, for the steps a revoke or a shutdown must finish.

librdkafka waits for the group's coordinator for as long as the member's session lasts: a
synchronous commit with the broker away returned only after 45.7 s (its `session.timeout.ms`),
and a close under a cooperative rebalance was seen to wait for good. At a revoke and at shutdown
the consumer wants the answer if it comes soon, and must go on if it does not: past the pod's
grace the kubelet kills it, cutting the group leave and whatever else was left to do. So the call
runs in a thread of its own, joined for at most the bound; a call given up on goes on in that
daemon thread until the client answers or the process exits, and its result is dropped.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Bounded(Generic[T]):
    """What a bounded call came to: `done` once it returned or raised within its bound."""

    def __init__(self) -> None:
        self.done = False
        self.value: T | None = None
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None

    def running(self) -> bool:
        """Whether the call is still under way (given up on, its client has not answered yet): the
        client must not be closed meanwhile, which would free what the call is using."""
        return self.thread is not None and self.thread.is_alive()


def call_within(call: Callable[[], T], timeout: float, name: str) -> Bounded[T]:
    """Run `call`, waiting at most `timeout` seconds for it. Its exception, if it raised one in
    time, is in `error` (raised by nothing here: the caller decides what a failure means)."""
    result: Bounded[T] = Bounded()
    lock = threading.Lock()
    given_up = False
    finished = threading.Event()

    def run() -> None:
        value: T | None = None
        error: BaseException | None = None
        try:
            value = call()
        except BaseException as exc:  # the caller's to judge, never printed by threading
            error = exc
        with lock:
            if given_up:  # too late: the caller went on without it
                return
            result.value, result.error, result.done = value, error, True
        finished.set()

    # Short-lived: it ends when the call does (tests/unit/operations/test_long_lived_threads.py).
    result.thread = threading.Thread(target=run, name=name, daemon=True)
    result.thread.start()
    finished.wait(max(0.0, timeout))
    with lock:
        given_up = True
    return result
