"""Review of `replay` and `dlq stats` on a real broker with a hostile dead-letter topic: many
partitions, most empty; records of ours, foreign, malformed, a tombstone, one larger than the
target topic takes; then a replay ended by SIGTERM and resumed (consumer/sre/)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from tests.conftest import Stack, unique
from tests.integration.test_sre_replay import number
from tests.support.consumers import REPLAY_KEY, ROOT
from tests.support.kafka import end_offsets


def _env(stack: Stack, topic: str, dlq: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "DLQ_", "REDIS_", "PISANO_"))}
    env.update(KAFKA_BOOTSTRAP_SERVERS=stack.bootstrap, DLQ_TOPIC=dlq, KAFKA_TOPICS=topic,
               REPLAY_SIGNING_KEY=REPLAY_KEY)
    return env


def _ours(topic: str, offset: int, partition: int = 0) -> list[tuple[str, bytes]]:
    return [("dlq.reason", b"pisano_error"), ("pisano.error.code", b"13001"), ("dlq.original.topic", topic.encode()),
            ("dlq.original.partition", str(partition).encode()), ("dlq.original.offset", str(offset).encode()),
            ("dlq.failed.at", datetime.now(UTC).isoformat().encode()), ("x-trace", b"t")]


def _topic(stack: Stack, prefix: str, partitions: int, max_bytes: int) -> str:
    name = unique(prefix)
    admin = AdminClient({"bootstrap.servers": stack.bootstrap})
    admin.create_topics([NewTopic(name, partitions, 1, config={"max.message.bytes": str(max_bytes)})])[
        name].result(30)
    return name


def _produce(stack: Stack, topic: str, records: list[tuple[int, bytes | None, bytes | None, list]]) -> None:
    producer = Producer({"bootstrap.servers": stack.bootstrap, "message.max.bytes": 16 * 1024 * 1024,
                         "linger.ms": 20})
    for partition, key, value, headers in records:
        while True:
            try:
                producer.produce(topic, key=key, value=value, headers=headers, partition=partition)
                break
            except BufferError:
                producer.poll(0.1)
    assert producer.flush(60) == 0


@pytest.mark.timeout(60)
def test_a_hostile_dlq_of_many_partitions_is_replayed_counted_and_never_stops(
        stack: Stack) -> None:
    source = _topic(stack, "events", 1, 1024 * 1024)
    dlq = _topic(stack, "hostile-dlq", 8, 12 * 1024 * 1024)
    good = [(p, f"evt-{p}-{n}".encode(), b"\x02avro", _ours(source, 100 * p + n)) for p in (1, 6) for n in range(20)]
    hostile = [
        (4, b"big", os.urandom(6 * 1024 * 1024), _ours(source, 9000)),  # larger than the source topic takes
        (4, b"tomb", None, _ours(source, 9001)),  # a tombstone with our headers
        (4, None, None, []),  # a foreign tombstone
        (4, b"k", b"v", [*_ours(source, 9002), ("dlq.original.offset", b"-1")]),  # twice, differently
        (4, b"k", b"v", [(n, b"\xff" * 100_000 if n == "dlq.failed.at" else v) for n, v in _ours(source, 9003)]),
        (4, b"k", b"v", [(n, b"99999999999999999999" if n == "dlq.original.partition" else v)
                         for n, v in _ours(source, 9004)]),
        (4, b"k", b"v", [*_ours(source, 9005), ("dlq.replay.signature", b"v2:1:1:" + b"0" * 64)]),  # forged
        (4, b"k", b"v", [(n.upper(), v) for n, v in _ours(source, 9006)]),  # other case: not ours
        (6, f"evt-6-{0}".encode(), b"\x02avro", _ours(source, 600)),  # dead-lettered twice
    ]
    _produce(stack, dlq, good + hostile)
    env = _env(stack, source, dlq)
    started = time.monotonic()
    stats = subprocess.run([sys.executable, "-m", "consumer", "dlq", "stats"], env=env, cwd=ROOT,
                           capture_output=True, text=True, timeout=60, check=False)
    assert stats.returncode == 0, stats.stdout + stats.stderr
    assert "Traceback" not in stats.stderr
    result = subprocess.run([sys.executable, "-m", "consumer", "replay", "--error-code", "13001"], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=60, check=False)
    out = result.stdout + result.stderr
    assert result.returncode == 3, out  # refused records: the run went on past them, and says so
    assert "Traceback" not in out and "+9055" not in out
    assert number(result.stdout, "read") == len(good) + len(hostile)
    assert number(result.stdout, "foreign") == 2
    assert number(result.stdout, "refused: malformed") == 3
    assert number(result.stdout, "refused: by Kafka") == 1
    assert number(result.stdout, "duplicates skipped") == 1
    published = sum(end_offsets(stack.bootstrap, source).values())
    assert number(result.stdout, "refused: no value") == 1  # the tombstone
    assert number(result.stdout, "not replayed") == 3 + 1 + 1
    assert number(result.stdout, "replayed") == published == len(good) + 1  # and the forged one, signed afresh
    assert time.monotonic() - started < 45


@pytest.mark.timeout(90)
def test_a_replay_ended_by_sigterm_keeps_what_was_acknowledged_and_the_rerun_resumes(stack: Stack) -> None:
    # Found by review: SIGTERM killed `replay` at once, without a summary or its last checkpoint.
    source = _topic(stack, "events", 3, 1024 * 1024)
    dlq = _topic(stack, "sigterm-dlq", 4, 1024 * 1024)
    total = 60_000
    _produce(stack, dlq, [(n % 4, f"evt-{n}".encode(), b"\x02avro", _ours(source, n, n % 3)) for n in range(total)])
    env = _env(stack, source, dlq)
    group = unique("g")
    command = [sys.executable, "-m", "consumer", "replay", "--group", group]
    process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while sum(end_offsets(stack.bootstrap, source).values()) < 2_000 and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    if process.returncode == 0:
        pytest.skip("the replay finished before SIGTERM came")
    assert process.returncode == 143, out + err
    assert "terminated (SIGTERM)" in err and "Traceback" not in err
    first = number(out, "replayed")
    # A signal that lands inside a delivery callback loses that report (librdkafka counts it as
    # delivered): then the interrupt's checkpoint commits nothing, and says so.
    lost = "no delivery report" in err
    assert first < total and (lost or first > 0), out + err
    unacknowledged = number(out, "unacknowledged") if "unacknowledged" in out else 0
    rerun = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    # It resumed where the acknowledged records end: each is published at least once, and again
    # at most the one whose produce() the signal interrupted before it was counted (the consumers'
    # dedup absorbs it; the summary does not count it).
    published = sum(end_offsets(stack.bootstrap, source).values())
    assert 0 <= published - (first + number(rerun.stdout, "replayed")) <= unacknowledged + 1
    assert total <= published
