"""Phone redaction as a property: however a number is written and wherever it sits in a text, no
run of its digits long enough to call it survives `redact_phones`.

A seeded generator (hypothesis is not a dependency of this project) writes thousands of numbers in
the ways people, spreadsheets and systems write them: E.164, 00 and trunk prefixes, groups split by
spaces, non-breaking and narrow spaces, dots, hyphens, dashes, slashes and brackets, other digit
scripts, and letters or punctuation glued to either end.
"""

import random
import re

import pytest

from consumer.operations.logs import redact_phones

CASES = 5000
# Kept visible by the mask: a country code (up to 3 characters) and the last two digits. Any
# window of this many consecutive original digits in the output means the number leaked.
LEAK_WINDOW = 6
SEPARATORS = [" ", "  ", "\u00a0", "\u202f", "\u2007", ".", "-", " - ", "/", "\u2013", "\u2212", "\t", ". "]
DIGIT_SCRIPTS = ["0123456789", "\u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669",
                 "\uff10\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18\uff19"]
GLUE = ["", "", " ", "x", "tel:", "phone=", '"', "'", "(", "[", "<", "msisdn ", "#", "\u00a0", "ext"]
CONTEXT = ["Invalid parameters for", "the mapper failed: ValueError:", "code 13028 at phone_numbers[3]:",
           '{"message": "bad', "Kunde", "m\u00fc\u015fteri numaras\u0131", ""]


def _write_number(rng: random.Random) -> tuple[str, str]:
    """A random phone number as (ASCII digits, how it is written)."""
    country = rng.choice(["90", "49", "1", "44", "971", "7", "380"])
    national = "".join(rng.choice("0123456789") for _ in range(rng.randint(7, 11)))
    national = str(rng.randint(1, 9)) + national[1:]
    style = rng.randrange(4)
    if style == 0:
        head, digits = "+" + country, country + national
    elif style == 1:
        head, digits = "00" + country, "00" + country + national
    elif style == 2:
        head, digits = "0", "0" + national
    else:
        head, digits = country, country + national
    groups: list[str] = []
    rest = national
    while rest:
        size = rng.randint(1, 4)
        groups.append(rest[:size])
        rest = rest[size:]
    separator = rng.choice(SEPARATORS)
    mixed = rng.random() < 0.3
    written = head
    if rng.random() < 0.3:
        groups[0] = f"({groups[0]})"
    for group in groups:
        written += (rng.choice(SEPARATORS) if mixed else separator) if rng.random() < 0.8 else ""
        written += group
    script = rng.choice(DIGIT_SCRIPTS) if rng.random() < 0.15 else DIGIT_SCRIPTS[0]
    written = written.translate(str.maketrans("0123456789", script))
    return digits, written


def _leaks(digits: str, output: str) -> bool:
    seen = "".join(str(int(ch)) for ch in re.findall(r"\d", output))
    return any(digits[i:i + LEAK_WINDOW] in seen for i in range(len(digits) - LEAK_WINDOW + 1))


@pytest.mark.parametrize("seed", range(5))
def test_no_written_phone_survives_redaction(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(CASES // 5):
        digits, written = _write_number(rng)
        text = f"{rng.choice(CONTEXT)} {rng.choice(GLUE)}{written}{rng.choice(GLUE)} {rng.choice(CONTEXT)}"
        output = redact_phones(text)
        assert not _leaks(digits, output), (text, output)


@pytest.mark.parametrize("text", [
    "0532.123.45.67", "905321234567x", "0532\u00a0123\u00a045\u00a067", "+90\u202f532\u202f123\u202f45\u202f67",
    "(0532) 123 45 67", "0532/123 45 67", "+90-532-123-45-67", "tel:+905321234567;", "0 5 3 2 1 2 3 4 5 6 7",
    "\u0660\u0665\u0663\u0662\u0661\u0662\u0663\u0664\u0665\u0666\u0667",
])
def test_formats_named_in_the_issue(text: str) -> None:
    assert not _leaks("05321234567" if "90" not in text else "905321234567", redact_phones(text))


def test_short_numbers_stay_readable() -> None:
    text = "HTTP 400 code 13028 at phone_numbers[3], attempt 2 of 6, 5000 recipients"
    assert redact_phones(text) == text


def test_addresses_with_a_port_stay_readable() -> None:
    text = "cannot reach Kafka at 10.100.200.30:9092 nor Redis at 192.168.10.20:6379"
    assert redact_phones(text) == text
    assert "532.123.45.67" not in redact_phones("call 0532.123.45.67:1")
