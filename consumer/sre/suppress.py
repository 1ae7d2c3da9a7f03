"""`pisano-sms suppress add|remove|check|import|export`: the opt-out list (consumer/state/suppression.py).

Phones are canonicalised with the mapping's region before hashing (`0532 123 45 67` and
`+905321234567` are one entry) and only their keyed hashes reach Redis. Nothing here prints a
phone or an id the operator did not type: `import` names bad rows by line number, `export`
writes the stored hashes (the list cannot be turned back into phones without trying every number
under SUPPRESSION_KEY, which is the point).

`import FILE` reads a CSV with a header holding `phone` and/or `external_id` (other columns are
ignored); each non-empty cell is one entry. It is idempotent (SADD): importing the same file twice
adds nothing the second time, and the summary says how many were already there. Lines are lines
of the file (a quoted cell may span several), so an operator can open the file at the one named.

A row the csv module cannot read (a cell over its 128 KiB field limit, often an unbalanced quote
that swallowed the lines after it), bytes that are not UTF-8, or Redis failing stop the import at
that line: the entries of the lines before it are on the list (each chunk is added before the
next is read), nothing after it was read, and the summary says so; fixing the file (or Redis)
and importing it again completes the list, since what is there already is only counted.
A line longer than MAX_LINE_CHARS never reaches the csv reader (CappedLines): its row is invalid,
counted, and the import goes on. Ctrl-C and SIGTERM stop it like the errors above (exit 130, 143),
once the chunk being added is added and counted.
Invalid rows exit 1 as well (after the summary): each is a customer who opted out and is not on
the list, which a script running the import must see.

Only an import that reaches the end of its file arms the list (writes its marker): a file of only
the header line starts an empty list. `add` onto a list without the marker (Redis lost it, or it
was never imported) is refused, exit 2, nothing written: it re-armed a lost list before 0.3.0.
"""

from __future__ import annotations

import contextlib
import csv
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import click

from consumer.cli_common import configured, fail
from consumer.config.settings import Settings
from consumer.errors import InvalidEventError, PisanoSmsError, StateStoreError
from consumer.operations import logs
from consumer.sre.record_text import shown
from consumer.sre.signals import Terminated, interrupt_deferred, terminate_interrupts
from consumer.state.redis import translated
from consumer.state.suppression import (
    CHUNK,
    NotArmedError,
    OptOutHasher,
    OptOutList,
    RedisOptOutList,
    WrongKeyError,
)

EXIT_NOT_LISTED = 1
EXIT_NOT_ARMED = 2  # `add` onto (or `check` of) a list without its marker (lost, or never imported): import it first
EXIT_STOPPED = 1
EXIT_INVALID = 1  # some rows could not be added: opted-out customers left off the list
EXIT_INTERRUPTED = 130  # the shell's own status for a command ended by Ctrl-C (128 + SIGINT)
EXIT_TERMINATED = 143  # and by SIGTERM (128 + SIGTERM)
PLAIN_PROGRESS_ROWS = 100_000
MAX_INVALID_SHOWN = 20
MAX_LINE_CHARS = 4096  # a line longer than this is an invalid row, never given to the csv reader


def _open(settings: Settings) -> tuple[OptOutHasher, OptOutList]:
    """The key's hasher and the list; StateStoreError when Redis is out of reach already (a cluster
    client connects when it is made): the commands say so with what to do, not a traceback."""
    from consumer.app import build_state, opt_out_hasher
    from consumer.ingest.mapping import load_mapper

    logs.configure(settings.log_format, "ERROR")  # the mapping's warnings belong to `check`, not here
    mapper = load_mapper(settings)
    hasher = opt_out_hasher(settings, mapper)
    if hasher is None:
        fail("SUPPRESSION_KEY (or SUPPRESSION_KEY_FILE) is not set: the opt-out list is keyed by it; set the "
             "same key the consumers use")
    assert hasher is not None
    with translated("the opt-out list"):
        state = build_state(settings)
    # The store knows the key: writes carry its keyed marker, and a list of another key is refused.
    return hasher, RedisOptOutList(state.client, state.keys, key_check=hasher.key_check)


def _opened(settings: Settings) -> tuple[OptOutHasher, OptOutList]:
    """`_open`, Redis out of reach said with what to do (exit 1)."""
    opened: tuple[OptOutHasher, OptOutList] = _guarded(lambda: _open(settings))
    return opened


def _entries(hasher: OptOutHasher, phones: tuple[str, ...], external_ids: tuple[str, ...]) -> list[str]:
    if not phones and not external_ids:
        fail("name at least one --phone or --external-id")
    out = []
    for number, phone in enumerate(phones, 1):
        try:
            out.append(hasher.phone(phone))
        except InvalidEventError as exc:
            fail(f"--phone number {number}: {phone_refused(exc, hasher.region)}")
    for external_id in external_ids:
        try:
            out.append(hasher.external_id(external_id))
        except InvalidEventError as exc:
            fail(f"--external-id: {exc}")
    return out


def phone_refused(exc: InvalidEventError, region: str | None) -> str:
    """Why a phone an operator gave cannot be read, and the forms that can. The phone check's own
    advice (after its first "; ") is written for a dead-letter, to fix the producer of the event:
    left off here, where the operator typed the phone or wrote the file."""
    reason = str(exc).split("; ", 1)[0]
    forms = "write it in E.164 (+, the country code and the number; spaces . - / ( ) may separate digits)"
    if region:
        return (f"{reason}; {forms}, or as national numbers of {region} (phone_region in MAPPING_FILE, or "
                "PHONE_REGION with a plug-in mapper)")
    return (f"{reason}; {forms}. A number without its country code needs the region the consumers read it "
            "with: phone_region in MAPPING_FILE, or PHONE_REGION with a plug-in mapper")


def _values(command: Any) -> Any:
    command = click.option("--external-id", "external_ids", multiple=True, metavar="ID",
                           help="A customer's external id (the `external_id` attribute). Repeatable.")(command)
    return click.option("--phone", "phones", multiple=True, metavar="PHONE",
                        help="A phone number in any form the mapping accepts. Repeatable.")(command)


@click.group("suppress")
def suppress() -> None:
    """The opt-out list: phones and external ids never surveyed (needs SUPPRESSION_KEY)."""


@suppress.command("add")
@_values
@configured
def add(settings: Settings, phones: tuple[str, ...], external_ids: tuple[str, ...]) -> None:
    """Put phones and/or external ids on the opt-out list (once imported: see `import`)."""
    hasher, store = _opened(settings)
    entries = _entries(hasher, phones, external_ids)

    def put() -> int:
        try:
            return store.add(entries)
        except NotArmedError as exc:
            # Never the marker written here: after a loss it re-armed a nearly empty list (module
            # docstring of consumer/state/suppression.py). Only a whole import arms the list.
            fail(str(exc), code=EXIT_NOT_ARMED)
            raise

    added = _guarded(put)
    click.echo(f"added {added}, already on the list {len(set(entries)) - added}")


@suppress.command("remove")
@_values
@configured
def remove(settings: Settings, phones: tuple[str, ...], external_ids: tuple[str, ...]) -> None:
    """Take phones and/or external ids off the opt-out list."""
    hasher, store = _opened(settings)
    entries = _entries(hasher, phones, external_ids)
    removed = _guarded(lambda: store.remove(entries))
    click.echo(f"removed {removed}, not on the list {len(set(entries)) - removed}")


@suppress.command("check")
@_values
@configured
def check(settings: Settings, phones: tuple[str, ...], external_ids: tuple[str, ...]) -> None:
    """Say whether each value is on the list (exit 0 if all are, 1 if any is not, 2 if the list cannot say)."""
    # 1 says "not on the list": only the list may say it. Another key's list or Redis failing is no
    # answer, `unknown` (2), as a list without its marker (found by review: both exited 1, and a
    # script that surveys on 1 surveyed every customer who had opted out).
    try:
        hasher, store = _open(settings)
        entries = _entries(hasher, phones, external_ids)
        found = store.contains(entries)
    except WrongKeyError:  # the consumers' message says "nothing is sent": this one is for `check`
        fail(WRONG_KEY_CHECK, code=EXIT_NOT_ARMED)
        raise
    except StateStoreError as exc:  # Redis failing, or out of reach from the start: no answer either
        fail(f"{exc}; no answer (unknown)", code=EXIT_NOT_ARMED)
        raise
    # The lookup asked for the marker too: without it (lost, or never imported) "not on the list"
    # is no answer to a compliance question, only what is on the set is.
    presence = getattr(store, "presence", None)
    armed = getattr(presence, "seen", True)
    # Only what the operator typed is shown, its phones masked as in the logs: this output, too,
    # may end in a log store (a Job, CI).
    typed = [f"phone {logs.redact_text(p)}" for p in phones] + [f"external id {x}" for x in external_ids]
    for label, listed in zip(typed, found, strict=True):
        click.echo(f"{label}: {'suppressed' if listed else 'not on the list' if armed else 'unknown'}")
    if not all(found) and not armed:
        fail(NOT_ARMED_CHECK, code=EXIT_NOT_ARMED)
    if not all(found) and getattr(presence, "warned_unkeyed", False):
        click.echo(UNKEYED_CHECK, err=True)
    sys.exit(0 if all(found) else EXIT_NOT_LISTED)


@dataclass(frozen=True)
class ImportStop:
    """Where and why an import stopped before the end of the file; `what` says what to do."""

    line: int  # the first line of the row that could not be read (or added)
    what: str
    interrupted: bool = False  # by the operator (Ctrl-C) or SIGTERM: nothing to fix, only to run again
    terminated: bool = False  # by SIGTERM (exit 143, not 130)


@dataclass
class ImportSummary:
    rows: int = 0
    entries: int = 0
    added: int = 0
    # The first MAX_INVALID_SHOWN invalid rows, (line, what), never the value: the ones printed.
    # Only these are kept (a file of ten million bad numbers must not hold ten million reasons).
    invalid: list[tuple[int, str]] = field(default_factory=list)
    invalid_count: int = 0  # every invalid entry
    stopped: ImportStop | None = None
    last_line: int = 0  # the entries of every line up to this one are on the list

    @property
    def already(self) -> int:
        return self.entries - self.added

    def refused(self, line: int, what: str) -> None:
        """Count an invalid entry; keep its reason only if it is among the ones printed."""
        self.invalid_count += 1
        if len(self.invalid) < MAX_INVALID_SHOWN:
            self.invalid.append((line, what))


def _unreadable_row(exc: csv.Error) -> str:
    # csv's messages name the problem, not the data ("field larger than field limit (131072)").
    return (f"the CSV cannot be read here ({exc}): a cell of over 128 KiB, or an unbalanced quote that "
            "runs on over the next lines; fix the row, or save the file again from its source")


NOT_UTF8 = ("not UTF-8 text at or after this line: save the file as UTF-8 (Excel: \"CSV UTF-8\"), "
            "or convert it (iconv -f WINDOWS-1254 -t UTF-8)")


class CappedLines:
    """The file's lines for the csv reader, none longer than MAX_LINE_CHARS (found by review: one
    20 MB line of commas made csv build a row of 20 million cells, ~260 MB). A longer line is read
    through in pieces of that size and dropped: the reader gets an empty line in its place (so its
    line numbers stay the file's), and its number is noted in `too_long` for the row to be refused."""

    def __init__(self, handle: IO[str]) -> None:
        self.handle = handle
        self.too_long: list[int] = []  # since the last row was judged
        self._number = 0

    def __iter__(self) -> CappedLines:
        return self

    def __next__(self) -> str:
        line = self.handle.readline(MAX_LINE_CHARS + 2)  # the cap, and \r\n
        if not line:
            raise StopIteration
        self._number += 1
        if len(line.rstrip("\r\n")) <= MAX_LINE_CHARS:
            return line
        self.too_long.append(self._number)
        while not line.endswith(("\n", "\r")):
            line = self.handle.readline(MAX_LINE_CHARS)
            if not line:
                break
        return "\n"

    def taken(self) -> list[int]:
        """The lines longer than the cap since the last call."""
        lines, self.too_long = self.too_long, []
        return lines


def _too_long(number: int) -> str:
    return (f"line {number:,} is longer than {MAX_LINE_CHARS:,} characters (no row of phones and ids is): not read; "
            "check the file there (a pasted blob? a file that is not the opt-out CSV?)")


# A header cell's letters and digits alone -> the kind it names.
_SPELLED_KINDS = {"phone": "phone", "externalid": "external_id"}


def import_csv(handle: IO[str], hasher: OptOutHasher, store: OptOutList,
               progress: Any = lambda rows: None) -> ImportSummary:
    """Add every phone and external id of a CSV to the list, in pipelined chunks (see the module docstring)."""
    lines = CappedLines(handle)
    reader = csv.reader(lines)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise click.UsageError(f"line 1 (the header): {_unreadable_row(exc)}") from exc
    except UnicodeDecodeError as exc:
        raise click.UsageError(f"line 1 (the header): {NOT_UTF8}") from exc
    if lines.too_long:
        raise click.UsageError(f"the header: {_too_long(lines.too_long[0])}; expected a header with phone and/or "
                               "external_id")
    if header is None:
        raise click.UsageError("the file is empty; expected a header with phone and/or external_id")
    names = [name.strip().lower() for name in header]
    for number, (cell, name) in enumerate(zip(header, names, strict=True), 1):
        # `External ID`, `externalId`, `Phone #`: meant as a kind, ignored as another column, its
        # customers left off the list with exit 0 (found by review). Refused, as a column named twice.
        kind = _SPELLED_KINDS.get("".join(c for c in name if c.isalnum()))
        if kind is not None and name != kind:
            raise click.UsageError(f"column {number} of the header, `{shown(cell, 40)}`, reads as `{kind}` but is not "
                                   f"written so: name it `{kind}` (only the columns `phone` and `external_id` are "
                                   "read, any other is ignored: its customers would be left off the list)")
    for kind in ("phone", "external_id"):
        columns = [str(n) for n, name in enumerate(names, 1) if name == kind]
        if len(columns) > 1:
            # Reading the first alone would leave the others' customers off the list, unnoticed.
            raise click.UsageError(f"the header names `{kind}` twice (columns {', '.join(columns)}): one column "
                                   f"per kind; put the other numbers in rows of their own, or import each column "
                                   f"as a file of its own")
    phone_at = names.index("phone") if "phone" in names else None
    external_at = names.index("external_id") if "external_id" in names else None
    if phone_at is None and external_at is None:
        raise click.UsageError("the header names no `phone` or `external_id` column")
    summary = ImportSummary(last_line=reader.line_num)
    try:
        _import_rows(reader, lines, phone_at, external_at, hasher, store, summary, progress)
    except KeyboardInterrupt as exc:
        # The summary says which lines are on the list: a bare "Aborted!" left the operator guessing
        # (and SIGTERM, under terminate_interrupts, said nothing at all).
        terminated = isinstance(exc, Terminated)
        summary.stopped = ImportStop(summary.last_line + 1, "terminated (SIGTERM)" if terminated
                                     else "interrupted (Ctrl-C)", interrupted=True, terminated=terminated)
    return summary


def _import_rows(reader: Any, lines: CappedLines, phone_at: int | None, external_at: int | None,
                 hasher: OptOutHasher, store: OptOutList, summary: ImportSummary, progress: Any) -> None:
    chunk: list[str] = []
    phone_entry, external_entry = hasher.phone, hasher.external_id
    while True:
        line = reader.line_num + 1  # where the next row starts
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            # The reader could go on, but from inside the bad row: what it would read is not rows.
            summary.stopped = ImportStop(line, _unreadable_row(exc))
            break
        except UnicodeDecodeError:
            summary.stopped = ImportStop(line, NOT_UTF8)
            break
        summary.rows += 1
        too_long = lines.taken()
        if too_long:
            summary.refused(line, _too_long(too_long[0]))
            row = []
        for at, entry, what in ((phone_at, phone_entry, "phone"), (external_at, external_entry, "external_id")):
            if at is None or at >= len(row) or not row[at].strip():
                continue
            if "\n" in row[at] or "\r" in row[at]:
                # No phone or id holds one: an unbalanced quote made one cell of the lines after it.
                summary.refused(line, f"{what}: a line break inside the cell (lines {line}-{reader.line_num}): "
                                      f"an unbalanced quote? check the quotes from line {line}")
                continue
            try:
                chunk.append(entry(row[at]))
            except InvalidEventError as exc:
                problem = phone_refused(exc, hasher.region) if what == "phone" else str(exc)
                summary.refused(line, f"{what}: {problem}")
        if len(chunk) >= CHUNK:
            if not _flush(store, chunk, summary, reader.line_num):
                return
            progress(summary.rows)
        elif summary.rows % CHUNK == 0:
            # Rows that add nothing (invalid, empty cells) are progress too: a file of them must
            # not look stuck until its end.
            progress(summary.rows)
    _flush(store, chunk, summary, line - 1 if summary.stopped else reader.line_num)
    progress(summary.rows)


def _flush(store: OptOutList, chunk: list[str], summary: ImportSummary, through: int) -> bool:
    """Add `chunk`, the entries of the lines after `summary.last_line` up to `through`; False (the
    import stopped at the chunk's first line) when Redis failed."""
    # The add and its count as one step for Ctrl-C and SIGTERM (held until it is done, at most the
    # Redis timeout): "lines 2 to N are on the list" then says exactly what was added.
    with interrupt_deferred():
        if chunk:
            try:
                summary.added += store.add(chunk)
            except WrongKeyError as exc:
                summary.stopped = ImportStop(summary.last_line + 1, str(exc))
                return False
            except StateStoreError as exc:
                # The error says what happened to Redis and what to do (consumer/state/redis_errors.py).
                summary.stopped = ImportStop(summary.last_line + 1, f"Redis failed ({exc}); some entries from "
                                             "this line on may be on the list: import the file again once it is "
                                             "fixed")
                return False
            summary.entries += len(chunk)
            chunk.clear()
        summary.last_line = through
    return True


class RowProgress:
    """A running count on a terminal; elsewhere a line every PLAIN_PROGRESS_ROWS rows."""

    def __init__(self, total: int | None) -> None:
        self.interactive = sys.stderr.isatty()
        self.total = total
        self._bar: Any = None
        self._shown = 0
        self._next_line = PLAIN_PROGRESS_ROWS

    def __call__(self, rows: int) -> None:
        if self.interactive:
            if self._bar is None:
                self._bar = click.progressbar(length=self.total or 0, label="importing", file=sys.stderr)
                self._bar.__enter__()
            self._bar.update(rows - self._shown)
            self._shown = rows
        elif rows >= self._next_line:
            click.echo(f"importing: {rows:,} rows", err=True)
            self._next_line = (rows // PLAIN_PROGRESS_ROWS + 1) * PLAIN_PROGRESS_ROWS

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)


def _count_rows(path: Path) -> int:
    with path.open("rb") as raw:
        return max(0, sum(chunk.count(b"\n") for chunk in iter(lambda: raw.read(1 << 20), b"")) - 1)


@suppress.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--new-key", is_flag=True,
              help="Rotate SUPPRESSION_KEY: FILE is the whole source list, imported under this (new) key; "
                   "once it is all in, the list is keyed by it and consumers on the old key stop sending.")
@configured
def import_command(settings: Settings, file: Path, new_key: bool) -> None:
    """Add every phone and external_id of a CSV FILE (with a header) to the list; idempotent."""
    hasher, store = _opened(settings)
    # MARKER (the list is there) only once the whole file is in: a list lost under running replicas
    # keeps them closed until its re-import ends, not from its first chunk on (found by review: the
    # customers further down the file were surveyed meanwhile). Every stop below leaves it held.
    store.holding_marker = True
    if new_key:
        # The entries first, the keyed marker last: consumers on the old key keep their whole list
        # (and those on the new key keep refusing) until every entry of the new key is in.
        store.rotating = True
    else:
        _guarded(store.verify_key)  # another key's list: say so before reading the file
    started = time.monotonic()
    progress = RowProgress(_count_rows(file) if sys.stderr.isatty() else None)
    try:
        with terminate_interrupts(), file.open(newline="", encoding="utf-8-sig") as handle:
            summary = _guarded(lambda: import_csv(handle, hasher, store, progress))
    finally:
        progress.close()
    click.echo(f"rows read {summary.rows:,}; entries {summary.entries:,}: added {summary.added:,}, already on "
               f"the list {summary.already:,}; invalid {summary.invalid_count:,}; "
               f"{time.monotonic() - started:.1f} s")
    for line, what in summary.invalid[:MAX_INVALID_SHOWN]:
        click.echo(f"  line {line}: {what}")
    if summary.invalid_count > len(summary.invalid):
        click.echo(f"  ... and {summary.invalid_count - len(summary.invalid):,} more invalid rows")
    stop = summary.stopped
    if stop is not None:
        with contextlib.suppress(StateStoreError):  # its own marker (consumer/state/suppression.py): not left
            store.abandon()
    # An invalid entry is a customer who opted out and is still surveyed: a script running the
    # import must see it in the exit status, not only in the lines a person reads.
    count = summary.invalid_count
    noun = "entry" if count == 1 else "entries"
    if stop is not None:
        done = ("Nothing was added" if summary.last_line < 2 else "The entries of line 2 are on the list"
                if summary.last_line == 2 else f"The entries of lines 2 to {summary.last_line} are on the list")
        if stop.interrupted:
            fail(f"{file}: {stop.what} at line {stop.line} after {summary.rows:,} row(s) read, {summary.added:,} "
                 f"entries added. {done}; import the whole file again to complete the list (it is idempotent: "
                 "what is on the list already is only counted)", EXIT_TERMINATED if stop.terminated
                 else EXIT_INTERRUPTED)
        fixes = f"it and the {count:,} invalid {noun} above" if count else "it"
        fail(f"{file}: stopped at line {stop.line}: {stop.what}. {done}; nothing from line {stop.line} on was "
             f"read. Fix {fixes} and import the whole file again (it is idempotent: what is on the list already "
             "is only counted)", EXIT_STOPPED)
    if not new_key:
        _guarded(store.complete)
    if new_key:
        _guarded(store.rotate_key)
        click.echo("the list is keyed by this SUPPRESSION_KEY now: consumers on any other key send nothing until "
                   "they run on this one")
    if count:
        fail(f"{file}: {count:,} {noun} could not be added (the invalid lines above): those customers are not on the "
             "list: fix those lines and import the file again (it is idempotent: what is on the list already is "
             "only counted)", EXIT_INVALID)


@suppress.command("export")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path),
              help="Write to this file instead of standard output.")
@configured
def export(settings: Settings, output: Path | None) -> None:
    """Write the list's entries (keyed hashes, `p:` phones, `x:` external ids), one a line.

    Phones cannot be exported in clear: only their hashes are stored. Keep the source list (the
    CRM's opt-outs) as the record of who opted out; an export is for audits and comparisons."""
    _, store = _opened(settings)

    def write(sink: IO[str]) -> int:
        count = 0
        sink.write("entry\n")
        for entry in store.entries():
            sink.write(entry + "\n")
            count += 1
            if count % PLAIN_PROGRESS_ROWS == 0:
                # On stderr: stdout may be the export itself (found by review: silent until the end).
                click.echo(f"exporting: {count:,} entries", err=True)
        return count

    if output is None:
        count = _guarded(lambda: write(sys.stdout))
    else:
        try:
            sink = output.open("w", encoding="utf-8")
        except OSError as exc:  # found by review: a traceback
            fail(f"cannot write {output} ({exc.strerror}): give a file in a directory that exists and this user "
                 "may write to, or leave -o out to write to standard output", EXIT_STOPPED)
            raise
        with sink:
            count = _guarded(lambda: write(sink))
    click.echo(f"exported {count:,} entries", err=True)


WRONG_KEY_CHECK = ("this SUPPRESSION_KEY is not the key the opt-out list was written under: every value would read "
                   "\"not on the list\", and consumers on this key send nothing. Check SUPPRESSION_KEY (or "
                   "SUPPRESSION_KEY_FILE) against the key the list was imported with")
NOT_ARMED_CHECK = ("the opt-out list has no marker: Redis lost it, or it was never imported, so a value not found "
                   "may still have opted out; import the whole list with `pisano-sms suppress import FILE`, then "
                   "ask again")
UNKEYED_CHECK = ("note: the list was written before 0.3.0 and carries no key check, so \"not on the list\" may also "
                 "mean another SUPPRESSION_KEY than the import's; the next `suppress import` or `add` adds the check")


def _guarded(action: Any) -> Any:
    try:
        return action()
    except StateStoreError as exc:
        fail(str(exc), code=1)  # it says what happened to Redis and what to do (state/redis_errors.py)
    except PisanoSmsError as exc:
        fail(str(exc))
    return None
