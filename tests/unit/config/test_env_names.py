"""A setting misspelled in the environment (PISANO_RATE_LIMIT for PISANO_RATE_LIMITS) was ignored
in silence: the replica ran on the default. The config file refuses unknown names; the environment
cannot (a pod's environment holds other programs' and Kubernetes' own variables), so a name close
to a setting's is named, with the setting it probably meant, in `check` and at every start."""

from __future__ import annotations

from consumer.config.env_names import misspelled_settings


def test_a_name_one_letter_off_a_setting_is_named_with_the_setting_it_meant() -> None:
    found = misspelled_settings({"PISANO_RATE_LIMIT": "1/5s", "KAFKA_TOPIC": "a", "PATH": "/bin"})
    assert len(found) == 2
    assert any("PISANO_RATE_LIMIT " in f and "PISANO_RATE_LIMITS" in f for f in found)
    assert any("KAFKA_TOPIC " in f and "KAFKA_TOPICS" in f for f in found)
    assert all("ignored" in f and "rename" in f for f in found)
    assert "1/5s" not in " ".join(found)  # the value may be a secret: never shown


def test_settings_and_other_programs_variables_are_left_alone() -> None:
    assert misspelled_settings({
        "PISANO_RATE_LIMITS": "off", "pisano_url": "x", "KAFKA_CONFIG_SASL_PASSWORD": "x",
        "PISANO_SIM_ADMIN_TOKEN": "x", "PISANO_STACK_REDIS_PORT": "1", "REDIS_PORT": "tcp://10.0.0.1:6379",
        "REDIS_SERVICE_HOST": "10.0.0.1", "KAFKA_HEAP_OPTS": "-Xmx1g", "HOME": "/root", "OTEL_SERVICE_NAME": "x",
    }) == []


def test_check_names_it_on_the_config_line(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from consumer.config.settings import Settings
    from consumer.operations import check

    monkeypatch.setenv("PISANO_RATE_LIMIT", "1/5s")
    status, detail = check._config(Settings(kafka_topics="t", pisano_url="https://api.pisano.co",
                                            pisano_api_token="tok-1234567890"))
    assert status == "ok"  # a warning: the name may be another program's
    assert "PISANO_RATE_LIMIT" in detail and "PISANO_RATE_LIMITS" in detail
