"""A torch ``Dataset`` over prepared token shards, and the collator that batches it.

Three ways to read a split, because the two model families train differently:

- ``"sequences"``: one stored sequence per item (an MMM window), cut to ``seq_len``; the
  collator pads a batch to its longest item. What the "GPT-2 for Music" models train on.
- ``"packed"``: all sequences back to back, each wrapped in BOS … EOS when the tokenizer has
  them, cut into consecutive ``seq_len`` chunks (the last partial chunk is dropped). Every
  token is seen once per epoch; no padding. What REMI + BPE trains on.
- ``"random"``: ``len(dataset)`` crops of ``seq_len`` tokens at random places in the packed
  stream, the same for the same ``seed`` and index.

The shards stay memory-mapped (tokens and offsets): an item reads only its own tokens, and
opening a dataset costs the same for a thousand sequences or a hundred million.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from midilm.data.shards import DatasetError, read_manifest, read_split

__all__ = ["TokenCollator", "TokenDataset"]

Mode = Literal["sequences", "packed", "random"]


class TokenDataset(Dataset):
    """Items are ``{"input_ids": LongTensor}``; batch them with :class:`TokenCollator`."""

    def __init__(
        self,
        directory: str | Path,
        split: str = "train",
        seq_len: int = 1024,
        mode: Mode | None = None,
        *,
        seed: int = 0,
    ) -> None:
        if seq_len < 2:
            raise ValueError(f"seq_len must be ≥ 2, received {seq_len}")
        self.directory = Path(directory)
        self.manifest = read_manifest(self.directory)
        self.split = split
        self.seq_len = seq_len
        self.seed = seed
        kind = self.manifest.get("tokenizer", {}).get("kind")
        self.mode: Mode = mode or ("sequences" if kind == "mmm" else "packed")
        if self.mode not in ("sequences", "packed", "random"):
            raise ValueError(f"mode must be sequences, packed or random, received {self.mode!r}")
        special = self.manifest.get("special_ids", {})
        self.pad_id = int(special.get("pad", 0))
        self.bos_id = special.get("bos")
        self.eos_id = special.get("eos")
        self.tokens, self.offsets = read_split(self.directory, split)
        if len(self.offsets) < 2:
            raise DatasetError(f"{self.directory}: the {split!r} split holds no sequence")
        # Sequence i starts at offsets[i] + extra * i in the packed stream (at its BOS).
        self._extra = (self.bos_id is not None) + (self.eos_id is not None)
        self._stream_len = self._stream_start(len(self.offsets) - 1)
        if self.mode != "sequences" and self._stream_len < seq_len:
            raise DatasetError(
                f"the {split!r} split has {self._stream_len} tokens, fewer than seq_len={seq_len}"
            )

    def __len__(self) -> int:
        if self.mode == "sequences":
            return len(self.offsets) - 1
        return self._stream_len // self.seq_len

    @property
    def num_tokens(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        if self.mode == "sequences":
            lo, hi = int(self.offsets[index]), int(self.offsets[index + 1])
            ids = np.asarray(self.tokens[lo : min(hi, lo + self.seq_len)], dtype=np.int64)
        else:
            if self.mode == "packed":
                start = index * self.seq_len
            else:
                rng = np.random.default_rng((self.seed, index))
                start = int(rng.integers(0, self._stream_len - self.seq_len + 1))
            ids = self._stream_slice(start, start + self.seq_len)
        return {"input_ids": torch.from_numpy(ids)}

    def _stream_slice(self, start: int, stop: int) -> np.ndarray:
        """Tokens ``[start, stop)`` of the packed stream (sequences wrapped in BOS … EOS)."""
        out = np.empty(stop - start, dtype=np.int64)
        filled = 0
        seq = self._sequence_at(start)
        position = start
        while filled < len(out):
            wrapped = self._wrapped(seq)
            begin = position - self._stream_start(seq)
            take = min(len(wrapped) - begin, len(out) - filled)
            out[filled : filled + take] = wrapped[begin : begin + take]
            filled += take
            position += take
            seq += 1
        return out

    def _stream_start(self, seq: int) -> int:
        return int(self.offsets[seq]) + self._extra * seq

    def _sequence_at(self, position: int) -> int:
        """The sequence whose wrapped tokens hold stream ``position`` (binary search over
        the memory-mapped offsets, without building a second array)."""
        if not self._extra:
            return int(np.searchsorted(self.offsets, position, "right")) - 1
        n = len(self.offsets) - 1
        return bisect.bisect_right(range(n), position, key=self._stream_start) - 1

    def _wrapped(self, seq: int) -> np.ndarray:
        lo, hi = int(self.offsets[seq]), int(self.offsets[seq + 1])
        parts = [np.asarray(self.tokens[lo:hi], dtype=np.int64)]
        if self.bos_id is not None:
            parts.insert(0, np.array([self.bos_id], dtype=np.int64))
        if self.eos_id is not None:
            parts.append(np.array([self.eos_id], dtype=np.int64))
        return np.concatenate(parts)


@dataclass(frozen=True)
class TokenCollator:
    """Pads a batch to its longest item (or a multiple of ``pad_to_multiple_of``) and adds
    ``attention_mask`` and ``labels`` (the ids, with -100 on padding so it costs no loss)."""

    pad_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, items: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        longest = max(len(item["input_ids"]) for item in items)
        if self.pad_to_multiple_of:
            longest = -(-longest // self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids = torch.full((len(items), longest), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(items), longest), dtype=torch.long)
        for row, item in enumerate(items):
            ids = item["input_ids"]
            input_ids[row, : len(ids)] = ids
            attention[row, : len(ids)] = 1
        labels = input_ids.masked_fill(attention == 0, -100)
        return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}
