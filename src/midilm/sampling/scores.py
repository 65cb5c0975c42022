"""Sampled notes written back into the user's own score.

The tasks work on a quantized :class:`~midilm.tokenization.mmm.Piece`; users hand in a
``symusic.Score`` with their tempo, meters, track names, programs, velocities and timing.
What comes back is *their* score with only the new notes added or the chosen bars replaced:
every other note, control and meta event is untouched. A note belongs to the bar its
quantized onset falls in, the same rounding the tokenizer uses.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from symusic.core import NoteTickList, ScoreTick, TrackTick

from midilm.score.gm import program_name
from midilm.tokenization.mmm import MMMTokenizer, Piece, PieceTrack
from midilm.tokenization.mmm_vocab import DRUMS

__all__ = [
    "piece_tracks",
    "with_cells",
    "with_new_bars",
    "with_new_track",
    "with_track_replaced",
]


def piece_tracks(score: ScoreTick) -> list[int]:
    """The score's track index of each piece track (the piece drops tracks without notes)."""
    return [i for i, track in enumerate(score.tracks) if len(track.notes)]


def with_new_bars(prompt: ScoreTick, piece: Piece, first_bar: int, tok: MMMTokenizer) -> ScoreTick:
    """The prompt with the piece's notes from bar ``first_bar`` on added to its tracks."""
    out = prompt.copy()
    lo = piece.bars[first_bar].start_ticks
    for index, track in zip(piece_tracks(prompt), piece.tracks, strict=True):
        keep = track.onset >= lo
        _add(out, out.tracks[index], track, keep, tok)
    return out


def with_cells(
    score: ScoreTick, piece: Piece, cells: Sequence[tuple[int, int]], tok: MMMTokenizer
) -> ScoreTick:
    """The score with the bars ``(piece track, bar)`` replaced by the piece's notes."""
    out = score.copy()
    mapping = piece_tracks(score)
    scale = _steps_per_tick(score, tok)
    for track_index, bar_index in cells:
        bar = piece.bars[bar_index]
        target = out.tracks[mapping[track_index]]
        notes = target.notes.numpy()
        onset_steps = np.floor(notes["time"].astype(np.float64) * scale + 0.5)
        inside = (onset_steps >= bar.start_ticks) & (onset_steps < bar.end_ticks)
        target.notes = NoteTickList.from_numpy(*(notes[k][~inside] for k in _FIELDS))
        new = piece.tracks[track_index]
        chosen = (new.onset >= bar.start_ticks) & (new.onset < bar.end_ticks)
        _add(out, target, new, chosen, tok, velocity_from=notes["velocity"])
    return out


def with_new_track(score: ScoreTick, track: PieceTrack, tok: MMMTokenizer) -> ScoreTick:
    """The score with the piece track appended as a new track named after its instrument."""
    out = score.copy()
    is_drum = track.program == DRUMS
    program = 0 if is_drum else track.program
    new = TrackTick(program_name(program, is_drum), program, is_drum)
    out.tracks.append(new)
    _add(out, out.tracks[len(out.tracks) - 1], track, np.ones(len(track.onset), bool), tok)
    return out


def with_track_replaced(
    score: ScoreTick, index: int, track: PieceTrack, tok: MMMTokenizer
) -> ScoreTick:
    """The score with track ``index``'s notes replaced; its name, program, controls stay."""
    out = score.copy()
    target = out.tracks[index]
    velocities = target.notes.numpy()["velocity"]
    target.notes = NoteTickList()
    _add(out, target, track, np.ones(len(track.onset), bool), tok, velocity_from=velocities)
    return out


_FIELDS = ("time", "duration", "pitch", "velocity")


def _steps_per_tick(score: ScoreTick, tok: MMMTokenizer) -> float:
    return tok.config.steps_per_quarter / int(score.ticks_per_quarter)


def _add(
    score: ScoreTick,
    target: TrackTick,
    track: PieceTrack,
    keep: np.ndarray,
    tok: MMMTokenizer,
    *,
    velocity_from: np.ndarray | None = None,
) -> None:
    """Add the kept piece notes to ``target`` in the score's ticks, at the track's usual
    velocity (the median of its notes; the model's own velocity for an empty track)."""
    ticks = 1.0 / _steps_per_tick(score, tok)
    existing = target.notes.numpy()
    velocities = velocity_from if velocity_from is not None else existing["velocity"]
    velocity = int(np.median(velocities)) if len(velocities) else tok.config.velocity
    onset = np.round(track.onset[keep] * ticks).astype(np.int64)
    end = np.round(track.end[keep] * ticks).astype(np.int64)
    fields = {
        "time": np.concatenate([existing["time"], onset]).astype(np.int32),
        "duration": np.concatenate([existing["duration"], np.maximum(1, end - onset)]).astype(
            np.int32
        ),
        "pitch": np.concatenate([existing["pitch"], track.pitch[keep]]).astype(np.int8),
        "velocity": np.concatenate(
            [existing["velocity"], np.full(int(keep.sum()), velocity)]
        ).astype(np.int8),
    }
    order = np.lexsort((fields["pitch"], fields["time"]))
    target.notes = NoteTickList.from_numpy(*(fields[k][order] for k in _FIELDS))
