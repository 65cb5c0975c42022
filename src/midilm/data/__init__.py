"""Corpus → training data: sources, preparation, memory-mapped token shards, and the torch
``Dataset`` over them. Everything is imported when first used (preparing data needs no
torch, and ``midilm prepare`` starts its worker processes before it loads numpy).

``midilm.data.prepare.prepare(sources, output)`` prepares a dataset and
``midilm.data.prepare.merge(parts, output)`` joins parts prepared on several machines (the
module is named like the function, so the function is not re-exported here).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from midilm.data.dataset import TokenCollator, TokenDataset
    from midilm.data.prepare_config import PrepareConfig, PrepareResult
    from midilm.data.shards import SPLITS, DatasetError, read_manifest, read_split, token_dtype
    from midilm.data.sources import SourceError, expand_sources

__all__ = [
    "SPLITS",
    "DatasetError",
    "PrepareConfig",
    "PrepareResult",
    "SourceError",
    "TokenCollator",
    "TokenDataset",
    "expand_sources",
    "read_manifest",
    "read_split",
    "token_dtype",
]

_LAZY = {
    "SPLITS": "midilm.data.shards",
    "DatasetError": "midilm.data.shards",
    "read_manifest": "midilm.data.shards",
    "read_split": "midilm.data.shards",
    "token_dtype": "midilm.data.shards",
    "TokenDataset": "midilm.data.dataset",
    "TokenCollator": "midilm.data.dataset",
    "PrepareConfig": "midilm.data.prepare_config",
    "PrepareResult": "midilm.data.prepare_config",
    "SourceError": "midilm.data.sources",
    "expand_sources": "midilm.data.sources",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'midilm.data' has no attribute {name!r}")
