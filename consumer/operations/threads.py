"""Threads that live as long as the process, made so that the liveness watch cannot miss one.

`long_lived(target, name=..., role=...)` makes such a thread (a daemon) wherever a component needs
one: it remembers what ended it (an exception that is not an `Exception` ends any loop here: a
library's `sys.exit`, a token provider's own `BaseException`), tells whoever watches it
(`Health.watch`, consumer/operations/health.py), and is gathered by every `collecting()` block
open in the thread that made it. `app.build_pipeline` builds inside one and watches all it
gathered (and its delivery factory, the senders it made), so a component that starts a thread of
its own at construction (a token watcher, the send-window clock, the limiter heartbeat), now or
added later, is watched without anyone having to remember it. It is the one way: `Health.watch`
takes only these (README "Health"; a unit test, tests/unit/operations/test_long_lived_threads.py,
makes every other `threading.Thread(` of the consumer a judged exception: short-lived, or not the
consumer's process).

A stdlib-only module: the config and state layers make threads here without importing the health
server.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)

Ended = Callable[["LongLivedThread", BaseException], None]

_open = threading.local()  # the creating thread's open `collecting()` lists


class LongLivedThread(threading.Thread):
    """A daemon thread that says what ended it (`ended_by`) to its watchers, even to one that
    began watching after it started or ended."""

    def __init__(self, target: Callable[[], object], *, name: str, role: str) -> None:
        super().__init__(target=target, name=name, daemon=True)
        self.role = role  # a bounded metric label (consumer/operations/metrics.py THREAD_ROLES)
        self.ended_by: BaseException | None = None
        self._watchers: list[Ended] = []
        self._lock = threading.Lock()

    def when_ended(self, watcher: Ended) -> None:
        """Call `watcher(thread, exception)` once an exception ends it (at once if one did)."""
        with self._lock:
            ended_by = self.ended_by
            if ended_by is None:
                self._watchers.append(watcher)
        if ended_by is not None:
            watcher(self, ended_by)

    def run(self) -> None:
        try:
            super().run()
        except BaseException as exc:  # the thread ends here whatever it was: said once, by its watchers
            with self._lock:
                self.ended_by = exc
                watchers = list(self._watchers)
            for watcher in watchers:
                watcher(self, exc)
            if not watchers:  # nobody watches (a one-shot command): still not a bare traceback
                log.error("thread %s ended by %s", self.name, type(exc).__name__, exc_info=exc,
                          extra={"reason": "thread_ended"})
        # A loop that returns was asked to stop: nothing to say.


def long_lived(target: Callable[[], object], *, name: str, role: str) -> LongLivedThread:
    """A thread that lives as long as the process (not started), gathered by the open `collecting()` blocks."""
    thread = LongLivedThread(target, name=name, role=role)
    for gathered in getattr(_open, "lists", ()):
        gathered.append(thread)
    return thread


@contextmanager
def collecting() -> Iterator[list[LongLivedThread]]:
    """The long-lived threads made in this thread within the block (`app.build_pipeline` watches them)."""
    lists: list[list[LongLivedThread]] = _open.__dict__.setdefault("lists", [])
    gathered: list[LongLivedThread] = []
    lists.append(gathered)
    try:
        yield gathered
    finally:
        lists.pop()  # blocks nest: the last opened is this one
