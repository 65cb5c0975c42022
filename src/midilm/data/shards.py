"""Token shards on disk: one memory-mapped array of tokens per split, with sequence offsets.

A dataset directory holds, per split (``train``, ``valid``, ``test``)::

    {split}.tokens.npy   1-D, every sequence's ids back to back; dtype from the vocabulary
                         size (uint8 / uint16 / uint32: never a fixed uint16)
    {split}.offsets.npy  int64, n_sequences + 1 entries: sequence i is tokens[o[i]:o[i+1]]

beside ``manifest.json``, ``tokenizer.json`` (+ ``midilm.json``) and ``rejected.jsonl``.
``.npy`` files carry their dtype and shape, so ``numpy.load(path, mmap_mode="r")`` reads them
without loading the corpus into memory.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from midilm.errors import MidilmError

__all__ = [
    "MANIFEST",
    "SPLITS",
    "DatasetError",
    "ShardWriter",
    "read_manifest",
    "read_split",
    "token_dtype",
]

SPLITS = ("train", "valid", "test")
MANIFEST = "manifest.json"


class DatasetError(MidilmError, ValueError):
    """A dataset directory that is missing, incomplete, or not a midilm dataset."""


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned integer type that holds every id of the vocabulary."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if vocab_size <= np.iinfo(dtype).max + 1:
            return np.dtype(dtype)
    return np.dtype(np.uint64)


def tokens_path(directory: Path, split: str) -> Path:
    return directory / f"{split}.tokens.npy"


def offsets_path(directory: Path, split: str) -> Path:
    return directory / f"{split}.offsets.npy"


class ShardWriter:
    """Append sequences of one split, then ``close()`` to write the two ``.npy`` files
    atomically. Sequences stream through a raw temporary file, so memory stays flat."""

    def __init__(self, directory: str | Path, split: str, vocab_size: int) -> None:
        self.directory = Path(directory)
        self.split = split
        self.dtype = token_dtype(vocab_size)
        self.vocab_size = vocab_size
        self._raw_path = self.directory / f".{split}.tokens.raw"
        self._raw = self._raw_path.open("wb")
        self._offsets = [0]

    def append(self, ids: Sequence[int] | np.ndarray) -> None:
        array = np.asarray(ids)
        if array.size and (array.min() < 0 or array.max() >= self.vocab_size):
            raise ValueError(f"ids outside the vocabulary (0–{self.vocab_size - 1})")
        self._raw.write(array.astype(self.dtype).tobytes())
        self._offsets.append(self._offsets[-1] + int(array.size))

    def extend(self, sequences: Iterable[Sequence[int]]) -> None:
        for ids in sequences:
            self.append(ids)

    @property
    def num_sequences(self) -> int:
        return len(self._offsets) - 1

    @property
    def num_tokens(self) -> int:
        return self._offsets[-1]

    def close(self) -> None:
        from midilm.io_utils import atomic_path

        self._raw.close()
        tokens = (
            np.memmap(self._raw_path, dtype=self.dtype, mode="r")
            if self.num_tokens
            else (np.zeros(0, dtype=self.dtype))
        )
        with atomic_path(tokens_path(self.directory, self.split)) as tmp:
            out = np.lib.format.open_memmap(
                tmp, mode="w+", dtype=self.dtype, shape=(self.num_tokens,)
            )
            out[:] = tokens[:]
            out.flush()
            del out
        del tokens
        with atomic_path(offsets_path(self.directory, self.split)) as tmp:
            np.save(tmp, np.asarray(self._offsets, dtype=np.int64))
        self._raw_path.unlink(missing_ok=True)


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """The dataset's ``manifest.json``; a clear error when the directory is not a dataset."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise DatasetError(
            f"{path}: no manifest; is {directory} a dataset made by 'midilm prepare'?"
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise DatasetError(f"{path}: unreadable manifest ({err})") from err


def read_split(directory: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """``(tokens, offsets)`` of a split, memory-mapped (read-only)."""
    directory = Path(directory)
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    paths = tokens_path(directory, split), offsets_path(directory, split)
    for path in paths:
        if not path.is_file():
            raise DatasetError(f"{path}: missing; the dataset has no {split!r} split")
    tokens = np.load(paths[0], mmap_mode="r")
    offsets = np.load(paths[1])
    if offsets.ndim != 1 or len(offsets) < 1 or offsets[-1] != len(tokens):
        raise DatasetError(f"{paths[1]}: offsets do not match {paths[0].name}")
    return tokens, offsets
