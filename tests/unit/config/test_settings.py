import re
from pathlib import Path

import pytest

from consumer.config.loading import load_settings
from consumer.config.windows import RateWindow
from consumer.errors import ConfigError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith(("KAFKA_", "PISANO_", "REDIS_", "BATCH_", "DLQ_", "HTTP_PORT", "MAPPING_", "AVRO_",
                           "DEDUP_", "STALE_")):
            monkeypatch.delenv(key)


def test_defaults_follow_design() -> None:
    settings = load_settings()
    assert settings.batch_max_recipients == 5000
    assert settings.rate_windows == (RateWindow(20, 5000), RateWindow(40, 25000), RateWindow(80, 125000),
                                     RateWindow(160, 625000))


def test_environment_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("KAFKA_TOPICS: a,b\nbatch_max_wait_ms: 250\nkafka:\n  security.protocol: SASL_SSL\n")
    monkeypatch.setenv("BATCH_MAX_WAIT_MS", "900")
    monkeypatch.setenv("KAFKA_CONFIG_SASL_PASSWORD", "s3cret")
    settings = load_settings(config)
    assert settings.kafka_topics == ["a", "b"]
    assert settings.batch_max_wait_ms == 900
    assert settings.kafka == {"security.protocol": "SASL_SSL", "sasl.password": "s3cret"}


def test_rate_limits_error_names_setting_value_and_form(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PISANO_RATE_LIMITS", "20 per 5")
    with pytest.raises(ConfigError) as error:
        load_settings()
    message = str(error.value)
    assert message.startswith("PISANO_RATE_LIMITS='20 per 5'")
    assert "expected N/Ts" in message


def test_pace_share_defaults_on_and_0_turns_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().pisano_pace_share == 0.8
    monkeypatch.setenv("PISANO_PACE_SHARE", "0")
    assert load_settings().pisano_pace_share == 0


def test_rate_limits_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PISANO_RATE_LIMITS", "off")
    assert load_settings().rate_windows == ()


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("BATCH_MAX_RECIPIENTS", "9000", "BATCH_MAX_RECIPIENTS='9000': expected an integer from 1 to 5000"),
    ("PISANO_URL", "ftp://x", "PISANO_URL='ftp://x'"),
    ("REDIS_URL", "http://h", "REDIS_URL=***"),
    ("HTTP_PORT", "abc", "HTTP_PORT='abc'"),
    ("PISANO_PACE_SHARE", "0.05", "PISANO_PACE_SHARE='0.05': below 0.1 a paced request would wait"),
    ("PISANO_PACE_SHARE", "1.5", "PISANO_PACE_SHARE='1.5'"),
    ("PISANO_PACE_SHARE", "-1", "PISANO_PACE_SHARE='-1'"),
])
def test_bad_values_are_named(monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match="^" + expected.replace("(", r"\(").replace("*", r"\*")):
        load_settings()


def test_unknown_setting_in_file_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("KAFKA_TOPCS: a\n")
    with pytest.raises(ConfigError, match="KAFKA_TOPCS: unknown setting"):
        load_settings(config)


@pytest.mark.parametrize("content", ["a: [", "- just\n- a list\n"])
def test_garbage_file_is_one_clear_error(tmp_path: Path, content: str) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(content)
    with pytest.raises(ConfigError, match=r"--config .*c.yaml"):
        load_settings(config)


def test_secrets_never_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PISANO_API_TOKEN", "tok-123456")
    monkeypatch.setenv("REDIS_URL", "redis://user:pw-98765@redis:6379/0")
    monkeypatch.setenv("KAFKA_CONFIG_SASL_PASSWORD", "kafka-pw-555")
    settings = load_settings()
    shown = repr(settings) + str(settings.as_dict())
    for secret in ("tok-123456", "pw-98765", "kafka-pw-555"):
        assert secret not in shown
    assert settings.api_token() == "tok-123456"


def test_token_from_mounted_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    monkeypatch.setenv("PISANO_API_TOKEN_FILE", str(token_file))
    assert load_settings().api_token() == "from-file"


def test_missing_token_says_what_to_do() -> None:
    with pytest.raises(ConfigError, match="PISANO_API_TOKEN is not set"):
        load_settings().api_token()


def test_stale_margin_must_leave_room_under_the_horizon(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().stale_after_ms == 6 * 86_400_000  # 7 days minus a day
    monkeypatch.setenv("DEDUP_HORIZON_S", "3600")
    with pytest.raises(ConfigError, match="STALE_MARGIN_S=86400 must be less than DEDUP_HORIZON_S=3600"):
        load_settings()
    monkeypatch.setenv("STALE_MARGIN_S", "600")
    assert load_settings().stale_after_ms == 3_000_000


# ------------------------------------------------------------------ claim lease vs request timeouts

def test_a_claim_lease_shorter_than_a_request_is_refused_naming_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    # A claim is renewed right before each POST; it must then outlive the request it guards, or
    # another replica may take the event while the request is still under way.
    monkeypatch.setenv("DEDUP_CLAIM_LEASE_MS", "1000")
    with pytest.raises(ConfigError) as error:
        load_settings()
    message = str(error.value)
    assert message.startswith("DEDUP_CLAIM_LEASE_MS=1000")
    assert "PISANO_TIMEOUT_MS" in message and "45000" in message  # 30000 + 5000 + a 10000 margin


def test_a_claim_lease_is_checked_against_every_destination(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("DEDUP_CLAIM_LEASE_MS: 60000\ndestinations:\n  slow:\n    url: https://pisano.bank.internal\n"
                      "    timeout_ms: 120000\n    campaigns: []\n")
    with pytest.raises(ConfigError) as error:
        load_settings(config)
    assert "DEDUP_CLAIM_LEASE_MS=60000" in str(error.value) and "slow" in str(error.value)


def test_the_derived_claim_lease_covers_the_slowest_destination(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("destinations:\n  slow:\n    url: https://pisano.bank.internal\n    timeout_ms: 600000\n")
    settings = load_settings(config)
    assert settings.claim_lease_ms >= 600_000 + 5_000 + 10_000


def test_the_default_claim_lease_outlives_one_request_not_every_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    # The heartbeat keeps a waiting request's claims (consumer/delivery/heartbeat.py), so the lease
    # no longer counts the retry budget and the throttle horizon: a SIGKILLed replica's claims
    # block their events for about 95 s, not 245 s.
    assert load_settings().claim_lease_ms == 30_000 + 5_000 + 60_000
    monkeypatch.setenv("PISANO_RETRY_BUDGET_MS", "600000")
    monkeypatch.setenv("THROTTLE_HORIZON_MS", "600000")
    assert load_settings().claim_lease_ms == 95_000


def test_a_long_enough_claim_lease_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEDUP_CLAIM_LEASE_MS", "45000")
    assert load_settings().claim_lease_ms == 45_000


def test_redis_timeout_defaults_to_2s_and_a_wait_must_fit_in_it(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().redis_timeout_ms == 2000
    monkeypatch.setenv("DEDUP_WAIT_REPLICAS", "1")
    monkeypatch.setenv("DEDUP_WAIT_TIMEOUT_MS", "1500")
    assert load_settings().dedup_wait_timeout_ms == 1500
    # A WAIT of 1.6 s answers after the client gave up at 2 s, less the reply's margin.
    monkeypatch.setenv("DEDUP_WAIT_TIMEOUT_MS", "1600")
    with pytest.raises(ConfigError, match=r"WAIT_TIMEOUT_MS=1600 does not fit in REDIS_TIMEOUT_MS=2000.*at most 1500"):
        load_settings()
    monkeypatch.setenv("REDIS_TIMEOUT_MS", "2100")
    assert load_settings().redis_timeout_ms == 2100
    # Without replicas to wait for, no WAIT is sent: any pair is fine.
    monkeypatch.setenv("DEDUP_WAIT_REPLICAS", "0")
    monkeypatch.setenv("REDIS_TIMEOUT_MS", "500")
    assert load_settings().redis_timeout_ms == 500


def test_the_redis_timeout_reaches_the_client(monkeypatch: pytest.MonkeyPatch) -> None:
    from consumer.app import build_state

    monkeypatch.setenv("REDIS_TIMEOUT_MS", "750")
    client = build_state(load_settings()).client
    try:
        options = client.connection_pool.connection_kwargs
        assert (options["socket_timeout"], options["socket_connect_timeout"]) == (0.75, 0.75)
    finally:
        client.close()


@pytest.mark.parametrize(("env", "setting"), [
    ("KAFKA_CONFIG_TRANSACTIONAL_ID", "transactional.id"),
    ("KAFKA_CONFIG_ENABLE_GAPLESS_GUARANTEE", "enable.gapless.guarantee"),
])
def test_producer_settings_that_would_hold_every_dead_letter_are_refused(
        monkeypatch: pytest.MonkeyPatch, env: str, setting: str) -> None:
    # With transactional.id every produce() outside a transaction fails ("Erroneous state"): every
    # dead letter and receipt retried for ever, every partition stuck at its first failure. The
    # gapless guarantee turns a lost producer sequence into a fatal error that stops the replica.
    monkeypatch.setenv(env, "x" if setting == "transactional.id" else "true")
    with pytest.raises(ConfigError, match=re.escape(f"kafka: {setting} is not supported")):
        load_settings()


def test_a_transactional_setting_in_the_file_is_refused_too(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("kafka:\n  transactional.timeout.ms: 60000\n")
    with pytest.raises(ConfigError, match=re.escape("kafka: transactional.timeout.ms is not supported")):
        load_settings(config)
