"""After a failure part-way, the `replayed` row counts what Kafka acknowledged and the
`unacknowledged` row the rest; the breakdowns beside them (by target, error code, campaign, reason)
counted every record published (found in review: `replayed 2   to transactions 3`). They now
count what the `replayed` row counts: the breakdown as of the last checkpoint."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from consumer.cli import main
from tests.unit.sre.fake_dlq import Cluster, FakeProducer, install, replay_env
from tests.unit.sre.test_replay_run import dlq_records


class LosesTheBroker(FakeProducer):
    def flush(self, timeout: float = 0) -> int:
        if len(self.cluster.published) + len(self.pending) > 2:
            return len(self.pending)  # the broker went away: no report for these
        return super().flush(timeout)


def test_a_failed_runs_breakdown_counts_what_its_replayed_row_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    import consumer.sre.replay as replay

    replay_env(monkeypatch)
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
