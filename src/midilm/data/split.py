"""What a piece *is*, for dataset preparation: a content hash of its notes, the split that
hash assigns it to, and the random generator seeded from it.

**Note hash.** Two files are the same piece when they hold the same notes, however they
were written: another ticks-per-quarter, tempo map, track order or split of a part into
two tracks of the same program, other velocities, a leading rest. The hash covers the set of
``(program, onset, end, pitch)`` over all tracks (drums as program 128), with times in
1/12 quarter notes (:data:`HASH_STEPS_PER_QUARTER`: 16ths and triplets exactly) shifted so
the first onset is 0. It does not depend on any tokenizer setting, so one corpus gets the
same hashes, the same duplicates and the same splits for MMM and REMI datasets.

**Split.** A piece goes to train, valid or test by the first 64 bits of
``sha256("midilm-split-v1:" + note hash)`` read as a number in [0, 1) and compared with the
cumulative ratios. The split therefore depends on the notes alone: not on the file name, on
where the file sits in the corpus, nor on what else is in the corpus. A piece keeps its split
when files are added, and every example made from it (windows, transpositions, infill
examples) lands in that split.

**Generator.** ``numpy.random.default_rng([seed, first 64 bits of the note hash])``: every
random choice about a piece (track order, infill bars; instruments from a stream of its own)
is the same in whatever process, order or machine the piece is prepared, and independent of
every other piece.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
from symusic.core import ScoreTick

__all__ = ["HASH_STEPS_PER_QUARTER", "note_hash", "piece_rng", "split_of", "split_position"]

HASH_STEPS_PER_QUARTER = 12
_DRUM_PROGRAM = 128
_SPLIT_NAMES = ("train", "valid", "test")


def note_hash(score: ScoreTick) -> str:
    """The hex SHA-256 of the notes of ``score`` (see the module doc); ``""`` with no note."""
    rows = []
    tpq = int(score.ticks_per_quarter)
    for track in score.tracks:
        if not len(track.notes):
            continue
        a = track.notes.numpy()
        start = a["time"].astype(np.int64)
        stop = start + a["duration"].astype(np.int64)
        onset = (start * HASH_STEPS_PER_QUARTER * 2 + tpq) // (2 * tpq)  # round half up
        end = (stop * HASH_STEPS_PER_QUARTER * 2 + tpq) // (2 * tpq)
        program = _DRUM_PROGRAM if track.is_drum else int(track.program)
        rows.append(
            np.stack(
                [
                    np.full(len(onset), program, dtype=np.int64),
                    onset,
                    np.maximum(end, onset + 1),
                    a["pitch"].astype(np.int64),
                ],
                axis=1,
            )
        )
    if not rows:
        return ""
    notes = np.concatenate(rows)
    notes[:, 1:3] -= notes[:, 1].min()
    order = np.lexsort(notes.T[::-1])
    notes = notes[order]
    keep = np.ones(len(notes), dtype=bool)
    keep[1:] = (notes[1:] != notes[:-1]).any(axis=1)
    digest = hashlib.sha256(b"midilm-notes-v1\0")
    digest.update(np.ascontiguousarray(notes[keep], dtype="<i8").tobytes())
    return digest.hexdigest()


def split_position(piece_hash: str) -> float:
    """Where a piece falls in [0, 1), uniformly and stably (see the module doc)."""
    digest = hashlib.sha256(f"midilm-split-v1:{piece_hash}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_of(piece_hash: str, ratios: Sequence[float]) -> str:
    """``"train"``, ``"valid"`` or ``"test"`` for a piece, given the three split ratios."""
    if len(ratios) != len(_SPLIT_NAMES):
        raise ValueError(f"expected {len(_SPLIT_NAMES)} ratios, received {list(ratios)}")
    position = split_position(piece_hash)
    bound = 0.0
    for name, ratio in zip(_SPLIT_NAMES, ratios, strict=True):
        bound += ratio
        if position < bound:
            return name
    # Rounding can leave the sum a hair under 1: the remainder belongs to the last split
    # that has any share.
    return next(n for n, r in zip(_SPLIT_NAMES[::-1], ratios[::-1], strict=True) if r > 0)


def piece_rng(seed: int, piece_hash: str, *stream: int) -> np.random.Generator:
    """The random generator of one piece (see the module doc). ``stream`` (integers ≥ 0)
    names another, independent generator of the same piece: one per purpose and variant,
    so that a new kind of choice never shifts the choices already made (turning instrument
    augmentation on leaves every track order and infill choice as it was)."""
    return np.random.default_rng([seed, int(piece_hash[:16], 16), *stream])
