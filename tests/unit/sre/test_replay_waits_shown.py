"""A long wait of `replay` on Kafka shows progress, on stderr like its other progress lines.

Before, a checkpoint waiting for acknowledgements from a slow broker (up to ACK_TIMEOUT_S, 60 s)
and `open()` reading each partition's end offsets in turn (up to 10 s each) printed nothing: on a
DLQ of 50 partitions and a slow broker, minutes of a silent terminal or CI log, and an SRE who
cannot tell a slow run from a hung one (and kills it)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from click.testing import CliRunner
from confluent_kafka import TopicPartition

import consumer.sre.replay as replay
from consumer.cli import main
from tests.unit.sre.fake_dlq import Cluster, FakeDlqConsumer, FakeProducer, install, replay_env
from tests.unit.sre.test_replay_run import dlq_records


class _SlowBroker(FakeProducer):
    """Acknowledges only once `ack_after_s` passed since the first flush."""

    ack_after_s = 0.6

    def __init__(self, cluster: Cluster) -> None:
        super().__init__(cluster)
        self.first: float | None = None

    def flush(self, timeout: float = 0) -> int:
        now = time.monotonic()
        self.first = now if self.first is None else self.first
        if now - self.first < self.ack_after_s:
            time.sleep(min(timeout, self.first + self.ack_after_s - now))
            if time.monotonic() - self.first < self.ack_after_s:
                return len(self.pending)
        return super().flush(timeout)


class _SlowWatermarks(FakeDlqConsumer):
    def get_watermark_offsets(self, tp: TopicPartition, timeout: float = 0) -> tuple[int, int]:
        time.sleep(0.3)
        return super().get_watermark_offsets(tp, timeout) if tp.partition == 0 else (0, 0)  # empty

    def list_topics(self, topic: str, timeout: float = 0) -> Any:
        described = super().list_topics(topic, timeout)
        if topic in described.topics:  # three partitions, the records in partition 0
            described.topics[topic].partitions = {0: None, 1: None, 2: None}
        return described


def test_a_checkpoint_waiting_on_a_slow_broker_and_reading_end_offsets_show_progress(
        monkeypatch: pytest.MonkeyPatch) -> None:
    replay_env(monkeypatch)
    cluster = Cluster(dlq_records(3))
    install(monkeypatch, cluster)
    monkeypatch.setattr(replay, "make_producer", lambda settings, **extra: _SlowBroker(cluster))
    monkeypatch.setattr(replay, "make_consumer", lambda settings, **extra: _SlowWatermarks(cluster, extra["group.id"]))
    monkeypatch.setattr(replay, "WAIT_NOTE_S", 0.1, raising=False)
    import consumer.sre.commands as commands

    monkeypatch.setattr(commands, "NOTE_INTERVAL_S", 0.05, raising=False)
    result = CliRunner().invoke(main, ["replay", "--group", "g"])
    assert result.exit_code == 0, result.output
    assert len(cluster.published) == 3 and cluster.committed["g"] == 3
    stderr = result.stderr
    assert "replay: reading pisano-sms.dlq: end offsets of partition 2 (3 of 3)" in stderr, stderr
    assert "replay: reading pisano-sms.dlq: waiting for Kafka to acknowledge 3 re-published record(s)" in stderr
    assert "s of at most 60s" in stderr
    assert "waiting" not in result.stdout  # the summary's stream stays the summary


def test_dlq_stats_shows_progress_while_it_reads_the_end_offsets(monkeypatch: pytest.MonkeyPatch) -> None:
    import consumer.sre.commands as commands
    import consumer.sre.dlq_stats as dlq_stats

    replay_env(monkeypatch)
    cluster = Cluster(dlq_records(3))
    monkeypatch.setattr(dlq_stats, "make_consumer", lambda settings, **extra: _SlowWatermarks(cluster, "stats"))
    monkeypatch.setattr(commands, "NOTE_INTERVAL_S", 0.05, raising=False)
    result = CliRunner().invoke(main, ["dlq", "stats"])
    assert result.exit_code == 0, result.output
    assert "dlq stats: reading pisano-sms.dlq: end offsets of partition 2 (3 of 3)" in result.stderr, result.stderr


class _StalledCommits(FakeDlqConsumer):
    """A broker that stalls on commits: each commit waits `stall_s` (librdkafka's synchronous
    commit has no timeout: against a frozen broker one waited the whole 300 s of a real test)."""

    stall_s = 0.5

    def __init__(self, cluster: Cluster, group: str) -> None:
        super().__init__(cluster, group)
        self.closed_during_commit = self.overlapped = False
        self.committing = False

    def commit(self, offsets: list[TopicPartition], asynchronous: bool = True) -> None:
        self.overlapped |= self.committing
        self.committing = True
        time.sleep(self.stall_s)
        super().commit(offsets, asynchronous)
        self.committing = False

    def close(self) -> None:
        self.closed_during_commit |= self.committing


def _stalled_run(monkeypatch: pytest.MonkeyPatch, stall_s: float,
                 timeout_s: float = 1.0) -> tuple[Any, Cluster, _StalledCommits]:
    replay_env(monkeypatch)
    cluster = Cluster(dlq_records(3))
    install(monkeypatch, cluster)
    consumers: list[_StalledCommits] = []

    def stalled(settings: Any, **extra: Any) -> _StalledCommits:
        consumers.append(_StalledCommits(cluster, extra["group.id"]))
        consumers[-1].stall_s = stall_s
        return consumers[-1]

    monkeypatch.setattr(replay, "make_consumer", stalled)
    monkeypatch.setattr(replay, "WAIT_NOTE_S", 0.1, raising=False)
    monkeypatch.setattr(replay, "ACK_TIMEOUT_S", timeout_s, raising=False)
    import consumer.sre.commands as commands

    monkeypatch.setattr(commands, "NOTE_INTERVAL_S", 0.05, raising=False)
    result = CliRunner().invoke(main, ["replay", "--group", "g"])
    return result, cluster, consumers[0]


def test_a_commit_kafka_is_slow_to_confirm_shows_progress() -> None:
    with pytest.MonkeyPatch.context() as monkeypatch:
        result, cluster, _ = _stalled_run(monkeypatch, stall_s=0.5)
    assert result.exit_code == 0, result.output
    assert cluster.committed["g"] == 3
    assert "replay: reading pisano-sms.dlq: waiting for Kafka to confirm the position of group g: " in result.stderr, \
        result.stderr
    assert "s of at most 1s" in result.stderr


def test_a_commit_kafka_never_confirms_ends_the_run_with_what_to_do_and_leaves_the_consumer_open() -> None:
    """Before, the run waited as long as the broker stalled (here 6 s, against a bound of 1 s),
    silent, then went on as if nothing happened."""
    started = time.monotonic()
    with pytest.MonkeyPatch.context() as monkeypatch:
        result, _, consumer = _stalled_run(monkeypatch, stall_s=6.0)
    assert time.monotonic() - started < 5, "the run waited past its bound"
    assert result.exit_code == 1, result.output
    assert "Kafka did not confirm the position of group g within 1s" in result.output, result.output
    assert "check the brokers, then run again" in result.output
    assert not consumer.closed_during_commit


def test_a_sigterm_while_a_commit_waits_lets_it_finish_then_checkpoints_without_overlapping_it() -> None:
    """The interrupt's checkpoint commits again: it waits for the commit in flight first (two
    commits at once on one client, or a close under one, are not allowed). Found writing it: a
    signal cutting short `Thread.join` marks the thread stopped in Python 3.11 while it runs (the
    commits overlapped), so the wait is on an event the thread sets."""
    import os
    import signal
    import threading

    before = signal.signal(signal.SIGTERM, signal.default_int_handler)
    timer = threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        with pytest.MonkeyPatch.context() as monkeypatch:
            result, cluster, consumer = _stalled_run(monkeypatch, stall_s=1.0, timeout_s=5.0)
    finally:
        timer.cancel()
        signal.signal(signal.SIGTERM, before)
    assert result.exit_code == 143, result.output
    assert cluster.committed["g"] == 3 and not consumer.overlapped and not consumer.closed_during_commit


class _StalledFetch(FakeDlqConsumer):
    """A broker that stops serving fetches after the first record (frozen, packets dropped): each
    consume() waits its timeout and returns nothing."""

    def consume(self, count: int, timeout: float = 0) -> list[Any]:
        if self.position >= 1:
            time.sleep(min(timeout, 0.05))
            return []
        return super().consume(1, timeout)


@pytest.mark.parametrize("command", [["replay", "--group", "g"], ["dlq", "stats"]])
def test_a_read_kafka_stopped_serving_shows_progress_until_it_gives_up(monkeypatch: pytest.MonkeyPatch,
                                                                       command: list[str]) -> None:
    # Found by review (sre): a read that got no record said nothing for IDLE_TIMEOUT_S (30 s), then
    # stopped: a silent terminal, which an SRE takes for a hung run and kills.
    import consumer.sre.commands as commands
    import consumer.sre.dlq_read as dlq_read
    import consumer.sre.dlq_stats as dlq_stats

    replay_env(monkeypatch)
    cluster = Cluster(dlq_records(3))
    install(monkeypatch, cluster)
    monkeypatch.setattr(replay, "make_consumer", lambda settings, **extra: _StalledFetch(cluster, extra["group.id"]))
    monkeypatch.setattr(dlq_stats, "make_consumer", lambda settings, **extra: _StalledFetch(cluster, "stats"))
    monkeypatch.setattr(dlq_read, "IDLE_TIMEOUT_S", 1.0)
    monkeypatch.setattr(dlq_read, "IDLE_NOTE_S", 0.2, raising=False)
    monkeypatch.setattr(commands, "NOTE_INTERVAL_S", 0.05, raising=False)
    result = CliRunner().invoke(main, command)
    assert result.exit_code == 1, result.output
    assert "no record from pisano-sms.dlq for " in result.stderr, result.stderr
    assert "1 partition(s) not read to their end" in result.stderr
    assert "run again" in result.stderr  # the failure says what to do
