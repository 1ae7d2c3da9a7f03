"""Review of `replay` (consumer/sre/replay.py, consumer/sre/commands.py): found by review."""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest
from click.testing import CliRunner

from consumer.cli import main
from tests.unit.sre.fake_dlq import Cluster, install, replay_env
from tests.unit.sre.test_replay_run import dlq_records


class TerminatedUnhandled(Exception):
    """What the test's own SIGTERM handler raises: the replay did not handle the signal itself
    (unhandled, SIGTERM would kill the test process, as it killed the replay)."""


def _unhandled(_signum: int, _frame: Any) -> None:
    raise TerminatedUnhandled


def test_sigterm_checkpoints_prints_the_summary_and_says_how_to_resume(monkeypatch: pytest.MonkeyPatch) -> None:
    # Found by review: only Ctrl-C was handled. SIGTERM (a Kubernetes Job deleted, `timeout`, a CI
    # job cancelled) killed the replay at once: no summary, nothing said, and what Kafka had
    # acknowledged since the last checkpoint was not committed (re-published by the next run).
    replay_env(monkeypatch)

    def terminate(offset: int) -> None:
        if offset == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    cluster = Cluster(dlq_records(4), on_read=terminate)
    install(monkeypatch, cluster)
    before = signal.signal(signal.SIGTERM, _unhandled)
    try:
        result = CliRunner().invoke(main, ["replay", "--group", "g"])
        assert signal.getsignal(signal.SIGTERM) is _unhandled  # put back once the run is over
    finally:
        signal.signal(signal.SIGTERM, before)
    assert not isinstance(result.exception, TerminatedUnhandled), result.output
    assert len(cluster.published) == 2 and cluster.committed["g"] == 2  # what was acknowledged is kept
    assert result.exit_code == 143, result.output  # 128 + SIGTERM, as the shell reports it
    assert "replayed" in result.output and "terminated (SIGTERM)" in result.output
    assert "run the same command again" in result.output


def test_a_replay_remembers_the_origins_it_replayed_in_a_few_bytes_each(monkeypatch: pytest.MonkeyPatch) -> None:
    # Found by review: `replay` kept the origins it had re-published in a set of tuples, ~190
    # bytes each: a token outage's 10 million dead-letters took ~1.9 GB, past a pod's memory limit
    # (the run OOM-killed, re-publishing everything since its last checkpoint each time), while
    # `dlq stats` counts the same origins in a few bytes each (consumer/sre/origin_set.py).
    import tracemalloc

    from consumer.sre.origin_set import OriginSet

    seen = OriginSet()
    tracemalloc.start()
    try:
        for n in range(200_000):
            assert seen.add_new(("transactions", n % 12, 10**9 + n // 12))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000, peak  # a set: ~38 MB


@pytest.mark.parametrize("seed", range(20))
def test_add_new_says_whether_an_origin_was_seen_in_any_order(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    import random

    import consumer.sre.origin_set as origin_set

    monkeypatch.setattr(origin_set, "MIN_PENDING", 3)  # merge often: every path of the merge runs
    rnd = random.Random(seed)
    seen, expected = origin_set.OriginSet(), set()
    for _ in range(rnd.randint(0, 800)):
        offset = rnd.randint(0, rnd.choice([5, 60, 2000])) if rnd.random() < 0.9 else rnd.randint(0, 10**17)
        origin = (rnd.choice(["a", "b"]), rnd.randint(0, 2), offset)
        assert seen.add_new(origin) is (origin not in expected)
        expected.add(origin)
    assert len(seen) == len(expected)


def test_a_run_replays_each_origin_once_whatever_the_order(monkeypatch: pytest.MonkeyPatch) -> None:
    from consumer.config.settings import Settings
    from consumer.sre.dlq_read import Filters
    from consumer.sre.replay import ReplayPlan, run_replay
    from tests.unit.sre.fake_dlq import DLQ, DlqMessage

    records = dlq_records(6)
    # Dead-lettered again, out of order: origins 105, 101, 105.
    for offset, copy in enumerate((5, 1, 5), start=6):
        records.append(DlqMessage(records[copy].headers(), topic=DLQ, partition=0, offset=offset,
                                  key=records[copy].key(), value=records[copy].value()))
    cluster = Cluster(records)
    install(monkeypatch, cluster)
    summary = run_replay(Settings(kafka_topics=["transactions"]), ReplayPlan(DLQ, "g", Filters()))
    assert [key for _, key, _, _ in cluster.published] == [f"evt-{n}".encode() for n in range(6)]
    assert summary.replayed == 6 and summary.verdicts["duplicate"] == 3


def test_a_tombstone_with_dead_letter_headers_is_refused_not_re_published(monkeypatch: pytest.MonkeyPatch) -> None:
    # Found by review: a DLQ record with our headers and a null value (anyone who may write to the
    # DLQ, or a source tombstone dead-lettered as decode_error) was re-published as a tombstone to
    # the consumers' topic: no event to send, dead-lettered again up to --max-replays, and on a
    # compacted topic it deletes the latest record of its key.
    from tests.unit.sre.fake_dlq import DLQ, DlqMessage

    replay_env(monkeypatch)
    records = dlq_records(3)
    records[1] = DlqMessage(records[1].headers(), topic=DLQ, partition=0, offset=1, key=b"evt-1", value=None)
    cluster = Cluster(records)
    install(monkeypatch, cluster)
    result = CliRunner().invoke(main, ["replay", "--group", "g"])
    assert result.exit_code == 3, result.output  # the tombstone is not replayed
    assert [key for _, key, _, _ in cluster.published] == [b"evt-0", b"evt-2"]
    refused = next(line for line in result.output.splitlines() if "refused: no value" in line)
    assert refused.split()[3] == "1", refused
    assert cluster.committed["g"] == 3
