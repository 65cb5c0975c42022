"""The errors of rendering: no soundfont, no synthesizer or encoder, an output format midilm
does not write. Each is a :class:`~midilm.errors.MidilmError`, so the CLI prints it as one
``error:`` line and the server answers it with a 4xx/5xx, and each subclasses the builtin a
Python caller would catch (``FileNotFoundError``, ``ValueError``, ``RuntimeError``)."""

from __future__ import annotations

from midilm.errors import MidilmError

__all__ = ["RenderError", "SoundfontNotFoundError", "UnsupportedFormatError"]


class SoundfontNotFoundError(MidilmError, FileNotFoundError):
    """No General MIDI soundfont: the one named does not exist, or none is installed."""

    def __str__(self) -> str:  # FileNotFoundError would print its args as a tuple
        return str(self.args[0]) if self.args else "no soundfont found"


class UnsupportedFormatError(MidilmError, ValueError):
    """An output file kind midilm does not write (``.aiff``, ``.jpg``…), or one whose
    encoder this installation lacks."""


class RenderError(MidilmError, RuntimeError):
    """The synthesizer cannot run here (no FluidSynth library) or rejected its input (a file
    that is not a soundfont)."""
