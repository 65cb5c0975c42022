"""What a job does on a worker thread: run a model's stream for a task, publishing each
finished bar, or render a score as audio or a picture."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from midilm.server.errors import ApiError
from midilm.server.jobs import Job
from midilm.server.schemas import score_to_dict

if TYPE_CHECKING:
    from symusic.core import ScoreTick

    from midilm.model.music_model import MusicModel

__all__ = ["render_job", "stream_job"]


def stream_job(
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


def render_job(
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
