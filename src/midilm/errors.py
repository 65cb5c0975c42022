"""The few exceptions a midilm user sees.

Library code raises these; the CLI and the HTTP server translate them into one readable line
(exit code 2) or a 4xx answer. Each subclasses the builtin a Python user would expect to catch
(``ValueError`` for a bad value, ``FileNotFoundError`` for a missing file).
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "GenerationRequestError",
    "InvalidMidiError",
    "MidilmError",
    "TokenizerMismatchError",
    "UnknownTokenError",
    "UnsupportedScoreError",
]


class MidilmError(Exception):
    """Base of every error midilm raises on purpose (as opposed to a bug)."""


class InvalidMidiError(MidilmError, ValueError):
    """A MIDI file (or bytes) that cannot be used: corrupt, empty, too large, no notes…

    ``source`` names the file (or ``"<bytes>"``) and ``reason`` is a short machine-readable
    tag (``"corrupt"``, ``"empty"``, ``"no_notes"``, …) that dataset preparation counts.
    """

    def __init__(self, source: str, reason: str, detail: str) -> None:
        self.source = source
        self.reason = reason
        self.detail = detail
        super().__init__(f"{source}: {detail}")

    def __reduce__(self) -> tuple[type, tuple[str, str, str]]:
        # Pickled by its arguments, so it crosses process pools (parallel preparation).
        return type(self), (self.source, self.reason, self.detail)


class UnsupportedScoreError(MidilmError, ValueError):
    """A valid score the chosen tokenizer settings cannot express (e.g. a 3/4 piece for a
    4/4-only vocabulary). ``reason`` is a short tag, as for :class:`InvalidMidiError`."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(detail)

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        return type(self), (self.reason, self.detail)


class UnknownTokenError(MidilmError, ValueError):
    """A token (text or id) that the vocabulary does not have."""


class TokenizerMismatchError(MidilmError, ValueError):
    """Files that do not belong together: a vocabulary whose size differs from the model's
    embedding, a tokenizer file of an unknown kind, settings that contradict the vocabulary."""


class ConfigError(MidilmError, ValueError):
    """A configuration value that is out of range, of the wrong type, or an unknown key."""


class GenerationRequestError(MidilmError, ValueError):
    """A sampling request that cannot be served as asked: an unknown instrument, bars ≤ 0,
    a track or bar out of range, a density outside the model's bins, infilling with a model
    never trained on infill examples. ``field`` names the argument at fault (``"bars"``,
    ``"instruments"``…) so that the CLI and the HTTP server can point at it."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field

    def __reduce__(self) -> tuple[object, tuple[str, str | None]]:  # picklable, with its field
        return (_rebuild_request_error, (str(self), self.field))


def _rebuild_request_error(message: str, field: str | None) -> GenerationRequestError:
    return GenerationRequestError(message, field=field)
