"""What the simulator answers, as bytes: the success body and the one error body shape.

Every error body, whatever produced it, is

    {"status": "<status word>", "code": <Pisano code or null>, "message": "<text>"}

For a Pisano code, status word, HTTP status and message come from `consumer.delivery.pisano_codes`; a
message may add a detail after a colon ("Invalid parameters: phone_numbers[3] is not a phone
number"), naming positions, never phone numbers. Answers Pisano has no code for (throttling,
oversized bodies, injected server errors) carry `"code": null` and the status word is the HTTP
reason phrase in snake case ("too_many_requests", "service_unavailable"). The one exception is
the injected "garbage" body: an nginx-style HTML page, so clients' defensive parsing is tested.
"""

from __future__ import annotations

import http
import json
from dataclasses import dataclass, field

from starlette.responses import Response

from consumer.delivery.pisano_codes import CODES

JSON = "application/json"
HTML = "text/html"
THROTTLED_MESSAGE = "Rate limit exceeded"


@dataclass(frozen=True)
class Answer:
    http_status: int
    body: bytes
    media_type: str = JSON
    headers: dict[str, str] = field(default_factory=dict)
    code: int | None = None

    def to_response(self) -> Response:
        return Response(self.body, self.http_status, self.headers, self.media_type)


class ErrorAnswer(Exception):
    """Raised while handling a request to answer it with an error; it never leaves the app."""

    def __init__(
        self,
        http_status: int,
        status: str,
        code: int | None,
        message: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    @classmethod
    def for_code(cls, code: int, detail: str | None = None) -> ErrorAnswer:
        entry = CODES[code]
        message = f"{entry.message}: {detail}" if detail else entry.message
        return cls(entry.http_status, entry.status, code, message)

    @classmethod
    def for_status(
        cls, http_status: int, message: str | None = None, headers: dict[str, str] | None = None
    ) -> ErrorAnswer:
        phrase = http.HTTPStatus(http_status).phrase
        status = phrase.lower().replace(" ", "_").replace("-", "_")
        return cls(http_status, status, None, message or phrase, headers)

    def to_answer(self) -> Answer:
        body = {"status": self.status, "code": self.code, "message": self.message}
        return Answer(self.http_status, json.dumps(body).encode(), JSON, self.headers, self.code)


def success_answer(request_id: str, accepted: int) -> Answer:
    body = {"status": "ok", "request_id": request_id, "accepted": accepted}
    return Answer(200, json.dumps(body).encode())


def garbage_answer(http_status: int) -> Answer:
    """The HTML a proxy in front of an API sends when the API behind it fails."""
    title = f"{http_status} {http.HTTPStatus(http_status).phrase}"
    page = (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    )
    return Answer(http_status, page.encode(), HTML)
