"""The edge every HTTP request passes first, before any route: it gives the request an id
(echoed in ``X-Request-ID``), checks the bearer token, and holds the body to the upload
limit."""

from __future__ import annotations

import re
import secrets
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from midilm.server.errors import BodyTooLarge, error_response

__all__ = ["Edge"]

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_PUBLIC_PATHS = ("/", "/index.html", "/favicon.ico", "/openapi.json")
_PUBLIC_PREFIXES = ("/studio/", "/docs", "/static-offline-docs/")


class Edge:
    """Pure ASGI middleware: a request id on every answer, the bearer token on every API
    call, and the body size limit (by ``Content-Length`` at once, or while reading)."""

    def __init__(self, app: ASGIApp, *, token: str | None, max_bytes: int) -> None:
        self.app = app
        self.token = token
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        given = headers.get("x-request-id", "")
        rid = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                raw = list(message.get("headers", []))
                if not any(k.lower() == b"x-request-id" for k, _ in raw):
                    raw.append((b"x-request-id", rid.encode()))
                message = {**message, "headers": raw}
            await send(message)

        if self.token is not None and not _is_public(scope["path"]):
            auth = headers.get("authorization", "")
            scheme, _, value = auth.partition(" ")
            if scheme.lower() != "bearer" or not secrets.compare_digest(
                value.strip().encode(), self.token.encode()
            ):
                answer = error_response(
                    scope,
                    401,
                    "unauthorized",
                    "this server needs 'Authorization: Bearer <token>' (the --token it was "
                    "started with)",
                    headers={"WWW-Authenticate": "Bearer"},
                )
                await answer(scope, receive, send_with_id)
                return
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_bytes:
            answer = error_response(
                scope, 413, "too_large", _too_large(int(length), self.max_bytes)
            )
            await answer(scope, receive, send_with_id)
            return

        seen = 0

        async def counted_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(_too_large(seen, self.max_bytes, at_least=True))
            return message

        await self.app(scope, counted_receive, send_with_id)


def _is_public(path: str) -> bool:
    return path in _PUBLIC_PATHS or path.startswith(_PUBLIC_PREFIXES)


def _too_large(size: int, limit: int, *, at_least: bool = False) -> str:
    size_text = "more than" if at_least else f"{_mib(size)}, over"
    return f"the request body is {size_text} the {_mib(limit)} limit"


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB".replace(".0 MiB", " MiB")
