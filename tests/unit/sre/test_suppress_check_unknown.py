"""`suppress check` answers 1 ("not on the list") only when the list answered (found by review, sre).

Its exit status is for scripts: 0 every value is on the list, 1 one is not, 2 `unknown` (README,
"The opt-out list"). A list written under another SUPPRESSION_KEY, or Redis failing, answered 1,
the same status as a customer who never opted out: a script that surveys on 1 (and stops on
anything else) surveyed every customer who had opted out, while the consumers on that key sent
nothing. Neither is an answer; both now say `unknown` with 2, as a list without its marker does.
"""

from __future__ import annotations

from typing import Any

import pytest

from consumer.errors import StateStoreError
from consumer.state.suppression import MemoryOptOutList
from tests.unit.sre.test_suppress_key_check import IMPORTED, OTHER, _listed, _run


def test_check_under_another_key_is_no_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    result = _run(monkeypatch, OTHER, _listed(IMPORTED.key_check).replica(OTHER.key_check), "check",
                  "--phone", "+905321234568")
    assert result.exit_code == 2, result.output
    assert "not the key the opt-out list was written under" in result.stderr


class _Unreachable(MemoryOptOutList):
    def contains(self, entries: Any) -> list[bool]:
        raise StateStoreError("Redis at redis://127.0.0.1:6379/0 is unreachable (timed out); check REDIS_URL")


def test_check_while_redis_fails_is_no_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    result = _run(monkeypatch, IMPORTED, _Unreachable(key_check=IMPORTED.key_check), "check",
                  "--phone", "+905321234568")
    assert result.exit_code == 2, result.output
    assert "unreachable" in result.stderr


def test_a_value_not_on_an_armed_list_is_still_1(monkeypatch: pytest.MonkeyPatch) -> None:
    shared = _listed(IMPORTED.key_check)
    shared.add([IMPORTED.phone("+905321234567")])  # writes the keyed marker
    shared.complete()
    result = _run(monkeypatch, IMPORTED, shared.replica(IMPORTED.key_check), "check", "--phone", "+905321234568")
    assert result.exit_code == 1 and "not on the list" in result.output


@pytest.mark.parametrize(("command", "status"), [(["check", "--phone", "+905321234567"], 2),
                                                 (["add", "--phone", "+905321234567"], 1),
                                                 (["export"], 1)])
def test_a_redis_cluster_out_of_reach_at_the_start_is_said_not_a_traceback(
        monkeypatch: pytest.MonkeyPatch, command: list[str], status: int) -> None:
    # Found by review (sre): with REDIS_CLUSTER=true the client connects when it is made, before
    # any command's own error handling: a traceback and exit 1, for `check` the status of "not on
    # the list", and nothing said of what to do.
    import redis

    import consumer.app as app
    from consumer.cli import main

    def unreachable(settings: Any) -> Any:
        raise redis.exceptions.RedisClusterUnreachableError("Redis Cluster cannot be connected. Please provide at "
                                                            "least one reachable node: Error 111 connecting")

    monkeypatch.setattr(app, "build_state", unreachable)
    monkeypatch.setenv("SUPPRESSION_KEY", "import-key-0123456789")
    from click.testing import CliRunner

    result = CliRunner().invoke(main, ["suppress", *command])
    assert result.exit_code == status, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "pisano-sms: error: Redis unreachable for the opt-out list" in result.stderr
    assert "check that Redis is up" in result.stderr
