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
    assert result.exit_code == 2  # unknown: no answer (test_suppress_check_unknown.py)
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
    assert result.exit_code == 2 and "not the key the opt-out list was written under" in result.stderr
    result = _run(monkeypatch, OTHER, shared.replica(OTHER.key_check), "check", "--phone", "+905321234567")
    assert result.exit_code == 0 and "suppressed" in result.output
    _secrets_absent(result)


# Last review (fail open in a sequence): a list lost, then rotated into with `import --new-key`
# interrupted midway, left replicas on the old key reading a list without the key check: they sent
# to every customer who opted out (a warning once, then "not on the list" for everyone).
def test_a_rotation_into_a_lost_list_interrupted_midway_leaves_the_old_key_closed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from consumer.errors import StateStoreError
    from consumer.sre import suppress

    shared = MemoryOptOutList()  # lost (a flush): no marker, no keyed marker
    old_replica = shared.replica(IMPORTED.key_check)
    path = tmp_path / "opt-outs.csv"
    path.write_text("phone\n+905321234567\n+905321234568\n")
    real_flush = suppress._flush
    calls = []

    def flush_then_stop(*args: Any) -> bool:
        calls.append(args)
        real_flush(*args)
        raise KeyboardInterrupt  # the SIGTERM of a Job's pod after the first chunk

    monkeypatch.setattr(suppress, "CHUNK", 1)
    monkeypatch.setattr(suppress, "_flush", flush_then_stop)
    result = _run(monkeypatch, OTHER, shared.replica(OTHER.key_check), "import", "--new-key", str(path))
    assert result.exit_code == 130 and calls
    with pytest.raises(StateStoreError):  # not "not on the list" under a key whose entries match nothing
        old_replica.contains([IMPORTED.phone("+905321234567")])
    with pytest.raises(StateStoreError):  # the new key: only part of the list is in
        shared.replica(OTHER.key_check).contains([OTHER.phone("+905321234568")])


# Last review: a replica that saw the list, then saw it lost, sent again from the first chunk of
# the re-import on: every customer further down the file was surveyed until the import ended.
def test_a_lost_list_stays_closed_until_its_re_import_has_ended(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from consumer.errors import StateStoreError
    from consumer.sre import suppress

    shared = _listed(IMPORTED.key_check)
    replica = shared.replica(IMPORTED.key_check)
    assert replica.contains([IMPORTED.phone("+905321234569")]) == [False]  # seen
    shared._entries.clear()  # a FLUSHALL
    path = tmp_path / "opt-outs.csv"
    path.write_text("phone\n+905321234567\n+905321234568\n+905321234569\n")
    seen_midway = []
    real_flush = suppress._flush

    def flush_and_look(*args: Any) -> bool:
        done = real_flush(*args)
        try:
            seen_midway.append(replica.contains([IMPORTED.phone("+905321234569")]))
        except StateStoreError:
            seen_midway.append("closed")
        return done

    monkeypatch.setattr(suppress, "CHUNK", 1)
    monkeypatch.setattr(suppress, "_flush", flush_and_look)
    result = _run(monkeypatch, IMPORTED, shared.replica(IMPORTED.key_check), "import", str(path))
    assert result.exit_code == 0, result.output
    assert seen_midway and all(seen == "closed" for seen in seen_midway[:-1]), seen_midway
    assert replica.contains([IMPORTED.phone("+905321234569")]) == [True]


def test_check_names_each_phone_masked_never_in_clear(monkeypatch: pytest.MonkeyPatch) -> None:
    """Found in review: `suppress check` printed every phone it was given in clear (`phone
    +905321234567: suppressed`); run as a Job or in CI, its output goes to the log store like any
    other. Each answer names its phone masked as the logs do, in the order given."""
    shared = _listed(IMPORTED.key_check)
    result = _run(monkeypatch, IMPORTED, shared.replica(IMPORTED.key_check), "check",
                  "--phone", "+905321234567", "--phone", "0532 123 45 68")
    assert result.exit_code == 1
    assert result.output.splitlines()[:2] == ["phone +90********67: suppressed", "phone 0********68: not on the list"]
    assert "5321234567" not in result.output and "123 45 68" not in result.output
