"""One evaluation of a model against a prepared dataset, start to finish.

:func:`evaluate` measures, in this order: the held-out likelihood (test split, or valid when
test is empty); syntax errors of free samples without and with the grammar mask; then it
composes ``samples`` pieces of ``bars`` bars (MMM: with the instruments and densities of
real test windows) and measures control accuracy, music statistics against the test split
(beside test vs train, the ceiling), four-part voice leading, infilling (MMM models trained
with it) and speed. Everything is seeded: the same model, data and settings give the same
report, speed aside.

A piece or a bar the model cannot finish (its context fills up before the music is
complete: a badly trained model writing notes without letting time pass) is a failure of
the model, not of the evaluation: it is counted in the report's ``failures`` and left out
of the measures; only a run where every piece fails stops with an error.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from midilm.data.shards import DatasetError, read_manifest
from midilm.errors import ConfigError, MidilmError
from midilm.evaluation.controls import control_accuracy
from midilm.evaluation.likelihood import check_same_vocabulary, choose_split, split_likelihood
from midilm.evaluation.reference import ReferenceSequence, reference_sequences
from midilm.evaluation.report import Report
from midilm.evaluation.samples import (
    Sampling,
    TaskRun,
    free_mmm,
    free_remi,
    run_task,
    window_header,
)
from midilm.evaluation.statistics import (
    PieceNotes,
    compare_sets,
    feature_values,
    piece_notes,
)
from midilm.evaluation.syntax import count_violations
from midilm.evaluation.voice_leading import four_voices, voice_leading_stats
from midilm.sampling.loop import SamplingError

if TYPE_CHECKING:
    from midilm.model.music_model import MusicModel

__all__ = ["EvaluationError", "evaluate"]

Progress = Callable[[str], None]


class EvaluationError(MidilmError, RuntimeError):
    """The model could not compose a single piece of the evaluation."""


class _Failures:
    """Tasks the model could not finish, by kind, with the first reasons."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.attempts: dict[str, int] = {}
        self.first: dict[str, str] = {}  # the first reason, by kind
        self.examples: list[str] = []

    def attempt(self, kind: str, index: int, task: Callable[[], TaskRun]) -> TaskRun | None:
        self.attempts[kind] = self.attempts.get(kind, 0) + 1
        try:
            return task()
        except SamplingError as err:
            self.counts[kind] = self.counts.get(kind, 0) + 1
            self.first.setdefault(kind, str(err))
            if len(self.examples) < 5:
                self.examples.append(f"{kind} {index + 1}: {err}")
            return None

    def none_finished(self, kind: str) -> str | None:
        """Why not one ``kind`` task finished, if none did."""
        attempts = self.attempts.get(kind, 0)
        if not attempts or self.counts.get(kind, 0) < attempts:
            return None
        return f"the model finished none of its {attempts} {kind} samples ({self.first[kind]})"

    def to_dict(self) -> dict[str, Any] | None:
        if not self.counts:
            return None
        return {
            "counts": {k: {"failed": n, "of": self.attempts[k]} for k, n in self.counts.items()},
            "examples": self.examples,
        }


def evaluate(
    model: MusicModel | str | Path,
    dataset: str | Path,
    *,
    output: str | Path | None = None,
    samples: int = 16,
    bars: int = 8,
    seed: int = 0,
    split: str = "test",
    max_reference: int | None = 200,
    infill_cells: int | None = None,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    voice_leading: bool | None = None,
    batch_size: int = 8,
    max_sequences: int | None = None,
    plots: bool = True,
    progress: Progress | None = None,
) -> Report:
    """Evaluate ``model`` (a :class:`~midilm.MusicModel` or what :func:`~midilm.load_model`
    takes) on ``dataset`` (a ``midilm prepare`` folder); write the report into ``output``
    when given.

    ``samples`` × ``bars``: the composed pieces; ``max_reference``: at most this many
    sequences of the test and of the train split are decoded for the statistics (``None``:
    all); ``infill_cells``: bars infilled (default ``samples``); ``max_sequences``: cap on
    the sequences scored for likelihood (``None``: the whole split); ``temperature``,
    ``top_k``, ``top_p``, ``voice_leading`` (MMM: the voice-leading guard): sampling
    (default: the model's own defaults).
    """
    from midilm.model.loading import load_model

    for name, value in (("samples", samples), ("bars", bars)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be an integer ≥ 1, received {value!r}")
    say = progress or (lambda _message: None)
    dataset = Path(dataset)
    manifest = read_manifest(dataset)
    if isinstance(model, (str, Path)):
        model = load_model(model)
    tok = model.tokenizer
    check_same_vocabulary(tok, dataset)
    notes: list[str] = []
    chosen, why = choose_split(dataset, split)
    if why:
        notes.append(why)
    defaults = model.generation
    sampling = Sampling(
        temperature=defaults.temperature if temperature is None else temperature,
        top_k=defaults.top_k if top_k is None else (top_k or None),
        top_p=defaults.top_p if top_p is None else (top_p if top_p < 1 else None),
        voice_leading=tok.kind == "mmm"
        and (defaults.voice_leading if voice_leading is None else bool(voice_leading)),
    )

    say(f"likelihood of the {chosen!r} split")
    likelihood = split_likelihood(
        model, dataset, chosen, batch_size=batch_size, max_sequences=max_sequences
    )

    say("decoding reference sequences")
    test_refs = reference_sequences(tok, dataset, chosen, limit=max_reference, seed=seed)
    train_refs = reference_sequences(tok, dataset, "train", limit=max_reference, seed=seed)
    if not test_refs:
        raise DatasetError(f"{dataset}: the {chosen!r} split decodes to no note")
    test_notes = [piece_notes(r.score, r.bars) for r in test_refs]
    train_notes = [piece_notes(r.score, r.bars) for r in train_refs]

    rng = np.random.default_rng(seed)
    failures = _Failures()
    if tok.kind == "mmm":
        result = _mmm_samples(model, test_refs, samples, bars, sampling, seed, rng, say, failures)
    else:
        result = _remi_samples(model, samples, bars, sampling, seed, say, failures)
    syntax, sample_notes, controls, runs = result
    if why_not := failures.none_finished("compose"):
        raise EvaluationError(why_not)
    if controls is None:
        notes.append("controls: REMI models take no instrument or density controls")

    say("music statistics")
    values = {
        "samples": feature_values(sample_notes),
        chosen: feature_values(test_notes),
        "train": feature_values(train_notes),
    }
    vs_test = compare_sets(values["samples"], values[chosen])
    ceiling = compare_sets(values[chosen], values["train"])
    statistics = {
        "samples": len(sample_notes),
        "reference_split": chosen,
        "test_sequences": len(test_notes),
        "train_sequences": len(train_notes),
        "features": {
            name: {"samples_vs_test": vs_test[name], "test_vs_train": ceiling[name]}
            for name in vs_test
        },
        "mean": {"samples_vs_test": _mean(vs_test), "test_vs_train": _mean(ceiling)},
    }
    if manifest.get("settings", {}).get("transpose") not in (None, [0, 0]):
        notes.append(
            "statistics: the train split holds transposed copies, which flattens its "
            "pitch-class histogram (and lowers that ceiling)"
        )

    say("voice leading")
    voice_leading = None
    if any(four_voices(p) is not None for p in sample_notes):
        voice_leading = {
            "samples": voice_leading_stats(sample_notes),
            "test": voice_leading_stats(test_notes),
        }
    else:
        notes.append("voice leading: omitted, the samples do not have four pitched tracks")

    infill = None
    if tok.kind == "mmm":
        if model.supports_infill:
            say("infilling")
            result = _infill(
                model, test_refs, infill_cells or samples, sampling, seed, rng, sample_notes,
                failures,
            )  # fmt: skip
            if result is None:
                notes.append(f"infill: {failures.none_finished('infill')}")
            else:
                infill, values["infill"], values["original"] = result
        else:
            notes.append("infill: omitted, the model was trained without infill examples")
    else:
        notes.append("infill: REMI models do not infill")

    tokens = sum(r.tokens for r in runs)
    seconds = sum(r.seconds for r in runs)
    total_bars = len(runs) * bars
    speed = {
        "device": str(model.device),
        "samples": len(runs),
        "tokens": tokens,
        "seconds": round(seconds, 3),
        "tokens_per_s": round(tokens / seconds, 1) if seconds else None,
        "bars": total_bars,
        "seconds_per_bar": round(seconds / total_bars, 4) if total_bars else None,
    }
    report = Report(
        model={
            "name": model.directory.name if model.directory else "model",
            "path": str(model.directory) if model.directory else None,
            "kind": tok.kind,
            "parameters": model.num_parameters,
            "vocab_size": tok.vocab_size,
            "context_tokens": model.context_tokens,
        },
        dataset={"path": str(dataset), "digest": manifest.get("digest"), "split": chosen},
        settings={
            "samples": samples,
            "bars": bars,
            "seed": seed,
            "temperature": sampling.temperature,
            "top_k": sampling.top_k,
            "top_p": sampling.top_p,
            "voice_leading": sampling.voice_leading,
            "max_reference": max_reference,
            "max_sequences": max_sequences,
            "infill_cells": (infill_cells or samples) if infill is not None else None,
        },
        likelihood=likelihood.to_dict(),
        syntax=syntax,
        controls=controls,
        statistics=statistics,
        voice_leading=voice_leading,
        infill=infill,
        speed=speed,
        notes=notes,
        failures=failures.to_dict(),
    )
    if output is not None:
        out = Path(output)
        out.mkdir(parents=True, exist_ok=True)
        if plots:
            say("plots")
            from midilm.evaluation.plots import draw_plots

            report.settings["plots"] = draw_plots(out, values, syntax, controls)
        report.save(out)
    return report


# ---------------------------------------------------------------------- MMM
def _mmm_samples(
    model: MusicModel,
    refs: list[ReferenceSequence],
    samples: int,
    bars: int,
    sampling: Sampling,
    seed: int,
    rng: np.random.Generator,
    say: Progress,
    failures: _Failures,
) -> tuple[dict[str, Any], list[PieceNotes], dict[str, Any] | None, list[TaskRun]]:
    from midilm.tokenization.mmm_vocab import DRUMS

    tok: Any = model.tokenizer
    picks = rng.choice(len(refs), size=samples, replace=len(refs) < samples).tolist()
    headers = [window_header(tok, refs[i].ids) for i in picks]
    headers = [(tracks, meter) for tracks, meter in headers if tracks]
    syntax = _free_syntax(model, [len(tracks) for tracks, _ in headers], 0, sampling, seed, say)

    say(f"composing {len(headers)} pieces of {bars} bars")
    runs, requests = [], []
    meters = tok.config.meters or ("4/4",)
    for i, (tracks, meter) in enumerate(headers):
        task = partial(
            run_task,
            model,
            "generate",
            bars=bars,
            instruments=["drums" if p == DRUMS else p for p, _ in tracks],
            density=[d for _, d in tracks],
            meter=meter if meter in meters else meters[0],
            seed=seed + 1 + i,
            **sampling.arguments(tok.vocab_size),
        )
        run = failures.attempt("compose", i, task)
        if run is not None:
            runs.append(run)
            requests.append(tracks)
    scores = [r.score for r in runs]
    controls = control_accuracy(tok, scores, requests, bars)
    return syntax, [piece_notes(s, bars) for s in scores], controls, runs


def _free_syntax(
    model: MusicModel,
    track_counts: list[int],
    bars: int,
    sampling: Sampling,
    seed: int,
    say: Progress,
) -> dict[str, Any]:
    """Syntax errors of free samples, without then with the grammar mask (MMM: one window
    per entry of ``track_counts``; REMI: ``len(track_counts)`` streams of ``bars`` bars)."""
    tok: Any = model.tokenizer
    say(f"syntax: {len(track_counts)} free samples without and with the grammar")
    out = {}
    for mode, constrained in (("unconstrained", False), ("constrained", True)):
        if tok.kind == "mmm":
            free = free_mmm(
                model.engine,
                tok,
                track_counts,
                constrained=constrained,
                sampling=sampling,
                seed=seed,
            )
            start = tok.grammar(bars=tok.config.bars_per_window, allow_placeholders=False).start
        else:
            free = free_remi(
                model.engine,
                tok,
                len(track_counts),
                bars,
                constrained=constrained,
                sampling=sampling,
                seed=seed,
            )
            start = tok.grammar().start
        counts = count_violations(
            start,
            free.sequences,
            prompt_lengths=[free.prompt_length] * len(free.sequences),
            truncated=free.truncated,
        )
        out[mode] = counts.to_dict()
    return out


def _infill(
    model: MusicModel,
    refs: list[ReferenceSequence],
    cells: int,
    sampling: Sampling,
    seed: int,
    rng: np.random.Generator,
    composed: list[PieceNotes],
    failures: _Failures,
) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, np.ndarray]] | None:
    """Regenerate one bar of one track in ``cells`` test windows; compare the new bars with
    the ones they replace, beside as many bars of one track drawn from the pieces composed
    from scratch against the same originals: one bar of one voice has other statistics
    than a whole piece (one note at a time, a narrow range), so only a baseline of the same
    shape says whether infilling is worse than composing."""
    originals, filled, runs = [], [], []
    picks = rng.choice(len(refs), size=cells, replace=len(refs) < cells).tolist()
    for i, index in enumerate(picks):
        ref = refs[index]
        before = piece_notes(ref.score, ref.bars)
        options = [
            (t, b)
            for t, track in enumerate(before.tracks)
            for b in range(len(before.bar_starts))
            if len(before.cell(t, b).tracks[0].onset)
        ]
        if not options:
            continue
        track, bar = options[int(rng.integers(len(options)))]
        task = partial(
            run_task,
            model,
            "infill",
            ref.score,
            track=track,
            bars=bar,
            seed=seed + 10_000 + i,
            **sampling.arguments(model.tokenizer.vocab_size),
        )
        run = failures.attempt("infill", i, task)
        if run is None:
            continue
        runs.append(run)
        originals.append(before.cell(track, bar))
        filled.append(piece_notes(run.score, ref.bars).cell(track, bar))
    if not runs:
        return None
    original_values, filled_values = feature_values(originals), feature_values(filled)
    overlap = compare_sets(filled_values, original_values)
    composed_cells = [
        piece.cell(t, b)
        for piece in composed
        for t in range(len(piece.tracks))
        for b in range(len(piece.bar_starts))
        if len(piece.cell(t, b).tracks[0].onset)
    ]
    if composed_cells:
        chosen = rng.choice(len(composed_cells), size=min(len(filled), len(composed_cells)),
                            replace=False)  # fmt: skip
        baseline = compare_sets(
            feature_values([composed_cells[i] for i in chosen]), original_values
        )
    else:
        baseline = dict.fromkeys(overlap)
    seconds = sum(r.seconds for r in runs)
    section = {
        "cells": len(filled),
        "features": {
            name: {"infill_vs_original": v, "composed_vs_original": baseline[name]}
            for name, v in overlap.items()
        },
        "mean": {
            "infill_vs_original": _mean(overlap),
            "composed_vs_original": _mean(baseline) if composed_cells else None,
        },
        "seconds_per_cell": round(seconds / len(runs), 4) if runs else None,
    }
    return section, filled_values, original_values


# ---------------------------------------------------------------------- REMI
def _remi_samples(
    model: MusicModel,
    samples: int,
    bars: int,
    sampling: Sampling,
    seed: int,
    say: Progress,
    failures: _Failures,
) -> tuple[dict[str, Any], list[PieceNotes], None, list[TaskRun]]:
    syntax = _free_syntax(model, [1] * samples, bars, sampling, seed, say)
    say(f"composing {samples} pieces of {bars} bars")
    arguments = sampling.arguments(model.tokenizer.vocab_size)
    attempts = (
        failures.attempt(
            "compose", i, partial(run_task, model, "generate", bars=bars, seed=seed + 1 + i,
                                  **arguments)
        )
        for i in range(samples)
    )  # fmt: skip
    runs = [run for run in attempts if run is not None]
    return syntax, [piece_notes(r.score, bars) for r in runs], None, runs


def _mean(values: dict[str, float | None]) -> float | None:
    known = [v for v in values.values() if v is not None and not math.isnan(v)]
    return round(sum(known) / len(known), 4) if known else None
