"""Held-out likelihood of a model on a prepared dataset: loss, perplexity, bits per note.

The split is read as training read it (:class:`~midilm.data.TokenDataset`: MMM windows one
by one, REMI packed into context-long chunks) and scored with the same sums as validation
during training (:mod:`midilm.training.metrics`), so the numbers line up with the model's
recorded valid loss. Bits per note divides by the notes the tokens encode, which compares
models across tokenizations; loss and perplexity are per token and do not.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from midilm.data.shards import DatasetError, read_manifest, read_split
from midilm.errors import TokenizerMismatchError

if TYPE_CHECKING:
    from midilm.model.music_model import MusicModel
    from midilm.tokenization.base import Tokenizer

__all__ = ["SplitLikelihood", "check_same_vocabulary", "choose_split", "split_likelihood"]


@dataclass(frozen=True)
class SplitLikelihood:
    """Likelihood of one split. ``loss`` is the mean NLL per predicted token (nats)."""

    split: str
    sequences: int
    tokens: int
    notes: int
    loss: float
    perplexity: float
    bits_per_token: float
    bits_per_note: float

    def to_dict(self) -> dict[str, Any]:
        def clean(x: float) -> float | None:
            return None if not np.isfinite(x) else round(float(x), 6)

        return {
            "split": self.split,
            "sequences": self.sequences,
            "tokens": self.tokens,
            "notes": self.notes,
            "loss": clean(self.loss),
            "perplexity": clean(self.perplexity),
            "bits_per_token": clean(self.bits_per_token),
            "bits_per_note": clean(self.bits_per_note),
        }


def _split_size(directory: Path, split: str) -> int:
    try:
        _, offsets = read_split(directory, split)
    except DatasetError:
        return 0
    return len(offsets) - 1


def choose_split(directory: str | Path, wanted: str = "test") -> tuple[str, str | None]:
    """The split to evaluate on: ``wanted``, or ``valid`` (then ``train``) when it holds no
    sequence, with a note saying so."""
    directory = Path(directory)
    read_manifest(directory)  # a clear error when this is not a dataset
    for split in (wanted, "valid", "train"):
        if _split_size(directory, split):
            if split == wanted:
                return split, None
            return split, f"the {wanted!r} split is empty; evaluated on {split!r} instead"
    raise DatasetError(f"{directory}: every split is empty")


def check_same_vocabulary(model_tokenizer: Tokenizer, dataset_dir: str | Path) -> None:
    """Raise :class:`TokenizerMismatchError` unless the dataset's tokens mean the same as
    the model's (same vocabulary, id for id)."""
    from midilm.tokenization.base import load_tokenizer

    data_tok = load_tokenizer(dataset_dir)
    size = model_tokenizer.vocab_size
    if data_tok.kind != model_tokenizer.kind or data_tok.vocab_size != size:
        raise TokenizerMismatchError(
            f"{dataset_dir}: the dataset's {data_tok.kind} tokenizer "
            f"({data_tok.vocab_size} tokens) is not the model's "
            f"({model_tokenizer.kind}, {size} tokens)"
        )
    for token_id in range(size):
        if data_tok.id_to_token(token_id) != model_tokenizer.id_to_token(token_id):
            raise TokenizerMismatchError(
                f"{dataset_dir}: token {token_id} is {data_tok.id_to_token(token_id)!r} in "
                f"the dataset but {model_tokenizer.id_to_token(token_id)!r} for the model"
            )


def split_likelihood(
    model: MusicModel,
    dataset_dir: str | Path,
    split: str = "test",
    *,
    batch_size: int = 8,
    max_sequences: int | None = None,
) -> SplitLikelihood:
    """Score every item of a split (at most ``max_sequences``, the first ones) with the
    model, at its context length."""
    import torch

    from midilm.data.dataset import TokenCollator, TokenDataset
    from midilm.training.metrics import metrics_from_stats, notes_per_token, sequence_nll_stats

    seq_len = model.context_tokens
    try:
        dataset = TokenDataset(dataset_dir, split, seq_len=seq_len)
    except DatasetError:
        # A packed split shorter than one context: score its sequences one by one.
        dataset = TokenDataset(dataset_dir, split, seq_len=seq_len, mode="sequences")
    count = len(dataset) if max_sequences is None else min(len(dataset), max_sequences)
    collate = TokenCollator(dataset.pad_id)
    notes = torch.from_numpy(notes_per_token(model.tokenizer)).to(model.device)
    rows = []
    with torch.inference_mode():
        for lo in range(0, count, batch_size):
            batch = collate([dataset[i] for i in range(lo, min(lo + batch_size, count))])
            batch = {k: v.to(model.device) for k, v in batch.items()}
            logits = model.model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).logits
            rows.append(sequence_nll_stats(logits, batch["labels"], notes).cpu().numpy())
    stats = np.concatenate(rows) if rows else np.zeros((0, 3))
    metrics = metrics_from_stats(stats)
    return SplitLikelihood(
        split=split,
        sequences=count,
        tokens=int(metrics["tokens"]),
        notes=int(metrics["notes"]),
        loss=metrics["nll"],
        perplexity=metrics["perplexity"],
        bits_per_token=metrics["bits_per_token"],
        bits_per_note=metrics["bits_per_note"],
    )
