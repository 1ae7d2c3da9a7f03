"""A customer's mobile number holds digits and separators only (issue 10, item 13): letters are
never read as a vanity number, which would send the survey to a number nobody gave."""

import pytest

from consumer.errors import InvalidEventError
from consumer.ingest.phones import PhoneNormaliser


@pytest.mark.parametrize("raw", [
    "+90 541 ABC 45 67",   # phonenumbers reads this as +905412224567
    "+905412224567x",
    "0541 ABC 4567",
    "tel:+905321234567",
    "+90 532 123 45 67 ext. 2",
    "+90+5321234567",
])
def test_letters_or_stray_signs_are_invalid(raw: str) -> None:
    for output in ("e164", "national"):
        with pytest.raises(InvalidEventError, match="digits and separators"):
            PhoneNormaliser("TR", output).normalise(raw)  # type: ignore[arg-type]


@pytest.mark.parametrize("raw", [
    "+90 532 123 45 67", "0532-123-45-67", "(0532) 123 45 67", "0532.123.45.67",
    "+90\u00a0532\u00a0123\u00a045\u00a067",
    "+90/532/1234567",
])
def test_digits_with_separators_are_numbers(raw: str) -> None:
    assert PhoneNormaliser("TR", "e164").normalise(raw) == "+905321234567"
