"""HTTP credentials in a text someone else wrote that are not a `name: value` under a secret name
(secret_text): the cookies of a `Cookie` or `Set-Cookie` header (a session is a credential), and a
`Bearer` or `Basic` credential with no header name before it (`sent Bearer eyJ... to gw`). The
cookie names, a Set-Cookie's attributes and the scheme stay: they are the diagnostics.
Linear, as secret_text: each header or scheme is tried once, and its value read once.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from consumer.config.secret_names import MASK, is_prose, quoted_span

# The header's name, maybe quoted as in JSON or a dict's repr (`{'Cookie': 'a=b'}`), then `:`; or
# quoted, then `, ` and a quote, as in a list of pairs (httpx's Headers repr once a name repeats,
# as two Set-Cookie do: `[('set-cookie', 'a=b'), ...]`; h11's and ASGI's raw headers).
_COOKIE_HEADER = re.compile(r"(?P<quote>\\{0,3}[\"'])?(?<![\w.-])(?P<set>(?i:set-))?(?i:cookie)"
                            r"(?(quote)(?P=quote))(?:[ \t]*+:[ \t]*+|(?<=[\"'])[ \t]*+,[ \t]*+(?=b?[\"']))")
_LINE_END = re.compile(r"[\r\n]")
# A cookie: a name at the start of a piece (after `;`, `,` or a blank: `, ` folds two Set-Cookie
# headers into one line), `=`, and a value of cookie octets (RFC 6265: no blank, `"`, `,`, `;` or
# `\`), maybe quoted. The first may also follow the header's colon with no blank, as `curl -H
# 'Cookie:sid=...'` writes it: tried there once (`_FIRST_COOKIE`), not after every colon (a name
# runs to the next separator, so a try at each of many colons would be quadratic).
_FIRST_COOKIE = re.compile(r"(?P<name>[^\s;,=\"'\\]++)=(?P<value>\"?[^\s;,\"\\]*+\"?)")
_COOKIE = re.compile(r"(?<![^\s;,\"'])" + _FIRST_COOKIE.pattern)
# After the first pair of a Set-Cookie, these say how to keep it, not what it is.
_ATTRIBUTES = frozenset({"expires", "max-age", "domain", "path", "samesite", "priority"})

_SCHEME = re.compile(r"(?<![\w.-])(?i:bearer|basic)[ \t]++")
_CREDENTIAL = re.compile(r"[^\s<>\"'\\]++")  # `Bearer <admin token>` in a usage text is no credential
# `WWW-Authenticate: Bearer realm="api", error=invalid_token`: auth parameters, not a credential
# (base64 holds `=` only at its end, and a quote opening a value does not follow it).
_PARAMETER = re.compile(r"[A-Za-z_-]++=[\"']")


def mask_cookies(text: str) -> str:
    parts: list[str] = []
    done = covered = 0  # `covered`: the headers' values looked at (a header inside one is not again)
    for header in _COOKIE_HEADER.finditer(text):
        if header.start() < covered:
            continue
        # The header's value: quoted, or to the end of the line, as in HTTP.
        quoted = quoted_span(text, header.end())
        if quoted is not None:
            start, covered = quoted[0], quoted[1]
        else:
            line_end = _LINE_END.search(text, header.end())
            start, covered = header.end(), line_end.start() if line_end is not None else len(text)
        for index, cookie in enumerate(_cookies(text, start, covered)):
            attribute = header.group("set") and index > 0 and cookie.group("name").lower() in _ATTRIBUTES
            if cookie.group("value") and not attribute:
                parts += (text[done:cookie.start("value")], MASK)
                done = cookie.end("value")
    return "".join(parts) + text[done:] if parts else text


def _cookies(text: str, start: int, end: int) -> Iterator[re.Match[str]]:
    first = _FIRST_COOKIE.match(text, start, end)
    if first is not None:
        yield first
    yield from _COOKIE.finditer(text, first.end() if first is not None else start, end)


def mask_bare_credentials(text: str) -> str:
    parts: list[str] = []
    done = 0
    for scheme in _SCHEME.finditer(text):
        credential = _CREDENTIAL.match(text, scheme.end())
        if scheme.start() < done or credential is None:
            continue
        word = credential.group().rstrip(",;)]}")  # `(Bearer pw)`
        if not word or is_prose(word) or "=" in word.rstrip("=") or _PARAMETER.match(text, scheme.end()):
            continue
        parts += (text[done:scheme.end()], MASK)
        done = scheme.end() + len(word)
    return "".join(parts) + text[done:] if parts else text
