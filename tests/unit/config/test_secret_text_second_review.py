"""The review of the leftovers' commit (bc7dc1b): a value said to be set written quoted or after
`was`, an HTML at sign without its `;` before an IPv4 host (its digits run on, but no log means
U+190A), and, left open as strict xfails, what the commit shows that the code before masked (a
credential of letters then `:` after Bearer or Basic) and the prose it now masks."""

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


@pytest.mark.xfail(strict=True, reason=(
    "bc7dc1b reads a word of letters then ':' after any scheme as a label (secret_headers._letters_credential: "
    "`not word.endswith(':')`), and strips the clause mark before is_prose, so the credential shows; the code "
    "before masked it (`abcdefghij:` was no prose word). The commit message says 'after Token' only; telling "
    "`Bearer abcdefghij: 401` from `Token status: ok` needs a decision on which labels exist"))
@pytest.mark.parametrize(("text", "masked"), [
    ("Bearer abcdefghij: 401 Unauthorized", "Bearer ***: 401 Unauthorized"),
    ("Basic qwertyuiop:", "Basic ***:"),
])
def test_a_credential_of_letters_then_a_colon_after_bearer_or_basic(text: str, masked: str) -> None:
    assert mask_urls_in_text(text) == masked


@pytest.mark.xfail(strict=True, reason=(
    "bc7dc1b masks the second word after a capitalized first one (`Authorization: Custom abcdefghij`, bare "
    "`Token abcdefg`) unless it is a state word, a negation, a participle or an auth word: common nouns of error "
    "prose (request, format, signature, mismatch, failure, timeout, refresh) are read as credentials; the code "
    "before left these lines whole. Telling a noun from a credential of letters needs a word list or another rule"))
@pytest.mark.parametrize("text", [
    "Authorization: Bad request", "Authorization: Wrong format", "Authorization: Signature mismatch",
    '{"Authorization": "Bad signature"}', "error: Token mismatch", "Token failure", "Token timeout; retrying",
])
def test_error_prose_after_authorization_or_token_stays(text: str) -> None:
    assert redact_text(text) == text


@pytest.mark.xfail(strict=True, reason=(
    "`password=set to hunter2` is read as a query pair (sep '=' unquoted: query_like), where _SET_TO is not "
    "tried: `set` is masked and the password after `to` shown (before bc7dc1b too)"))
def test_a_value_set_to_a_word_after_an_equals_sign() -> None:
    assert mask_urls_in_text("password=set to hunter2") == "password=set to ***"


@pytest.mark.xfail(strict=True, reason=(
    "a user info whose ':' is an HTML or full-width escape and whose '@' is percent-encoded: escaped_marks "
    "decodes the colon but sees no '@' (it is %40), percent_encoded decodes the '@' but sees no ':' (it is "
    "&#58;): neither pass reads `user:pw@host`; before bc7dc1b too (2,064 of the differential's inputs)"))
@pytest.mark.parametrize("text", ["user&#58;hunter2%40host:6379", "redis://user\uff1ahunter2%4010.0.0.1:6379"])
def test_an_escaped_colon_and_a_percent_encoded_at_sign(text: str) -> None:
    assert "hunter2" not in mask_urls_in_text(text)
