"""The suite's names for topics, consumer groups and key prefixes (tests/conftest.py `unique`)
come out of every report as written: `check` and the logs mask a run of 7 or more digits as a
possible phone number, so a random hex name held one in about 8 draws of 100 ("g-3060441c44"),
and a test looking for its group's name in `check`'s report failed by chance."""

from __future__ import annotations

from consumer.operations.logs import redact_text
from tests.conftest import unique


def test_a_unique_name_is_never_masked_as_a_phone_number() -> None:
    names = [unique("g") for _ in range(2000)]
    said = [f"consumer group {name} committed" for name in names]
    masked = [text for text in said if redact_text(text) != text]
    assert not masked, masked[:5]
    assert len(set(names)) == len(names)
