"""The review of the leftovers' commit (bc7dc1b): a value said to be set written quoted or after
`was`, an HTML at sign without its `;` before an IPv4 host (its digits run on, but no log means
U+190A); what the commit showed that the code before masked (a credential of letters then `:` after
Bearer or Basic) and the error prose it masked (`Authorization: Bad request`, `Token mismatch`);
`password=set to pw`, and a user info escaped two ways at once (`user&#58;pw%40host`)."""

from __future__ import annotations

import pytest

from consumer.config.secret_text import mask_urls_in_text
from consumer.operations.logs import redact_text


@pytest.mark.parametrize(("text", "masked"), [
    ("password: set to 'hunter2'", "password: set to '***'"),
    ('token: changed to "Sx-1pw".', 'token: changed to "***".'),
    ("{'detail': 'password: reset to \"hunter2\"'}", "{'detail': 'password: reset to \"***\"'}"),
    ("password: was set to hunter2", "password: was set to ***"),
    ("token: has been changed to Sx-1pw, retrying", "token: has been changed to ***, retrying"),
    # ...a word of state or prose, quoted or after `was`, stays.
    ("password: set to 'required'", None), ("password: was set to the default", None),
    ("password: was set by the operator", None),
])
def test_a_value_set_to_a_quoted_word_or_after_was(text: str, masked: str | None) -> None:
    assert mask_urls_in_text(text) == (text if masked is None else masked)
    assert redact_text(text) == (text if masked is None else masked)


@pytest.mark.parametrize(("text", "masked"), [
    ("redis://user:Sx-1&#6410.0.0.1:6379", "redis://***&#6410.0.0.1:6379"),
    ("user:Sx-1&#64192.168.1.20:6379", "user:***&#64192.168.1.20:6379"),
    ("redis://user:Sx-1&#x4010.0.0.1:6379/0", "redis://***&#x4010.0.0.1:6379/0"),
    ("user:Sx-1&amp;#6410.0.0.1", "user:***&amp;#6410.0.0.1"),
    # ...digits that make no IPv4 address are still the entity's (another character).
    ("user:Sx-1&#640host", None), ("user:Sx-1&#6410.0host", None),
])
def test_an_html_at_sign_without_its_semicolon_before_an_ipv4_host(text: str, masked: str | None) -> None:
    assert mask_urls_in_text(text) == (text if masked is None else masked)


# A word of letters then `:` is a label after `Token` only (`Token status: ok`, `Token rotated:
# retrying`); after Bearer or Basic it is the credential, its `:` the sentence's.
@pytest.mark.parametrize(("text", "masked"), [
    ("Bearer abcdefghij: 401 Unauthorized", "Bearer ***: 401 Unauthorized"),
    ("Basic qwertyuiop:", "Basic ***:"),
    ("Token status: ok", None), ("Token rotated: retrying", None), ("token rotated: the new token answers", None),
])
def test_a_credential_of_letters_then_a_colon_after_bearer_or_basic(text: str, masked: str | None) -> None:
    assert mask_urls_in_text(text) == (text if masked is None else masked)
    assert redact_text(text) == (text if masked is None else masked)


# Nouns and adjectives of error or operation prose are no credential of letters, and an adjective
# is no scheme; a scheme and a credential of other letters still go.
@pytest.mark.parametrize("text", [
    "Authorization: Bad request", "Authorization: Wrong format", "Authorization: Signature mismatch",
    '{"Authorization": "Bad signature"}', "error: Token mismatch", "Token failure", "Token timeout; retrying",
    "Token refresh", "Token lookup", "Token request", "Token Mismatch", "Bearer timeout",
    "[('authorization', 'Wrong format')]", '{"Authorization": ["Bad request"]}',
])
def test_error_prose_after_authorization_or_token_stays(text: str) -> None:
    assert redact_text(text) == text


@pytest.mark.parametrize(("text", "masked"), [
    ("Authorization: Custom abcdefghij", "Authorization: Custom ***"), ("Bearer abcdefghij", "Bearer ***"),
    ("Token abcdefg", "Token ***"), ('{"Authorization": "Custom qwertyuiop"}', '{"Authorization": "Custom ***"}'),
])
def test_a_scheme_and_a_credential_of_letters_are_still_masked(text: str, masked: str) -> None:
    assert redact_text(text) == masked


# After `=` too, `set to` says the value is the word after it (a query value holds no blank).
@pytest.mark.parametrize(("text", "masked"), [
    ("password=set to hunter2", "password=set to ***"),
    ("token=changed to Sx-1pw, retrying", "token=changed to ***, retrying"),
    ("password=set to 'hunter2'", "password=set to '***'"),
    ("password=set", "password=***"), ("password=set to null", None), ("password=set to", "password=*** to"),
])
def test_a_value_set_to_a_word_after_an_equals_sign(text: str, masked: str | None) -> None:
    assert mask_urls_in_text(text) == (text if masked is None else masked)


# A user info escaped two ways at once: an HTML or full-width `:` and a percent-encoded `@`, or the other way.
@pytest.mark.parametrize("text", [
    "user&#58;hunter2%40host:6379", "redis://user\uff1ahunter2%4010.0.0.1:6379", "user%3Ahunter2&#64;host:6379",
    "to user&#58;hunter2%40host now",
])
def test_an_escaped_colon_and_a_percent_encoded_at_sign(text: str) -> None:
    assert "hunter2" not in mask_urls_in_text(text)
    assert "hunter2" not in redact_text(text)


# percent_encoded's run stopped at '[', so a percent-encoded '@' or ':' before an IPv6 literal was
# decoded without its host (`hunter2@`: no host after the '@'): the run now takes brackets, and
# writes them back raw.
@pytest.mark.parametrize("text", ["user:hunter2%40[::1]:6379", "user%3Ahunter2@[::1]:6379",
                                  "admin\uff1ahunter2%40[::1]:6379"])
def test_a_percent_encoded_user_info_before_an_ipv6_host(text: str) -> None:
    assert "hunter2" not in mask_urls_in_text(text)
