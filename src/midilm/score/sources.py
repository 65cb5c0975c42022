"""One entry point for every kind of score input midilm reads.

``load_score`` picks the reader from the input, not from a flag:

- bytes, and ``.mid`` / ``.midi`` / ``.kar`` / ``.rmi`` / ``.smf`` paths: :func:`load_midi`;
- ``.xml`` / ``.mxl`` / ``.musicxml`` (MusicXML), ``.krn`` (Humdrum kern) and ``.abc``
  paths: music21, converted exactly as the corpus importer converts its works;
- ``music21:…`` specs: :func:`import_music21` (the music21 corpus, cached).

Anything else raises ``InvalidMidiError`` with reason ``"unsupported"``.
"""

from __future__ import annotations

import os
from pathlib import Path

from symusic.core import ScoreTick

from midilm.errors import InvalidMidiError
from midilm.score.midi_io import MAX_MIDI_BYTES, MIDI_SUFFIXES, load_midi
from midilm.score.music21_import import MUSIC21_PREFIX, import_music21, parse_score_file

__all__ = ["NOTATION_SUFFIXES", "SCORE_SUFFIXES", "load_score"]

NOTATION_SUFFIXES = (".xml", ".mxl", ".musicxml", ".krn", ".abc")
SCORE_SUFFIXES = (*MIDI_SUFFIXES, *NOTATION_SUFFIXES)


def load_score(
    source: str | os.PathLike[str] | bytes | bytearray,
    *,
    name: str | None = None,
    max_bytes: int = MAX_MIDI_BYTES,
) -> ScoreTick:
    """Read a MIDI file, a notation file or a music21 corpus work into a ``ScoreTick``.

    ``name`` is how errors refer to the input; ``max_bytes`` caps MIDI and notation files
    alike. Raises :class:`InvalidMidiError` for anything that cannot be read.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        return load_midi(source, name=name, max_bytes=max_bytes)
    if isinstance(source, str) and source.startswith(MUSIC21_PREFIX):
        return import_music21(source)
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(
            f"load_score takes a path, bytes or a music21 spec, received {type(source).__name__}"
        )
    path = Path(source)
    label = name or str(path)
    suffix = path.suffix.lower()
    if suffix in MIDI_SUFFIXES:
        return load_midi(path, name=label, max_bytes=max_bytes)
    if suffix in NOTATION_SUFFIXES:
        try:
            size = path.stat().st_size
        except OSError:
            size = 0  # the reader reports the missing file
        if size > max_bytes:
            raise InvalidMidiError(
                label, "too_large", f"the file is {size:,} bytes, over the {max_bytes:,} byte limit"
            )
        return parse_score_file(path, name=label)
    if not path.exists():
        raise InvalidMidiError(label, "missing", "no such file")
    kinds = " ".join(SCORE_SUFFIXES)
    raise InvalidMidiError(
        label,
        "unsupported",
        f"midilm does not read {suffix or 'files without an extension'} "
        f"(it reads {kinds}, and music21:… corpus specs)",
    )
