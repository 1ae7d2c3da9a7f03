"""The opt-out list's key is one Secret for the fleet and `pisano-sms suppress` (README, "The opt-out
list"); the chart mounts it as SUPPRESSION_KEY_FILE, an operator's shell or Job often passes it as
SUPPRESSION_KEY. The file form is read stripped; the environment form was taken as it is, so the
same Secret with its usual trailing newline (`kubectl create secret --from-file`, `echo key > f`)
gave two keys: entries imported under one were never matched under the other, every opted-out
customer surveyed, silently. Now such a value is refused at start, naming the fix (stripping it
instead would silently change the hashes of a fleet that ran with it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumer.config.settings import Settings
from consumer.errors import ConfigError

KEY = "0123456789abcdef0123456789abcdef"


def _settings(**extra: object) -> Settings:
    return Settings(kafka_topics=["t"], pisano_url="https://pisano.invalid", **extra)  # type: ignore[arg-type]


def test_a_key_with_surrounding_whitespace_in_the_environment_is_refused_not_hashed_differently(
        tmp_path: Path) -> None:
    secret = KEY + "\n"  # the Secret's bytes, as `kubectl create secret --from-file` keeps them
    (tmp_path / "suppression-key").write_text(secret)
    from_file = _settings(suppression_key_file=tmp_path / "suppression-key").opt_out_key()
    assert from_file == KEY.encode()
    with pytest.raises(ConfigError, match="whitespace") as refused:
        _settings(suppression_key=secret).opt_out_key()
    assert KEY not in str(refused.value)  # the key never in a message
    assert _settings(suppression_key=KEY).opt_out_key() == from_file


@pytest.mark.parametrize(("setting", "read"), [
    ("suppression_key", lambda s: s.opt_out_key()),
    ("replay_signing_key", lambda s: s.replay_key()),  # the replay tool signs, the consumers verify
    ("outcome_phone_salt", lambda s: s.outcome_salt()),  # the receipts' phone hashes, joined by a CRM
])
@pytest.mark.parametrize("value", [KEY + "\n", KEY + "\r\n", " " + KEY, KEY + "\t"])
def test_every_secret_with_a_file_form_refuses_surrounding_whitespace_in_the_environment(
        setting: str, read: object, value: str) -> None:
    # Each of these must be the same bytes on every replica and in the tools: the file form is read
    # stripped, so the environment form with the Secret's newline would be another key or salt.
    with pytest.raises(ConfigError) as refused:
        read(_settings(**{setting: value}))  # type: ignore[operator]
    message = str(refused.value)
    assert message.startswith(setting.upper() + ":") and "whitespace" in message and "_FILE" in message
    assert KEY not in message
    assert read(_settings(**{setting: KEY})) in (KEY, KEY.encode())  # type: ignore[operator]
