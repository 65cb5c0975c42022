"""The FastAPI app: ``create_app`` and its routes.

``create_app(models)`` builds an app around loaded models. Each task (generate, continue,
infill, add a track, render) becomes a job on a bounded :class:`~midilm.server.jobs.JobQueue`
served by worker threads; the request waits for it (its answer is MIDI, JSON or a stream of
server-sent events, chosen by ``Accept``). A client that goes away cancels its job. The
studio is served from ``/``.

The routes are thin; the work is in the modules beside this one: :mod:`.edge` (request id,
bearer token, body size limit), :mod:`.errors` (the JSON error answers), :mod:`.registry`
(the models), :mod:`.inputs` (reading a task's parameters and score), :mod:`.tasks` (what a
job runs), :mod:`.answers` (waiting for a job and answering: MIDI, JSON, server-sent
events) and :mod:`.openapi` (the documentation of the hand-read bodies).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

import midilm
from midilm.score.meter import bar_grid
from midilm.server.answers import answer_kind, await_job, scores_answer, sse_events
from midilm.server.edge import Edge
from midilm.server.errors import ApiError, install_error_handlers
from midilm.server.inputs import NoParams, check_instrument, task_input
from midilm.server.jobs import Job, JobQueue
from midilm.server.limits import MAX_RENDER_SECONDS, MAX_TRACKS, ServerLimits
from midilm.server.openapi import body_doc, openapi_with_schemas
from midilm.server.registry import ModelRegistry, capabilities
from midilm.server.schemas import (
    AddTrackParams,
    ContinueParams,
    GenerateParams,
    InfillParams,
    JobStatus,
    RegenerateTrackParams,
    RenderParams,
    SamplingParams,
    score_to_dict,
)
from midilm.server.tasks import render_job, stream_job

__all__ = ["create_app"]


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
    app.openapi = openapi_with_schemas(app)  # type: ignore[method-assign]
    app.state.registry = registry
    app.state.queue = queue
    app.state.limits = limits
    install_error_handlers(app)
    app.add_middleware(Edge, token=token, max_bytes=limits.max_upload_bytes)

    async def run_task(
        request: Request,
        kind: str,
        params: SamplingParams,
        task: str,
        kwargs: dict[str, Any],
    ) -> Response:
        model_id, model = registry.get(params.model)
        answer = answer_kind(request)
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
        job = queue.submit(kind, stream_job(model, task, kwargs, partials), model=model_id)
        headers = {"X-Job-ID": job.id}
        if answer == "sse":
            return StreamingResponse(
                sse_events(job, model_id, request.scope),
                media_type="text/event-stream",
                headers={**headers, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        try:
            scores = await await_job(job, request)
        finally:
            job.release()
        if answer == "json":
            payload = await run_in_threadpool(scores_answer, job.id, model_id, scores)
            return JSONResponse(payload, headers=headers)
        data = await run_in_threadpool(lambda: bytes(scores[0].dumps_midi()))
        return Response(
            data,
            media_type="audio/midi",
            headers={**headers, "Content-Disposition": f'attachment; filename="midilm-{kind}.mid"'},
        )

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
        return capabilities(model_id, model, limits)

    @app.post("/generate", tags=["tasks"], openapi_extra=body_doc(GenerateParams, score=False))
    async def generate(request: Request) -> Response:
        """Compose a new piece (every field optional)."""
        params, _ = await task_input(
            request, GenerateParams, needs_score=False, max_bytes=limits.max_upload_bytes
        )
        for index, instrument in enumerate(params.instruments or []):
            check_instrument(instrument, f"instruments.{index}")
        kwargs: dict[str, Any] = {}
        for name in ("bars", "instruments", "density", "meter", "tempo"):
            if getattr(params, name) is not None:
                kwargs[name] = getattr(params, name)
        return await run_task(request, "generate", params, "generate", kwargs)

    @app.post("/continue", tags=["tasks"], openapi_extra=body_doc(ContinueParams))
    async def continue_(request: Request) -> Response:
        """Continue a score by some bars in every track."""
        params, score = await task_input(
            request, ContinueParams, needs_score=True, max_bytes=limits.max_upload_bytes
        )
        kwargs: dict[str, Any] = {"prompt": score, "bars": params.bars}
        if params.density is not None:
            kwargs["density"] = params.density
        return await run_task(request, "continue", params, "generate", kwargs)

    @app.post("/infill", tags=["tasks"], openapi_extra=body_doc(InfillParams))
    async def infill(request: Request) -> Response:
        """Write chosen bars of chosen tracks anew (numbered from 1); nothing else changes."""
        params, score = await task_input(
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

    @app.post("/add-track", tags=["tasks"], openapi_extra=body_doc(AddTrackParams))
    async def add_track(request: Request) -> Response:
        """Write one more track against the others."""
        params, score = await task_input(
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
        check_instrument(params.instrument, "instrument")
        kwargs: dict[str, Any] = {"score": score, "instrument": params.instrument}
        if params.density is not None:
            kwargs["density"] = params.density
        return await run_task(request, "add-track", params, "add_track", kwargs)

    @app.post("/regenerate-track", tags=["tasks"], openapi_extra=body_doc(RegenerateTrackParams))
    async def regenerate_track(request: Request) -> Response:
        """Write one track (numbered from 1) anew against the others."""
        params, score = await task_input(
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

    @app.post("/render", tags=["tasks"], openapi_extra=body_doc(RenderParams, answer="render"))
    async def render(request: Request) -> Response:
        """Render a score as audio (``format=wav``) or a piano-roll picture (``format=png``)."""
        params, score = await task_input(
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
        job = queue.submit("render", render_job(score, params.format, highlight))
        try:
            data = await await_job(job, request)
        finally:
            job.release()
        media = "audio/wav" if params.format == "wav" else "image/png"
        return Response(data, media_type=media, headers={"X-Job-ID": job.id})

    @app.post("/convert", tags=["scores"], openapi_extra=body_doc(None, answer="convert"))
    async def convert(request: Request) -> Response:
        """A score as JSON (``Accept: application/json``, the default) or as MIDI
        (``Accept: audio/midi``): read an uploaded MIDI file, or write one."""
        _, score = await task_input(
            request, NoParams, needs_score=True, max_bytes=limits.max_upload_bytes
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
