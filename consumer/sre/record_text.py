"""Text from outside as the SRE tools read and print it: plain numbers, and text fit for a terminal.

The dead-letter topic is input: anyone who may write to it chooses its headers, and the tools'
printers put what they read in front of an operator. A terminal acts on escape sequences (change
the title, clear the screen, rewrite what was printed, on some terminals answer back), and a
right-to-left override makes a line read differently from what it holds; a header may also hold a
phone number. So every printer passes text that came from a record through `shown`, even text the
parser has already checked: one rule in one place, not a check remembered at each call site.
"""

from __future__ import annotations

import re

from consumer.ingest.mapping import is_campaign_id
from consumer.operations.logs import redact_text

MAX_SHOWN_CHARS = 200
_IDENTIFIER = re.compile(r"[A-Za-z0-9._-]{1,249}")  # Kafka's topic-name characters: reasons and codes fit too
_LETTER = re.compile(r"[A-Za-z]")


def shown(text: str, limit: int = MAX_SHOWN_CHARS) -> str:
    """`text` as it may be printed: phone numbers masked, every character a terminal would act on
    or that is not printable (controls, format characters such as bidi overrides, unassigned code
    points, lone surrogates) written as its Python escape (`\\x1b`), at most `limit` characters.

    Showing shown text again changes nothing (a backslash is left as it is), so a printer need not
    know whether a reason was already made safe where it was built. Cut before redacting (the work
    stays bounded) with room to spare, then again after: no half number is left."""
    return _escaped(redact_text(text[: limit * 4]), limit)


def shown_id(text: str, limit: int = MAX_SHOWN_CHARS) -> str:
    """An identifier from a record (a campaign id, a topic name, a reason, an error code) as it may
    be printed: as it is when it is one (a UUID, or Kafka's topic-name characters only), since a
    run of seven digits in a UUID or a dated topic name is not a phone, and masked it is no longer
    the id an SRE copies into `replay --campaign` (found by review); anything else as `shown`. One
    without a letter is a number (an error code), and a phone is one too: it is `shown`, which
    keeps a code of Pisano's (five digits) and masks seven or more (found by review)."""
    if len(text) <= limit and (is_campaign_id(text) or (_IDENTIFIER.fullmatch(text) and _LETTER.search(text))):
        return text
    return shown(text, limit)


def _escaped(text: str, limit: int) -> str:
    escaped = "".join(c if c.isprintable() else c.encode("unicode_escape", "backslashreplace").decode("ascii")
                      for c in text[: limit * 4])
    return escaped[:limit]
