"""A phone's entry in the opt-out list (the cooldown keys phones by it too) is asked twice per
claim: the entries made last are kept, and what is kept is what would be made again."""

from __future__ import annotations

import pytest

import consumer.ingest.phones as phones_module
from consumer.errors import InvalidEventError
from consumer.state.suppression import MemoryOptOutList, OptOutHasher, Suppression

KEY = b"k" * 32


def phones(**options: bool) -> Suppression:
    return Suppression(OptOutHasher(KEY, "TR"), MemoryOptOutList(), digits_are_e164=options.get("digits", False),
                       plus_is_valid=options.get("plus", False))


def test_a_kept_entry_is_the_one_made_afresh(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(phones_module, "MAX_REMEMBERED_PHONES", 3)
    kept, fresh = phones(), phones()
    numbers = ["+905321234567", "05321234567", "5321234567", "+905321234568", "+905321234567"] * 3
    for number in numbers:
        assert kept.phone_entry(number) == kept.phone_entry(number) == fresh._phone_entry(number)
    assert len(kept._entries) <= 3  # bounded: dropped whole when full
    # One number in its national and its E.164 form is one entry: one opt-out matches both.
    assert kept.phone_entry("05321234567") == kept.phone_entry("+905321234567")


def test_a_phone_that_is_no_number_is_refused_each_time_and_never_kept() -> None:
    list_ = phones()
    for _ in range(2):
        with pytest.raises(InvalidEventError):
            list_.phone_entry("12")
    assert list_._entries == {}


def test_a_str_subclass_is_never_kept() -> None:
    class Sly(str):
        def __hash__(self) -> int:
            return hash("+905321234567")

        def __eq__(self, other: object) -> bool:
            return True

    list_ = phones()
    real = list_.phone_entry("+905321234567")
    assert list_.phone_entry(Sly("+905321234568")) != real  # made for itself, not taken from the memory
    assert all(type(k) is str for k in list_._entries)
