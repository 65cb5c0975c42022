"""Models: the preset shapes of the seed architectures, model directories in the Hugging Face
layout (save and load), and the loaded model object. Importing this package does not import
torch; the functions that need it do."""

from __future__ import annotations

from midilm.model.card import render_card
from midilm.model.directory import save_model, special_ids
from midilm.model.generation import GenerationDefaults
from midilm.model.loading import bundled_model_dir, bundled_models, load_model
from midilm.model.music_model import MusicModel
from midilm.model.presets import PRESETS, ModelPreset, get_preset

__all__ = [
    "PRESETS",
    "GenerationDefaults",
    "ModelPreset",
    "MusicModel",
    "bundled_model_dir",
    "bundled_models",
    "get_preset",
    "load_model",
    "render_card",
    "save_model",
    "special_ids",
]
