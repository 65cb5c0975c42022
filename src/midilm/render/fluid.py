"""FluidSynth, in process, through ``ctypes``: a score becomes a stereo float buffer.

FluidSynth is the reference SoundFont 2 synthesizer (full generator and modulator model,
low-pass filter, reverb and chorus). Its C library comes from the system (Debian/Ubuntu
``libfluidsynth3``, pulled in by ``apt-get install fluidsynth``; macOS ``brew install
fluid-synth``); no wheel on PyPI ships it. The dozen functions used here are bound directly
rather than through pyfluidsynth, whose ``Synth`` writes 16-bit samples only (we keep float
until the encoder) and which prints the library path on import when ``$CI`` is set.

The scheduling is done here, not by FluidSynth's MIDI-file player: the score's events, in
seconds (symusic applies every tempo change), become sample indices, and between two event
times the synth writes straight into the output array (FluidSynth starts an event at its
next 64-sample block, 1.5 ms at 44.1 kHz). So each track gets
a channel of its own (256 channels, not MIDI's 16), drum tracks included, and no temporary
MIDI file is written. What this does not do: render MIDI meta events (lyrics, markers), or
SysEx.

The library is searched for under its usual names; ``$MIDILM_FLUIDSYNTH_LIBRARY`` names
another one (a path, or a name such as ``fluidsynth-3``), or ``none`` to leave FluidSynth
unused, as on a machine without it (``synthesizer="auto"`` then plays with rustysynth).

A loaded soundfont is kept (FluidR3 is 141 MiB): :func:`get_synth` caches it by file, and
:meth:`FluidSynth.render` holds a lock, so server threads can share one.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from symusic.core import ScoreTick

from midilm.render.errors import RenderError

__all__ = [
    "LIBRARY_ENV",
    "MAX_CHANNELS",
    "FluidSynth",
    "fluidsynth_available",
    "fluidsynth_version",
    "get_synth",
]

LIBRARY_ENV = "MIDILM_FLUIDSYNTH_LIBRARY"  # a library path or name, or "none"

DEFAULT_SAMPLE_RATE = 44_100
MAX_CHANNELS = 256  # FluidSynth's largest synth.midi-channels; tracks beyond share channels
_DRUM_CHANNEL = 9  # GM's channel 10
_CHANNEL_TYPE_MELODIC, _CHANNEL_TYPE_DRUM = 0, 1
_FLUID_FAILED = -1
_LOG_LEVELS = range(5)  # PANIC, ERR, WARN, INFO, DBG
_SILENCE = 1e-4  # -80 dBFS: the release has rung out

# Event kinds, in the order they apply at one instant: a note that ends where the same pitch
# starts again is released first; controllers and bends are set before the notes they shape.
_NOTE_OFF, _CONTROL, _BEND, _NOTE_ON = 0, 1, 2, 3

_INSTALL_HINT = (
    "install FluidSynth (Debian/Ubuntu: apt-get install fluidsynth; Fedora: dnf install "
    "fluidsynth-libs; macOS: brew install fluid-synth)"
)


class _Lib:
    """The bound functions of libfluidsynth (2.x), loaded once."""

    def __init__(self, path: str) -> None:
        lib = ctypes.CDLL(path)
        p, i, d, s = ctypes.c_void_p, ctypes.c_int, ctypes.c_double, ctypes.c_char_p

        def bind(name: str, restype: Any, *argtypes: Any) -> Callable[..., Any]:
            fn = getattr(lib, name)
            fn.restype = restype
            fn.argtypes = list(argtypes)
            return fn

        self.version_str = bind("fluid_version_str", s)
        self.set_log_function = bind("fluid_set_log_function", p, i, p, p)
        self.new_settings = bind("new_fluid_settings", p)
        self.delete_settings = bind("delete_fluid_settings", None, p)
        self.settings_setint = bind("fluid_settings_setint", i, p, s, i)
        self.settings_setnum = bind("fluid_settings_setnum", i, p, s, d)
        self.new_synth = bind("new_fluid_synth", p, p)
        self.delete_synth = bind("delete_fluid_synth", None, p)
        self.sfload = bind("fluid_synth_sfload", i, p, s, i)
        self.get_sfont_by_id = bind("fluid_synth_get_sfont_by_id", p, p, i)
        self.add_sfont = bind("fluid_synth_add_sfont", i, p, p)
        self.remove_sfont = bind("fluid_synth_remove_sfont", i, p, p)
        self.set_channel_type = bind("fluid_synth_set_channel_type", i, p, i, i)
        self.program_change = bind("fluid_synth_program_change", i, p, i, i)
        self.noteon = bind("fluid_synth_noteon", i, p, i, i, i)
        self.noteoff = bind("fluid_synth_noteoff", i, p, i, i)
        self.cc = bind("fluid_synth_cc", i, p, i, i, i)
        self.pitch_bend = bind("fluid_synth_pitch_bend", i, p, i, i)
        self.write_float = bind("fluid_synth_write_float", i, p, i, p, i, i, p, i, i)
        # FluidSynth logs to stderr (e.g. "No preset found on channel 9"); the outcome that
        # matters (a soundfont that fails to load) is checked through return values.
        for level in _LOG_LEVELS:
            self.set_log_function(level, None, None)


def _lib() -> _Lib | None:
    """The library ``$MIDILM_FLUIDSYNTH_LIBRARY`` names, else the system's; None when none
    loads (or the variable says ``none``)."""
    return _load(os.environ.get(LIBRARY_ENV, "").strip())


@functools.cache
def _load(named: str) -> _Lib | None:
    if named.lower() == "none":
        return None
    if named:
        try:
            path = named if Path(named).is_file() else ctypes.util.find_library(named)
            return _Lib(path or named)
        except (OSError, AttributeError):
            return None
    for name in ("fluidsynth", "fluidsynth-3", "libfluidsynth-3", "libfluidsynth"):
        found = ctypes.util.find_library(name)
        if found:
            try:
                return _Lib(found)
            except (OSError, AttributeError):  # unloadable, or a 1.x library
                continue
    for folder in ("/opt/homebrew/lib", "/usr/local/lib"):  # Homebrew, invisible to ctypes
        path = Path(folder) / "libfluidsynth.dylib"
        if path.is_file():
            try:
                return _Lib(str(path))
            except (OSError, AttributeError):
                continue
    return None


def fluidsynth_available() -> bool:
    """Whether the FluidSynth 2 library can be loaded."""
    return _lib() is not None


def fluidsynth_version() -> str | None:
    """FluidSynth's version (``"2.3.1"``), or None when the library is missing."""
    lib = _lib()
    return lib.version_str().decode() if lib is not None else None


def _require_lib() -> _Lib:
    lib = _lib()
    if lib is None:
        named = os.environ.get(LIBRARY_ENV, "").strip()
        if named.lower() == "none":
            raise RenderError(f"FluidSynth is turned off (${LIBRARY_ENV}=none)")
        if named:
            raise RenderError(f"${LIBRARY_ENV}={named}: not a FluidSynth 2 library that loads here")
        raise RenderError(f"the FluidSynth library (libfluidsynth) was not found: {_INSTALL_HINT}")
    return lib


class FluidSynth:
    """A soundfont loaded into FluidSynth once, and a fresh synthesizer for each render.

    A fresh synthesizer (about 2 ms to make) shares the loaded soundfont, so every render
    starts from silence with the same reverb and chorus state: the same score gives the
    same samples, whatever was rendered before. ``gain`` is FluidSynth's master gain (its
    default, 0.2, leaves room for about ten loud voices before clipping;
    :func:`midilm.render.synthesize` rescales a buffer that clips).
    """

    def __init__(self, soundfont: str | os.PathLike[str], *, gain: float = 0.2) -> None:
        self._lib = lib = _require_lib()
        self.soundfont = Path(soundfont)
        self.gain = float(gain)
        self._lock = threading.Lock()
        # A synth reads its settings until it is deleted: they live as long as it does.
        self._holder_settings = self._new_settings(DEFAULT_SAMPLE_RATE)
        self._holder = lib.new_synth(self._holder_settings)  # owns the soundfont
        if not self._holder:
            self.close()
            raise RenderError("FluidSynth could not create a synthesizer")
        font_id = lib.sfload(self._holder, os.fsencode(self.soundfont), 0)
        if font_id == _FLUID_FAILED:
            self.close()
            raise RenderError(f"{self.soundfont}: FluidSynth cannot load it as a soundfont")
        self._sfont = lib.get_sfont_by_id(self._holder, font_id)

    def close(self) -> None:
        """Free the soundfont (also done when this object is garbage-collected)."""
        holder, self._holder = getattr(self, "_holder", None), None
        if holder:
            self._lib.delete_synth(holder)
        settings, self._holder_settings = getattr(self, "_holder_settings", None), None
        if settings:
            self._lib.delete_settings(settings)

    def __del__(self) -> None:
        self.close()

    def render(
        self, score: ScoreTick, sample_rate: int = DEFAULT_SAMPLE_RATE, *, release_s: float = 2.0
    ) -> np.ndarray:
        """The score as a ``(samples, 2)`` float32 array at ``sample_rate``.

        The audio starts at the score's time 0 and runs to the end of its last note, then on
        while notes and reverb ring out, for at most ``release_s`` seconds (it stops after
        the first 50 ms under -80 dBFS). A score without notes gives an empty array.
        """
        events, end = _schedule(score, sample_rate)
        if end == 0:
            return np.zeros((0, 2), np.float32)
        tail = round(release_s * sample_rate)
        out = np.zeros((end + tail, 2), np.float32)
        lib = self._lib
        with self._lock:  # FluidSynth's soundfont bookkeeping is not made for two threads
            if not self._holder:
                raise RenderError("this FluidSynth soundfont was closed")
            settings = self._new_settings(sample_rate)
            synth = lib.new_synth(settings)
            if not synth:
                lib.delete_settings(settings)
                raise RenderError(f"FluidSynth could not start at {sample_rate} Hz")
            try:
                lib.add_sfont(synth, self._sfont)
                self._setup_channels(synth, score)
                pos = 0
                for time, kind, channel, a, b in events.tolist():
                    if time > pos:
                        self._write(synth, out, pos, time)
                        pos = time
                    if kind == _NOTE_ON:
                        lib.noteon(synth, channel, a, b)
                    elif kind == _NOTE_OFF:
                        lib.noteoff(synth, channel, a)
                    elif kind == _CONTROL:
                        lib.cc(synth, channel, a, b)
                    else:
                        lib.pitch_bend(synth, channel, a)
                self._write(synth, out, pos, end)
                rung = self._ring_out(synth, out, end, tail, sample_rate)
            finally:
                lib.remove_sfont(synth, self._sfont)  # the holder keeps it
                lib.delete_synth(synth)
                lib.delete_settings(settings)
        return out[: end + rung]

    def _new_settings(self, sample_rate: int) -> Any:
        lib = self._lib
        settings = lib.new_settings()
        lib.settings_setnum(settings, b"synth.sample-rate", float(sample_rate))
        lib.settings_setnum(settings, b"synth.gain", self.gain)
        lib.settings_setint(settings, b"synth.midi-channels", MAX_CHANNELS)
        lib.settings_setint(settings, b"synth.lock-memory", 0)  # no mlock of 141 MiB
        lib.settings_setint(settings, b"synth.threadsafe-api", 0)  # one thread per synth
        return settings

    def _setup_channels(self, synth: Any, score: ScoreTick) -> None:
        lib = self._lib
        for track, channel in zip(score.tracks, _channels(score), strict=True):
            kind = _CHANNEL_TYPE_DRUM if track.is_drum else _CHANNEL_TYPE_MELODIC
            lib.set_channel_type(synth, channel, kind)
            # On a drum channel the program picks a kit (bank 128); FluidSynth falls back to
            # the standard kit, or to the same program in bank 0, when the soundfont lacks it.
            lib.program_change(synth, channel, int(track.program))

    def _write(self, synth: Any, out: np.ndarray, start: int, stop: int) -> None:
        """Synthesize samples ``[start, stop)`` into ``out`` (interleaved stereo, in place)."""
        if stop <= start:
            return
        base = out.ctypes.data
        self._lib.write_float(synth, stop - start, base, 2 * start, 2, base, 2 * start + 1, 2)

    def _ring_out(self, synth: Any, out: np.ndarray, end: int, tail: int, sample_rate: int) -> int:
        """Render the release after the last note, in 50 ms blocks, up to the first silent
        one; return how many samples it took."""
        block = max(1, sample_rate // 20)
        pos = end
        while pos < end + tail:
            stop = min(pos + block, end + tail)
            self._write(synth, out, pos, stop)
            silent = float(np.abs(out[pos:stop]).max()) < _SILENCE
            pos = stop
            if silent:
                break
        return pos - end


def _channels(score: ScoreTick) -> list[int]:
    """A channel for each track: drums on GM's drum channel first, every other track on a
    channel of its own, 9 skipped for melodic tracks; past 256 tracks channels are shared."""
    free = [c for c in range(MAX_CHANNELS) if c != _DRUM_CHANNEL]
    drum_taken = False
    channels = []
    for track in score.tracks:
        if track.is_drum and not drum_taken:
            channels.append(_DRUM_CHANNEL)
            drum_taken = True
        else:
            channels.append(free[len(channels) % len(free)])
    return channels


def _schedule(score: ScoreTick, sample_rate: int) -> tuple[np.ndarray, int]:
    """Every note, controller and pitch bend of the score as rows ``(sample, kind, channel,
    a, b)`` sorted by time then kind, and the sample at which the last note ends."""
    seconds = score.to("second")
    rows: list[np.ndarray] = []
    end = 0
    for track, channel in zip(seconds.tracks, _channels(score), strict=True):
        notes = track.notes.numpy()
        if len(notes["time"]):
            onset = _samples(notes["time"], sample_rate)
            offset = np.maximum(_samples(notes["time"] + notes["duration"], sample_rate), onset)
            end = max(end, int(offset.max()))
            pitch = np.clip(notes["pitch"], 0, 127)
            velocity = np.clip(notes["velocity"], 1, 127)
            rows.append(_rows(onset, _NOTE_ON, channel, pitch, velocity))
            rows.append(_rows(offset, _NOTE_OFF, channel, pitch, 0))
        controls = track.controls.numpy()
        if len(controls["time"]):
            number = np.clip(controls["number"], 0, 127)
            rows.append(
                _rows(_samples(controls["time"], sample_rate), _CONTROL, channel, number,
                      np.clip(controls["value"], 0, 127))
            )  # fmt: skip
        bends = track.pitch_bends.numpy()
        if len(bends["time"]):
            value = np.clip(bends["value"].astype(np.int64) + 8192, 0, 16383)
            rows.append(_rows(_samples(bends["time"], sample_rate), _BEND, channel, value, 0))
    if not rows:
        return np.zeros((0, 5), np.int64), 0
    events = np.concatenate(rows)
    events = events[events[:, 0] <= end]  # controllers after the last note change nothing heard
    events = events[np.lexsort((events[:, 1], events[:, 0]))]
    return events, end


def _samples(seconds: np.ndarray, sample_rate: int) -> np.ndarray:
    return np.maximum(np.rint(seconds.astype(np.float64) * sample_rate), 0).astype(np.int64)


def _rows(time: np.ndarray, kind: int, channel: int, a: Any, b: Any) -> np.ndarray:
    rows = np.empty((len(time), 5), np.int64)
    rows[:, 0] = time
    rows[:, 1] = kind
    rows[:, 2] = channel
    rows[:, 3] = a
    rows[:, 4] = b
    return rows


@functools.lru_cache(maxsize=2)
def _cached_synth(soundfont: str, mtime_ns: int, size: int, library: int) -> FluidSynth:
    del mtime_ns, size, library  # part of the key only: a replaced file is loaded again
    return FluidSynth(soundfont)


def get_synth(soundfont: str | os.PathLike[str]) -> FluidSynth:
    """FluidSynth with ``soundfont`` loaded, shared with earlier calls for the same file (the
    last two soundfonts stay loaded: FluidR3_GM takes 0.2 s to load)."""
    # The library is asked for first, every time: a synthesizer loaded earlier must not
    # play once the library is turned off or another one is named (MIDILM_FLUIDSYNTH_LIBRARY).
    library = _require_lib()
    path = Path(soundfont).resolve()
    stat = path.stat()
    return _cached_synth(str(path), stat.st_mtime_ns, stat.st_size, id(library))
