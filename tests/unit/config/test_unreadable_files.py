"""A file a setting names that cannot be read: the message names the setting and the path, says
why, and what to do (`cannot read it (No such file or directory)` alone left the operator there)."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumer.config.loading import load_settings
from consumer.errors import ConfigError
from consumer.ingest.avro import load_schema_file
from consumer.ingest.mapping import DeclarativeMapper


@pytest.mark.parametrize("read", [
    lambda path: load_settings(path),
    lambda path: load_schema_file(path),
    lambda path: DeclarativeMapper.from_file(path),
])
def test_a_missing_file_says_what_to_do(tmp_path: Path, read) -> None:  # type: ignore[no-untyped-def]
    missing = tmp_path / "nosuch.yaml"
    with pytest.raises(ConfigError) as raised:
        read(missing)
    message = str(raised.value)
    assert str(missing) in message and "No such file or directory" in message
    assert "check the path" in message and "mounted" in message
