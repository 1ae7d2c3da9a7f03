"""A schema registry speaking the Confluent REST subset the decoder and producers use, over real
HTTP: register a schema under a subject, fetch a schema by id, list subjects."""

from __future__ import annotations

import json
import socket
import threading
import time

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


class RegistryServer:
    def __init__(self) -> None:
        self.schemas: dict[int, str] = {}
        self.types: dict[int, str] = {}  # schemaType of ids that are not Avro (PROTOBUF, JSON)
        self.subjects: dict[str, list[int]] = {}
        self.fetches: list[int] = []
        self.down = False  # answer 503 to everything, as a registry in trouble would
        app = Starlette(routes=[
            Route("/subjects", self._list, methods=["GET"]),
            Route("/subjects/{subject}/versions", self._register, methods=["POST"]),
            Route("/schemas/ids/{schema_id:int}", self._by_id, methods=["GET"]),
        ])
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True)

    def register(self, subject: str, schema: dict) -> int:  # type: ignore[type-arg]
        text = json.dumps(schema)
        known = {value: key for key, value in self.schemas.items()}
        schema_id = known.get(text) or len(self.schemas) + 1
        self.schemas[schema_id] = text
        self.subjects.setdefault(subject, []).append(schema_id)
        return schema_id

    def register_text(self, subject: str, text: str, schema_type: str) -> int:
        """A schema of another type (PROTOBUF, JSON), stored as its text."""
        schema_id = len(self.schemas) + 1
        self.schemas[schema_id] = text
        self.types[schema_id] = schema_type
        self.subjects.setdefault(subject, []).append(schema_id)
        return schema_id

    async def _list(self, request: Request) -> JSONResponse:
        if self.down:
            return JSONResponse({"error_code": 50301, "message": "unavailable"}, 503)
        return JSONResponse(sorted(self.subjects), media_type=CONTENT_TYPE)

    async def _register(self, request: Request) -> JSONResponse:
        body = await request.json()
        return JSONResponse({"id": self.register(request.path_params["subject"], json.loads(body["schema"]))},
                            media_type=CONTENT_TYPE)

    async def _by_id(self, request: Request) -> JSONResponse:
        schema_id = request.path_params["schema_id"]
        if self.down:
            return JSONResponse({"error_code": 50301, "message": "unavailable"}, 503)
        self.fetches.append(schema_id)
        if schema_id not in self.schemas:
            return JSONResponse({"error_code": 40403, "message": "Schema not found"}, 404)
        body = {"schema": self.schemas[schema_id]}
        if schema_id in self.types:
            body["schemaType"] = self.types[schema_id]
        return JSONResponse(body, media_type=CONTENT_TYPE)

    def __enter__(self) -> RegistryServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(10)
