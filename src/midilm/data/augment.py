"""Data augmentation for dataset preparation: transposition, and the choice of infill cells.

Transposition moves every pitched note by the same number of semitones. Drum tracks are
never moved (their "pitches" name instruments). A transposition that would push any note
of the piece outside MIDI's 0–127 returns ``None``: the whole variant is dropped rather
than clipping or folding notes, which would change the music. Preparation applies it to the
training split only; valid and test keep the pieces as written, so that evaluation measures
real music.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from symusic.core import ScoreTick

from midilm.tokenization.mmm import Piece

__all__ = ["choose_infill_cells", "transpose_piece", "transpose_score"]


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
