"""Evaluation of a trained model: held-out likelihood, syntax errors, control accuracy,
music statistics, four-part voice leading, infilling and speed, in one report.

``midilm.evaluation.evaluate(model, dataset, output=DIR)`` returns a :class:`Report` and
writes ``report.json``, ``report.md`` and plots; ``midilm evaluate`` and ``midilm compare``
are the same from the shell. Importing this package does not import torch or music21.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from midilm.evaluation.report import Report, ReportError, compare_table
from midilm.evaluation.statistics import FEATURES, compare_sets, overlap_area, piece_notes
from midilm.evaluation.syntax import SyntaxCounts, count_violations

if TYPE_CHECKING:
    from midilm.evaluation.run import evaluate
    from midilm.evaluation.voice_leading import count_parallels, voice_leading_stats

__all__ = [
    "FEATURES",
    "Report",
    "ReportError",
    "SyntaxCounts",
    "compare_sets",
    "compare_table",
    "count_parallels",
    "count_violations",
    "evaluate",
    "overlap_area",
    "piece_notes",
    "voice_leading_stats",
]

_LAZY = {
    "evaluate": "midilm.evaluation.run",
    "count_parallels": "midilm.evaluation.voice_leading",
    "voice_leading_stats": "midilm.evaluation.voice_leading",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'midilm.evaluation' has no attribute {name!r}")
