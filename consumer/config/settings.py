"""One settings object for every command.

Sources, weakest first: defaults, the YAML `--config` file, the environment. Names are the
environment names of the README's configuration reference; the YAML file uses the same names
(either case). librdkafka settings pass through untouched from the file's `kafka:` mapping, or
from environment variables `KAFKA_CONFIG_<PROPERTY>` (dots as underscores, e.g.
`KAFKA_CONFIG_SASL_PASSWORD`), which is how a Kubernetes Secret reaches them.

Loading them (the file, the environment, errors that name the setting and never echo a secret)
is consumer/config/loading.py.
"""

from __future__ import annotations

import re
from contextlib import suppress
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import Field, IPvAnyAddress, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from consumer.config.campaign_ids import canonical_campaign_keys
from consumer.config.secrets import (
    check_token,
    checked_url,
    env_secret,
    is_secret_name,
    mask_urls_in_text,
    read_secret_file,
)
from consumer.config.secrets import mask_url as mask_url  # imported from here by older callers
from consumer.config.send_window import SendWindow, SendWindowError, parse_send_window
from consumer.config.windows import PISANO_CLOUD_LIMITS, RateWindow, parse_rate_limits
from consumer.errors import ConfigError
from consumer.state.limiter import LEGACY_HORIZON_MS

# A duration of s, m, h or d; or 0 (a policy turned off).
DURATION_OR_ZERO = r"^\s*(0|[0-9]+\s*(s|m|h|d))\s*$"
MAX_COOLDOWN_MS = 366 * 86_400_000
NO_COOLDOWN_KEY = ("CONTACT_COOLDOWN needs SUPPRESSION_KEY (or SUPPRESSION_KEY_FILE): phones are kept in Redis "
                   "only as keyed hashes under it, never in clear; set it to a random key (e.g. `openssl rand "
                   "-hex 32`), the same on every replica, or set every cooldown to 0")


def duration_ms(text: str) -> int:
    """`30d`, `12h`, `90m`, `3600s` or `0` in milliseconds (the text matches DURATION_OR_ZERO)."""
    value = text.strip()
    if value == "0":
        return 0
    return int(value[:-1].strip()) * {"s": 1, "m": 60, "h": 3600, "d": 86_400}[value[-1]] * 1000


def span(ms: int) -> str:
    """A duration as `6d 20h`, `12h`, `5d 23h 45m`, `90s`."""
    parts, rest = [], ms // 1000
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    return " ".join(parts) or "0s"


def _local(window: SendWindow, epoch_ms: int | None) -> str:
    return "never" if epoch_ms is None else window.local_time(epoch_ms)


def _split_comma_list(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def _shown_destination_value(key: str, value: Any) -> Any:
    """A destination entry (or MAPPER_OPTIONS) as it may be shown, checked or not yet (as_dict may
    run before destination_configs): secret-named keys hidden, URLs masked, at any depth."""
    if is_secret_name(key) and "file" not in key.lower():
        return "***"
    if isinstance(value, dict):
        return {k: _shown_destination_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shown_destination_value(key, v) for v in value]
    if isinstance(value, str):
        return mask_url(value) if key.lower() == "url" else mask_urls_in_text(value)
    return value


class Settings(BaseSettings):
    """The consumer's configuration (see the README's configuration reference)."""

    model_config = SettingsConfigDict(extra="forbid", case_sensitive=False, validate_default=True)

    # Kafka
    kafka_bootstrap_servers: str = "localhost:9092"
    kafka_topics: Annotated[list[str], NoDecode] = Field(default_factory=list)
    kafka_group_id: str = "pisano-sms-consumer"
    kafka: dict[str, str | int | float | bool] = Field(default_factory=dict)
    dlq_topic: str = "pisano-sms.dlq"
    # Kafka Connect's and Spring Kafka's dead-letter headers beside ours, for generic DLQ tooling.
    dlq_compat_headers: bool = True
    # Receipts (consumer/outcomes/receipts.py): one record per input record, its outcome; off when unset.
    outcome_topic: str | None = None
    outcome_phone_salt: SecretStr | None = None
    outcome_phone_salt_file: Path | None = None
    # The registry id of schemas/receipt.avsc: receipts in the Confluent wire format (else schemaless Avro).
    outcome_schema_id: int | None = Field(None, ge=0, le=2**31 - 1)

    # Redis
    redis_url: SecretStr = SecretStr("redis://localhost:6379/0")
    redis_key_prefix: str = Field("pisano-sms", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    redis_cluster: bool = False
    # Start and `check` refuse a Redis whose maxmemory-policy may evict delivered marks, unless this is set.
    redis_allow_eviction: bool = False
    # How long one Redis call may take (to connect, then for each reply) before it counts as failed:
    # the caller fails closed and tries again. At most 5 s: the claim lease's margin (10 s) must
    # still cover a settlement that times out. A WAIT (DEDUP_WAIT_TIMEOUT_MS) must fit inside it.
    redis_timeout_ms: int = Field(2_000, ge=100, le=5_000)

    # Pisano
    pisano_url: str = ""
    pisano_api_token: SecretStr | None = None
    pisano_api_token_file: Path | None = None
    # A company's own secret source for every destination's token (consumer/config/tokens.py),
    # and how often a token file or the provider is read again for a rotated token.
    pisano_token_provider: str | None = Field(None, pattern=r"^[A-Za-z0-9_.:-]{1,200}$")
    pisano_token_refresh_ms: int = Field(1_000, ge=100, le=3_600_000)
    pisano_rate_limits: str = PISANO_CLOUD_LIMITS
    pisano_rate_margin_ms: int = Field(500, ge=0, le=60_000)
    # Requests whose batch is not full keep (longest period + margin) / (limit x share) apart,
    # fleet-wide, leaving the rest of every window for spikes (consumer/delivery/pacing.py); 0: off.
    pisano_pace_share: float = Field(0.8, ge=0.0, le=1.0)
    pisano_timeout_ms: int = Field(30_000, ge=100, le=600_000)
    pisano_connect_timeout_ms: int = Field(5_000, ge=100, le=120_000)
    pisano_ca_file: Path | None = None
    pisano_tls_verify: bool = True
    # http:// or PISANO_TLS_VERIFY=false send the token where anyone on the path can read it:
    # refused unless this says it is meant (the local simulator, a test network).
    pisano_allow_insecure: bool = False
    pisano_max_attempts: int = Field(6, ge=1, le=50)
    pisano_retry_budget_ms: int = Field(120_000, ge=0, le=3_600_000)
    pisano_backoff_base_ms: int = Field(500, ge=1, le=600_000)
    pisano_backoff_max_ms: int = Field(30_000, ge=1, le=3_600_000)
    ambiguous_policy: Literal["dead_letter", "assume_delivered", "resend"] = "dead_letter"
    isolation_budget_share: float = Field(0.25, ge=0.0, le=1.0)
    circuit_cooldown_ms: int = Field(30_000, ge=100, le=3_600_000)
    circuit_max_cooldown_ms: int = Field(600_000, ge=100, le=86_400_000)
    # More Pisano accounts, by name (consumer/config/destinations.py); PISANO_* is `default`.
    destinations: dict[str, dict[str, Any]] = Field(default_factory=dict)

    # Batching and flow
    batch_max_recipients: int = Field(5000, ge=1, le=5000)
    batch_max_wait_ms: int = Field(1000, ge=0, le=3_600_000)
    max_in_flight_requests: int = Field(4, ge=1, le=64)
    max_buffered_events: int = Field(100_000, ge=1, le=10_000_000)
    # Bytes held by records without an outcome; with the 64 MiB librdkafka prefetches and the
    # dead-letter producer's copies, 256 MiB fits the chart's 1 GiB memory limit.
    max_buffered_bytes: int = Field(268_435_456, ge=4 * 1_048_576, le=64 * 1_073_741_824)
    max_message_bytes: int = Field(1_048_576, ge=1024, le=64 * 1_048_576)
    stuck_record_ms: int = Field(900_000, ge=10_000, le=86_400_000)
    throttle_horizon_ms: int = Field(30_000, ge=0, le=LEGACY_HORIZON_MS)
    # Fleet held while the throttle state is in doubt: at least two heartbeats (limiter.HEARTBEAT_S).
    throttle_grace_ms: int = Field(5_000, ge=2_000, le=600_000)
    shutdown_grace_ms: int = Field(30_000, ge=0, le=600_000)
    revoke_grace_ms: int = Field(10_000, ge=0, le=120_000)
    commit_interval_ms: int = Field(1_000, ge=10, le=60_000)

    # Deduplication
    dedup_horizon_s: int = Field(7 * 86_400, ge=60, le=366 * 86_400)
    dedup_claim_lease_ms: int | None = Field(None, ge=1_000, le=86_400_000)
    # A record older than DEDUP_HORIZON_S minus this is dead-lettered as `stale`, never sent: its
    # delivered mark may be gone (README, "Offsets, retention and the dedup horizon").
    stale_margin_s: int = Field(86_400, ge=0, le=366 * 86_400)
    # Replicas of every master that must hold a claim before its POST and a delivered mark before
    # its outcome counts (Redis WAIT; consumer/state/replication.py). 0: Redis's asynchronous
    # replication as is, a failover may lose the last writes.
    dedup_wait_replicas: int = Field(0, ge=0, le=5)
    dedup_wait_timeout_ms: int = Field(1_000, ge=10, le=60_000)

    # Contact policy (README, "Contact policy"): events older than this end as `expired`, unsent
    # (consumer/ingest/freshness.py); a duration such as 48h, 90m, 2d, 3600s.
    max_event_age: str | None = Field(None, pattern=r"^\s*[0-9]+\s*(s|m|h|d)\s*$")
    # Quiet hours (README, "Quiet hours: SEND_WINDOW"): no request leaves outside the window
    # (consumer/config/send_window.py); a destination's `send_window` and a campaign's entry here
    # override it. SEND_WINDOW_CLOCK=redis is for tests and demos only (consumer/state/clock.py).
    send_window: str | None = None
    campaign_send_windows: dict[str, str] = Field(default_factory=dict)
    send_window_clock: Literal["system", "redis"] = "system"
    # The key of the opt-out list's hashes (consumer/state/suppression.py); without it no list is consulted.
    suppression_key: SecretStr | None = None
    suppression_key_file: Path | None = None
    # A phone contacted (accepted by Pisano) is not contacted again within this (consumer/delivery/
    # contacts.py): a duration such as 30d, 12h; 0 off. Overridden per destination (`contact_cooldown`
    # of its entry) and per campaign (this mapping, campaign id -> duration).
    contact_cooldown: str = Field("0", pattern=DURATION_OR_ZERO)
    contact_cooldown_campaigns: dict[str, Annotated[str, Field(pattern=DURATION_OR_ZERO)]] = Field(
        default_factory=dict)

    # Events
    schema_registry_url: str | None = None
    schema_registry_user: str | None = None
    schema_registry_password: SecretStr | None = None
    schema_registry_password_file: Path | None = None
    schema_registry_ca_file: Path | None = None
    schema_registry_cert_file: Path | None = None  # client certificate (PEM), for mutual TLS
    schema_registry_key_file: Path | None = None  # its private key, when not in the cert file
    avro_schema_file: Path | None = None
    mapping_file: Path | None = None
    mapper: str = "declarative"
    mapper_options: dict[str, Any] = Field(default_factory=dict)  # passed to a plug-in mapper as is
    phone_region: str | None = Field(None, pattern=r"^[A-Z]{2}$")

    # Replay: the key that signs replayed records (consumer.sre.replay_signature)
    replay_signing_key: SecretStr | None = None
    replay_signing_key_file: Path | None = None

    # Operations
    http_port: int = Field(8080, ge=0, le=65535)
    # The health server's address: every IPv4 interface by default (as before 0.3.0); "::" for
    # IPv6 or dual-stack, 127.0.0.1 to keep it on the host. An IP literal, never a name to resolve.
    http_bind_address: IPvAnyAddress = IPv4Address("0.0.0.0")
    # Bounds on the health server's connections, so idle or slow clients cannot hold it: at most
    # this many at once (a newcomer closes the oldest one without a request; 503 when all are
    # being answered), each closed unless its request arrives
    # and its answer is taken within the timeout. Answers close the connection (no keep-alive).
    http_max_connections: int = Field(16, ge=1, le=1024)
    http_request_timeout_ms: int = Field(5000, ge=100, le=60_000)
    log_format: Literal["auto", "json", "text"] = "auto"
    # Records decoded and mapped by the native core where it takes them (consumer/ingest/fused.py);
    # `off`: every record through Python, for a suspected difference or a build without it.
    native_intake: Literal["auto", "off"] = "auto"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The config file arrives as init values; the environment overrides it.
        return (env_settings, init_settings)

    @field_validator("kafka_topics", mode="before")
    @classmethod
    def _topics(cls, value: Any) -> Any:
        return _split_comma_list(value)

    @field_validator("pisano_rate_limits")
    @classmethod
    def _rate_limits(cls, value: str) -> str:
        parse_rate_limits(value)
        return value

    @field_validator("pisano_pace_share")
    @classmethod
    def _pace_share(cls, value: float) -> float:
        # Below 0.1 a paced request would wait ten sustainable intervals (over 39 s on the cloud):
        # a typo, not a policy.
        if 0 < value < 0.1:
            raise ValueError("below 0.1 a paced request would wait over ten sustainable intervals")
        return value

    @field_validator("pisano_url", "schema_registry_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError("not an http(s) URL")
            return checked_url(value).rstrip("/")
        return value

    @field_validator("pisano_api_token", mode="before")
    @classmethod
    def _token(cls, value: Any) -> Any:
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if isinstance(value, str):
            # Empty (an env entry left blank) means not set: commands that need no token still run.
            return SecretStr(check_token(value)) if value.strip() else None
        return value

    @field_validator("send_window")
    @classmethod
    def _send_window(cls, value: str | None) -> str | None:
        if value is not None:
            parse_send_window(value)
        return value

    @field_validator("campaign_send_windows")
    @classmethod
    def _campaign_send_windows(cls, value: dict[str, str]) -> dict[str, str]:
        for campaign, text in value.items():
            if not campaign.strip():
                raise ValueError("a campaign id is empty; key each window by its campaign's id")
            try:
                parse_send_window(text)
            except SendWindowError as exc:
                raise ValueError(f"campaign {campaign}: {exc}") from None
        return canonical_campaign_keys(value, "CAMPAIGN_SEND_WINDOWS")

    @field_validator("contact_cooldown_campaigns")
    @classmethod
    def _contact_cooldown_campaigns(cls, value: dict[str, str]) -> dict[str, str]:
        return canonical_campaign_keys(value, "CONTACT_COOLDOWN_CAMPAIGNS")

    @property
    def send_windows(self) -> tuple[SendWindow | None, dict[str, SendWindow]]:
        """SEND_WINDOW (None: none) and CAMPAIGN_SEND_WINDOWS, parsed."""
        return (parse_send_window(self.send_window) if self.send_window is not None else None,
                {campaign: parse_send_window(text) for campaign, text in self.campaign_send_windows.items()})

    def _send_windows_in_force(self) -> list[tuple[str, SendWindow]]:
        """Every window configured, named as its setting: SEND_WINDOW, each destination's own (one
        that does not parse is left to consumer/config/destinations.py to name), each campaign's."""
        default, campaigns = self.send_windows
        windows = [] if default is None else [("SEND_WINDOW", default)]
        for name, spec in self.destinations.items():
            text = spec.get("send_window") if isinstance(spec, dict) else None
            if isinstance(text, str):
                with suppress(SendWindowError):
                    windows.append((f"DESTINATIONS.{name}.send_window", parse_send_window(text)))
        windows.extend((f"CAMPAIGN_SEND_WINDOWS.{campaign}", w) for campaign, w in campaigns.items())
        return windows

    @model_validator(mode="after")
    def _send_window_gaps(self) -> Settings:
        # An event that arrives as its window closes waits the whole closed gap, then up to
        # STUCK_RECORD_MS after the opening (a record let go is flagged stuck past that): past the
        # stale limit by then it is dead-lettered as `stale`, unsent. Refused, not warned: those are
        # dead letters someone must handle, for every closing, and no setting makes them wanted.
        stale, stuck = self.stale_after_ms, self.stuck_record_ms
        if stale <= 0:
            return self  # _stale_margin refuses it
        for name, window in self._send_windows_in_force():
            gap, begins = window.longest_closed()
            if gap and gap + stuck > stale:
                raise ValueError(
                    f"{name}={window.text!r}: closed for up to {span(gap)} (from {_local(window, begins)}), but a "
                    f"record older than DEDUP_HORIZON_S minus STALE_MARGIN_S ({span(stale)}) is dead-lettered as "
                    "stale, unsent: one that arrives as the window closes waits the whole gap, then up to "
                    f"STUCK_RECORD_MS ({span(stuck)}) after the opening, so a window may stay closed at most "
                    f"{span(max(stale - stuck, 0))}; open the window more often (another day), or raise "
                    "DEDUP_HORIZON_S (delivered marks are kept that long in Redis; keep the topics' retention.ms "
                    "above it too) or lower STALE_MARGIN_S")
        return self

    def longest_uncommitted_ms(self) -> int:
        """How long a record may stay uncommitted in normal operation: the longest stretch a send
        window in force stays closed, then STUCK_RECORD_MS after it opens (`check` weighs the
        topics' retention.ms against it)."""
        gaps = [window.longest_closed()[0] for _, window in self._send_windows_in_force()]
        return max(gaps, default=0) + self.stuck_record_ms

    def send_window_warnings(self) -> list[str]:
        """Windows closed longer than MAX_EVENT_AGE: what arrives as one closes expires before it opens.
        Said (by `check`), not refused: a night's events expiring unsent may be the policy meant."""
        age = self.max_event_age_ms
        if age is None:
            return []
        warnings = []
        for name, window in self._send_windows_in_force():
            gap, begins = window.longest_closed()
            if gap > age:
                warnings.append(f"{name}={window.text!r} is closed for up to {span(gap)} (from "
                                f"{_local(window, begins)}), longer than MAX_EVENT_AGE={span(age)}: events that "
                                "arrive as it closes end as expired, unsent, before it opens")
        return warnings

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: SecretStr) -> SecretStr:
        parts = urlsplit(value.get_secret_value())
        if parts.scheme not in ("redis", "rediss", "unix") or not (parts.netloc or parts.path):
            raise ValueError("not a redis:// URL")
        checked_url(value.get_secret_value())
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    # ----------------------------------------------------------------- claim lease (issue 11)
    # A claim is renewed right before each POST (consumer/delivery/slots.py `ready`), so its lease
    # must outlive the longest request it guards: connect and answer timeouts, plus this margin
    # for the slot's lead time, a late POST and settling the outcome on a slow Redis.
    claim_lease_margin_ms: ClassVar[int] = 10_000
    # The derived lease's slack beyond the slowest request's timeouts: that margin, and 50 s for
    # heartbeats that find Redis unreachable (the arithmetic: `claim_lease_ms`).
    claim_lease_slack_ms: ClassVar[int] = 60_000

    @model_validator(mode="after")
    def _claim_lease_outlives_a_request(self) -> Settings:
        if self.dedup_claim_lease_ms is None:
            return self
        needed, name, timeout, connect = self._slowest_request()
        if self.dedup_claim_lease_ms < needed:
            timeouts = (f"PISANO_TIMEOUT_MS {timeout} + PISANO_CONNECT_TIMEOUT_MS {connect}" if name == "default"
                        else f"destination {name}: timeout_ms {timeout} + connect_timeout_ms {connect}")
            raise ValueError(
                f"DEDUP_CLAIM_LEASE_MS={self.dedup_claim_lease_ms}: shorter than one request may take "
                f"({timeouts} + {self.claim_lease_margin_ms} margin); set it to at least {needed}, "
                "or leave it unset to derive it")
        return self

    def _slowest_request(self) -> tuple[int, str, int, int]:
        """The lease one request needs, for the destination with the longest timeouts:
        (lease, destination, timeout, connect timeout)."""
        candidates = [("default", self.pisano_timeout_ms, self.pisano_connect_timeout_ms)]
        for name, spec in self.destinations.items():
            timeout, connect = spec.get("timeout_ms", 30_000), spec.get("connect_timeout_ms", 5_000)
            if isinstance(timeout, int) and isinstance(connect, int):  # else destinations.py refuses it
                candidates.append((name, timeout, connect))
        name, timeout, connect = max(candidates, key=lambda c: c[1] + c[2])
        return timeout + connect + self.claim_lease_margin_ms, name, timeout, connect

    @model_validator(mode="after")
    def _kafka_producer(self) -> Settings:
        # Dead letters and receipts are produced one by one, outside any transaction, and committed
        # behind their acknowledgements: a transactional producer refuses every such produce()
        # ("Erroneous state", retried for ever: every partition stuck at its first failure), and the
        # gapless guarantee makes a lost sequence a fatal error that stops the replica.
        for name in self.kafka:
            if name.startswith("transactional.") or name == "enable.gapless.guarantee":
                raise ValueError(f"kafka: {name} is not supported: the consumer's dead letters and receipts are "
                                 "produced outside transactions, idempotent, behind acks=all; remove it "
                                 f"(KAFKA_CONFIG_{name.upper().replace('.', '_')} or the file's kafka: mapping)")
        return self

    @model_validator(mode="after")
    def _token_sources(self) -> Settings:
        if self.pisano_api_token and self.pisano_api_token_file:
            raise ValueError("set PISANO_API_TOKEN or PISANO_API_TOKEN_FILE, not both")
        if self.pisano_token_provider and (self.pisano_api_token or self.pisano_api_token_file):
            raise ValueError("PISANO_TOKEN_PROVIDER gives every destination's token: unset PISANO_API_TOKEN "
                             "and PISANO_API_TOKEN_FILE")
        if self.schema_registry_password and self.schema_registry_password_file:
            raise ValueError("set SCHEMA_REGISTRY_PASSWORD or SCHEMA_REGISTRY_PASSWORD_FILE, not both")
        if self.replay_signing_key and self.replay_signing_key_file:
            raise ValueError("set REPLAY_SIGNING_KEY or REPLAY_SIGNING_KEY_FILE, not both")
        if self.outcome_phone_salt and self.outcome_phone_salt_file:
            raise ValueError("set OUTCOME_PHONE_SALT or OUTCOME_PHONE_SALT_FILE, not both")
        if self.outcome_topic and (self.outcome_topic in self.kafka_topics or self.outcome_topic == self.dlq_topic):
            raise ValueError(f"OUTCOME_TOPIC={self.outcome_topic} is also KAFKA_TOPICS or DLQ_TOPIC: receipts need a "
                             "topic of their own (read from KAFKA_TOPICS, every receipt would make another)")
        if self.outcome_topic and not (self.outcome_phone_salt or self.outcome_phone_salt_file):
            raise ValueError("OUTCOME_TOPIC needs OUTCOME_PHONE_SALT (or OUTCOME_PHONE_SALT_FILE): receipts carry the "
                             "phone only as a salted hash; use a random salt, e.g. `openssl rand -hex 32`, kept as "
                             "a secret and shared with whoever looks phones up in the receipts")
        if self.schema_registry_url and urlsplit(self.schema_registry_url).username is not None \
                and self.schema_registry_user:
            raise ValueError("SCHEMA_REGISTRY_URL holds user:password@ and SCHEMA_REGISTRY_USER is set: "
                             "keep the credentials in SCHEMA_REGISTRY_USER / SCHEMA_REGISTRY_PASSWORD only")
        return self

    # Redis answers a WAIT only when its timeout is over (replicas missing): the reply must still
    # come within the socket timeout, or the client gives up first and reports Redis unreachable.
    wait_reply_margin_ms: ClassVar[int] = 500

    @model_validator(mode="after")
    def _wait_fits_the_redis_timeout(self) -> Settings:
        longest = self.redis_timeout_ms - self.wait_reply_margin_ms
        if self.dedup_wait_replicas and self.dedup_wait_timeout_ms > longest:
            raise ValueError(f"DEDUP_WAIT_TIMEOUT_MS={self.dedup_wait_timeout_ms} does not fit in REDIS_TIMEOUT_MS="
                             f"{self.redis_timeout_ms}: every call would end as Redis unreachable before WAIT answers; "
                             f"lower it to at most {longest} or raise REDIS_TIMEOUT_MS (at most 5000)")
        return self

    @model_validator(mode="after")
    def _stale_margin(self) -> Settings:
        if self.stale_margin_s >= self.dedup_horizon_s:
            raise ValueError(f"STALE_MARGIN_S={self.stale_margin_s} must be less than DEDUP_HORIZON_S="
                             f"{self.dedup_horizon_s}, or every record would be dead-lettered as stale; lower it "
                             "(it needs to cover the producers' clock skew and the longest wait before a claim)")
        return self

    @property
    def max_event_age_ms(self) -> int | None:
        """MAX_EVENT_AGE in milliseconds, or None when events never expire."""
        if self.max_event_age is None:
            return None
        return duration_ms(self.max_event_age)

    @model_validator(mode="after")
    def _max_event_age(self) -> Settings:
        # Past the stale limit a record is dead-lettered as `stale` before its age is weighed, so a
        # longer MAX_EVENT_AGE would never apply: refuse it rather than let it mislead.
        age = self.max_event_age_ms
        if age is not None and not 0 < age <= self.stale_after_ms:
            raise ValueError(f"MAX_EVENT_AGE={self.max_event_age.strip() if self.max_event_age else ''}: must be "
                             "more than 0 and at most DEDUP_HORIZON_S minus STALE_MARGIN_S "
                             f"({self.stale_after_ms // 1000} s), past which records are dead-lettered as stale")
        if self.suppression_key and self.suppression_key_file:
            raise ValueError("set SUPPRESSION_KEY or SUPPRESSION_KEY_FILE, not both")
        return self

    @model_validator(mode="after")
    def _contact_cooldown(self) -> Settings:
        cooldowns = {"CONTACT_COOLDOWN": self.contact_cooldown,
                     **{f"CONTACT_COOLDOWN_CAMPAIGNS.{c}": v for c, v in self.contact_cooldown_campaigns.items()}}
        for name, value in cooldowns.items():
            if duration_ms(value) > MAX_COOLDOWN_MS:
                raise ValueError(f"{name}={value.strip()}: at most 366d")
        # A destination's own is checked in full by consumer/config/destinations.py.
        per_destination = [str(spec.get("contact_cooldown", "0")) for spec in self.destinations.values()
                           if isinstance(spec, dict)]
        on = any(duration_ms(v) for v in cooldowns.values()) or any(
            re.match(DURATION_OR_ZERO, v) and duration_ms(v) for v in per_destination)
        if on and self.suppression_key is None and self.suppression_key_file is None:
            raise ValueError(NO_COOLDOWN_KEY)
        return self

    def opt_out_key(self) -> bytes | None:
        """The key of the opt-out list's hashes, or None when no list is configured."""
        if self.suppression_key is not None:
            # Under another key, no entry `suppress` imported with the other form would ever match.
            key = env_secret("SUPPRESSION_KEY", self.suppression_key.get_secret_value(),
                             "; then import the opt-out list again with the key as the fleet reads it "
                             "(entries are hashed with it)")
        elif self.suppression_key_file is not None:
            key = read_secret_file("SUPPRESSION_KEY_FILE", self.suppression_key_file,
                                   "mount the key file or set SUPPRESSION_KEY")
        else:
            return None
        if len(key) < 16:
            raise ConfigError("SUPPRESSION_KEY: shorter than 16 characters; use a random key, e.g. "
                              "`openssl rand -hex 32`, the same on every replica and for `pisano-sms suppress`")
        return key.encode()

    @property
    def stale_after_ms(self) -> int:
        """Age (Kafka timestamp to now) past which a record is `stale`."""
        return (self.dedup_horizon_s - self.stale_margin_s) * 1000

    @model_validator(mode="after")
    def _secure_transport(self) -> Settings:
        if self.pisano_allow_insecure:
            return self
        if self.pisano_url.lower().startswith("http://"):
            raise ValueError(f"PISANO_URL={mask_url(self.pisano_url)}: plain http sends the token and the "
                             "customers' phone numbers unencrypted; use https://, or set "
                             "PISANO_ALLOW_INSECURE=true for a local simulator or test network")
        if not self.pisano_tls_verify:
            raise ValueError("PISANO_TLS_VERIFY=false accepts any certificate, so anyone on the path can read "
                             "the token; give Pisano's CA in PISANO_CA_FILE instead, or set "
                             "PISANO_ALLOW_INSECURE=true for a test network")
        return self

    def insecure_transport(self) -> list[str]:
        """What PISANO_ALLOW_INSECURE let through, for a loud warning at start (empty when secure)."""
        found = []
        if self.pisano_url.lower().startswith("http://"):
            found.append(f"PISANO_URL={mask_url(self.pisano_url)} is plain http: the token and phone numbers "
                         "travel unencrypted")
        if not self.pisano_tls_verify:
            found.append("PISANO_TLS_VERIFY=false: Pisano's certificate is not checked")
        for name, spec in self.destinations.items():
            if str(spec.get("url", "")).lower().startswith("http://"):
                found.append(f"destination {name} is plain http: the token and phone numbers travel unencrypted")
            if spec.get("tls_verify") is False:
                found.append(f"destination {name}: its certificate is not checked")
        return found

    # ----------------------------------------------------------------- derived values

    @property
    def rate_windows(self) -> tuple[RateWindow, ...]:
        return parse_rate_limits(self.pisano_rate_limits)

    @property
    def claim_lease_ms(self) -> int:
        """How long a dedup claim protects an event from other replicas without being renewed:
        DEDUP_CLAIM_LEASE_MS, else the slowest request's timeouts plus claim_lease_slack_ms (95 s
        with the default 30 s + 5 s).

        A live request never leaves its claims that long: each POST is preceded by a renewal (at
        most RENEWAL_REACH_S, 2 s, before it leaves), and every wait in between (for a slot, a
        backoff, bisection's other requests) is its heartbeat's, which renews them every quarter
        lease (consumer/delivery/heartbeat.py). So the lease no longer counts the retry budget and
        the throttle horizon; what it must outlive is the longest stretch without a renewal: one
        request, then beats that fail. With the defaults (beats every 23.75 s), the first beat
        after the slowest request comes at 2 + 35 = 37 s at the latest; two in a row may find Redis
        unreachable and the third (at about 85 s) still lands 10 s (the margin) before the lease
        ends. In a wait without a POST, the third beat after a renewal comes at 71 s. This is also
        how long a SIGKILLed replica's claims hold their events back (245 s before 0.3.0's heartbeat)."""
        if self.dedup_claim_lease_ms is not None:
            return self.dedup_claim_lease_ms
        _, _, timeout, connect = self._slowest_request()
        return timeout + connect + self.claim_lease_slack_ms

    def api_token(self) -> str:
        """The Pisano token from the environment or the mounted file, stripped and checked (a
        token with a newline or a space inside would end up in a request header, and from an HTTP
        library's error text into logs); ConfigError if neither is set or it is malformed."""
        if self.pisano_api_token is not None:
            return self.pisano_api_token.get_secret_value()
        if self.pisano_api_token_file is not None:
            token = read_secret_file("PISANO_API_TOKEN_FILE", self.pisano_api_token_file,
                                     "mount the token file or set PISANO_API_TOKEN")
            try:
                return check_token(token)
            except ValueError as exc:
                raise ConfigError(f"PISANO_API_TOKEN_FILE={self.pisano_api_token_file}: {exc}") from None
        raise ConfigError("PISANO_API_TOKEN is not set: set it, or PISANO_API_TOKEN_FILE")

    def registry_password(self) -> str | None:
        """The schema registry's password from the environment or its mounted file, or None."""
        if self.schema_registry_password is not None:
            return self.schema_registry_password.get_secret_value()
        if self.schema_registry_password_file is not None:
            return read_secret_file("SCHEMA_REGISTRY_PASSWORD_FILE", self.schema_registry_password_file,
                                    "mount the password file or set SCHEMA_REGISTRY_PASSWORD")
        return None

    def replay_key(self) -> bytes | None:
        """The key that signs and verifies replayed records, or None when none is configured."""
        if self.replay_signing_key is not None:
            # Another key in the replay tool than in the consumers: no replay's signature verifies.
            key = env_secret("REPLAY_SIGNING_KEY", self.replay_signing_key.get_secret_value())
        elif self.replay_signing_key_file is not None:
            key = read_secret_file("REPLAY_SIGNING_KEY_FILE", self.replay_signing_key_file,
                                   "mount the key file or set REPLAY_SIGNING_KEY")
        else:
            return None
        if len(key) < 16:
            raise ConfigError("REPLAY_SIGNING_KEY: shorter than 16 characters; use a random key, e.g. "
                              "`openssl rand -hex 32`, from the same Secret on every replica and the replay tool")
        return key.encode()

    def outcome_salt(self) -> str:
        """The salt of the receipts' phone hashes (consumer/outcomes/receipts.py); ConfigError if
        missing or shorter than 16 characters."""
        if self.outcome_phone_salt is not None:
            # Another salt than the CRM's: the receipts' phone hashes would join nothing.
            salt = env_secret("OUTCOME_PHONE_SALT", self.outcome_phone_salt.get_secret_value())
        elif self.outcome_phone_salt_file is not None:
            salt = read_secret_file("OUTCOME_PHONE_SALT_FILE", self.outcome_phone_salt_file,
                                    "mount the salt file or set OUTCOME_PHONE_SALT")
        else:
            raise ConfigError("OUTCOME_PHONE_SALT is not set: set it, or OUTCOME_PHONE_SALT_FILE")
        if len(salt) < 16:
            raise ConfigError("OUTCOME_PHONE_SALT: shorter than 16 characters; use a random salt, e.g. "
                              "`openssl rand -hex 32`")
        return salt

    def require(self, *names: str) -> None:
        """Fail with one ConfigError naming every setting a command needs but has no value."""
        missing = [n.upper() for n in names if not getattr(self, n)]
        if missing:
            raise ConfigError(
                f"missing setting(s): {', '.join(missing)}; set them in the environment "
                "or in the --config file"
            )

    def as_dict(self) -> dict[str, Any]:
        """Every setting, safe to print: secrets are replaced by '***'."""
        out: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if name == "redis_url":
                value = mask_url(value.get_secret_value())
            elif name in ("pisano_url", "schema_registry_url") and value:
                value = mask_url(value)
            elif isinstance(value, SecretStr):
                value = "***"
            elif name == "destinations":
                value = {n: _shown_destination_value("", spec) for n, spec in value.items()}
            elif name == "mapper_options":
                # A plug-in's own options, handed to it as is: its CRM's URL and password go there too.
                value = _shown_destination_value("", value)
            elif name == "kafka":
                value = {k: ("***" if is_secret_key(k) else v) for k, v in value.items()}
            elif isinstance(value, Path | IPv4Address | IPv6Address):
                value = str(value)
            out[name.upper()] = value
        return out

    def __repr_args__(self) -> Any:
        return self.as_dict().items()


def is_secret_key(name: str) -> bool:
    """Whether a librdkafka property's value is secret (its name holds password, secret, key...)."""
    return is_secret_name(name)
