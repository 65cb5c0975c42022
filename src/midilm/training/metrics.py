"""Validation metrics that compare across tokenizations: loss, perplexity, bits per note.

Loss and perplexity are per *token*, so they depend on the tokenizer: a REMI + BPE-20k model
and an MMM model see different token streams for the same music. **Bits per note** divides
the total negative log-likelihood (in bits) of a split by the number of notes its tokens
encode, which is the same music whatever the tokenization:

- MMM: one note per ``NOTE_ON=…`` token;
- REMI: one note per ``Pitch_…`` base token, counted inside BPE tokens too (a learned id
  stands for a run of base tokens: :meth:`~midilm.tokenization.remi.REMITokenizer.expansion`).

All sums run over the tokens a model predicts (labels shifted by one, padding left out), so
``loss`` here is the token-weighted mean NLL in nats and ``perplexity = exp(loss)``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

    from midilm.tokenization.base import Tokenizer

__all__ = [
    "NLLStats",
    "StreamingMetrics",
    "metrics_from_stats",
    "notes_per_token",
    "sequence_nll_stats",
]

NLLStats = np.ndarray
"""``(N, 3)`` float64 rows of ``(nll_nats, predicted_tokens, notes)``, one per sequence."""

_REMI_NOTE_PREFIXES = ("Pitch_", "PitchDrum_")


def notes_per_token(tokenizer: Tokenizer) -> np.ndarray:
    """``counts[id]``: how many notes token ``id`` encodes (0 for every other token)."""
    kind = getattr(tokenizer, "kind", None)
    if kind == "mmm":
        from midilm.tokenization.mmm_vocab import Kind

        kinds = tokenizer.vocab.kinds  # type: ignore[attr-defined]
        return (kinds == int(Kind.NOTE_ON)).astype(np.int64)
    if kind == "remi":
        expansion = tokenizer.expansion  # type: ignore[attr-defined]
        return np.asarray(
            [
                sum(token.startswith(_REMI_NOTE_PREFIXES) for token in expansion(i))
                for i in range(tokenizer.vocab_size)
            ],
            dtype=np.int64,
        )
    raise TypeError(f"notes_per_token: unknown tokenizer kind {kind!r}")


def sequence_nll_stats(
    logits: torch.Tensor, labels: torch.Tensor, notes: torch.Tensor
) -> torch.Tensor:
    """Per sequence: summed NLL (nats) of the predicted tokens, their count and their notes.

    ``logits`` ``(B, T, V)``, ``labels`` ``(B, T)`` with -100 on padding (unshifted: position
    t predicts label t + 1, as in the Hugging Face causal-LM loss), ``notes`` ``(V,)``.
    Returns ``(B, 3)`` float64.
    """
    import torch
    import torch.nn.functional as F

    shifted_logits = logits[:, :-1, :].float()  # (B, T-1, V)
    targets = labels[:, 1:]  # (B, T-1)
    keep = targets != -100
    safe = targets.masked_fill(~keep, 0)
    nll = F.cross_entropy(
        shifted_logits.reshape(-1, shifted_logits.shape[-1]), safe.reshape(-1), reduction="none"
    ).view_as(safe)  # (B, T-1)
    nll = nll.masked_fill(~keep, 0.0)
    note_counts = notes.to(safe.device)[safe].masked_fill(~keep, 0)  # (B, T-1)
    return torch.stack(
        [nll.double().sum(1), keep.double().sum(1), note_counts.double().sum(1)], dim=1
    )


def metrics_from_stats(stats: NLLStats) -> dict[str, float]:
    """Totals of :func:`sequence_nll_stats` rows → ``loss`` (mean NLL per token, nats),
    ``perplexity``, ``bits_per_token``, ``bits_per_note`` and the token and note counts."""
    totals: Any = np.asarray(stats, dtype=np.float64).reshape(-1, 3).sum(axis=0)
    nll, tokens, notes = (float(x) for x in totals)
    loss = nll / tokens if tokens else math.nan
    bits = nll / math.log(2)
    return {
        "nll": loss,
        "perplexity": math.exp(loss) if loss < 700 else math.inf,
        "bits_per_token": bits / tokens if tokens else math.nan,
        "bits_per_note": bits / notes if notes else math.nan,
        "tokens": tokens,
        "notes": notes,
    }


class StreamingMetrics:
    """``compute_metrics`` for the Trainer's ``batch_eval_metrics`` mode: it receives each
    evaluation batch's :func:`sequence_nll_stats` rows (gathered from every process) and
    returns the metrics of the whole split at the last batch. Nothing else of a batch is
    kept, so evaluating a large valid split takes no memory beyond the totals."""

    def __init__(self) -> None:
        self._totals = np.zeros(3, dtype=np.float64)

    def __call__(self, prediction: Any, compute_result: bool = True) -> dict[str, float]:
        rows = prediction.predictions
        if hasattr(rows, "detach"):
            rows = rows.detach().double().cpu().numpy()
        self._totals += np.asarray(rows, dtype=np.float64).reshape(-1, 3).sum(axis=0)
        if not compute_result:
            return {}
        totals, self._totals = self._totals, np.zeros(3, dtype=np.float64)
        return metrics_from_stats(totals)
