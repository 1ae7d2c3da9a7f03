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


@pytest.mark.parametrize(("spec", "native", "said"), [
    ({}, "auto", "; records decoded and mapped natively"),
    ({}, "off", "; records decoded and mapped in Python (NATIVE_INTAKE=off)"),
    ({"phone_format": "national"}, "auto", "; records decoded and mapped in Python: phone_format national"),
    ({"phone": "$kafka.key"}, "auto", "; records decoded and mapped in Python: phone is not a plain dotted path"),
])
def test_check_says_whether_records_are_decoded_and_mapped_natively(
        monkeypatch: pytest.MonkeyPatch, spec: dict[str, Any], native: str, said: str) -> None:
    # README, "Decoding and mapping natively": the operator's way to see which path a mapping takes.
    import yaml

    base = yaml.safe_load(default_mapping_file().read_text())
    monkeypatch.setattr(check, "load_mapper", lambda settings: DeclarativeMapper({**base, **spec}))
    settings = Settings(kafka_topics=["t"], pisano_url="https://api.pisano.co", pisano_api_token="t" * 32,
                        native_intake=native)
    result = check._guard("config", lambda: check._config(settings))
    assert result.status == "ok", result.detail
    assert said + ";" in result.detail + ";"  # the whole phrase, nothing after it


def test_check_judges_the_mapping_alone_when_the_registry_brings_the_schemas(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(check, "load_mapper", lambda settings: DeclarativeMapper.from_file(default_mapping_file()))
    settings = Settings(kafka_topics=["t"], pisano_url="https://api.pisano.co", pisano_api_token="t" * 32,
                        schema_registry_url="https://registry.invalid")
    detail = check._guard("config", lambda: check._config(settings)).detail
    assert "records decoded and mapped natively where their schema allows" in detail
