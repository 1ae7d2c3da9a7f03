"""Secrets in settings: checking a token, reading a mounted secret file, masking URL credentials.

A secret must never reach a log line, a `check` report, a config error or a dead-letter header.
Credentials hide in two places of a URL: the user info (`redis://user:pw@host`) and the query
(`redis://host/0?password=pw`); `mask_url` replaces both in a URL we were given, and
`mask_urls_in_text` (consumer/config/secret_text.py) every credential inside a text someone else
wrote (an exception's message quotes the URL it failed on, a proxy echoes a header).
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

# The name rules live in secret_names, masking inside free text in secret_text; their callers have
# always imported them from here.
from consumer.config.secret_names import MASK
from consumer.config.secret_names import is_secret_name as is_secret_name
from consumer.config.secret_text import mask_urls_in_text as mask_urls_in_text
from consumer.errors import ConfigError

MAX_SECRET_FILE_BYTES = 64 * 1024  # a token or password file is small; a large one is the wrong file
# Printable ASCII without space: what goes into an HTTP header verbatim.
_TOKEN_CHARS = re.compile(r"[\x21-\x7e]+")


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


def env_secret(setting: str, value: str, after: str = "") -> str:
    """A shared secret given in the environment, as it is; ConfigError (never the value) if
    whitespace surrounds it. Its `<setting>_FILE` form is read stripped, so the same Secret with its
    trailing newline (`kubectl create secret --from-file`) would be another key in one form than in
    the other: the tool or replica given the other form would hash or sign differently, silently.
    Refused, not stripped: stripping would silently change what a running fleet computes. `after`:
    what else to do once it is fixed."""
    if value != value.strip():
        raise ConfigError(f"{setting}: starts or ends with whitespace (a newline from the Secret?), and "
                          f"{setting}_FILE is read stripped, so the same Secret would give another value there: "
                          f"remove the whitespace, or mount it as {setting}_FILE{after}")
    return value


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
        masked = urlunsplit(parts._replace(netloc=netloc, query=query))
        if not netloc and url[:len(parts.scheme) + 3].lower() == parts.scheme + "://":
            # urlunsplit drops an empty authority's `//` (`unix:///p` would print as `unix:/p`).
            masked = f"{parts.scheme}://{masked[len(parts.scheme) + 1:]}"
        return masked
    except ValueError:
        return mask_urls_in_text(url)  # not parseable as a URL: mask by pattern
