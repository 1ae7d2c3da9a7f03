"""A forged dead-letter naming a real one's origin must never make the real one be skipped.

Before, `replay` skipped as a duplicate any record whose origin (dlq.original.topic, .partition,
.offset) it had re-published in the run. Whoever may write to the DLQ could place, before a real
dead-letter, a record of its own naming the same origin: the forgery was re-published and the real
one skipped, the group's position committed past it, so its event was never replayed. The
duplicate check now also requires the same key and value."""

from __future__ import annotations

import pytest

from consumer.config.settings import Settings
from consumer.sre.dlq_read import Filters
from consumer.sre.replay import ReplayPlan, run_replay
from tests.unit.sre.fake_dlq import DLQ, Cluster, DlqMessage, install
from tests.unit.sre.test_dlq_filters import TOKEN_FAILURE, dead_lettered
from tests.unit.sre.test_replay_run import RECENT


def test_a_forged_record_before_the_real_one_does_not_make_it_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    real = dead_lettered(TOKEN_FAILURE, offset=100, failed_at=RECENT).headers()
    records = [
        # The forgery: the real dead-letter's headers (its origin), another event.
        DlqMessage(real, topic=DLQ, partition=0, offset=0, key=b"evt-forged", value=b"forged"),
        DlqMessage(real, topic=DLQ, partition=0, offset=1, key=b"evt-real", value=b"real"),
        # A second copy of the real one (dead-lettering is at-least-once): still one replay.
        DlqMessage(real, topic=DLQ, partition=0, offset=2, key=b"evt-real", value=b"real"),
        # Same key, another value: another record.
        DlqMessage(real, topic=DLQ, partition=0, offset=3, key=b"evt-real", value=b"real, changed"),
    ]
    cluster = Cluster(records)
    install(monkeypatch, cluster)
    summary = run_replay(Settings(kafka_topics=["transactions"]), ReplayPlan(DLQ, "g", Filters()))
    published = [(key, value) for _, key, value, _ in cluster.published]
    assert (b"evt-real", b"real") in published
    assert published == [(b"evt-forged", b"forged"), (b"evt-real", b"real"), (b"evt-real", b"real, changed")]
    assert summary.verdicts["duplicate"] == 1 and cluster.committed["g"] == 4


def test_a_replayed_record_is_remembered_in_about_8_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fingerprints the duplicate check adds to the origins (consumer/sre/replayed_records.py):
    a token outage's ten million dead-letters must fit a replay Job's 512 MiB."""
    import tracemalloc

    from consumer.sre.dlq_read import DeadLetter
    from consumer.sre.replayed_records import ReplayedRecords

    count = 100_000
    letters = [DeadLetter(0, n, "pisano_error", ("transactions", n % 12, 10**9 + n // 12), RECENT, 0,
                          key=b"k%d" % n, value=b"v") for n in range(count)]
    replayed = ReplayedRecords()
    tracemalloc.start()
    try:
        for letter in letters:
            assert letter not in replayed
            replayed.add(letter)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert all(letter in replayed for letter in letters[::997]) and len(replayed) == count
    print(f"{current / count:.1f} bytes a record held, {peak / count:.1f} at the peak")
    assert current / count < 12, current / count
    assert peak / count < 30, peak / count
