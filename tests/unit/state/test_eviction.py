"""Reading Redis's eviction policy and memory use, and refusing a Redis that may evict."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import redis

from consumer.errors import ConfigError
from consumer.state.eviction import RedisInfoDenied, eviction_problem, read_memory, require_noeviction

NOPERM = redis.exceptions.NoPermissionError("NOPERM User limited has no permissions to run the 'info' command")


class FakeRedis:
    def __init__(self, info: Any = None, config: Any = None) -> None:
        self._info, self._config = info, config

    def info(self, section: str) -> Any:
        assert section == "memory"
        if isinstance(self._info, Exception):
            raise self._info
        return self._info

    def config_get(self, name: str) -> Any:
        assert name == "maxmemory-policy"
        if isinstance(self._config, Exception):
            raise self._config
        return self._config


def memory(policy: str = "noeviction", used: int = 10, maximum: int = 0) -> dict[str, Any]:
    return {"used_memory": used, "maxmemory": maximum, "maxmemory_policy": policy}


def test_policy_and_ratio_come_from_one_info_section() -> None:
    read = read_memory(FakeRedis(memory("noeviction", used=300, maximum=1000)))
    assert (read.policy, read.used_ratio) == ("noeviction", 0.3)
    assert eviction_problem(read) is None


def test_no_maxmemory_means_a_ratio_of_zero() -> None:
    assert read_memory(FakeRedis(memory(used=10**9, maximum=0))).used_ratio == 0.0


@pytest.mark.parametrize("policy", ["volatile-lru", "volatile-ttl", "allkeys-lru", "allkeys-random"])
def test_every_other_policy_is_a_problem_that_says_what_to_do(policy: str) -> None:
    problem = eviction_problem(read_memory(FakeRedis(memory(policy))))
    assert problem and policy in problem and "noeviction" in problem and "REDIS_ALLOW_EVICTION=true" in problem


def test_a_cluster_answers_per_node_and_the_worst_node_counts() -> None:
    nodes = {"10.0.0.1:6379": memory("noeviction", 100, 1000), "10.0.0.2:6379": memory("allkeys-lru", 900, 1000)}
    read = read_memory(FakeRedis(nodes))
    assert read.policy == "allkeys-lru" and read.used_ratio == 0.9


def test_config_get_answers_when_info_is_not_allowed() -> None:
    read = read_memory(FakeRedis(NOPERM, {"maxmemory-policy": "volatile-lru"}))
    assert read.policy == "volatile-lru" and read.used_ratio == 0.0


def test_neither_info_nor_config_is_said_clearly() -> None:
    with pytest.raises(RedisInfoDenied):
        read_memory(FakeRedis(NOPERM, redis.exceptions.ResponseError("unknown command 'config'")))
    with pytest.raises(ConfigError, match=r"\+info.*REDIS_ALLOW_EVICTION=true"):
        require_noeviction(FakeRedis(NOPERM, NOPERM), allow=False)


def test_start_refuses_an_evicting_redis_unless_allowed_and_then_says_so(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ConfigError, match="maxmemory-policy is volatile-lru"):
        require_noeviction(FakeRedis(memory("volatile-lru")), allow=False)
    with caplog.at_level(logging.ERROR):
        require_noeviction(FakeRedis(memory("volatile-lru")), allow=True)
    assert "REDIS_ALLOW_EVICTION=true" in caplog.text and "volatile-lru" in caplog.text


def test_redis_unreachable_at_start_is_no_reason_to_refuse() -> None:
    require_noeviction(FakeRedis(redis.exceptions.ConnectionError("refused")), allow=False)


def test_an_outage_is_not_mistaken_for_a_refusal() -> None:
    with pytest.raises(redis.exceptions.ConnectionError):
        read_memory(FakeRedis(redis.exceptions.ConnectionError("refused")))
