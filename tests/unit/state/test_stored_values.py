"""Whatever is stored in Redis (a key written by hand, by another version, by a bug) is read
without raising out of the poll loop or a sender turn: text that is not UTF-8 is replaced, a
number that is not ASCII digits is no number (found by review: receipt and dead-letter marks
raised UnicodeDecodeError or ValueError out of the assign callback and the poll loop, on every
replica given the partition)."""

from __future__ import annotations

from typing import Any

import pytest

from consumer.outcomes.deadletter import DeadLetterQueue, Failure
from consumer.outcomes.receipts import ReceiptWriter
from consumer.state.dead_letters import RedisDeadLetterMarks
from consumer.state.receipt_marks import RedisReceiptMarks
from consumer.state.redis import Keys, stored_number, stored_text
from tests.support.fake_kafka import FakeMessage, FakeProducer


class _Pipeline:
    """Answers each command queued with what the client's foreign keys hold (None if nothing)."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self._answers, self._queued = answers, []  # type: ignore[var-annotated]

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: self._queued.append(self._answers.get(name))

    def execute(self) -> list[Any]:
        return self._queued


class _Client:
    """A redis-py client as far as these stores use it, answering with what a foreign key holds."""

    def __init__(self, zrange: list[bytes] | None = None, mget: list[Any] | None = None,
                 **pipelined: Any) -> None:
        self._zrange, self._mget = zrange or [], mget or []
        # A load reads a set's size and its pages (consumer/state/dead_letters.py `read_sets`): one page here.
        self._pipelined = {"zrange": self._zrange, "zcard": len(self._zrange),
                           "zrangebyscore": [(member, 7.0) for member in self._zrange], "mget": self._mget,
                           **pipelined}

    def zrange(self, key: str, start: int, stop: int, withscores: bool = False) -> list[Any]:
        return [(member, 7.0) for member in self._zrange] if withscores else self._zrange

    def mget(self, keys: list[str]) -> list[Any]:
        return self._mget[: len(keys)]

    def pipeline(self, transaction: bool = False) -> _Pipeline:
        return _Pipeline(self._pipelined)


@pytest.mark.parametrize(("raw", "number"), [(b"42", 42), ("42", 42), ("²", None), ("-1", None), ("4 2", None),
                                             ("", None), (None, None), ("9" * 5000, None)])
def test_a_stored_number_is_ascii_digits_or_none(raw: Any, number: int | None) -> None:
    assert stored_number(stored_text(raw) if raw is not None else None) == number


def test_stored_text_replaces_what_is_not_utf8() -> None:
    assert stored_text(b"a\xffb") == "a\ufffdb" and stored_text(7) == "7"


@pytest.mark.parametrize("foreign", [b"\xff\xfe:1:2", "²:1:2".encode()])
def test_a_malformed_receipt_mark_is_skipped_at_assignment(foreign: bytes) -> None:
    marks = RedisReceiptMarks(_Client(zrange=[foreign, b"7:1700000000000:10"]), Keys("p"), horizon_s=60)
    writer = ReceiptWriter(FakeProducer(), "receipts", group="g", hasher=None, codec=None, marks=marks)  # type: ignore[arg-type]
    writer.assigned([("t", 0)])
    assert writer._receipted.of(("t", 0)) == {7: "1700000000000:10"}


def test_a_dead_letter_mark_not_utf8_is_no_mark() -> None:
    # 0.2.0's mark not UTF-8 (the marks of this version are scores)
    client = _Client(get=b"\xff", zmscore=[None])
    marks = RedisDeadLetterMarks(client, Keys("p"), horizon_s=60, group="g", dlq_topic="dlq",
                                 previous_release=lambda: True)
    producer = FakeProducer()
    dlq = DeadLetterQueue(producer, "dlq", marks=marks)
    done: list[int] = []
    dlq.send(FakeMessage("t", 0, 5, b"v"), Failure("invalid_event", "bad"), lambda: done.append(1))
    dlq.poll()
    producer.poll()
    assert len(producer.produced) == 1 and done == [1] and dlq.in_flight == 0
    assert dlq._marks_paused_until == 0  # read, not a failure of the marks


def test_any_failure_of_the_marks_leaves_them_instead_of_the_poll_loop() -> None:
    """A failure no wait ends (not a StateStoreError: a stored value the store could not read, or
    a bug) takes its partition out of the marks, as at the partition's load (before: it paused the
    marks of every partition, and failed again after each pause); the dead-letter still goes."""
    class Broken:
        def seen(self, origins: Any) -> Any:
            raise AttributeError("a bug in a marks store")

    producer, errors = FakeProducer(), []  # type: ignore[var-annotated]
    dlq = DeadLetterQueue(producer, "dlq", marks=Broken(), on_marks_error=lambda: errors.append(1))  # type: ignore[arg-type]
    dlq.send(FakeMessage("t", 0, 5, b"v"), Failure("invalid_event", "bad"), lambda: None)
    dlq.poll()
    assert len(producer.produced) == 1 and ("t", 0) in dlq._before.without and errors == [1]
