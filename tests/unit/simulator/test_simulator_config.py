"""SimulatorConfig from command-line strings and admin JSON; the shared Pisano code table."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from consumer.config.windows import RateWindow
from consumer.delivery.pisano_codes import CODES, PisanoCode
from consumer.errors import ConfigError
from consumer.simulator.config import (
    FaultSettings,
    SimulatorConfig,
    parse_code_map,
    parse_error_rates,
    split_items,
)
from consumer.simulator.redact import token_fingerprint

CAMPAIGN = "ae51458c-9e82-417f-8f1d-e074891ea5c1"


def test_the_code_table_holds_every_code_of_the_reference() -> None:
    assert sorted(CODES) == [
        13000, 13001, 13002, 13003, 13005, 13007, 13008, 13009, 13010, 13011, 13012,
        13013, 13014, 13015, 13016, 13017, 13018, 13019, 13020, 13024, 13026, 13028,
        13029, 13030, 13031, 13032, 13033, 13034, 13035, 13036, 13037, 13038,
    ]  # fmt: skip
    assert CODES[13002] == PisanoCode(404, "NOT_FOUND", "Requested resource not found!")
    assert CODES[13011] == (401, "unauthorized", "User is inactive")
    assert CODES[13038].message == "Required customer identitiy keys not present in params!"


def test_defaults_are_pisano_cloud() -> None:
    config = SimulatorConfig()
    assert config.rate_limits == (
        RateWindow(20, 5000),
        RateWindow(40, 25000),
        RateWindow(80, 125000),
        RateWindow(160, 625000),
    )
    assert config.max_recipients == 5000
    assert config.max_body_bytes == 16 * 1024 * 1024
    assert config.faults == FaultSettings()


def test_from_options_takes_repeated_and_comma_separated_values(tmp_path: Path) -> None:
    config = SimulatorConfig.from_options(
        tokens=["t1,t2", "t3"],
        campaigns=[f"{CAMPAIGN}, c2"],
        rate_limits="3/1s,5/3s",
        delivery_log=tmp_path / "d.jsonl",
        seed=5,
        error_rates=["503=0.1,500=0.05", "502=0.01"],
        garbage_body_rate=0.5,
        latency_ms=20,
        latency_jitter_ms=5,
        hang_rate=0.01,
        hang_after_accept_rate=0.02,
        campaign_codes=[f"{CAMPAIGN}=13034"],
        token_codes=["t2=13011", "t3==13036"],
        poison_phones=["+905321234567,+905329876543"],
        poison_code=13038,
    )
    assert config.tokens == {"t1", "t2", "t3"}
    assert config.campaigns == {CAMPAIGN, "c2"}
    assert config.rate_limits == (RateWindow(3, 1000), RateWindow(5, 3000))
    assert config.delivery_log_path == tmp_path / "d.jsonl"
    assert config.seed == 5
    assert config.faults == FaultSettings(
        error_rates={503: 0.1, 500: 0.05, 502: 0.01},
        garbage_body_rate=0.5,
        latency_ms=20,
        latency_jitter_ms=5,
        hang_rate=0.01,
        hang_after_accept_rate=0.02,
        campaign_codes={CAMPAIGN: 13034},
        token_codes={"t2": 13011, "t3=": 13036},  # a token may end in "="
        poison_phones=frozenset({"+905321234567", "+905329876543"}),
        poison_code=13038,
    )


def test_off_turns_the_throttle_off() -> None:
    assert SimulatorConfig.from_options(rate_limits="off").rate_limits == ()


def test_split_items() -> None:
    assert split_items(["a, b", "", " c ", "d,,"]) == ["a", "b", "c", "d"]
    assert split_items("tok-1,tok-2") == ["tok-1", "tok-2"]  # one string is one value


def test_a_single_string_option_is_not_split_into_characters() -> None:
    config = SimulatorConfig.from_options(tokens="abc", error_rates="503=0.5")
    assert config.tokens == frozenset({"abc"})
    assert config.faults.error_rates == {503: 0.5}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"rate_limits": "20 per 5s"}, "rate_limits: '20 per 5s' is not N/Ts"),
        ({"error_rates": ["503:0.1"]}, "error_rates: '503:0.1' is not STATUS=RATE"),
        ({"error_rates": ["200=0.1"]}, "error_rates: 200 is not an HTTP error status"),
        ({"error_rates": ["599=0.1"]}, "error_rates: 599 is not an HTTP error status"),
        ({"error_rates": ["503=1.5"]}, "error_rates[503]: 1.5 is not a probability"),
        ({"error_rates": ["503=0.6,500=0.6"]}, "error_rates: the rates add up to more than 1"),
        ({"hang_rate": -0.1}, "hang_rate: -0.1 is not a probability"),
        ({"garbage_body_rate": 2}, "garbage_body_rate: 2 is not a probability"),
        ({"hang_after_accept_rate": 1.1}, "hang_after_accept_rate: 1.1 is not a probability"),
        ({"latency_ms": -1}, "latency_ms and latency_jitter_ms must be >= 0"),
        ({"campaign_codes": ["c=99999"]}, "campaign_codes[c]: 99999 is not a Pisano error code"),
        ({"campaign_codes": ["c"]}, "campaign_codes: 'c' is not KEY=CODE"),
        ({"campaign_codes": ["=13034"]}, "campaign_codes: '=13034' is not KEY=CODE"),
        ({"token_codes": ["t=abc"]}, "token_codes: 't=abc' is not KEY=CODE"),
        ({"token_codes": ["t=13004"]}, "token_codes: 13004 is not a Pisano error code"),
        ({"poison_code": 200}, "poison_code: 200 is not a Pisano error code"),
        ({"max_recipients": 0}, "max_recipients must be >= 1"),
        ({"max_body_bytes": 0}, "max_body_bytes must be >= 1"),
    ],
)
def test_bad_options_name_the_option(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        SimulatorConfig.from_options(**options)


def test_rates_adding_up_to_exactly_1_are_accepted() -> None:
    config = SimulatorConfig.from_options(error_rates="503=0.33,500=0.56,502=0.11")
    assert config.faults.error_rates == {503: 0.33, 500: 0.56, 502: 0.11}


def test_parse_helpers() -> None:
    assert parse_error_rates([" 503 = 0.1 "]) == {503: 0.1}
    assert parse_code_map("x", ["a=13001", "b = 13002"]) == {"a": 13001, "b ": 13002}


def test_faults_from_json_merge_into_a_base() -> None:
    base = FaultSettings(error_rates={503: 0.5}, latency_ms=10)
    merged = FaultSettings.from_json({"hang_rate": 0.25, "token_codes": {"t": 13036}}, base)
    assert merged == FaultSettings(
        error_rates={503: 0.5}, latency_ms=10, hang_rate=0.25, token_codes={"t": 13036}
    )
    replaced = FaultSettings.from_json({"error_rates": {"500": 1}})
    assert replaced == FaultSettings(error_rates={500: 1.0})
    assert FaultSettings.from_json(
        {"poison_phones": ["+905321234567"], "poison_code": 13017, "campaign_codes": {"c": 13034}}
    ) == FaultSettings(
        poison_phones=frozenset({"+905321234567"}), poison_code=13017, campaign_codes={"c": 13034}
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"hang": 0.1}, "unknown fault settings: hang"),
        ({"hang_rate": "0.1"}, "hang_rate must be a number"),
        ({"hang_rate": True}, "hang_rate must be a number"),
        ({"error_rates": [503]}, "error_rates must be a JSON object"),
        ({"error_rates": {"x": 0.1}}, "error_rates key 'x' must be an integer"),
        ({"campaign_codes": {"c": "13034"}}, "campaign_codes[c] must be an integer"),
        ({"poison_phones": "+905321234567"}, "poison_phones must be a list of strings"),
        ({"error_rates": {"503": 2}}, "error_rates[503]: 2.0 is not a probability"),
    ],
)
def test_bad_fault_json_is_refused(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        FaultSettings.from_json(data)


def test_config_changes_from_json() -> None:
    config = SimulatorConfig.from_options(tokens=["a"], campaigns=["c"], rate_limits="3/1s")
    changed = config.with_changes(
        {"tokens": ["b", "c"], "campaigns": [], "any_campaign": True, "rate_limits": "off"}
    )
    assert changed.tokens == frozenset({"b", "c"})
    assert changed.campaigns == frozenset()
    assert changed.any_campaign is True
    assert changed.rate_limits == ()
    assert config.with_changes({}) == config


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"max_recipients": 10}, "unknown or read-only settings: max_recipients"),
        ({"tokens": "a"}, "tokens must be a list of strings"),
        ({"any_campaign": "yes"}, "any_campaign must be true or false"),
        ({"rate_limits": 5}, "rate_limits must be a string"),
        ({"rate_limits": "5 per s"}, "rate_limits: '5 per s' is not N/Ts"),
    ],
)
def test_bad_config_json_is_refused(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        SimulatorConfig().with_changes(data)


def test_public_form_shows_tokens_only_as_fingerprints() -> None:
    config = SimulatorConfig.from_options(
        tokens=["super-secret"], token_codes=["super-secret=13011"], rate_limits="3/1s"
    )
    public = config.public_dict()
    assert "super-secret" not in repr(public)
    assert public["tokens"] == [token_fingerprint("super-secret")]
    assert public["faults"]["token_codes"] == {token_fingerprint("super-secret"): 13011}
    assert public["rate_limits"] == "3/1s"
    assert len(token_fingerprint("super-secret")) == 8
