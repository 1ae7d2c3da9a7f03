import re
from pathlib import Path

import pytest

from consumer.delivery.failures import CODE_SCOPES, classify
from consumer.delivery.pisano_codes import CODES
from consumer.errors import PisanoApiError, PisanoTransportError

REFERENCE = Path(__file__).resolve().parents[2] / "data" / "pisano_codes.md"


def reference_codes() -> set[int]:
    return {int(code) for code in re.findall(r"\|\s*(13\d{3})\s*\|", REFERENCE.read_text())}


def test_every_code_is_classified() -> None:
    assert set(CODES) == set(CODE_SCOPES)


def test_the_code_table_is_the_reference_s() -> None:
    assert reference_codes() == set(CODES)


@pytest.mark.parametrize(("status", "code", "action", "scope"), [
    (401, 13001, "dead_letter", "account"),
    (404, 13002, "dead_letter", "request"),
    (403, 13036, "dead_letter", "account"),
    (400, 13034, "dead_letter", "request"),
    (400, 13028, "dead_letter", "recipient"),
    (400, 13017, "dead_letter", "recipient"),
    (429, None, "retry", "request"),
    (503, None, "retry", "request"),
    (408, None, "retry", "request"),
    (504, None, "ambiguous", "request"),
    (413, None, "dead_letter", "recipient"),
    (418, None, "dead_letter", "request"),
])
def test_api_errors(status: int, code: int | None, action: str, scope: str) -> None:
    verdict = classify(PisanoApiError(status, code, "x"))
    assert (verdict.action, verdict.scope) == (action, scope)


def test_transport_errors() -> None:
    assert classify(PisanoTransportError("refused", ambiguous=False)).action == "retry"
    assert classify(PisanoTransportError("read timeout", ambiguous=True)).action == "ambiguous"


# ------------------------------------------------------------------ 502: who answered decides

@pytest.mark.parametrize(("error", "action", "reason"), [
    # Pisano itself answered (its JSON error body): it refused the request before acting on it.
    (PisanoApiError(502, None, "Bad Gateway", pisano_body=True), "retry", "pisano_error"),
    # A gateway answered for it (HTML, plain text or nothing): the request may have reached Pisano.
    (PisanoApiError(502, None, "<html>502 Bad Gateway</html>"), "ambiguous", "ambiguous"),
    (PisanoApiError(502, None, "Bad Gateway"), "ambiguous", "ambiguous"),
    # Other 5xx keep their classification whoever answered.
    (PisanoApiError(503, None, "<html>503</html>"), "retry", "pisano_error"),
    (PisanoApiError(500, None, "Internal Server Error", pisano_body=True), "retry", "pisano_error"),
    (PisanoApiError(504, None, "Gateway Timeout", pisano_body=True), "ambiguous", "ambiguous"),
])
def test_a_502_is_classified_by_who_answered(error: PisanoApiError, action: str, reason: str) -> None:
    verdict = classify(error)
    assert (verdict.action, verdict.reason) == (action, reason)
