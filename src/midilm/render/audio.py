"""Scores to audio: a General MIDI soundfont played by a real synthesizer, then encoded.

``synthesizer="auto"`` (the default) plays with FluidSynth (:mod:`midilm.render.fluid`)
when its library loads, else with rustysynth (:mod:`midilm.render.rusty`), which installs
with midilm (the ``midirenderer`` wheel): so audio works after a plain ``pip install``, with
the TimGM6mb soundfont pretty_midi ships when the system has none. Both are real SoundFont
synthesizers (velocities, releases, reverb, chorus, drum kits). ``benchmarks/render.py``
measures FluidSynth at 40–110× realtime on a 3-minute string quartet with FluidR3_GM, reverb
and chorus on (the range is the load of the 2-core machine it ran on), 1.2× the speed of
the ``fluidsynth`` program on the same file; rustysynth at 74× beside FluidSynth's 100× in
one run (119× and 181× with TimGM6mb), at the same loudness. FluidSynth stays first: it is
the reference, faster, gives every track its own channel (rustysynth: MIDI's 16) and 256
voices (rustysynth: 64). symusic's own synthesizer (Prestosynth) is only used when asked
for (``synthesizer="symusic"``): measured beside FluidSynth it ignores velocities (velocity
110 is as loud as 40), cuts notes off without their release, and in symusic 0.6.0 its
``render`` cannot return audio at all (its Eigen array has no Python converter), which it
reports as a :class:`RenderError`.

Tracks keep their programs and their velocities; drum tracks (channel 10 in MIDI) play the
soundfont's drum kit; tempo changes apply (the score is timed in seconds by symusic before
it is played).

Encoders: WAV and FLAC (16-bit), Ogg Vorbis and MP3 (when the installed libsndfile has
them: the ``soundfile`` wheels bundle one that does), all through ``soundfile``. Files are
written atomically.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Literal

import numpy as np
from symusic.core import ScoreQuarter, ScoreSecond, ScoreTick

from midilm.errors import ConfigError
from midilm.io_utils import atomic_path
from midilm.render.errors import RenderError, UnsupportedFormatError
from midilm.render.fluid import fluidsynth_available, get_synth
from midilm.render.rusty import render_rustysynth
from midilm.render.soundfont import find_soundfont

__all__ = [
    "AUDIO_FORMATS",
    "DEFAULT_SAMPLE_RATE",
    "SynthesizerName",
    "audio_bytes",
    "audio_format",
    "encode_audio",
    "render_audio",
    "resolve_synthesizer",
    "synthesize",
    "write_audio",
]

DEFAULT_SAMPLE_RATE = 44_100
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 8_000, 96_000  # FluidSynth's range

# Extension → (libsndfile container, sample encoding).
AUDIO_FORMATS: dict[str, tuple[str, str]] = {
    "wav": ("WAV", "PCM_16"),
    "flac": ("FLAC", "PCM_16"),
    "ogg": ("OGG", "VORBIS"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
}

SynthesizerName = Literal["auto", "fluidsynth", "rustysynth", "symusic"]
Synthesizer = Literal["fluidsynth", "rustysynth", "symusic"]

_CLIP_LEVEL = 0.999  # a buffer that peaks above this is scaled down rather than clipped
_FLUIDSYNTH_HINT = (
    "use synthesizer 'rustysynth' (no system library needed) or install FluidSynth "
    "(Debian/Ubuntu: apt-get install fluidsynth; macOS: brew install fluid-synth)"
)


def synthesize(
    score: ScoreTick | ScoreQuarter | ScoreSecond,
    *,
    soundfont: str | os.PathLike[str] | None = None,
    sample_rate: int = DEFAULT_SAMPLE_RATE,
    synthesizer: SynthesizerName = "auto",
) -> np.ndarray:
    """The score as stereo float32 samples, shape ``(samples, 2)``, in ``[-1, 1]``.

    The audio starts at the score's time 0, lasts until its last note ends, plus the release
    (notes and reverb ringing out, at most 2 s). ``soundfont`` defaults as
    :func:`midilm.render.find_soundfont` says (system ``.sf3`` files are passed over for
    rustysynth, which reads ``.sf2`` only). ``synthesizer``: ``"auto"`` (FluidSynth when its
    library loads, else rustysynth), ``"fluidsynth"`` (a clear error when its library is
    missing), ``"rustysynth"`` or ``"symusic"`` (see the module doc). A buffer that would
    clip is scaled down as a whole, keeping the balance of voices and dynamics.
    """
    score = _as_score(score)
    sample_rate = _check_sample_rate(sample_rate)
    engine = resolve_synthesizer(synthesizer)
    path = find_soundfont(soundfont, sf2_only=engine == "rustysynth")
    if engine == "fluidsynth":
        audio = get_synth(path).render(score, sample_rate)
    elif engine == "rustysynth":
        audio = render_rustysynth(score, path, sample_rate)
    else:
        audio = _render_symusic(score, path, sample_rate)
    peak = float(np.abs(audio).max()) if audio.size else 0.0
    if peak > _CLIP_LEVEL:
        audio *= _CLIP_LEVEL / peak
    return audio


def resolve_synthesizer(synthesizer: SynthesizerName = "auto") -> Synthesizer:
    """The synthesizer a name stands for: ``"auto"`` is FluidSynth when its library loads
    (``$MIDILM_FLUIDSYNTH_LIBRARY=none`` says it does not), else rustysynth."""
    if synthesizer == "auto":
        return "fluidsynth" if fluidsynth_available() else "rustysynth"
    if synthesizer in ("fluidsynth", "rustysynth", "symusic"):
        return synthesizer
    raise ConfigError(
        "synthesizer must be 'auto', 'fluidsynth', 'rustysynth' or 'symusic', "
        f"received {synthesizer!r}"
    )


def render_audio(
    score: ScoreTick | ScoreQuarter | ScoreSecond,
    path: str | os.PathLike[str],
    *,
    soundfont: str | os.PathLike[str] | None = None,
    sample_rate: int = DEFAULT_SAMPLE_RATE,
    synthesizer: SynthesizerName = "auto",
) -> Path:
    """Play the score through a GM soundfont into an audio file; return its path.

    The format follows the extension: ``.wav``, ``.flac``, ``.ogg`` or ``.mp3`` (checked
    before anything is synthesized). The file appears complete or not at all.
    """
    path = Path(path)
    audio_format(path)
    audio = synthesize(score, soundfont=soundfont, sample_rate=sample_rate, synthesizer=synthesizer)
    write_audio(audio, sample_rate, path)
    return path


def audio_bytes(
    score: ScoreTick | ScoreQuarter | ScoreSecond,
    format: str = "wav",
    *,
    soundfont: str | os.PathLike[str] | None = None,
    sample_rate: int = DEFAULT_SAMPLE_RATE,
    synthesizer: SynthesizerName = "auto",
) -> bytes:
    """The score as the bytes of an audio file (``"wav"``, ``"flac"``, ``"ogg"``, ``"mp3"``),
    for callers that answer with them (the HTTP server) instead of writing a file."""
    _format_spec(format)
    audio = synthesize(score, soundfont=soundfont, sample_rate=sample_rate, synthesizer=synthesizer)
    return encode_audio(audio, sample_rate, format)


def audio_format(path: str | os.PathLike[str]) -> str:
    """The audio format an output path asks for (``"out.FLAC"`` → ``"flac"``); raises
    :class:`UnsupportedFormatError` for other extensions or a missing encoder."""
    suffix = Path(path).suffix.lower().lstrip(".")
    if not suffix:
        raise UnsupportedFormatError(f"{path}: no extension; name it .{' .'.join(AUDIO_FORMATS)}")
    _format_spec(suffix, label=str(path))
    return suffix


def write_audio(audio: np.ndarray, sample_rate: int, path: str | os.PathLike[str]) -> None:
    """Encode ``(samples, channels)`` float samples into ``path`` (format by extension),
    atomically."""
    fmt = audio_format(path)
    data = encode_audio(audio, sample_rate, fmt)
    with atomic_path(path) as tmp, tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def encode_audio(audio: np.ndarray, sample_rate: int, format: str = "wav") -> bytes:
    """``(samples, channels)`` float samples as the bytes of a ``format`` file."""
    import soundfile

    container, subtype = _format_spec(format)
    buffer = io.BytesIO()
    try:
        soundfile.write(buffer, audio, int(sample_rate), subtype=subtype, format=container)
    except (soundfile.LibsndfileError, RuntimeError, ValueError) as err:
        raise RenderError(f"could not encode {format} at {sample_rate} Hz: {err}") from err
    return buffer.getvalue()


def _format_spec(fmt: str, *, label: str | None = None) -> tuple[str, str]:
    key = fmt.lower().lstrip(".")
    if key not in AUDIO_FORMATS:
        what = f"{label}: " if label else ""
        raise UnsupportedFormatError(
            f"{what}midilm writes audio as .{' .'.join(AUDIO_FORMATS)}, received {fmt!r}"
        )
    import soundfile

    container, subtype = AUDIO_FORMATS[key]
    if not soundfile.check_format(container, subtype):
        raise UnsupportedFormatError(
            f"this libsndfile ({soundfile.__libsndfile_version__}) has no {key} encoder: "
            "write .wav or .flac, or install a libsndfile built with it (the soundfile "
            "wheels from PyPI bundle one with Ogg Vorbis and MP3)"
        )
    return container, subtype


def _as_score(score: object) -> ScoreTick:
    if isinstance(score, ScoreTick):
        return score
    if isinstance(score, (ScoreQuarter, ScoreSecond)):
        return score.to("tick")
    raise TypeError(f"expected a symusic Score, received {type(score).__name__}")


def _check_sample_rate(sample_rate: int) -> int:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)):
        raise ConfigError(f"sample_rate must be an integer, received {sample_rate!r}")
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise ConfigError(
            f"sample_rate must be {MIN_SAMPLE_RATE}–{MAX_SAMPLE_RATE} Hz, received {sample_rate}"
        )
    return int(sample_rate)


def _render_symusic(score: ScoreTick, soundfont: Path, sample_rate: int) -> np.ndarray:
    """symusic's Prestosynth: ``(samples, 2)`` float32, or :class:`RenderError`."""
    import symusic

    try:
        synth = symusic.Synthesizer(str(soundfont), sample_rate, 0)
        buffer = synth.render(score, stereo=True)
    except TypeError as err:  # symusic 0.6.0: render's result has no Python converter
        raise RenderError(
            f"symusic {symusic.__version__}'s synthesizer cannot return audio (its result has "
            f"no Python converter in this version); use FluidSynth: {_FLUIDSYNTH_HINT}"
        ) from err
    except (RuntimeError, ValueError) as err:
        raise RenderError(f"symusic's synthesizer failed on {soundfont}: {err}") from err
    return np.ascontiguousarray(np.asarray(buffer, dtype=np.float32).T)
