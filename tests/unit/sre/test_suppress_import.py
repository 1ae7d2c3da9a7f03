"""`pisano-sms suppress import`: CSV rows to keyed hashes, idempotent, bad rows by line number
(consumer/sre/suppress.py)."""

from __future__ import annotations

import io

import click
import pytest

from consumer.sre.suppress import import_csv
from consumer.state.suppression import MemoryOptOutList, OptOutHasher

HASHER = OptOutHasher(b"import-key-0123456789", "TR")


def test_import_is_idempotent_and_names_bad_rows_by_line_only() -> None:
    text = ("name,Phone,external_id\n"
            "Ayşe,0532 123 45 67,c-1\n"
            "Ali,+905321234567,\n"          # the same phone in another form
            "Bad,+90 12,c-3\n"              # not a phone: line 4, its id still counts
            "Empty,,\n"
            "Short\n")
    store = MemoryOptOutList()
    first = import_csv(io.StringIO(text), HASHER, store)
    assert (first.rows, first.entries, first.added) == (5, 4, 3)
    assert [line for line, _ in first.invalid] == [4]
    assert "+90 12" not in first.invalid[0][1]
    second = import_csv(io.StringIO(text), HASHER, store)
    assert (second.added, second.already) == (0, 4) and store.size() == 3
    assert store.contains([HASHER.phone("+905321234567"), HASHER.external_id("c-3")]) == [True, True]


def test_progress_is_reported_per_chunk() -> None:
    rows = "phone\n" + "".join(f"+90532{n:07d}\n" for n in range(25_000))
    seen: list[int] = []
    summary = import_csv(io.StringIO(rows), HASHER, MemoryOptOutList(), seen.append)
    assert summary.added == 25_000 and seen[-1] == 25_000 and len(seen) >= 3


@pytest.mark.parametrize("text", ["", "name,email\nx,y\n"])
def test_a_file_without_the_columns_is_refused(text: str) -> None:
    with pytest.raises(click.UsageError):
        import_csv(io.StringIO(text), HASHER, MemoryOptOutList())
