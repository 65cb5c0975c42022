"""Real music to compare samples with: sequences of a dataset split, decoded to scores.

A split stores token sequences (MMM windows, REMI pieces), so the reference is what the
model was shown, decoded by the tokenizer itself (fill answers spliced back). At most
``limit`` sequences are decoded, an even seeded draw over the split, so an evaluation stays
fast on a large corpus. MMM training windows carry the dataset's augmentation (transposed
copies, shuffled track order); statistics here do not depend on track order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from midilm.data.shards import read_split

if TYPE_CHECKING:
    from symusic.core import ScoreTick

    from midilm.tokenization.base import Tokenizer

__all__ = ["ReferenceSequence", "reference_sequences"]


@dataclass(frozen=True)
class ReferenceSequence:
    """One decoded sequence: its index in the split, ids, score and bars (MMM: the
    window's bars; REMI: ``None``, to the last note)."""

    index: int
    ids: list[int]
    score: ScoreTick
    bars: int | None


def reference_sequences(
    tokenizer: Tokenizer,
    dataset_dir: str | Path,
    split: str,
    *,
    limit: int | None,
    seed: int = 0,
) -> list[ReferenceSequence]:
    """Up to ``limit`` sequences of ``split`` decoded (in split order), chosen by ``seed``;
    sequences that decode to no note are left out."""
    tokens, offsets = read_split(Path(dataset_dir), split)
    total = len(offsets) - 1
    if limit is not None and total > limit:
        rng = np.random.default_rng(seed)
        chosen = np.sort(rng.choice(total, size=limit, replace=False))
    else:
        chosen = np.arange(total)
    out = []
    for index in chosen.tolist():
        ids = np.asarray(tokens[offsets[index] : offsets[index + 1]], dtype=np.int64).tolist()
        if tokenizer.kind == "mmm":
            from midilm.evaluation.samples import window_bars

            score = tokenizer.decode(ids)
            bars: int | None = window_bars(tokenizer, ids)  # type: ignore[arg-type]
        else:
            score = tokenizer.decode(ids)
            bars = None
        if any(len(t.notes) for t in score.tracks):
            out.append(ReferenceSequence(index, ids, score, bars))
    return out
