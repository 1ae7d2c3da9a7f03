"""`suppress import` caps a line's length before the csv reader: a line of megabytes (a file
that is not a CSV of opt-outs, a blob pasted in a cell) is one invalid row, not a peak of
hundreds of megabytes (consumer/sre/suppress.py: MAX_LINE_CHARS)."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

from consumer.sre.suppress import MAX_LINE_CHARS, ImportSummary, import_csv
from consumer.state.suppression import MemoryOptOutList, OptOutHasher

HASHER = OptOutHasher(b"import-key-0123456789", "TR")


def _import(path: Path) -> tuple[ImportSummary, int, MemoryOptOutList]:
    store = MemoryOptOutList()
    tracemalloc.start()
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            summary = import_csv(handle, HASHER, store)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return summary, peak, store


def test_a_line_of_megabytes_is_one_invalid_row_and_the_import_goes_on(tmp_path: Path) -> None:
    # Found by review: a 20 MB line of commas peaked at ~260 MB (csv built a list of 20 million cells).
    path = tmp_path / "opt-outs.csv"
    path.write_text("phone,external_id\n+905321234567,c-1\n" + "," * 4_000_000 + "\n+905321234568,c-2\n")
    summary, peak, store = _import(path)
    assert peak < 2_000_000, peak
    assert summary.stopped is None
    assert summary.invalid_count == 1 and summary.invalid[0][0] == 3
    assert f"longer than {MAX_LINE_CHARS:,} characters" in summary.invalid[0][1]
    assert (summary.rows, summary.added) == (3, 4)
    assert store.contains([HASHER.phone("+905321234568"), HASHER.external_id("c-2")]) == [True, True]


def test_a_long_line_inside_a_quoted_cell_makes_its_row_invalid_with_the_lines_after_it_counted(
        tmp_path: Path) -> None:
    path = tmp_path / "opt-outs.csv"
    path.write_text('phone,note\n+905321234567,"a\n' + "x" * (MAX_LINE_CHARS + 10) + '\nb"\n+905321234568,ok\n')
    summary, _, store = _import(path)
    # The row of lines 2-4 is refused at its first line, naming the long one.
    assert summary.invalid_count == 1 and summary.invalid[0][0] == 2
    assert summary.invalid[0][1].startswith("line 3 is longer")
    assert store.contains([HASHER.phone("+905321234567"), HASHER.phone("+905321234568")]) == [False, True]


def test_a_line_at_the_cap_is_read(tmp_path: Path) -> None:
    path = tmp_path / "opt-outs.csv"
    cell = "+905321234567," + "y" * (MAX_LINE_CHARS - len("+905321234567,"))
    path.write_text("phone,note\n" + cell + "\n")
    summary, _, _ = _import(path)
    assert summary.invalid_count == 0 and summary.added == 1
