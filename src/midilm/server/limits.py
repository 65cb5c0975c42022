"""The bounds a server puts on one request and on all of them together.

Bounds on a request's *content* (bars, candidates, tracks, notes) are constants: they are
declared in the pydantic schemas, so ``/openapi.json`` shows them and a request past one
gets a 422 naming the field and the bound. Bounds on the *server* (upload size, time per
job, queue length, concurrent jobs) are a :class:`ServerLimits`, set by ``midilm serve``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "MAX_BARS",
    "MAX_CANDIDATES",
    "MAX_NOTES",
    "MAX_RENDER_SECONDS",
    "MAX_TRACKS",
    "MAX_UPLOAD_BYTES",
    "ServerLimits",
]

#: Bars one request may ask to write (generate, continue) or to regenerate (infill).
MAX_BARS = 64
#: Candidates (``num_samples``) one request may ask for.
MAX_CANDIDATES = 8
#: Tracks in a request's score, or instruments in a request to compose.
MAX_TRACKS = 16
#: Notes in a request's score.
MAX_NOTES = 100_000
#: Seconds of music one render request may ask for (a WAV is held in memory).
MAX_RENDER_SECONDS = 600
#: Bytes in a request body (a MIDI file, a form, a JSON score).
MAX_UPLOAD_BYTES = 5 * 1024 * 1024


@dataclass(frozen=True)
class ServerLimits:
    """What one server accepts at once.

    ``workers``: jobs that run at the same time (threads; torch releases the GIL).
    ``queue_size``: jobs that may wait for a worker; one more is answered 429.
    ``job_timeout_s``: the longest a job may run before it is cancelled (503).
    ``max_upload_bytes``: the largest request body (413).
    """

    workers: int = 1
    queue_size: int = 8
    job_timeout_s: float = 120.0
    max_upload_bytes: int = MAX_UPLOAD_BYTES

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"workers must be ≥ 1, received {self.workers}")
        if self.queue_size < 0:
            raise ValueError(f"queue_size must be ≥ 0, received {self.queue_size}")
        if not self.job_timeout_s > 0:
            raise ValueError(f"job_timeout_s must be > 0, received {self.job_timeout_s}")
        if self.max_upload_bytes < 1:
            raise ValueError(f"max_upload_bytes must be ≥ 1, received {self.max_upload_bytes}")
