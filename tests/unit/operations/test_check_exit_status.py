"""`check` exits as `run` would start (README "Configuration": a bad configuration stops every
command with exit status 2; "Redis must never evict": `check` and every start refuse an evicting
Redis with 2). Found by review: `check` exited 1 for both, as for a dependency that did not
answer, so a deploy script could not tell "fix the configuration" from "try again"."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

from consumer.cli import main
from consumer.operations import check

_real_redis = check._redis  # before the fixture replaces it

@pytest.fixture
def dependencies_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("_kafka", "_redis", "_registry", "_pisano"):
        monkeypatch.setattr(check, name, lambda *args: ("ok", "answered"))


def _check(monkeypatch: pytest.MonkeyPatch, **env: str) -> Any:
    for name in ("KAFKA_TOPICS", "PISANO_URL", "PISANO_API_TOKEN", "DESTINATIONS"):
        monkeypatch.delenv(name, raising=False)
    return CliRunner().invoke(main, ["check"], env=env)


def test_a_configuration_run_refuses_exits_2(monkeypatch: pytest.MonkeyPatch, dependencies_answer: None) -> None:
    result = _check(monkeypatch, PISANO_URL="https://api.pisano.co", PISANO_API_TOKEN="t0ken-value")
    assert "KAFKA_TOPICS" in result.output
    assert result.exit_code == 2, result.output


def test_a_usable_configuration_exits_0(monkeypatch: pytest.MonkeyPatch, dependencies_answer: None) -> None:
    result = _check(monkeypatch, KAFKA_TOPICS="t", PISANO_URL="https://api.pisano.co", PISANO_API_TOKEN="t0ken-value")
    assert result.exit_code == 0, result.output


def test_a_dependency_that_fails_exits_1(monkeypatch: pytest.MonkeyPatch, dependencies_answer: None) -> None:
    monkeypatch.setattr(check, "_kafka", lambda *args: ("failed", "topic(s) t do not exist; create them"))
    result = _check(monkeypatch, KAFKA_TOPICS="t", PISANO_URL="https://api.pisano.co", PISANO_API_TOKEN="t0ken-value")
    assert result.exit_code == 1, result.output


class _EvictingRedis:
    def ping(self) -> bool:
        return True

    def info(self, section: str) -> dict[str, Any]:
        if section == "memory":
            return {"used_memory": 100, "maxmemory": 1000, "maxmemory_policy": "allkeys-lru"}
        return {"redis_version": "7.4.0"}


def test_an_evicting_redis_exits_2_as_the_start_refuses_it(monkeypatch: pytest.MonkeyPatch,
                                                           dependencies_answer: None) -> None:
    monkeypatch.setattr(check, "_redis", _real_redis)
    monkeypatch.setattr(check, "connect", lambda *args, **kwargs: _EvictingRedis())
    result = _check(monkeypatch, KAFKA_TOPICS="t", PISANO_URL="https://api.pisano.co", PISANO_API_TOKEN="t0ken-value")
    assert "allkeys-lru" in result.output
    assert result.exit_code == 2, result.output

