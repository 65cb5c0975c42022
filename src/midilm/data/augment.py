"""Data augmentation for dataset preparation: transposition, instruments, and the choice of
infill cells.

Transposition moves every pitched note by the same number of semitones. Drum tracks are
never moved (their "pitches" name instruments). A transposition that would push any note
of the piece outside MIDI's 0–127 returns ``None``: the whole variant is dropped rather
than clipping or folding notes, which would change the music.

Instrument augmentation (scheme ``"ensembles"``) gives the tracks of a window other General
MIDI programs, so that a model trained on, say, four-voice chorales sung or played on an
organ also learns to write them for a string quartet, a brass choir or woodwinds. Each
program has a comfortable *sounding* range (:data:`INSTRUMENT_FAMILIES`); a track may only
get a program whose range holds every note it plays in the window, so a bass line never
goes to a violin and a soprano never to a tuba. A window either keeps its programs, becomes
an *ensemble* (one family for every track: each track gets a program of that family that
fits it) or is *mixed* (each track draws a family of its own, then a program). Drum tracks
keep theirs. Only programs change: notes, timing and track order are the same.

Preparation applies both to the training split only; valid and test keep the pieces as
written, so that evaluation measures real music.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Literal

import numpy as np
from symusic.core import ScoreTick

from midilm.tokenization.mmm import Piece

__all__ = [
    "INSTRUMENT_FAMILIES",
    "INSTRUMENT_SCHEMES",
    "choose_infill_cells",
    "choose_programs",
    "fitting_programs",
    "transpose_piece",
    "transpose_score",
    "with_programs",
]

INSTRUMENT_SCHEMES = ("none", "ensembles")
"""``PrepareConfig.instrument_augmentation`` values: ``"none"`` keeps every program;
``"ensembles"`` is the scheme of this module."""

INSTRUMENT_FAMILIES: dict[str, tuple[tuple[int, int, int], ...]] = {
    # family: (GM program from 0, lowest, highest comfortable sounding MIDI pitch)
    "choir": ((52, 40, 84), (53, 40, 84)),  # choir aahs, voice oohs: E2–C6, bass to soprano
    "strings": (
        (40, 55, 96),  # violin: G3 (its open string) – C7
        (41, 48, 88),  # viola: C3 – E6
        (42, 36, 76),  # cello: C2 – E5
        (43, 28, 64),  # contrabass: E1 – E4 (sounding an octave below its written notes)
        (48, 28, 96),  # string ensemble 1
    ),
    "organ": tuple((program, 24, 96) for program in range(16, 21)),  # drawbar … reed: C1–C7
    "brass": (
        (56, 54, 82),  # trumpet: F#3 – B♭5
        (57, 40, 72),  # trombone: E2 – C5
        (58, 28, 64),  # tuba: E1 – E4
        (60, 41, 77),  # french horn: F2 – F5
    ),
    "woodwinds": (
        (73, 60, 96),  # flute: C4 – C7
        (68, 58, 91),  # oboe: B♭3 – G6
        (71, 50, 91),  # clarinet: D3 – G6 (sounding)
        (70, 34, 75),  # bassoon: B♭1 – E♭5
    ),
    "piano": ((0, 21, 108),),  # acoustic grand: A0 – C8
}
"""The programs instrument augmentation draws from, by family, with the range of pitches
each plays comfortably (a little inside the instrument's extreme range)."""

Mode = Literal["original", "ensemble", "mixed"]


def transpose_piece(piece: Piece, semitones: int) -> Piece | None:
    """A copy of an MMM :class:`~midilm.tokenization.mmm.Piece` moved by ``semitones``
    (drums unchanged), or ``None`` when a note would leave 0–127."""
    if semitones == 0:
        return piece
    from midilm.tokenization.mmm_vocab import DRUMS

    tracks = []
    for track in piece.tracks:
        if track.program == DRUMS or not len(track.pitch):
            tracks.append(track)
            continue
        pitch = track.pitch + semitones
        if pitch.min() < 0 or pitch.max() > 127:
            return None
        tracks.append(dataclasses.replace(track, pitch=pitch))
    return dataclasses.replace(piece, tracks=tracks)


def transpose_score(score: ScoreTick, semitones: int) -> ScoreTick | None:
    """A copy of a score moved by ``semitones`` (drum tracks unchanged), or ``None`` when a
    note would leave 0–127."""
    if semitones == 0:
        return score
    for track in score.tracks:
        if track.is_drum or not len(track.notes):
            continue
        pitch = track.notes.numpy()["pitch"].astype(np.int64)
        if pitch.min() + semitones < 0 or pitch.max() + semitones > 127:
            return None
    out = score.copy()
    for track in out.tracks:
        if not track.is_drum:
            track.shift_pitch(semitones, inplace=True)
    return out


def choose_infill_cells(
    rng: np.random.Generator, tracks: Sequence[int], num_bars: int, max_cells: int
) -> list[tuple[int, int]]:
    """Between 1 and ``max_cells`` distinct ``(track, bar)`` cells of a window, uniformly:
    the bars a bar-infilling example masks. ``tracks`` are the tracks written in the window
    (a silent track is not written, so it cannot hold a placeholder)."""
    cells = [(t, b) for t in tracks for b in range(num_bars)]
    if not cells or max_cells < 1:
        return []
    count = int(rng.integers(1, min(max_cells, len(cells)) + 1))
    chosen = rng.choice(len(cells), size=count, replace=False)
    return sorted(cells[i] for i in chosen.tolist())


def fitting_programs(low: int, high: int) -> dict[str, list[int]]:
    """The programs of each family whose range holds ``low``…``high`` (a track's lowest and
    highest pitch); families with none are left out."""
    out: dict[str, list[int]] = {}
    for family, programs in INSTRUMENT_FAMILIES.items():
        fit = [program for program, lo, hi in programs if lo <= low and high <= hi]
        if fit:
            out[family] = fit
    return out


def choose_programs(
    rng: np.random.Generator,
    ranges: Sequence[tuple[int, int] | None],
    *,
    keep_share: float,
    mixed_share: float,
) -> tuple[Mode, list[int | None]]:
    """New programs for the tracks of one window: ``ranges`` holds each track's lowest and
    highest pitch there, or ``None`` for a track that keeps its program (drums).

    With probability ``keep_share`` every track keeps its program (``"original"``).
    Otherwise, with probability ``mixed_share``, each track draws a family among those with
    a program that fits it, then one of those programs (``"mixed"``); else one family is
    drawn among those that fit every track, and each track one of its programs that fits it
    (``"ensemble"``; mixed when no family fits them all). A track no program fits keeps its
    own. Returns the mode and, per track, the new program or ``None`` (keep)."""
    if all(r is None for r in ranges):
        return "original", [None] * len(ranges)
    draw = rng.random()
    if draw < keep_share:
        return "original", [None] * len(ranges)
    fits = [fitting_programs(*r) if r is not None else None for r in ranges]
    if (draw - keep_share) / (1.0 - keep_share) >= mixed_share:
        common = [f for f in INSTRUMENT_FAMILIES if all(fit is None or f in fit for fit in fits)]
        if common:
            family = common[int(rng.integers(len(common)))]
            return "ensemble", [
                None if fit is None else fit[family][int(rng.integers(len(fit[family])))]
                for fit in fits
            ]
    programs: list[int | None] = []
    for fit in fits:
        if not fit:
            programs.append(None)
            continue
        families = list(fit)
        choices = fit[families[int(rng.integers(len(families)))]]
        programs.append(choices[int(rng.integers(len(choices)))])
    return "mixed", programs


def with_programs(piece: Piece, programs: Sequence[int | None]) -> Piece:
    """A copy of an MMM piece whose track ``i`` plays ``programs[i]`` (``None``: its own)
    and the same notes (shared, not copied)."""
    tracks = [
        track if program is None else dataclasses.replace(track, program=program)
        for track, program in zip(piece.tracks, programs, strict=True)
    ]
    return dataclasses.replace(piece, tracks=tracks)
