"""`check` and a replica's start refuse a Redis that may evict delivered marks (finding: every
dedup key has a TTL, so volatile-* policies evict them as surely as allkeys-*)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import Stack
from tests.integration.test_cli_commands import base_env, pisano_sms

LIMITED_USER, LIMITED_PASSWORD = "pisano-noinfo", "noinfo-local-pw"


def _line(output: str, name: str) -> str:
    return next(line for line in output.splitlines() if line.split() and line.split()[0] == name)


@pytest.fixture
def policy(redis_client) -> Iterator[object]:  # type: ignore[no-untyped-def]
    """Set Redis's maxmemory-policy for one test; noeviction (the local stack's) comes back after."""
    yield lambda value: redis_client.config_set("maxmemory-policy", value)
    redis_client.config_set("maxmemory-policy", "noeviction")


def test_the_local_stack_runs_redis_with_noeviction(redis_client) -> None:  # type: ignore[no-untyped-def]
    assert redis_client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}


def test_check_refuses_an_evicting_redis_unless_allowed(stack: Stack, policy) -> None:  # type: ignore[no-untyped-def]
    env = base_env(stack)
    assert "noeviction" in _line(pisano_sms("check", env=env).stdout, "redis")
    policy("volatile-lru")
    refused = pisano_sms("check", env=env)
    assert refused.returncode == 2  # as the start refuses it (before 0.3.0: 1)
    line = _line(refused.stdout, "redis")
    assert "failed" in line and "volatile-lru" in line and "REDIS_ALLOW_EVICTION=true" in line
    allowed = _line(pisano_sms("check", env={**env, "REDIS_ALLOW_EVICTION": "true"}).stdout, "redis")
    assert allowed.split()[1] == "ok" and "ALLOWED" in allowed


def test_start_refuses_an_evicting_redis_unless_allowed(stack: Stack, policy) -> None:  # type: ignore[no-untyped-def]
    policy("allkeys-lru")
    env = base_env(stack, KAFKA_TOPICS="eviction-test", PISANO_URL="http://127.0.0.1:9", PISANO_API_TOKEN="t",
                   HTTP_PORT="0", LOG_FORMAT="text")
    refused = pisano_sms("run", env=env, timeout=60)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "maxmemory-policy is allkeys-lru" in refused.stderr and "noeviction" in refused.stderr


def test_a_user_that_may_not_read_the_policy_is_told_what_to_do(stack: Stack, redis_client) -> None:  # type: ignore[no-untyped-def]
    redis_client.acl_setuser(LIMITED_USER, enabled=True, passwords=[f"+{LIMITED_PASSWORD}"], keys=["*"],
                             channels=["*"], commands=["+@all", "-info", "-config"])
    try:
        url = stack.redis_url.replace("redis://", f"redis://{LIMITED_USER}:{LIMITED_PASSWORD}@")
        result = pisano_sms("check", env={**base_env(stack), "REDIS_URL": url})
        line = _line(result.stdout, "redis")
        assert "failed" in line and "neither INFO nor CONFIG GET" in line and "+info" in line
        assert LIMITED_PASSWORD not in result.stdout + result.stderr
    finally:
        redis_client.acl_deluser(LIMITED_USER)
