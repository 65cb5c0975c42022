"""MIDI ↔ ``symusic.Score``: loading with validation, atomic saving, the bar grid,
quantizing, and importing the music21 corpus."""

from __future__ import annotations

from midilm.score.meter import Bar, Meter, bar_grid, score_end_ticks
from midilm.score.quantize import quantize

__all__ = ["Bar", "Meter", "bar_grid", "quantize", "score_end_ticks"]
