"""Text behind percent-encoding: a query or form that Pisano or a proxy echoes writes a URL, a
secret `name=value` or a phone number as `%XX` escapes (`https%3A%2F%2Fu%3Apw%40h`,
`to=0532%20123%2045%2067`), and a pattern written for the plain text does not see it there.
Shared by the secret masking (secret_text) and the phone redaction (operations/logs).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import quote, unquote

# A run of unreserved characters holding a `%XX` escape (a run without one, most words, is passed
# over by the pattern, with no call back). Raw `? # & =` end it, so a query's structure is looked
# at as such, not decoded. Raw `:` and `@` do not: a quote() told to leave them (`safe=":@"`) writes
# `https%3A%2F%2Fu:pw%40h`, and cut there neither half held the URL. Linear: tried at a run's start
# only (the lookbehind), possessively.
_RUN_CHAR = r"[\w.~!*+/:@\[\]-]"
_ESCAPED = r"%[0-9A-Fa-f]{2}"
_ENCODED_RUN = re.compile(rf"(?<!{_RUN_CHAR}){_RUN_CHAR}*+{_ESCAPED}(?:{_RUN_CHAR}|{_ESCAPED})*+")
_ESCAPE = re.compile(_ESCAPED)  # most texts have none: one scan
_SIGNS = frozenset("!/:@[]")  # the signs of a run that quote() would escape (letters, digits, `_.~-` it keeps)
DECODE_LEVELS = 3  # encoded once in a query, once more by a proxy: deeper is not seen
# A run read as what it writes: raw characters (each its own), or escapes (decoded together: UTF-8).
_PIECE = re.compile(rf"(?:{_ESCAPED})++|[^%]++|%")


def in_encoded_runs(text: str, transform: Callable[[str], str]) -> str:
    """`text` with `transform` applied to every run holding a `%XX` escape, as decoded. A run it
    changes is written back as it was where the transform left it alone (at either end of what it
    changed: `user%3A***@[::1]:6379` keeps its host's raw `:`); what lies between is encoded again
    as the run was written: a sign written raw in it (and not escaped elsewhere in it) is written
    raw again (`user:pw%40host` keeps its `:`, `https%3A//` its slashes), `*` and `+` too (so a
    mask reads as one, as does a phone's `+`); any other run is left exactly as it was written.
    Linear: each run is decoded once (a transform that calls this again on its input goes one
    level deeper, DECODE_LEVELS at most)."""
    if _ESCAPE.search(text) is None:
        return text

    def decoded(run: re.Match[str]) -> str:
        written = run.group()
        plain = unquote(written)
        if plain == written:
            return written
        changed = transform(plain)
        if changed == plain:
            return written
        escaped = set(unquote("".join(_ESCAPE.findall(written))))
        raw = set(_ESCAPE.sub("", written)) - escaped
        head, tail, start, end = _kept_ends(written, plain, changed)
        return head + quote(changed[start:len(changed) - end], safe="*+" + "".join(sorted(raw & _SIGNS))) + tail

    return _ENCODED_RUN.sub(decoded, text)


def _kept_ends(written: str, plain: str, changed: str) -> tuple[str, str, int, int]:
    """The written text of the longest start and end of `plain` that `changed` keeps (whole pieces:
    an escape run is not cut), and how many decoded characters each holds."""
    same = 0
    limit = min(len(plain), len(changed))
    while same < limit and plain[same] == changed[same]:
        same += 1
    same_end = 0
    while same_end < limit - same and plain[-1 - same_end] == changed[-1 - same_end]:
        same_end += 1
    pieces = [piece.group() for piece in _PIECE.finditer(written)]
    head: list[str] = []
    start = taken = 0
    for piece in pieces:
        raw = piece[0] != "%" or len(piece) < 3
        size = len(piece) if raw else _decoded_length(piece)
        if start + size > same:
            if raw:  # a raw character is its own: part of a run of them may be kept
                head.append(piece[:same - start])
                start = same
            break
        head.append(piece)
        start += size
        taken += 1
    tail: list[str] = []
    end = 0
    for piece in reversed(pieces[taken:]):
        raw = piece[0] != "%" or len(piece) < 3
        size = len(piece) if raw else _decoded_length(piece)
        if end + size > same_end:
            if raw and same_end > end:
                tail.append(piece[len(piece) - (same_end - end):])
                end = same_end
            break
        tail.append(piece)
        end += size
    return "".join(head), "".join(reversed(tail)), start, end


def _decoded_length(escapes: str) -> int:
    # ASCII escapes (`%00` to `%7F`, most of them: `%3A`, `%40`) are one character each.
    return len(escapes) // 3 if max(escapes[1::3]) < "8" else len(unquote(escapes))
