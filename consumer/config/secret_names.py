"""Which names hold a secret, and where a quoted value ends: shared by the masking of texts from
elsewhere (secret_text, secret_headers, secret_commands) and of our own settings (secrets, settings).
"""

from __future__ import annotations

import re

MASK = "***"
# Query parameter and librdkafka property names whose values are secret (`name=value`, where a
# wide net has always been cast: `monkey=see` is masked too). `signature` is a signed URL's
# (`X-Amz-Signature`, `X-Goog-Signature`, CloudFront's `Signature`): whoever holds the URL holds the
# object until it expires.
# A session id is a credential too (whoever holds it is logged in): `JSESSIONID`, `PHPSESSID`,
# `ASP.NET_SessionId` hold these.
SECRET_NAME_HINTS = ("password", "passwd", "pwd", "passphrase", "secret", "token", "key", "auth", "credential",
                     "signature", "sessionid", "sessid")
# Names too short or too common to be looked for inside others (`design`, `signal`; `side`,
# `session.timeout.ms`): an Azure SAS signature, session ids (`connect.sid`: Express's cookie).
# Not `code` (an OAuth code lives minutes, and `code=13028` is Pisano's error code, a diagnostic).
_SESSION_NAMES = frozenset({"sid", "session", "session_id", "session-id", "connect.sid"})
_SESSION_HINTS = ("sessionid", "sessid")
_SECRET_NAMES = frozenset({"sig"}) | _SESSION_NAMES
# `name: value` and `"name": value` are everywhere in prose and JSON (`"keyword"`, `"author"`,
# `Error: ...`): there only names whose last word is one of these, however written (`api_key`,
# `X-Api-Key`, `accessToken`, `sasl.password`, `PWD`).
_SECRET_LAST_WORDS = frozenset({"password", "passwd", "pwd", "passphrase", "secret", "token", "apikey",
                                "authorization", "credential", "credentials"})
_KEY_QUALIFIERS = frozenset({"api", "secret", "private", "signing"})  # `api_key`, `aws_secret_access_key`
_WORD_BREAK = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|[^A-Za-z0-9]+")
# Where a credential may follow a word without a secret name before it (`Bearer`, `AUTH`), a word of
# letters in one case, maybe capitalized, is prose (`bearer token expired`, `auth failed for`): a
# password or token holds a digit or a sign, or letters of both cases (base64: `dXNlcjpwYXNz`).
# A run of letters longer than a word (19 at most: `unauthenticated` is 15) is none: a key.
_PROSE = re.compile(r"[A-Z]?[a-z]+|[A-Z]+")
_LONGEST_WORD = 19
# After a secret name and a colon, one word is the secret (`password: hunter`), but for these: a
# value's state, as a validation error or a settings dump says it (`password: required`, `token:
# expired`, `session: none`), or a literal for no value. Any case; a clause's end may follow. Kept
# small on purpose: a password may be a word, and a word outside it goes.
_STATE_WORDS = frozenset({"required", "missing", "empty", "invalid", "expired", "revoked", "unknown", "unset",
                          "set", "none", "null", "nil", "undefined", "true", "false", "redacted", "hidden",
                          "active", "closed"})
# A word of letters after a scheme (`Bearer abcdefghij`, `Authorization: Custom abcdefghij`) is its
# credential if it has 6 letters and more (as after `Token`: secret_headers) and says nothing of
# one: it is no word of state, negation (`Not provided`) or participle (`Token rotated`, `Header
# rejected`, `Token expiring`), nor the name of the thing itself (`Bearer token required`, `JWT
# Bearer Token`). A participle is a guess by its ending, and says something of a noun: where the
# word before is a scheme only (`Bearer`, `Basic`), none is guessed (`Bearer qwertyuiopasdfed` is
# the credential), and a word longer than the longest participle of auth prose (`unauthenticated`:
# 15) is none anywhere. A credential of letters ending so, 15 letters at most, after a word that
# may be a noun (`Token`, `Authorization: Access denied`) still shows.
_MIN_LETTERS_CREDENTIAL = 6
_NEGATIONS = frozenset({"not", "no"})
_PARTICIPLE_ENDINGS = ("ed", "ing")
_LONGEST_PARTICIPLE = 15
_AUTH_WORDS = frozenset({"bearer", "basic", "token", "tokens", "digest", "negotiate", "ntlm", "auth", "authorization",
                         "authentication", "header", "headers", "credential", "credentials", "scheme", "prefix"})
# After a credential of letters, the words that start saying something of it (`Bearer abcdefghij was
# refused`, `Token abcdefghij rejected`): a statement word, or one of these.
_AUXILIARIES = frozenset({"is", "was", "are", "were", "has", "had", "have", "been", "cannot", "does", "did",
                          "could", "will", "would", "should", "must"})
# Nor a noun of error or operation prose (`Token mismatch`, `Token refresh`, `Authorization: Signature
# mismatch`, `Authorization: Client certificate rejected`), nor an adjective of it (`Bearer
# malformed`). Any case. Kept short: a credential of letters that is one of these shows.
# The adjectives are not the state words (`invalid`, `missing`, `unknown` are in both meanings, and
# in _STATE_WORDS only, which is_letters_credential looks at too): a state word is trusted also
# where one word is most likely the secret (`password: invalid`, and a password may be a word), so
# that list is kept smaller; these are trusted only after a scheme, whose credential is a token.
_ERROR_ADJECTIVES = frozenset({"bad", "wrong", "malformed", "unexpected", "unsupported", "incorrect", "illegal",
                               "corrupt", "broken", "stale", "duplicate"})
_ERROR_NOUNS = frozenset({"error", "errors", "failure", "failures", "mismatch", "timeout", "refresh", "lookup",
                          "request", "response", "format", "signature", "value", "length", "encoding", "scope",
                          "syntax", "check", "validation", "verification", "rotation", "renewal", "exchange",
                          "issuer", "audience", "payload", "problem", "issue", "service", "endpoint", "provider",
                          "cache", "store", "storage", "string", "mechanism", "method", "parameter", "parameters",
                          "characters", "certificate", "account", "session", "access", "permission", "permissions",
                          "policy", "expiry", "expiration", "generation", "revocation", "introspection"})

# A quoted value, maybe Python bytes as a repr shows them (`b'pw'`: the `b` was taken for the value),
# maybe escaped once or more (`\"pw\"` in a JSON string inside one).
_QUOTE = re.compile(r"b?(?P<mark>\\{0,3}[\"'])")
# A quoted value ends at the same quote not escaped once more; `\"` inside `"..."` does not end it.
_CLOSING = {"\\" * n + c: re.compile(r"(?<!\\)" + re.escape("\\" * n + c)) for n in range(4) for c in "\"'"}


def is_secret_name(name: str) -> bool:
    lowered = name.lower()
    # (is_session_name's sets are in these: only its last words are looked at again.)
    return (lowered in _SECRET_NAMES or any(hint in lowered for hint in SECRET_NAME_HINTS)
            or ("session" in lowered and _ends_in_session(_words(name))))


def is_session_name(name: str) -> bool:
    """Whether `name=value` holds a session id: a cookie's value (no `;`, `,`, quote or blank in it).
    A framework names its cookie for itself then the word (`laravel_session`, `ci_session`,
    `connect_session_id`, `appSession`): a name whose last word is `session`, or whose last two are
    `session id`. Not a word ending in it (`obsession`) nor a setting of one (`session.timeout.ms`)."""
    lowered = name.lower()
    if lowered in _SESSION_NAMES or any(hint in lowered for hint in _SESSION_HINTS):
        return True
    # Split into words only a name holding the word (most names are looked at on every log line).
    return "session" in lowered and _ends_in_session(_words(name))


def _ends_in_session(words: list[str]) -> bool:
    return words[-1:] == ["session"] or words[-2:] == ["session", "id"]


def _words(name: str) -> list[str]:
    return [word.lower() for word in _WORD_BREAK.split(name) if word]


def is_secret_key(name: str) -> bool:
    """Whether `name` in `name: value` or `"name": value` holds a secret (see _SECRET_LAST_WORDS), or
    a session id (is_session_name)."""
    words = _words(name)
    if not words:
        return False
    return (words[-1] in _SECRET_LAST_WORDS or (words[-1] == "key" and not _KEY_QUALIFIERS.isdisjoint(words))
            or _ends_in_session(words) or is_session_name(name))


def is_prose(text: str, start: int = 0, end: int | None = None) -> bool:
    end = len(text) if end is None else end
    return end - start <= _LONGEST_WORD and _PROSE.fullmatch(text, start, end) is not None


def is_prose_word(word: str) -> bool:
    """As is_prose, of letters in any script (an error in Turkish: `geçersiz`)."""
    return (len(word) <= _LONGEST_WORD and word.isalpha()
            and (word.islower() or word.isupper() or (word[0].isupper() and word[1:].islower())))


def is_state_word(word: str) -> bool:
    return word.rstrip(".!").lower() in _STATE_WORDS


def is_statement_word(word: str, participles: bool = True) -> bool:
    """Whether a word says something of a credential rather than being one: a word of state, a
    negation, a participle if `participles` (see _AUTH_WORDS' comment)."""
    lowered = word.lower()
    return (is_state_word(word) or lowered in _NEGATIONS
            or (participles and lowered.endswith(_PARTICIPLE_ENDINGS) and len(word) <= _LONGEST_PARTICIPLE))


def is_predicate_word(word: str) -> bool:
    """Whether a word after a credential of letters starts saying something of it (see _AUXILIARIES)."""
    return is_statement_word(word) or word.lower() in _AUXILIARIES


def is_letters_credential(word: str, participles: bool = True) -> bool:
    """Whether a word of letters only (a prose word, as is_prose reads it) after a scheme is its
    credential; `participles`: whether the word before it may be a noun (see _AUTH_WORDS' comment)."""
    return (len(word) >= _MIN_LETTERS_CREDENTIAL and is_prose(word) and not is_statement_word(word, participles)
            and not is_listed_prose_word(word))


def is_listed_prose_word(word: str) -> bool:
    """Whether a word is one of the lists above: of state, negation, auth, error or operation prose."""
    lowered = word.lower()
    return (is_state_word(word) or lowered in _NEGATIONS or lowered in _AUTH_WORDS or lowered in _ERROR_NOUNS
            or lowered in _ERROR_ADJECTIVES)


def is_label_of(name: str, value: str) -> bool:
    """Whether `value` spells `name` again, in any case and separators (`('api_key', 'API key')`: a
    choice's label, as Django's `choices` pairs a value and its label)."""
    return _words(name) == _words(value)


def quoted_span(text: str, start: int) -> tuple[int, int, int] | None:
    """Where the inside of a value quoted at `start` starts and ends, and where what follows its
    closing quote starts (None: not quoted there). One not closed runs to the end of the text: the
    text was cut short, and the rest may be the secret."""
    quote = _QUOTE.match(text, start)
    if quote is None:
        return None
    closing = _CLOSING[quote.group("mark")].search(text, quote.end())
    if closing is None:
        return quote.end(), len(text), len(text)
    return quote.end(), closing.start(), closing.end()
