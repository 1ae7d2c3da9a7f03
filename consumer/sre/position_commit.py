"""Committing a tool's consumer group position with a bound and progress lines.

librdkafka's synchronous commit has no timeout of its own: against a broker that stalls (a
frozen process, a network that drops packets without a reset) one waited the whole 300 s of a
test run, silent, and Ctrl-C could not stop it. `replay` commits at every checkpoint, so a stall
there hung an SRE's terminal, or a Kubernetes Job until its deadline, with nothing said.

The commit runs on a thread of its own while the caller waits in slices, saying so after each; it
gives up after `timeout_s` (CommitStalled). Until that thread returns, the consumer is still
inside librdkafka: nothing else may use or close it (`in_flight`), so a second commit first
waits for the first, and the tool leaves the consumer to the process's exit instead of closing it.
A commit that gave up may still land later: it only ever names positions whose records Kafka had
acknowledged, so landing late is as good as landing in time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import TopicPartition

from consumer.sre.signals import interrupt_deferred


class CommitStalled(Exception):
    """Kafka neither confirmed nor refused the commit within the bound."""


class PositionCommitter:
    """Commits `consumer`'s positions one at a time, each within `timeout_s`, saying every
    `note_every_s` that it still waits (`waiting(text)`)."""

    def __init__(self, consumer: Any, group: str, waiting: Callable[[str], None], *,
                 timeout_s: float, note_every_s: float) -> None:
        self.consumer = consumer
        self.group = group
        self.waiting = waiting
        self.timeout_s = timeout_s
        self.note_every_s = note_every_s
        # Set by the commit's thread as it returns. Not Thread.join: in Python 3.11 a signal that
        # interrupts a join (Ctrl-C, SIGTERM) marks the thread stopped while it still runs.
        self._done = threading.Event()
        self._done.set()
        self._failure: BaseException | None = None

    @property
    def in_flight(self) -> bool:
        """Whether a commit that gave up is still inside librdkafka (the consumer must not be
        closed under it: its handle would be destroyed while in use)."""
        return not self._done.is_set()

    def commit(self, positions: list[TopicPartition]) -> None:
        """Commit `positions` synchronously; KafkaException as the client raises it, or
        CommitStalled after `timeout_s`. A commit still in flight (one that gave up, or whose wait
        a signal cut short) is waited for first, within the same bound: never overtaken."""
        started = time.monotonic()
        if self.in_flight:
            self._wait(started)
        self._failure = None
        with interrupt_deferred():  # a signal in between would leave a commit "in flight" that never began
            self._done.clear()
            threading.Thread(target=self._commit, args=(positions,), name="replay-commit", daemon=True).start()
        self._wait(started)
        if self._failure is not None:
            raise self._failure

    def _commit(self, positions: list[TopicPartition]) -> None:
        try:
            self.consumer.commit(offsets=positions, asynchronous=False)
        except BaseException as exc:  # handed to the waiting thread, which raises it
            self._failure = exc
        finally:
            self._done.set()

    def _wait(self, started: float) -> None:
        deadline = started + self.timeout_s
        while not self._done.wait(max(0.0, min(self.note_every_s, deadline - time.monotonic()))):
            waited = time.monotonic() - started
            if time.monotonic() >= deadline:
                raise CommitStalled(f"Kafka did not confirm the position of group {self.group} within "
                                    f"{self.timeout_s:.0f}s")
            self.waiting(f"waiting for Kafka to confirm the position of group {self.group}: "
                         f"{waited:.0f}s of at most {self.timeout_s:.0f}s")
