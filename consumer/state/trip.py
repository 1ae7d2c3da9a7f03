"""One Redis round trip shared by several stores (README, "Contact policy"; ARCHITECTURE.md).

A batch's dedup claim, its phone reservations and its opt-out lookup touch keys of three stores
whose keys live in different slots of a Redis Cluster, so no one script can hold them all. They
need no atomicity with each other (each store's script is atomic for its own keys), only to reach
Redis together: each store *stages* its part as a `Step` (the commands it sends and how it reads
their replies), and `together` sends the commands of every step in one pipeline (one network round
trip on a single Redis; one per master on a cluster, sent to all masters before any reply is read:
`redis.run_calls`), then hands each step its own replies. An in-memory store's step does its work
in place, in order: the same answers, only no network.

A step may name a wait to run once the replies are read (`after`): the replication wait of
DEDUP_WAIT_REPLICAS (consumer/state/replication.py), when what the step wrote is about to be relied
on. Steps that name the same wait share one: a claim and a phone reservation of one packet are on
the replicas after one `WAIT` per master, not two.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import redis

from consumer.state.redis import Call, run_calls, translated

T = TypeVar("T")
U = TypeVar("U")


class Step(Generic[T]):
    """One store's part of a shared round trip. Build with `remote` (a Redis store) or `local`."""

    def __init__(self, what: str, *, client: Any = None, calls: Sequence[Call] = (),
                 read: Callable[[list[Any]], T] | None = None, run: Callable[[], T] | None = None,
                 after: tuple[Callable[[], None], Callable[[T], bool]] | None = None) -> None:
        self.what = what
        self.client = client
        self.calls = list(calls)
        self.read = read
        self.run = run
        self.after = after

    @classmethod
    def remote(cls, what: str, client: Any, calls: Sequence[Call], read: Callable[[list[Any]], T]) -> Step[T]:
        """Commands for `client`; `read` gets their replies, in order, and returns the answer."""
        return cls(what, client=client, calls=calls, read=read)

    @classmethod
    def local(cls, what: str, run: Callable[[], T]) -> Step[T]:
        """Work done in place when the trip runs (an in-memory store), in the order of the steps."""
        return cls(what, run=run)

    @classmethod
    def answered(cls, value: T) -> Step[T]:
        """Nothing to ask (an empty batch): the answer is known."""
        return cls("nothing", run=lambda: value)

    def map(self, change: Callable[[T], U]) -> Step[U]:
        """The same step, its answer passed through `change`."""
        read, run = self.read, self.run
        return Step(self.what, client=self.client, calls=self.calls,
                    read=None if read is None else (lambda replies: change(read(replies))),
                    run=None if run is None else (lambda: change(run())))

    def then_wait(self, wait: Callable[[], None], needed: Callable[[T], bool]) -> Step[T]:
        """The same step, followed by `wait` when its answer is relied on (`needed(answer)`)."""
        return Step(self.what, client=self.client, calls=self.calls, read=self.read, run=self.run,
                    after=(wait, needed))


def together(steps: Sequence[Step[Any]]) -> list[Any]:
    """Every step's answer, in order, from one pipeline per client (the stores of a process share
    one). StateStoreError when Redis does not answer, or answers an error, for any of them: the
    caller treats the whole trip as failed (each store's calls are idempotent or harmless to ask
    again: claims and reservations per tag, lookups read only)."""
    answers: list[Any] = [None] * len(steps)
    by_client: dict[int, list[int]] = {}
    for index, step in enumerate(steps):
        if step.run is not None:
            answers[index] = step.run()
        else:
            by_client.setdefault(id(step.client), []).append(index)
    for indexes in by_client.values():
        client = steps[indexes[0]].client
        calls = [call for i in indexes for call in steps[i].calls]
        with translated(", ".join(steps[i].what for i in indexes)):
            replies = run_calls(client, calls, cluster=isinstance(client, redis.RedisCluster)) if calls else []
        offset = 0
        for i in indexes:
            step = steps[i]
            assert step.read is not None
            answers[i] = step.read(replies[offset:offset + len(step.calls)])
            offset += len(step.calls)
    waits: dict[int, Callable[[], None]] = {}
    for step, answer in zip(steps, answers, strict=True):
        if step.after is not None and step.after[1](answer):
            waits.setdefault(id(step.after[0]), step.after[0])
    for wait in waits.values():
        wait()
    return answers
