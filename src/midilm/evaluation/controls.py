"""Do MMM models do what the controls ask? Density bins and instruments, per track.

A composed track was asked for a ``DENSITY`` bin; what it achieved is the bin of the notes
it wrote, measured as the encoder measures it (notes sounding in a window of
``bars_per_window`` bars, binned with the tokenizer's fitted edges). Windows tile the piece
from its first bar, the last one ending on its last bar (overlapping the one before when
the bars do not divide evenly), as the encoder cuts windows at a hop of a whole window: every
window measured is one the sampler wrote under the requested ``DENSITY`` token. (A shorter
tail window, its count scaled up, was measured before: the model is never asked for that
span, and scaling a count of a few notes moves it across bins one or two notes wide.) Only a
piece shorter than a window is one window of its own length, scaled as ``density_bin``
scales it. Each window of each track counts once: ``exact`` is the share whose achieved bin
equals the requested one, ``within_1`` the share off by at most one bin.

Instruments are forced into the prompt (``INST=…``), so the only way to miss one is to
leave its track silent: ``instruments_present`` is the share of requested tracks that
come back with their program and at least one note.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from midilm.errors import UnsupportedScoreError
from midilm.score.meter import bar_grid
from midilm.tokenization.mmm import window_spans
from midilm.tokenization.mmm_vocab import DRUMS

if TYPE_CHECKING:
    from symusic.core import ScoreTick

    from midilm.tokenization.mmm import MMMTokenizer

__all__ = ["achieved_density", "control_accuracy"]


def _bar_ticks(score: ScoreTick, bars: int) -> list[tuple[int, int]]:
    """``(start, end)`` ticks of the score's first ``bars`` bars (its grid extended when
    the last bars are silent)."""
    try:
        grid = [(b.start_ticks, b.end_ticks) for b in bar_grid(score)]
    except UnsupportedScoreError:
        grid = []
    if not grid:
        grid = [(0, 4 * int(score.ticks_per_quarter))]
    while len(grid) < bars:
        start, end = grid[-1]
        grid.append((end, end + end - start))
    return grid[:bars]


def achieved_density(tok: MMMTokenizer, score: ScoreTick, track: int, bars: int) -> list[int]:
    """The density bin track ``track`` of a composed score achieved in each window of
    ``bars_per_window`` bars from the first bar (the last one ending on the last bar)."""
    window = tok.config.bars_per_window
    grid = _bar_ticks(score, bars)
    notes = score.tracks[track].notes.numpy()
    onset = notes["time"].astype(np.int64)
    end = onset + notes["duration"].astype(np.int64)
    out = []
    for start, stop in window_spans(len(grid), window, window):  # a hop of a whole window
        lo, hi = grid[start][0], grid[stop - 1][1]
        count = int(np.count_nonzero((onset < hi) & (end > lo)))
        out.append(tok.density_bin(count, stop - start))
    return out


def control_accuracy(
    tok: MMMTokenizer,
    scores: Sequence[ScoreTick],
    requests: Sequence[Sequence[tuple[int, int]]],
    bars: int,
) -> dict[str, Any]:
    """Requested vs achieved density and instruments over composed ``scores`` (score ``i``
    answered ``requests[i]``, one ``(program, density bin)`` per track, in track order;
    drums are program 128). Also returns the confusion matrix of density bins
    (``density_confusion[requested][achieved]``), for a plot."""
    bins = tok.config.density_bins
    confusion = np.zeros((bins, bins), dtype=np.int64)
    present = tracks = 0
    for score, asked in zip(scores, requests, strict=True):
        for index, (program, density) in enumerate(asked):
            tracks += 1
            if index >= len(score.tracks):
                continue
            track = score.tracks[index]
            same = (
                bool(track.is_drum)
                if program == DRUMS
                else (not track.is_drum and int(track.program) == program)
            )
            present += same and len(track.notes) > 0
            for achieved in achieved_density(tok, score, index, bars):
                confusion[density, min(achieved, bins - 1)] += 1
    judged = int(confusion.sum())
    diff = np.abs(np.subtract.outer(np.arange(bins), np.arange(bins)))
    return {
        "tracks": tracks,
        "windows": judged,
        "density_exact": round(float(np.trace(confusion) / judged), 4) if judged else None,
        "density_within_1": (
            round(float(confusion[diff <= 1].sum() / judged), 4) if judged else None
        ),
        "instruments_present": round(present / tracks, 4) if tracks else None,
        "density_confusion": confusion.tolist(),
    }
