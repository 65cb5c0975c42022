"""Training: the recipe, the run (Hugging Face Trainer, resumable, torchrun-ready), the
choice of precision and the metrics that compare tokenizations.

Importing this package is cheap; torch and transformers load when a run starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from midilm.training.recipe import TrainingRecipe

if TYPE_CHECKING:
    from midilm.training.run import TrainResult, train

__all__ = ["TrainResult", "TrainingRecipe", "train"]


def __getattr__(name: str) -> Any:
    if name in ("train", "TrainResult"):
        from midilm.training import run

        return getattr(run, name)
    raise AttributeError(f"module 'midilm.training' has no attribute {name!r}")
