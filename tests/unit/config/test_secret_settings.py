"""Secrets in the settings: tokens checked, URL credentials masked everywhere, registry credentials
as their own settings, insecure transport refused unless asked for."""

import json
import os
from pathlib import Path

import pytest

from consumer.config.destinations import destination_configs
from consumer.config.loading import load_settings
from consumer.config.registry import registry_connection
from consumer.config.secrets import check_token, mask_url, mask_urls_in_text
from consumer.errors import ConfigError
from tests.support.timing import growth


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith(("KAFKA_", "PISANO_", "REDIS_", "SCHEMA_", "REPLAY_", "AVRO_")):
            monkeypatch.delenv(key)


@pytest.mark.parametrize("raw", ["tok-123\n", "  tok-123  ", "tok-123\r\n"])
def test_token_is_stripped_from_environment_and_file(raw: str, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PISANO_API_TOKEN", raw)
    assert load_settings().api_token() == "tok-123"
    monkeypatch.delenv("PISANO_API_TOKEN")
    token_file = tmp_path / "token"
    token_file.write_text(raw)
    monkeypatch.setenv("PISANO_API_TOKEN_FILE", str(token_file))
    assert load_settings().api_token() == "tok-123"


# The tail is one no temporary path holds (`pytest-123` once made "123" a false alarm).
@pytest.mark.parametrize("raw", ["tok Zq9xW", "tok\nZq9xW", "tok\x07Zq9xW", "tókZq9xW", "tok\u00a0Zq9xW"])
def test_malformed_token_is_refused_without_showing_it(raw: str, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PISANO_API_TOKEN", raw)
    with pytest.raises(ConfigError) as error:
        load_settings()
    assert "PISANO_API_TOKEN=***" in str(error.value)
    assert "Zq9xW" not in str(error.value)
    monkeypatch.delenv("PISANO_API_TOKEN")
    token_file = tmp_path / "token"
    token_file.write_text(raw)
    monkeypatch.setenv("PISANO_API_TOKEN_FILE", str(token_file))
    with pytest.raises(ConfigError, match="PISANO_API_TOKEN_FILE=") as error:
        load_settings().api_token()
    assert "Zq9xW" not in str(error.value)


def test_blank_token_means_not_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PISANO_API_TOKEN", "  \n")
    settings = load_settings()
    assert settings.pisano_api_token is None
    with pytest.raises(ConfigError, match="PISANO_API_TOKEN is not set"):
        settings.api_token()


def test_check_token_explains() -> None:
    with pytest.raises(ValueError, match="space, a line break"):
        check_token("a b")


@pytest.mark.parametrize(("url", "masked"), [
    ("redis://user:pw-1@h:6379/0", "redis://user:***@h:6379/0"),
    ("redis://:pw-1@h/0", "redis://***@h/0"),
    ("redis://h:6379/0?password=pw-1&db=1", "redis://h:6379/0?password=***&db=1"),
    ("rediss://h/0?ssl_ca_certs=/ca.pem", "rediss://h/0?ssl_ca_certs=/ca.pem"),
    ("https://u:p%40w-1@reg:8081/x", "https://u:***@reg:8081/x"),
    ("https://reg:8081", "https://reg:8081"),
    # A Unix socket's URL has an empty authority: its `//` stays (`unix:/p` is another URL).
    ("unix:///var/run/redis.sock?db=1", "unix:///var/run/redis.sock?db=1"),
    ("unix:///var/run/redis.sock?password=pw-1", "unix:///var/run/redis.sock?password=***"),
])
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


RESERVED_PASSWORDS = ["p#ss-1", "pa/ss-1", "pa?ss-1", "a#b/c?d@e-1", "123/ss-1", "Abc@123/xyz-1"]


@pytest.mark.parametrize("password", RESERVED_PASSWORDS)
def test_a_url_whose_password_holds_reserved_characters_is_refused_at_start_and_never_shown(
        password: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found in review: a URL parser ends the user info at the first `/`, `?` or `#`, so in
    `redis://u:p#ss@h` the password is "p" and the port "p": the client fails with an error that
    quotes the password's first part, and the masking, trusting the parser, showed the rest. Such
    a URL cannot work: it is refused at start, with what to do and without the URL."""
    for setting, url in (("REDIS_URL", f"redis://u:{password}@h:6379/0"),
                         ("PISANO_URL", f"https://u:{password}@api.pisano.test"),
                         ("SCHEMA_REGISTRY_URL", f"https://u:{password}@reg:8081")):
        monkeypatch.setenv(setting, url)
        with pytest.raises(ConfigError, match="percent-encode") as refused:
            load_settings()
        assert "ss-1" not in str(refused.value) and "-1" not in str(refused.value)
        monkeypatch.delenv(setting)
        assert "-1" not in mask_url(url) and "ss" not in mask_url(url), mask_url(url)
    monkeypatch.setenv("DESTINATIONS", json.dumps({"retail": {"url": f"https://u:{password}@api.pisano.test",
                                                              "api_token": "tok-1"}}))
    with pytest.raises(ConfigError, match="percent-encode") as refused:
        destination_configs(load_settings())
    assert "-1" not in str(refused.value)


@pytest.mark.parametrize("url", ["redis://h/0?password=p#w-1&db=1", "redis://h/0?token=a&b-1&db=1"])
def test_a_query_password_holding_a_raw_hash_or_ampersand_is_refused_and_never_shown(
        url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found in review: the parser ends `password=p#w` at the # and `token=a&b` at the &, and the
    masking showed the rest (`password=***#w`)."""
    assert "-1" not in mask_url(url)
    monkeypatch.setenv("REDIS_URL", url)
    with pytest.raises(ConfigError, match="percent-encode") as refused:
        load_settings()
    assert "-1" not in str(refused.value)


def test_an_at_sign_after_host_and_port_is_refused_and_a_query_password_stays_masked(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Found in review of the first fix: masking to the last @ of a URL showed the tail of a query
    password holding an @ (`?password=p@ss-1` came out as `***@ss-1`)."""
    assert mask_url("redis://h:6379/0?password=p@ss-1") == "redis://***"
    monkeypatch.setenv("REDIS_URL", "redis://h:6379/0?password=p@ss-1")
    with pytest.raises(ConfigError, match="%40") as refused:
        load_settings()
    assert "ss-1" not in str(refused.value)
    monkeypatch.setenv("REDIS_URL", "redis://h:6379/0?password=p%40ss-1")  # what the message asks for
    assert "ss-1" not in str(load_settings().as_dict())
    # An @ in a path or query cannot be told from a password cut short: hidden, and refused at start.
    assert mask_url("https://api.pisano.test/v1?email=bob@example.com") == "https://***"


@pytest.mark.parametrize("text", ["via https://proxy-user:proxy-pw/31c7-1@gateway/ failed",
                                  "Error connecting to redis://u:p#ss-1@h:6379", "redis://h/0?password=p@ss-1 x",
                                  "'redis://:Abc@123/xyz-1@h:6379/0'"])
def test_text_quoting_a_url_whose_password_holds_reserved_characters_masks_the_whole_url(text: str) -> None:
    """Found in review: our own settings are refused at start, but a proxy's or Pisano's answer
    may echo such a URL into an error text (a dead-letter header, a log line)."""
    masked = mask_urls_in_text(text)
    assert "-1" not in masked and "ss" not in masked.replace("password", ""), masked


def test_text_masking_keeps_the_hosts_of_ordinary_urls() -> None:
    text = "['redis://u:pw-1@h/0','https://v:pw-2@k/x'] and https://api.pisano.test/v1 (see http://h:1/x?a=b)"
    assert mask_urls_in_text(text) == ("['redis://***@h/0','https://***@k/x'] and https://api.pisano.test/v1 "
                                       "(see http://h:1/x?a=b)")


@pytest.mark.parametrize("value", ['"https://u:pw-1@reg:8081"', "u:pw-1@reg:8081", "https//u:pw-1@reg",
                                   "<https://u:pw-1@reg>", ["https://u:pw-1@reg"]])
def test_a_value_that_is_not_quite_a_url_is_masked_in_the_config_error(
        value: str | list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Found in review: quoted (as `docker --env-file` keeps them), scheme-less or listed values
    were quoted whole in the error saying they are not URLs."""
    if isinstance(value, str):
        assert "pw-1" not in mask_url(value)
    monkeypatch.setenv("SCHEMA_REGISTRY_URL", value if isinstance(value, str) else json.dumps(value))
    with pytest.raises(ConfigError) as refused:
        load_settings()
    assert "pw-1" not in str(refused.value)


def test_destination_urls_and_tokens_are_masked_in_the_settings_dump(monkeypatch: pytest.MonkeyPatch) -> None:
    """Found in review: a destination's URL credentials, and an API_TOKEN key in upper case, were
    shown by `as_dict()` (the start-up log's formatter happened to hide the first)."""
    monkeypatch.setenv("DESTINATIONS", '{"retail": {"url": "https://ru:retail-pw-9@api.pisano.co", '
                                       '"API_TOKEN": "tok-upper-7", "api_token_file": "/run/t"}}')
    settings = load_settings()
    shown = str(settings.as_dict()) + repr(settings)
    assert "retail-pw-9" not in shown and "tok-upper-7" not in shown
    assert "api.pisano.co" in shown and "/run/t" in shown


def test_mask_urls_in_text() -> None:
    text = "ConnectError for url 'https://u:pw-1@reg/x?token=t-2' and redis://h/0?password=pw-3 !"
    masked = mask_urls_in_text(text)
    for secret in ("pw-1", "t-2", "pw-3"):
        assert secret not in masked
    assert "reg/x" in masked


@pytest.mark.parametrize(("text", "masked"), [
    ("1redis://u:pw@h", "1redis://***@h"),  # a scheme starts at the first letter of its run
    ("+x-y.z://a@b@h/p", "+x-y.z://***@h/p"),  # the last @ before the path
    ("a=password=pw&api_key=k2 #x TOKEN=t", "a=password=***&api_key=*** #x TOKEN=***"),
    ("password= token=&x key", "password= token=&x key"),  # no value: nothing to mask
    ("my.Auth-Header=v1;v2 more", "my.Auth-Header=*** more"),
    ("monkey=see", "monkey=***"),  # any name holding a hint, as before
])
def test_mask_urls_in_text_cases(text: str, masked: str) -> None:
    assert mask_urls_in_text(text) == masked


@pytest.mark.parametrize("unit", [
    "key", "a", "a://b:", "x-token.", "1.+a", "a:///@", "a://?@#",
    # Escaped and scheme-less URLs, percent-encoded runs decoded again, `name: value` pairs.
    "\\", " \\", "a:\\/", "a:\\/\\/b@", " //a:", "=//a@", "%3A%2F", "a%3A%2F%2F", "a%3A%2F%2Fb%40", "%2525",
    "%22password%22%3A%22", "token%3D", "password=", "password= ", "password = ", '"password":"', "'token': '",
    "'pwd':'\\'", '\\"pwd\\":\\"', "Authorization: Bearer ", "x-api-key:", "pwd:,", "password: [",
    'password=a"pwd": ', "pwd=;authorization=Basic ",
    # Second review: `=>` pairs, bytes values, encoded runs through raw `:` and `@`.
    '"pwd"=>', "pwd => b'", "'pwd': b", "%3A:@", "a%3A%2F%2Fb:c%40", "//a:%40@",
    # Third review: flags, Redis AUTH, cookies, bare auth schemes, `user:pw@host`, `\u002F` slashes.
    "--password ", "--password", "--api-key '", "'--token', '", "AUTH ", "auth a ", '"AUTH" "', "AUTH a\n",
    "Cookie: ", "Cookie:", "set-cookie: a=", "Cookie: a=b;", "Bearer ", "basic a=", "Bearer a ",
    "a:b@", ":@", "a:", "=a:", "a@b:", "\\u002F", "a:\\u002F\\u002Fb@", "\\x2f", "//a:\\u002f@",
    # Fourth review: a cookie right after the colon, a cookie header and AUTH as a list's repr.
    "Cookie:a=", "cookie:a", "('cookie', '", "'cookie', 'a=", "cookie: x ", "cookie: 'x ", 'cookie: "',
    "'AUTH', '", "'AUTH', 'a', '", "\"auth\",\"a\" ", "AUTH a b\n",
    "Cookie: a=\\/", "Cookie: a=\"\\/", "Bearer a\\/", "Bearer \\/",
    # Fifth review: any Authorization scheme to the line's end, more bare schemes, Digest's lines.
    "Authorization: a ", "authorization: Hawk a=\"", "Authorization: Bearer\n", "authorization=a b ",
    "Proxy-Authorization:", "Digest ", "Digest a\n", "Digest response=", "token a ", "NTLM ", "digest a response=",
    "redis-cli -a ", "-a ", "redis-cli '-a', '", '\\"-a\\", \\"', "--pass=", "--pass ", "$4\r\nAUTH\r\n",
    "$4\\r\\nauth\\r\\n$1\\r\\n", "$4\r\nauth\r\n$1\r\n", '\\"AUTH\\", \\"', "AUTH OK ", "AUTH ok\n",
    "sid=", "sid=a;", "session=\\/", "token=a; Path", "token=a;Path=/;", "pwd=;", "pwd=a; ",
    "\\u0040", "a\\u003A", "a:b\\x40", "\uff20", "a:\uff20", "\\", "\\\\x", "a:b@[", "a:\\u0040[",
    "\uff1a", "a\uff1ab\uff20",  # review of the fifth: a full-width colon
    # Review of the fifth: an Authorization header inside an earlier pair's quoted value ends with it.
    '"a":"Authorization: x",', '"a":"Authorization: ', 'a:"Authorization: ', "a:'authorization:\"", '"a":"x',
    "'a': 'Authorization: x', ", '"a":"b", Authorization: ', "a:'a:\"a:\\\"a:\\'authorization:",
    "pwd=a;path \t ", "pwd=a;secure-", "pwd=a;Path\t\t", "pwd=a;httponly",  # an attribute as written
    "$4\\r\\nAUTH\\r\\n$1\\r\\n\\\\", "$4\\r\\nAUTH\\r\\n$1\\r\\na\\\\r",  # a doubled backslash in RESP
    # Review of the sixth: RESP escaped twice, redis-cli's `-a` up to its command's end.
    "$4\\\\r\\\\nAUTH\\\\r\\\\n$1\\\\r\\\\n", "$4\\\\r\\\\nAUTH\\\\r\\\\n$1\\\\r\\\\na\\\\\\\\", "\\\\\\",
    "redis-cli -a ", "redis-cli ; -a ", "redis-cli", "redis-cli -a a;",
    # ...session names, an Authorization in a list or of prose, entities, `[` in a password, short tokens.
    "laravel_session=", "a_session_id=a;", '"sid": "', "'session': 'a", "[('authorization', '", "('a', 'b'), ",
    '{"Authorization": ["a", ', '"authorization": ["a b", ', "Authorization: a b ", "authorization: a ;",
    "&#64;", "a:&#64;", "a&colon;b&commat;", "&", "a:b[@", "[a:b]@", "Token ab12cd ", "ntlm a1 ",
    "Digest response=401 ", 'Digest response="', "auth (", "auth ((",
    # Review of the seventh: one word after Authorization is a credential, two are prose.
    "Authorization: null ", "Authorization: a. b ", '"authorization": ["a. b ', "('authorization', 'a b'), ",
    '{"Authorization": ["a b", "c", ',
    "password: a ", "password: a b ", "pwd: required ", '"sid": "a b', "'session': 'a', ", "Bearer aaaa ", "AUTH aaa ",
    "redis-cli '", "redis-cli \"'-a ", "redis-cli \\\n-a ", "redis-cli -h 'a;' -a ", "[('pwd', '", "(('pwd', 'a'),",
    '{"token": [null, ', '"pwd": [1, "a', '"pwd": ["a 1 ', "'a', b'", "[('authorization', 'Basic a b'), ",
])
def test_masking_is_linear_in_the_text_even_an_adversarial_one(unit: str) -> None:
    """Found in review: the patterns were cubic (`[\\w.-]*key[\\w.-]*=` tried from every position
    of a run of hints: "key" * 341 took 0.5 s) and quadratic (a scheme tried from every letter of
    a run), on text from records (a route key in an error) redacted on the poll thread. Sixteen
    times the text takes about sixteen times as long, not 256 or 4096 times (the old patterns took
    about 15 s for the larger "key" text)."""
    # Sixteen times the text: linear is 16x, quadratic 256x; the bound sits four times from each.
    # Measured in the thread's CPU time (tests/support/timing.py): by the wall clock a busy machine
    # moved a linear pass's ratio past the bound.
    small, large = unit * (400 // len(unit)), unit * (6400 // len(unit))
    mask_urls_in_text(small)  # warm
    ratio = growth(lambda: [mask_urls_in_text(small) for _ in range(160)],
                   lambda: [mask_urls_in_text(large) for _ in range(10)]) * 16
    assert ratio < 64, f"16x the text took {ratio:.0f}x as long"


def test_every_url_credential_masked_in_the_start_dump(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://h:6379/0?password=redis-pw-1")
    monkeypatch.setenv("SCHEMA_REGISTRY_URL", "https://sr-user:sr-pw-2@registry:8081")
    monkeypatch.setenv("PISANO_URL", "https://pu:pisano-pw-3@api.pisano.test")
    monkeypatch.setenv("SCHEMA_REGISTRY_PASSWORD", "sr-pw-4")
    monkeypatch.setenv("REPLAY_SIGNING_KEY", "replay-key-5-0123456789")
    settings = load_settings()
    shown = repr(settings) + str(settings.as_dict())
    for secret in ("redis-pw-1", "sr-pw-2", "pisano-pw-3", "sr-pw-4", "replay-key-5"):
        assert secret not in shown
    assert "registry:8081" in shown


def test_config_errors_mask_url_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCHEMA_REGISTRY_URL", "ftp://sr-user:sr-pw-2@registry")
    with pytest.raises(ConfigError) as error:
        load_settings()
    assert "SCHEMA_REGISTRY_URL=" in str(error.value)
    assert "sr-pw-2" not in str(error.value)
    monkeypatch.delenv("SCHEMA_REGISTRY_URL")
    monkeypatch.setenv("PISANO_URL", "http://u:pisano-pw-3@api.test")
    with pytest.raises(ConfigError) as error:
        load_settings()
    assert "PISANO_ALLOW_INSECURE" in str(error.value)
    assert "pisano-pw-3" not in str(error.value)


def test_registry_credentials_are_their_own_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    password = tmp_path / "pw"
    password.write_text("sr-pw\n")
    monkeypatch.setenv("SCHEMA_REGISTRY_URL", "https://registry:8081/")
    monkeypatch.setenv("SCHEMA_REGISTRY_USER", "sr-user")
    monkeypatch.setenv("SCHEMA_REGISTRY_PASSWORD_FILE", str(password))
    connection = registry_connection(load_settings())
    assert connection is not None
    assert connection.url == "https://registry:8081"
    assert connection.auth == ("sr-user", "sr-pw")
    assert "sr-pw" not in repr(connection)
    assert connection.client_options()["auth"] == ("sr-user", "sr-pw")


def test_registry_url_credentials_move_out_of_the_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCHEMA_REGISTRY_URL", "https://sr-user:p%40ss@registry:8081")
    connection = registry_connection(load_settings())
    assert connection is not None
    assert connection.url == "https://registry:8081"
    assert connection.auth == ("sr-user", "p@ss")


def test_registry_credentials_not_in_both_places(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCHEMA_REGISTRY_URL", "https://a:b@registry:8081")
    monkeypatch.setenv("SCHEMA_REGISTRY_USER", "a")
    with pytest.raises(ConfigError, match="SCHEMA_REGISTRY_USER"):
        load_settings()


def test_registry_ca_file_must_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate")
    monkeypatch.setenv("SCHEMA_REGISTRY_URL", "https://registry:8081")
    monkeypatch.setenv("SCHEMA_REGISTRY_CA_FILE", str(bad))
    with pytest.raises(ConfigError, match=r"SCHEMA_REGISTRY_CA_FILE=.*mount the registry's CA"):
        registry_connection(load_settings())
    monkeypatch.delenv("SCHEMA_REGISTRY_CA_FILE")
    monkeypatch.setenv("SCHEMA_REGISTRY_KEY_FILE", str(bad))
    with pytest.raises(ConfigError, match="without SCHEMA_REGISTRY_CERT_FILE"):
        registry_connection(load_settings())


@pytest.mark.parametrize(("env", "refused"), [
    ({"PISANO_URL": "http://pisano.test"}, "plain http"),
    ({"PISANO_URL": "https://pisano.test", "PISANO_TLS_VERIFY": "false"}, "PISANO_TLS_VERIFY=false"),
])
def test_insecure_transport_needs_explicit_consent(env: dict[str, str], refused: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=refused + ".*PISANO_ALLOW_INSECURE=true"):
        load_settings()
    monkeypatch.setenv("PISANO_ALLOW_INSECURE", "true")
    settings = load_settings()
    assert [w for w in settings.insecure_transport() if refused.split()[0] in w or "http" in w]


def test_secure_transport_has_no_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PISANO_URL", "https://pisano.test")
    assert load_settings().insecure_transport() == []


def test_replay_key_from_file_and_too_short(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = tmp_path / "key"
    key.write_text("0123456789abcdef0123\n")
    monkeypatch.setenv("REPLAY_SIGNING_KEY_FILE", str(key))
    assert load_settings().replay_key() == b"0123456789abcdef0123"
    monkeypatch.delenv("REPLAY_SIGNING_KEY_FILE")
    assert load_settings().replay_key() is None
    monkeypatch.setenv("REPLAY_SIGNING_KEY", "short")
    with pytest.raises(ConfigError, match="shorter than 16"):
        load_settings().replay_key()


def test_insecure_pisano_url_is_one_line_and_exit_2(monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from consumer.cli import main

    monkeypatch.delenv("PISANO_ALLOW_INSECURE", raising=False)
    monkeypatch.setenv("PISANO_URL", "http://pisano.internal")
    result = CliRunner().invoke(main, ["check"])
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert "PISANO_ALLOW_INSECURE=true" in result.output


def test_nested_destination_values_are_masked_and_bad_json_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Found in review: values not checked yet (a list where the URL goes, a nested mapping) were
    shown as they were by as_dict(); DESTINATIONS that is not JSON raised pydantic-settings' error
    with a traceback."""
    monkeypatch.setenv("DESTINATIONS", '{"retail": {"url": ["https://ru:retail-pw-9@api.pisano.co"], '
                                       '"extra": {"password": "nested-secret-8"}}}')
    shown = str(load_settings().as_dict())
    assert "retail-pw-9" not in shown and "nested-secret-8" not in shown
    monkeypatch.setenv("DESTINATIONS", '{"retail": {"url": "https://ru:retail-pw-9@h", ')
    with pytest.raises(ConfigError, match="DESTINATIONS: not valid JSON") as refused:
        load_settings()
    assert "retail-pw-9" not in str(refused.value)


@pytest.mark.parametrize("setting", ["suppression_key", "outcome_phone_salt", "replay_signing_key",
                                     "schema_registry_password", "pisano_api_token", "redis_url"])
@pytest.mark.parametrize("value", [98765432109876543210, ["k3y-in-a-list-5f2a9c"], True])
def test_a_secret_setting_of_the_wrong_type_is_never_shown_in_the_config_error(
        setting: str, value: object, tmp_path: Path) -> None:
    """Found in review: the error for a secret setting that is not a string (a key of digits only,
    which YAML reads as an int; a list) quoted its value, for SUPPRESSION_KEY and
    OUTCOME_PHONE_SALT: the error named the secret settings one by one, and these two were missing."""
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({setting: value}))  # JSON is YAML
    with pytest.raises(ConfigError) as refused:
        load_settings(config)
    said = str(refused.value)
    assert setting.upper() in said and "***" in said
    for shown in ("98765432109876543210", "9876543", "k3y-in-a-list", "True"):
        assert shown not in said, said


def test_a_plug_in_mappers_secret_options_are_masked_in_the_settings_dump(tmp_path: Path) -> None:
    """Found in review: MAPPER_OPTIONS (a plug-in's own options, "as is": where its CRM password or
    key goes) was dumped whole by as_dict(), so the start-up log line showed every value the log
    redaction did not know by name (`credentials`, `passphrase`, a nested `password` in a list)."""
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({"mapper_options": {
        "crm": {"url": "https://crm:crm-pw-3@crm.bank.internal", "credentials": "crm-cred-4",
                "passphrase": "crm-phrase-5", "replicas": [{"password": "crm-pw-6"}]},
        "region": "TR", "lookup_timeout_ms": 250}}))
    settings = load_settings(config)
    shown = str(settings.as_dict()) + repr(settings)
    for secret in ("crm-pw-3", "crm-cred-4", "crm-phrase-5", "crm-pw-6"):
        assert secret not in shown, shown
    assert "crm.bank.internal" in shown and "'TR'" in shown and "250" in shown
    assert settings.mapper_options["crm"]["credentials"] == "crm-cred-4"  # the plug-in still gets them
