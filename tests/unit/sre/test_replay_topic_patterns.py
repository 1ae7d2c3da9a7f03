"""`replay` to a fleet that subscribes by pattern (found by review, sre).

The consumers take `^...` entries of KAFKA_TOPICS as librdkafka's regular expressions (README,
"After the state is lost or rolled back"; consumer/ingest/membership.py). `replay` compared each
dead-letter's topic with the entries as names, so for such a fleet every record was refused as
`other topic` and the group's position committed past them all: the run that should have replayed
a token outage's dead-letters re-published none, and the next run with the same filters found
nothing new. The advised way round, `--to-topic`, sends the records of every source topic to one.
"""

from __future__ import annotations

import pytest

from consumer.config.settings import Settings
from consumer.outcomes.deadletter import dead_letter_headers
from consumer.sre.dlq_read import Filters
from consumer.sre.replay import ReplayPlan, Verdict, run_replay
from tests.unit.sre.fake_dlq import DLQ, Cluster, DlqMessage, install
from tests.unit.sre.test_dlq_filters import TOKEN_FAILURE, FakeMessage
from tests.unit.sre.test_replay_run import RECENT


def _from(topic: str, offset: int) -> DlqMessage:
    source = FakeMessage(None, topic=topic, offset=100 + offset, key=f"evt-{topic}-{offset}".encode())
    headers = dead_letter_headers(source, TOKEN_FAILURE, RECENT)
    return DlqMessage(list(headers), topic=DLQ, partition=0, offset=offset, key=source.key())


def test_a_pattern_subscription_replays_each_record_to_its_own_topic(monkeypatch: pytest.MonkeyPatch) -> None:
    records = [_from("transactions", 0), _from("payments", 1), _from("transactions", 2)]
    cluster = Cluster(records, topics={DLQ, "transactions", "payments"})
    install(monkeypatch, cluster)
    summary = run_replay(Settings(kafka_topics=["^(transactions|payments)$"]), ReplayPlan(DLQ, "g", Filters()))
    assert summary.verdicts[Verdict.NOT_CONSUMER_TOPIC] == 0, summary.not_consumer_topics
    assert [(topic, key) for topic, key, _, _ in cluster.published] == [
        ("transactions", b"evt-transactions-0"), ("payments", b"evt-payments-1"),
        ("transactions", b"evt-transactions-2")]
    assert summary.replayed == 3 and cluster.committed["g"] == 3


def test_a_pattern_never_makes_a_dead_letter_or_receipt_topic_a_target(monkeypatch: pytest.MonkeyPatch) -> None:
    # A pattern wide enough to match the DLQ and the receipts (a forged origin naming either): refused,
    # as a named topic outside KAFKA_TOPICS is; the records of the pattern's real topics still go.
    records = [_from(DLQ, 0), _from("pisano-sms.receipts", 1), _from("pisano-sms.events", 2)]
    cluster = Cluster(records, topics={DLQ, "pisano-sms.receipts", "pisano-sms.events"})
    install(monkeypatch, cluster)
    settings = Settings(kafka_topics=["^pisano-sms\\..*"], outcome_topic="pisano-sms.receipts",
                        outcome_phone_salt="0123456789abcdef0123")
    summary = run_replay(settings, ReplayPlan(DLQ, "g", Filters()))
    assert [topic for topic, _, _, _ in cluster.published] == ["pisano-sms.events"]
    assert summary.verdicts[Verdict.NOT_CONSUMER_TOPIC] == 2
    assert set(summary.not_consumer_topics) == {DLQ, "pisano-sms.receipts"}


def test_a_pattern_that_matches_nothing_still_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = Cluster([_from("transactions", 0)])
    install(monkeypatch, cluster)
    for entries in (["^payments-.*"], ["^(unclosed"]):  # the second: not a pattern Python reads
        cluster.published.clear()
        summary = run_replay(Settings(kafka_topics=entries), ReplayPlan(DLQ, "g-" + entries[0], Filters()))
        assert summary.verdicts[Verdict.NOT_CONSUMER_TOPIC] == 1 and not cluster.published
