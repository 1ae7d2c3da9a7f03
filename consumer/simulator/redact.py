"""How tokens and phone numbers appear in the simulator's logs, stats and admin output.

A token is shown only as a fingerprint (the first 8 hex digits of its SHA-256), enough to tell
tokens apart and never enough to use one. A phone number in a log line keeps its first 3 and
last 4 characters.
"""

from __future__ import annotations

import hashlib


def token_fingerprint(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:8]


def mask_phone(phone: str) -> str:
    """`+905321234567` -> `+90******4567`; anything of 7 characters or fewer is masked whole."""
    if len(phone) <= 7:
        return "*" * len(phone)
    return phone[:3] + "*" * (len(phone) - 7) + phone[-4:]
