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
