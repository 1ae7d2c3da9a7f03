"""On a real broker: a forged dead-letter naming a real one's origin, placed before it, no longer
makes `replay` skip the real one (consumer/sre/replayed_records.py); and the run says what it
waits for while it reads the DLQ's end offsets (consumer/sre/dlq_read.py, TopicReader.open)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime

import pytest

from tests.conftest import Stack, unique
from tests.integration.test_sre_replay import number
from tests.support.consumers import ROOT
from tests.support.kafka import create_topic, produce_each, read_all


def _ours(topic: str, offset: int) -> list[tuple[str, bytes]]:
    return [("dlq.reason", b"pisano_error"), ("pisano.error.code", b"13001"), ("dlq.original.topic", topic.encode()),
            ("dlq.original.partition", b"0"), ("dlq.original.offset", str(offset).encode()),
            ("dlq.failed.at", datetime.now(UTC).isoformat().encode()), ("dlq.replays", b"0")]


@pytest.mark.timeout(90)
def test_a_forged_dead_letter_before_the_real_one_does_not_make_it_skipped(stack: Stack) -> None:
    source, dlq = unique("events"), unique("forged-dlq")
    create_topic(stack.bootstrap, source)
    create_topic(stack.bootstrap, dlq)
    real = _ours(source, 41)
    produce_each(stack.bootstrap, dlq, [
        (b"evt-forged", b"\x02forged", real),  # whoever may write the DLQ, naming the real origin
        (b"evt-real", b"\x02real", real),
        (b"evt-real", b"\x02real", real),  # dead-lettered twice: one replay
    ], partition=0)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "DLQ_", "REDIS_", "PISANO_",
                                                                     "REPLAY_"))}
    env.update(KAFKA_BOOTSTRAP_SERVERS=stack.bootstrap, DLQ_TOPIC=dlq, KAFKA_TOPICS=source)
    result = subprocess.run([sys.executable, "-m", "consumer", "replay", "--group", unique("g")], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert number(result.stdout, "replayed") == 2 and number(result.stdout, "duplicates skipped") == 1
    published = sorted((m.key(), m.value()) for m in read_all(stack.bootstrap, source, expected=2))
    assert published == [(b"evt-forged", b"\x02forged"), (b"evt-real", b"\x02real")]
    # A progress line before open() asks Kafka (up to 10 s a request on a slow broker), on stderr;
    # the next ones at most every 2 s (a fast broker answers before).
    assert f"replay: reading {dlq}: committed positions of the group" in result.stderr
    assert "committed positions" not in result.stdout
