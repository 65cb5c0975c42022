"""Models: the preset shapes of the seed architectures, and model directories in the
Hugging Face layout."""

from __future__ import annotations

from midilm.model.presets import PRESETS, ModelPreset, get_preset

__all__ = ["PRESETS", "ModelPreset", "get_preset"]
