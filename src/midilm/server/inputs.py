"""Reading a task's request: its parameters and its score, from a JSON body, MIDI bytes or
a multipart form, checked against the limits before any job is queued."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from fastapi import Request
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

import midilm
from midilm.score.gm import parse_instrument
from midilm.server.errors import ApiError
from midilm.server.limits import MAX_NOTES, MAX_TRACKS
from midilm.server.schemas import ScoreJSON, score_from_json

if TYPE_CHECKING:
    from symusic.core import ScoreTick

__all__ = ["NoParams", "check_instrument", "task_input"]


_MIDI_TYPES = frozenset(
    {"audio/midi", "audio/x-midi", "audio/mid", "application/x-midi", "application/octet-stream"}
)


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


async def task_input(
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


class NoParams(BaseModel):
    """The parameters of a request that takes only a score (``/convert``): none."""

    model_config = {"extra": "forbid"}


def check_instrument(value: int | str, field: str) -> None:
    """422 for a name no GM instrument or alias answers to (with the closest names)."""
    try:
        parse_instrument(value)
    except (ValueError, TypeError) as err:
        raise ApiError(422, "invalid_parameter", f"{field}: {err}", field=field) from err
