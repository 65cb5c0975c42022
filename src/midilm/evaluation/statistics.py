"""Music statistics of a set of pieces, and how much two sets agree (overlapping area).

After Yang & Lerch, *On the evaluation of generative models in music* (2020): each feature
gives a distribution per set of pieces, and two sets agree on that feature as much as their
distributions overlap, ``∫ min(p, q)`` (1: the same distribution, 0: nothing in common).
Here a feature's distribution is the normalized histogram of its values **pooled** over the
set (every note, interval, bar …), on fixed integer bins, so the overlap is exact and needs
no kernel bandwidth. (Yang & Lerch compare distributions of pairwise distances between
per-piece features, smoothed by a KDE; pooled histograms answer the simpler question "does
the model write notes like these", and stay meaningful with a handful of samples.)

Every feature is read from the pitched tracks on one grid, :data:`STEPS_PER_QUARTER` steps
a quarter (sixteenth notes), whatever the model's own grid; drum tracks are left out (their
"pitches" name instruments). Features:

- ``pitch_class``: pitch modulo 12 of every note;
- ``pitch_range``: highest minus lowest pitch of each track in each span of
  :data:`RANGE_BARS` bars (semitones, up to 48), so that pieces of any length compare;
- ``interval``: melodic step between successive onsets of a track, the top note of a chord
  (semitones, clipped to ±24);
- ``onset_position``: where in its bar a note starts (steps from the bar line);
- ``duration``: note length (steps, 1 to 32; longer ones count as 32);
- ``polyphony``: notes sounding at each onset, over all pitched tracks (up to 16);
- ``notes_per_bar``: onsets of a track in each bar (up to 32), empty bars included.

It knows nothing about models or tokenizers: pieces come in as ``symusic`` scores.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from symusic.core import ScoreTick

from midilm.errors import UnsupportedScoreError
from midilm.score.meter import bar_grid

__all__ = [
    "FEATURES",
    "RANGE_BARS",
    "STEPS_PER_QUARTER",
    "Feature",
    "PieceNotes",
    "TrackNotes",
    "compare_sets",
    "feature_histograms",
    "feature_values",
    "histogram",
    "overlap_area",
    "piece_notes",
]

STEPS_PER_QUARTER = 4
"""The statistics grid: sixteenth notes, so models on different grids compare."""
RANGE_BARS = 4
"""Bars per span over which ``pitch_range`` is measured."""


@dataclass(frozen=True)
class Feature:
    """A feature's integer bins ``lo … hi`` (values outside are clipped to the ends) and
    what it measures, for reports."""

    name: str
    lo: int
    hi: int
    unit: str

    @property
    def bins(self) -> int:
        return self.hi - self.lo + 1


FEATURES: dict[str, Feature] = {
    f.name: f
    for f in (
        Feature("pitch_class", 0, 11, "pitch class of each note"),
        Feature("pitch_range", 0, 48, "semitones, lowest to highest note, per track and 4 bars"),
        Feature("interval", -24, 24, "semitones between successive onsets of a track"),
        Feature("onset_position", 0, 47, "steps from the bar line to each onset (16ths)"),
        Feature("duration", 1, 32, "note length in steps (16ths)"),
        Feature("polyphony", 0, 16, "notes sounding at each onset, all tracks"),
        Feature("notes_per_bar", 0, 32, "onsets per track and bar"),
    )
}


@dataclass
class TrackNotes:
    """One track's notes on the statistics grid (steps)."""

    program: int
    is_drum: bool
    onset: np.ndarray  # (N,) steps
    end: np.ndarray  # (N,) steps, > onset
    pitch: np.ndarray  # (N,)


@dataclass
class PieceNotes:
    """A piece on the statistics grid: its bars (start and length in steps) and every track,
    silent ones included, so that track indices stay those of the score."""

    bar_starts: np.ndarray  # (B,) steps
    bar_lengths: np.ndarray  # (B,) steps
    tracks: list[TrackNotes] = field(default_factory=list)

    @property
    def pitched(self) -> list[TrackNotes]:
        return [t for t in self.tracks if not t.is_drum]

    def cell(self, track: int, bar: int) -> PieceNotes:
        """Only the notes of ``track`` that start in ``bar``, in a one-bar piece (an
        infilled cell, compared with the bar it replaced)."""
        start, length = int(self.bar_starts[bar]), int(self.bar_lengths[bar])
        t = self.tracks[track]
        keep = (t.onset >= start) & (t.onset < start + length)
        notes = TrackNotes(
            t.program, t.is_drum, t.onset[keep] - start, t.end[keep] - start, t.pitch[keep]
        )
        return PieceNotes(np.array([0]), np.array([length]), [notes])


def piece_notes(score: ScoreTick, bars: int | None = None) -> PieceNotes:
    """A score on the statistics grid. ``bars`` fixes the number of bars (a sample or a
    window has a known length even when its last bars are silent); by default the bars
    run to the last note. A score whose meters give no whole bar grid counts in 4/4."""
    tpq = int(score.ticks_per_quarter)
    scale = STEPS_PER_QUARTER / tpq
    try:
        grid = bar_grid(score)
        starts = [round(b.start_ticks * scale) for b in grid]
        lengths = [max(1, round(b.length_ticks * scale)) for b in grid]
    except UnsupportedScoreError:
        starts, lengths = [0], [4 * STEPS_PER_QUARTER]
    if bars is not None:
        while len(starts) < bars:
            starts.append(starts[-1] + lengths[-1])
            lengths.append(lengths[-1])
        starts, lengths = starts[:bars], lengths[:bars]
    tracks = []
    for track in score.tracks:
        a = track.notes.numpy()
        onset = np.floor(a["time"].astype(np.float64) * scale + 0.5).astype(np.int64)
        end = np.floor((a["time"] + a["duration"]).astype(np.float64) * scale + 0.5)
        end = np.maximum(end.astype(np.int64), onset + 1)
        order = np.lexsort((a["pitch"], onset))
        tracks.append(
            TrackNotes(
                int(track.program),
                bool(track.is_drum),
                onset[order],
                end[order],
                a["pitch"].astype(np.int64)[order],
            )
        )
    return PieceNotes(np.asarray(starts, np.int64), np.asarray(lengths, np.int64), tracks)


# ---------------------------------------------------------------------- features
def _intervals(track: TrackNotes) -> np.ndarray:
    if len(track.onset) < 2:
        return np.zeros(0, np.int64)
    # The top note at each onset (notes are sorted by onset, then pitch).
    last_of_onset = np.r_[track.onset[1:] != track.onset[:-1], True]
    top = track.pitch[last_of_onset]
    return np.diff(top)


def _polyphony(tracks: Sequence[TrackNotes]) -> np.ndarray:
    if not tracks:
        return np.zeros(0, np.int64)
    onset = np.concatenate([t.onset for t in tracks])
    end = np.concatenate([t.end for t in tracks])
    if not len(onset):
        return np.zeros(0, np.int64)
    times = np.unique(onset)
    started = np.searchsorted(np.sort(onset), times, "right")  # onset ≤ t
    ended = np.searchsorted(np.sort(end), times, "right")  # end ≤ t
    return (started - ended).astype(np.int64)


def _onset_positions(piece: PieceNotes, track: TrackNotes) -> np.ndarray:
    if not len(track.onset):
        return np.zeros(0, np.int64)
    bar = np.clip(np.searchsorted(piece.bar_starts, track.onset, "right") - 1, 0, None)
    return track.onset - piece.bar_starts[bar]


def _pitch_ranges(piece: PieceNotes, track: TrackNotes) -> np.ndarray:
    """Pitch range of a track in each span of ``RANGE_BARS`` bars where it plays."""
    bar = np.clip(np.searchsorted(piece.bar_starts, track.onset, "right") - 1, 0, None)
    span = bar // RANGE_BARS
    out = []
    for index in np.unique(span):
        pitches = track.pitch[span == index]
        out.append(int(pitches.max() - pitches.min()))
    return np.asarray(out, dtype=np.int64)


def _notes_per_bar(piece: PieceNotes, track: TrackNotes) -> np.ndarray:
    bars = len(piece.bar_starts)
    if not bars:
        return np.zeros(0, np.int64)
    inside = track.onset[track.onset < piece.bar_starts[-1] + piece.bar_lengths[-1]]
    bar = np.clip(np.searchsorted(piece.bar_starts, inside, "right") - 1, 0, None)
    return np.bincount(bar, minlength=bars).astype(np.int64)


def feature_values(pieces: Iterable[PieceNotes]) -> dict[str, np.ndarray]:
    """Every feature's values pooled over ``pieces`` (see the module docstring)."""
    parts: dict[str, list[np.ndarray]] = {name: [] for name in FEATURES}
    for piece in pieces:
        pitched = [t for t in piece.pitched if len(t.onset)]
        for track in pitched:
            parts["pitch_class"].append(track.pitch % 12)
            parts["pitch_range"].append(_pitch_ranges(piece, track))
            parts["interval"].append(_intervals(track))
            parts["onset_position"].append(_onset_positions(piece, track))
            parts["duration"].append(track.end - track.onset)
            parts["notes_per_bar"].append(_notes_per_bar(piece, track))
        parts["polyphony"].append(_polyphony(pitched))
    return {
        name: np.concatenate(chunks).astype(np.int64) if chunks else np.zeros(0, np.int64)
        for name, chunks in parts.items()
    }


def histogram(values: np.ndarray, feature: Feature) -> np.ndarray:
    """Normalized histogram of ``values`` on the feature's bins (all zeros when empty)."""
    clipped = np.clip(np.asarray(values, np.int64), feature.lo, feature.hi) - feature.lo
    counts = np.bincount(clipped, minlength=feature.bins).astype(np.float64)
    total = counts.sum()
    return counts / total if total else counts


def feature_histograms(values: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {name: histogram(values[name], FEATURES[name]) for name in FEATURES}


def overlap_area(p: np.ndarray, q: np.ndarray) -> float:
    """``Σ min(p, q)`` of two histograms on the same bins, each normalized first: 1 for
    the same distribution, 0 for disjoint ones, NaN when either is empty."""
    p = np.asarray(p, np.float64)
    q = np.asarray(q, np.float64)
    if p.shape != q.shape:
        raise ValueError(f"histograms on different bins: {p.shape} vs {q.shape}")
    if p.sum() <= 0 or q.sum() <= 0:
        return math.nan
    return float(np.minimum(p / p.sum(), q / q.sum()).sum())


def compare_sets(
    a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]
) -> dict[str, float | None]:
    """Per feature, the overlapping area of two sets' pooled values (``None``: a set has
    no value for it)."""
    out: dict[str, float | None] = {}
    for name, feature in FEATURES.items():
        value = overlap_area(histogram(a[name], feature), histogram(b[name], feature))
        out[name] = None if math.isnan(value) else round(min(1.0, value), 4)
    return out
