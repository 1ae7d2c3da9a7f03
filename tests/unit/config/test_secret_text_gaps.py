"""The known gaps of the masking of texts from elsewhere (review of the sixth), one test per gap:
leaks (a credential shown) and over-masking (ordinary text hidden). Each is closed in the mechanism
that reads its form, so each test holds a family of forms, and the text near it that must stay."""

from __future__ import annotations

import pytest

from consumer.config.secret_text import mask_urls_in_text


@pytest.mark.parametrize(("text", "masked"), [
    ("redis-cli ping failed; ls -a /tmp/x", None), ("redis-cli ping && ls -a /tmp/x", None),
    ("redis-cli ping | grep -a PONG", None), ("redis-cli ping || ls -a /tmp/x", None),
    ("redis-cli ping\nls -a /tmp/x", None),
    ("redis-cli -a Sx-1 ping; ls -a /tmp/x", "redis-cli -a *** ping; ls -a /tmp/x"),
    ("redis-cli ping; redis-cli -a Sx-1 ping", "redis-cli ping; redis-cli -a *** ping"),
    ("redis-cli -h h -a 'Sx;1' ping", "redis-cli -h h -a '***' ping"),
])
def test_redis_cli_a_is_its_password_only_up_to_the_end_of_its_command(text: str, masked: str | None) -> None:
    assert mask_urls_in_text(text) == (text if masked is None else masked)


@pytest.mark.parametrize(("text", "masked"), [
    # A session cookie's name outside a Cookie header: any name ending in `_session`, `session_id`, `sessid`.
    ("laravel_session=Sx-1abc; lang=tr", "laravel_session=***; lang=tr"),
    ("set ci_session=Sx-1 then", "set ci_session=*** then"),
    ("my_session_id=Sx-1", "my_session_id=***"), ("app-session=Sx-1", "app-session=***"),
    ("laravelSession=Sx-1", "laravelSession=***"), ("wp_sessid=Sx-1", "wp_sessid=***"),
    ("{'laravel_session': 'Sx-1abc'}", "{'laravel_session': '***'}"),
    ('"connect_session_id": "Sx-1"', '"connect_session_id": "***"'),
    # A JSON or dict `session` / `sid` value.
    ('{"session": "Sx-1abc"}', '{"session": "***"}'),
    ('{"sid": "Sx-1", "code": 13028}', '{"sid": "***", "code": 13028}'),
    ("{'session': 'abcSx1'}", "{'session': '***'}"), ('{\\"sid\\": \\"Sx-1\\"}', '{\\"sid\\": \\"***\\"}'),
    ("session: Sx-1abc", "session: ***"),
    # ...but a word (a state), a structure, a setting and a word that ends in `session`, stay.
    ('{"session": "expired"}', None), ("{'sid': None}", None), ('{"session": {"id": 4}}', None),
    ("session.timeout.ms=45000", None), ("obsession=none", None), ("possession: 3", None),
    ("session_timeout=30", None), ("session expired", None),
])
def test_a_session_id_under_a_session_name_is_masked(text: str, masked: str | None) -> None:
    assert mask_urls_in_text(text) == (text if masked is None else masked)
