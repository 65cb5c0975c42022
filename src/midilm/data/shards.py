"""Token shards on disk: one memory-mapped array of tokens per split, with sequence offsets.

A dataset directory holds, per split (``train``, ``valid``, ``test``)::

    {split}.tokens.npy   1-D, every sequence's ids back to back; dtype from the vocabulary
                         size (uint8 / uint16 / uint32: never a fixed uint16)
    {split}.offsets.npy  int64, n_sequences + 1 entries: sequence i is tokens[o[i]:o[i+1]]

beside ``manifest.json``, ``tokenizer.json`` (+ ``midilm.json``), ``pieces.jsonl`` and
``rejected.jsonl`` (see :mod:`midilm.data.prepare`).
``.npy`` files carry their dtype and shape, so ``numpy.load(path, mmap_mode="r")`` reads them
without loading the corpus into memory.

:class:`ShardWriter` streams both files to disk as sequences arrive (memory stays flat
whatever the corpus size) and writes exactly the bytes ``numpy.save`` would. It also keeps
a SHA-256 of each file's data, from which the manifest's ``digest`` is made
(:func:`shards_digest`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from midilm import io_utils
from midilm.errors import MidilmError

__all__ = [
    "MANIFEST",
    "SPLITS",
    "DatasetError",
    "ShardWriter",
    "offsets_path",
    "read_manifest",
    "read_split",
    "shards_digest",
    "token_dtype",
    "tokens_path",
]

SPLITS = ("train", "valid", "test")
MANIFEST = "manifest.json"

_OFFSET_DTYPE = np.dtype("<i8")
_BLOCK_BYTES = 1 << 20  # how much a writer buffers before it writes


class DatasetError(MidilmError, ValueError):
    """A dataset directory that is missing, incomplete, or not a midilm dataset."""


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned integer type that holds every id of the vocabulary
    (little-endian, so that files read the same on every machine)."""
    for dtype in ("<u1", "<u2", "<u4"):
        if vocab_size <= np.iinfo(np.dtype(dtype)).max + 1:
            return np.dtype(dtype)
    return np.dtype("<u8")


def tokens_path(directory: Path, split: str) -> Path:
    return Path(directory) / f"{split}.tokens.npy"


def offsets_path(directory: Path, split: str) -> Path:
    return Path(directory) / f"{split}.offsets.npy"


class _NpyStream:
    """A 1-D ``.npy`` file written front to back: a header for an empty array first, the
    data as it comes, and the real header (same length: numpy pads it to 128 bytes for any
    1-D shape) written over the first one at the end. Atomic: the file appears under its
    name only when closed without error."""

    def __init__(self, path: Path, dtype: np.dtype) -> None:
        from midilm.io_utils import atomic_path

        self.dtype = np.dtype(dtype)
        self.count = 0
        self.sha256 = hashlib.sha256()
        self._context = atomic_path(path)
        self._tmp = self._context.__enter__()
        self._fh: IO[bytes] = self._tmp.open("wb")
        self._header_size = self._write_header(0)
        self._pending: list[bytes] = []
        self._pending_bytes = 0

    def _write_header(self, count: int) -> int:
        start = self._fh.tell()
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False}
        np.lib.format.write_array_header_1_0(self._fh, {**header, "shape": (count,)})
        return self._fh.tell() - start

    def write(self, array: np.ndarray) -> None:
        data = np.ascontiguousarray(array, dtype=self.dtype).tobytes()
        self.sha256.update(data)
        self.count += len(array)
        self._pending.append(data)
        self._pending_bytes += len(data)
        if self._pending_bytes >= _BLOCK_BYTES:
            self._flush()

    def _flush(self) -> None:
        self._fh.write(b"".join(self._pending))
        self._pending.clear()
        self._pending_bytes = 0

    def close(self) -> None:
        import os

        self._flush()
        self._fh.seek(0)
        if self._write_header(self.count) != self._header_size:  # pragma: no cover - numpy pads
            raise RuntimeError("the .npy header changed length")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        self._context.__exit__(None, None, None)

    def abort(self) -> None:
        self._fh.close()
        error = RuntimeError("aborted")
        with contextlib.suppress(RuntimeError):
            self._context.__exit__(type(error), error, None)


class ShardWriter:
    """Append sequences of one split, then ``close()`` to put the two ``.npy`` files in
    place (atomically). Both files are streamed to disk as sequences arrive."""

    def __init__(self, directory: str | Path, split: str, vocab_size: int) -> None:
        self.directory = Path(directory)
        self.split = split
        self.dtype = token_dtype(vocab_size)
        self.vocab_size = vocab_size
        self._tokens = _NpyStream(tokens_path(self.directory, split), self.dtype)
        try:
            self._offsets = _NpyStream(offsets_path(self.directory, split), _OFFSET_DTYPE)
        except BaseException:
            self._tokens.abort()
            raise
        self._offsets.write(np.zeros(1, dtype=_OFFSET_DTYPE))
        self._end = 0
        self._closed = False

    def append(self, ids: Sequence[int] | np.ndarray) -> None:
        """One sequence."""
        array = np.asarray(ids)
        self.append_many(array, np.array([array.size], dtype=np.int64))

    def append_many(self, tokens: np.ndarray, lengths: Sequence[int] | np.ndarray) -> None:
        """Several sequences at once: ``tokens`` holds them back to back, ``lengths`` says
        how long each is."""
        tokens = np.asarray(tokens).ravel()
        lengths = np.asarray(lengths, dtype=np.int64)
        if int(lengths.sum()) != tokens.size or (lengths < 0).any():
            raise ValueError(
                f"lengths add up to {int(lengths.sum())}, but {tokens.size} tokens were given"
            )
        if tokens.size and (tokens.min() < 0 or tokens.max() >= self.vocab_size):
            raise ValueError(f"ids outside the vocabulary (0–{self.vocab_size - 1})")
        self._tokens.write(tokens)
        self._offsets.write(self._end + np.cumsum(lengths))
        self._end += int(tokens.size)

    def extend(self, sequences: Iterable[Sequence[int]]) -> None:
        for ids in sequences:
            self.append(ids)

    @property
    def num_sequences(self) -> int:
        return self._offsets.count - 1

    @property
    def num_tokens(self) -> int:
        return self._end

    @property
    def sha256(self) -> dict[str, str]:
        """SHA-256 of the data (not the header) of the tokens and offsets files so far."""
        return {
            "tokens": self._tokens.sha256.hexdigest(),
            "offsets": self._offsets.sha256.hexdigest(),
        }

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._tokens.close()
        self._offsets.close()

    def abort(self) -> None:
        """Leave no file behind (the destination files are not touched)."""
        if self._closed:
            return
        self._closed = True
        self._tokens.abort()
        self._offsets.abort()


def shards_digest(splits: Mapping[str, Mapping[str, Any]]) -> str:
    """One SHA-256 naming the whole token content of a dataset: over each split's dtype and
    the SHA-256 of its tokens and offsets data, in split order. Model directories record it
    (``midilm.json``) to say what they were trained on."""
    canonical = {
        split: {key: splits[split][key] for key in ("dtype", "tokens_sha256", "offsets_sha256")}
        for split in SPLITS
        if split in splits
    }
    return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """The dataset's ``manifest.json``; a clear error when the directory is not a dataset."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise DatasetError(
            f"{path}: no manifest; is {directory} a dataset made by 'midilm prepare'?"
        )
    return read_json_object(path)


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON object from a dataset's files; DatasetError naming the file otherwise."""
    return io_utils.read_json_object(path, DatasetError)


def read_split(directory: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """``(tokens, offsets)`` of a split, both memory-mapped read-only."""
    directory = Path(directory)
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    paths = tokens_path(directory, split), offsets_path(directory, split)
    for path in paths:
        if not path.is_file():
            raise DatasetError(f"{path}: missing; the dataset has no {split!r} split")
    try:
        tokens = np.load(paths[0], mmap_mode="r")
        offsets = np.load(paths[1], mmap_mode="r")
    except (OSError, ValueError) as err:
        raise DatasetError(f"{directory}: unreadable {split!r} shard ({err})") from err
    if tokens.ndim != 1 or offsets.ndim != 1 or len(offsets) < 1 or offsets[-1] != len(tokens):
        raise DatasetError(f"{paths[1]}: offsets do not match {paths[0].name}")
    return tokens, offsets
