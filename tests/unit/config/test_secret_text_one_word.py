"""Review of the seventh: the prose exemptions read one word as prose, so a credential of letters
only (`letmein`, `mysecretkey`) was shown where a secret stands. The bias is the secret's: after a
secret name, one word is the secret; prose is a clause of two words and more (`header missing`),
a word from a short list of states (`password: required`), or a literal for no value (`null`)."""

from __future__ import annotations

import pytest

from consumer.config.secret_text import mask_urls_in_text
from consumer.operations.logs import redact_text


@pytest.mark.parametrize(("text", "masked"), [
    ("Authorization: mysecretkey", "Authorization: ***"), ("Authorization: letmein", "Authorization: ***"),
    ("Authorization: Xyzabcqwerty", "Authorization: ***"), ("Authorization: SECRETKEY", "Authorization: ***"),
    ("Authorization: letmein; retrying", "Authorization: ***"),
    ('{"Authorization": "supersecret"}', '{"Authorization": "***"}'),
    ('headers={"Authorization": "ABCDEFGHIJKLMNOP"}', 'headers={"Authorization": "***"}'),
    ("{'authorization': 'letmein', 'host': 'gw'}", "{'authorization': '***', 'host': 'gw'}"),
    ('{"h": "Authorization: letmein", "code": 1}', '{"h": "Authorization: ***", "code": 1}'),
    # A pair list and a list of values: one word is a credential there too.
    ("[('authorization', 'supersecret')]", "[('authorization', '***')]"),
    ('{"Authorization": ["supersecret"]}', '{"Authorization": ["***"]}'),
    ('{"Authorization": ["This field is required.", "letmein"]}',
     '{"Authorization": ["This field is required.", "***"]}'),
    ('{"Authorization": ["Required."]}', '{"Authorization": ["***"]}'),
])
def test_one_word_after_authorization_is_a_credential(text: str, masked: str) -> None:
    assert mask_urls_in_text(text) == masked
    assert redact_text(text) == masked


@pytest.mark.parametrize("text", [
    # Prose: a first clause of two words and more; a literal for no value, unquoted.
    "Authorization: header missing", "Authorization: invalid token", "Authorization: header missing; retrying",
    "proxy-authorization: not sent, retrying", '{"Authorization": "header missing", "code": 1}',
    "{'authorization': 'Not sent.'}", '{"Authorization": ["This field is required."]}',
    '{"Authorization": null}', "{'authorization': None, 'host': 'gw'}", "Authorization: null",
    "[('authorization', 'not sent')]", "{'authorization': []}",
])
def test_prose_or_no_value_after_authorization_stays(text: str) -> None:
    assert mask_urls_in_text(text) == text


@pytest.mark.parametrize(("text", "masked"), [
    # After a secret name and a colon, one word is the secret, whatever its letters.
    ("password: hunter", "password: ***"), ("secret: hunter", "secret: ***"), ("token: hunter", "token: ***"),
    ("api_key: abcdefghij", "api_key: ***"), ("PWD: Letmein", "PWD: ***"),
    ("password: hunter, user: bob", "password: ***, user: bob"), ("{password: hunter}", "{password: ***}"),
    ("password: LetMeIn was rejected", "password: *** was rejected"),  # both cases: no prose word
    ("password: abcdefghijklmnopqrstuvwxyz is wrong", "password: *** is wrong"),  # longer than a word
    ("şifre ok, password: geçersiz", "şifre ok, password: ***"),
    # A session value: one word is its id, but for a word of state (`expired`).
    ('{"session": "abcdefghijklmnopqrstuvwxyz"}', '{"session": "***"}'),
    ('{"sid": "ABCDEFGHIJKLMNOPQRSTUV"}', '{"sid": "***"}'), ("{'session': 'qwhdkslapzmx'}", "{'session': '***'}"),
    ("session: abcdefghijklmnopqrstuvwxyz", "session: ***"),
])
def test_one_word_after_a_secret_name_is_the_secret(text: str, masked: str) -> None:
    assert mask_urls_in_text(text) == masked
    assert redact_text(text) == masked


@pytest.mark.parametrize("text", [
    # A word of state, in any case, maybe closing its clause; prose of two words and more.
    "password: required", "password: missing", "Password: Required.", "token: expired", "secret: none",
    "password: null}", "REPLAY_SIGNING_KEY: shorter than 16", "Invalid value for 'token': must be a string",
    "password: too short", "şifre: geçersiz değer", '{"session": "expired"}', "session: expired",
    '{"sid": null}',
])
def test_a_word_of_state_or_prose_after_a_secret_name_stays(text: str) -> None:
    assert mask_urls_in_text(text) == text


@pytest.mark.parametrize(("text", "masked"), [
    # A run of letters longer than any word is no prose word, after a scheme or AUTH either.
    ("sent Bearer abcdefghijklmnopqrstuvwxyz to gw", "sent Bearer *** to gw"),
    ("Token ABCDEFGHIJKLMNOPQRSTUVWX", "Token ***"),
    ("sent AUTH abcdefghijklmnopqrstuvwxyz to redis", "sent AUTH *** to redis"),
])
def test_a_run_of_letters_longer_than_a_word_is_a_credential(text: str, masked: str) -> None:
    assert mask_urls_in_text(text) == masked


@pytest.mark.parametrize(("text", "masked"), [
    # A pair list (ASGI's raw headers, werkzeug's Headers) holds any header: an API key as well.
    ("[(b'x-api-key', b'Sx-1abc'), (b'host', b'gw')]", "[(b'x-api-key', b'***'), (b'host', b'gw')]"),
    ("[('password', 'Sx-1')]", "[('password', '***')]"), ('[["X-Auth-Token", "Sx-1"]]', '[["X-Auth-Token", "***"]]'),
    # ...and a tuple of pairs, a set of them.
    ("(('authorization', 'Sx-1'),)", "(('authorization', '***'),)"),
    ("{('x-api-key', 'Sx-1')}", "{('x-api-key', '***')}"),
    # A list of values holding a literal or a number before the credential.
    ('{"authorization": [null, "Sx-1"]}', '{"authorization": [null, "***"]}'),
    ('{"Authorization": ["x y", 5, "Sx-1"]}', '{"Authorization": ["x y", 5, "***"]}'),
    # A list of values under any secret name (Go's http.Header as JSON); after a scheme, a credential.
    ('{"X-Api-Key": ["Sx-1"]}', '{"X-Api-Key": ["***"]}'),
    ('{"Authorization": ["Basic letmein"]}', '{"Authorization": ["Basic ***"]}'),
])
def test_a_secret_in_a_pair_list_or_a_list_of_values_is_masked(text: str, masked: str) -> None:
    assert mask_urls_in_text(text) == masked


@pytest.mark.parametrize("text", ["missing headers: ['x-api-key', 'password']", "('password', 'token')",
                                  "[('host', 'gw'), ('accept', '*/*')]", "{'authorization': [null]}",
                                  # An error list or a pair of a name and its state.
                                  '{"password": ["Ensure this field has at least 8 characters."]}',
                                  '{"password": ["required"]}', "errors: [('password', 'required')]"])
def test_a_list_of_names_or_of_errors_stays(text: str) -> None:
    assert mask_urls_in_text(text) == text


@pytest.mark.parametrize(("text", "masked"), [
    # A line continued by a backslash is the same command; a quoted `;` or `|` ends none.
    ("redis-cli -h gw \\\n  -a Sx-1 ping", "redis-cli -h gw \\\n  -a *** ping"),
    ("redis-cli -h gw \\\r\n  -a Sx-1 ping", "redis-cli -h gw \\\r\n  -a *** ping"),
    ("redis-cli -h 'a;b' -a Sx-1", "redis-cli -h 'a;b' -a ***"),
    ('redis-cli --user "u|v" -a Sx-1 ping', 'redis-cli --user "u|v" -a *** ping'),
    ("redis-cli ping; ls -a /tmp 'x'", None),
    ("redis-cli -a Sx-1 ping | grep -a 'PONG'", "redis-cli -a *** ping | grep -a 'PONG'"),
])
def test_redis_cli_a_is_read_through_a_continued_line_and_quoted_separators(text: str, masked: str | None) -> None:
    assert mask_urls_in_text(text) == (text if masked is None else masked)
