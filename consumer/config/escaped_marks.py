"""The `@` and `:` of a user info written as escapes: a JSON encoder that escapes every sign
(`user\u003Apw\u0040host`, `\\u0040` in a JSON string inside one), a repr of bytes (`\x40`), or a
full-width at sign or colon (U+FF20, U+FF1A, as an input method types them), or an HTML entity
(`&#64;`, `&#x40;`, `&commat;`, `&#58;`, `&colon;`: a page, an HTML-escaping log viewer; a numeric one also
without its `;`, as HTML reads `&#64host`, and escaped twice, `&amp;#64;`). A pattern written for
`user:pw@host` does not see them; a run of text holding one is masked as decoded (secret_text).
"""

from __future__ import annotations

import re
from collections.abc import Callable

# From the first backslash of a run of them only: tried at each, a long run would be read again
# from every one (quadratic).
# An HTML entity's `&` may be escaped again (`&amp;#64;`, once or more: a page quoting a page). A
# numeric one needs no `;` (HTML reads `&#64host` as `@`), unless a digit follows: then the number
# runs on, and is another character (`&#640`); but not before an IPv4 address (`&#6410.0.0.1`: no
# log means U+190A there, a host is what follows an at sign).
_IPV4_NEXT = r"(?=[0-9]{1,3}+(?:\.[0-9]{1,3}+){3}(?![0-9]))"
_MARK = re.compile(r"(?<!\\)\\++(?:u0040|u003[aA]|x40|x3[aA])|[\uff20\uff1a]"
                   r"|&(?:amp;)*+(?:#0{0,4}+(?:64(?:;|(?![0-9])|" + _IPV4_NEXT + r")|58(?:;|(?![0-9])))"
                   r"|#[xX]0{0,4}+(?:40(?:;|(?![0-9A-Fa-f])|" + _IPV4_NEXT + r")|3[aA](?:;|(?![0-9A-Fa-f])))"
                   r"|(?i:commat|colon);)")
_AT_SIGNS = ("40", "\uff20", "64", "64;", "40;", "commat;")
# A run: the text between blanks, quotes and angle brackets, as the user info passes read a URL.
# Linear: tried at a run's start only (the lookbehind), possessively.
_RUN = re.compile(r"(?<![^\s\"'<>])[^\s\"'<>]++")


def in_escaped_marks(text: str, transform: Callable[[str], str]) -> str:
    """`text` with `transform` applied to every run holding an escaped `@` or `:`, as decoded. A run
    it changes is written back with `@` and `:` escaped as they were (in the first form seen), if
    none was written plain in it; else decoded (a mixed run cannot be told apart once masked)."""
    if _MARK.search(text) is None:
        return text
    parts: list[str] = []
    done = 0
    for run in _RUN.finditer(text):
        marks = list(_MARK.finditer(text, run.start(), run.end()))
        if not marks:
            continue
        written = run.group()
        forms: dict[str, str] = {}
        for mark in marks:
            forms.setdefault(_plain(mark.group()), mark.group())
        plain = _MARK.sub(lambda mark: _plain(mark.group()), written)
        changed = transform(plain)
        if changed == plain:
            continue
        for char, form in forms.items():
            if char not in written:
                changed = changed.replace(char, form)
        parts += (text[done:run.start()], changed)
        done = run.end()
    return "".join(parts) + text[done:] if parts else text


def _plain(mark: str) -> str:
    return "@" if mark.lower().endswith(_AT_SIGNS) else ":"
