"""A recipient's phone entry in the opt-out list (`Suppression.phone_entry`): the declarative
mapper's `+` phones were proven valid E.164 when it wrote them, so they are hashed as they are,
unchecked again; a plug-in mapper's are checked, since the recipient check takes any `+` and digits
(consumer/app.py `build_admission`)."""

from __future__ import annotations

from typing import Any

import pytest

from consumer.app import build_admission
from consumer.config.resources import default_mapping_file
from consumer.config.settings import Settings
from consumer.ingest.mapping import DeclarativeMapper, Mapper, Recipient
from consumer.state import suppression as suppression_module
from consumer.state.redis import Keys

KEY = "k" * 32


class PlugInMapper(Mapper):
    def map(self, record: Any) -> Recipient:
        raise NotImplementedError


class _State:
    client = None
    keys = Keys("pisano-sms")


def _checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    real = suppression_module.is_valid_e164

    def counted(phone: str) -> bool:
        seen.append(phone)
        return real(phone)

    monkeypatch.setattr(suppression_module, "is_valid_e164", counted)
    return seen


def test_the_declarative_mappers_phones_are_not_checked_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(kafka_topics=["t"], pisano_url="https://pisano.invalid", suppression_key=KEY)
    declarative = build_admission(settings, _State(), DeclarativeMapper.from_file(default_mapping_file()))  # type: ignore[arg-type]
    plug_in = build_admission(settings, _State(), PlugInMapper())  # type: ignore[arg-type]
    assert declarative.suppression is not None and plug_in.suppression is not None
    checks = _checks(monkeypatch)
    assert declarative.suppression.phone_entry("+905321234567") == plug_in.suppression.phone_entry("+905321234567")
    assert checks == ["+905321234567"]  # the plug-in mapper's phone only


def test_a_plug_in_mappers_plus_phone_is_still_read_as_the_number_it_is() -> None:
    settings = Settings(kafka_topics=["t"], pisano_url="https://pisano.invalid", suppression_key=KEY,
                        phone_region="TR")
    plug_in = build_admission(settings, _State(), PlugInMapper())  # type: ignore[arg-type]
    assert plug_in.suppression is not None
    assert plug_in.suppression.phone_entry("+9005321234567") == plug_in.suppression.phone_entry("+905321234567")
