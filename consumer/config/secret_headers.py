"""HTTP credentials in a text someone else wrote that are not a `name: value` under a secret name
(secret_text): the cookies of a `Cookie` or `Set-Cookie` header (a session is a credential), and a
`Bearer`, `Basic`, `Token`, `Negotiate`, `NTLM` or `Digest` credential with no header name before
it (`sent Bearer eyJ... to gw`). The
cookie names, a Set-Cookie's attributes and the scheme stay: they are the diagnostics.
Linear, as secret_text: each header or scheme is tried once, and its value read once.
"""

from __future__ import annotations

import re
from itertools import chain

from consumer.config.secret_names import (
    MASK,
    is_letters_credential,
    is_listed_prose_word,
    is_predicate_word,
    is_prose,
    quoted_span,
)

# The header's name, maybe quoted as in JSON or a dict's repr (`{'Cookie': 'a=b'}`), then `:`; or
# quoted, then `, ` and a quote, as in a list of pairs (httpx's Headers repr once a name repeats,
# as two Set-Cookie do: `[('set-cookie', 'a=b'), ...]`; h11's and ASGI's raw headers).
_COOKIE_HEADER = re.compile(r"(?P<quote>\\{0,3}[\"'])?(?<![\w.-])(?P<set>(?i:set-))?(?i:cookie)"
                            r"(?(quote)(?P=quote))(?:[ \t]*+:[ \t]*+|(?<=[\"'])[ \t]*+,[ \t]*+(?=b?[\"']))")
_LINE_END = re.compile(r"[\r\n]|\\[rn]")  # also as a JSON string or a repr escapes it: `\r\n`
_LEADING = re.compile(r"[ \t;]*+")  # before the first cookie (`Cookie: ; sid=...`: a proxy took one out)
# A cookie: a name at the start of a piece (after `;`, `,` or a blank: `, ` folds two Set-Cookie
# headers into one line), `=`, and a value of cookie octets (RFC 6265: no blank, `"`, `,`, `;` or
# `\`), maybe quoted. The first may also follow the header's colon with no blank, as `curl -H
# 'Cookie:sid=...'` writes it: tried there once (`_FIRST_COOKIE`), not after every colon (a name
# runs to the next separator, so a try at each of many colons would be quadratic). A value may hold
# `\/`, a slash as a JSON string may escape it (PHP's json_encode: base64's `/`); a closing quote
# is its own only if it opened with one (`{"h":"Cookie: a=b"}` keeps the JSON's).
_COOKIE_OCTETS = r"(?:[^\s;,\"\\]|\\/)*+"
_FIRST_COOKIE = re.compile(r"(?P<name>[^\s;,=\"'\\]++)=(?P<value>\"" + _COOKIE_OCTETS + r"\"?|" + _COOKIE_OCTETS + ")")
_COOKIE = re.compile(r"(?<![^\s;,\"'])" + _FIRST_COOKIE.pattern)
_NAME_RUN = re.compile(r"[^\s;,=\"'\\]*+")  # where a first cookie's name would end
# After the first pair of a Set-Cookie, these say how to keep it, not what it is.
_ATTRIBUTES = frozenset({"expires", "max-age", "domain", "path", "samesite", "priority"})

_SCHEME = re.compile(r"(?<![\w.-])(?P<scheme>(?i:bearer|basic|token|negotiate|ntlm|digest))[ \t]++")
# `Bearer <admin token>` in a usage text is no credential; `\/` is a JSON-escaped slash of base64.
_CREDENTIAL = re.compile(r"(?:[^\s<>\"'\\]|\\/)++")
# `WWW-Authenticate: Bearer realm="api", error=invalid_token`: auth parameters, not a credential
# (base64 holds `=` only at its end, and a quote opening a value does not follow it).
_PARAMETER = re.compile(r"[A-Za-z_-]++=[\"']")
# `token`, `negotiate`, `NTLM` are also words of prose (`retried token 3 times`, `Token v2 format`,
# `NTLM v2`, `Token x509`). After them, a word is a credential if it is long (8 characters and
# more: a token, or an NTLM message, 40 bytes and more in base64), or of 6 or 7 with a letter and a
# digit (a short API token: `Token abc123`); a word of letters (prose was taken out before) or of
# digits (a count, a version: `negotiate 1.1`), or one shorter, stays.
_PROSE_SCHEMES = frozenset({"token", "negotiate", "ntlm"})
_MIN_CREDENTIAL = 8
_MIN_SHORT_CREDENTIAL = 6
_LETTER_AND_DIGIT = re.compile(r"(?=[^0-9]*+[0-9])[^A-Za-z]*+[A-Za-z]")
# `Bearer`, `Basic`, `Token` written as a scheme is (capitalized: in prose they are nouns, `bearer
# token expired`) take a credential of letters too (`Token abcdefg`), unless that word says nothing
# of one (secret_names.is_letters_credential). More words may follow it: after `Bearer`, a scheme
# only, any (`Bearer abcdefghij for bob`); after `Basic` and `Token`, words of prose too (`Token
# service unavailable`), only words saying something of it (secret_names.is_predicate_word: `Token
# abcdefghij rejected`, `Basic abcdefghij was refused`). After `Token`, a noun, a participle may be
# what is said of it (`Token rotated`); after `Bearer` and `Basic` none is guessed.
# After `Token`, a word of letters then a colon is a label (`Token status: ok`): `token` is a noun
# of prose too. `Bearer` and `Basic` are schemes only, and the colon is the sentence's (`Bearer
# abcdefghij: 401 Unauthorized`).
_LETTERS_SCHEMES = frozenset({"bearer", "basic", "token"})
_NOUN_SCHEMES = frozenset({"token"})
_LABEL_SCHEMES = frozenset({"token"})
_ANY_WORDS_AFTER = frozenset({"bearer"})
_CLAUSE_MARKS = ".:!?"
_NEXT_WORD = re.compile(r"[ \t]++(?P<word>[^\W\d_]++)")
# A bracket before a credential is the sentence's (`Token (abc123)`), as one after it. A word in
# brackets is prose only if it is one of secret_names' lists (`Token (mismatch)`, `Bearer (token
# expired)`); any other is judged as a token is, its bracket counted (`Token (sunflowered)`,
# `bearer (abcdefg)`: in brackets no participle is guessed, nor a lower-case scheme read as prose).
_OPENING = "([{"
# What a Digest credential holds: `response=` and its hash, quoted (RFC 7616) or as hex digits (32
# and more: MD5, SHA-256); `response=401` is a status in prose (`Digest auth (response=401)`).
_RESPONSE = re.compile(r"(?<![\w.-])(?i:response)[ \t]*+=[ \t]*+(?:\\{0,3}[\"']|[0-9A-Fa-f]{32})")


def mask_cookies(text: str) -> str:
    parts: list[str] = []
    done = covered = 0  # `covered`: the headers' values looked at (a header inside one is not again)
    line_end = -1  # where the line last looked at ends: the headers on one line share it (linear)
    prose = 0  # the end of the last value that started with no cookie (see below)
    for header in _COOKIE_HEADER.finditer(text):
        if header.start() < covered or header.end() < prose:
            continue
        # The header's value: quoted, or to the end of the line, as in HTTP.
        quoted = quoted_span(text, header.end())
        if quoted is not None:
            start, end = quoted[0], quoted[1]
        else:
            if line_end < header.end():
                found = _LINE_END.search(text, header.end())
                line_end = found.start() if found is not None else len(text)
            start, end = header.end(), line_end
        # A header's value starts with a cookie (RFC 6265: `name=value`, then `; ` and more); one
        # that does not is prose (`invalid cookie: rejected, code=13028`): no cookies in it, and a
        # header after it on the line is looked at, unless it lies in the same run of name
        # characters, which ends without `=` for it too (`Cookie:Cookie:...`, read once).
        leading = _LEADING.match(text, start, end)
        value = leading.end() if leading is not None else start
        first = _FIRST_COOKIE.match(text, value, end)
        if first is None:
            run = _NAME_RUN.match(text, value, end)
            prose = run.end() if run is not None else value
            continue
        covered = end
        for index, cookie in enumerate(chain([first], _COOKIE.finditer(text, first.end(), end))):
            attribute = header.group("set") and index > 0 and cookie.group("name").lower() in _ATTRIBUTES
            if cookie.group("value") and not attribute:
                parts += (text[done:cookie.start("value")], MASK)
                done = cookie.end("value")
    return "".join(parts) + text[done:] if parts else text


def mask_bare_credentials(text: str) -> str:
    parts: list[str] = []
    done = 0
    digest = _DigestLines(text)
    for scheme in _SCHEME.finditer(text):
        if scheme.group("scheme").lower() == "digest":
            end = digest.credential_end(scheme.end())
            if scheme.start() >= done and end is not None:
                parts += (text[done:scheme.end()], MASK)
                done = end
            continue
        credential = _CREDENTIAL.match(text, scheme.end())
        if scheme.start() < done or credential is None:
            continue
        start = scheme.end() + len(credential.group()) - len(credential.group().lstrip(_OPENING))
        word = text[start:credential.end()].rstrip(",;)]}")  # `(Bearer pw)`
        letters = word.rstrip(_CLAUSE_MARKS)
        opened = start > scheme.end()
        if opened and letters and is_prose(letters) and is_listed_prose_word(letters):
            continue
        if not opened and letters and is_prose(letters):
            if _letters_credential(text, scheme, start, word, letters):
                parts += (text[done:start], MASK)
                done = start + len(letters)
            continue
        if not word or "=" in word.rstrip("=") or _PARAMETER.match(text, scheme.end()):
            continue
        if (scheme.group("scheme").lower() in _PROSE_SCHEMES
                and not _credential_after_prose_scheme(text[scheme.end():start] + word)):
            continue
        parts += (text[done:start], MASK)
        done = start + len(word)
    return "".join(parts) + text[done:] if parts else text


def _letters_credential(text: str, scheme: re.Match[str], start: int, word: str, letters: str) -> bool:
    name = scheme.group("scheme")
    lowered = name.lower()
    if not (name[0].isupper() and lowered in _LETTERS_SCHEMES and not (word.endswith(":") and lowered in _LABEL_SCHEMES)
            and is_letters_credential(letters, participles=lowered in _NOUN_SCHEMES)):
        return False
    if word != letters or lowered in _ANY_WORDS_AFTER:
        return True
    following = _NEXT_WORD.match(text, start + len(word))
    return following is None or is_predicate_word(following.group("word"))


def _credential_after_prose_scheme(word: str) -> bool:
    return len(word) >= _MIN_CREDENTIAL or (
        len(word) >= _MIN_SHORT_CREDENTIAL and _LETTER_AND_DIGIT.match(word) is not None)


class _DigestLines:
    """A Digest credential is parameters (`username="bob", ..., response="..."`), not one word: all
    of them to the end of the line go. A challenge (`WWW-Authenticate: Digest realm="api",
    nonce=...`) has no `response=`, and stays. Linear: the line's end and the next `response=` are
    searched for once and reused by every `Digest` before them."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.line_end = self.response = -1

    def credential_end(self, start: int) -> int | None:
        if self.line_end < start:
            found = _LINE_END.search(self.text, start)
            self.line_end = found.start() if found is not None else len(self.text)
        if self.response < start:
            found = _RESPONSE.search(self.text, start)
            self.response = found.start() if found is not None else len(self.text)
        return self.line_end if self.response < self.line_end else None
