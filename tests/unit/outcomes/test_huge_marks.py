"""A partition whose marks key holds more marks than a partition of this consumer ever has (a huge
but well-typed sorted set: hostile or corrupted content) is consumed without its marks, with one
warning naming the key, its size and what to do, counted once. Before, the load read the whole
set in one reply, which timed out, was taken for an outage, and the partition was not fetched,
asked again every MARKS_PAUSE_S for ever (tests/integration/test_huge_marks.py on a real Redis and
a Redis Cluster). An outage while a load reads its pages still holds the partition."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from consumer.outcomes.deadletter import MARKS_PAUSE_S, DeadLetterQueue, Failure
from consumer.outcomes.receipts import PhoneHasher, ReceiptCodec, ReceiptWriter
from consumer.state.dead_letters import Origin, RedisDeadLetterMarks, dead_letter_key
from consumer.state.memory import MemoryDeadLetterMarks, MemoryReceiptMarks
from consumer.state.redis import Keys
from tests.support.fake_kafka import FakeMessage, FakeProducer

TP0, TP1 = ("t", 0), ("t", 1)


def _origin(tp: tuple[str, int], offset: int) -> Origin:
    return Origin.of(FakeMessage(tp[0], tp[1], offset, b"v"))


def test_a_partition_over_the_bound_is_fetched_without_its_dead_letter_marks(
        caplog: pytest.LogCaptureFixture) -> None:
    marks = MemoryDeadLetterMarks(horizon_s=3600, group="g", dlq_topic="dlq", most=3)
    marks.mark([_origin(TP0, n) for n in range(4)], ["throttled"] * 4)  # one more than a partition has
    marks.mark([_origin(TP1, 7)], ["throttled"])
    now, errors = [1_000.0], []  # type: ignore[var-annotated]
    producer = FakeProducer()
    dlq = DeadLetterQueue(producer, "dlq", marks=marks, clock=lambda: now[0],
                          on_marks_error=lambda: errors.append("marks"))
    with caplog.at_level("WARNING", logger="consumer.outcomes.deadletter"):
        dlq.assigned([TP0, TP1])
        now[0] += MARKS_PAUSE_S
        dlq.poll()
    assert dlq.unloaded() == set()  # both fetched: before, t[0] waited for a load no wait could end
    assert dlq._before.without == {TP0} and set(dlq.marked(TP1) or {}) == {7}
    assert dlq._marks_paused_until == 0 and errors == ["marks"]  # counted once, pausing nothing
    [line] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "the dead-letter marks of t[0] cannot be used" in line and "holds 4 dead-letter marks" in line
    assert "delete that key" in line and "consumed without them" in line
    done: list[int] = []
    dlq.send(FakeMessage("t", 0, 9, b"v"), Failure("invalid_event", "bad"), lambda: done.append(9))
    dlq.poll()
    producer.poll()
    assert done == [9] and len(marks.sets.peek(marks.scope, TP0)) == 4  # produced; t[0]'s key left alone


def test_a_partition_over_the_bound_goes_on_without_its_receipt_marks(caplog: pytest.LogCaptureFixture) -> None:
    marks, kept = MemoryReceiptMarks(most=3), _origin(TP1, 7)
    marks.mark("g", [_origin(TP0, n) for n in range(4)] + [kept])
    errors: list[str] = []
    writer = ReceiptWriter(FakeProducer(), "receipts", group="g", hasher=PhoneHasher("s" * 20), codec=ReceiptCodec(),
                           marks=marks, on_marks_error=lambda: errors.append("marks"))
    with caplog.at_level("WARNING", logger="consumer.outcomes.receipts"):
        writer.assigned([TP0, TP1])
    assert writer._receipted.unloaded == set() and writer._receipted.without == {TP0}
    assert writer._receipted.of(TP1) == {7: kept.fingerprint} and not writer._marks_paused()
    assert errors == ["marks"]
    [line] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "the receipt marks of t[0] cannot be used" in line and "holds 4 receipt marks" in line


class _Paged:
    """A Redis client answering a load's pipelines: a size, then pages of `page` marks, then an
    outage (a timeout) from the `fails`-th round trip on."""

    def __init__(self, size: int, page: int, fails: int) -> None:
        self.size, self.page, self.fails, self.trips = size, page, fails, 0

    def pipeline(self, transaction: bool = False) -> Any:
        client, queued = self, []

        class Pipe:
            def zcard(self, key: str) -> None:
                queued.append(client.size if ":sending" not in key else 0)

            def zrangebyscore(self, key: str, low: str, high: str, start: int, num: int, withscores: bool) -> None:
                # one member a score: the rest of the last score read (low == high) is none
                first = 0 if low == "-inf" else int(float(low.lstrip("("))) + 1
                queued.append([] if ":sending" in key or low == high else [
                    (f"{n}:f".encode(), float(n)) for n in range(first, min(first + num, client.size))])

            def execute(self) -> list[Any]:
                client.trips += 1
                if client.trips >= client.fails:
                    raise redis.TimeoutError("Timeout reading from socket")
                return queued

        return Pipe()


def test_an_outage_while_the_pages_are_read_still_holds_the_partition() -> None:
    client, errors = _Paged(size=5, page=2, fails=2), []  # type: ignore[var-annotated]
    marks = RedisDeadLetterMarks(client, Keys("p"), horizon_s=60, group="g", dlq_topic="dlq",
                                 previous_release=lambda: False, page=2)
    dlq = DeadLetterQueue(FakeProducer(), "dlq", marks=marks, on_marks_error=lambda: errors.append("marks"))
    dlq.assigned([TP0])
    assert dlq.unloaded() == {TP0} and errors == ["marks"] and dlq._marks_away  # waits for Redis, as before
    assert dlq._before.without == set()


def test_a_load_reads_a_partition_page_by_page() -> None:
    client = _Paged(size=5, page=2, fails=99)
    marks = RedisDeadLetterMarks(client, Keys("p"), horizon_s=60, group="g", dlq_topic="dlq",
                                 previous_release=lambda: False, page=2)
    assert sorted(marks.load(TP0)) == [0, 1, 2, 3, 4] and client.trips == 3  # the size with the first page
    assert dead_letter_key("p", "g:dlq", *TP0) == "{p:dl:g:dlq:t:0}"


def test_a_turns_loads_stop_after_their_budget_and_the_next_turn_loads_the_rest() -> None:
    """Each partition's load is bounded (seconds at MAX_PARTITION_MARKS), but many at one
    assignment would add up past the poll loop's liveness: a call starts no load once
    LOAD_TURN_S was spent (one always starts), and the next call loads the rest."""
    from consumer.outcomes.owned_marks import LOAD_TURN_S, OwnedMarks

    now, loaded = [0.0], []  # type: ignore[var-annotated]

    def load(tp: tuple[str, int]) -> dict[int, str]:
        now[0] += LOAD_TURN_S * 0.6  # a slow load
        loaded.append(tp)
        return {1: "f"}

    owned: OwnedMarks[str] = OwnedMarks(load)
    tps = [("t", n) for n in range(5)]
    owned.assigned(tps)
    owned.load_all(LOAD_TURN_S, lambda: now[0])
    assert loaded == tps[:2] and owned.unloaded == set(tps[2:])
    owned.load_all(LOAD_TURN_S, lambda: now[0])
    owned.load_all(LOAD_TURN_S, lambda: now[0])
    assert loaded == tps and owned.unloaded == set()
    owned.assigned([("t", 9)])
    now[0] += 100
    owned.load_all(0.0, lambda: now[0])  # the first always loads
    assert loaded[-1] == ("t", 9)


def test_partitions_whose_marks_wait_for_a_later_turn_are_fetched_once_loaded(
        caplog: pytest.LogCaptureFixture) -> None:
    """The pipeline holds a partition whose dead-letter or receipt marks a later turn loads (not
    read before: a record dead-lettered or receipted before would be judged again), and fetches it
    once they are; no warning of Redis failing (it did not)."""
    from confluent_kafka import TopicPartition

    from consumer.outcomes.owned_marks import LOAD_TURN_S
    from tests.unit.test_pipeline_review import owner

    now = [1_000.0]

    class Slow(MemoryDeadLetterMarks):
        def load(self, tp: tuple[str, int]) -> Any:
            now[0] += LOAD_TURN_S * 0.6
            return super().load(tp)

    loop, consumer, _ = owner(Slow(horizon_s=3600))
    loop.dlq._clock = lambda: now[0]
    paused, resumed = [], []  # type: ignore[var-annotated]
    consumer.incremental_assign = lambda partitions: None  # type: ignore[attr-defined]
    consumer.pause = lambda ps: paused.extend((p.topic, p.partition) for p in ps)  # type: ignore[method-assign]
    consumer.resume = lambda ps: resumed.extend((p.topic, p.partition) for p in ps)  # type: ignore[method-assign]
    with caplog.at_level("INFO", logger="consumer.pipeline"):
        loop._on_assign(consumer, [TopicPartition("t", n) for n in range(4)])
    assert set(paused) == {("t", 2), ("t", 3)} and loop.dlq.unloaded() == {("t", 2), ("t", 3)}
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    assert any("loaded over the next poll turns" in r.getMessage() for r in caplog.records)
    resumed.clear()
    loop._step()
    assert loop.dlq.unloaded() == set() and sorted(resumed) == [("t", 2), ("t", 3)]


def test_receipt_marks_a_later_turn_loads_are_deferred_not_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    """`ReceiptWriter.deferred`: the partitions whose receipt marks wait for a later turn (the
    pipeline holds them); none while the marks pause after a failure (receipts go on without them
    then, as before)."""
    from consumer.outcomes import owned_marks
    from consumer.outcomes.owned_marks import LOAD_TURN_S

    now = [0.0]
    monkeypatch.setattr(owned_marks.time, "monotonic", lambda: now[0])

    class Slow(MemoryReceiptMarks):
        def receipted(self, group: str, tp: tuple[str, int]) -> dict[int, str]:
            now[0] += LOAD_TURN_S * 0.6
            return super().receipted(group, tp)

    errors: list[str] = []
    writer = ReceiptWriter(FakeProducer(), "receipts", group="g", hasher=PhoneHasher("s" * 20), codec=ReceiptCodec(),
                           marks=Slow(), on_marks_error=lambda: errors.append("marks"))
    writer.assigned([("t", n) for n in range(3)])
    assert writer.deferred() == {("t", 2)} and not errors
    writer.poll()
    assert writer.deferred() == set() and writer._receipted.unloaded == set()
    writer._marks_paused_until = float("inf")  # a failure: receipts go on without the marks
    writer._receipted.assigned([("t", 5)])
    assert writer.deferred() == set()
