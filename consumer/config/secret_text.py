"""Masking secrets inside a text someone else wrote: an exception's message, a proxy's or Pisano's
error body, echoed into a log line or a dead-letter header (`mask_urls_in_text`).

A credential hides there as a URL's user info (`redis://user:pw@host`, also `https:\\/\\/...` as a
JSON body escapes it, `https%3A%2F%2Fuser%3Apw%40host` inside a query or form, `//user:pw@host`
without a scheme) or as a value under a secret-bearing name (`password=pw`, `"password": "pw"`,
`Authorization: Bearer pw`). Hosts, ports, paths and the names stay: they are the diagnostics.
The texts come from records (a mapper's error quoting a field, on the poll thread), so every pass
is linear: each run of name characters is tried once, at its start (a lookbehind) and
possessively (`*+`), never from every position inside it.
"""

from __future__ import annotations

import re

from consumer.config.percent_encoded import DECODE_LEVELS, in_encoded_runs

MASK = "***"
# Query parameter and librdkafka property names whose values are secret (`name=value`, where a
# wide net has always been cast: `monkey=see` is masked too).
SECRET_NAME_HINTS = ("password", "passwd", "pwd", "secret", "token", "key", "auth", "credential")
# `name: value` and `"name": value` are everywhere in prose and JSON (`"keyword"`, `"author"`,
# `Error: ...`): there only names whose last word is one of these, however written (`api_key`,
# `X-Api-Key`, `accessToken`, `sasl.password`, `PWD`).
_SECRET_LAST_WORDS = frozenset({"password", "passwd", "pwd", "secret", "token", "apikey", "authorization"})
_KEY_QUALIFIERS = frozenset({"api", "secret", "private", "signing"})  # `api_key`, `aws_secret_access_key`
_WORD_BREAK = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|[^A-Za-z0-9]+")

# A URL's start: `scheme:` then two slashes, or two slashes alone after a space, a quote, a bracket
# or `=` (a network-path reference; `a//b` is a path). A JSON string writes a slash as `\/` (and as
# `\\\/` in a JSON string inside one). A scheme starts at the first letter of its run (`1redis://`).
_SLASHES = r"(?:\\*+/){2}"
_URL_START = re.compile(r"(?:(?<![A-Za-z0-9+.-])[0-9+.-]*+[A-Za-z][A-Za-z0-9+.-]*+:"
                        r"|(?<![^\s\"'<>()\[\]{},;=]))" + _SLASHES)
_USERINFO = re.compile(r"(?P<start>" + _URL_START.pattern + r")[^/\s?#]*@")
# Where a URL in a text ends, and what cuts a password short (`_mask_cut_user_info`).
_URL_END = re.compile(r"[\s\"'<>()\[\]{},;]")
_RESERVED = re.compile(r"[/?#]")

# A run of name characters, maybe quoted (also `\"name\"` in a JSON string inside one), then `=`, `:`
# or `=>` (a Ruby hash as Rails inspects it: `{"password"=>"pw"}`; read as `=`, `>` was the value).
_PAIR = re.compile(r"(?P<quote>\\{0,3}[\"'])?(?<![\w.-])(?P<name>[\w.-]++)(?(quote)(?P=quote))"
                   r"(?P<sep>[ \t]*+(?:=>|[:=])[ \t]*+)")
# A quoted value, maybe Python bytes as a repr shows them (`b'pw'`: the `b` was taken for the value).
_QUOTE = re.compile(r"b?(?P<mark>\\{0,3}[\"'])")
# A quoted value ends at the same quote not escaped once more; `\"` inside `"..."` does not end it.
_CLOSING = {"\\" * n + c: re.compile(r"(?<!\\)" + re.escape("\\" * n + c)) for n in range(4) for c in "\"'"}
_QUERY_VALUE = re.compile(r"[^&\s#]+")  # in `name=value`, as in a query string
_BARE_VALUE = re.compile(r"[^\s\"'<>]+")  # in `name: value`, up to the end of the word
_CREDENTIAL = re.compile(r"[^\s<>]+")  # `Bearer <admin token>` in a usage text is no credential
_SCHEME_WORD = r"(?i:bearer|basic|digest|token|negotiate|ntlm|apikey)"
_AUTH_SCHEME = re.compile(_SCHEME_WORD + r"[ \t]++(?=\S)")
_LONE_SCHEME = re.compile(_SCHEME_WORD)


def is_secret_name(name: str) -> bool:
    return any(hint in name.lower() for hint in SECRET_NAME_HINTS)


def is_secret_key(name: str) -> bool:
    """Whether `name` in `name: value` or `"name": value` holds a secret (see _SECRET_LAST_WORDS)."""
    words = [word.lower() for word in _WORD_BREAK.split(name) if word]
    if not words:
        return False
    return words[-1] in _SECRET_LAST_WORDS or (words[-1] == "key" and not _KEY_QUALIFIERS.isdisjoint(words))


def mask_urls_in_text(text: str) -> str:
    """`text` with the credentials of every URL in it masked, and every secret `name=value`-like pair."""
    return _masked(text, DECODE_LEVELS)


def _masked(text: str, levels: int) -> str:
    text = _mask_pairs(_mask_cut_user_info(_USERINFO.sub(lambda m: m.group("start") + MASK + "@", text)))
    # A percent-encoded URL or pair is masked as decoded, one level deeper each time.
    return in_encoded_runs(text, lambda plain: _masked(plain, levels - 1)) if levels > 0 else text


def _mask_cut_user_info(text: str) -> str:
    """Every URL whose last @ comes after a `/`, `?` or `#` as `scheme://***`: a password holding
    those raw (or an @ in a path or query; which, cannot be told) would show its rest. A URL ends
    at whitespace, a quote, a bracket, `,` or `;`. Linear: a run is searched for its last @ once,
    and either masked from its first scheme on or left (every later scheme in it holds the same
    clean stretch before that @)."""
    parts: list[str] = []
    done = position = 0
    while (start := _URL_START.search(text, position)) is not None:
        end = _URL_END.search(text, start.end())
        run_end = end.start() if end is not None else len(text)
        at = text.rfind("@", start.end(), run_end)
        if at >= 0 and _RESERVED.search(text, start.end(), at) is not None:
            parts += (text[done:start.end()], MASK)
            done = run_end
        position = run_end
    return "".join(parts) + text[done:] if parts else text


def _mask_pairs(text: str) -> str:
    parts: list[str] = []
    done = 0  # text before this is in `parts`; a name inside a value already masked is not looked at
    for pair in _PAIR.finditer(text):
        # ...unless its value lies beyond: its `: ` or its `Basic ` reaches past that value
        # (`password=a,"pwd": b`, `pwd=a;authorization=Basic b`: the value ends at the blank) or
        # it ends where that value ends (a quote taken for the end of it); one name a value at most.
        if pair.end() < done and ((scheme := _AUTH_SCHEME.match(text, pair.end())) is None or scheme.end() <= done):
            continue
        span = _secret_value(text, pair)
        if span is not None and span[0] < span[1]:
            parts += (text[done:span[0]], MASK)
            done = span[1]
    return "".join(parts) + text[done:] if parts else text


def _secret_value(text: str, pair: re.Match[str]) -> tuple[int, int] | None:
    """Where the value after a secret name starts and ends, or None (not a secret name, no value)."""
    name, sep, start = pair.group("name"), pair.group("sep"), pair.end()
    query_like = pair.group("quote") is None and sep.strip() == "="
    if query_like:
        # `password= token=` has no value (a blank after the `=` only); `sasl.password = pw` has.
        if not is_secret_name(name) or (sep[0] == "=" and len(sep) > 1):
            return None
    elif not is_secret_key(name) or text.startswith(("{", "["), start):
        return None  # `"password": ["is too short"]` is a structure (an error list), not the value
    if (quote_mark := _QUOTE.match(text, start)) is not None:
        start = quote_mark.end()
        closing = _CLOSING[quote_mark.group("mark")].search(text, start)
        end = closing.start() if closing is not None else len(text)  # cut short: the rest may be it
        if (scheme := _AUTH_SCHEME.match(text, start, end)) is not None:
            start = scheme.end()  # `Bearer`, `Basic`: the kind of credential is a diagnostic
        return start, end
    scheme = _AUTH_SCHEME.match(text, start)
    start = scheme.end() if scheme is not None else start
    if query_like:
        value = _QUERY_VALUE.match(text, start)
        return (start, value.end()) if value is not None else None
    # A bare value in JSON or a header list ends before the punctuation that closes it (`"pwd": 4711}`);
    # a credential after `Token ` is all of the word (Pisano's `Token token="..."`).
    value = (_BARE_VALUE if scheme is None else _CREDENTIAL).match(text, start)
    word = value.group().rstrip(",;)]}") if value is not None else ""
    # A word of letters only is prose (`REPLAY_SIGNING_KEY: shorter than 16`, `Invalid value for
    # 'token': must be`) or `null`, `true`, `None`; a password or token holds a digit or a sign.
    # Only a header's credential may be letters alone (but not a lone `Bearer`).
    header = name.lower().endswith("authorization")
    if scheme is None and word.isalpha() and (not header or _LONE_SCHEME.fullmatch(word)):
        return None
    return start, start + len(word)
