"""Masking secrets inside a text someone else wrote: an exception's message, a proxy's or Pisano's
error body, echoed into a log line or a dead-letter header (`mask_urls_in_text`).

A credential hides there as a URL's user info (`redis://user:pw@host`, also `https:\\/\\/...` or
`https:\\u002F\\u002F...` as a JSON body escapes it, its `@` and `:` escaped as `\\u0040` or
`&#64;` (escaped_marks), `https%3A%2F%2Fuser%3Apw%40host` inside a query or form, `//user:pw@host` without
a scheme, `user:pw@host` without the slashes) or as a value under
a secret-bearing name (`password=pw`, `"password": "pw"`, `Authorization: Bearer pw`); also as an
HTTP credential without such a name (secret_headers: cookies, a bare `Bearer pw`) and as a
command's argument (secret_commands: `--password pw`, Redis `AUTH user pw`). Hosts, ports, paths
and the names stay: they are the diagnostics.
The texts come from records (a mapper's error quoting a field, on the poll thread), so every pass
is linear: each run of name characters is tried once, at its start (a lookbehind) and
possessively (`*+`), never from every position inside it.
"""

from __future__ import annotations

import re

from consumer.config.escaped_marks import in_escaped_marks
from consumer.config.percent_encoded import DECODE_LEVELS, in_encoded_runs
from consumer.config.secret_commands import mask_flags, mask_redis_auth, mask_resp_auth
from consumer.config.secret_headers import mask_bare_credentials, mask_cookies
from consumer.config.secret_names import (
    MASK,
    is_label_of,
    is_letters_credential,
    is_predicate_word,
    is_prose_word,
    is_secret_key,
    is_secret_name,
    is_session_name,
    is_state_word,
    is_statement_word,
    quoted_span,
)

# A URL's start: `scheme:` then two slashes, or two slashes alone after a space, a quote, a bracket
# or `=` (a network-path reference; `a//b` is a path). A JSON string writes a slash as `\/` (and as
# `\\\/` in a JSON string inside one), some encoders as `\u002F`, a repr of bytes as `\x2f`. A
# scheme starts at the first letter of its run (`1redis://`).
_ESCAPED_SLASH = r"\\++(?:u002[fF]|x2[fF])"
_SLASHES = r"(?:\\*+/|" + _ESCAPED_SLASH + "){2}"
_URL_START = re.compile(r"(?:(?<![A-Za-z0-9+.-])[0-9+.-]*+[A-Za-z][A-Za-z0-9+.-]*+:"
                        r"|(?<![^\s\"'<>()\[\]{},;=]))" + _SLASHES)
_USERINFO = re.compile(r"(?P<start>" + _URL_START.pattern + r")(?:[^/\s?#\\]|\\(?!u002[fF]|x2[fF]))*@")
# Where a URL in a text ends, and what cuts a password short (`_mask_cut_user_info`).
_URL_END = re.compile(r"[\s\"'<>()\[\]{},;]")
_RESERVED = re.compile(r"[/?#]|" + _ESCAPED_SLASH)

# `user:pw@host` without `//` (`_mask_bare_user_info`): a word up to its first `:`, and its rest.
# Tried at a word's start only; a word without a `:` is read up to the next `=` at most. The rest
# may hold `[` and `]`: a password may (`user:p[w@host`), and so does an IPv6 host (`[::1]`).
_BARE_USER_INFO = re.compile(r"(?<![^\s\"'<>()\[\]{},;=])(?P<user>[^\s\"'<>()\[\]{},;=:]*+):"
                             r"(?P<rest>[^\s\"'<>(){},;]*+)")
_HOST = re.compile(r"[\w\[]")
_SLASH_FIRST = re.compile(r"\\*+/|" + _ESCAPED_SLASH)
_ADDRESS_SCHEMES = frozenset({"mailto", "sip", "sips", "xmpp"})

# A run of name characters, maybe quoted (also `\"name\"` in a JSON string inside one), then `=`, `:`
# or `=>` (a Ruby hash as Rails inspects it: `{"password"=>"pw"}`; read as `=`, `>` was the value).
_NAME = r"(?P<quote>\\{0,3}[\"'])?(?<![\w.-])(?P<name>[\w.-]++)(?(quote)(?P=quote))"
_PAIR = re.compile(_NAME + r"(?P<sep>[ \t]*+(?:=>|[:=])[ \t]*+)")
# Also a quoted name, `, ` and a quote: a pair in a list of them (`[('authorization', 'pw')]`:
# werkzeug's Headers, ASGI's raw headers, `[(b'x-api-key', b'pw')]`; `[["Authorization", "pw"]]`),
# looked for only in a text naming an Authorization or holding a quote, `, ` and a quote
# (`_LISTED_MARK`: the other alternative, tried at every word, costs).
_PAIR_OR_LISTED = re.compile(_NAME + r"(?P<sep>[ \t]*+(?:=>|[:=])[ \t]*+|(?<=[\"'])[ \t]*+,[ \t]*+(?=b?\\{0,3}[\"']))")
_LISTED_MARK = re.compile(r"[\"'][ \t]*+,[ \t]*+b?\\{0,3}[\"']")
# Where that pair's bracket is: it opens a pair (`(`, `[`) inside a list, a tuple or a set of them
# (after `[`, `(`, `{` or `,`);
# `['authorization', 'x-api-key']` and `('authorization', 'content-type')` are lists of names.
_PAIR_IN_LIST = re.compile(r"(?:[\[({,][ \t]*+)[(\[]b?\Z")
_LIST_GAP = re.compile(r"[ \t]*+,[ \t]*+")
_BARE_ELEMENT = re.compile(r"[^\s,\[\](){}\"']++")  # in a list of values: `null`, a number
_BLANKS = re.compile(r"[ \t]*+")
# An Authorization value of words only is prose, no credential (`Authorization: header missing`,
# `"Authorization": ["This field is required."]`): two words and more, each a word as _PROSE in
# secret_names reads it (letters in one case, maybe capitalized, 19 at most), and a clause's
# punctuation. One word alone is the credential (`Authorization: letmein`): a credential may be
# letters only, and a missing one is said in words (`header missing`). A credential holds a digit
# or a sign, or letters of both cases (base64), or is longer than a word (a key of 32 letters, as
# hex may be). Read to its first clause's end at most. A literal for no value is none either
# (`{"Authorization": null}`, `{'authorization': None}`, JavaScript's `undefined`). But two words,
# the first capitalized as a scheme is written and no negation or participle, the second a
# credential of letters (secret_names.is_letters_credential), are a scheme and its credential
# (`Authorization: Custom abcdefghij`). A first word of state or error (`Wrong`, `Invalid`)
# qualifies the noun after it (`Wrong format`, `Invalid scheme`: those nouns are in secret_names'
# lists), and is no reason for a credential to show (`Wrong qwertyuiop`). They end the clause (also
# with a stop: `Custom abcdefghij.`) or words saying something of the credential follow
# (secret_names.is_predicate_word: `Custom abcdefghij was refused`). The first may be a noun
# (`Access denied`): a participle after it is guessed.
_PROSE_WORD = r"(?:[A-Z]?[a-z]{1,19}+|[A-Z]{1,19}+)(?![A-Za-z])"
_PROSE_CLAUSE = re.compile(_PROSE_WORD + r"(?:[ \t]++" + _PROSE_WORD + r")++[.!?]?[ \t]*+"
                           r"|(?:null|None|nil|undefined)(?![\w-])[ \t]*+")
_PROSE_CLAUSE_END = re.compile(r"[;,)\]}]|[\r\n]|\\[rn]|$")  # also where a structure closes: `{"Authorization": null}`
_SCHEME_AND_LETTERS = re.compile(r"[ \t]*+(?P<scheme>[A-Z](?:[a-z]++|[A-Z]++))[ \t]++(?P<word>[A-Za-z]++)"
                                 r"(?:[.!?]?[ \t]*+\Z|[ \t]++(?P<next>[A-Za-z]++))")
_ELEMENT_WORD = _PROSE_WORD + r"[.,;:!?]?"
_PROSE_ELEMENT = re.compile(r"[ \t]*+(?:" + _ELEMENT_WORD + r"(?:[ \t]++" + _ELEMENT_WORD + r")++[ \t]*+)?+")
# Under another name a number may be a word (`"password": ["Ensure this field has at least 8 characters."]`).
_NUMBER_WORD = r"(?:" + _PROSE_WORD + r"|[0-9]{1,3}+(?![0-9]))[.,;:!?]?"
_PROSE_ELEMENT_WITH_NUMBERS = re.compile(r"[ \t]*+(?:" + _NUMBER_WORD + r"(?:[ \t]++" + _NUMBER_WORD
                                         + r")++[ \t]*+)?+")
# In `name=value`, as in a query string. A `;` inside is the value's (`pw=a;b`), but one before a
# blank, the end, or a cookie attribute ends it: `token=abc; Path=/; HttpOnly` as a Set-Cookie writes
# it keeps its attributes (they say how the cookie is kept, not what it is). An attribute as written:
# a name then `=`, or a flag alone; `pw=a;secure-b` is one password.
_COOKIE_ATTRIBUTE = (r"(?i:(?:path|domain|expires|max-age|samesite|priority)[ \t]*+="
                     r"|(?:secure|httponly|partitioned)(?=[;\s]|$))")
_QUERY_VALUE = re.compile(r"(?:[^&\s#;]|;(?![ \t]*+" + _COOKIE_ATTRIBUTE + r"|\s|$))++")
# A session id is a cookie's value wherever it stands (`Cookie:sid=a;lang=tr`, `[(b'cookie', b'sid=a')]`):
# cookie octets, and `\/` (a JSON-escaped slash of base64).
_SESSION_VALUE = re.compile(r"(?:[^&\s#;,\"'\\]|\\/)++")
_BARE_VALUE = re.compile(r"[^\s\"'<>]+")  # in `name: value`, up to the end of the word
_NEXT_WORD = re.compile(r"[ \t]++[^\W\d_]")  # ...then a word of letters: that one was prose
_CREDENTIAL = re.compile(r"[^\s<>]+")  # `Bearer <admin token>` in a usage text is no credential
# `password: set to hunter`: after a secret name and a colon (or `=`), a value said to be set is the word
# after `to`, read as the value itself would be (a word of state or the first of prose stays), also
# quoted (`set to 'hunter2'`) and after an auxiliary (`was set to hunter2`, `has been changed to`).
_SET_TO = re.compile(r"(?i:(?:was|is|has[ \t]++been|have[ \t]++been|been|now)[ \t]++)?+"
                     r"(?i:set|changed|reset|updated)[ \t]++to[ \t]++(?=\S)")
_SCHEME_WORD = r"(?i:bearer|basic|digest|token|negotiate|ntlm|apikey)"
# Maybe twice, as a client that adds `Bearer ` to a token holding it already sends: `Bearer Bearer
# pw` (the same word only: in `Bearer token expired`, `token` is prose).
_AUTH_SCHEME = re.compile(r"(?P<scheme>" + _SCHEME_WORD + r")(?:[ \t]++(?P=scheme))*+[ \t]++(?=\S)")
_LONE_SCHEME = re.compile(_SCHEME_WORD)
_BARE_SCHEMES = ("bearer", "basic", "token", "negotiate", "ntlm", "digest")  # secret_headers' marks
# An Authorization (or Proxy-Authorization) header's credential is one word after these; after any
# other scheme (`Digest`, `Token`, `Hawk`, `SharedKey`, `AWS4-HMAC-SHA256`) it is parameters or more
# words (`id="x", mac="y"`), so the value runs to the end of the line, as in HTTP. A scheme of
# letters stays (a diagnostic); one of other characters may be no scheme but a password: it goes.
_ONE_WORD_SCHEME = re.compile(r"(?i:bearer|basic|negotiate|ntlm|apikey)")
_ANY_SCHEME = re.compile(r"[A-Za-z]++[ \t]++(?=\S)")
_LINE_END = re.compile(r"[\r\n]|\\[rn]")  # also as a JSON string or a repr escapes it: `\r\n`
# ...or at the end of the quoted value of an earlier pair it lies in (`{"detail": "Authorization:
# invalid token", "code": 13028}`), if a value's end follows that quote: a quote inside a header
# that a writer did not escape (`"Hawk id="x", mac="y""`) is followed by more of the header.
_VALUE_END = re.compile(r"[ \t]*+(?:[,;}\])]|$)", re.MULTILINE)

__all__ = ["MASK", "is_secret_key", "is_secret_name", "mask_urls_in_text"]  # the first three: secret_names


def mask_urls_in_text(text: str) -> str:
    """`text` with the credentials of every URL in it masked, and every secret `name=value`-like pair."""
    return _masked(text, DECODE_LEVELS)


def _masked(text: str, levels: int) -> str:
    # A pattern tried at every position is what an ordinary log line costs: a pass whose mark (an
    # @, a cookie header, an auth word, a long flag) is not in the text is not run. Masking only
    # takes marks away, so one test of the text as it came serves every pass.
    lowered = text.lower()
    if "\\" in text or "\uff20" in text or "\uff1a" in text or "&" in text:  # `\u0040`, `\x3a`, `&#64;`, full-width
        text = in_escaped_marks(text, _mask_escaped_user_info)
    if "@" in text:  # every user info ends at one
        text = _mask_user_info(text)
    text = _mask_pairs(text)
    if "cookie" in lowered:
        text = mask_cookies(text)
    if any(scheme in lowered for scheme in _BARE_SCHEMES):
        text = mask_bare_credentials(text)
    if "--" in text or "-cli" in lowered:
        text = mask_flags(text)
    if "auth" in lowered:
        text = mask_redis_auth(text)
        if "$4" in text:
            text = mask_resp_auth(text)
    # A percent-encoded URL or pair is masked as decoded, one level deeper each time.
    return in_encoded_runs(text, lambda plain: _masked(plain, levels - 1)) if levels > 0 else text


def _mask_escaped_user_info(plain: str) -> str:
    """A run whose escaped marks were decoded, also read with its percent escapes decoded: a user
    info may be escaped both ways at once (`user&#58;pw%40host`, `user%3Apw&#64;host`), and then
    neither pass alone sees both its `:` and its `@`. Only a run showing no user info as decoded (a
    run masked is left as that pass wrote it); one level (the pass in _masked goes deeper)."""
    masked = _mask_user_info(plain)
    return in_encoded_runs(plain, _mask_user_info) if masked == plain and "%" in plain else masked


def _mask_user_info(text: str) -> str:
    return _mask_bare_user_info(_mask_cut_user_info(_USERINFO.sub(lambda m: m.group("start") + MASK + "@", text)))


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


def _mask_bare_user_info(text: str) -> str:
    """`user:pw@host` without `//` (redis-py's `default:pw@redis-master:6379`) as `user:***@host`.
    A word (the text between blanks, quotes, brackets, `,` `;` `=`) holding a `:` and, after it, an
    @ then a host: an e-mail (`bob@bank.test`) has no `:` before its @, `host:port` and a time
    (`12:30`) no @ after it. The password runs to the last @ (it may hold `@` and `:`). Left as
    they are: a URL (`://`, `:\\/`, `:\\u002F` after the `:`: the passes above), a password of
    digits with digits before its `:` or after its @ (a time `12:30@home`, a Redis cluster node
    `10.0.0.5:6379@16379`) and an address after `mailto:` or `sip:`."""
    parts: list[str] = []
    done = 0
    for word in _BARE_USER_INFO.finditer(text):
        rest = word.group("rest")
        at = rest.rfind("@")
        password, host = rest[:at], rest[at + 1:]
        user = word.group("user")
        # The host may be an IPv6 literal (`default:pw@[::1]:6379`), which the word does not hold.
        if (at <= 0 or _HOST.match(text, word.start("rest") + at + 1) is None
                or _SLASH_FIRST.match(password) is not None
                or (password.isdigit() and (host.isdigit() or user.isdigit())) or user.lower() in _ADDRESS_SCHEMES):
            continue
        parts += (text[done:word.start("rest")], MASK)
        done = word.start("rest") + at
    return "".join(parts) + text[done:] if parts else text


def _mask_pairs(text: str) -> str:
    parts: list[str] = []
    done = 0  # text before this is in `parts`; a name inside a value already masked is not looked at
    line_end = [-1]  # where the line last looked at ends: the headers on one line share it (linear)
    # Where the quoted value of the last pair that had one ends, if a value's end follows its quote
    # (`_VALUE_END`): an Authorization header inside it ends there. Only looked for in a text naming
    # one; each value's closing quote is searched for once, from its opening one.
    enclosing = -1
    headers = "authorization" in text.lower()
    listed = headers or _LISTED_MARK.search(text) is not None
    for pair in (_PAIR_OR_LISTED if listed else _PAIR).finditer(text):
        # ...unless its value lies beyond: its `: ` or its `Basic ` reaches past that value
        # (`password=a,"pwd": b`, `pwd=a;authorization=Basic b`: the value ends at the blank) or
        # it ends where that value ends (a quote taken for the end of it); one name a value at most.
        if pair.end() < done and ((scheme := _AUTH_SCHEME.match(text, pair.end())) is None or scheme.end() <= done):
            continue
        span = _secret_value(text, pair, line_end, enclosing if pair.start() < enclosing else len(text))
        if span is not None and span[0] < span[1]:
            parts += (text[done:span[0]], MASK)
            done = span[1]
        if headers and (quoted := quoted_span(text, pair.end())) is not None:
            enclosing = quoted[1] if _VALUE_END.match(text, quoted[2]) is not None else -1
    return "".join(parts) + text[done:] if parts else text


def _secret_value(text: str, pair: re.Match[str], line_end: list[int], limit: int) -> tuple[int, int] | None:
    """Where the value after a secret name starts and ends, or None (not a secret name, no value); an
    unquoted Authorization value ends at `limit` at the latest."""
    name, sep, start = pair.group("name"), pair.group("sep"), pair.end()
    query_like = pair.group("quote") is None and sep.strip() == "="
    header = name.lower().endswith("authorization")
    # `authorization=abc&x=1` is a query's: its value ends there, unless a scheme of more words follows.
    if (header and is_secret_key(name) and quoted_span(text, start) is None and not text.startswith(("{", "["), start)
            and (not query_like or _scheme_of_more_words(text, start))):
        return _header_credential(text, start, line_end, limit)
    if query_like:
        # `password= token=` has no value (a blank after the `=` only); `sasl.password = pw` has.
        if not is_secret_name(name) or (sep[0] == "=" and len(sep) > 1):
            return None
    elif sep.strip() == "," and not (is_secret_key(name) and _pair_in_list(text, pair.start())):
        return None
    elif is_secret_key(name) and text.startswith("[", start):
        # Go's http.Header as JSON: `{"Authorization": ["pw"]}`, `{"X-Api-Key": ["pw"]}`
        return _listed_credentials(text, start + 1, header)
    elif not is_secret_key(name) or text.startswith(("{", "["), start):
        return None  # `"password": ["is too short"]` is a structure (an error list), not the value
    if (quoted := quoted_span(text, start)) is not None:
        start, end, _ = quoted
        if not header and is_state_word(text[start:end]):
            return None  # `"session": "expired"`, `('password', 'required')`: a state, no secret
        if sep.strip() == "," and is_label_of(name, text[start:end]):
            return None  # `choices=[('token', 'Token')]`: a choice and its label

        if is_session_name(name) and _is_prose_value(text, start, end):
            return None  # `"session": "not logged in"`; one other word is its id (`"sid": "qwhdkslapzmx"`)
        scheme = _AUTH_SCHEME.match(text, start, end)
        if header and scheme is None:
            if _is_prose_value(text, start, end, header):
                return None  # `{"Authorization": "header missing"}`, as unquoted
            scheme = _ANY_SCHEME.match(text, start, end)
        if scheme is not None:
            start = scheme.end()  # `Bearer`, `Basic`: the kind of credential is a diagnostic
        return start, end
    scheme = _AUTH_SCHEME.match(text, start)
    start = scheme.end() if scheme is not None else start
    if scheme is None and (setter := _SET_TO.match(text, start)) is not None:
        # After `=` too (`password=set to pw`): a query value holds no blank, so this is prose, and
        # the word after `to` is read as after a colon.
        start, query_like = setter.end(), False
        if (quoted := quoted_span(text, start)) is not None:
            return None if is_state_word(text[quoted[0]:quoted[1]]) else quoted[:2]
    if query_like:
        value = (_SESSION_VALUE if is_session_name(name) else _QUERY_VALUE).match(text, start)
        return (start, value.end()) if value is not None else None
    # A bare value in JSON or a header list ends before the punctuation that closes it (`"pwd": 4711}`);
    # a credential after `Token ` is all of the word (Pisano's `Token token="..."`).
    value = (_BARE_VALUE if scheme is None else _CREDENTIAL).match(text, start)
    word = value.group().rstrip(",;)]}") if value is not None else ""
    # One word is the secret (`password: hunter`), but a word of state (`password: required`, `null`)
    # or the first of prose (`REPLAY_SIGNING_KEY: shorter than 16`, `Invalid value for 'token': must be`).
    if scheme is None and (is_state_word(word) or (is_prose_word(word) and _NEXT_WORD.match(text, start + len(word)))):
        return None
    return start, start + len(word)


def _pair_in_list(text: str, quote: int) -> bool:
    return _PAIR_IN_LIST.search(text, max(0, quote - 24), quote) is not None


def _listed_credentials(text: str, position: int, header: bool) -> tuple[int, int] | None:
    """Where the secrets in a list of quoted values at `position` start and end, an Authorization's
    scheme before the first kept; None if each is prose (an error list: `["is too short"]`), a word
    of state under another name (`"password": ["required"]`) or a literal (`null`), or none is
    quoted. Linear: each element is read once."""
    first = last = -1
    while True:
        position = _after_blanks(text, position)
        if (element := quoted_span(text, position)) is None:
            if (bare := _BARE_ELEMENT.match(text, position)) is None:
                break
            position = after = bare.end()  # `[null, "pw"]`: not the secret, but the list goes on
        else:
            start, end, after = element
            # After a scheme of one (`Basic letmein`), a credential, whatever its words.
            scheme = _AUTH_SCHEME.match(text, start, end) if header else None
            if scheme is not None or not _listed_prose(text, start, end, header):
                scheme = scheme or (_ANY_SCHEME.match(text, start, end) if header else None)
                first = first if first >= 0 else (scheme.end() if scheme is not None else start)
                last = end
        gap = _LIST_GAP.match(text, after)
        if gap is None:
            break
        position = gap.end()
    return (first, last) if first >= 0 else None


def _listed_prose(text: str, start: int, end: int, header: bool) -> bool:
    if header:
        return _PROSE_ELEMENT.fullmatch(text, start, end) is not None and not _scheme_and_credential(text, start, end)
    return _PROSE_ELEMENT_WITH_NUMBERS.fullmatch(text, start, end) is not None or is_state_word(text[start:end])


def _is_prose_value(text: str, start: int, end: int, header: bool = False) -> bool:
    """Whether the Authorization (`header`) or session value at `start` is prose up to its first
    clause's end (`end` at most)."""
    prose = _PROSE_CLAUSE.match(text, start, end)
    if prose is None or _PROSE_CLAUSE_END.match(text, prose.end(), end) is None:
        return False
    return not (header and _scheme_and_credential(text, start, prose.end()))


def _scheme_and_credential(text: str, start: int, end: int) -> bool:
    """Whether the words from `start` to `end` are a scheme and a credential of letters (see _PROSE_CLAUSE)."""
    words = _SCHEME_AND_LETTERS.match(text, start, end)
    scheme = words.group("scheme") if words is not None else ""
    return (words is not None and (is_state_word(scheme) or not is_statement_word(scheme))
            and is_letters_credential(words.group("word"))
            and (words.group("next") is None or is_predicate_word(words.group("next"))))


def _after_blanks(text: str, position: int) -> int:
    blanks = _BLANKS.match(text, position)
    return blanks.end() if blanks is not None else position


def _scheme_of_more_words(text: str, start: int) -> bool:
    scheme = _ANY_SCHEME.match(text, start)
    return scheme is not None and not _ONE_WORD_SCHEME.fullmatch(scheme.group().rstrip())


def _header_credential(text: str, start: int, line_end: list[int], limit: int) -> tuple[int, int] | None:
    """Where the credential of an unquoted Authorization value at `start` starts and ends (None: a
    lone scheme, as `Authorization: Bearer` in a usage text), `limit` at the latest. It may be
    letters alone."""
    scheme = _AUTH_SCHEME.match(text, start, limit)
    if scheme is not None and _ONE_WORD_SCHEME.fullmatch(scheme.group("scheme")):
        value = _CREDENTIAL.match(text, scheme.end(), limit)
        word = value.group().rstrip(",;)]}") if value is not None else ""
        return scheme.end(), scheme.end() + len(word)
    if line_end[0] < start:
        found = _LINE_END.search(text, start)
        line_end[0] = found.start() if found is not None else len(text)
    end = min(line_end[0], limit)
    if scheme is None and _is_prose_value(text, start, end, header=True):
        return None  # `Authorization: header missing; ...`; after a scheme (`Token abc`), a credential
    if scheme is None:
        scheme = _ANY_SCHEME.match(text, start, end)
        if scheme is None and _LONE_SCHEME.fullmatch(text, start, end):
            return None
    begin = scheme.end() if scheme is not None else start
    return (begin, end) if begin < end else None
