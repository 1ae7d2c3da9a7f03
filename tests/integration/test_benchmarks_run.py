"""The benchmarks that stand in for parts of the consumer still run against it (the figures are
read by hand, not here). `benchmarks/poll_loop.py` drives the real `Pipeline` from an in-memory
Kafka consumer: when the pipeline began asking its consumer for `memberid`, the benchmark failed at
its first turn and nothing said so until someone ran it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, Stack


@pytest.mark.parametrize("stand_in", ["none", "decode-and-map"])
def test_the_poll_loop_benchmark_runs_every_event_to_its_outcome(stack: Stack, stand_in: str) -> None:
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap}
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "poll_loop.py"), "--events", "500",
                             "--stand-in", stand_in], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "0 without an outcome" in result.stdout, result.stdout
