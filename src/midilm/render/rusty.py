"""rustysynth, the SoundFont synthesizer that installs with pip: audio with no system library.

rustysynth (a Rust port of MeltySynth: SoundFont 2 generators and modulators, low-pass
filter, reverb and chorus, GM drums on channel 10) comes compiled inside the ``midirenderer``
wheel (abi3, no system dependency), which plays a standard MIDI file with a soundfont into
16-bit stereo WAV at 48 kHz. midilm writes the score as MIDI (symusic), decodes the WAV
(soundfile) and resamples it to the rate asked for with soxr (its "HQ" filter).

What this adds around it:

- the release: midirenderer stops at the file's last event, so a harmless controller (an
  undefined one, CC 110) is placed ``release_s`` after the last note ends, and the tail is
  cut, as :mod:`midilm.render.fluid` cuts it, after the first 50 ms block under -80 dBFS;
- headroom: its samples are clamped to 16 bits inside midirenderer, so what clips there is
  lost. Every channel's volume (CC 7, the score's own values included) is scaled so that its
  level matches FluidSynth's (rustysynth plays 2.2× louder: RMS 0.048 vs 0.022 on the
  chorale BWV 66.6, both soundfonts); a render that still reaches full scale is played again
  12 dB softer (:func:`midilm.render.synthesize` then brings the peak back up).

Measured beside FluidSynth on BWV 66.6 (24.4 s of notes), TimGM6mb / FluidR3_GM: spectral
centroid 1448 / 1432 Hz vs 1288 / 1420 Hz (the same instruments, a little brighter), RMS
0.021 / 0.021 vs 0.023 / 0.022, length 25.5 / 25.5 s vs 25.3 / 25.9 s (its release rings
out). ``benchmarks/render.py`` on 3 minutes of a string quartet: 119× / 74× realtime vs
FluidSynth's 181× / 100× in the same run; velocity 110 is 7.6× as loud (RMS) as 40 (7.5×).

Limits: MIDI's 16 channels (symusic gives each track a channel, drums on 10; past 15
melodic tracks channels are shared and the later program wins; FluidSynth here gives every
track its own), 64 voices at once (FluidSynth: 256), and SoundFont 3 (``.sf3``, Ogg
samples) is not read.
"""

from __future__ import annotations

import functools
import io
import math
import os
from pathlib import Path

import numpy as np
from symusic import ControlChange
from symusic.core import ScoreTick

from midilm.render.errors import RenderError

__all__ = ["RUSTYSYNTH_SAMPLE_RATE", "render_rustysynth", "rustysynth_version"]

RUSTYSYNTH_SAMPLE_RATE = 48_000  # midirenderer's, fixed (read from its WAV all the same)
_SILENCE = 1e-4  # -80 dBFS, as in midilm.render.fluid
_FULL_SCALE = 32_767 / 32_768  # midirenderer clamps to 16 bits here
_END_CONTROLLER = 110  # undefined in General MIDI: synthesizers ignore it
_VOLUME = 7  # CC 7, channel volume; rustysynth's gain goes as its square
_DEFAULT_VOLUME = 100  # what a channel starts at (GM)
_LEVEL_SCALE = 0.67  # 0.67² ≈ 0.45: FluidSynth's level at its default gain (0.2)
_RETRY_SCALE = 0.5  # 0.5² = -12 dB, when a render clipped
_MAX_RETRIES = 2


def rustysynth_version() -> str | None:
    """The version of the ``midirenderer`` wheel that carries rustysynth, or None when it
    is not installed."""
    from importlib import metadata

    try:
        return metadata.version("midirenderer")
    except metadata.PackageNotFoundError:
        return None


def render_rustysynth(
    score: ScoreTick, soundfont: str | os.PathLike[str], sample_rate: int, *, release_s: float = 2.0
) -> np.ndarray:
    """The score as a ``(samples, 2)`` float32 array at ``sample_rate``, played by rustysynth.

    Same contract as :meth:`midilm.render.fluid.FluidSynth.render`: from the score's time 0
    to the end of its last note, then on while notes and reverb ring out, at most
    ``release_s`` seconds. A score without notes gives an empty array.
    """
    end_tick = _last_note_end(score)
    if end_tick is None:
        return np.zeros((0, 2), np.float32)
    font = _soundfont_bytes(Path(soundfont))
    played = score.clip(0, end_tick + 1, clip_end=False)  # what follows the notes is unheard
    played.tracks[0].controls.append(
        ControlChange(end_tick + _ticks(played, end_tick, release_s), _END_CONTROLLER, 0)
    )
    end_s = max(
        float(n.time + n.duration) for track in played.to("second").tracks for n in track.notes
    )
    scale = _LEVEL_SCALE
    for _ in range(_MAX_RETRIES + 1):
        audio, rate = _play(font, _scaled_volumes(played, scale).dumps_midi(), soundfont)
        if audio.size == 0 or float(np.abs(audio).max()) < _FULL_SCALE:
            break
        scale *= _RETRY_SCALE
    end = round(end_s * rate)
    audio = audio[: end + _rung_out(audio, end, round(release_s * rate), rate // 20)]
    if sample_rate != rate:
        import soxr

        audio = soxr.resample(audio, rate, sample_rate, quality="HQ")
    return np.ascontiguousarray(audio, dtype=np.float32)


def _play(font: bytes, midi: bytes, soundfont: str | os.PathLike[str]) -> tuple[np.ndarray, int]:
    """midirenderer's WAV decoded to float32, and its rate (48 kHz); its errors as
    :class:`RenderError`."""
    try:
        import midirenderer
    except ImportError as err:
        raise RenderError(
            "rustysynth is not installed: pip install midirenderer (it ships compiled, with no "
            "system library), or install FluidSynth"
        ) from err
    import soundfile

    try:
        wav = midirenderer.render_wave_from(font, midi)
    except (RuntimeError, ValueError) as err:
        hint = ""
        if "SoundFont3" in str(err):
            hint = (
                "; rustysynth reads SoundFont 2 only: pass a .sf2 (TimGM6mb.sf2 ships with "
                "pretty_midi) or install FluidSynth, which reads .sf3"
            )
        raise RenderError(f"rustysynth cannot play with {soundfont}: {err}{hint}") from err
    except BaseException as err:  # a Rust panic reaches Python as pyo3's PanicException
        if type(err).__name__ != "PanicException":
            raise
        raise RenderError(f"rustysynth failed (with {soundfont}): {err}") from err
    audio, rate = soundfile.read(io.BytesIO(wav), dtype="float32", always_2d=True)
    return audio, int(rate)


def _last_note_end(score: ScoreTick) -> int | None:
    ends = [
        int((notes["time"] + notes["duration"]).max())
        for notes in (track.notes.numpy() for track in score.tracks)
        if len(notes["time"])
    ]
    return max(ends) if ends else None


def _ticks(score: ScoreTick, at: int, seconds: float) -> int:
    """How many ticks last ``seconds`` at the tempo in force at tick ``at``."""
    mspq, latest = 500_000, -1  # MIDI's default: 120 quarters a minute
    for tempo in score.tempos:
        if latest <= tempo.time <= at:
            mspq, latest = tempo.mspq, tempo.time
    return math.ceil(seconds * 1e6 / mspq * score.ticks_per_quarter)


def _scaled_volumes(score: ScoreTick, scale: float) -> ScoreTick:
    """A copy whose channel volumes are all ``scale`` times theirs (a track that sets none
    at its start gets ``scale`` × the default, 100)."""
    scaled = score.copy()
    for track in scaled.tracks:
        starts_set = False
        for control in track.controls:
            if control.number == _VOLUME:
                control.value = round(control.value * scale)
                starts_set = starts_set or control.time == 0
        if not starts_set:
            track.controls.append(ControlChange(0, _VOLUME, round(_DEFAULT_VOLUME * scale)))
    return scaled


def _rung_out(audio: np.ndarray, end: int, tail: int, block: int) -> int:
    """How much of the release after sample ``end`` to keep: up to and including the first
    ``block`` (50 ms) under -80 dBFS, at most ``tail`` samples."""
    stop = min(len(audio), end + tail)
    pos = end
    while pos < stop:
        nxt = min(pos + block, stop)
        silent = float(np.abs(audio[pos:nxt]).max()) < _SILENCE
        pos = nxt
        if silent:
            break
    return max(pos - end, 0)


@functools.lru_cache(maxsize=1)
def _cached_bytes(path: str, mtime_ns: int, size: int) -> bytes:
    del mtime_ns, size  # part of the key only: a replaced file is read again
    return Path(path).read_bytes()


def _soundfont_bytes(path: Path) -> bytes:
    """The soundfont file's bytes, kept for the next render (rustysynth parses them each
    time: 80 ms for FluidR3_GM's 141 MiB, reading them again would cost more)."""
    resolved = path.resolve()
    stat = resolved.stat()
    return _cached_bytes(str(resolved), stat.st_mtime_ns, stat.st_size)
