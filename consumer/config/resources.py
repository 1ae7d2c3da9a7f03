"""Files that ship with the package: the default event schema and its mapping.

They live in the repository's top-level `schemas/` directory; a wheel carries them as
`consumer/_schemas` (see pyproject's force-include), a source checkout reads them in place.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent.parent


def schemas_dir() -> Path:
    installed = _PACKAGE / "_schemas"
    return installed if installed.is_dir() else _PACKAGE.parent / "schemas"


def default_schema_file() -> Path:
    return schemas_dir() / "transaction_event.avsc"


def default_mapping_file() -> Path:
    return schemas_dir() / "transaction_event.mapping.yaml"
