"""The FastAPI app: REST endpoints, server-sent events, the web studio.

``create_app(models)`` builds an app around loaded models. Each task (generate, continue,
infill, add a track, render) becomes a job on a bounded :class:`~midilm.server.jobs.JobQueue`
served by worker threads; the request waits for it (its answer is MIDI, JSON or a stream of
server-sent events, chosen by ``Accept``). A client that goes away cancels its job.

Errors are answered with one JSON body (:class:`~midilm.server.schemas.ErrorBody`) and the
``X-Request-ID`` every answer carries: 400 for bytes that are not MIDI or JSON, 401 without
the bearer token, 404 for an unknown model or job, 413 for a body over the upload limit,
422 for a parameter out of bounds (naming the field and the bound) or a request the model
cannot serve, 429 when the queue is full (with ``Retry-After``), 503 past the time limit or
without a renderer. Only a bug answers 500; it is logged with the request id.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import midilm
from midilm.errors import (
    GenerationRequestError,
    InvalidMidiError,
    MidilmError,
    UnsupportedScoreError,
)
from midilm.score.gm import parse_instrument
from midilm.score.meter import bar_grid
from midilm.server.jobs import Job, JobQueue, QueueFullError
from midilm.server.limits import (
    MAX_BARS,
    MAX_CANDIDATES,
    MAX_NOTES,
    MAX_RENDER_SECONDS,
    MAX_TRACKS,
    ServerLimits,
)
from midilm.server.schemas import (
    AddTrackParams,
    ContinueParams,
    ErrorBody,
    GenerateParams,
    InfillParams,
    JobStatus,
    RegenerateTrackParams,
    RenderParams,
    SamplingParams,
    ScoreJSON,
    ScoresAnswer,
    score_from_json,
    score_to_dict,
)

if TYPE_CHECKING:
    from symusic.core import ScoreTick

    from midilm.model.music_model import MusicModel

__all__ = ["ApiError", "ModelRegistry", "create_app"]

log = logging.getLogger("midilm.server")

_MIDI_TYPES = frozenset(
    {"audio/midi", "audio/x-midi", "audio/mid", "application/x-midi", "application/octet-stream"}
)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_PUBLIC_PATHS = ("/", "/index.html", "/favicon.ico", "/openapi.json")
_PUBLIC_PREFIXES = ("/studio/", "/docs", "/static-offline-docs/")
_WATCHDOG_GRACE_S = 10.0  # how long past its limit a job may take to reach its next check


# --------------------------------------------------------------------------- errors
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


class _BodyTooLarge(Exception):
    pass


def _request_id(scope: Scope) -> str:
    state = scope.get("state") or {}
    return str(state.get("request_id") or "-")


def _error_response(
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


def _install_error_handlers(app: FastAPI) -> None:
    def handler(
        fn: Callable[[Request, Any], JSONResponse],
    ) -> Callable[[Request, Exception], Any]:
        async def wrapped(request: Request, exc: Exception) -> JSONResponse:
            return fn(request, exc)

        return wrapped

    def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error_response(
            request.scope, exc.status, exc.error, exc.message, field=exc.field, headers=exc.headers
        )

    def validation(request: Request, exc: ValidationError | RequestValidationError) -> JSONResponse:
        message, field = _validation_message(exc.errors())
        return _error_response(request.scope, 422, "invalid_parameter", message, field=field)

    def request_error(request: Request, exc: GenerationRequestError) -> JSONResponse:
        field = exc.field
        message = str(exc)
        return _error_response(request.scope, 422, "invalid_request", message, field=field)

    def invalid_midi(request: Request, exc: InvalidMidiError) -> JSONResponse:
        return _error_response(
            request.scope, 400, f"invalid_midi:{exc.reason}", str(exc), field="score"
        )

    def unsupported(request: Request, exc: UnsupportedScoreError) -> JSONResponse:
        return _error_response(
            request.scope, 422, f"unsupported_score:{exc.reason}", str(exc), field="score"
        )

    def midilm_error(request: Request, exc: MidilmError) -> JSONResponse:
        return _error_response(request.scope, 422, "cannot_serve", str(exc))

    def too_large(request: Request, exc: _BodyTooLarge) -> JSONResponse:
        return _error_response(request.scope, 413, "too_large", str(exc))

    def queue_full(request: Request, exc: QueueFullError) -> JSONResponse:
        return _error_response(
            request.scope, 429, "busy", str(exc), headers={"Retry-After": str(exc.retry_after_s)}
        )

    def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        tag = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error_response(
            request.scope, exc.status_code, tag, str(exc.detail), headers=exc.headers
        )

    def bug(request: Request, exc: Exception) -> JSONResponse:
        rid = _request_id(request.scope)
        log.error("request %s (%s %s) failed", rid, request.method, request.url.path, exc_info=exc)
        return _error_response(
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
        (_BodyTooLarge, too_large),
        (QueueFullError, queue_full),
        (StarletteHTTPException, http_error),
        (Exception, bug),
    ]
    for kind, fn in table:
        app.add_exception_handler(kind, handler(fn))


# --------------------------------------------------------------------------- the edge
class _Edge:
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
                answer = _error_response(
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
            answer = _error_response(
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
                    raise _BodyTooLarge(_too_large(seen, self.max_bytes, at_least=True))
            return message

        await self.app(scope, counted_receive, send_with_id)


def _is_public(path: str) -> bool:
    return path in _PUBLIC_PATHS or path.startswith(_PUBLIC_PREFIXES)


def _too_large(size: int, limit: int, *, at_least: bool = False) -> str:
    size_text = "more than" if at_least else f"{_mib(size)}, over"
    return f"the request body is {size_text} the {_mib(limit)} limit"


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB".replace(".0 MiB", " MiB")


# --------------------------------------------------------------------------- models
class ModelRegistry:
    """Loaded models by id; the first is the default."""

    def __init__(self, models: Mapping[str, MusicModel]) -> None:
        if not models:
            raise ValueError("a server needs at least one model")
        self._models = dict(models)
        self.default = next(iter(self._models))

    @classmethod
    def load(cls, specs: Iterable[str | Path | tuple[str, Any]]) -> ModelRegistry:
        """Load models from ``"DIR"``, ``"NAME=DIR"``, ``"bundled:NAME"`` or ``(name,
        MusicModel-or-path)`` items; ids are the folder names unless given."""
        from midilm.model.loading import BUNDLED_PREFIX, load_model
        from midilm.model.music_model import MusicModel

        models: dict[str, MusicModel] = {}
        for spec in specs:
            if isinstance(spec, tuple):
                name, source = spec
            else:
                text = str(spec)
                name, sep, path = text.partition("=")
                if not sep or not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*$", name):
                    name, path = "", text
                source = path
                if not name:
                    name = (
                        path[len(BUNDLED_PREFIX) :]
                        if path.startswith(BUNDLED_PREFIX)
                        else Path(path).expanduser().resolve().name
                    )
            if name in models:
                raise ValueError(f"two models are named {name!r}; name them with NAME=DIR")
            models[name] = source if isinstance(source, MusicModel) else load_model(source)
        return cls(models)

    @property
    def ids(self) -> list[str]:
        return list(self._models)

    def get(self, model_id: str | None, *, field: str | None = "model") -> tuple[str, MusicModel]:
        model_id = model_id or self.default
        if model_id not in self._models:
            message = f"no model {model_id!r}; this server has {', '.join(self._models)}"
            if field is None:
                raise ApiError(404, "unknown_model", message)
            raise ApiError(422, "unknown_model", message, field=field)
        return model_id, self._models[model_id]


def _capabilities(model_id: str, model: MusicModel, limits: ServerLimits) -> dict[str, Any]:
    """``model.capabilities()`` and what this server accepts per request (``limits``)."""
    return {
        "id": model_id,
        **model.capabilities(),
        "parameters": model.num_parameters,
        "limits": {
            "max_bars": MAX_BARS,
            "max_candidates": MAX_CANDIDATES,
            "max_tracks": MAX_TRACKS,
            "max_notes": MAX_NOTES,
            "max_render_seconds": MAX_RENDER_SECONDS,
            "max_upload_bytes": limits.max_upload_bytes,
            "job_timeout_s": limits.job_timeout_s,
        },
    }


# --------------------------------------------------------------------------- inputs
async def _read_body(request: Request) -> bytes:
    return await request.body()


def _content_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _multi(items: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Query or form fields as a dict: repeated keys and commas make lists."""
    out: dict[str, list[str]] = {}
    for key, value in items:
        out.setdefault(key, []).extend(v.strip() for v in value.split(",") if v.strip() != "")
    return {k: (v[0] if len(v) == 1 else v) for k, v in out.items()}


_LIST_ONLY = ("instruments", "highlight")  # fields a single query value must still fill


def _params(cls: type[BaseModel], data: dict[str, Any]) -> Any:
    for name in _LIST_ONLY:
        if name in cls.model_fields and isinstance(data.get(name), str):
            data = {**data, name: [data[name]]}
    return cls.model_validate(data)


def _parse_json(raw: bytes, what: str) -> Any:
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ApiError(400, "invalid_json", f"{what} is not valid JSON ({err})") from err


def _score_from_data(data: Any) -> ScoreTick:
    class _Holder(BaseModel):
        score: ScoreJSON

    holder = _Holder.model_validate({"score": data})
    try:
        return score_from_json(holder.score)
    except ValueError as err:
        raise ApiError(422, "invalid_parameter", str(err), field="score") from err


async def _score_from_midi(raw: bytes, name: str, max_bytes: int) -> ScoreTick:
    return await run_in_threadpool(midilm.load_midi, raw, name=name, max_bytes=max_bytes)


def _check_score(score: ScoreTick) -> None:
    if len(score.tracks) > MAX_TRACKS:
        raise ApiError(
            422,
            "invalid_parameter",
            f"score.tracks: the score has {len(score.tracks)} tracks; at most "
            f"{MAX_TRACKS} are accepted",
            field="score.tracks",
        )
    notes = int(score.note_num())
    if notes == 0:
        raise ApiError(422, "invalid_parameter", "score: the score has no notes", field="score")
    if notes > MAX_NOTES:
        raise ApiError(
            422,
            "invalid_parameter",
            f"score: the score has {notes} notes; at most {MAX_NOTES} are accepted",
            field="score",
        )


async def _task_input(
    request: Request, cls: type[BaseModel], *, needs_score: bool, max_bytes: int
) -> tuple[Any, ScoreTick | None]:
    """The parameters and the score of a task, from any of the accepted request forms:
    a JSON object (``{"score": {...}, "bars": 4}``), MIDI bytes (parameters in the query),
    or a multipart form (a ``file`` field, the parameters as fields)."""
    query = _multi(request.query_params.multi_items())
    ctype = _content_type(request)
    score: ScoreTick | None = None
    score_data: Any = None
    if ctype == "multipart/form-data":
        async with request.form(max_files=2, max_fields=64) as form:
            fields: list[tuple[str, str]] = []
            upload: UploadFile | None = None
            for key, value in form.multi_items():
                if isinstance(value, UploadFile):
                    upload = value
                else:
                    fields.append((key, value))
            data = {**query, **_multi(fields)}
            if isinstance(data.get("score"), str) and needs_score:
                score_data = _parse_json(data.pop("score").encode(), "the score field")
            if upload is not None:
                raw = await upload.read()
                name = upload.filename or "upload"
                if name.lower().endswith(".json") or upload.content_type == "application/json":
                    score_data = _parse_json(raw, name)
                else:
                    score = await _score_from_midi(raw, name, max_bytes)
    elif ctype in _MIDI_TYPES:
        data = query
        score = await _score_from_midi(await _read_body(request), "upload", max_bytes)
    elif ctype in ("application/json", "") or ctype.endswith("+json"):
        raw = await _read_body(request)
        body = _parse_json(raw, "the request body") if raw.strip() else {}
        if not isinstance(body, dict):
            raise ApiError(422, "invalid_parameter", "the request body must be a JSON object")
        data = {**query, **body}
        if needs_score:
            score_data = data.pop("score", None)
    else:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"send JSON, MIDI (audio/midi) or a multipart form, not {ctype!r}",
        )
    if needs_score and score is None:
        if score_data is None:
            raise ApiError(
                422,
                "invalid_parameter",
                "score: send a score (MIDI bytes, a file field, or a JSON 'score')",
                field="score",
            )
        score = _score_from_data(score_data)
    if score is not None:
        _check_score(score)
    return _params(cls, data), score


def _answer_kind(request: Request) -> str:
    accept = request.headers.get("accept", "").lower()
    if "text/event-stream" in accept:
        return "sse"
    if "application/json" in accept and "audio/midi" not in accept:
        return "json"
    return "midi"


# --------------------------------------------------------------------------- jobs
def _stream_job(
    model: MusicModel, task: str, kwargs: dict[str, Any], partials: bool = False
) -> Callable[[Job], Any]:
    """A job that runs ``model.stream(task, **kwargs)``, publishing each finished bar (with
    the first candidate so far when ``partials``) and stopping (closing the stream) when
    the job is cancelled."""

    def run(job: Job) -> list[Any]:
        stream = model.stream(task, **kwargs)
        result: list[Any] | None = None
        try:
            for event in stream:
                job.check()
                if event.kind == "done":
                    result = list(event.result or [])
                    continue
                progress: dict[str, Any] = {
                    "kind": event.kind,
                    "done": event.done,
                    "total": event.total,
                }
                if partials and event.result:  # the first candidate so far
                    progress["score"] = score_to_dict(event.result[0])
                job.publish(progress)
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
        if result is None:
            raise RuntimeError(f"{task}: the model's stream ended without a result")
        return result

    return run


async def _wait_for_disconnect(request: Request) -> None:
    """Return once the client has gone away (the body must have been read already)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def _await_job(job: Job, request: Request) -> Any:
    """The job's result; cancels it when the client disconnects or it overstays."""
    loop = asyncio.get_running_loop()
    events = job.subscribe(loop)
    gone = asyncio.ensure_future(_wait_for_disconnect(request))
    try:
        while True:
            getter = asyncio.ensure_future(events.get())
            finished, _ = await asyncio.wait(
                {getter, gone}, timeout=1.0, return_when=asyncio.FIRST_COMPLETED
            )
            if getter not in finished:
                getter.cancel()
            if gone in finished:
                job.cancel()
                log.info("job %s cancelled: the client disconnected", job.id)
                raise ApiError(499, "client_closed", "the client closed the connection")
            if getter in finished and getter.result() is None:
                break
            if job.running_s > job.timeout_s + _WATCHDOG_GRACE_S:
                job.cancel("timeout")
                break
    finally:
        gone.cancel()
        job.unsubscribe(events)
    return _outcome(job)


def _outcome(job: Job) -> Any:
    """The result of a finished job, or the error it ends in."""
    if job.state == "done":
        return job.result
    if job.state == "failed" and job.error is not None:
        raise job.error
    if job.cancel_reason == "timeout" or (not job.finished and job.cancelled):
        raise ApiError(
            503,
            "time_limit",
            f"the job ran past the {job.timeout_s:g} s limit and was stopped; ask "
            "for fewer bars or candidates",
            headers={"Retry-After": "1"},
        )
    raise ApiError(409, "cancelled", f"job {job.id} was cancelled")


def _sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


# --------------------------------------------------------------------------- the app
def create_app(
    models: ModelRegistry | Mapping[str, Any] | Iterable[str | Path],
    *,
    limits: ServerLimits | None = None,
    token: str | None = None,
) -> FastAPI:
    """The app serving ``models`` (a :class:`ModelRegistry`, ``{id: MusicModel or
    path}``, or model specs as for ``midilm serve --model``).

    ``token``: when set, every API call needs ``Authorization: Bearer <token>`` (the
    studio page and the docs load without it).
    """
    from fastapi_offline import FastAPIOffline

    limits = limits or ServerLimits()
    if isinstance(models, ModelRegistry):
        registry = models
    elif isinstance(models, Mapping):
        registry = ModelRegistry.load(list(models.items()))
    else:
        registry = ModelRegistry.load(models)
    queue = JobQueue(
        workers=limits.workers, queue_size=limits.queue_size, timeout_s=limits.job_timeout_s
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        queue.shutdown()

    app = FastAPIOffline(
        title="midilm",
        version=midilm.__version__,
        description=(
            "Compose, continue and infill multi-track music with GPT-2 models of symbolic "
            "music. Bars and tracks are numbered from 1. Answers are MIDI by default, JSON "
            "with `Accept: application/json`, server-sent events with "
            "`Accept: text/event-stream`."
        ),
        redoc_url=None,
        lifespan=lifespan,
    )
    app.openapi = _openapi_with_schemas(app)  # type: ignore[method-assign]
    app.state.registry = registry
    app.state.queue = queue
    app.state.limits = limits
    _install_error_handlers(app)
    app.add_middleware(_Edge, token=token, max_bytes=limits.max_upload_bytes)

    async def run_task(
        request: Request,
        kind: str,
        params: SamplingParams,
        task: str,
        kwargs: dict[str, Any],
    ) -> Response:
        model_id, model = registry.get(params.model)
        answer = _answer_kind(request)
        if answer == "midi" and params.num_samples > 1:
            raise ApiError(
                422,
                "invalid_parameter",
                "num_samples: a MIDI answer holds one score; ask for JSON "
                "(Accept: application/json) to receive several candidates",
                field="num_samples",
            )
        kwargs = {**kwargs, **params.sampling_kwargs()}
        partials = answer == "sse"  # events carry the music written so far
        job = queue.submit(kind, _stream_job(model, task, kwargs, partials), model=model_id)
        headers = {"X-Job-ID": job.id}
        if answer == "sse":
            return StreamingResponse(
                _sse_events(job, model_id, request.scope),
                media_type="text/event-stream",
                headers={**headers, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        try:
            scores = await _await_job(job, request)
        finally:
            job.release()
        if answer == "json":
            payload = await run_in_threadpool(_scores_answer, job.id, model_id, scores)
            return JSONResponse(payload, headers=headers)
        data = await run_in_threadpool(lambda: bytes(scores[0].dumps_midi()))
        return Response(
            data,
            media_type="audio/midi",
            headers={**headers, "Content-Disposition": f'attachment; filename="midilm-{kind}.mid"'},
        )

    async def _sse_events(job: Job, model_id: str, scope: Scope) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        events = job.subscribe(loop)
        try:
            yield _sse("job", {"job_id": job.id, "model": model_id, "kind": job.kind})
            while True:
                try:
                    item = await asyncio.wait_for(events.get(), timeout=10.0)
                except asyncio.TimeoutError:
                    if job.running_s > job.timeout_s + _WATCHDOG_GRACE_S:
                        job.cancel("timeout")
                        break
                    yield b": waiting\n\n"  # keeps proxies from closing an idle stream
                    continue
                if item is None:
                    break
                yield _sse("progress", item)
            try:
                scores = _outcome(job)
                payload = await run_in_threadpool(_scores_answer, job.id, model_id, scores)
                yield _sse("result", payload)
            except Exception as err:  # noqa: BLE001 - every failure becomes an error event
                yield _sse("error", _error_event(scope, err))
        finally:
            job.unsubscribe(events)
            if not job.finished:
                job.cancel()
                log.info("job %s cancelled: the event stream closed", job.id)
            job.release()

    # ---------------------------------------------------------------- endpoints
    @app.get("/health", tags=["server"])
    async def health() -> dict[str, Any]:
        """Liveness, the models, and the queue's depth."""
        return {
            "status": "ok",
            "version": midilm.__version__,
            "models": registry.ids,
            "queue": queue.stats(),
        }

    @app.get("/models", tags=["models"])
    async def list_models() -> list[dict[str, Any]]:
        """The models this server runs (the first is the default)."""
        out = []
        for model_id in registry.ids:
            _, model = registry.get(model_id)
            out.append(
                {
                    "id": model_id,
                    "kind": model.kind,
                    "default": model_id == registry.default,
                    "parameters": model.num_parameters,
                }
            )
        return out

    @app.get("/models/{model_id}", tags=["models"])
    async def model_info(model_id: str) -> dict[str, Any]:
        """What a model can do: its instruments, density bins, meters, bar limits."""
        model_id, model = registry.get(model_id, field=None)
        return _capabilities(model_id, model, limits)

    @app.post("/generate", tags=["tasks"], openapi_extra=_body_doc(GenerateParams, score=False))
    async def generate(request: Request) -> Response:
        """Compose a new piece (every field optional)."""
        params, _ = await _task_input(
            request, GenerateParams, needs_score=False, max_bytes=limits.max_upload_bytes
        )
        for index, instrument in enumerate(params.instruments or []):
            _check_instrument(instrument, f"instruments.{index}")
        kwargs: dict[str, Any] = {}
        for name in ("bars", "instruments", "density", "meter", "tempo"):
            if getattr(params, name) is not None:
                kwargs[name] = getattr(params, name)
        return await run_task(request, "generate", params, "generate", kwargs)

    @app.post("/continue", tags=["tasks"], openapi_extra=_body_doc(ContinueParams))
    async def continue_(request: Request) -> Response:
        """Continue a score by some bars in every track."""
        params, score = await _task_input(
            request, ContinueParams, needs_score=True, max_bytes=limits.max_upload_bytes
        )
        kwargs: dict[str, Any] = {"prompt": score, "bars": params.bars}
        if params.density is not None:
            kwargs["density"] = params.density
        return await run_task(request, "continue", params, "generate", kwargs)

    @app.post("/infill", tags=["tasks"], openapi_extra=_body_doc(InfillParams))
    async def infill(request: Request) -> Response:
        """Write chosen bars of chosen tracks anew (numbered from 1); nothing else changes."""
        params, score = await _task_input(
            request, InfillParams, needs_score=True, max_bytes=limits.max_upload_bytes
        )
        tracks = params.track if isinstance(params.track, list) else [params.track]
        bars = params.bars if isinstance(params.bars, list) else [params.bars]
        for number in tracks:
            if number > len(score.tracks):
                raise ApiError(
                    422,
                    "invalid_parameter",
                    f"track: track {number} is not in the score ({len(score.tracks)} tracks)",
                    field="track",
                )
        count = len(await run_in_threadpool(bar_grid, score))
        for number in bars:
            if number > count:
                raise ApiError(
                    422,
                    "invalid_parameter",
                    f"bars: bar {number} is not in the score ({count} bars)",
                    field="bars",
                )
        kwargs: dict[str, Any] = {
            "score": score,
            "track": [t - 1 for t in tracks] if len(tracks) > 1 else tracks[0] - 1,
            "bars": [b - 1 for b in bars],
        }
        return await run_task(request, "infill", params, "infill", kwargs)

    @app.post("/add-track", tags=["tasks"], openapi_extra=_body_doc(AddTrackParams))
    async def add_track(request: Request) -> Response:
        """Write one more track against the others."""
        params, score = await _task_input(
            request, AddTrackParams, needs_score=True, max_bytes=limits.max_upload_bytes
        )
        if len(score.tracks) >= MAX_TRACKS:
            raise ApiError(
                422,
                "invalid_parameter",
                f"score.tracks: the score has {len(score.tracks)} tracks already; "
                f"at most {MAX_TRACKS} are accepted",
                field="score.tracks",
            )
        _check_instrument(params.instrument, "instrument")
        kwargs: dict[str, Any] = {"score": score, "instrument": params.instrument}
        if params.density is not None:
            kwargs["density"] = params.density
        return await run_task(request, "add-track", params, "add_track", kwargs)

    @app.post("/regenerate-track", tags=["tasks"], openapi_extra=_body_doc(RegenerateTrackParams))
    async def regenerate_track(request: Request) -> Response:
        """Write one track (numbered from 1) anew against the others."""
        params, score = await _task_input(
            request, RegenerateTrackParams, needs_score=True, max_bytes=limits.max_upload_bytes
        )
        if params.track > len(score.tracks):
            raise ApiError(
                422,
                "invalid_parameter",
                f"track: track {params.track} is not in the score ({len(score.tracks)} tracks)",
                field="track",
            )
        kwargs: dict[str, Any] = {"score": score, "track": params.track - 1}
        if params.density is not None:
            kwargs["density"] = params.density
        return await run_task(request, "regenerate-track", params, "regenerate_track", kwargs)

    @app.post("/render", tags=["tasks"], openapi_extra=_body_doc(RenderParams, answer="render"))
    async def render(request: Request) -> Response:
        """Render a score as audio (``format=wav``) or a piano-roll picture (``format=png``)."""
        params, score = await _task_input(
            request, RenderParams, needs_score=True, max_bytes=limits.max_upload_bytes
        )
        seconds = float(await run_in_threadpool(lambda: score.to("second").end()))
        if seconds > MAX_RENDER_SECONDS:
            raise ApiError(
                422,
                "invalid_parameter",
                f"score: it lasts {seconds:.0f} s; at most {MAX_RENDER_SECONDS} s are rendered",
                field="score",
            )
        highlight: list[Any] | None = None
        if params.highlight:
            if params.track is not None and params.track > len(score.tracks):
                raise ApiError(
                    422,
                    "invalid_parameter",
                    f"track: track {params.track} is not in the score",
                    field="track",
                )
            highlight = [
                (params.track - 1, bar - 1) if params.track is not None else bar - 1
                for bar in params.highlight
            ]
        job = queue.submit("render", _render_job(score, params.format, highlight))
        try:
            data = await _await_job(job, request)
        finally:
            job.release()
        media = "audio/wav" if params.format == "wav" else "image/png"
        return Response(data, media_type=media, headers={"X-Job-ID": job.id})

    @app.post("/convert", tags=["scores"], openapi_extra=_body_doc(None, answer="convert"))
    async def convert(request: Request) -> Response:
        """A score as JSON (``Accept: application/json``, the default) or as MIDI
        (``Accept: audio/midi``): read an uploaded MIDI file, or write one."""
        _, score = await _task_input(
            request, _NoParams, needs_score=True, max_bytes=limits.max_upload_bytes
        )
        accept = request.headers.get("accept", "").lower()
        if "audio/midi" in accept:
            data = await run_in_threadpool(lambda: bytes(score.dumps_midi()))
            return Response(
                data,
                media_type="audio/midi",
                headers={"Content-Disposition": 'attachment; filename="midilm.mid"'},
            )
        payload = await run_in_threadpool(score_to_dict, score)
        return JSONResponse(payload)

    @app.get("/jobs/{job_id}", tags=["jobs"])
    async def job_status(job_id: str) -> JobStatus:
        """A job's state and progress."""
        return _job_status(_job(queue, job_id))

    @app.post("/jobs/{job_id}/cancel", tags=["jobs"])
    async def cancel_job(job_id: str) -> JobStatus:
        """Stop a job (at its next bar); its request answers 409, its stream an error."""
        job = _job(queue, job_id)
        job.cancel()
        return _job_status(job)

    # ---------------------------------------------------------------- the studio
    studio = resources.files("midilm.server") / "static"

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(str(studio / "index.html"), media_type="text/html")

    app.mount("/studio", StaticFiles(directory=str(studio)), name="studio")
    return app


class _NoParams(BaseModel):
    model_config = {"extra": "forbid"}


def _check_instrument(value: int | str, field: str) -> None:
    """422 for a name no GM instrument or alias answers to (with the closest names)."""
    try:
        parse_instrument(value)
    except (ValueError, TypeError) as err:
        raise ApiError(422, "invalid_parameter", f"{field}: {err}", field=field) from err


def _job(queue: JobQueue, job_id: str) -> Job:
    job = queue.get(job_id)
    if job is None:
        raise ApiError(404, "unknown_job", f"no job {job_id!r} (finished jobs are kept a while)")
    return job


def _job_status(job: Job) -> JobStatus:
    done, total = job.progress
    return JobStatus(
        id=job.id, kind=job.kind, model=job.model, state=job.state, done=done, total=total
    )


def _scores_answer(job_id: str, model_id: str, scores: list[Any]) -> dict[str, Any]:
    """A :class:`ScoresAnswer` as JSON-ready data."""
    return {"job_id": job_id, "model": model_id, "scores": [score_to_dict(s) for s in scores]}


def _error_event(scope: Scope, err: Exception) -> dict[str, Any]:
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


def _render_job(
    score: ScoreTick, fmt: str, highlight: list[Any] | None = None
) -> Callable[[Job], bytes]:
    """A job that renders ``score`` as WAV bytes (FluidSynth) or a PNG piano roll; a
    missing renderer, synthesizer or soundfont is a 503, not a failure of the request."""

    def unavailable(err: BaseException) -> ApiError:
        return ApiError(503, "render_unavailable", f"cannot render {fmt} here: {err}")

    def run(job: Job) -> bytes:
        try:
            from midilm import render as rendering
        except ImportError as err:
            raise unavailable(err) from err
        try:
            if fmt == "wav":
                return rendering.audio_bytes(score, "wav")
            return rendering.pianoroll_bytes(score, "png", highlight=highlight)
        except (rendering.SoundfontNotFoundError, rendering.RenderError, ImportError) as err:
            raise unavailable(err) from err

    return run


def _openapi_with_schemas(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """FastAPI's OpenAPI document plus the schemas the hand-read bodies refer to."""
    from pydantic.json_schema import models_json_schema

    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = generate()
        _, defs = models_json_schema(
            [(m, "validation") for m in (ScoreJSON, ScoresAnswer, ErrorBody)],
            ref_template="#/components/schemas/{model}",
        )
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        for name, schema in defs.get("$defs", {}).items():
            schemas.setdefault(name, schema)
        app.openapi_schema = document
        return document

    return openapi


def _body_doc(
    params: type[BaseModel] | None, *, score: bool = True, answer: str = "score"
) -> dict[str, Any]:
    """The OpenAPI request body and answers of an endpoint that reads its body itself
    (JSON, MIDI bytes or a form, which FastAPI cannot declare as one parameter)."""
    json_schema: dict[str, Any] = {"type": "object", "properties": {}}
    if params is not None:
        json_schema = params.model_json_schema(ref_template="#/components/schemas/{model}")
        json_schema.pop("$defs", None)
        json_schema.pop("title", None)
    if score:
        json_schema = {
            **json_schema,
            "properties": {
                "score": {"$ref": "#/components/schemas/ScoreJSON"},
                **json_schema.get("properties", {}),
            },
        }
    content: dict[str, Any] = {"application/json": {"schema": json_schema}}
    if score:
        binary = {"type": "string", "format": "binary"}
        content["audio/midi"] = {"schema": binary}
        form_props = {
            "file": binary,
            **{k: v for k, v in json_schema["properties"].items() if k != "score"},
        }
        content["multipart/form-data"] = {"schema": {"type": "object", "properties": form_props}}
    responses: dict[str, Any]
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    if answer == "render":
        responses = {
            "200": {
                "description": "WAV or PNG bytes",
                "content": {
                    "audio/wav": {"schema": {"type": "string", "format": "binary"}},
                    "image/png": {"schema": {"type": "string", "format": "binary"}},
                },
            }
        }
    elif answer == "convert":
        responses = {
            "200": {
                "description": "the score",
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/ScoreJSON"}},
                    "audio/midi": {"schema": {"type": "string", "format": "binary"}},
                },
            }
        }
    else:
        responses = {
            "200": {
                "description": "the score (MIDI), the candidates (JSON) or "
                "progress events (text/event-stream)",
                "content": {
                    "audio/midi": {"schema": {"type": "string", "format": "binary"}},
                    "application/json": {"schema": {"$ref": "#/components/schemas/ScoresAnswer"}},
                    "text/event-stream": {"schema": {"type": "string"}},
                },
            }
        }
    for status, what in (
        (400, "not MIDI / not JSON"),
        (413, "body too large"),
        (422, "a parameter out of bounds"),
        (429, "queue full"),
    ):
        responses[str(status)] = {"description": what, "content": error}
    return {"requestBody": {"content": content, "required": score}, "responses": responses}
