"""The HTTP API and the web studio: ``midilm serve``, or ``create_app(models)`` for an ASGI
server of your own. Needs the ``server`` extra (FastAPI, uvicorn, python-multipart).

See ``docs/server.md`` for the endpoints, the JSON score and the limits.
"""

from __future__ import annotations

from midilm.server.app import create_app
from midilm.server.errors import ApiError
from midilm.server.jobs import Job, JobCancelled, JobQueue, QueueFullError
from midilm.server.limits import (
    MAX_BARS,
    MAX_CANDIDATES,
    MAX_NOTES,
    MAX_TRACKS,
    MAX_UPLOAD_BYTES,
    ServerLimits,
)
from midilm.server.registry import ModelRegistry
from midilm.server.schemas import ScoreJSON, TrackJSON, score_from_json, score_to_json

__all__ = [
    "MAX_BARS",
    "MAX_CANDIDATES",
    "MAX_NOTES",
    "MAX_TRACKS",
    "MAX_UPLOAD_BYTES",
    "ApiError",
    "Job",
    "JobCancelled",
    "JobQueue",
    "ModelRegistry",
    "QueueFullError",
    "ScoreJSON",
    "ServerLimits",
    "TrackJSON",
    "create_app",
    "score_from_json",
    "score_to_json",
]
