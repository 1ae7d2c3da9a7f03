"""A record Kafka refuses for itself is a counted refusal, not a replay that stops at it on every
run; the records batched with it are sent again (consumer/sre/replay.py, _Publisher)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from confluent_kafka import KafkaError

from consumer.sre.replay import Refusal, ReplayError, ReplaySummary, Verdict, _Publisher
from tests.unit.sre.test_dlq_filters import CAMPAIGN_B, FAILED_AT, letter

LIMIT = 1000  # the target topic's max.message.bytes, in this fake

Report = Callable[[KafkaError | None, Any], None]


class BatchingBroker:
    """Delivers what was produced since the last flush as one batch, judged whole like a broker:
    over LIMIT bytes, every record of it is refused."""

    def __init__(self, error: int = KafkaError.MSG_SIZE_TOO_LARGE) -> None:
        self.error = error
        self.pending: list[tuple[bytes, Report]] = []
        self.stored: list[bytes] = []

    def produce(self, topic: str, key: Any = None, value: bytes = b"", headers: Any = None,
                on_delivery: Report | None = None) -> None:
        assert on_delivery is not None
        self.pending.append((value, on_delivery))

    def poll(self, timeout: float = 0) -> int:
        return 0

    def flush(self, timeout: float = 0) -> int:
        batch, self.pending = self.pending, []
        refused = sum(len(value) for value, _ in batch) > LIMIT
        for value, report in batch:
            if not refused:
                self.stored.append(value)
            report(KafkaError(self.error) if refused else None, None)
        return 0


def test_only_the_record_refused_alone_is_refused_the_others_are_sent_again() -> None:
    broker = BatchingBroker()
    publisher = _Publisher(broker, None)
    small = [replace(letter(offset=n), value=b"s" * 100) for n in range(3)]
    big = replace(letter(offset=9), value=b"b" * (LIMIT + 1))
    for record in (small[0], big, small[1], small[2]):
        publisher.publish("transactions", record)
    refused = publisher.wait_acknowledged()
    assert refused == [Refusal(big, "transactions", "MSG_SIZE_TOO_LARGE")]
    assert sorted(broker.stored) == [b"s" * 100] * 3
    assert publisher.wait_acknowledged() == []  # told once


def test_any_other_refusal_stops_the_replay_with_what_to_do() -> None:
    publisher = _Publisher(BatchingBroker(KafkaError.TOPIC_AUTHORIZATION_FAILED), None)
    publisher.publish("transactions", replace(letter(), value=b"b" * (LIMIT + 1)))
    with pytest.raises(ReplayError, match="Kafka refused a re-published record"):
        publisher.wait_acknowledged()


def test_a_refused_record_moves_from_replayed_to_refused_in_every_count() -> None:
    summary = ReplaySummary(read=2)
    stale_before = FAILED_AT + timedelta(days=1)
    kept, refused = letter(offset=1), letter(offset=2)
    refused = replace(refused, campaign_id=CAMPAIGN_B)
    for record in (kept, refused):
        summary.verdicts[Verdict.REPLAY] += 1
        summary.add_replay(record, "transactions", stale_before)
    summary.refused_by_kafka(Refusal(refused, "transactions", "MSG_SIZE_TOO_LARGE"), stale_before)
    assert summary.verdicts == {Verdict.REPLAY: 1, Verdict.REFUSED_BY_KAFKA: 1}
    assert (summary.matched, summary.replayed, summary.stale) == (2, 1, 1)
    assert summary.by_campaign == {kept.campaign_label: 1} and summary.by_target == {"transactions": 1}
    assert summary.kafka_refusals == {"MSG_SIZE_TOO_LARGE (transactions)": 1}
