"""What the simulator is told: accepted tokens and campaigns, throttle windows, limits and faults.

`SimulatorConfig.from_options` takes the plain values a command line gives (strings such as
`503=0.1,500=0.05`, `<campaign>=13034`, `20/5s,40/25s`, repeatable or comma-separated lists) so
that a click command maps its flags onto it one to one. `FaultSettings.from_json` and
`SimulatorConfig.with_changes` take the JSON of the runtime admin endpoints. Every value is
checked here, once; a bad one raises ConfigError naming the option and the expected form.
"""

from __future__ import annotations

import dataclasses
import http
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from consumer.config.windows import (
    EXPECTED_FORM,
    PISANO_CLOUD_LIMITS,
    RateWindow,
    format_rate_limits,
    parse_rate_limits,
)
from consumer.delivery.pisano_codes import CODES, INVALID_PARAMETERS
from consumer.errors import ConfigError
from consumer.simulator.redact import token_fingerprint

PISANO_MAX_RECIPIENTS = 5000
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
_KNOWN_STATUSES = frozenset(s.value for s in http.HTTPStatus)
# A 5000-recipient delivery with a few attributes takes ~1 KiB of memory; this keeps ~200 MiB.
DEFAULT_MEMORY_LOG_RECIPIENTS = 200_000


@dataclass(frozen=True)
class FaultSettings:
    """Faults to inject; all off by default. Rates are probabilities from 0 to 1."""

    # HTTP status -> probability of answering with it; at most 1 in total.
    error_rates: dict[int, float] = field(default_factory=dict)
    # Of the answers picked by error_rates, the share with an HTML body instead of JSON.
    garbage_body_rate: float = 0.0
    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0  # a uniform extra from 0 to this
    hang_rate: float = 0.0  # no answer and no delivery
    hang_after_accept_rate: float = 0.0  # delivered, then no answer
    # Delivered, then a bare 502 (HTML, no Pisano body): a gateway whose upstream broke while
    # answering. The client cannot know it was delivered.
    bad_gateway_after_accept_rate: float = 0.0
    campaign_codes: dict[str, int] = field(default_factory=dict)  # campaign id -> Pisano code
    token_codes: dict[str, int] = field(default_factory=dict)  # token -> Pisano code
    poison_phones: frozenset[str] = frozenset()
    poison_code: int = INVALID_PARAMETERS

    def __post_init__(self) -> None:
        for status, rate in self.error_rates.items():
            if not 400 <= status <= 599 or status not in _KNOWN_STATUSES:
                raise ConfigError(f"error_rates: {status} is not an HTTP error status (4xx, 5xx)")
            _check_rate(f"error_rates[{status}]", rate)
        if sum(self.error_rates.values()) > 1 + 1e-9:  # 0.33 + 0.56 + 0.11 > 1 in floats
            raise ConfigError("error_rates: the rates add up to more than 1")
        _check_rate("garbage_body_rate", self.garbage_body_rate)
        _check_rate("hang_rate", self.hang_rate)
        _check_rate("hang_after_accept_rate", self.hang_after_accept_rate)
        _check_rate("bad_gateway_after_accept_rate", self.bad_gateway_after_accept_rate)
        if self.hang_after_accept_rate + self.bad_gateway_after_accept_rate > 1 + 1e-9:
            raise ConfigError("hang_after_accept_rate and bad_gateway_after_accept_rate add up to more than 1")
        if self.latency_ms < 0 or self.latency_jitter_ms < 0:
            raise ConfigError("latency_ms and latency_jitter_ms must be >= 0")
        for campaign, code in self.campaign_codes.items():
            _check_code(f"campaign_codes[{campaign}]", code)
        for code in self.token_codes.values():
            _check_code("token_codes", code)
        _check_code("poison_code", self.poison_code)

    @classmethod
    def from_json(cls, data: Mapping[str, Any], base: FaultSettings | None = None) -> FaultSettings:
        """Settings from admin JSON: the fields given replace those of `base` (defaults if None)."""
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"unknown fault settings: {', '.join(sorted(unknown))}")
        changes: dict[str, Any] = {}
        for name, value in data.items():
            if name == "error_rates":
                changes[name] = {
                    _json_key_int(f"error_rates key {k!r}", str(k)): _json_number(
                        f"error_rates[{k}]", v
                    )
                    for k, v in _json_object(name, value).items()
                }
            elif name in ("campaign_codes", "token_codes"):
                changes[name] = {
                    str(k): _json_int(f"{name}[{k}]", v)
                    for k, v in _json_object(name, value).items()
                }
            elif name == "poison_phones":
                changes[name] = frozenset(_json_strings(name, value))
            elif name == "poison_code":
                changes[name] = _json_int(name, value)
            else:
                changes[name] = _json_number(name, value)
        return dataclasses.replace(base or cls(), **changes)

    def public_dict(self) -> dict[str, Any]:
        """JSON form for the admin endpoints; tokens appear only as fingerprints."""
        return {
            "error_rates": {str(k): v for k, v in sorted(self.error_rates.items())},
            "garbage_body_rate": self.garbage_body_rate,
            "latency_ms": self.latency_ms,
            "latency_jitter_ms": self.latency_jitter_ms,
            "hang_rate": self.hang_rate,
            "hang_after_accept_rate": self.hang_after_accept_rate,
            "bad_gateway_after_accept_rate": self.bad_gateway_after_accept_rate,
            "campaign_codes": dict(sorted(self.campaign_codes.items())),
            "token_codes": {token_fingerprint(t): c for t, c in sorted(self.token_codes.items())},
            "poison_phones": sorted(self.poison_phones),
            "poison_code": self.poison_code,
        }


@dataclass(frozen=True)
class SimulatorConfig:
    """Everything the simulator is started with. See consumer.simulator for the behaviour."""

    tokens: frozenset[str] = frozenset()
    campaigns: frozenset[str] = frozenset()
    any_campaign: bool = False  # accept every campaign id, as if all existed
    rate_limits: tuple[RateWindow, ...] = parse_rate_limits(PISANO_CLOUD_LIMITS)
    max_recipients: int = PISANO_MAX_RECIPIENTS
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    delivery_log_path: Path | None = None  # JSONL, appended per request
    memory_log_recipients: int = DEFAULT_MEMORY_LOG_RECIPIENTS  # older deliveries leave memory
    seed: int | None = None  # seeds fault injection; reset re-seeds
    faults: FaultSettings = field(default_factory=FaultSettings)

    def __post_init__(self) -> None:
        if self.max_recipients < 1:
            raise ConfigError("max_recipients must be >= 1")
        if self.max_body_bytes < 1:
            raise ConfigError("max_body_bytes must be >= 1")
        if self.memory_log_recipients < 0:
            raise ConfigError("memory_log_recipients must be >= 0")

    @classmethod
    def from_options(
        cls,
        *,
        tokens: str | Iterable[str] = (),
        campaigns: str | Iterable[str] = (),
        any_campaign: bool = False,
        rate_limits: str = PISANO_CLOUD_LIMITS,
        max_recipients: int = PISANO_MAX_RECIPIENTS,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        delivery_log: str | Path | None = None,
        memory_log_recipients: int = DEFAULT_MEMORY_LOG_RECIPIENTS,
        seed: int | None = None,
        error_rates: str | Iterable[str] = (),
        garbage_body_rate: float = 0.0,
        latency_ms: float = 0.0,
        latency_jitter_ms: float = 0.0,
        hang_rate: float = 0.0,
        hang_after_accept_rate: float = 0.0,
        bad_gateway_after_accept_rate: float = 0.0,
        campaign_codes: str | Iterable[str] = (),
        token_codes: str | Iterable[str] = (),
        poison_phones: str | Iterable[str] = (),
        poison_code: int = INVALID_PARAMETERS,
    ) -> SimulatorConfig:
        """Build from command-line values; every list may be repeated items or comma lists."""
        try:
            windows = parse_rate_limits(rate_limits)
        except ValueError as exc:
            raise ConfigError(f"rate_limits: {exc}; expected {EXPECTED_FORM}") from exc
        faults = FaultSettings(
            error_rates=parse_error_rates(error_rates),
            garbage_body_rate=garbage_body_rate,
            latency_ms=latency_ms,
            latency_jitter_ms=latency_jitter_ms,
            hang_rate=hang_rate,
            hang_after_accept_rate=hang_after_accept_rate,
            bad_gateway_after_accept_rate=bad_gateway_after_accept_rate,
            campaign_codes=parse_code_map("campaign_codes", campaign_codes),
            token_codes=parse_code_map("token_codes", token_codes),
            poison_phones=frozenset(split_items(poison_phones)),
            poison_code=poison_code,
        )
        return cls(
            tokens=frozenset(split_items(tokens)),
            campaigns=frozenset(split_items(campaigns)),
            any_campaign=any_campaign,
            rate_limits=windows,
            max_recipients=max_recipients,
            max_body_bytes=max_body_bytes,
            delivery_log_path=Path(delivery_log) if delivery_log else None,
            memory_log_recipients=memory_log_recipients,
            seed=seed,
            faults=faults,
        )

    def with_changes(self, data: Mapping[str, Any]) -> SimulatorConfig:
        """Apply admin JSON: tokens, campaigns (lists), any_campaign, rate_limits ("N/Ts")."""
        allowed = {"tokens", "campaigns", "any_campaign", "rate_limits"}
        unknown = set(data) - allowed
        if unknown:
            raise ConfigError(
                f"unknown or read-only settings: {', '.join(sorted(unknown))}; "
                f"settable: {', '.join(sorted(allowed))}"
            )
        changes: dict[str, Any] = {}
        for name in ("tokens", "campaigns"):
            if name in data:
                changes[name] = frozenset(_json_strings(name, data[name]))
        if "any_campaign" in data:
            if not isinstance(data["any_campaign"], bool):
                raise ConfigError("any_campaign must be true or false")
            changes["any_campaign"] = data["any_campaign"]
        if "rate_limits" in data:
            text = data["rate_limits"]
            if not isinstance(text, str):
                raise ConfigError(f"rate_limits must be a string: {EXPECTED_FORM}")
            try:
                changes["rate_limits"] = parse_rate_limits(text)
            except ValueError as exc:
                raise ConfigError(f"rate_limits: {exc}; expected {EXPECTED_FORM}") from exc
        return dataclasses.replace(self, **changes)

    def public_dict(self) -> dict[str, Any]:
        """JSON form for the admin endpoints; tokens appear only as fingerprints."""
        return {
            "tokens": sorted(token_fingerprint(t) for t in self.tokens),
            "campaigns": sorted(self.campaigns),
            "any_campaign": self.any_campaign,
            "rate_limits": format_rate_limits(self.rate_limits),
            "max_recipients": self.max_recipients,
            "max_body_bytes": self.max_body_bytes,
            "delivery_log_path": str(self.delivery_log_path) if self.delivery_log_path else None,
            "memory_log_recipients": self.memory_log_recipients,
            "seed": self.seed,
            "faults": self.faults.public_dict(),
        }


def split_items(values: str | Iterable[str]) -> list[str]:
    """`("a,b", "c")` -> `["a", "b", "c"]`: repeated flags and comma lists mean the same.

    A lone string is one value, not a sequence of characters.
    """
    if isinstance(values, str):
        values = [values]
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


def parse_error_rates(values: str | Iterable[str]) -> dict[int, float]:
    """`503=0.1,500=0.05` -> {503: 0.1, 500: 0.05}."""
    rates = {}
    for item in split_items(values):
        status, _, rate = item.partition("=")
        try:
            rates[int(status)] = float(rate)
        except ValueError as exc:
            raise ConfigError(
                f"error_rates: {item!r} is not STATUS=RATE (e.g. 503=0.1,500=0.05)"
            ) from exc
    return rates


def parse_code_map(option: str, values: str | Iterable[str]) -> dict[str, int]:
    """`<id>=13034,<id2>=13036` -> {"<id>": 13034, "<id2>": 13036}."""
    codes = {}
    for item in split_items(values):
        key, _, code = item.rpartition("=")
        try:
            codes[key] = int(code)
        except ValueError:
            key = ""
        if not key:
            raise ConfigError(f"{option}: {item!r} is not KEY=CODE (e.g. <id>=13034)")
    return codes


def _check_rate(option: str, rate: float) -> None:
    if not 0 <= rate <= 1:
        raise ConfigError(f"{option}: {rate} is not a probability from 0 to 1")


def _check_code(option: str, code: int) -> None:
    if code not in CODES:
        raise ConfigError(f"{option}: {code} is not a Pisano error code (13000-13038)")


def _json_object(option: str, value: Any) -> dict[Any, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{option} must be a JSON object")
    return value


def _json_strings(option: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{option} must be a list of strings")
    return value


def _json_number(option: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{option} must be a number")
    return float(value)


def _json_int(option: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{option} must be an integer")
    return value


def _json_key_int(option: str, key: str) -> int:
    """An integer from a JSON object key such as "503"."""
    if not key.strip().isdigit():
        raise ConfigError(f"{option} must be an integer")
    return int(key)
