"""SIGTERM and Ctrl-C in the SRE tools: `dlq stats` and `suppress import` end like `replay` (the
counts so far, exit 143 or 130), and a signal that lands between a replay's produce() and its
bookkeeping still leaves the record counted and committed (consumer/sre/replay.py: `guarded_signals`)."""

from __future__ import annotations

import os
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from consumer.cli import main
from consumer.config.settings import Settings
from consumer.sre.dlq_read import Filters
from consumer.sre.replay import ReplayInterrupted, ReplayPlan, run_replay
from consumer.state.suppression import CHUNK, MemoryOptOutList, OptOutHasher
from tests.unit.sre.fake_dlq import DLQ, Cluster, FakeProducer, install, replay_env
from tests.unit.sre.test_replay_run import dlq_records

HASHER = OptOutHasher(b"import-key-0123456789", "TR")


class Unhandled(Exception):
    """Raised by the test's own handler: the command did not handle the signal (it would have died)."""


def _unhandled(_signum: int, _frame: Any) -> None:
    raise Unhandled


@pytest.fixture
def own_sigterm() -> Any:
    # Ctrl-C as an interactive shell gives it: a suite started in the background (`make test &`,
    # a CI runner) inherits SIGINT ignored, which the commands rightly leave alone.
    before_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    before = signal.signal(signal.SIGTERM, _unhandled)
    yield
    assert signal.getsignal(signal.SIGTERM) is _unhandled  # put back once the command is over
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    signal.signal(signal.SIGTERM, before)
    signal.signal(signal.SIGINT, before_int)


def test_dlq_stats_on_sigterm_says_what_it_read_and_exits_143(monkeypatch: pytest.MonkeyPatch,
                                                                own_sigterm: None) -> None:
    # Found by review: SIGTERM killed `dlq stats` silently (no line, the shell's 143 at best).
    import consumer.sre.dlq_stats as dlq_stats

    replay_env(monkeypatch)

    def terminate(offset: int) -> None:
        if offset == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    cluster = Cluster(dlq_records(5), on_read=terminate)
    monkeypatch.setattr(dlq_stats, "make_consumer", lambda settings, **extra: cluster.consumer(extra["group.id"]))
    result = CliRunner().invoke(main, ["dlq", "stats"])
    assert not isinstance(result.exception, Unhandled), result.output
    assert result.exit_code == 143, result.output
    assert "terminated (SIGTERM) after 2 of 5 record(s)" in result.stderr
    assert "run it again" in result.stderr and "Traceback" not in result.output
    assert "error code" not in result.stdout  # no table: part of the topic would pass for the whole


class SignallingList(MemoryOptOutList):
    """Sends `signum` to this process while the `at`-th chunk is being added (after adding it)."""

    def __init__(self, signum: int, at: int) -> None:
        super().__init__()
        self.signum, self.at, self.calls = signum, at, 0

    def add(self, entries: Sequence[str]) -> int:
        added = super().add(entries)
        self.calls += 1
        if self.calls == self.at:
            os.kill(os.getpid(), self.signum)
        return added


@pytest.mark.parametrize(("signum", "status", "said"), [(signal.SIGTERM, 143, "terminated (SIGTERM)"),
                                                         (signal.SIGINT, 130, "interrupted (Ctrl-C)")])
def test_suppress_import_on_a_signal_says_what_is_on_the_list_and_how_to_complete_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, own_sigterm: None, signum: int, status: int,
        said: str) -> None:
    from consumer.sre import suppress

    store = SignallingList(signum, at=2)
    monkeypatch.setattr(suppress, "_open", lambda settings: (HASHER, store))
    path = tmp_path / "opt-outs.csv"
    path.write_text("phone\n" + "".join(f"+90532{n:07d}\n" for n in range(3 * CHUNK)))
    result = CliRunner().invoke(main, ["suppress", "import", str(path)])
    assert not isinstance(result.exception, Unhandled), result.output
    assert result.exit_code == status, result.output
    assert said in result.stderr, result.stderr
    # The add under way when the signal came is finished and counted, then the import stops.
    assert f"The entries of lines 2 to {2 * CHUNK + 1} are on the list" in result.stderr  # the add under way, too
    assert "import the whole file again" in result.stderr and "idempotent" in result.stderr
    assert f"rows read {2 * CHUNK:,}" in result.stdout and f"added {2 * CHUNK:,}" in result.stdout
    assert "Traceback" not in result.output


class SignalAfterProduce(FakeProducer):
    """Sends `signum` to this process just after the `at`-th produce() returned: the record is
    published (the broker will have it), the replay's bookkeeping not done yet."""

    def __init__(self, cluster: Cluster, signum: int, at: int) -> None:
        super().__init__(cluster)
        self.signum, self.at, self.calls = signum, at, 0

    def produce(self, topic: str, key: Any = None, value: Any = None, headers: Any = None,
                on_delivery: Any = None) -> None:
        super().produce(topic, key=key, value=value, headers=headers, on_delivery=on_delivery)
        self.calls += 1
        if self.calls == self.at:
            os.kill(os.getpid(), self.signum)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_right_after_produce_leaves_the_record_counted_and_committed(
        monkeypatch: pytest.MonkeyPatch, own_sigterm: None, signum: int) -> None:
    # Found by review: the signal raised between produce() and the bookkeeping; the interrupt's
    # checkpoint then committed the position before that record, which Kafka had: the next run
    # published it again, and the summary did not count it.
    import consumer.sre.replay as replay

    replay_env(monkeypatch)
    cluster = Cluster(dlq_records(6))
    install(monkeypatch, cluster)
    monkeypatch.setattr(replay, "make_producer", lambda settings, **extra: SignalAfterProduce(cluster, signum, 3))
    with pytest.raises(ReplayInterrupted) as stopped:
        run_replay(Settings(kafka_topics=["transactions"]), ReplayPlan(DLQ, "g", Filters()))
    summary = stopped.value.summary
    assert len(cluster.published) == 3
    assert (summary.replayed, summary.acknowledged, cluster.committed["g"]) == (3, 3, 3)
    # The next run goes on from the fourth record: nothing published twice.
    install(monkeypatch, cluster)
    again = run_replay(Settings(kafka_topics=["transactions"]), ReplayPlan(DLQ, "g", Filters()))
    assert again.replayed == 3 and [key for _, key, _, _ in cluster.published] == [f"evt-{n}".encode()
                                                                                  for n in range(6)]
