"""MIDI ↔ ``symusic.Score``: loading with validation, atomic saving, the bar grid,
quantizing, General MIDI instruments, score summaries, and importing MusicXML / kern / abc
and the music21 corpus (music21 itself is imported only when a function needs it)."""

from __future__ import annotations

from midilm.score.gm import parse_instrument, program_name
from midilm.score.meter import Bar, Meter, bar_grid, score_end_ticks
from midilm.score.midi_io import MAX_MIDI_BYTES, load_midi, save_midi
from midilm.score.music21_import import import_music21, iter_music21, music21_specs
from midilm.score.quantize import quantize
from midilm.score.sources import load_score
from midilm.score.summary import ScoreInfo, describe, format_info

__all__ = [
    "MAX_MIDI_BYTES",
    "Bar",
    "Meter",
    "ScoreInfo",
    "bar_grid",
    "describe",
    "format_info",
    "import_music21",
    "iter_music21",
    "load_midi",
    "load_score",
    "music21_specs",
    "parse_instrument",
    "program_name",
    "quantize",
    "save_midi",
    "score_end_ticks",
]
