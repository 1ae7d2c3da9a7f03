"""`simulate` takes its tokens from places `ps` does not show: `--token-file`, or the settings
PISANO_API_TOKEN / PISANO_API_TOKEN_FILE. `--token` still works (a contract) and warns that the
process list shows it (found by review: the only way to give several tokens was argv)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from consumer.cli import main

SECRET = "tok-secret-4711"


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The configs `simulate` would serve, instead of serving them."""
    for name in ("PISANO_API_TOKEN", "PISANO_API_TOKEN_FILE", "PISANO_URL", "PISANO_SIM_ADMIN_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    configs: list[Any] = []
    monkeypatch.setattr("consumer.simulator.serve", lambda config, **kwargs: configs.append(config))
    return configs


def _simulate(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(main, ["simulate", "--port", "0", *args], env=env)


def test_token_file_keeps_the_tokens_out_of_argv(served: list[Any], tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{SECRET}\nsecond-token\n")
    result = _simulate("--token-file", str(tokens))
    assert result.exit_code == 0, result.output
    assert served[0].tokens == frozenset({SECRET, "second-token"})
    assert "warning" not in result.output


def test_the_environment_keeps_the_token_out_of_argv(served: list[Any]) -> None:
    result = _simulate(env={"PISANO_API_TOKEN": SECRET})
    assert result.exit_code == 0, result.output
    assert served[0].tokens == frozenset({SECRET}) and "warning" not in result.output


def test_token_in_argv_still_works_and_says_what_to_use_instead(served: list[Any]) -> None:
    result = _simulate("--token", SECRET)
    assert result.exit_code == 0, result.output
    assert served[0].tokens == frozenset({SECRET})
    assert "warning" in result.output and "--token-file" in result.output and "PISANO_API_TOKEN" in result.output
    assert SECRET not in result.output


def test_an_unreadable_token_file_names_the_option_not_the_content(served: list[Any], tmp_path: Path) -> None:
    result = _simulate("--token-file", str(tmp_path / "missing"))
    assert result.exit_code == 2 and "--token-file" in result.output and "Traceback" not in result.output
    empty = tmp_path / "empty"
    empty.write_text("\n")
    result = _simulate("--token-file", str(empty))
    assert result.exit_code == 2 and "--token-file" in result.output and not served


def test_no_token_says_where_to_put_one(served: list[Any]) -> None:
    result = _simulate()
    assert result.exit_code == 2 and "--token-file" in result.output and "PISANO_API_TOKEN" in result.output
