"""Review of `suppress import` with hostile files (consumer/sre/suppress.py): found by review."""

from __future__ import annotations

import io
import tracemalloc
from pathlib import Path

import pytest
from click.testing import CliRunner

from consumer.sre.suppress import MAX_INVALID_SHOWN, import_csv
from consumer.state.suppression import CHUNK, MemoryOptOutList, OptOutHasher

HASHER = OptOutHasher(b"import-key-0123456789", "TR")


def test_a_file_of_invalid_rows_keeps_memory_bounded_and_counts_every_one() -> None:
    # Found by review: every invalid row kept its ~250-character reason (~400 bytes a row), so a
    # 10-million-line export of bad numbers took ~4 GB before a single line was printed.
    rows = 60_000
    text = "phone\n" + "+90 12\n" * rows
    tracemalloc.start()
    try:
        summary = import_csv(io.StringIO(text), HASHER, MemoryOptOutList())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert summary.invalid_count == rows
    assert len(summary.invalid) == MAX_INVALID_SHOWN  # the ones printed, first lines first
    assert [line for line, _ in summary.invalid] == list(range(2, 2 + MAX_INVALID_SHOWN))
    assert peak < 5_000_000, peak  # the file's text itself is ~420 KB


def test_progress_goes_on_through_rows_that_add_nothing() -> None:
    # Found by review: progress was reported per chunk of entries added, so a file of invalid rows
    # (or of empty cells) showed nothing until its end.
    rows = 3 * CHUNK
    seen: list[int] = []
    import_csv(io.StringIO("phone\n" + "+90 12\n" * rows), HASHER, MemoryOptOutList(), seen.append)
    assert len(seen) >= 3 and seen[0] <= CHUNK and seen[-1] == rows


def test_the_command_counts_every_invalid_row_beyond_the_ones_it_shows(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from consumer.cli import main
    from consumer.sre import suppress

    monkeypatch.setattr(suppress, "_open", lambda settings: (HASHER, MemoryOptOutList()))
    path = tmp_path / "opt-outs.csv"
    path.write_bytes(b"\xef\xbb\xbfphone\r\n" + b"+90 12\r\n" * 50 + b"+905321234567\r\n")
    result = CliRunner().invoke(main, ["suppress", "import", str(path)])
    assert result.exit_code == 1, result.output
    assert "invalid 50;" in result.output and "and 30 more invalid rows" in result.output
    assert "50 entries could not be added" in result.output
    assert "added 1," in result.output and "Traceback" not in result.output


def test_export_shows_progress_on_stderr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Found by review: `suppress export` of a list of millions (SSCAN, 10,000 a round trip) said
    # nothing until the end; every long-running command shows progress.
    from consumer.cli import main
    from consumer.sre import suppress

    store = MemoryOptOutList([f"p:{n:032x}" for n in range(250_000)])
    monkeypatch.setattr(suppress, "_open", lambda settings: (HASHER, store))
    out = tmp_path / "opt-outs.hashes"
    result = CliRunner().invoke(main, ["suppress", "export", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "exporting: 100,000 entries" in result.stderr and "exporting: 200,000 entries" in result.stderr
    assert "exported 250,000 entries" in result.stderr
    assert out.read_text().count("\n") == 250_001 and "exporting" not in out.read_text()


def test_export_to_a_path_it_cannot_write_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Found by review (sre): a traceback (FileNotFoundError) and exit 1, nothing said of what to do.
    from consumer.cli import main
    from consumer.sre import suppress

    monkeypatch.setattr(suppress, "_open", lambda settings: (HASHER, MemoryOptOutList(["p:" + "0" * 32])))
    result = CliRunner().invoke(main, ["suppress", "export", "-o", str(tmp_path / "no-such-dir" / "x.hashes")])
    assert result.exit_code == 1 and result.exception is not None and isinstance(result.exception, SystemExit)
    assert "pisano-sms: error: cannot write" in result.stderr and "directory" in result.stderr
