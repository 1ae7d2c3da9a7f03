"""Where `pisano-sms simulate` takes the tokens it accepts, and which places leak them.

`--token` is in the process's argv, which `ps` and /proc/<pid>/cmdline show every user of the
machine, and in the shell's history: kept for compatibility, with a warning. `--token-file`
(one token per line) and the settings PISANO_API_TOKEN / PISANO_API_TOKEN_FILE keep them out.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from consumer.config.secrets import check_token, read_secret_file
from consumer.errors import ConfigError

ARGV_WARNING = ("--token puts the token in the process list (ps) and the shell history; use --token-file FILE "
                "(one token per line), or PISANO_API_TOKEN / PISANO_API_TOKEN_FILE in the environment")
HINT = "give a readable file holding the accepted token(s), one per line"


def file_tokens(paths: Iterable[Path]) -> tuple[str, ...]:
    """Every token of every file, one per line; ConfigError naming the file, never its content."""
    tokens: list[str] = []
    for path in paths:
        lines = [line for line in read_secret_file("--token-file", path, HINT).splitlines() if line.strip()]
        if not lines:
            raise ConfigError(f"--token-file={path}: holds no token; {HINT}")
        for number, line in enumerate(lines, start=1):
            try:
                tokens.append(check_token(line))
            except ValueError as exc:
                raise ConfigError(f"--token-file={path}, token {number}: {exc}") from None
    return tuple(tokens)
