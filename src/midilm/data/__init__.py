"""Corpus → training data: sources, preparation, memory-mapped token shards, and the torch
``Dataset`` over them (imported lazily: preparing data needs no torch)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from midilm.data.shards import SPLITS, DatasetError, read_manifest, read_split, token_dtype

if TYPE_CHECKING:
    from midilm.data.dataset import TokenCollator, TokenDataset

__all__ = [
    "SPLITS",
    "DatasetError",
    "TokenCollator",
    "TokenDataset",
    "read_manifest",
    "read_split",
    "token_dtype",
]


def __getattr__(name: str) -> Any:
    if name in ("TokenDataset", "TokenCollator"):
        from midilm.data import dataset

        return getattr(dataset, name)
    raise AttributeError(f"module 'midilm.data' has no attribute {name!r}")
