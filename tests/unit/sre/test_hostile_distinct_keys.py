"""What `dlq stats` and `replay` keep per distinct value a record chose is bounded (found by review, sre).

The dead-letter topic is input: whoever can write to it chooses the error code (any number of 18
digits), the campaign (any UUID) and the original topic (any valid name) of each record. `dlq stats`
kept a row (with its own origin set) per distinct (code, reason, campaign), and `replay` a count per
distinct topic refused as `other topic` and per malformed reason: a million records each with its
own campaign or topic were a million rows, about a gigabyte and a table of a million lines (a pod
killed for its memory, no table at all). Past a bound, new values are counted together as `(other)`.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from click.testing import CliRunner

import consumer.sre.dlq_read as dlq_read
import consumer.sre.dlq_stats as dlq_stats
from consumer.cli import main
from consumer.sre.dlq_stats import DlqStats
from tests.support.dead_letters import StatsLetter
from tests.unit.sre.fake_dlq import DLQ, Cluster, DlqMessage, install, replay_env
from tests.unit.sre.test_dlq_filters import TOKEN_FAILURE, dead_lettered
from tests.unit.sre.test_replay_run import RECENT


def _campaign(n: int) -> str:
    return f"{n:08x}-0000-4000-8000-000000000000"


def test_dlq_stats_rows_are_bounded_and_every_record_still_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dlq_stats, "MAX_ROWS", 3)
    stats = DlqStats("dlq")
    for n in range(10):
        stats.add(StatsLetter(("t", 0, n), campaign_label=_campaign(n), failed_at=datetime(2026, 1, 2, tzinfo=UTC)))
    stats.add(StatsLetter(("t", 0, 0), campaign_label=_campaign(0)))  # a known row still counts in its own
    assert stats.records == 11 and len(stats.origins) == 10
    assert len(stats.rows) == 4, list(stats.rows)
    assert sum(row.records for row in stats.rows.values()) == 11
    assert stats.rows[("13001", "pisano_error", _campaign(0))].records == 2
    table = "\n".join(stats.table())
    assert "(other)" in table and "7 record(s)" in table, table
    shown = stats.as_json()
    assert shown["other_records"] == 7 and len(shown["rows"]) == 4


def test_replay_counts_of_hostile_topics_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    replay_env(monkeypatch)
    monkeypatch.setattr(dlq_read, "MAX_DISTINCT", 2)
    records = []
    for n in range(6):
        source = dead_lettered(TOKEN_FAILURE, offset=100 + n, failed_at=RECENT)
        named = f"elsewhere-{n}".encode()
        headers = [(k, named if k == "dlq.original.topic" else v) for k, v in source.headers() or []]
        records.append(DlqMessage(headers, topic=DLQ, partition=0, offset=n, key=f"evt-{n}".encode()))
    cluster = Cluster(records)
    install(monkeypatch, cluster)
    from consumer.config.settings import Settings
    from consumer.sre.dlq_read import Filters
    from consumer.sre.replay import ReplayPlan, Verdict, run_replay

    summary = run_replay(Settings(kafka_topics=["transactions"]), ReplayPlan(DLQ, "g", Filters()))
    assert summary.verdicts[Verdict.NOT_CONSUMER_TOPIC] == 6 and not cluster.published
    assert len(summary.not_consumer_topics) == 3, summary.not_consumer_topics
    assert summary.not_consumer_topics["(other)"] == 4
    result = CliRunner().invoke(main, ["replay", "--group", "h"])
    assert result.exit_code == 3 and "(other) 4" in result.output, result.output


def test_replay_breakdown_of_hostile_campaigns_and_codes_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by review (h-rev): the breakdown of what a run replays (by error code, by campaign)
    kept a count per distinct value too, copied at every checkpoint and printed a line each: a
    `replay --dry-run` of a DLQ naming a million campaigns was the gigabyte and million-line table
    the bound above was for. Every replayed record is still counted, and Kafka's refusals still
    take their record's count back."""
    from dataclasses import replace

    replay_env(monkeypatch)
    monkeypatch.setattr(dlq_read, "MAX_DISTINCT", 2)
    records = []
    for n in range(6):
        failure = replace(TOKEN_FAILURE, campaign_id=_campaign(n), code=13001 + n)
        source = dead_lettered(failure, offset=100 + n, failed_at=RECENT)
        records.append(DlqMessage(source.headers(), topic=DLQ, partition=0, offset=n, key=f"evt-{n}".encode()))
    cluster = Cluster(records)
    install(monkeypatch, cluster)
    from consumer.config.settings import Settings
    from consumer.sre.dlq_read import Filters
    from consumer.sre.replay import ReplayPlan, Verdict, run_replay

    summary = run_replay(Settings(kafka_topics=["transactions"]), ReplayPlan(DLQ, "g", Filters(), dry_run=True))
    assert summary.verdicts[Verdict.REPLAY] == 6
    for counter in (summary.by_campaign, summary.by_code):
        assert len(counter) == 3 and counter["(other)"] == 4 and sum(counter.values()) == 6, counter


def test_a_kafka_refusal_takes_back_the_count_its_record_had_in_other(monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    from consumer.sre.replay import Refusal, ReplaySummary, Verdict
    from tests.unit.sre.test_dlq_filters import letter

    monkeypatch.setattr(dlq_read, "MAX_DISTINCT", 2)
    summary = ReplaySummary()
    letters = [letter(replace(TOKEN_FAILURE, campaign_id=_campaign(n), code=13001 + n), offset=n) for n in range(3)]
    for each in letters:
        summary.verdicts[Verdict.REPLAY] += 1
        summary.add_replay(each, "transactions", None)
    assert summary.by_campaign["(other)"] == 1
    summary.refused_by_kafka(Refusal(letters[2], "transactions", "MSG_SIZE_TOO_LARGE"), None)
    assert "(other)" not in summary.by_campaign and "(other)" not in summary.by_code
    assert sum(summary.by_campaign.values()) == sum(summary.by_code.values()) == 2

