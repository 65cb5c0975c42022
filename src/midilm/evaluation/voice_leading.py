"""Voice leading of four-part (chorale-like) music, judged by music21.

Two things a reader of chorales checks first:

- **Parallel fifths and octaves**: for every pair of voices, every *motion* (a time where at
  least one of the two moves to a new pitch while both sound before and after) is given to
  music21's :class:`~music21.voiceLeading.VoiceLeadingQuartet`, which decides whether it is
  a parallel (or antiparallel) perfect fifth or octave, compound intervals included. Rates
  are per 100 motions of all voice pairs.
- **Ranges**: the share of each voice's notes inside its usual range, :data:`VOICE_RANGES`
  (the textbook SATB ranges: soprano C4–G5, alto G3–D5, tenor C3–G4, bass E2–C4, ends
  included, C4 = MIDI 60).

Pieces count only when they have exactly four pitched tracks with notes; the voices are
told apart by mean pitch (highest = soprano), since track order and names vary (datasets
shuffle tracks). MIDI pitches carry no spelling, so each upper note is spelled from the
lower one by its semitone distance (music21's default name for it: 7 semitones is a perfect
fifth), which keeps an enharmonic accident (G♯ against E♭) from hiding a fifth.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from midilm.evaluation.statistics import PieceNotes, TrackNotes
from midilm.score.voices import VOICE_RANGES, VOICES

__all__ = [
    "VOICES",
    "VOICE_RANGES",
    "ParallelCounts",
    "count_parallels",
    "four_voices",
    "voice_leading_stats",
]


@dataclass
class ParallelCounts:
    """Motions between two voices, and how many were parallel fifths and octaves."""

    motions: int = 0
    fifths: int = 0
    octaves: int = 0

    def __iadd__(self, other: ParallelCounts) -> ParallelCounts:
        self.motions += other.motions
        self.fifths += other.fifths
        self.octaves += other.octaves
        return self


def four_voices(piece: PieceNotes) -> list[TrackNotes] | None:
    """The four pitched tracks of a piece as soprano, alto, tenor, bass (by mean pitch),
    or ``None`` when it does not have exactly four with notes."""
    tracks = [t for t in piece.pitched if len(t.pitch)]
    if len(tracks) != 4:
        return None
    return sorted(tracks, key=lambda t: -float(t.pitch.mean()))


def _sounding(track: TrackNotes, times: np.ndarray) -> np.ndarray:
    """The pitch sounding in ``track`` at each time (the highest of a chord), -1 in rests."""
    out = np.full(len(times), -1, dtype=np.int64)
    for onset, end, pitch in zip(track.onset, track.end, track.pitch, strict=True):
        inside = (times >= onset) & (times < end)
        out[inside] = np.maximum(out[inside], pitch)
    return out


@functools.lru_cache(maxsize=65536)
def _parallel(upper1: int, upper2: int, lower1: int, lower2: int) -> tuple[bool, bool]:
    """(parallel fifth, parallel octave) of the motion upper1→upper2 over lower1→lower2,
    by music21 (cached: chorales repeat the same few hundred motions)."""
    from music21 import interval, note, pitch, voiceLeading

    def spelled(lower_midi: int, upper_midi: int) -> tuple[note.Note, note.Note]:
        lower = pitch.Pitch()
        lower.midi = lower_midi
        upper = interval.Interval(upper_midi - lower_midi).transposePitch(lower)
        return note.Note(upper), note.Note(lower)

    u1, l1 = spelled(lower1, upper1)
    u2, l2 = spelled(lower2, upper2)
    quartet = voiceLeading.VoiceLeadingQuartet(u1, u2, l1, l2)
    return bool(quartet.parallelFifth()), bool(quartet.parallelOctave())


def count_parallels(upper: TrackNotes, lower: TrackNotes) -> ParallelCounts:
    """Parallel fifths and octaves between two voices, over their motions."""
    times = np.union1d(upper.onset, lower.onset)
    counts = ParallelCounts()
    if len(times) < 2:
        return counts
    up = _sounding(upper, times)
    low = _sounding(lower, times)
    for i in range(len(times) - 1):
        u1, u2, l1, l2 = int(up[i]), int(up[i + 1]), int(low[i]), int(low[i + 1])
        if min(u1, u2, l1, l2) < 0 or (u1 == u2 and l1 == l2):
            continue
        counts.motions += 1
        fifth, octave = _parallel(u1, u2, l1, l2)
        counts.fifths += fifth
        counts.octaves += octave
    return counts


def voice_leading_stats(pieces: Iterable[PieceNotes]) -> dict[str, object] | None:
    """Parallels per 100 motions and the share of notes in range per voice, over the
    four-voice pieces among ``pieces`` (``None`` when there is none)."""
    total = ParallelCounts()
    in_range = dict.fromkeys(VOICES, 0)
    notes = dict.fromkeys(VOICES, 0)
    used = 0
    for piece in pieces:
        voices = four_voices(piece)
        if voices is None:
            continue
        used += 1
        for upper, lower in itertools.combinations(voices, 2):
            total += count_parallels(upper, lower)
        for name, track in zip(VOICES, voices, strict=True):
            lo, hi = VOICE_RANGES[name]
            in_range[name] += int(np.count_nonzero((track.pitch >= lo) & (track.pitch <= hi)))
            notes[name] += len(track.pitch)
    if not used:
        return None
    per_100 = 100.0 / total.motions if total.motions else float("nan")
    return {
        "pieces": used,
        "motions": total.motions,
        "parallel_fifths": total.fifths,
        "parallel_octaves": total.octaves,
        "parallel_fifths_per_100_motions": _round(total.fifths * per_100),
        "parallel_octaves_per_100_motions": _round(total.octaves * per_100),
        "in_range": {name: _round(in_range[name] / notes[name]) for name in VOICES},
    }


def _round(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 4)  # JSON has no NaN
