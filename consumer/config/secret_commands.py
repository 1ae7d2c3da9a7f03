"""Secrets given as arguments of a command, in a text someone else wrote: a command line's long
flag (`--sasl-password pw`, as a failed subprocess quotes its argv; redis-cli's `-a pw`, `--pass
pw`) and a Redis `AUTH [user] pw` (as redis-py's pipeline error or a MONITOR-like trace echoes it,
also in RESP). The flag or the user stays.
Linear, as secret_text: each flag or AUTH is tried once, and reads at most the two words after it.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from consumer.config.secret_names import MASK, is_prose, is_secret_key, quoted_span

# After a flag or AUTH, its argument follows blanks, or `', '` in a list's repr (`['--token',
# 'pw']`), also with the quotes escaped once or more as in a JSON string (`[\\"AUTH\\", \\"pw\\"]`).
_GAP = r"[ \t]++|(?P<list>\\{0,3}[\"'])[ \t]*+,[ \t]*+(?=(?P=list))"
# A long flag, then its value. Only flags named as in `name: value` (is_secret_key): `--password-file`,
# `--auth-mode`, `--key` (a key file) are not secrets; nor a short flag (`redis-cli -p 6379` is the
# port), but for redis-cli's `-a` (`_REDIS_CLI`). `--pass=pw` too: no `name=value` pair with a
# secret name (`pass` is a word of too much else), which masks `--password=pw` as a query's value.
_FLAG = re.compile(r"(?<![\w.-])--(?P<name>[\w.-]++)(?:" + _GAP + r"|(?P<eq>=)(?=\S))")
_PASSWORD_FLAGS = frozenset({"pass"})  # redis-cli's and valkey-cli's `--pass pw`
# redis-cli's password is `-a pw`; elsewhere `-a` is `all` (`ls -a`, `docker ps -a`): looked for
# only after one of these clients' names, in any case, and as Windows names them (`redis-cli.exe`).
_REDIS_CLI = re.compile(r"(?i:(?:redis|valkey|keydb)-cli(?:\.exe)?)(?![\w.-])")
_SHORT_PASSWORD = re.compile(r"(?<![\w.-])-a(?:" + _GAP + ")")
# ...up to the end of its command: a shell's separator (`;`, `&&`, `||`, `|`, `&`) or a line break
# (`redis-cli ping; ls -a /tmp` lists all of /tmp), but not one inside quotes (`-h 'a;b'`) nor a
# line break after a backslash (the command goes on: `redis-cli -h gw \` then `-a pw` below).
# Quotes are read on one line, with no escapes: a quote that does not close is the last of its kind
# on its line, so each is tried once and the search stays linear.
_COMMAND_END = re.compile(r"'[^'\r\n]*+'|\"[^\"\r\n]*+\"|(?P<end>[;|&]|(?<!\\)(?<!\\\r)[\r\n])")
# AUTH then its arguments, as flags (`_LIST_GAP` after a quoted one: redis-py's command args).
_AUTH = re.compile(r"(?<![\w.-])(?P<quote>\\{0,3}[\"'])?(?i:auth)(?(quote)(?P=quote))"
                   r"(?:[ \t]++|(?<=[\"'])[ \t]*+,[ \t]*+(?=\\{0,3}[\"']))")
# A word alone after AUTH at the end of a line or clause that says how it went (`AUTH OK`, `AUTH
# failed.`) is no password; after a user (`AUTH app OK`), or quoted, it is one.
_STATUS_WORDS = frozenset({"ok", "failed", "succeeded", "err", "error", "required"})
# An unquoted argument: up to a blank or a quote, less what closes around it (`(AUTH u pw)`) and a
# backslash escaping the quote after it (`\"AUTH pw\"` in a JSON string).
_WORD = re.compile(r"[^\s\"'<>]++")
_CLOSERS = ",;)]}\\"
_OPENERS = ("(", "[", "{")
_BLANKS = re.compile(r"[ \t]*+")
_LIST_GAP = re.compile(r"[ \t]*+,[ \t]*+(?=\\{0,3}[\"'])")  # only after a quoted argument
# AUTH as the RESP protocol writes it (a MONITOR-less trace, a repr of the bytes sent): `$4`, a line
# break, `AUTH`, a line break, then its arguments as bulk strings, each `$<length>` and a line
# break before it. The line breaks maybe escaped as in a repr or a JSON string (`\\r\\n`), or more
# than once (a repr inside a JSON string: `\\\\r\\\\n`): each escaped by the same run of n
# backslashes. There a backslash of the value is 2n of them, and n then `r` is a line break; from
# two on, the text is a JSON string's, which a raw `"` ends.
_MAX_ESCAPES = 8  # a repr in JSON in JSON: 4
_RESP_AUTH = re.compile(r"\$4(?P<eol>\r\n|(?P<escape>\\{1," + str(_MAX_ESCAPES) + r"})r(?P=escape)n)(?i:auth)(?P=eol)")
_RAW_BULK = re.compile(r"\$\d{1,9}+\r\n(?P<value>[^\r\n]*+)")


def _escaped_bulk(n: int) -> re.Pattern[str]:
    escape, value_char = "\\\\" * n, r"[^\r\n\\" + ('"' if n > 1 else "") + "]"
    return re.compile(r"\$\d{1,9}+" + escape + "r" + escape + "n(?P<value>(?:" + value_char + "|" + escape * 2
                      + r"|\\(?!" + "\\\\" * (n - 1) + r"[rn]))*+)")


_ESCAPED_BULK = {n: _escaped_bulk(n) for n in range(1, _MAX_ESCAPES + 1)}


class _Argument(NamedTuple):
    start: int
    end: int
    after: int  # where what follows it starts (after its closing quote)
    bare: bool  # not quoted


def mask_flags(text: str) -> str:
    parts: list[str] = []
    done = 0
    flags = [(flag.start(), flag.end()) for flag in _FLAG.finditer(text)
             if flag.group("name").lower() in _PASSWORD_FLAGS or (is_secret_key(flag.group("name")) and not flag["eq"])]
    short = _redis_cli_passwords(text)
    if short:
        flags = sorted(flags + short)
    for start, end in flags:
        # `--password --topic`: no value (a bare one; a quoted one may start with `-`). Told before
        # the word is read: `--pass=--pass=...` would read the rest of the run at each flag.
        if start < done or text.startswith("-", end):
            continue
        span = _argument(text, end)
        if span is not None:
            parts += (text[done:span.start], MASK)
            done = span.end
    return "".join(parts) + text[done:] if parts else text


def _redis_cli_passwords(text: str) -> list[tuple[int, int]]:
    """Where each `-a` of a redis-cli command is, and where its flag ends. Linear: each command is
    searched for its end once, and the next client's name from there."""
    found: list[tuple[int, int]] = []
    position = 0
    while (cli := _REDIS_CLI.search(text, position)) is not None:
        end = _COMMAND_END.search(text, cli.end())
        while end is not None and end.group("end") is None:  # a quoted argument: passed over
            end = _COMMAND_END.search(text, end.end())
        position = end.start() if end is not None else len(text)
        found += [(flag.start(), flag.end()) for flag in _SHORT_PASSWORD.finditer(text, cli.end(), position)]
    return found


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
        if first.bare and text.startswith(_OPENERS, first.start):
            continue  # `Digest auth (response=401)`: a remark in brackets follows the word, no argument
        gap = _after_gap(text, first)
        second = _argument(text, gap) if gap > first.after else None
        if second is not None and _ends_command(text, second.after):
            # `AUTH user pw`; but a user is a name of letters (`default`, `app`), and a first word
            # that is none before one that is (`AUTH s3cr3t! failed`) is the password: both go.
            secrets = [second]
            if _letters_only(text, second) and not _letters_only(text, first):
                secrets.insert(0, first)
        elif second is None and _ends_command(text, first.after):
            secrets = [] if _is_status(text, first) else [first]
        else:
            secrets = [word for word in (first, second) if word is not None and not _is_prose(text, word)]
        for secret in secrets:
            parts += (text[done:secret.start], MASK)
            done = secret.end
    return "".join(parts) + text[done:] if parts else text


def mask_resp_auth(text: str) -> str:
    """AUTH in RESP (`*3\\r\\n$4\\r\\nAUTH\\r\\n$7\\r\\ndefault\\r\\n$2\\r\\npw`) with
    the password masked: the only bulk string after AUTH, or the second (`AUTH user pw`, also inside
    `HELLO 3 AUTH user pw`). The lengths stay. Linear: each AUTH reads at most the two bulk strings
    after it, each up to its line break."""
    parts: list[str] = []
    done = 0
    for auth in _RESP_AUTH.finditer(text):
        if auth.start() < done:
            continue
        eol, escape, position = auth.group("eol"), auth.group("escape"), auth.end()
        bulk = _RAW_BULK if escape is None else _ESCAPED_BULK[len(escape)]
        values: list[tuple[int, int]] = []
        while len(values) < 2 and (found := bulk.match(text, position)) is not None:
            values.append(found.span("value"))
            position = found.end() + len(eol)
            if not text.startswith(eol, found.end()):
                break
        if values:
            start, end = values[-1]
            parts += (text[done:start], MASK)
            done = end
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


def _is_status(text: str, word: _Argument) -> bool:
    return word.bare and text[word.start:word.end].rstrip(".!:").lower() in _STATUS_WORDS


def _letters_only(text: str, word: _Argument) -> bool:
    # A colon after the letters is a label's (`AUTH failed: WRONGPASS`, `auth error: token expired`).
    end = word.end - 1 if word.bare and text.startswith(":", word.end - 1) else word.end
    return is_prose(text, word.start, end)
