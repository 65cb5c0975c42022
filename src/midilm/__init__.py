"""midilm: GPT-2-style language models on symbolic music.

MIDI → Score → tokens → dataset → model → sampling → Score → MIDI / audio / picture.
Heavy parts (torch, transformers, music21) are imported only when used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "InvalidMidiError",
    "MMMConfig",
    "MMMTokenizer",
    "MidilmError",
    "MusicModel",
    "REMIConfig",
    "REMITokenizer",
    "TokenizerMismatchError",
    "UnknownTokenError",
    "UnsupportedScoreError",
    "__version__",
    "load_midi",
    "load_model",
    "load_score",
    "load_tokenizer",
    "render_audio",
    "render_pianoroll",
    "save_midi",
]

from midilm.errors import (
    InvalidMidiError,
    MidilmError,
    TokenizerMismatchError,
    UnknownTokenError,
    UnsupportedScoreError,
)

if TYPE_CHECKING:
    from midilm.model.loading import load_model
    from midilm.model.music_model import MusicModel
    from midilm.render import render_audio, render_pianoroll
    from midilm.score import load_midi, load_score, save_midi
    from midilm.tokenization.base import load_tokenizer
    from midilm.tokenization.mmm import MMMConfig, MMMTokenizer
    from midilm.tokenization.remi import REMIConfig, REMITokenizer

_LAZY = {
    "load_midi": "midilm.score",
    "load_score": "midilm.score",
    "save_midi": "midilm.score",
    "load_tokenizer": "midilm.tokenization.base",
    "MMMConfig": "midilm.tokenization.mmm",
    "MMMTokenizer": "midilm.tokenization.mmm",
    "REMIConfig": "midilm.tokenization.remi",
    "REMITokenizer": "midilm.tokenization.remi",
    "load_model": "midilm.model.loading",
    "MusicModel": "midilm.model.music_model",
    "render_audio": "midilm.render",
    "render_pianoroll": "midilm.render",
}


def __getattr__(name: str) -> Any:
    """Submodules load on first use: MidiTok and music21 are slow to import."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'midilm' has no attribute {name!r}")
