"""A number written in plain ASCII digits, and nothing else: one rule for every number read from
outside (a header, a CLI option, a value stored in Redis)."""

from __future__ import annotations


def plain_number(text: str, max_digits: int) -> int | None:
    """The number `text` writes in ASCII digits only (at most `max_digits` of them), else None.

    `str.isdigit` alone takes `²` (which int() refuses) and Arabic-Indic or full-width digits
    (which int() reads); int() alone takes spaces, signs and underscores, and refuses over 4,300
    digits with a message that says nothing of the option."""
    if not (0 < len(text) <= max_digits and text.isascii() and text.isdigit()):
        return None
    return int(text)
