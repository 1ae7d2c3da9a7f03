"""`suppress add/remove/check` and `import` refuse a phone with advice for the operator who typed
it (the forms it takes, the region that reads national numbers), never the dead-letter's advice
to fix a producer (found by review: `suppress add` said "fix the producer's phone field")."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from click.testing import CliRunner

from consumer.cli import main
from consumer.sre.suppress import import_csv
from consumer.state.suppression import MemoryOptOutList, OptOutHasher

KEY = "suppress-advice-key-0123456789"


@pytest.fixture
def no_mapping(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MAPPING_FILE", "MAPPER", "PHONE_REGION", "SUPPRESSION_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("command", ["add", "remove", "check"])
@pytest.mark.parametrize("phone", ["+90 532 abc 45", "+12", "12"])
def test_a_phone_the_command_cannot_read_gets_advice_for_the_operator(no_mapping: None, command: str,
                                                                      phone: str) -> None:
    result = CliRunner().invoke(main, ["suppress", command, "--phone", phone], env={"SUPPRESSION_KEY": KEY})
    assert result.exit_code == 2, result.output
    assert "producer" not in result.output
    assert "--phone number 1" in result.output and "E.164" in result.output
    assert "phone_region" in result.output and "PHONE_REGION" in result.output


def test_the_region_in_force_is_named(no_mapping: None, tmp_path: Path) -> None:
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text("event_id: id\nphone: phone\ncampaign_id: campaign\nphone_region: TR\n")
    result = CliRunner().invoke(main, ["suppress", "add", "--phone", "+90 532 abc 45"],
                                env={"SUPPRESSION_KEY": KEY, "MAPPING_FILE": str(mapping)})
    assert result.exit_code == 2 and "producer" not in result.output
    assert "national numbers of TR" in result.output


def test_import_names_bad_phones_with_the_same_advice() -> None:
    summary = import_csv(io.StringIO("phone\n+90 532 abc 45\n"), OptOutHasher(KEY.encode(), "TR"), MemoryOptOutList())
    (line, what), = summary.invalid
    assert line == 2 and "producer" not in what and "E.164" in what
