"""What the HTTP API reads and writes: the JSON score and the parameters of each task.

Every bound a request can break is declared here (``Field(le=…)``), so ``/openapi.json``
shows it and a request past it is answered 422 with the field and the bound. Bars and
tracks are numbered from 1, as in the CLI.

The JSON score is a plain, lossless-enough picture of a ``symusic.Score`` for a browser:
tracks (name, program, drum flag, notes as ``[time, duration, pitch, velocity]``), tempos,
time signatures and the resolution. Times are in ticks (``"unit": "tick"``) or in quarter
notes (``"unit": "beat"``). Answers always use ticks and add ``bars``, the bar grid, so a
client can draw bar lines without knowing the meter rules. What it leaves out: key
signatures, markers, lyrics, controllers and pedals (the models read none of them).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator
from symusic.core import ScoreTick, TempoTick, TimeSignatureTick, TrackTick

from midilm.server.limits import MAX_BARS, MAX_CANDIDATES, MAX_NOTES, MAX_TRACKS

__all__ = [
    "AddTrackParams",
    "ContinueParams",
    "ErrorBody",
    "GenerateParams",
    "InfillParams",
    "JobStatus",
    "RegenerateTrackParams",
    "RenderParams",
    "SamplingParams",
    "ScoreJSON",
    "ScoresAnswer",
    "TrackJSON",
    "score_from_json",
    "score_to_dict",
    "score_to_json",
]

_MAX_TICK = 2**31 - 1  # symusic stores times as int32
_MAX_EVENTS = 10_000  # tempo or meter changes in one score

Note = tuple[
    Annotated[float, Field(ge=0)],
    Annotated[float, Field(ge=0)],
    Annotated[int, Field(ge=0, le=127)],
    Annotated[int, Field(ge=1, le=127)],
]
"""``[time, duration, pitch, velocity]``."""

Instrument = int | Annotated[str, Field(min_length=1, max_length=64)]
"""A GM program number (0–127), a GM name (``"acoustic_grand_piano"``), an alias
(``"piano"``, ``"bass"``, ``"strings"``) or ``"drums"``."""

Density = Annotated[int, Field(ge=0, le=255)] | Literal["low", "medium", "high"]
"""A density bin of the model (0 = sparsest), or ``"low"``/``"medium"``/``"high"``."""

Densities = Density | Annotated[list[Density | None], Field(max_length=MAX_TRACKS)] | None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------- the score
class TrackJSON(_Strict):
    """One track: an instrument and its notes."""

    name: str = Field("", max_length=256)
    program: int = Field(0, ge=0, le=127, description="GM program, numbered from 0")
    is_drum: bool = False
    notes: list[Note] = Field(
        default_factory=list, description="[time, duration, pitch, velocity] per note"
    )


class TempoJSON(_Strict):
    time: float = Field(0, ge=0)
    qpm: float = Field(gt=0, le=1000, description="quarter notes per minute")


class TimeSignatureJSON(_Strict):
    time: float = Field(0, ge=0)
    numerator: int = Field(ge=1, le=64)
    denominator: Literal[1, 2, 4, 8, 16, 32, 64]


class BarJSON(_Strict):
    """A bar of the grid (answers only): where it starts, how long it is, its meter."""

    start: int
    length: int
    meter: str


class ScoreJSON(_Strict):
    """A multi-track score. ``bars`` is filled in answers and ignored in requests."""

    ticks_per_quarter: int = Field(480, ge=1, le=32767)
    unit: Literal["tick", "beat"] = Field(
        "tick", description="unit of every time and duration: ticks, or quarter notes"
    )
    tempos: list[TempoJSON] = Field(default_factory=list, max_length=_MAX_EVENTS)
    time_signatures: list[TimeSignatureJSON] = Field(default_factory=list, max_length=_MAX_EVENTS)
    tracks: list[TrackJSON] = Field(default_factory=list, max_length=MAX_TRACKS)
    bars: list[BarJSON] | None = None

    @model_validator(mode="after")
    def _few_enough_notes(self) -> ScoreJSON:
        total = sum(len(t.notes) for t in self.tracks)
        if total > MAX_NOTES:
            raise ValueError(f"the score has {total} notes; at most {MAX_NOTES} are accepted")
        return self


def score_from_json(data: ScoreJSON) -> ScoreTick:
    """A ``symusic.ScoreTick`` from a validated JSON score (times rounded to whole ticks).

    Raises ``ValueError`` for a time past what MIDI can hold (2³¹ ticks)."""
    tpq = data.ticks_per_quarter
    scale = float(tpq) if data.unit == "beat" else 1.0

    def ticks(values: np.ndarray, what: str) -> np.ndarray:
        out = np.rint(values * scale)
        if out.size and out.max() > _MAX_TICK:
            raise ValueError(f"{what}: a time past {_MAX_TICK} ticks cannot be written as MIDI")
        return out.astype(np.int32)

    score = ScoreTick(tpq)
    for tempo in data.tempos:
        score.tempos.append(TempoTick(int(ticks(np.array([tempo.time]), "tempos")[0]), tempo.qpm))
    for sig in data.time_signatures:
        time = int(ticks(np.array([sig.time]), "time_signatures")[0])
        score.time_signatures.append(TimeSignatureTick(time, sig.numerator, sig.denominator))
    import symusic

    for index, track in enumerate(data.tracks):
        out = TrackTick(track.name, track.program, track.is_drum)
        if track.notes:
            arr = np.asarray(track.notes, dtype=np.float64)  # (N, 4)
            where = f"tracks.{index}.notes"
            out.notes = symusic.Note.from_numpy(
                ticks(arr[:, 0], where),
                ticks(arr[:, 1], where),
                arr[:, 2].astype(np.int8),
                arr[:, 3].astype(np.int8),
                "tick",
            )
            out.notes.sort()
        score.tracks.append(out)
    return score


def score_to_dict(score: Any) -> dict[str, Any]:
    """The JSON score of a ``symusic`` score (converted to ticks first), with its bar grid,
    as plain JSON-ready data (what the server answers; no validation pass over the notes)."""
    from midilm.errors import UnsupportedScoreError
    from midilm.score.meter import bar_grid

    if not isinstance(score, ScoreTick):
        score = score.to("tick")
    tracks = []
    for track in score.tracks:
        arr = track.notes.numpy()
        columns = [arr["time"], arr["duration"], arr["pitch"], arr["velocity"]]
        notes = np.stack([c.astype(np.int64) for c in columns], axis=1).tolist()
        tracks.append(
            {
                "name": track.name,
                "program": int(track.program),
                "is_drum": bool(track.is_drum),
                "notes": notes,
            }
        )
    try:
        bars: list[dict[str, Any]] | None = [
            {"start": b.start_ticks, "length": b.length_ticks, "meter": str(b.meter)}
            for b in bar_grid(score)
        ]
    except UnsupportedScoreError:
        bars = None
    return {
        "ticks_per_quarter": int(score.ticks_per_quarter),
        "unit": "tick",
        "tempos": [{"time": int(t.time), "qpm": float(t.qpm)} for t in score.tempos],
        "time_signatures": [
            {"time": int(t.time), "numerator": int(t.numerator), "denominator": int(t.denominator)}
            for t in score.time_signatures
            if t.denominator in (1, 2, 4, 8, 16, 32, 64) and 1 <= t.numerator <= 64
        ],
        "tracks": tracks,
        "bars": bars,
    }


def score_to_json(score: Any) -> ScoreJSON:
    """The JSON score of a ``symusic`` score, validated (see :func:`score_to_dict`)."""
    return ScoreJSON.model_validate(score_to_dict(score))


# --------------------------------------------------------------------------- requests
class SamplingParams(_Strict):
    """Parameters every task takes."""

    model: str | None = Field(None, max_length=200, description="model id (default: the first)")
    temperature: float | None = Field(None, ge=0, le=10, description="0 picks the likeliest")
    top_k: int | None = Field(None, ge=1, le=1_000_000)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    num_samples: int = Field(1, ge=1, le=MAX_CANDIDATES, description="candidates to write")
    constrained: bool | None = Field(None, description="false lifts the grammar mask (research)")
    voice_leading: bool | None = Field(
        None, description="no parallel fifths or octaves, four voices in range (MMM)"
    )

    def sampling_kwargs(self) -> dict[str, Any]:
        """The sampling keyword arguments of the model's methods that were given."""
        names = ("temperature", "top_k", "top_p", "seed", "num_samples", "constrained",
                 "voice_leading")  # fmt: skip
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}


class GenerateParams(SamplingParams):
    """Compose a new piece."""

    bars: int | None = Field(None, ge=1, le=MAX_BARS, description="default: the model's")
    instruments: list[Instrument] | None = Field(None, min_length=1, max_length=MAX_TRACKS)
    density: Densities = Field(None, description="one value for all tracks, or one per track")
    meter: str | None = Field(None, pattern=r"^\d{1,2}/\d{1,2}$", examples=["4/4"])
    tempo: float | None = Field(None, ge=10, le=400, description="quarter notes per minute")


class ContinueParams(SamplingParams):
    """Continue a score by ``bars`` bars in every track."""

    bars: int = Field(4, ge=1, le=MAX_BARS)
    density: Densities = None


class InfillParams(SamplingParams):
    """Write chosen bars of chosen tracks anew; every other note stays as it was."""

    track: (
        Annotated[int, Field(ge=1, le=MAX_TRACKS)]
        | Annotated[list[Annotated[int, Field(ge=1, le=MAX_TRACKS)]], Field(min_length=1)]
    ) = Field(description="track number(s), from 1")
    bars: (
        Annotated[int, Field(ge=1, le=100_000)]
        | Annotated[
            list[Annotated[int, Field(ge=1, le=100_000)]], Field(min_length=1, max_length=MAX_BARS)
        ]
    ) = Field(description="bar number(s), from 1")


class AddTrackParams(SamplingParams):
    """Write one more track against the others."""

    instrument: Instrument
    density: Density | None = None


class RegenerateTrackParams(SamplingParams):
    """Write one track anew against the others (same instrument; as busy as it was unless
    ``density`` says otherwise)."""

    track: int = Field(ge=1, le=MAX_TRACKS, description="track number, from 1")
    density: Density | None = None


class RenderParams(_Strict):
    """Render a score as audio (WAV) or as a piano-roll picture (PNG)."""

    format: Literal["wav", "png"] = "wav"
    highlight: list[Annotated[int, Field(ge=1, le=100_000)]] | None = Field(
        None, max_length=MAX_BARS, description="PNG: bars to mark, numbered from 1"
    )
    track: int | None = Field(
        None, ge=1, le=MAX_TRACKS, description="PNG: mark the bars in this track only"
    )


# --------------------------------------------------------------------------- answers
class ScoresAnswer(BaseModel):
    """The JSON answer of a task (``Accept: application/json``)."""

    job_id: str
    model: str
    scores: list[ScoreJSON]


class ErrorBody(BaseModel):
    """Every error answer: one readable message, and what it is about."""

    status: int
    error: str = Field(description="a short machine-readable tag")
    message: str
    field: str | None = None
    request_id: str


class JobStatus(BaseModel):
    id: str
    kind: str
    model: str | None
    state: Literal["queued", "running", "done", "failed", "cancelled"]
    done: int
    total: int | None
