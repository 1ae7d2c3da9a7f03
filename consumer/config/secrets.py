"""Secrets in settings: checking a token, reading a mounted secret file, masking URL credentials.

A secret must never reach a log line, a `check` report, a config error or a dead-letter header.
Credentials hide in two places of a URL: the user info (`redis://user:pw@host`) and the query
(`redis://host/0?password=pw`); `mask_url` replaces both, and `mask_urls_in_text` does it for every
URL inside a text someone else wrote (an exception's message quotes the URL it failed on).
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from consumer.errors import ConfigError

MASK = "***"
MAX_SECRET_FILE_BYTES = 64 * 1024  # a token or password file is small; a large one is the wrong file
# Query parameter and librdkafka property names whose values are secret.
SECRET_NAME_HINTS = ("password", "passwd", "secret", "token", "key", "auth", "credential")
# Printable ASCII without space: what goes into an HTTP header verbatim.
_TOKEN_CHARS = re.compile(r"[\x21-\x7e]+")
# Any `scheme://userinfo@` and any `secret-name=value` in a text. The text comes from records (a
# mapper's error quoting a field, on the poll thread), so both patterns are linear: each run of
# name characters is tried once, at its start (the lookbehind) and possessively (`*+`), never from
# every position inside it (a run of "key" * 341 cost 0.5 s a pass with `[\w.-]*key[\w.-]*=`).
# A scheme starts at the first letter of its run (`1redis://` is `redis://`, as before).
_SCHEME_PATTERN = r"(?<![A-Za-z0-9+.-])(?P<lead>[0-9+.-]*+)(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*+://)"
_SCHEME = re.compile(_SCHEME_PATTERN)
_USERINFO = re.compile(_SCHEME_PATTERN + r"(?P<userinfo>[^/\s?#]*)@")
# Where a URL in a text ends, and what cuts a password short (`_mask_cut_user_info`).
_URL_END = re.compile(r"[\s\"'<>()\[\]{},;]")
_RESERVED = re.compile(r"[/?#]")
# A whole run of name characters followed by `=`; whether the name is secret is decided in Python.
_PARAM_NAME = re.compile(r"(?<![\w.-])[\w.-]++=")
_PARAM_VALUE = re.compile(r"[^&\s#]+")


def is_secret_name(name: str) -> bool:
    return any(hint in name.lower() for hint in SECRET_NAME_HINTS)


def check_token(raw: str) -> str:
    """The token without surrounding whitespace (a mounted file ends with a newline); ValueError
    saying what is wrong if it is empty or holds anything but printable characters, which would
    otherwise break the Authorization header or be echoed in an HTTP library's error."""
    token = raw.strip()
    if not token:
        raise ValueError("the token is empty; set the API token Pisano gave you")
    if not _TOKEN_CHARS.fullmatch(token):
        raise ValueError("the token holds a space, a line break or a non-printable character inside; "
                         "copy it again from Pisano (the token itself is not shown)")
    return token


def read_secret_file(setting: str, path: Path, hint: str) -> str:
    """The stripped text of a mounted secret file, or ConfigError naming the setting (never the content)."""
    try:
        if path.stat().st_size > MAX_SECRET_FILE_BYTES:
            raise ConfigError(f"{setting}={path}: larger than 64 KiB, not a secret file; {hint}")
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{setting}={path}: cannot read it ({exc.strerror}); {hint}") from exc
    except UnicodeDecodeError:
        raise ConfigError(f"{setting}={path}: not UTF-8 text; {hint}") from None


def authority_problem(url: str) -> str | None:
    """Why the URL's host and port cannot be read as written, or None. A URL parser ends the user
    info at the first `/`, `?` or `#`, so in `redis://u:p#ss@h` the password is cut to "p" and the
    "port" is "p": the client fails, and its error (and any masking that trusts the parser) shows
    the password's first part. Such a URL is refused at start, never echoed (the message is fixed)."""
    fix = "if the password holds / ? # or @, percent-encode them (%2F %3F %23 %40)"
    try:
        parts = urlsplit(url)
        _ = parts.port  # a port that is not a number raises here
    except ValueError:
        return f"its host or port cannot be read (a port is a number from 0 to 65535); {fix}"
    # A query's `password=p#w&x` or `token=a&b` is cut the same way, at the # or the &.
    if parts.fragment or url.endswith("#"):
        return "it holds a # (a fragment means nothing here); if a password holds #, percent-encode it (%23)"
    if any("=" not in item for item in parts.query.split("&") if item):
        return "a query item has no =; if a password holds & or #, percent-encode them (%26 %23)"
    # `https://u:123/ss@h` parses with port 123 and `redis://:Abc@123/xyz@h` with host 123: any @
    # after the host is read as the end of a password cut short.
    if "@" in url[url.find(parts.netloc) + len(parts.netloc):]:
        return f"an @ follows its host; {fix}, and an @ in the path or query as %40"
    return None


def checked_url(url: str) -> str:
    """The URL, or ValueError saying why its password would be cut short (for the settings'
    validators: the message never quotes the URL)."""
    problem = authority_problem(url)
    if problem is not None:
        raise ValueError(problem)
    return url


def mask_url(url: str) -> str:
    """The URL with its password and every secret query parameter replaced by '***'."""
    if authority_problem(url) is not None:  # where the password ends is unknown: hide all of it
        scheme, found, _ = url.partition("://")
        return f"{scheme}://{MASK}" if found else MASK
    try:
        parts = urlsplit(url)
        if not (parts.scheme and parts.netloc) and "@" in url:
            # Not a URL as written (quoted, no `//`, `u:pw@host`): whatever precedes an @ may be a password.
            return MASK + url[url.rfind("@"):]
        netloc = parts.netloc
        if parts.password is not None or "@" in netloc:
            user_info, _, host = netloc.rpartition("@")
            user = user_info.partition(":")[0]
            netloc = f"{user}:{MASK}@{host}" if user else f"{MASK}@{host}"
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            query = urlencode([(k, MASK if is_secret_name(k) else v) for k, v in pairs], safe="*/:")
        return urlunsplit(parts._replace(netloc=netloc, query=query))
    except ValueError:
        return mask_urls_in_text(url)  # not parseable as a URL: mask by pattern


def _mask_cut_user_info(text: str) -> str:
    """Every URL whose last @ comes after a `/`, `?` or `#` as `scheme://***`: a password holding
    those raw (or an @ in a path or query; which, cannot be told) would show its rest. A URL ends
    at whitespace, a quote, a bracket, `,` or `;`. Linear: a run is searched for its last @ once,
    and either masked from its first scheme on or left (every later scheme in it holds the same
    clean stretch before that @)."""
    parts: list[str] = []
    done = position = 0
    while (scheme := _SCHEME.search(text, position)) is not None:
        end = _URL_END.search(text, scheme.end())
        run_end = end.start() if end is not None else len(text)
        at = text.rfind("@", scheme.end(), run_end)
        if at >= 0 and _RESERVED.search(text, scheme.end(), at) is not None:
            parts += (text[done:scheme.end()], MASK)
            done = run_end
        position = run_end
    return "".join(parts) + text[done:] if parts else text


def mask_urls_in_text(text: str) -> str:
    """`text` with the credentials of every URL in it masked, and every `password=...`-like pair."""
    text = _mask_cut_user_info(_USERINFO.sub(lambda m: f"{m.group('lead')}{m.group('scheme')}{MASK}@", text))
    parts: list[str] = []
    done = 0  # text before this is in `parts`; a name inside a value already masked is not looked at
    for name in _PARAM_NAME.finditer(text):
        if name.start() < done or not is_secret_name(name.group()):
            continue
        value = _PARAM_VALUE.match(text, name.end())
        if value is not None:
            parts += (text[done:name.end()], MASK)
            done = value.end()
    return "".join(parts) + text[done:] if parts else text
