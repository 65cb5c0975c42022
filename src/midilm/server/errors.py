"""Every answer other than 2xx is one JSON body (:class:`~midilm.server.schemas.ErrorBody`)
with the request id: this module holds :class:`ApiError`, the exception handlers that turn
errors into those bodies, and the same mapping for an ``error`` server-sent event.

400 for bytes that are not MIDI or JSON, 401 without the bearer token, 404 for an unknown
model or job, 413 for a body over the upload limit, 422 for a parameter out of bounds
(naming the field and the bound) or a request the model cannot serve, 429 when the queue is
full (with ``Retry-After``), 503 past the time limit or without a renderer. Only a bug
answers 500; it is logged with the request id.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope

from midilm.errors import (
    GenerationRequestError,
    InvalidMidiError,
    MidilmError,
    UnsupportedScoreError,
)
from midilm.server.jobs import QueueFullError
from midilm.server.schemas import ErrorBody

__all__ = [
    "ApiError",
    "BodyTooLarge",
    "error_event",
    "error_response",
    "install_error_handlers",
]

log = logging.getLogger("midilm.server")


class ApiError(Exception):
    """An answer other than 2xx, with the :class:`ErrorBody` fields."""

    def __init__(
        self,
        status: int,
        error: str,
        message: str,
        *,
        field: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.field = field
        self.headers = dict(headers or {})


class BodyTooLarge(Exception):
    """A request body over the upload limit, found while reading it (raised by the edge)."""


def _request_id(scope: Scope) -> str:
    state = scope.get("state") or {}
    return str(state.get("request_id") or "-")


def error_response(
    scope: Scope,
    status: int,
    error: str,
    message: str,
    *,
    field: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    rid = _request_id(scope)
    body = ErrorBody(status=status, error=error, message=message, field=field, request_id=rid)
    return JSONResponse(
        body.model_dump(), status_code=status, headers={"X-Request-ID": rid, **(headers or {})}
    )


def _validation_message(errors: Iterable[Mapping[str, Any]]) -> tuple[str, str | None]:
    """``("bars: Input should be less than or equal to 64", "bars")`` from pydantic errors."""
    parts, first_field = [], None
    for err in list(errors)[:3]:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query")]
        # A union reports each alternative; its type names in loc say nothing to a user.
        loc = [p for p in loc if not re.match(r"^(int|str|float|list\[.*\]|literal\[.*\])$", p)]
        where = ".".join(loc)
        first_field = first_field or where or None
        message = str(err.get("msg", "invalid value"))
        if err.get("type") == "extra_forbidden":
            message = "unknown field"
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts), first_field


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error raised in a route with an :class:`ErrorBody`."""

    def handler(
        fn: Callable[[Request, Any], JSONResponse],
    ) -> Callable[[Request, Exception], Any]:
        async def wrapped(request: Request, exc: Exception) -> JSONResponse:
            return fn(request, exc)

        return wrapped

    def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(
            request.scope, exc.status, exc.error, exc.message, field=exc.field, headers=exc.headers
        )

    def validation(request: Request, exc: ValidationError | RequestValidationError) -> JSONResponse:
        message, field = _validation_message(exc.errors())
        return error_response(request.scope, 422, "invalid_parameter", message, field=field)

    def request_error(request: Request, exc: GenerationRequestError) -> JSONResponse:
        field = exc.field
        message = str(exc)
        return error_response(request.scope, 422, "invalid_request", message, field=field)

    def invalid_midi(request: Request, exc: InvalidMidiError) -> JSONResponse:
        return error_response(
            request.scope, 400, f"invalid_midi:{exc.reason}", str(exc), field="score"
        )

    def unsupported(request: Request, exc: UnsupportedScoreError) -> JSONResponse:
        return error_response(
            request.scope, 422, f"unsupported_score:{exc.reason}", str(exc), field="score"
        )

    def midilm_error(request: Request, exc: MidilmError) -> JSONResponse:
        return error_response(request.scope, 422, "cannot_serve", str(exc))

    def too_large(request: Request, exc: BodyTooLarge) -> JSONResponse:
        return error_response(request.scope, 413, "too_large", str(exc))

    def queue_full(request: Request, exc: QueueFullError) -> JSONResponse:
        return error_response(
            request.scope, 429, "busy", str(exc), headers={"Retry-After": str(exc.retry_after_s)}
        )

    def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        tag = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(
            request.scope, exc.status_code, tag, str(exc.detail), headers=exc.headers
        )

    def bug(request: Request, exc: Exception) -> JSONResponse:
        rid = _request_id(request.scope)
        log.error("request %s (%s %s) failed", rid, request.method, request.url.path, exc_info=exc)
        return error_response(
            request.scope,
            500,
            "internal_error",
            f"an unexpected error occurred; quote request id {rid} when reporting it",
        )

    table: list[tuple[type[Exception] | int, Callable[[Request, Any], JSONResponse]]] = [
        (ApiError, api_error),
        (RequestValidationError, validation),
        (ValidationError, validation),
        (GenerationRequestError, request_error),
        (InvalidMidiError, invalid_midi),
        (UnsupportedScoreError, unsupported),
        (MidilmError, midilm_error),
        (BodyTooLarge, too_large),
        (QueueFullError, queue_full),
        (StarletteHTTPException, http_error),
        (Exception, bug),
    ]
    for kind, fn in table:
        app.add_exception_handler(kind, handler(fn))


def error_event(scope: Scope, err: Exception) -> dict[str, Any]:
    """An error as the body of an ``error`` event (the status an HTTP answer would have)."""
    rid = _request_id(scope)
    if isinstance(err, ApiError):
        status, tag, field, message = err.status, err.error, err.field, err.message
    elif isinstance(err, GenerationRequestError):
        status, tag, field, message = 422, "invalid_request", err.field, str(err)
    elif isinstance(err, ValidationError):
        message, field = _validation_message(err.errors())
        status, tag = 422, "invalid_parameter"
    elif isinstance(err, MidilmError):
        status, tag, field, message = 422, "cannot_serve", None, str(err)
    else:
        log.error("request %s failed", rid, exc_info=err)
        status, tag, field = 500, "internal_error", None
        message = f"an unexpected error occurred; quote request id {rid} when reporting it"
    return ErrorBody(
        status=status, error=tag, message=message, field=field, request_id=rid
    ).model_dump()
