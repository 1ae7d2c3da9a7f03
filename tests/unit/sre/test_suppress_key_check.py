"""`pisano-sms suppress` and the list's keyed marker (consumer/state/suppression.py, "A wrong key
fails closed too"): found by the contact-policy review, a wrong or rotated SUPPRESSION_KEY failed open."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from consumer.state.suppression import MemoryOptOutList, OptOutHasher

IMPORTED = OptOutHasher(b"import-key-0123456789", "TR")
OTHER = OptOutHasher(b"other-key-0123456789", "TR")


def _run(monkeypatch: pytest.MonkeyPatch, hasher: OptOutHasher, store: MemoryOptOutList, *args: str) -> Any:
    from consumer.cli import main
    from consumer.sre import suppress

    monkeypatch.setattr(suppress, "_open", lambda settings: (hasher, store))
    return CliRunner().invoke(main, ["suppress", *args])


def _listed(key_check: str | None = None) -> MemoryOptOutList:
    return MemoryOptOutList([IMPORTED.phone("+905321234567")], key_check=key_check)


def _secrets_absent(result: Any) -> None:
    text = result.output + result.stderr
    assert "import-key" not in text and "other-key" not in text and "k:" not in text and "Traceback" not in text


def test_check_under_another_key_says_the_key_does_not_match_the_list(monkeypatch: pytest.MonkeyPatch) -> None:
    shared = _listed(IMPORTED.key_check)
    result = _run(monkeypatch, OTHER, shared.replica(OTHER.key_check), "check", "--phone", "+905321234567")
    assert result.exit_code == 1
    assert "not the key the opt-out list was written under" in result.stderr
    assert "not on the list\n" not in result.output
    _secrets_absent(result)
    result = _run(monkeypatch, IMPORTED, shared.replica(IMPORTED.key_check), "check", "--phone", "+905321234567")
    assert result.exit_code == 0 and "suppressed" in result.output


def test_check_on_a_list_from_before_the_key_check_notes_it_cannot_tell(monkeypatch: pytest.MonkeyPatch) -> None:
    result = _run(monkeypatch, OTHER, _listed().replica(OTHER.key_check), "check", "--phone", "+905321234567")
    assert result.exit_code == 1 and "not on the list" in result.output
    assert "before 0.3.0" in result.stderr and "next `suppress import` or `add`" in result.stderr


def test_add_and_import_under_another_key_are_refused_before_writing(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    shared = _listed(IMPORTED.key_check)
    result = _run(monkeypatch, OTHER, shared.replica(OTHER.key_check), "add", "--phone", "+905321234568")
    assert result.exit_code == 1 and "another SUPPRESSION_KEY" in result.stderr and "--new-key" in result.stderr
    path = tmp_path / "opt-outs.csv"
    path.write_text("phone\n+905321234568\n")
    result = _run(monkeypatch, OTHER, shared.replica(OTHER.key_check), "import", str(path))
    assert result.exit_code == 1 and "another SUPPRESSION_KEY" in result.stderr and "rows read" not in result.output
    _secrets_absent(result)
    assert shared.size() == 1


def test_import_new_key_rotates_the_list_and_the_old_key_then_fails_closed(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    shared = _listed(IMPORTED.key_check)
    path = tmp_path / "opt-outs.csv"
    path.write_text("phone\n+905321234567\n")
    result = _run(monkeypatch, OTHER, shared.replica(OTHER.key_check), "import", "--new-key", str(path))
    assert result.exit_code == 0, result.output
    assert "added 1," in result.output and "keyed by this SUPPRESSION_KEY now" in result.output
    result = _run(monkeypatch, IMPORTED, shared.replica(IMPORTED.key_check), "check", "--phone", "+905321234567")
    assert result.exit_code == 1 and "not the key the opt-out list was written under" in result.stderr
    result = _run(monkeypatch, OTHER, shared.replica(OTHER.key_check), "check", "--phone", "+905321234567")
    assert result.exit_code == 0 and "suppressed" in result.output
    _secrets_absent(result)
