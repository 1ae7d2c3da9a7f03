"""`run_replay` and the `replay` command end to end on an in-memory DLQ (tests/unit/sre/fake_dlq.py)."""

from __future__ import annotations

import os
import signal
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner
from confluent_kafka import KafkaError, KafkaException

from consumer.cli import main
from consumer.config.settings import Settings
from consumer.sre.dlq_read import Filters
from consumer.sre.replay import ReplayPlan, run_replay
from tests.unit.sre.fake_dlq import DLQ, Cluster, DlqMessage, FakeProducer, install, replay_env
from tests.unit.sre.test_dlq_filters import CAMPAIGN_A, TOKEN_FAILURE, dead_lettered

# Within any DEDUP_HORIZON_S of the run: `replay` holds older dead-letters unless --past-horizon.
RECENT = datetime.now(UTC) - timedelta(hours=1)


def dlq_records(count: int) -> list[DlqMessage]:
    out = []
    for n in range(count):
        source = dead_lettered(TOKEN_FAILURE, offset=100 + n, failed_at=RECENT)
        out.append(DlqMessage(source.headers(), topic=DLQ, partition=0, offset=n, key=f"evt-{n}".encode()))
    return out


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    replay_env(monkeypatch)


def test_a_run_publishes_each_origin_once_and_commits_behind_it(monkeypatch: pytest.MonkeyPatch) -> None:
    records = dlq_records(2)
    # Dead-lettered twice: the same origin, key and value.
    records.append(DlqMessage(records[0].headers(), topic=DLQ, partition=0, offset=2, key=b"evt-0"))
    cluster = Cluster(records)
    install(monkeypatch, cluster)
    summary = run_replay(Settings(kafka_topics=["transactions"]), ReplayPlan(DLQ, "g", Filters()))
    assert [key for _, key, _, _ in cluster.published] == [b"evt-0", b"evt-1"]
    assert (summary.replayed, summary.read, cluster.committed["g"]) == (2, 3, 3)


def test_ctrl_c_says_what_was_kept_and_how_to_resume(monkeypatch: pytest.MonkeyPatch, env: None) -> None:
    def operator(offset: int) -> None:
        if offset == 2:
            raise KeyboardInterrupt

    cluster = Cluster(dlq_records(4), on_read=operator)
    install(monkeypatch, cluster)
    result = CliRunner().invoke(main, ["replay", "--group", "g"])
    assert len(cluster.published) == 2 and cluster.committed["g"] == 2  # what was acknowledged is kept
    assert result.exit_code == 130, result.output
    assert "replayed" in result.output and "2" in result.output  # the counts so far
    assert "interrupted" in result.output and "run the same command again" in result.output


def test_without_kafka_topics_or_to_topic_nothing_is_read_or_committed(monkeypatch: pytest.MonkeyPatch,
                                                                        env: None) -> None:
    # Found in review: every record was refused as `other topic` and the group's position committed
    # past them all, so the run the summary advised (`--to-topic`, same filters, so same group)
    # then read nothing.
    monkeypatch.delenv("KAFKA_TOPICS")
    cluster = Cluster(dlq_records(3))
    install(monkeypatch, cluster)
    for dry_run in ([], ["--dry-run"]):
        result = CliRunner().invoke(main, ["replay", "--error-code", "13001", *dry_run])
        assert result.exit_code == 2, result.output
        assert "KAFKA_TOPICS" in result.output and "--to-topic" in result.output
    assert cluster.committed == {} and cluster.published == []
    # Without KAFKA_TOPICS nothing tells that the target is one the fleet reads: said explicitly.
    result = CliRunner().invoke(main, ["replay", "--error-code", "13001", "--to-topic", "transactions"])
    assert result.exit_code == 2 and "--to-unconsumed-topic" in result.output, result.output
    result = CliRunner().invoke(main, ["replay", "--error-code", "13001", "--to-topic", "transactions",
                                       "--to-unconsumed-topic"])
    assert result.exit_code == 0, result.output
    assert len(cluster.published) == 3


def test_records_refused_for_their_topic_are_replayable_as_the_summary_says(monkeypatch: pytest.MonkeyPatch,
                                                                              env: None) -> None:
    monkeypatch.setenv("KAFKA_TOPICS", "payments")  # the DLQ's records came from `transactions`
    cluster = Cluster(dlq_records(3))
    install(monkeypatch, cluster)
    first = CliRunner().invoke(main, ["replay", "--error-code", "13001"])
    assert first.exit_code == 3 and "refused: other topic" in first.output
    line = next(text for text in first.output.splitlines() if "refused: other topic" in text)
    assert "--to-topic" in line and "--group" in line  # the position is past them: a new group
    assert "--to-unconsumed-topic" in line  # `transactions` is not in this run's KAFKA_TOPICS either
    again = CliRunner().invoke(main, ["replay", "--error-code", "13001", "--to-topic", "transactions",
                                      "--to-unconsumed-topic", "--group", "pisano-sms-replay-retarget"])
    assert again.exit_code == 0 and len(cluster.published) == 3


def test_a_run_that_finds_nothing_says_why_and_what_to_do(monkeypatch: pytest.MonkeyPatch, env: None) -> None:
    cluster = Cluster(dlq_records(3))
    install(monkeypatch, cluster)
    unmatched = CliRunner().invoke(main, ["replay", "--error-code", "13034"])
    assert unmatched.exit_code == 0 and "no record matched the filters" in unmatched.output
    assert "dlq stats" in unmatched.output
    # A first run to the wrong --to-topic moved the group (a hash of the filters only) past them.
    CliRunner().invoke(main, ["replay", "--error-code", "13001", "--to-topic", "transactions"])
    again = CliRunner().invoke(main, ["replay", "--error-code", "13001"])
    assert again.exit_code == 0, again.output
    assert "3 record(s)" in again.output and "--from-beginning" in again.output and "--group" in again.output


@pytest.mark.parametrize("reason", ["ambiguous", "stale"])
def test_dead_letters_of_unknown_fate_are_replayed_only_when_their_reason_is_named(
        monkeypatch: pytest.MonkeyPatch, env: None, reason: str) -> None:
    # An `ambiguous` event may have been delivered (its request's fate is unknown), a `stale` one
    # may have been delivered longer ago than the dedup horizon: replayed, either could reach its
    # customer a second time. A replay with no --reason (or another one) used to take them with the
    # rest; now only a run that names the reason does, after the SRE checked with Pisano.
    from consumer.outcomes.deadletter import Failure

    unknown = dead_lettered(Failure(reason, "fate unknown", campaign_id=CAMPAIGN_A), offset=7, failed_at=RECENT)
    cluster = Cluster([*dlq_records(1), DlqMessage(unknown.headers(), topic=DLQ, partition=0, offset=1)])
    install(monkeypatch, cluster)
    for args in ([], ["--campaign", CAMPAIGN_A], ["--reason", "pisano_error"]):
        result = CliRunner().invoke(main, ["replay", "--dry-run", *args])
        assert result.exit_code == (3 if args[:1] != ["--reason"] else 0), result.output  # held: not replayed
        held = next(line for line in result.output.splitlines() if "fate unknown" in line)
        assert held.split()[3] == ("1" if args[:1] != ["--reason"] else "0"), result.output
        if args[:1] != ["--reason"]:
            assert f"--reason {reason}" in held and "check with Pisano" in held, held
    result = CliRunner().invoke(main, ["replay"])
    assert result.exit_code == 3, result.output
    assert [key for _, key, _, _ in cluster.published] == [b"evt-0"]
    monkeypatch.setenv("REPLAY_SIGNING_KEY", "k" * 32)  # an ambiguous replay is signed, or it does not start
    named = CliRunner().invoke(main, ["replay", "--reason", reason])  # its own group: reads from the start
    assert named.exit_code == 0, named.output
    assert len(cluster.published) == 2
    if reason == "stale":
        warning = next(line for line in named.output.splitlines() if "stale" in line and "warning" in line)
        assert "1 " in warning and "never delivered" in warning


def test_a_replay_of_ambiguous_dead_letters_without_the_signing_key_does_not_start(monkeypatch: pytest.MonkeyPatch,
                                                                                   env: None) -> None:
    # Found by review (sre): without REPLAY_SIGNING_KEY the run re-published every ambiguous
    # dead-letter unsigned, committed its position past them and said `replayed`, with a warning
    # after the fact; the consumers dead-letter an unsigned ambiguous replay as ambiguous again and
    # never send it (README, "Signed replays"), so nothing it did could reach a customer, and each
    # such record came back to the DLQ a second time, under a new origin. The chart already refuses
    # to render such a Job; the command now refuses to start, saying what to set.
    from consumer.outcomes.deadletter import Failure

    unknown = dead_lettered(Failure("ambiguous", "fate unknown"), offset=7, failed_at=RECENT)
    cluster = Cluster([DlqMessage(unknown.headers(), topic=DLQ, partition=0, offset=0, key=b"amb")])
    install(monkeypatch, cluster)
    refused = CliRunner().invoke(main, ["replay", "--reason", "ambiguous"])
    assert refused.exit_code == 2, refused.output
    said = " ".join(refused.output.split())
    assert "REPLAY_SIGNING_KEY" in said and "dead-letter" in said, said
    assert not cluster.published and not cluster.committed
    dry = CliRunner().invoke(main, ["replay", "--reason", "ambiguous", "--dry-run"])  # counting needs no key
    assert dry.exit_code == 0, dry.output
    monkeypatch.setenv("REPLAY_SIGNING_KEY", "k" * 32)
    signed = CliRunner().invoke(main, ["replay", "--reason", "ambiguous"])
    assert signed.exit_code == 0, signed.output
    [(_, key, _, headers)] = cluster.published
    assert key == b"amb" and "dlq.replay.signature" in dict(headers)


def test_the_run_advised_for_held_dead_letters_reads_them_where_they_are(monkeypatch: pytest.MonkeyPatch,
                                                                          env: None) -> None:
    # Held from a run of another topic (--from-topic, an old DLQ), the advised `--reason ambiguous`
    # alone would read DLQ_TOPIC and never reach them; the advice names the topic (and the target:
    # without the --to-topic the run needed, they would be refused as `other topic`). A dry run
    # commits nothing: its group's position is not past them yet.
    from consumer.outcomes.deadletter import Failure

    old, target = "pisano-sms.dlq-2025", "transactions-v2"
    monkeypatch.setenv("KAFKA_TOPICS", f"transactions,{target}")  # a target the fleet reads
    unknown = dead_lettered(Failure("ambiguous", "fate unknown"), offset=7, failed_at=RECENT)
    cluster = Cluster([*dlq_records(1), DlqMessage(unknown.headers(), topic=old, partition=0, offset=1)],
                      topics={DLQ, old, "transactions", target})
    install(monkeypatch, cluster)
    dry = CliRunner().invoke(main, ["replay", "--dry-run", "--from-topic", old, "--to-topic", target])
    assert dry.exit_code == 3, dry.output  # one held
    held = next(line for line in dry.output.splitlines() if "fate unknown" in line)
    assert f"--reason ambiguous --from-topic {old} --to-topic {target}" in held, held
    assert "position is past them" not in held, held
    real = CliRunner().invoke(main, ["replay", "--from-topic", old, "--to-topic", target])
    held = next(line for line in real.output.splitlines() if "fate unknown" in line)
    assert f"--reason ambiguous --from-topic {old} --to-topic {target}" in held and "position is past them" in held
    monkeypatch.setenv("REPLAY_SIGNING_KEY", "k" * 32)  # an ambiguous replay is signed, or it does not start
    advised = CliRunner().invoke(main, ["replay", "--reason", "ambiguous", "--from-topic", old, "--to-topic", target])
    assert advised.exit_code == 0, advised.output
    assert [topic for topic, _, _, _ in cluster.published] == [target, target]


def test_dead_letters_older_than_the_horizon_are_replayed_only_with_past_horizon(monkeypatch: pytest.MonkeyPatch,
                                                                                 env: None) -> None:
    # A replay is a new record: nothing stops its event but the delivered mark, which lasts
    # DEDUP_HORIZON_S. A dead-letter older than that may have been delivered by an earlier replay
    # (another filter set, so another group, which reads it again), and would reach its customer
    # a second time. It used to be re-published with a warning printed after the fact.
    monkeypatch.setenv("DEDUP_HORIZON_S", str(7 * 86_400))
    old = dead_lettered(TOKEN_FAILURE, offset=7, failed_at=datetime.now(UTC) - timedelta(days=8))
    cluster = Cluster([*dlq_records(1), DlqMessage(old.headers(), topic=DLQ, partition=0, offset=1, key=b"old")])
    install(monkeypatch, cluster)
    for run in (["--dry-run"], []):
        result = CliRunner().invoke(main, ["replay", "--error-code", "13001", *run])
        assert result.exit_code == 3, result.output  # one held
        held = next(line for line in result.output.splitlines() if "held: past horizon" in line)
        assert held.split()[3] == "1" and "--past-horizon" in held and "check with Pisano" in held, held
    assert [key for _, key, _, _ in cluster.published] == [b"evt-0"]
    named = CliRunner().invoke(main, ["replay", "--error-code", "13001", "--past-horizon"])  # its own group
    assert named.exit_code == 0, named.output
    assert [key for _, key, _, _ in cluster.published] == [b"evt-0", b"evt-0", b"old"]
    assert any("warning" in line and "DEDUP_HORIZON_S" in line for line in named.output.splitlines())


def test_the_horizon_hold_leaves_the_consumers_wait_before_a_claim(monkeypatch: pytest.MonkeyPatch,
                                                                   env: None) -> None:
    # Found in review: the hold compared dlq.failed.at with now - DEDUP_HORIZON_S, but the consumers
    # look for the delivered mark when they claim the replay, later (lag, a backlog): a mark an
    # earlier replay set 6.5 days ago is gone by then. The consumers' own stale guard leaves them
    # STALE_MARGIN_S for that wait; the hold has to leave the same.
    monkeypatch.setenv("DEDUP_HORIZON_S", str(7 * 86_400))
    monkeypatch.setenv("STALE_MARGIN_S", str(86_400))
    old = dead_lettered(TOKEN_FAILURE, offset=7, failed_at=datetime.now(UTC) - timedelta(days=6, hours=12))
    cluster = Cluster([*dlq_records(1), DlqMessage(old.headers(), topic=DLQ, partition=0, offset=1, key=b"old")])
    install(monkeypatch, cluster)
    result = CliRunner().invoke(main, ["replay", "--error-code", "13001"])
    assert result.exit_code == 3, result.output  # one held
    held = next(line for line in result.output.splitlines() if "held: past horizon" in line)
    assert held.split()[3] == "1", held
    assert [key for _, key, _, _ in cluster.published] == [b"evt-0"]


def test_the_horizon_hold_counts_from_when_the_source_record_was_written(monkeypatch: pytest.MonkeyPatch,
                                                                          env: None) -> None:
    # Found by review (sre): the hold went by dlq.failed.at alone. A record read days after it was
    # written (a lagging partition: 5 days 20 h, under the consumers' stale guard of 6 days) and
    # dead-lettered then (`throttled`) was replayed 16 h later as recent, though it was 6.5 days
    # old: another copy of its event, delivered when it was written, has a delivered mark that
    # lapses 7 days after that, before the consumers claim the replay after any lag. The replay
    # is a new record with a new timestamp, so the consumers' own stale guard, which would have
    # stopped the source record, lets it by: the hold is the only guard, and it must go by the
    # older of the two times.
    monkeypatch.setenv("DEDUP_HORIZON_S", str(7 * 86_400))
    monkeypatch.setenv("STALE_MARGIN_S", str(86_400))
    now = datetime.now(UTC)
    lagged = dead_lettered(TOKEN_FAILURE, offset=7, failed_at=now - timedelta(hours=16),
                           written_at=now - timedelta(days=6, hours=12))
    cluster = Cluster([*dlq_records(1), DlqMessage(lagged.headers(), topic=DLQ, partition=0, offset=1, key=b"old")])
    install(monkeypatch, cluster)
    result = CliRunner().invoke(main, ["replay", "--error-code", "13001"])
    assert result.exit_code == 3, result.output  # one held
    held = next(line for line in result.output.splitlines() if "held: past horizon" in line)
    assert held.split()[3] == "1", result.output
    assert [key for _, key, _, _ in cluster.published] == [b"evt-0"]
    named = CliRunner().invoke(main, ["replay", "--error-code", "13001", "--past-horizon"])  # after checking
    assert named.exit_code == 0, named.output
    assert [key for _, key, _, _ in cluster.published][-1] == b"old"
    assert any("warning" in line and "DEDUP_HORIZON_S" in line for line in named.output.splitlines())


def test_the_advice_for_held_records_after_an_explicit_group_says_to_leave_it_out(monkeypatch: pytest.MonkeyPatch,
                                                                                  env: None) -> None:
    # Run again with the same --group (the chart's replay.group kept), the advised run would
    # resume past the held records and read nothing: the advice says to leave it out.
    from consumer.outcomes.deadletter import Failure

    unknown = dead_lettered(Failure("ambiguous", "fate unknown"), offset=7, failed_at=RECENT)
    cluster = Cluster([*dlq_records(1), DlqMessage(unknown.headers(), topic=DLQ, partition=0, offset=1)])
    install(monkeypatch, cluster)
    result = CliRunner().invoke(main, ["replay", "--group", "inc-4711"])
    held = next(line for line in result.output.splitlines() if "fate unknown" in line)
    assert "without --group inc-4711" in held, held
    default = CliRunner().invoke(main, ["replay", "--from-beginning"])
    held = next(line for line in default.output.splitlines() if "fate unknown" in line)
    assert "without --group" not in held, held


@pytest.mark.parametrize("target", [DLQ, "pisano-sms.receipts"])
def test_a_target_that_is_the_dead_letter_or_receipt_topic_is_refused(monkeypatch: pytest.MonkeyPatch, env: None,
                                                                       target: str) -> None:
    # An operator's slip: raw events (phones in clear) in the receipts auditors read, or in the DLQ
    # as records of no one; and the group's position moved past the dead-letters either way.
    monkeypatch.setenv("OUTCOME_TOPIC", "pisano-sms.receipts")
    monkeypatch.setenv("OUTCOME_PHONE_SALT", "salt-for-this-test-0123456789abcdef")
    cluster = Cluster(dlq_records(2), topics={DLQ, "transactions", "pisano-sms.receipts"})
    install(monkeypatch, cluster)
    result = CliRunner().invoke(main, ["replay", "--to-topic", target])
    assert result.exit_code == 2, result.output
    assert f"--to-topic {target}" in result.output
    assert cluster.published == [] and cluster.committed == {}


def test_records_refused_at_max_replays_are_replayable_as_the_summary_says(monkeypatch: pytest.MonkeyPatch,
                                                                           env: None) -> None:
    records = [DlqMessage([(k, b"3" if k == "dlq.replays" else v) for k, v in message.headers() or []],
                          topic=DLQ, partition=0, offset=n)  # replayed three times already
               for n, message in enumerate(dlq_records(2))]
    cluster = Cluster(records)
    install(monkeypatch, cluster)
    first = CliRunner().invoke(main, ["replay"])
    line = next(text for text in first.output.splitlines() if "refused: max replays" in text)
    assert " 2 " in line and "--max-replays" in line and "--group" in line  # the position is past them
    again = CliRunner().invoke(main, ["replay", "--max-replays", "4", "--group", "pisano-sms-replay-more"])
    assert again.exit_code == 0 and len(cluster.published) == 2


class LosesAReportToCtrlC(FakeProducer):
    """Ctrl-C that lands in a delivery callback at the `lose_at`-th flush: Python raises it at the
    callback's first instruction, so that record's report is gone; confluent-kafka serves the
    other reports of the flush, then raises KeyboardInterrupt from flush()."""

    def __init__(self, cluster: Cluster, lose_at: int) -> None:
        super().__init__(cluster)
        self.lose_at, self.flushes = lose_at, 0

    def flush(self, timeout: float = 0) -> int:
        self.flushes += 1
        if self.flushes != self.lose_at or not self.pending:
            return super().flush(timeout)
        _lost, *others = self.pending
        self.pending = others
        super().flush(timeout)
        raise KeyboardInterrupt


def test_ctrl_c_that_loses_a_delivery_report_still_exits_130_with_the_summary(monkeypatch: pytest.MonkeyPatch,
                                                                             env: None) -> None:
    # Found in review: the interrupt's checkpoint refused to commit past the record whose report
    # was lost (right), but its ReplayError replaced the interrupt: exit 1, no summary, as if
    # publishing had failed.
    import consumer.sre.replay as replay

    cluster = Cluster(dlq_records(4))
    install(monkeypatch, cluster)
    monkeypatch.setattr(replay, "CHECKPOINT_INTERVAL_S", 0.0)  # a checkpoint after each record
    monkeypatch.setattr(replay, "make_producer", lambda settings, **extra: LosesAReportToCtrlC(cluster, lose_at=3))
    result = CliRunner().invoke(main, ["replay", "--group", "g"])
    assert cluster.committed["g"] == 2  # never past the record whose report was lost
    assert result.exit_code == 130, result.output
    assert "replayed" in result.output  # the counts so far
    assert "interrupted" in result.output and "run the same command again" in result.output
    assert "no delivery report" in result.output  # why the interrupt's checkpoint committed nothing
    assert "is committed for group g" not in result.output  # not "what Kafka acknowledged is committed"


class RefusesLargeRecords(FakeProducer):
    """librdkafka refuses in produce() itself a record over its message.max.bytes."""

    def produce(self, topic: str, key: Any = None, value: Any = None, headers: Any = None,
                on_delivery: Any = None) -> None:
        if value is not None and len(value) > 1000:
            raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
        super().produce(topic, key, value, headers, on_delivery)


def test_ctrl_c_while_a_checkpoint_counts_kafka_refusals_loses_none_of_them(monkeypatch: pytest.MonkeyPatch,
                                                                           env: None) -> None:
    # Found in review: the checkpoint took the refusals off the publisher's list, then counted them
    # one by one; a Ctrl-C in between lost the rest, and the interrupt's checkpoint committed past
    # them: the summary said `replayed` for a record Kafka refused, and nothing told the operator
    # to replay it again.
    import consumer.sre.replay as replay

    records = dlq_records(2)
    records[0] = DlqMessage(records[0].headers(), topic=DLQ, partition=0, offset=0, key=b"evt-0", value=b"b" * 1001)
    cluster = Cluster(records)
    install(monkeypatch, cluster)
    monkeypatch.setattr(replay, "make_producer", lambda settings, **extra: RefusesLargeRecords(cluster))
    counted = replay.ReplaySummary.refused_by_kafka

    def ctrl_c_then_count(self: Any, *args: Any) -> None:
        os.kill(os.getpid(), signal.SIGINT)  # the operator's Ctrl-C, a real signal
        counted(self, *args)

    monkeypatch.setattr(replay.ReplaySummary, "refused_by_kafka", ctrl_c_then_count)
    # As at a terminal: Python's own handler. A process started in the background by a shell
    # without job control (a CI runner's) inherits SIGINT ignored, and the signal would be lost.
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        result = CliRunner().invoke(main, ["replay", "--group", "g"])
    finally:
        signal.signal(signal.SIGINT, inherited)
    assert result.exit_code == 130, result.output
    refused = next(line for line in result.output.splitlines() if "refused: by Kafka" in line)
    assert refused.split()[3] == "1", refused
    replayed = next(line for line in result.output.splitlines() if line.strip().startswith("replayed"))
    assert replayed.split()[1] == "1", replayed
    assert cluster.committed["g"] == 2 and len(cluster.published) == 1


def test_limit_counts_the_records_replayed_not_the_ones_held(monkeypatch: pytest.MonkeyPatch, env: None) -> None:
    # `--limit N` is how an SRE replays a few first: held records (fate unknown) used to count
    # toward it, so `--limit 2` over two held records stopped having replayed none of the others.
    from consumer.outcomes.deadletter import Failure

    held = [DlqMessage(dead_lettered(Failure("ambiguous", "fate unknown"), offset=50 + n, failed_at=RECENT).headers(),
                       topic=DLQ, partition=0, offset=n) for n in range(2)]
    replayable = [DlqMessage(m.headers(), topic=DLQ, partition=0, offset=2 + n, key=m.key())
                  for n, m in enumerate(dlq_records(3))]
    cluster = Cluster([*held, *replayable])
    install(monkeypatch, cluster)
    result = CliRunner().invoke(main, ["replay", "--limit", "2", "--group", "g"])
    assert result.exit_code == 3, result.output  # the two held
    assert [key for _, key, _, _ in cluster.published] == [b"evt-0", b"evt-1"]
    assert "stopped at --limit 2" in result.output and cluster.committed["g"] == 4


def test_a_failed_run_counts_as_replayed_only_what_kafka_acknowledged(monkeypatch: pytest.MonkeyPatch,
                                                                      env: None) -> None:
    # After a failure part-way, "replayed" counted records published but never acknowledged: an
    # SRE read them as done, though the next run publishes them again. Then (found in review) its
    # breakdowns still counted them: `replayed 2   to transactions 3`, `by error code 13001 3`.
    import consumer.sre.replay as replay

    class LosesTheBroker(FakeProducer):
        def flush(self, timeout: float = 0) -> int:
            if len(self.cluster.published) + len(self.pending) > 2:
                return len(self.pending)  # the broker went away: no report for these
            return super().flush(timeout)

    cluster = Cluster(dlq_records(4))
    install(monkeypatch, cluster)
    monkeypatch.setattr(replay, "make_producer", lambda settings, **extra: LosesTheBroker(cluster))
    monkeypatch.setattr(replay, "CHECKPOINT_INTERVAL_S", 0.0)  # a checkpoint after each record
    result = CliRunner().invoke(main, ["replay", "--group", "g"])
    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()
    replayed = next(line for line in lines if line.split()[:1] == ["replayed"])
    by_code = next(line for line in lines if line.split()[:3] == ["by", "error", "code"])
    assert replayed.split()[1] == "2" and replayed.split()[-1] == "2", replayed
    assert by_code.split()[-1] == "2", by_code
    unacknowledged = next(line for line in result.stdout.splitlines() if line.split()[:1] == ["unacknowledged"])
    assert unacknowledged.split()[1] == "1" and "publishes them again" in unacknowledged, result.stdout
    assert cluster.committed["g"] == 2
