"""Load MIDI files with validation; save scores atomically.

Every bad input to :func:`load_midi` raises :class:`~midilm.errors.InvalidMidiError` with a
short ``reason`` tag that dataset preparation counts:

===============  ================================================================
``missing``      no such file (or a folder where a file was expected)
``unreadable``   the file exists but cannot be read (permissions, I/O error)
``empty``        zero bytes
``too_large``    over ``max_bytes``; or more than 1,000 tracks, 5,000,000 notes or
                 6 hours of music
``not_midi``     no ``MThd`` header (a text file named ``.mid``, a WAV, …)
``corrupt``      a truncated header or chunk, a chunk length that does not match the
                 data, an unknown format, or bytes the MIDI parser rejects
``unsupported``  SMPTE time division, or 0 ticks per quarter
``no_notes``     a valid file without a single note
===============  ================================================================

The chunk structure is checked here, in Python, before symusic's C++ parser sees the bytes:
the parser then reads only whole ``MTrk`` chunks that lie inside the data, and never a
declared length that runs past the end. What is inside a track (the events) is left to
symusic, which rejects malformed events with an exception; the fuzz tests in
``tests/test_midi_io.py`` hold both sides to that.

RIFF-wrapped MIDI (``.rmi``) is unwrapped; karaoke ``.kar`` files are ordinary MIDI.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any

import symusic
from symusic.core import ScoreTick

from midilm.errors import InvalidMidiError
from midilm.io_utils import atomic_path

__all__ = [
    "MAX_MIDI_BYTES",
    "MAX_MIDI_DURATION_S",
    "MAX_MIDI_NOTES",
    "MAX_MIDI_TRACKS",
    "MIDI_SUFFIXES",
    "load_midi",
    "save_midi",
]

MAX_MIDI_BYTES = 32 * 1024 * 1024
MAX_MIDI_TRACKS = 1_000
MAX_MIDI_NOTES = 5_000_000
MAX_MIDI_DURATION_S = 6 * 3600.0
MIDI_SUFFIXES = (".mid", ".midi", ".kar", ".rmi", ".smf")

_HEADER = struct.Struct(">4sIHHH")  # "MThd", header length, format, track count, division


def load_midi(
    source: str | os.PathLike[str] | bytes | bytearray,
    *,
    name: str | None = None,
    max_bytes: int = MAX_MIDI_BYTES,
) -> ScoreTick:
    """Read a MIDI file (a path, or its bytes) into a ``symusic.ScoreTick``.

    ``name`` is how errors refer to the input (default: the path, or ``"<bytes>"``).
    Raises :class:`InvalidMidiError` for any input that is not a usable MIDI file (see the
    module doc for the reasons); never returns a score without notes.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        label = name or "<bytes>"
        data = bytes(source)
        if len(data) > max_bytes:
            raise InvalidMidiError(label, "too_large", _too_large_detail(len(data), max_bytes))
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        label = name or str(path)
        data = _read_file(path, label, max_bytes)
    else:
        raise TypeError(f"load_midi takes a path or bytes, received {type(source).__name__}")
    smf = _validated_smf(data, label)
    try:
        score = symusic.Score.from_midi(smf)
    except (RuntimeError, ValueError, IndexError, OverflowError) as err:
        raise InvalidMidiError(label, "corrupt", f"the MIDI parser rejected it ({err})") from err
    _check_content(score, label)
    return score


def save_midi(score: Any, path: str | os.PathLike[str]) -> None:
    """Write a score as a standard MIDI file, atomically.

    The file appears complete or not at all: the bytes go to a temporary file beside
    ``path`` that is renamed over it; on any error the temporary file is removed and an
    existing ``path`` is left as it was. Parent folders are created.
    """
    if not callable(getattr(score, "dumps_midi", None)):
        raise TypeError(f"save_midi takes a symusic score, received {type(score).__name__}")
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"cannot save a MIDI file to {path}: it is a folder")
    with atomic_path(path) as tmp:
        data = bytes(score.dumps_midi())
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


# --------------------------------------------------------------------------- validation


def _read_file(path: Path, label: str, max_bytes: int) -> bytes:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise InvalidMidiError(label, "missing", "no such file") from None
    except OSError as err:
        raise InvalidMidiError(label, "unreadable", f"cannot read it ({err.strerror})") from err
    if path.is_dir():
        raise InvalidMidiError(label, "missing", "a folder, not a MIDI file")
    if size > max_bytes:
        raise InvalidMidiError(label, "too_large", _too_large_detail(size, max_bytes))
    try:
        with path.open("rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as err:
        raise InvalidMidiError(label, "unreadable", f"cannot read it ({err.strerror})") from err
    if len(data) > max_bytes:  # grew since stat, or a special file
        raise InvalidMidiError(label, "too_large", _too_large_detail(len(data), max_bytes))
    return data


def _too_large_detail(size: int, max_bytes: int) -> str:
    return f"the file is {_mib(size)}, over the {_mib(max_bytes)} limit for a MIDI file"


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size:,} bytes"


def _unwrap_rmid(data: bytes, label: str) -> bytes:
    """The standard MIDI file inside a RIFF ``RMID`` container (the ``data`` chunk)."""
    if len(data) < 12 or data[8:12] != b"RMID":
        raise InvalidMidiError(label, "not_midi", "a RIFF file, but not RIFF MIDI (RMID)")
    pos = 12
    while pos + 8 <= len(data):
        chunk_id = data[pos : pos + 4]
        length = int.from_bytes(data[pos + 4 : pos + 8], "little")
        if chunk_id == b"data":
            if pos + 8 + length > len(data):
                raise InvalidMidiError(label, "corrupt", "the RIFF data chunk is truncated")
            return data[pos + 8 : pos + 8 + length]
        pos += 8 + length + (length & 1)  # RIFF chunks are padded to an even length
    raise InvalidMidiError(label, "corrupt", "the RIFF MIDI file has no data chunk")


def _validated_smf(data: bytes, label: str) -> bytes:
    """Check the chunk structure and return the bytes symusic may parse: the header and
    the ``MTrk`` chunks only (foreign chunks and trailing bytes are dropped)."""
    if not data:
        raise InvalidMidiError(label, "empty", "the file is empty (0 bytes)")
    if data[:4] == b"RIFF":
        data = _unwrap_rmid(data, label)
        if not data:
            raise InvalidMidiError(label, "empty", "the RIFF MIDI data chunk is empty")
    if data[:4] != b"MThd":
        if len(data) < 4 and b"MThd".startswith(data):
            raise InvalidMidiError(
                label, "corrupt", f"the MIDI header is truncated ({len(data)} bytes)"
            )
        raise InvalidMidiError(
            label,
            "not_midi",
            f"not a MIDI file (it starts with {data[:8]!r}, not b'MThd')",
        )
    if len(data) < _HEADER.size:
        raise InvalidMidiError(
            label, "corrupt", f"the MIDI header is truncated ({len(data)} of 14 bytes)"
        )
    _, header_length, fmt, n_tracks, division = _HEADER.unpack_from(data)
    if header_length < 6 or 8 + header_length > len(data):
        raise InvalidMidiError(
            label,
            "corrupt",
            f"the MIDI header declares a length of {header_length} bytes (expected 6)",
        )
    if fmt > 2:
        raise InvalidMidiError(label, "corrupt", f"unknown MIDI format {fmt} (expected 0, 1 or 2)")
    if division & 0x8000:
        raise InvalidMidiError(
            label,
            "unsupported",
            "the file uses SMPTE time division; midilm needs ticks per quarter note",
        )
    if division == 0:
        raise InvalidMidiError(label, "unsupported", "the file declares 0 ticks per quarter note")
    if n_tracks > MAX_MIDI_TRACKS:
        raise InvalidMidiError(
            label,
            "too_large",
            f"the file declares {n_tracks:,} tracks (the limit is {MAX_MIDI_TRACKS:,})",
        )
    if n_tracks == 0:
        raise InvalidMidiError(label, "no_notes", "the file declares no tracks")

    tracks: list[bytes] = []
    pos = 8 + header_length
    while len(tracks) < n_tracks:
        if pos + 8 > len(data):
            raise InvalidMidiError(
                label,
                "corrupt",
                f"the file ends after {len(tracks)} of its {n_tracks} tracks "
                "(the file is truncated)",
            )
        chunk_id = data[pos : pos + 4]
        (length,) = struct.unpack_from(">I", data, pos + 4)
        if not all(32 <= byte < 127 for byte in chunk_id):
            raise InvalidMidiError(
                label,
                "corrupt",
                f"no chunk header at byte {pos} (found {chunk_id!r}); "
                f"a chunk length is wrong or the file is damaged",
            )
        end = pos + 8 + length
        if end > len(data):
            raise InvalidMidiError(
                label,
                "corrupt",
                f"the chunk at byte {pos} declares {length:,} bytes but only "
                f"{len(data) - pos - 8:,} remain (the file is truncated or the length is wrong)",
            )
        if chunk_id == b"MTrk":
            tracks.append(data[pos:end])
        pos = end
    header = _HEADER.pack(b"MThd", 6, fmt, len(tracks), division)
    return header + b"".join(tracks)


def _check_content(score: ScoreTick, label: str) -> None:
    if len(score.tracks) > MAX_MIDI_TRACKS:
        raise InvalidMidiError(
            label,
            "too_large",
            f"the file has {len(score.tracks):,} tracks (the limit is {MAX_MIDI_TRACKS:,})",
        )
    notes = sum(len(track.notes) for track in score.tracks)
    if notes == 0:
        raise InvalidMidiError(label, "no_notes", "the file holds no notes")
    if notes > MAX_MIDI_NOTES:
        raise InvalidMidiError(
            label, "too_large", f"the file holds {notes:,} notes (the limit is {MAX_MIDI_NOTES:,})"
        )
    duration_s = float(score.to("second").end())
    if duration_s > MAX_MIDI_DURATION_S:
        raise InvalidMidiError(
            label,
            "too_large",
            f"the file lasts {duration_s / 3600:.1f} hours "
            f"(the limit is {MAX_MIDI_DURATION_S / 3600:.0f})",
        )
