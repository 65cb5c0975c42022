"""The user's tasks on a loaded model: compose, continue, infill, add or regenerate a track.

:class:`~midilm.MusicModel` methods and the CLI and server call :func:`stream`. It checks
every argument first (so a bad request fails before any sampling), builds the token loop
(engine, sampling settings, seeded ``torch.Generator``), runs the matching task from
:mod:`~midilm.sampling.mmm_tasks` or :mod:`~midilm.sampling.remi_tasks`, and turns its
progress into :class:`GenerationEvent` s: one per finished bar, then one with the results.
Results are the user's own score with only the new notes in it (:mod:`.scores`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from symusic.core import ScoreTick

from midilm.errors import GenerationRequestError
from midilm.sampling import mmm_tasks
from midilm.sampling.arguments import (
    Sampling,
    check_bars,
    density_bin,
    resolve_densities,
    resolve_instrument,
    resolve_instruments,
    resolve_meter,
)
from midilm.sampling.engine import GPT2Engine
from midilm.sampling.loop import TokenLoop
from midilm.sampling.mmm_tasks import TrackRequest
from midilm.sampling.remi_tasks import continue_remi
from midilm.sampling.scores import (
    piece_tracks,
    with_cells,
    with_new_bars,
    with_new_track,
    with_track_replaced,
)
from midilm.tokenization.mmm import MMMTokenizer, Piece

if TYPE_CHECKING:
    from midilm.model.music_model import MusicModel

__all__ = ["TASKS", "GenerationEvent", "stream"]

TASKS = ("generate", "infill", "add_track", "regenerate_track")
Task = Literal["generate", "infill", "add_track", "regenerate_track"]
ScoreInput = ScoreTick | str | os.PathLike[str] | bytes

DEFAULT_INSTRUMENTS: tuple[int | str, ...] = ("acoustic_grand_piano",)


@dataclass(frozen=True)
class GenerationEvent:
    """Progress of a task. ``kind="bar"``: bar ``done`` of ``total`` is written, and
    ``result`` holds the scores so far (the bars not yet written are empty). ``kind="done"``:
    ``result`` holds the finished scores (one per sample) and ``tokens`` the raw token text
    each sample was written with, one model sequence (window) per line."""

    kind: Literal["bar", "done"]
    done: int
    total: int
    result: list[ScoreTick] | None = None
    tokens: list[str] | None = None


@dataclass
class _Plan:
    """A checked request, ready to run."""

    steps: Generator[tuple[int, int, Any], None, Any]
    scores: Callable[[Any], list[ScoreTick]]  # the task's pieces (so far) → scores
    trace: list[list[list[int]]]
    id_to_token: Callable[[int], str]


def stream(model: MusicModel, task: str, /, **arguments: Any) -> Iterator[GenerationEvent]:
    """Check the request now, then return an iterator over its events (sampling happens as
    it is iterated; closing it stops after the current window)."""
    planners: dict[str, Callable[..., _Plan]] = {
        "generate": _plan_generate,
        "infill": _plan_infill,
        "add_track": _plan_add_track,
        "regenerate_track": _plan_regenerate_track,
    }
    if task not in planners:
        raise GenerationRequestError(
            f"unknown task {task!r}; one of {', '.join(TASKS)}", field="task"
        )
    return _events(planners[task](model, **arguments))


def _events(plan: _Plan) -> Iterator[GenerationEvent]:
    written = 0
    total = 0
    try:
        while True:
            try:
                done, total, partial = next(plan.steps)
            except StopIteration as stop:
                result = plan.scores(stop.value)
                break
            if done > written:
                scores = plan.scores(partial)
                for bar in range(written + 1, done + 1):
                    yield GenerationEvent("bar", bar, total, scores)
                written = done
    finally:
        plan.steps.close()
    tokens = [
        "\n".join(" ".join(plan.id_to_token(i) for i in window) for window in row)
        for row in plan.trace
    ]
    yield GenerationEvent("done", total, total, result, tokens)


# ------------------------------------------------------------------------ planners
def _plan_generate(
    model: MusicModel,
    *,
    bars: int | None = None,
    prompt: ScoreInput | None = None,
    instruments: Sequence[int | str] | int | str | None = None,
    density: Any = None,
    meter: str | None = None,
    tempo: float | None = None,
    **sampling: Any,
) -> _Plan:
    bars = check_bars(bars if bars is not None else model.generation.bars)
    settings = _sampling(model, **sampling)
    score = _load(prompt, "prompt") if prompt is not None else None
    if tempo is not None and (
        isinstance(tempo, bool) or not isinstance(tempo, int | float) or not 10 <= tempo <= 400
    ):
        raise GenerationRequestError(f"tempo must be 10–400 BPM, received {tempo!r}", field="tempo")
    if model.kind == "remi":
        for name, value in (("instruments", instruments), ("density", density), ("meter", meter)):
            if value is not None:
                raise GenerationRequestError(
                    f"{name}: a REMI model writes one piano stream in 4/4; {name} needs an "
                    "MMM model", field=name,
                )  # fmt: skip
        if sampling.get("voice_leading"):
            raise GenerationRequestError(
                "voice_leading: the guard keeps the voices of a multi-track piece apart; a "
                "REMI model writes one piano stream", field="voice_leading",
            )  # fmt: skip
        return _plan_remi(model, score, bars, settings, tempo)
    tok = _mmm(model)
    loop, trace = _loop(model, settings), []
    if score is not None:
        if instruments is not None or meter is not None:
            field = "instruments" if instruments is not None else "meter"
            raise GenerationRequestError(
                f"{field}: a continuation keeps the prompt's tracks and meter; use add_track "
                "for a new part", field=field,
            )  # fmt: skip
        piece = _piece(tok, score, "prompt")
        densities = resolve_densities(tok, density, len(piece.tracks))
        first = len(piece.bars)
        steps = mmm_tasks.continue_piece(loop, tok, piece, bars, densities=densities,
                                         num_samples=settings.num_samples, trace=trace,
                                         voice_leading=settings.voice_leading)  # fmt: skip
        return _Plan(steps, lambda pieces: [with_new_bars(score, p, first, tok) for p in pieces],
                     trace, tok.id_to_token)  # fmt: skip
    programs = resolve_instruments(
        tok, instruments if instruments is not None else _default_instruments(model)
    )
    densities = resolve_densities(tok, density, len(programs))
    requests = [TrackRequest(p, d) for p, d in zip(programs, densities, strict=True)]
    chosen_meter = resolve_meter(tok, meter)
    bpm = float(tempo) if tempo is not None else 120.0
    steps = mmm_tasks.compose(loop, tok, requests, bars, meter=chosen_meter,
                              num_samples=settings.num_samples, trace=trace,
                              voice_leading=settings.voice_leading)  # fmt: skip
    return _Plan(
        steps,
        lambda pieces: [mmm_tasks.piece_to_score(tok, p, tempo_bpm=bpm) for p in pieces],
        trace,
        tok.id_to_token,
    )


def _plan_infill(
    model: MusicModel,
    score: ScoreInput,
    *,
    track: int | Sequence[int],
    bars: int | Sequence[int],
    **sampling: Any,
) -> _Plan:
    tok = _mmm(model, "infill")
    if not model.supports_infill:
        raise GenerationRequestError(
            "this model was not trained with infill examples (its dataset had infill_share "
            "0), so it cannot fill bars; use regenerate_track, or train on a dataset prepared "
            "with --infill-share", field="model",
        )  # fmt: skip
    settings = _sampling(model, **sampling)
    original = _load(score, "score")
    tracks = _track_list(original, track)
    piece = _piece(tok, original, "score")
    wanted = [bars] if isinstance(bars, int) else list(bars)
    if not wanted:
        raise GenerationRequestError("bars: choose at least one bar", field="bars")
    for bar in wanted:
        if isinstance(bar, bool) or not isinstance(bar, int) or not 0 <= bar < len(piece.bars):
            raise GenerationRequestError(
                f"bars: bar index {bar!r} is outside the piece (bars 0–{len(piece.bars) - 1})",
                field="bars",
            )
    mapping = piece_tracks(original)
    cells = sorted({(mapping.index(t), b) for t in tracks for b in wanted})
    loop, trace = _loop(model, settings), []
    steps = mmm_tasks.infill(loop, tok, piece, cells, num_samples=settings.num_samples,
                             trace=trace, voice_leading=settings.voice_leading)  # fmt: skip
    return _Plan(steps, lambda pieces: [with_cells(original, p, cells, tok) for p in pieces],
                 trace, tok.id_to_token)  # fmt: skip


def _plan_add_track(
    model: MusicModel, score: ScoreInput, *, instrument: int | str, density: Any = None,
    **sampling: Any,
) -> _Plan:  # fmt: skip
    tok = _mmm(model, "add_track")
    settings = _sampling(model, **sampling)
    original = _load(score, "score")
    program = resolve_instrument(tok, instrument)
    piece = _piece(tok, original, "score")
    request = TrackRequest(program, density_bin(tok, density))
    loop, trace = _loop(model, settings), []
    steps = mmm_tasks.add_track(loop, tok, piece, request, num_samples=settings.num_samples,
                                trace=trace, voice_leading=settings.voice_leading)  # fmt: skip
    return _Plan(steps, lambda pieces: [with_new_track(original, p.tracks[-1], tok)
                                        for p in pieces], trace, tok.id_to_token)  # fmt: skip


def _plan_regenerate_track(
    model: MusicModel, score: ScoreInput, *, track: int, density: Any = None, **sampling: Any
) -> _Plan:
    tok = _mmm(model, "regenerate_track")
    settings = _sampling(model, **sampling)
    original = _load(score, "score")
    (index,) = _track_list(original, track, single=True)
    piece = _piece(tok, original, "score")
    position = piece_tracks(original).index(index)
    old = piece.tracks[position]
    others = Piece(piece.bars, [t for i, t in enumerate(piece.tracks) if i != position])
    chosen = density_bin(tok, density)
    if chosen is None:  # keep the part as busy as it was
        chosen = tok.density_bin(len(old.onset), len(piece.bars))
    loop, trace = _loop(model, settings), []
    steps = mmm_tasks.add_track(loop, tok, others, TrackRequest(old.program, chosen),
                                num_samples=settings.num_samples, trace=trace,
                                voice_leading=settings.voice_leading)  # fmt: skip
    return _Plan(steps, lambda pieces: [with_track_replaced(original, index, p.tracks[-1], tok)
                                        for p in pieces], trace, tok.id_to_token)  # fmt: skip


def _plan_remi(
    model: MusicModel, score: ScoreTick | None, bars: int, settings: Sampling, tempo: float | None
) -> _Plan:
    remi = model.tokenizer
    loop = _loop(model, settings, banned=[remi.eos_id, remi.pad_id])
    trace: list[list[list[int]]] = [[] for _ in range(settings.num_samples)]

    def steps() -> Generator[tuple[int, int, list[ScoreTick]], None, list[ScoreTick]]:
        # REMI windows slide per sample, so samples run one after another.
        results: list[ScoreTick] = []
        total = bars * settings.num_samples
        for sample in range(settings.num_samples):
            task = continue_remi(loop, remi, score, bars, n_positions=model.context_tokens,
                                 trace=trace[sample])  # fmt: skip
            while True:
                try:
                    done, _, partial = next(task)
                except StopIteration as stop:
                    results.append(stop.value)
                    break
                yield sample * bars + done, total, [*results, partial]
        return results

    def scores(result: list[ScoreTick]) -> list[ScoreTick]:
        if tempo is not None and score is None:
            for out in result:
                out.tempos[0].qpm = float(tempo)
        return result

    return _Plan(steps(), scores, trace, remi.id_to_token)


# ------------------------------------------------------------------------ helpers
def _sampling(
    model: MusicModel,
    *,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    num_samples: int = 1,
    constrained: bool = True,
    voice_leading: bool | None = None,
) -> Sampling:
    defaults = model.generation
    return Sampling(
        temperature=defaults.temperature if temperature is None else temperature,
        top_k=defaults.top_k if top_k is None else top_k,
        top_p=defaults.top_p if top_p is None else top_p,
        seed=seed,
        num_samples=num_samples,
        constrained=bool(constrained),
        voice_leading=defaults.voice_leading if voice_leading is None else voice_leading,
    )


def _loop(model: MusicModel, settings: Sampling, banned: Sequence[int] = ()) -> TokenLoop:
    engine: GPT2Engine = model.engine
    generator = torch.Generator(device=engine.device)
    if settings.seed is None:
        generator.seed()
    else:
        generator.manual_seed(settings.seed)
    return TokenLoop(
        engine,
        temperature=settings.temperature,
        top_k=settings.top_k,
        top_p=settings.top_p,
        use_grammar=settings.constrained,
        generator=generator,
        banned=banned,
    )


def _mmm(model: MusicModel, task: str = "generate") -> MMMTokenizer:
    if model.kind != "mmm":
        raise GenerationRequestError(
            f"{task} needs a multi-track (MMM) model; this is a {model.kind} model, which "
            "can only continue a piece (generate with a prompt)", field="model",
        )  # fmt: skip
    return model.tokenizer  # type: ignore[return-value]


def _load(source: ScoreInput, field: str) -> ScoreTick:
    from midilm.score import load_score

    if isinstance(source, ScoreTick):
        return source
    if isinstance(source, bytes | bytearray):
        return load_score(bytes(source), name=f"<{field}>")
    if isinstance(source, str | os.PathLike):
        return load_score(Path(source))
    raise GenerationRequestError(
        f"{field}: expected a symusic Score, a MIDI file path or MIDI bytes, "
        f"received {type(source).__name__}", field=field,
    )  # fmt: skip


def _piece(tok: MMMTokenizer, score: ScoreTick, field: str) -> Piece:
    """The score as the tokenizer sees it, with every instrument one the model can write."""
    from midilm.score.gm import program_name
    from midilm.tokenization.mmm_vocab import DRUMS

    if not piece_tracks(score):
        raise GenerationRequestError(f"{field}: the score has no notes", field=field)
    piece = tok.prepare(score)
    for number, track in enumerate(piece.tracks, start=1):
        if tok.vocab.inst[track.program] < 0:
            name = program_name(0 if track.program == DRUMS else track.program,
                                track.program == DRUMS)  # fmt: skip
            raise GenerationRequestError(
                f"{field}: track {number} ({track.name or name}) is a {name}, which this "
                "model has no token for", field=field,
            )  # fmt: skip
    return piece


def _track_list(score: ScoreTick, track: object, *, single: bool = False) -> list[int]:
    values = [track] if single or isinstance(track, int) else list(track)  # type: ignore[call-overload]
    if not values:
        raise GenerationRequestError("track: choose at least one track", field="track")
    count = len(score.tracks)
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < count:
            raise GenerationRequestError(
                f"track: index {value!r} is outside the score (tracks 0–{count - 1})",
                field="track",
            )
        if not len(score.tracks[value].notes):
            raise GenerationRequestError(
                f"track: track {value} ({score.tracks[value].name or 'unnamed'}) has no notes; "
                "add_track writes a new part", field="track",
            )  # fmt: skip
    return values  # type: ignore[return-value]


def _default_instruments(model: MusicModel) -> Sequence[int | str]:
    return model.generation.instruments or DEFAULT_INSTRUMENTS
