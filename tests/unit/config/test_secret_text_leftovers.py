"""The leftovers of the review of the eighth: credentials of letters only after a scheme (a header's
custom scheme, a bare Bearer or Token), an HTML entity at sign without its `;` or escaped twice, a
percent-encoded user info written back encoded where it was not, `password: set to <word>`, and a
Django choice whose label is its name. Each failed on the code before; each is closed in the
mechanism that reads its form, with the prose near it that must stay."""

from __future__ import annotations

import pytest

from consumer.config.secret_text import mask_urls_in_text
from consumer.operations.logs import redact_text


@pytest.mark.parametrize(("text", "masked"), [
    # After Authorization, two words: a scheme as one is written (capitalized) and its credential.
    ("Authorization: Custom abcdefghij", "Authorization: Custom ***"),
    ("Proxy-Authorization: Custom abcdefghij", "Proxy-Authorization: Custom ***"),
    ("authorization: HOBA abcdefghij\r\nHost: gw", "authorization: HOBA ***\r\nHost: gw"),
    ('{"Authorization": "Custom abcdefghij", "code": 1}', '{"Authorization": "Custom ***", "code": 1}'),
    ("[('proxy-authorization', 'Custom abcdefghij')]", "[('proxy-authorization', 'Custom ***')]"),
    ('{"Authorization": ["Custom abcdefghij"]}', '{"Authorization": ["Custom ***"]}'),
    # ...but prose stays: a word of state, a negation, a participle, a short word, a first word in lower case.
    ("Authorization: header missing", None), ("Authorization: invalid token", None),
    ("Authorization: Not provided", None), ("Authorization: Header rejected", None),
    ("Authorization: Invalid scheme", None),
    ("Authorization: wrong format", None), ("{'authorization': 'Not sent.'}", None),
    ('{"Authorization": "Header missing"}', None), ("[('authorization', 'No header')]", None),
])
def test_a_custom_scheme_and_a_credential_of_letters_after_authorization(text: str, masked: str | None) -> None:
    assert mask_urls_in_text(text) == (text if masked is None else masked)
    assert redact_text(text) == (text if masked is None else masked)


@pytest.mark.parametrize(("text", "masked"), [
    # After Bearer, Token or Basic written as a scheme, a word of letters is the credential.
    ("Token abcdefg", "Token ***"), ("Bearer abcdefghij", "Bearer ***"), ("Basic abcdefghij", "Basic ***"),
    ("retry with Bearer abcdefghij; code=1", "retry with Bearer ***; code=1"),
    ("(Token abcdefghij)", "(Token ***)"), ("BEARER abcdefghij", "BEARER ***"),
    ("{'auth': 'Bearer abcdefghij'}", "{'auth': 'Bearer ***'}"),
    # ...but a word of state, a participle, a scheme word, a short word, or the first of more prose stays,
    # and so does the noun in lower case.
    ("Bearer token required", None), ('Bearer realm="api"', None), ("Token expired", None),
    ("Token rotated", None), ("Token refreshed.", None), ("JWT Bearer Token", None), ("Bearer Tokens", None),
    ("Token refresh failed", None), ("Token not found", None), ("Basic auth is not enabled", None),
    ("the new token answers; retrying", None), ("bearer abcdefghij", None), ("Token revoked", None),
    ("Token rotated: the new token answers", None), ("token rotated: retrying", None),
])
def test_a_credential_of_letters_after_a_bare_scheme(text: str, masked: str | None) -> None:
    assert mask_urls_in_text(text) == (text if masked is None else masked)


@pytest.mark.parametrize(("text", "masked"), [
    # An HTML numeric entity without its `;` (HTML reads it so), or escaped twice (`&amp;#64;`).
    ("user:Sx-1&#64host", "user:***&#64host"), ("redis://user:Sx-1&#64host:6379", "redis://***&#64host:6379"),
    ("user:Sx-1&#x40host", "user:***&#x40host"), ("user&#58Sx-1&#64host", "user&#58***&#64host"),
    ("user:Sx-1&amp;#64;host", "user:***&amp;#64;host"), ("user:Sx-1&amp;amp;#64;host", "user:***&amp;amp;#64;host"),
    ("https://user&amp;#58;Sx-1&amp;#64;host/x", "https://***&amp;#64;host/x"),
    # ...but an entity running into more digits is another character, and prose stays.
    ("user:Sx-1&#640host", None), ("mail bob&#64bank.test", None), ("Tom &amp; Jerry: a&amp;#64;b", None),
])
def test_an_html_entity_at_sign_without_its_semicolon_or_escaped_twice(text: str, masked: str | None) -> None:
    assert mask_urls_in_text(text) == (text if masked is None else masked)


@pytest.mark.parametrize(("text", "masked"), [
    # A run with a `%XX` escape is written back with only what was escaped escaped again.
    ("user:Sx-1%40host", "user:***%40host"), ("to user:Sx-1%40host:6379 now", "to user:***%40host:6379 now"),
    ("https://user:Sx-1%40host/x", "https://***%40host/x"),
    ("u=https%3A%2F%2Fuser%3ASx-1%40host%2Fx", "u=https%3A%2F%2F***%40host%2Fx"),
])
def test_a_percent_encoded_user_info_is_written_back_as_it_was(text: str, masked: str | None) -> None:
    assert mask_urls_in_text(text) == (text if masked is None else masked)


@pytest.mark.parametrize(("text", "masked"), [
    # `set to`, `changed to`, `reset to` after a secret name and a colon: the word after it is the value.
    ("password: set to hunter", "password: set to ***"), ("token: changed to abcdefg.", "token: changed to ***"),
    ("password: reset to hunter2, user: bob", "password: reset to ***, user: bob"),
    # ...under the same rules as the value itself: a word of state or the first of prose stays.
    ("password: set to null", None), ("token: set to expire in 3 days", None), ("password: set", None),
    ("password: set by the operator", None),
])
def test_a_value_set_to_a_word_after_a_secret_name(text: str, masked: str | None) -> None:
    assert mask_urls_in_text(text) == (text if masked is None else masked)


@pytest.mark.parametrize(("text", "masked"), [
    # A Django choice, or any pair in a list whose value spells its name again, is a label.
    ("choices=[('token', 'Token')]", None), ("choices=[('password', 'Password'), ('api_key', 'API key')]", None),
    ('[("token", "TOKEN")]', None),
    # ...any other value is the secret, as before.
    ("[('token', 'Sx-1')]", "[('token', '***')]"), ("[('password', 'password1')]", "[('password', '***')]"),
])
def test_a_choice_whose_label_is_its_name_stays(text: str, masked: str | None) -> None:
    assert mask_urls_in_text(text) == (text if masked is None else masked)
