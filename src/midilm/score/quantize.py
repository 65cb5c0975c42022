"""Snap a score to a step grid, the form the MMM codec encodes exactly.

Quantizing is where information is knowingly lost (timing finer than the grid, overlapping
unisons), so it happens in one visible place: ``decode(encode(score))`` equals
``quantize(score)``, note for note.
"""

from __future__ import annotations

import numpy as np
from symusic import Note
from symusic.core import ScoreTick

__all__ = ["quantize"]


def quantize(score: ScoreTick, steps_per_quarter: int) -> ScoreTick:
    """A copy whose tick is one grid step (``ticks_per_quarter == steps_per_quarter``).

    - onsets and ends are rounded to the nearest step (half up); a note shorter than a step
      lasts one step;
    - within a track, notes of the same pitch never overlap: a second onset at the same step
      keeps only the longer note, and an earlier note is cut where the next one starts
      (what a MIDI note-on does to a sounding key);
    - tracks left without notes are dropped; tempos and meters move to the new grid.
    """
    if steps_per_quarter < 1:
        raise ValueError(f"steps_per_quarter must be ≥ 1, received {steps_per_quarter}")
    scale = steps_per_quarter / int(score.ticks_per_quarter)
    out = score.resample(steps_per_quarter, min_dur=1)
    out.tracks.clear()
    for track in score.tracks:
        if not len(track.notes):
            continue
        a = track.notes.numpy()
        onset = np.floor(a["time"].astype(np.float64) * scale + 0.5).astype(np.int64)
        end = np.floor((a["time"] + a["duration"]).astype(np.float64) * scale + 0.5).astype(
            np.int64
        )
        end = np.maximum(end, onset + 1)
        pitch = a["pitch"].astype(np.int64)
        velocity = a["velocity"].astype(np.int64)
        onset, end, pitch, velocity = _remove_unison_overlaps(onset, end, pitch, velocity)
        order = np.lexsort((pitch, onset))
        new = track.copy()
        new.notes = Note.from_numpy(
            time=onset[order].astype(np.int32),
            duration=(end - onset)[order].astype(np.int32),
            pitch=pitch[order].astype(np.int8),
            velocity=velocity[order].astype(np.int8),
        )
        new.controls.clear()
        new.pitch_bends.clear()
        new.pedals.clear()
        out.tracks.append(new)
    return out


def _remove_unison_overlaps(
    onset: np.ndarray, end: np.ndarray, pitch: np.ndarray, velocity: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    # Sort by pitch, onset, longest first: a repeated (pitch, onset) keeps its first row.
    order = np.lexsort((-(end - onset), onset, pitch))
    onset, end, pitch, velocity = onset[order], end[order], pitch[order], velocity[order]
    same_start = np.zeros(len(onset), dtype=bool)
    same_start[1:] = (pitch[1:] == pitch[:-1]) & (onset[1:] == onset[:-1])
    keep = ~same_start
    onset, end, pitch, velocity = onset[keep], end[keep], pitch[keep], velocity[keep]
    # Cut each note where the next note of the same pitch starts.
    if len(onset) > 1:
        same_pitch_next = pitch[:-1] == pitch[1:]
        cut = same_pitch_next & (end[:-1] > onset[1:])
        end[:-1][cut] = onset[1:][cut]
    return onset, end, pitch, velocity
