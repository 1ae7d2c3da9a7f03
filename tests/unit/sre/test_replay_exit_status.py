"""`replay`'s exit status (found by review, sre): it exited 0 when it refused or held records (a
forged origin, over --max-replays, a dead-letter of unknown fate), and a script or a Kubernetes
Job reading the status believed everything was replayed. Now 3 (commands.EXIT_NOT_ALL_REPLAYED),
with the count in the summary (`not replayed`) and on stderr; 0 only when every selected record
was replayed (in a dry run: would be)."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

from consumer.cli import main
from tests.unit.sre.fake_dlq import DLQ, Cluster, DlqMessage, install, replay_env
from tests.unit.sre.test_replay_run import dlq_records

EXIT_NOT_ALL_REPLAYED = 3


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    replay_env(monkeypatch)


def _over_max_replays(offset: int) -> DlqMessage:
    [record] = dlq_records(1)
    headers = [(k, b"3" if k == "dlq.replays" else v) for k, v in record.headers() or []]
    if not any(k == "dlq.replays" for k, _ in headers):
        headers.append(("dlq.replays", b"3"))
    return DlqMessage(headers, topic=DLQ, partition=0, offset=offset, key=b"evt-over")


def _forged_origin(offset: int) -> DlqMessage:
    [record] = dlq_records(1)
    headers = [(k, b"someone-elses-topic" if k == "dlq.original.topic" else v) for k, v in record.headers() or []]
    return DlqMessage(headers, topic=DLQ, partition=0, offset=offset, key=b"evt-forged")




def test_a_run_that_replayed_every_selected_record_exits_0(monkeypatch: pytest.MonkeyPatch, env: None) -> None:
    cluster = Cluster(dlq_records(3))
    install(monkeypatch, cluster)
    result = CliRunner().invoke(main, ["replay"])
    assert result.exit_code == 0, result.output
    assert len(cluster.published) == 3


@pytest.mark.parametrize("refused", [_over_max_replays, _forged_origin])
@pytest.mark.parametrize("dry_run", [(), ("--dry-run",)])
def test_a_run_that_refused_records_exits_3_with_the_count(monkeypatch: pytest.MonkeyPatch, env: None,
                                                           refused: Any, dry_run: tuple[str, ...]) -> None:
    records = dlq_records(2)
    cluster = Cluster([*records, refused(2)])
    install(monkeypatch, cluster)
    result = CliRunner().invoke(main, ["replay", *dry_run])
    assert result.exit_code == EXIT_NOT_ALL_REPLAYED, result.output
    assert "not replayed" in result.output and " 1 " in next(
        line for line in result.output.splitlines() if "not replayed" in line)
    # What could be replayed was, and the position is committed past all of it: exit 3 is not a failure.
    assert len(cluster.published) == (0 if dry_run else 2)
    if not dry_run:
        assert list(cluster.committed.values()) == [3]


def test_records_held_as_fate_unknown_are_left_and_exit_3(monkeypatch: pytest.MonkeyPatch, env: None) -> None:
    from consumer.outcomes.deadletter import Failure
    from tests.unit.sre.test_dlq_filters import dead_lettered
    from tests.unit.sre.test_replay_run import RECENT

    unknown = dead_lettered(Failure("ambiguous", "fate unknown"), offset=7, failed_at=RECENT)
    cluster = Cluster([*dlq_records(1), DlqMessage(unknown.headers(), topic=DLQ, partition=0, offset=1)])
    install(monkeypatch, cluster)
    result = CliRunner().invoke(main, ["replay"])
    assert result.exit_code == EXIT_NOT_ALL_REPLAYED, result.output


def test_foreign_and_unmatched_records_are_not_selected_and_exit_0(monkeypatch: pytest.MonkeyPatch,
                                                                   env: None) -> None:
    foreign = DlqMessage([("x", b"y")], topic=DLQ, partition=0, offset=2, key=b"foreign")
    cluster = Cluster([*dlq_records(2), foreign])
    install(monkeypatch, cluster)
    result = CliRunner().invoke(main, ["replay", "--error-code", "13001"])
    assert result.exit_code == 0, result.output
    other = CliRunner().invoke(main, ["replay", "--error-code", "13034"])  # matches none: nothing refused
    assert other.exit_code == 0, other.output


def test_the_help_documents_exit_status_3() -> None:
    result = CliRunner().invoke(main, ["replay", "--help"])
    assert result.exit_code == 0
    assert "Exit status" in result.output and "3" in result.output.split("Exit status", 1)[1]
