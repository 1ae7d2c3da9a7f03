"""Secrets given as arguments of a command, in a text someone else wrote: a command line's long
flag (`--sasl-password pw`, as a failed subprocess quotes its argv) and a Redis `AUTH [user] pw` (as
redis-py's pipeline error or a MONITOR-like trace echoes it). The flag or the user stays.
Linear, as secret_text: each flag or AUTH is tried once, and reads at most the two words after it.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from consumer.config.secret_names import MASK, is_prose, is_secret_key, quoted_span

# A long flag, then its value after blanks, or after `', '` in a list's repr (`['--token', 'pw']`).
# Only flags named as in `name: value` (is_secret_key): `--password-file`, `--auth-mode`, `--key`
# (a key file) are not secrets; nor a short flag (`redis-cli -p 6379` is the port).
_FLAG = re.compile(r"(?<![\w.-])--(?P<name>[\w.-]++)(?:[ \t]++|(?P<list>[\"'])[ \t]*+,[ \t]*+(?=(?P=list)))")
# AUTH then its arguments after blanks, or quoted and after `, ` as a list's or tuple's repr writes
# them (`['AUTH', 'default', 'pw']`, redis-py's command args; `_LIST_GAP`).
_AUTH = re.compile(r"(?<![\w.-])(?P<quote>[\"'])?(?i:auth)(?(quote)(?P=quote))"
                   r"(?:[ \t]++|(?<=[\"'])[ \t]*+,[ \t]*+(?=[\"']))")
# An unquoted argument: up to a blank or a quote, less what closes around it (`(AUTH u pw)`) and a
# backslash escaping the quote after it (`\"AUTH pw\"` in a JSON string).
_WORD = re.compile(r"[^\s\"'<>]++")
_CLOSERS = ",;)]}\\"
_BLANKS = re.compile(r"[ \t]*+")
_LIST_GAP = re.compile(r"[ \t]*+,[ \t]*+(?=[\"'])")  # only after a quoted argument


class _Argument(NamedTuple):
    start: int
    end: int
    after: int  # where what follows it starts (after its closing quote)
    bare: bool  # not quoted


def mask_flags(text: str) -> str:
    parts: list[str] = []
    done = 0
    for flag in _FLAG.finditer(text):
        if flag.start() < done or not is_secret_key(flag.group("name")):
            continue
        span = _argument(text, flag.end())
        # `--password --topic`: no value (a bare one; a quoted one may start with `-`).
        if span is not None and not (span.bare and text.startswith("-", span.start)):
            parts += (text[done:span.start], MASK)
            done = span.end
    return "".join(parts) + text[done:] if parts else text


def mask_redis_auth(text: str) -> str:
    """`AUTH pw` and `AUTH user pw` with the password masked. Which of the words after AUTH is the
    password is told by where the command ends (the end of a line, a quote, a bracket): two words,
    the second; one word, it. If more text follows (`sent AUTH pw to redis`), it cannot be told:
    both are masked, but a word of letters only is taken for prose (`auth failed for user`) or a
    user (`AUTH default pw failed`)."""
    parts: list[str] = []
    done = 0
    for auth in _AUTH.finditer(text):
        if auth.start() < done or (first := _argument(text, auth.end())) is None:
            continue
        gap = _after_gap(text, first)
        second = _argument(text, gap) if gap > first.after else None
        if second is not None and _ends_command(text, second.after):
            # `AUTH user pw`; but a user is a name of letters (`default`, `app`), and a first word
            # that is none before one that is (`AUTH s3cr3t! failed`) is the password: both go.
            secrets = [second]
            if _letters_only(text, second) and not _letters_only(text, first):
                secrets.insert(0, first)
        elif second is None and _ends_command(text, first.after):
            secrets = [first]
        else:
            secrets = [word for word in (first, second) if word is not None and not _is_prose(text, word)]
        for secret in secrets:
            parts += (text[done:secret.start], MASK)
            done = secret.end
    return "".join(parts) + text[done:] if parts else text


def _argument(text: str, start: int) -> _Argument | None:
    """The argument at `start`, or None (none there, or a placeholder: `AUTH <password>`)."""
    quoted = quoted_span(text, start)
    if quoted is not None:
        return _Argument(*quoted, bare=False)
    word = _WORD.match(text, start)
    if word is None:
        return None
    end = start + len(word.group().rstrip(_CLOSERS))
    return _Argument(start, end, end, bare=True) if end > start else None


def _after_gap(text: str, argument: _Argument) -> int:
    """Where the argument after `argument` would start (its own end if none can follow)."""
    listed = None if argument.bare else _LIST_GAP.match(text, argument.after)
    return listed.end() if listed is not None else _after_blanks(text, argument.after)


def _after_blanks(text: str, position: int) -> int:
    blanks = _BLANKS.match(text, position)
    return blanks.end() if blanks is not None else position


def _ends_command(text: str, position: int) -> bool:
    position = _after_blanks(text, position)
    return position == len(text) or text[position] in "\r\n\"'" + _CLOSERS


def _is_prose(text: str, word: _Argument) -> bool:
    return word.bare and _letters_only(text, word)


def _letters_only(text: str, word: _Argument) -> bool:
    # A colon after the letters is a label's (`AUTH failed: WRONGPASS`, `auth error: token expired`).
    end = word.end - 1 if word.bare and text.startswith(":", word.end - 1) else word.end
    return is_prose(text, word.start, end)
