"""`pisano-sms check` builds the decoder as `run` does."""

from typing import Any

import pytest

from consumer.config.resources import default_mapping_file
from consumer.config.settings import Settings
from consumer.ingest.mapping import DeclarativeMapper
from consumer.operations import check


def test_check_refuses_a_mapper_s_fields_read_as_the_start_does(monkeypatch: pytest.MonkeyPatch) -> None:
    class Odd(DeclarativeMapper):
        def fields_read(self) -> Any:
            return "event_id"  # a string, not paths

    monkeypatch.setattr(check, "load_mapper", lambda settings: Odd.from_file(default_mapping_file()))
    settings = Settings(kafka_topics=["t"], pisano_url="https://api.pisano.co")
    result = check._guard("config", lambda: check._config(settings))
    assert result.status == "failed" and "fields_read" in result.detail
    monkeypatch.setattr(check, "load_mapper", lambda settings: DeclarativeMapper.from_file(default_mapping_file()))
    assert "fields_read" not in check._guard("config", lambda: check._config(settings)).detail
