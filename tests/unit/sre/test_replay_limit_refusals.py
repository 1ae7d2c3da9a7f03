"""`--limit N` counts the records replayed (2636f31): one Kafka refuses counts as refused, not
replayed, once its refusal is known; a run must not stop at the limit on records that turn out
refused, nor say it stopped there with fewer replayed."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from consumer.cli import main
from tests.unit.sre.fake_dlq import DLQ, Cluster, DlqMessage, install, replay_env
from tests.unit.sre.test_replay_run import RefusesLargeRecords, dlq_records


def test_limit_is_reached_only_by_records_kafka_did_not_refuse(monkeypatch: pytest.MonkeyPatch) -> None:
    # Found in review: the limit was checked against `replayed` before the checkpoint counted the
    # refusals, so `--limit 2` over a refused record then two good ones replayed one and said
    # "replayed 1 (stopped at --limit 2)".
    import consumer.sre.replay as replay

    replay_env(monkeypatch)
    records = dlq_records(4)
    records[0] = DlqMessage(records[0].headers(), topic=DLQ, partition=0, offset=0, key=b"evt-0", value=b"b" * 1001)
    cluster = Cluster(records)
    install(monkeypatch, cluster)
    monkeypatch.setattr(replay, "make_producer", lambda settings, **extra: RefusesLargeRecords(cluster))
    result = CliRunner().invoke(main, ["replay", "--limit", "2", "--group", "g"])
    assert result.exit_code == 3, result.output  # the refused record is not replayed
    assert [key for _, key, _, _ in cluster.published] == [b"evt-1", b"evt-2"], result.output
    replayed = next(line for line in result.output.splitlines() if line.split()[:1] == ["replayed"])
    assert replayed.split()[1] == "2" and "stopped at --limit 2" in replayed, result.output
    assert cluster.committed["g"] == 3
