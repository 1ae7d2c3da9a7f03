"""`pisano-sms suppress add` onto a list without its marker (consumer/state/suppression.py, "A lost
list fails closed"): found by review, a routine `add` of one phone after Redis lost the list wrote
the marker back and every replica sent again, to every customer who had opted out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from consumer.errors import StateStoreError
from consumer.state.suppression import MemoryOptOutList, OptOutHasher

HASHER = OptOutHasher(b"import-key-0123456789", "TR")


def _run(monkeypatch: pytest.MonkeyPatch, store: MemoryOptOutList, *args: str) -> Any:
    from consumer.cli import main
    from consumer.sre import suppress

    monkeypatch.setattr(suppress, "_open", lambda settings: (HASHER, store))
    return CliRunner().invoke(main, ["suppress", *args])


def _lost_under_a_replica() -> tuple[MemoryOptOutList, MemoryOptOutList]:
    shared = MemoryOptOutList([HASHER.phone("+905321234567")], key_check=HASHER.key_check)
    replica = shared.replica(HASHER.key_check)
    assert replica.contains([HASHER.phone("+905321234567")]) == [True]  # seen
    shared._entries.clear()  # Redis restarted without its data
    return shared, replica


def _says_to_import(result: Any) -> None:
    assert result.exit_code == 2, result.output
    assert "has no marker" in result.stderr and "pisano-sms suppress import FILE" in result.stderr
    assert "added" not in result.stdout and "Traceback" not in result.output


def test_add_onto_a_lost_list_is_refused_and_the_fleet_stays_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    shared, replica = _lost_under_a_replica()
    result = _run(monkeypatch, shared.replica(HASHER.key_check), "add", "--phone", "+905321234568")
    _says_to_import(result)
    with pytest.raises(StateStoreError):
        replica.contains([HASHER.phone("+905321234567")])
    assert shared.size() == 0


def test_remove_onto_a_lost_list_does_not_re_arm_it(monkeypatch: pytest.MonkeyPatch) -> None:
    shared, replica = _lost_under_a_replica()
    result = _run(monkeypatch, shared.replica(HASHER.key_check), "remove", "--phone", "+905321234567")
    assert result.exit_code == 0 and "removed 0" in result.output
    with pytest.raises(StateStoreError):
        replica.contains([HASHER.phone("+905321234567")])


def test_a_new_deployment_imports_an_empty_file_then_adds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shared = MemoryOptOutList(key_check=HASHER.key_check)
    shared._entries.clear()  # never written: a set that is not there
    _says_to_import(_run(monkeypatch, shared.replica(HASHER.key_check), "add", "--phone", "+905321234568"))
    empty = tmp_path / "opt-outs.csv"
    empty.write_text("phone\n")
    result = _run(monkeypatch, shared.replica(HASHER.key_check), "import", str(empty))
    assert result.exit_code == 0, result.output
    assert "rows read 0;" in result.output
    replica = shared.replica(HASHER.key_check)
    assert replica.contains([HASHER.phone("+905321234568")]) == [False]  # armed and empty
    result = _run(monkeypatch, shared.replica(HASHER.key_check), "add", "--phone", "+905321234568")
    assert result.exit_code == 0 and "added 1," in result.output
    assert replica.contains([HASHER.phone("+905321234568")]) == [True]
    shared._entries.clear()
    with pytest.raises(StateStoreError):  # armed by the empty import: a loss is seen
        replica.contains([HASHER.phone("+905321234568")])


def test_the_lost_list_is_re_armed_by_its_whole_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shared, replica = _lost_under_a_replica()
    path = tmp_path / "opt-outs.csv"
    path.write_text("phone\n+905321234567\n")
    result = _run(monkeypatch, shared.replica(HASHER.key_check), "import", str(path))
    assert result.exit_code == 0, result.output
    assert replica.contains([HASHER.phone("+905321234567"), HASHER.phone("+905321234568")]) == [True, False]
    result = _run(monkeypatch, shared.replica(HASHER.key_check), "add", "--phone", "+905321234568")
    assert result.exit_code == 0 and "added 1," in result.output


def test_an_import_the_list_was_lost_under_stops_and_leaves_the_fleet_closed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from consumer.sre import suppress

    shared = MemoryOptOutList([HASHER.phone("+905321234567")], key_check=HASHER.key_check)
    replica = shared.replica(HASHER.key_check)
    assert replica.contains([HASHER.phone("+905321234567")]) == [True]  # seen
    path = tmp_path / "opt-outs.csv"
    path.write_text("phone\n+905321234567\n+905321234568\n+905321234569\n")
    real_flush = suppress._flush

    def flush_then_lose(*args: Any) -> bool:
        done = real_flush(*args)
        shared._entries.clear()  # Redis restarted without its data, after the first chunk
        return done

    monkeypatch.setattr(suppress, "CHUNK", 1)
    monkeypatch.setattr(suppress, "_flush", flush_then_lose)
    result = _run(monkeypatch, shared.replica(HASHER.key_check), "import", str(path))
    assert result.exit_code == 1, result.output
    assert "lost from Redis while this import ran" in result.stderr and "Traceback" not in result.output
    with pytest.raises(StateStoreError):
        replica.contains([HASHER.phone("+905321234569")])


def test_check_on_a_list_without_its_marker_answers_unknown_not_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    # `check` answers a compliance question ("is this customer opted out?"): on a lost list, "not on
    # the list" was printed with exit 1, the same answer an armed list gives for a customer who never
    # opted out. A fresh CLI process never saw the marker, so it asks for it itself.
    shared, _ = _lost_under_a_replica()
    result = _run(monkeypatch, shared.replica(HASHER.key_check), "check", "--phone", "+905321234567")
    assert result.exit_code == 2, result.output
    assert "not on the list" not in result.stdout
    assert "phone +90********67: unknown" in result.stdout
    assert "has no marker" in result.stderr and "pisano-sms suppress import FILE" in result.stderr
    armed = MemoryOptOutList([HASHER.phone("+905321234567")], key_check=HASHER.key_check)
    result = _run(monkeypatch, armed.replica(HASHER.key_check), "check", "--phone", "+905321234568")
    assert result.exit_code == 1 and "phone +90********68: not on the list" in result.stdout
