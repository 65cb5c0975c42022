"""Hear and see a score: audio through a General MIDI soundfont, piano-roll pictures.

- :func:`render_audio` / :func:`audio_bytes` / :func:`synthesize`: a SoundFont synthesizer
  plays the score with the soundfont :func:`find_soundfont` picks: FluidSynth (in process)
  when its library is installed, else rustysynth, which installs with midilm; WAV, FLAC,
  Ogg, MP3.
- :func:`render_pianoroll` / :func:`pianoroll_bytes`: PNG or SVG, one colour per track,
  bar lines from the score's meters, drums in their own lane, highlighted bars.

The ``*_bytes`` functions are for callers that answer with the file (the HTTP server).
matplotlib, soundfile, rustysynth and the FluidSynth library are loaded on first use.
"""

from __future__ import annotations

from midilm.render.audio import (
    AUDIO_FORMATS,
    DEFAULT_SAMPLE_RATE,
    audio_bytes,
    audio_format,
    encode_audio,
    render_audio,
    resolve_synthesizer,
    synthesize,
    write_audio,
)
from midilm.render.errors import RenderError, SoundfontNotFoundError, UnsupportedFormatError
from midilm.render.fluid import fluidsynth_available, fluidsynth_version
from midilm.render.pianoroll import (
    IMAGE_FORMATS,
    image_format,
    pianoroll_bytes,
    render_pianoroll,
    track_color,
)
from midilm.render.rusty import rustysynth_version
from midilm.render.soundfont import SOUNDFONT_ENV, find_soundfont

__all__ = [
    "AUDIO_FORMATS",
    "DEFAULT_SAMPLE_RATE",
    "IMAGE_FORMATS",
    "SOUNDFONT_ENV",
    "RenderError",
    "SoundfontNotFoundError",
    "UnsupportedFormatError",
    "audio_bytes",
    "audio_format",
    "encode_audio",
    "find_soundfont",
    "fluidsynth_available",
    "fluidsynth_version",
    "image_format",
    "pianoroll_bytes",
    "render_audio",
    "render_pianoroll",
    "resolve_synthesizer",
    "rustysynth_version",
    "synthesize",
    "track_color",
    "write_audio",
]
