"""How fast midilm turns a score into audio, beside the other synthesizers it could use.

    python benchmarks/render.py [--seconds 180] [--repeats 3]

Piece: the first movement of Mozart's string quartet K. 458 from the music21 corpus (four
tracks: two violins, viola, cello), cut to ``--seconds`` (3 minutes). Synthesizers, each
run ``--repeats`` times, interleaved, so that load from other processes falls on all alike:

- ``midilm``: :func:`midilm.render.synthesize`, FluidSynth in process (the soundfont loaded
  once, as a server keeps it), with the soundfont midilm finds (FluidR3_GM on Debian) and
  with the small TimGM6mb that pretty_midi ships;
- ``midilm_rustysynth``: :func:`midilm.render.synthesize` with ``synthesizer="rustysynth"``
  (the ``midirenderer`` wheel: what ``auto`` plays without FluidSynth), the same two
  soundfonts, resampled from its 48 kHz to 44.1 kHz;
- ``fluidsynth_cli``: the ``fluidsynth`` program's fast file renderer (``-F``) on the same
  MIDI file, soundfont load included, as a shell user would run it;
- ``symusic``: symusic's own synthesizer (Prestosynth), or the error it raises.

Figures per synthesizer: the realtime factor (seconds of audio per second of compute; the
median over repeats, with min–max to show the noise), the same per CPU second (steadier
when other processes share the cores), and three checks of what is heard,
on short test scores: how much louder velocity 110 is than 40 (RMS ratio; a synthesizer
that ignores velocity gives 1), the spectral centroid of a closed hi-hat on the drum channel
(a drum kit: several kHz; a piano note for key 42: a few hundred Hz), and whether sound
goes on after the notes end (reverb / release tail, in dB below the notes). Last line: JSON,
with ``realtime_factor`` (midilm's default path: what ``synthesizer="auto"`` plays, with
its default soundfont), ``rustysynth_realtime_factor`` (rustysynth, the same soundfont) and
every figure.
"""

from __future__ import annotations

import sys
from pathlib import Path

# benchmarks/tokenize.py is named like the standard library's ``tokenize``: keep this
# folder off sys.path, or every import that needs the real one breaks.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import numpy as np  # noqa: E402
import soundfile  # noqa: E402
from symusic import Note, Score, Track  # noqa: E402

from midilm.render import (  # noqa: E402
    find_soundfont,
    fluidsynth_version,
    pianoroll_bytes,
    resolve_synthesizer,
    rustysynth_version,
    synthesize,
)
from midilm.render.fluid import get_synth  # noqa: E402
from midilm.render.soundfont import packaged_soundfont  # noqa: E402
from midilm.score import import_music21, save_midi  # noqa: E402

PIECE = "music21:mozart/k458/movement1"
SR = 44_100
TARGET_RTF = 30.0

Synth = Callable[[Score], np.ndarray]


def build_piece(seconds: float) -> Score:
    """The quartet movement (7 minutes) cut to ``seconds``."""
    timed = import_music21(PIECE).to("second")
    if timed.end() < seconds:
        raise SystemExit(f"{PIECE} lasts {timed.end():.0f} s, less than --seconds {seconds}")
    return timed.clip(0.0, seconds, clip_end=True).to("tick")


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the fluidsynth program)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def rms(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) if audio.size else 0.0


def test_score(program: int, *, drum: bool = False, pitch: int = 60, velocity: int = 100) -> Score:
    score = Score(480)
    track = Track("t", program, drum)
    for i in range(8):
        track.notes.append(Note(i * 480, 240, pitch, velocity))
    score.tracks.append(track)
    return score


def checks(synth: Synth) -> dict[str, float]:
    """What is heard: velocity response, the drum kit, the tail after the notes."""
    soft, loud = synth(test_score(0, velocity=40)), synth(test_score(0, velocity=110))
    hat = synth(test_score(0, drum=True, pitch=42)).mean(axis=1)
    spectrum = np.abs(np.fft.rfft(hat))
    centroid = float((spectrum * np.fft.rfftfreq(len(hat), 1 / SR)).sum() / spectrum.sum())
    tone = synth(test_score(48))  # string ensemble: a sustained sound
    end = int(3.75 * SR)  # the last note ends at 3.75 s
    during = rms(tone[int(3.5 * SR) : end])
    after = rms(tone[end + int(0.2 * SR) : end + int(0.5 * SR)])
    tail_db = 20 * np.log10(max(after, 1e-9) / max(during, 1e-9))
    return {
        "velocity_110_over_40": round(rms(loud) / max(rms(soft), 1e-12), 2),
        "hihat_centroid_hz": round(centroid),
        "tail_200_500ms_db": round(float(tail_db), 1),
    }


def midilm_synth(soundfont: Path) -> Synth:
    get_synth(soundfont)  # load once, as a long-running process would
    return lambda score: synthesize(
        score, soundfont=soundfont, sample_rate=SR, synthesizer="fluidsynth"
    )


def rustysynth_synth(soundfont: Path) -> Synth:
    # The soundfont's bytes are kept by midilm after the warm-up call, as in a server.
    return lambda score: synthesize(
        score, soundfont=soundfont, sample_rate=SR, synthesizer="rustysynth"
    )


def cli_synth(soundfont: Path, workdir: Path) -> Synth:
    """The ``fluidsynth`` program on a MIDI file of the score (its own player and channels)."""

    def run(score: Score) -> np.ndarray:
        midi, wav = workdir / "in.mid", workdir / "out.wav"
        save_midi(score, midi)
        subprocess.run(
            ["fluidsynth", "-ni", "-q", "-g", "0.2", "-r", str(SR), "-F", str(wav),
             str(soundfont), str(midi)],
            check=True, capture_output=True,
        )  # fmt: skip
        data, _ = soundfile.read(wav, dtype="float32", always_2d=True)
        return data

    return run


def symusic_synth(soundfont: Path) -> Synth:
    import symusic

    engine = symusic.Synthesizer(str(soundfont), SR, 0)
    return lambda score: np.asarray(engine.render(score, stereo=True), dtype=np.float32).T


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    piece = build_piece(args.seconds)
    audio_s = float(piece.to("second").end())
    notes = sum(len(t.notes) for t in piece.tracks)
    print(f"piece: {PIECE}, {len(piece.tracks)} tracks, {notes} notes, {audio_s:.1f} s")
    system_sf, small_sf = find_soundfont(), packaged_soundfont()
    print(
        f"FluidSynth {fluidsynth_version()}, rustysynth (midirenderer {rustysynth_version()}); "
        f"soundfonts: {system_sf} and {small_sf}"
    )

    workdir = Path(tempfile.mkdtemp(prefix="midilm-render-bench-"))
    candidates: dict[str, Callable[[], Synth]] = {
        f"midilm_fluidsynth_{system_sf.stem}": lambda: midilm_synth(system_sf),
    }
    if small_sf is not None and small_sf != system_sf:
        candidates[f"midilm_fluidsynth_{small_sf.stem}"] = lambda: midilm_synth(small_sf)
    candidates[f"midilm_rustysynth_{system_sf.stem}"] = lambda: rustysynth_synth(system_sf)
    if small_sf is not None and small_sf != system_sf:
        candidates[f"midilm_rustysynth_{small_sf.stem}"] = lambda: rustysynth_synth(small_sf)
    if shutil.which("fluidsynth"):
        candidates[f"fluidsynth_cli_{system_sf.stem}"] = lambda: cli_synth(system_sf, workdir)
    candidates[f"symusic_{system_sf.stem}"] = lambda: symusic_synth(system_sf)

    synths: dict[str, Synth] = {}
    results: dict[str, dict[str, object]] = {}
    for name, make in candidates.items():
        try:
            synth = make()
            synth(test_score(0))  # warm up; also proves it can return audio
        except Exception as err:  # noqa: BLE001 - a benchmark reports any failure as a result
            results[name] = {"error": f"{type(err).__name__}: {str(err).splitlines()[0]}"}
            print(f"{name}: unavailable ({results[name]['error']})")
            continue
        synths[name] = synth
        results[name] = {"seconds": [], "cpu_seconds": []}

    for _ in range(args.repeats):
        for name, synth in synths.items():
            start, cpu_start = time.perf_counter(), cpu_seconds()
            audio = synth(piece)
            results[name]["seconds"].append(time.perf_counter() - start)  # type: ignore[union-attr]
            results[name]["cpu_seconds"].append(cpu_seconds() - cpu_start)  # type: ignore[union-attr]
            results[name]["rms"] = round(rms(audio), 4)
    for name, synth in synths.items():
        times = results[name].pop("seconds")
        cpu = results[name].pop("cpu_seconds")
        results[name].update(
            realtime_factor=round(audio_s / statistics.median(times), 1),  # type: ignore[arg-type]
            realtime_factor_cpu=round(audio_s / statistics.median(cpu), 1),  # type: ignore[arg-type]
            realtime_factor_range=[round(audio_s / max(times), 1), round(audio_s / min(times), 1)],  # type: ignore[arg-type]
            **checks(synth),
        )
        print(f"{name}: {results[name]}")

    start = time.perf_counter()
    png = pianoroll_bytes(piece)
    pianoroll_s = time.perf_counter() - start
    print(f"piano roll of the piece: {pianoroll_s:.2f} s, {len(png):,} bytes")
    shutil.rmtree(workdir, ignore_errors=True)

    default = resolve_synthesizer("auto")
    headline = results[f"midilm_{default}_{system_sf.stem}"]
    rusty = results[f"midilm_rustysynth_{system_sf.stem}"]
    summary = {
        "realtime_factor": headline["realtime_factor"],
        "default_synthesizer": default,
        "rustysynth_realtime_factor": rusty.get("realtime_factor"),
        "target_realtime_factor": TARGET_RTF,
        "meets_target": float(headline["realtime_factor"]) >= TARGET_RTF,  # type: ignore[arg-type]
        "audio_s": round(audio_s, 1),
        "notes": notes,
        "pianoroll_s": round(pianoroll_s, 2),
        "synthesizers": results,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
