"""Secret names the masking of texts from elsewhere did not know as a value's name: `credentials`
and `passphrase` (a plug-in's CRM client, a key file's passphrase, quoted by a foreign exception)."""

from __future__ import annotations

import pytest

from consumer.operations.logs import redact_text


@pytest.mark.parametrize(("text", "masked"), [
    ("{'credentials': 'crm-cred-4x'}", "{'credentials': '***'}"),
    ('{"db_credentials": "crm-cred-4x", "host": "crm"}', '{"db_credentials": "***", "host": "crm"}'),
    ("ssl_key_passphrase: crm-phrase-5", "ssl_key_passphrase: ***"),
    ("{'passphrase': b'crm-phrase-5'}", "{'passphrase': b'***'}"),
    ("keyPassphrase=crm-phrase-5&x=1", "keyPassphrase=***&x=1"),
    # ...but prose and a word of state stay.
    ("Invalid credentials: check the user name and try again", None), ("credentials: missing", None),
    ('{"passphrase": null}', None),
])
def test_credentials_and_a_passphrase_are_masked_by_name(text: str, masked: str | None) -> None:
    """Found in review: `{'credentials': 'crm-cred-4x'}` and `passphrase: ...` in a foreign
    exception's text (a CRM client a plug-in mapper uses) reached the log and the dead-letter
    header in clear: neither was a name whose value the masking hides."""
    assert redact_text(text) == (text if masked is None else masked)
