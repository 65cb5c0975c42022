"""How a request waits for its job and answers: MIDI, JSON or a stream of server-sent
events (chosen by ``Accept``), a job cancelled when its client goes away, and a watchdog for
jobs past their time limit."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from starlette.concurrency import run_in_threadpool
from starlette.types import Scope

from midilm.server.errors import ApiError, error_event
from midilm.server.jobs import Job
from midilm.server.schemas import score_to_dict

__all__ = ["answer_kind", "await_job", "scores_answer", "sse_events"]

log = logging.getLogger("midilm.server")

_WATCHDOG_GRACE_S = 10.0  # how long past its limit a job may take to reach its next check


def answer_kind(request: Request) -> str:
    """``"sse"``, ``"json"`` or ``"midi"`` (the default): the answer ``Accept`` asks for."""
    accept = request.headers.get("accept", "").lower()
    if "text/event-stream" in accept:
        return "sse"
    if "application/json" in accept and "audio/midi" not in accept:
        return "json"
    return "midi"


async def _wait_for_disconnect(request: Request) -> None:
    """Return once the client has gone away (the body must have been read already)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def await_job(job: Job, request: Request) -> Any:
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


async def sse_events(job: Job, model_id: str, scope: Scope) -> AsyncIterator[bytes]:
    """The job as server-sent events: ``job``, a ``progress`` per bar, then ``result`` or
    ``error``; a stream closed early cancels the job."""
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
            payload = await run_in_threadpool(scores_answer, job.id, model_id, scores)
            yield _sse("result", payload)
        except Exception as err:  # noqa: BLE001 - every failure becomes an error event
            yield _sse("error", error_event(scope, err))
    finally:
        job.unsubscribe(events)
        if not job.finished:
            job.cancel()
            log.info("job %s cancelled: the event stream closed", job.id)
        job.release()


def scores_answer(job_id: str, model_id: str, scores: list[Any]) -> dict[str, Any]:
    """A :class:`ScoresAnswer` as JSON-ready data."""
    return {"job_id": job_id, "model": model_id, "scores": [score_to_dict(s) for s in scores]}
