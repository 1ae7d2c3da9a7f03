"""Loading the settings: the YAML `--config` file, then the environment over it.

Bad configuration fails at start with one line per problem naming the setting, the bad value and
the expected form; secrets are never echoed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import SecretStr, ValidationError
from pydantic_settings import SettingsError

from consumer.config.secrets import mask_url, mask_urls_in_text
from consumer.config.settings import Settings, is_secret_key
from consumer.config.windows import EXPECTED_FORM
from consumer.errors import ConfigError, unreadable_file

KAFKA_PASSTHROUGH_ENV_PREFIX = "KAFKA_CONFIG_"
MAX_CONFIG_FILE_BYTES = 1_048_576  # a config file is small; a huge one is a mistake or hostile

# The expected form of each setting, quoted when its value is rejected.
EXPECTED = {
    "kafka_topics": "a comma list of topic names, e.g. transactions,payments",
    "pisano_url": "an http(s) URL such as https://api.pisano.co",
    "redis_url": "redis://[user:password@]host:port/db or rediss:// for TLS",
    "schema_registry_url": "an http(s) URL such as https://registry:8081 (credentials in "
                           "SCHEMA_REGISTRY_USER / SCHEMA_REGISTRY_PASSWORD rather than in the URL)",
    "pisano_api_token": "the API token: printable characters, no spaces inside",
    "pisano_rate_limits": EXPECTED_FORM,
    "batch_max_recipients": "an integer from 1 to 5000 (Pisano's limit per request)",
    "http_port": "a TCP port from 0 to 65535 (0 turns the health server off)",
    "http_bind_address": "an IP address to listen on, e.g. 0.0.0.0 (every IPv4 interface), :: or 127.0.0.1",
    "kafka": "a mapping of librdkafka settings, e.g. {security.protocol: SASL_SSL}",
    "log_format": "one of auto, json, text",
    "log_level": "one of DEBUG, INFO, WARNING, ERROR",
    "ambiguous_policy": "one of dead_letter (default: never resend on its own), assume_delivered, resend",
    "isolation_budget_share": "a number from 0 to 1, the share of the longest window's limit",
    "pisano_pace_share": "0 (no pacing) or a number from 0.1 to 1, the share of the binding window's "
                         "sustainable rate that requests of batches not full keep to",
    "contact_cooldown": "a duration such as 30d, 12h, 90m or 3600s, or 0 (off)",
    "contact_cooldown_campaigns": "a mapping of campaign id to a duration such as 7d, or 0 (off)",
}


# The settings whose value is a secret: every one typed SecretStr, read off the model, so that one
# added later is hidden here too. Found by review: a hand-kept list lacked SUPPRESSION_KEY and
# OUTCOME_PHONE_SALT, whose value was quoted when it was not a string (YAML reads a key of digits
# as an int).
SECRET_SETTINGS = frozenset(name for name, field in Settings.model_fields.items()
                            if field.annotation is SecretStr or SecretStr in get_args(field.annotation))


def _read_config_file(path: Path) -> dict[str, Any]:
    try:
        if path.stat().st_size > MAX_CONFIG_FILE_BYTES:
            raise ConfigError(f"--config {path}: larger than 1 MiB; is this the right file?")
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise unreadable_file(f"--config {path}", exc) from exc
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where else ""
        raise ConfigError(f"--config {path}: not valid YAML{line}; fix the file") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path}: expected a mapping of SETTING: value at the top")
    return {str(key).lower(): value for key, value in data.items()}


def _kafka_from_env(environ: dict[str, str]) -> dict[str, str]:
    prefix = KAFKA_PASSTHROUGH_ENV_PREFIX
    return {
        key[len(prefix) :].lower().replace("_", "."): value
        for key, value in environ.items()
        if key.upper().startswith(prefix) and len(key) > len(prefix)
    }


def _describe(error: Any) -> str:
    loc: tuple[Any, ...] = tuple(error.get("loc") or ())
    field = str(loc[0]) if loc else ""
    reason = str(error.get("msg", "")).removeprefix("Value error, ")
    if not field:
        return reason
    name = field.upper()
    if error["type"] == "extra_forbidden":
        return f"{name}: unknown setting; check its spelling against the README's reference"
    secret = field in SECRET_SETTINGS or (
        field == "kafka" and len(loc) > 1 and is_secret_key(str(loc[1]))
    )
    value = error.get("input")
    if secret:
        shown = "***"
    elif isinstance(value, dict) or field == "destinations":  # a destination holds its token
        shown = "{...}"
    elif isinstance(value, str) and field in ("pisano_url", "schema_registry_url"):
        shown = repr(mask_url(value))
    else:  # a list or number where a URL was expected may still hold one
        shown = mask_urls_in_text(repr(value))
    expected = EXPECTED.get(field)
    if not expected:
        return f"{name}={shown}: {reason}"
    if error["type"] == "value_error":
        return f"{name}={shown}: {reason}; expected {expected}"
    return f"{name}={shown}: expected {expected}"


def load_settings(config_file: Path | None = None) -> Settings:
    """Build the settings from the file and the environment, or raise ConfigError."""
    file_values = _read_config_file(config_file) if config_file else {}
    env_kafka = _kafka_from_env(dict(os.environ))
    if env_kafka:
        file_kafka = file_values.get("kafka") or {}
        if not isinstance(file_kafka, dict):
            raise ConfigError(f"KAFKA: expected {EXPECTED['kafka']}")
        file_values["kafka"] = {**file_kafka, **env_kafka}
    try:
        return Settings(**file_values)
    except ValidationError as exc:
        lines = [_describe(e) for e in exc.errors(include_url=False)]
        raise ConfigError("; ".join(dict.fromkeys(lines))) from None
    except SettingsError as exc:  # a structured setting from the environment that is not JSON
        field = re.search(r'field "(\w+)"', str(exc))
        name = field.group(1).upper() if field else "a structured setting"
        # The value is not shown: a DESTINATIONS entry holds a token.
        raise ConfigError(f"{name}: not valid JSON in the environment; write it as a JSON object or list, "
                          "or set it in the --config file as YAML") from None
