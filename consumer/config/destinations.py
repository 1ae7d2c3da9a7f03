"""Destinations: the Pisano accounts one fleet sends to, from the settings.

The environment-only setup (`PISANO_URL`, `PISANO_API_TOKEN[_FILE]`, `PISANO_RATE_LIMITS`, ...)
is the destination `default`. The YAML config may declare more under `destinations:`, each
with its own URL, token, throttle windows, TLS and timeouts, and the campaigns it owns:

    destinations:
      retail:
        url: https://api.pisano.co
        api_token_file: /var/run/secrets/retail-token
        rate_limits: 20/5s,40/25s,80/125s,160/625s
        send_window: Mon-Fri 09:00-21:00 Europe/Istanbul   # optional: overrides SEND_WINDOW
        campaigns: [0b6f6e2c-...]
        contact_cooldown: 14d          # overrides CONTACT_COOLDOWN for its campaigns

A campaign belongs to one account at Pisano, so a campaign names its destination: a campaign
listed by a destination goes there, any other to `default` (or is unroutable without one).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from consumer.config.campaign_ids import canonical_campaign_id
from consumer.config.secrets import check_token, checked_url, mask_url, read_secret_file
from consumer.config.send_window import SendWindow, parse_send_window
from consumer.config.settings import DURATION_OR_ZERO, MAX_COOLDOWN_MS, Settings, duration_ms
from consumer.config.tokens import first_token, load_token_provider
from consumer.config.windows import PISANO_CLOUD_LIMITS, RateWindow, parse_rate_limits
from consumer.errors import ConfigError

DEFAULT = "default"
NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,31}$"  # a metric label value: bounded and tame


class DestinationSettings(BaseModel):
    """One entry of `destinations:` (names as the PISANO_* settings, without the prefix)."""

    # Its validator is built when a DESTINATIONS entry is first validated: a replica with
    # PISANO_URL alone never pays for it (issue 14: start-up CPU).
    model_config = ConfigDict(extra="forbid", defer_build=True)

    url: str
    api_token: SecretStr | None = None
    api_token_file: Path | None = None
    rate_limits: str = PISANO_CLOUD_LIMITS
    rate_margin_ms: int = Field(500, ge=0, le=60_000)
    timeout_ms: int = Field(30_000, ge=100, le=600_000)
    connect_timeout_ms: int = Field(5_000, ge=100, le=120_000)
    ca_file: Path | None = None
    tls_verify: bool = True
    max_recipients: int = Field(5000, ge=1, le=5000)
    campaigns: list[str] = Field(default_factory=list)
    send_window: str | None = None  # overrides SEND_WINDOW for this account's campaigns
    contact_cooldown: str | None = Field(None, pattern=DURATION_OR_ZERO)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return checked_url(value)

    @field_validator("campaigns")
    @classmethod
    def _campaigns(cls, value: list[str]) -> list[str]:
        return [canonical_campaign_id(campaign) for campaign in value]  # as records' ids are (campaign_ids.py)

    @field_validator("contact_cooldown")
    @classmethod
    def _contact_cooldown(cls, value: str | None) -> str | None:
        if value is not None and duration_ms(value) > MAX_COOLDOWN_MS:
            raise ValueError("at most 366d")
        return value

    @field_validator("rate_limits")
    @classmethod
    def _rate_limits(cls, value: str) -> str:
        parse_rate_limits(value)
        return value

    @field_validator("send_window")
    @classmethod
    def _send_window(cls, value: str | None) -> str | None:
        if value is not None:
            parse_send_window(value)
        return value


@dataclass(frozen=True)
class DestinationConfig:
    name: str
    url: str
    token: str
    windows: tuple[RateWindow, ...]
    margin_ms: int
    timeout_ms: int
    connect_timeout_ms: int
    ca_file: Path | None
    tls_verify: bool
    max_recipients: int
    campaigns: frozenset[str]
    token_file: Path | None = None  # watched for a rotated token (consumer/config/tokens.py)
    send_window: SendWindow | None = None  # its quiet hours: its own send_window, else SEND_WINDOW
    contact_cooldown_ms: int | None = None  # its override of CONTACT_COOLDOWN, if any


def read_token(value: SecretStr | None, file: Path | None, setting: str) -> str:
    """A token given inline or as a mounted file, stripped and checked as PISANO_API_TOKEN is."""
    if value is not None and file is not None:
        raise ConfigError(f"{setting}: set the token or the token file, not both")
    if value is not None:
        raw = value.get_secret_value()
    elif file is not None:
        raw = read_secret_file(f"{setting}_FILE", file, "mount the token file")
    else:
        raise ConfigError(f"{setting} is not set: set it, or {setting}_FILE")
    try:
        return check_token(raw)
    except ValueError as exc:
        raise ConfigError(f"{setting}: {exc}") from None


def check_transport(spec: DestinationSettings, where: str, allow_insecure: bool) -> None:
    """The PISANO_URL rule for every destination: no plain http or unverified TLS unless allowed."""
    if allow_insecure:
        return
    if spec.url.lower().startswith("http://"):
        raise ConfigError(f"{where}.URL={mask_url(spec.url)}: plain http sends the token and the customers' phone "
                          "numbers unencrypted; use https://, or set PISANO_ALLOW_INSECURE=true for a test network")
    if not spec.tls_verify:
        raise ConfigError(f"{where}.TLS_VERIFY=false accepts any certificate; give the CA in ca_file instead, or "
                          "set PISANO_ALLOW_INSECURE=true for a test network")


def destination_configs(settings: Settings) -> dict[str, DestinationConfig]:
    """Every configured destination, validated; ConfigError naming the entry otherwise."""
    import re

    out: dict[str, DestinationConfig] = {}
    spec_name = settings.pisano_token_provider
    provider = load_token_provider(spec_name) if spec_name else None
    if settings.pisano_url:
        token = first_token(provider, DEFAULT, spec_name) if provider and spec_name else settings.api_token()
        out[DEFAULT] = DestinationConfig(
            DEFAULT, settings.pisano_url, token, settings.rate_windows,
            settings.pisano_rate_margin_ms, settings.pisano_timeout_ms, settings.pisano_connect_timeout_ms,
            settings.pisano_ca_file, settings.pisano_tls_verify, settings.batch_max_recipients, frozenset(),
            settings.pisano_api_token_file, settings.send_windows[0])
    owners: dict[str, str] = {}
    for name, raw in settings.destinations.items():
        where = f"DESTINATIONS.{name}"
        if not re.match(NAME_PATTERN, name) or name in out:
            raise ConfigError(f"{where}: a destination name is 1-32 lowercase letters, digits, '-' or '_', "
                              f"and '{DEFAULT}' is taken by PISANO_URL")
        try:
            spec = DestinationSettings.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            field = ".".join(str(p) for p in first.get("loc", ()))
            raise ConfigError(f"{where}.{field}: {first.get('msg', 'invalid')}") from None
        check_transport(spec, where, settings.pisano_allow_insecure)
        for campaign in spec.campaigns:
            if campaign in owners:
                raise ConfigError(f"{where}: campaign {campaign} is already routed to {owners[campaign]}")
            owners[campaign] = name
        if provider and spec_name:
            if spec.api_token is not None or spec.api_token_file is not None:
                raise ConfigError(f"{where}: PISANO_TOKEN_PROVIDER gives every destination's token; "
                                  "remove api_token / api_token_file")
            token = first_token(provider, name, spec_name)
        else:
            token = read_token(spec.api_token, spec.api_token_file, f"{where}.API_TOKEN")
        out[name] = DestinationConfig(
            name, spec.url.rstrip("/"), token,
            parse_rate_limits(spec.rate_limits), spec.rate_margin_ms, spec.timeout_ms, spec.connect_timeout_ms,
            spec.ca_file, spec.tls_verify, min(spec.max_recipients, settings.batch_max_recipients),
            frozenset(spec.campaigns), spec.api_token_file,
            parse_send_window(spec.send_window) if spec.send_window is not None else settings.send_windows[0],
            None if spec.contact_cooldown is None else duration_ms(spec.contact_cooldown))
    if not out:
        raise ConfigError("missing setting(s): PISANO_URL (or DESTINATIONS); set it in the environment "
                          "or in the --config file")
    return out


def routes(configs: dict[str, DestinationConfig]) -> dict[str, str]:
    """Campaign id -> destination name, for the campaigns a destination lists."""
    return {campaign: c.name for c in configs.values() for campaign in c.campaigns}


