"""The gaps the second review left: a credential of letters after a scheme shown when more words
followed it (`Bearer abcdefghij rejected`), when it ended like a participle (`Bearer
qwertyuiopasdfed`), when the scheme before it was an error adjective (`Authorization: Wrong
qwertyuiop`) or a full stop followed it (`Authorization: Custom abcdefghij.`); the `(` that
`Token (mismatch)` lost; a percent-encoded `:` that escaped the IPv6 host after it. Each failed on
the code before; the error prose near each still stays."""

from __future__ import annotations

import pytest

from consumer.config.secret_text import mask_urls_in_text
from consumer.operations.logs import redact_text


@pytest.mark.parametrize(("text", "masked"), [
    # A credential of letters, then words that say something of it.
    ("Bearer abcdefghij rejected", "Bearer *** rejected"),
    ("Bearer abcdefghij was refused by gw", "Bearer *** was refused by gw"),
    ("Basic qwertyuiop is not valid", "Basic *** is not valid"),
    ("Token abcdefghij rejected", "Token *** rejected"),
    ("Authorization: Custom abcdefghij was refused", "Authorization: Custom ***"),
    ('{"Authorization": "Custom abcdefghij was refused", "code": 1}', '{"Authorization": "Custom ***", "code": 1}'),
    # ...after Bearer, a scheme only (no noun of prose), whatever words follow.
    ("Bearer abcdefghij for user bob", "Bearer *** for user bob"),
])
def test_a_credential_of_letters_then_more_words(text: str, masked: str) -> None:
    assert mask_urls_in_text(text) == masked
    assert redact_text(text) == masked


@pytest.mark.parametrize(("text", "masked"), [
    # A participle says something of a noun (`Token rotated`, `Header rejected`); after Bearer,
    # Basic or a custom scheme (no nouns) a word ending so is the credential.
    ("Bearer qwertyuiopasdfed", "Bearer ***"), ("Basic qwertyuiopasding", "Basic ***"),
    ("Authorization: Custom qwertyuiopasdfed", "Authorization: Custom ***"),
    # An error adjective first is no reason for a credential after it to show.
    ("Authorization: Wrong qwertyuiop", "Authorization: Wrong ***"),
    ('{"Authorization": "Invalid qwertyuiop"}', '{"Authorization": "Invalid ***"}'),
    # A full stop after the credential is the sentence's.
    ("Authorization: Custom abcdefghij.", "Authorization: Custom ***"),
    ("Authorization: Custom abcdefghij!", "Authorization: Custom ***"),
])
def test_a_credential_of_letters_however_it_ends_or_whatever_comes_first(text: str, masked: str) -> None:
    assert mask_urls_in_text(text) == masked
    assert redact_text(text) == masked


@pytest.mark.parametrize("text", [
    "Authorization: Bad request", "Authorization: Wrong format", "Authorization: Bad request.",
    "Token mismatch", "Token refresh", "Token rotated: retrying", "Token rotated", "Token refresh failed",
    "Authorization: Header rejected", "Authorization: Header was rejected", "Authorization: Please provide credentials",
    "Bearer token was rejected", "Bearer token expired", "Token not found", "Basic auth is not enabled",
    "Token (mismatch)", "Token (refresh failed)", "Bearer (token expired)", "Authorization: Unsupported mechanism",
    "Bearer prefix missing", "Token service failed", "Token endpoint unreachable",
])
def test_error_prose_near_a_scheme_stays(text: str) -> None:
    assert redact_text(text) == text


@pytest.mark.parametrize(("text", "masked"), [
    # A bracket before the credential is the sentence's: it stays, the credential goes.
    ("Token (abcdefghij)", "Token (***)"), ("Bearer (eyJhbGciOi.x-1)", "Bearer (***)"),
    ("Token [Sx-1abcdef]", "Token [***]"),
    # ...judged as a token is (no participle guessed, a lower-case scheme too): only a word of the
    # prose lists stays in brackets (the differential against main showed these once).
    ("Token (sunflowered)", "Token (***)"), ("bearer (abcdefg)", "bearer (***)"), ("Token (rotated)", "Token (***)"),
])
def test_a_bracket_before_a_credential_stays(text: str, masked: str) -> None:
    assert redact_text(text) == masked


@pytest.mark.parametrize(("text", "masked"), [
    # A Django choice whose label spells its name is a label; any other value is the secret.
    ("[('password', 'Password')]", None), ("[('api_key', 'API key'), ('password', 'Password')]", None),
    ("[('password', 'hunter2')]", "[('password', '***')]"), ("[('password', 'Hunter')]", "[('password', '***')]"),
])
def test_a_choice_of_two_words_is_a_label(text: str, masked: str | None) -> None:
    assert redact_text(text) == (text if masked is None else masked)


@pytest.mark.parametrize(("text", "masked"), [
    # What the mask did not change is written back as it was written: the host keeps its `:`.
    ("default%3Ahunter2@[::1]:6379", "default%3A***@[::1]:6379"),
    ("to default%3Ahunter2%40[::1]:6379 now", "to default%3A***%40[::1]:6379 now"),
    ("user:hunter2%40host:6379", "user:***%40host:6379"),
    ("%C3%A7ay%3Ahunter2@[::1]:6379", "%C3%A7ay%3A***@[::1]:6379"),  # an escape of two bytes: one character
])
def test_a_percent_encoded_colon_before_an_ipv6_host(text: str, masked: str) -> None:
    assert mask_urls_in_text(text) == masked
