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
