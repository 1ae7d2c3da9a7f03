"""`replay`'s lock in a real Redis: a second run of the same topic and group refuses to start and
names the holder, `--force` takes it over, a Redis it cannot reach only warns
(consumer/sre/replay_lock.py). Seconds: empty topics, no consumers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable

from consumer.sre.replay_lock import RedisLockStore, ReplayLock, lock_key
from tests.conftest import Stack, unique
from tests.support.consumers import ROOT

HOLDER = json.dumps({"user": "ayse", "host": "sre-box-7", "pid": 4242, "started": "2026-12-06T00:00:00Z",
                     "nonce": "n"})


def _replay(stack: Stack, topic: str, dlq: str, redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "DLQ_", "REDIS_", "PISANO_"))}
    env.update(KAFKA_BOOTSTRAP_SERVERS=stack.bootstrap, DLQ_TOPIC=dlq, KAFKA_TOPICS=topic, REDIS_URL=redis_url)
    return subprocess.run([sys.executable, "-m", "consumer", "replay", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)


def test_a_held_lock_refuses_a_second_run_force_takes_it_and_no_redis_only_warns(
        stack: Stack, new_topic: Callable[..., str], redis_client) -> None:  # type: ignore[no-untyped-def]
    topic, dlq, group = new_topic(), new_topic("dlq"), unique("g")
    key = lock_key("pisano-sms", dlq, group)
    redis_client.set(key, HOLDER, px=30_000)  # another run holds it

    refused = _replay(stack, topic, dlq, stack.redis_url, "--group", group)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    said = " ".join(refused.stderr.split())
    assert f"another replay of {dlq} with group {group} is running: pid 4242 on sre-box-7 (user ayse)" in said
    assert "--force" in said and redis_client.get(key).decode() == HOLDER

    forced = _replay(stack, topic, dlq, stack.redis_url, "--group", group, "--force")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert "took the replay lock" in forced.stderr and redis_client.exists(key) == 0  # released at its end

    alone = _replay(stack, topic, dlq, "redis://127.0.0.1:1/0", "--group", group)
    assert alone.returncode == 0, alone.stdout + alone.stderr
    assert "replay runs without its lock" in alone.stderr


def test_a_holder_taken_over_in_redis_knows_it_at_its_next_checkpoint(redis_client) -> None:  # type: ignore[no-untyped-def]
    """RedisLockStore.holds, which each checkpoint asks: a --force takeover is seen at once, not at
    the holder's next renewal (10 s later: both runs published meanwhile)."""
    store = RedisLockStore(redis_client)
    first, second = ReplayLock(store, "k", "dlq with group g"), ReplayLock(store, "k", "dlq with group g")
    first.acquire()
    try:
        assert first.lost() is None and store.holds("k", first.value)
        assert second.acquire(force=True) is not None
        assert first.lost() is not None and second.lost() is None
    finally:
        second.release()
        first.release()
    assert redis_client.exists("k") == 0
