"""Review of the marks' loads spread over poll turns (`LOAD_TURN_S`, consumer/outcomes/owned_marks.py):
a record read again must still end as it ended before, never be judged a second time."""

from __future__ import annotations

from typing import Any

from confluent_kafka import TopicPartition

from consumer.ingest.samples import encode, phone_for, transaction
from consumer.outcomes.owned_marks import LOAD_TURN_S
from consumer.state.memory import MemoryDeadLetterMarks
from tests.support.fake_kafka import CAMPAIGN, FakeMessage
from tests.unit.test_pipeline_review import owner, throttled_past_offset_0


def _record(partition: int, offset: int) -> FakeMessage:
    record = transaction(f"e-{partition}-{offset}", phone_for(offset), CAMPAIGN, n=offset)
    return FakeMessage("t", partition, offset, encode(record), key=f"e-{partition}-{offset}".encode())


def test_records_read_again_after_a_move_back_wait_for_their_marks_whatever_the_turns_budget() -> None:
    """A position moved back within one assignment (an offset reset) reloads the marks of the
    partitions the consume call read (`Pipeline._end_read_again`), and the copies that call took
    end as the first did. Found by review: that reload took the turn's budget, so a partition
    after one whose load took a second was not reloaded; held from the next fetch, but the copies
    already taken went on, and the records this replica had dead-lettered (a 429 storm, over now)
    were handed to the batches: one record, two outcomes."""
    now = [1_000.0]

    class Slow(MemoryDeadLetterMarks):
        def load(self, tp: tuple[str, int]) -> Any:
            now[0] += LOAD_TURN_S * 1.1  # each partition's load takes a turn's budget
            return super().load(tp)

    marks = Slow(horizon_s=3600)
    loop, consumer, producer = owner(marks)
    loop.dlq._clock = lambda: now[0]
    consumer.incremental_assign = lambda partitions: None  # type: ignore[attr-defined]
    loop._on_assign(consumer, [TopicPartition("t", 0), TopicPartition("t", 1)])
    for _ in range(2):
        loop._step()  # t[1]'s marks load the next turn
    assert loop.dlq.unloaded() == set()
    records = [_record(1, n) for n in range(4)]
    throttled_past_offset_0(loop, consumer, records[:3])  # t[1] 1 and 2 dead-lettered, 0 waits
    assert len(producer.produced) == 2 and loop.dlq.in_flight == 0
    consumer.queue = [_record(0, 0), *records[1:]]  # t[1]'s position moved back to 1
    for _ in range(3):
        loop._step()
    assert loop.tracker.moves_back == 1
    handed = sorted((e.tp[1], e.offset) for e in loop.delivery.drop(lambda e: True))
    assert (1, 1) not in handed and (1, 2) not in handed, f"dead-lettered records handed to the batches: {handed}"
    assert len(producer.produced) == 2  # not dead-lettered twice either
