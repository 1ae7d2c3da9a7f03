"""The benchmarks that stand in for parts of the consumer still run against it (the figures are
read by hand, not here). `benchmarks/poll_loop.py` drives the real `Pipeline` from an in-memory
Kafka consumer: when the pipeline began asking its consumer for `memberid`, the benchmark failed at
its first turn and nothing said so until someone ran it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest
from confluent_kafka import Consumer, TopicPartition

from tests.conftest import ROOT, Stack
from tests.support.fakes import CAMPAIGN
from tests.support.kafka import create_topic, produce
from tests.support.runs import Run
from tests.support.scenario import delivered_phones


@pytest.mark.parametrize("how", [["--stand-in", "none"], ["--python"], ["--stand-in", "decode-and-map"]])
def test_the_poll_loop_benchmark_runs_every_event_to_its_outcome(stack: Stack, how: list[str]) -> None:
    # Natively (as `run` decodes by default), in Python (NATIVE_INTAKE=off), and looked up.
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap}
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "poll_loop.py"), "--events", "500", *how],
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "0 without an outcome" in result.stdout, result.stdout


def test_the_hand_written_baseline_sends_every_event_once_in_requests_pisano_takes(stack: Stack, run: Run) -> None:
    """benchmarks/plain_consumer.py, the baseline `throughput.py` compares the consumer with: every
    event of the topic reaches the simulator, in requests of at most 5,000 phones (a poll's 1,000
    records added to a batch of 4,999 must not make 5,999), and its group commits the end of every
    partition."""
    topic = f"plain-{uuid.uuid4().hex[:8]}"
    create_topic(stack.bootstrap, topic, 2)
    count = 10_500  # one campaign: two full requests and a lingering rest
    produce(stack.bootstrap, topic, run.events(count, CAMPAIGN))
    group = f"plain-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap, "PISANO_API_TOKEN": run.token}
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "plain_consumer.py"), "--topic", topic,
                             "--group", group, "--pisano-url", run.simulator.url, "--events", str(count)],
                            env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["events_per_s"] > 0 and figures["cpu_after_start_us_per_event"] > 0
    requests = run.simulator.state.requests.records()
    assert {r["http_status"] for r in requests} == {200} and max(r["recipients"] for r in requests) <= 5000, requests
    phones = delivered_phones(run.tmp_path / "deliveries.jsonl")
    assert len(phones) == count and set(phones.values()) == {1}
    probe = Consumer({"bootstrap.servers": stack.bootstrap, "group.id": group})
    try:
        committed = probe.committed([TopicPartition(topic, p) for p in range(2)], timeout=10)
        ends = [probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(2)]
    finally:
        probe.close()
    assert [tp.offset for tp in committed] == ends
