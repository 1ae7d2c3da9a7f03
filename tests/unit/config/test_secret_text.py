"""Secrets inside free text from elsewhere (a library's exception, a proxy's or Pisano's error body)
are masked wherever they stand and however the text escapes them: JSON-escaped or percent-encoded
URLs, scheme-less `//user:pw@host`, and `key: value` pairs under a secret-bearing name. Found in
review; each case failed before the fix. What is not secret (hosts, ports, paths, ordinary words)
stays readable."""

import logging
import sys

import pytest

from consumer.config.secrets import mask_urls_in_text
from consumer.operations.logs import JsonFormatter, TextFormatter
from consumer.outcomes.deadletter import error_text

JSON_ESCAPED = [
    ('{"detail":"proxy refused https:\\/\\/user:Sx-1@gw.bank.test\\/v1"}',
     '{"detail":"proxy refused https:\\/\\/***@gw.bank.test\\/v1"}'),
    # A raw `/` in the password (`\/` once escaped): where it ends is unknown, all of it goes.
    ('"https:\\/\\/u:pa\\/Sx-1@h\\/v1"', '"https:\\/\\/***"'),
    # A JSON string inside a JSON string escapes the slash twice.
    ('"redis:\\\\\\/\\\\\\/u:Sx-1@cache:6379"', '"redis:\\\\\\/\\\\\\/***@cache:6379"'),
]

PERCENT_ENCODED = [
    ("next=https%3A%2F%2Fuser%3ASx-1%40gw.bank.test%2Fv1&lang=tr",
     "next=https%3A%2F%2F***%40gw.bank.test%2Fv1&lang=tr"),
    ("next=https%3a%2f%2fuser%3aSx-1%40gw.bank.test", "next=https%3A%2F%2F***%40gw.bank.test"),
    # Python's quote() leaves the slashes as they are.
    ("url=https%3A//user%3ASx-1%40gw.bank.test/v1", "url=https%3A%2F%2F***%40gw.bank.test%2Fv1"),
    ("u=https%3A%2F%2Fh%2Fx%3Fpassword%3DSx-1", "u=https%3A%2F%2Fh%2Fx%3Fpassword%3D***"),
    ("u=https%3A%2F%2Fu%3Apa%2FSx-1%40h", "u=https%3A%2F%2F***"),
    ("u=https%253A%252F%252Fu%253ASx-1%2540h", "u=https%253A%252F%252F***%2540h"),  # encoded twice
    # Second review: encoded by a quote() that leaves `:` or `@` raw (safe=":" or "@"), so a raw
    # `:` or `@` cut the run in two and neither half held the whole URL.
    ("u=https%3A%2F%2Fu:Sx-1%40h", "u=https%3A%2F%2F***%40h"),
    ("u=https%3A%2F%2Fu%3ASx-1@h%2Fv1", "u=https%3A%2F%2F***%40h%2Fv1"),
    ("body=%7B%22password%22%3A%22Sx-1%22%7D", "body=%7B%22password%22%3A%22***%22%7D"),
]

SCHEME_LESS = [
    ("Error connecting to //user:Sx-1@cache.bank.test:6379/0.", "Error connecting to //***@cache.bank.test:6379/0."),
    ('{"url":"\\/\\/u:Sx-1@cache:6379"}', '{"url":"\\/\\/***@cache:6379"}'),
    ("redis=//u:Sx-1@cache:6379", "redis=//***@cache:6379"),
    ("at //u:pa/Sx-1@cache:6379 now", "at //*** now"),
]

KEY_VALUE = [
    ('{"password":"Sx-1","user":"bob"}', '{"password":"***","user":"bob"}'),
    ("{'api_token': 'Sx-1', 'db': 0}", "{'api_token': '***', 'db': 0}"),
    ("password=Sx-1", "password=***"),  # masked before too: kept
    ("token=Sx-1&x=1", "token=***&x=1"),  # masked before too: kept
    ("Authorization: Bearer abc.Sx-1", "Authorization: Bearer ***"),
    ('Authorization: Token token="Sx-1"', "Authorization: Token ***"),  # Pisano's own header
    ("{'Authorization': 'Basic dXNlcjpw-Sx-1=='}", "{'Authorization': 'Basic ***'}"),
    ("authorization=Basic dXNlcjpw-Sx-1==", "authorization=Basic ***"),
    ("X-Api-Key: Sx-1\nsasl.password: Sx-2", "X-Api-Key: ***\nsasl.password: ***"),
    ('{"accessToken": "Sx-1", "client_secret": "Sx-2", "PWD": "Sx-3"}',
     '{"accessToken": "***", "client_secret": "***", "PWD": "***"}'),
    ("pwd=Sx-1 and sasl.password = Sx-2", "pwd=*** and sasl.password = ***"),
    ('{"password": "pa\\"Sx-1"}', '{"password": "***"}'),  # an escaped quote does not end the value
    ('"body":"{\\"password\\":\\"Sx-1\\",\\"x\\":1}"', '"body":"{\\"password\\":\\"***\\",\\"x\\":1}"'),
    ('{"pwd": Sx-1, "x": 1}', '{"pwd": ***, "x": 1}'),
    ('{"password": "Sx-1', '{"password": "***'),  # cut short: the rest of the text may be the secret
    # A value ends at a blank; a name it swallowed whose value lies beyond is still seen.
    ('password=a/"pwd": Sx-1', "password=*** ***"),
    ("pwd=a;authorization=Basic Sx-1", "pwd=*** ***"),
    # Second review: a Ruby hash as Rails (Pisano's own stack) inspects it; `=>` was read as `=`
    # with the value `>`, which masked nothing and showed the password.
    ('{"user"=>{"password"=>"Sx-1", "name"=>"bob"}}', '{"user"=>{"password"=>"***", "name"=>"bob"}}'),
    (':password => "Sx-1"', ':password => "***"'),
    # Second review: a Python bytes value in a repr (`b'...'`): the `b` was taken for the value.
    ("{'password': b'Sx-1', 'db': 0}", "{'password': b'***', 'db': 0}"),
    ("{'Authorization': b'Bearer Sx-1'}", "{'Authorization': b'Bearer ***'}"),
]


@pytest.mark.parametrize(("text", "masked"), JSON_ESCAPED + PERCENT_ENCODED + SCHEME_LESS + KEY_VALUE)
def test_secrets_in_text_are_masked_however_it_is_escaped(text: str, masked: str) -> None:
    assert mask_urls_in_text(text) == masked


@pytest.mark.parametrize("text", [
    "Pisano answered 400 code 13028: Invalid parameters (campaign 5d1c9a7e), retry later",
    '{"token_type": "Bearer", "expires_in": 3600, "keyword": "x", "author": "bob", "route_key": "retail"}',
    '{"errors": {"password": ["is too short"]}, "message": "Invalid token"}',  # structure, not a value
    "Error: connection refused; monkey: see; password: ; see //docs/page and a//b@c and // note @ x",
    "50% done, 100%zz, a%2Fb%2Fc, https%3A%2F%2Fgw.bank.test%2Fv1%3Flang%3Dtr",
    "Authorization header missing; bearer token expired",
    "Invalid value for 'token': must be a string; {\"password\": null, \"pwd\": true}",
    # Prose after a secret name: a word of letters only (our own config errors read like this).
    "REPLAY_SIGNING_KEY: shorter than 16 characters; wrong token: the destination's circuit opens",
])
def test_what_is_not_a_secret_stays_as_it_was(text: str) -> None:
    assert mask_urls_in_text(text) == text


ALL_CASES = JSON_ESCAPED + PERCENT_ENCODED + SCHEME_LESS + KEY_VALUE


def test_log_lines_and_dead_letter_headers_go_through_the_same_masking() -> None:
    """Both outputs of a text from elsewhere: the formatters (message and traceback) and the
    `dlq.error.message` / `pisano.error.message` header text."""
    for text, _ in ALL_CASES:
        try:
            raise RuntimeError(text)
        except RuntimeError:
            record = logging.LogRecord("t", logging.ERROR, "", 0, "failed: %s", (text,), sys.exc_info())
        shown = [JsonFormatter().format(record), TextFormatter().format(record), error_text(text)]
        for output in shown:
            assert "Sx-" not in output, output
