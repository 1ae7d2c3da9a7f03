from pathlib import Path

import pytest
from click.testing import CliRunner

from consumer.cli import main


def test_help_lists_the_commands() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for command in ("run", "check"):
        assert command in result.output


def test_malformed_config_is_one_line_and_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("PISANO_RATE_LIMITS: 20 per 5\n")
    result = CliRunner().invoke(main, ["run", "--config", str(config)])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1
    assert "PISANO_RATE_LIMITS='20 per 5'" in result.output and "Traceback" not in result.output


def test_group_level_config_applies(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("batch_max_recipients: 0\n")
    result = CliRunner().invoke(main, ["--config", str(config), "check"])
    assert result.exit_code == 2 and "BATCH_MAX_RECIPIENTS=0" in result.output


def test_run_without_required_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KAFKA_TOPICS", "PISANO_URL", "PISANO_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(main, ["run"])
    assert result.exit_code == 2
    assert "missing setting(s): KAFKA_TOPICS, PISANO_URL" in result.output
