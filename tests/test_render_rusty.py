"""rustysynth, the synthesizer that installs with pip (the ``midirenderer`` wheel): what is
heard matches the score (length, tempo, drums, velocities), the rate asked for is the rate
delivered, and ``synthesizer="auto"`` falls back to it when FluidSynth is not there.

FluidSynth is made absent the way a user would: ``$MIDILM_FLUIDSYNTH_LIBRARY=none``.
"""

from __future__ import annotations

import ctypes.util

import numpy as np
import pytest
from click.testing import CliRunner
from symusic import Note, Score, Tempo, Track

from audio_helpers import (  # noqa: F401 (fixture 'chorale')
    CHORALE,
    MAX_RELEASE_S,
    SR,
    chorale_fixture,
    repeated,
    rms,
    spectral_centroid_hz,
)
from midilm.cli.main import cli
from midilm.render import (
    RenderError,
    find_soundfont,
    fluidsynth_available,
    resolve_synthesizer,
    rustysynth_version,
    synthesize,
)
from midilm.render import soundfont as soundfont_module
from midilm.render.fluid import LIBRARY_ENV
from midilm.render.rusty import RUSTYSYNTH_SAMPLE_RATE, render_rustysynth
from midilm.render.soundfont import packaged_soundfont


@pytest.fixture(scope="module")
def chorale_audio(chorale) -> np.ndarray:
    return synthesize(chorale, synthesizer="rustysynth")


def rusty(score: Score, **kwargs) -> np.ndarray:
    return synthesize(score, synthesizer="rustysynth", **kwargs)


def test_chorale_lasts_as_long_as_the_score_and_is_loud(chorale, chorale_audio):
    audio = chorale_audio
    assert audio.dtype == np.float32 and audio.ndim == 2 and audio.shape[1] == 2
    seconds = chorale.to("second")
    end_s = max(float(n.time + n.duration) for t in seconds.tracks for n in t.notes)
    length_s = len(audio) / SR
    assert end_s - 0.5 <= length_s <= end_s + 0.5 + MAX_RELEASE_S, (length_s, end_s)
    assert length_s > end_s  # the release rings on past the last note
    assert rms(audio) > 0.005  # well above silence (-46 dBFS)
    assert float(np.abs(audio).max()) <= 1.0
    assert np.array_equal(rusty(chorale), audio)  # the same score, the same samples


def test_drum_only_score_sounds_as_drums():
    kit = Score(480)
    drums = Track("Drums", 0, True)
    for i in range(8):  # kick, hat, snare, hat…
        drums.notes.append(Note(i * 480, 240, (36, 42, 38, 42)[i % 4], 110))
    kit.tracks.append(drums)
    audio = rusty(kit)
    assert rms(audio) > 1e-3 and float(np.abs(audio).max()) > 0.02
    # A closed hi-hat is noise; the same key on a piano is F#2 (92 Hz).
    hat, piano = rusty(repeated(0, drum=True, pitch=42)), rusty(repeated(0, pitch=42))
    assert spectral_centroid_hz(hat) > 4000 > 2 * spectral_centroid_hz(piano)


def test_velocities_change_the_loudness():
    soft, loud = rusty(repeated(0, velocity=40)), rusty(repeated(0, velocity=110))
    assert rms(loud) > 2 * rms(soft)


def test_tempo_changes_are_honoured():
    slower = repeated(0)
    slower.tempos.append(Tempo(0, 120))
    slower.tempos.append(Tempo(4 * 480, 60))  # the last four notes at half speed
    steady_s, slower_s = len(rusty(repeated(0))) / SR, len(rusty(slower)) / SR
    assert 3.75 <= steady_s <= 3.75 + MAX_RELEASE_S
    assert 5.5 <= slower_s <= 5.5 + MAX_RELEASE_S
    assert slower_s - steady_s > 1.0


@pytest.mark.parametrize("sample_rate", [22_050, SR, RUSTYSYNTH_SAMPLE_RATE])
def test_the_sample_rate_asked_for_is_delivered(sample_rate):
    """Same duration at every rate, and A4 (440 Hz) stays at 440 Hz after resampling."""
    score = Score(480)
    track = Track("flute", 73, False)
    track.notes.append(Note(0, 1920, 69, 100))  # 2 s
    score.tracks.append(track)
    audio = rusty(score, sample_rate=sample_rate)
    reference = rusty(score, sample_rate=RUSTYSYNTH_SAMPLE_RATE)
    assert abs(len(audio) / sample_rate - len(reference) / RUSTYSYNTH_SAMPLE_RATE) < 0.002
    held = audio[: 2 * sample_rate].mean(axis=1)
    spectrum = np.abs(np.fft.rfft(held * np.hanning(len(held))))
    peak_hz = float(np.fft.rfftfreq(len(held), 1 / sample_rate)[spectrum.argmax()])
    assert abs(peak_hz - 440) < 5, peak_hz


def test_a_render_that_would_clip_is_played_softer():
    """Fifteen pianos in unison add up in phase: at the usual level they would clip inside
    midirenderer's 16-bit output (lost for good); the render is played again softer."""
    score = Score(480)
    for k in range(15):
        track = Track(f"piano {k}", 0, False)
        for i in range(4):
            for pitch in (48, 55, 60, 64):
                track.notes.append(Note(i * 480, 400, pitch, 127))
        score.tracks.append(track)
    audio = render_rustysynth(score, packaged_soundfont(), RUSTYSYNTH_SAMPLE_RATE)
    clipped = int((np.abs(audio) >= 32_767 / 32_768).sum())
    assert clipped == 0 and rms(audio) > 0.01


def test_empty_score_is_empty_audio():
    assert rusty(Score(480)).shape == (0, 2)


def test_a_file_that_is_not_a_soundfont(tmp_path, chorale):
    fake = tmp_path / "fake.sf2"
    fake.write_bytes(b"RIFF not really a soundfont")
    with pytest.raises(RenderError, match=r"rustysynth cannot play with .*fake\.sf2.*sfbk"):
        rusty(chorale, soundfont=fake)


def test_system_sf3_files_are_passed_over_for_rustysynth(monkeypatch, tmp_path):
    sf3 = tmp_path / "default-GM.sf3"
    sf3.write_bytes(b"a SoundFont 3 file")
    monkeypatch.delenv("MIDILM_SOUNDFONT", raising=False)
    monkeypatch.setattr(soundfont_module, "SYSTEM_SOUNDFONTS", (sf3,))
    assert find_soundfont() == sf3
    assert find_soundfont(sf2_only=True) == packaged_soundfont()


# ------------------------------------------------------------------ auto: FluidSynth or not


def test_auto_plays_rustysynth_without_fluidsynth(monkeypatch, chorale, chorale_audio):
    monkeypatch.setenv(LIBRARY_ENV, "none")
    assert not fluidsynth_available()
    assert resolve_synthesizer("auto") == "rustysynth"
    assert np.array_equal(synthesize(chorale), chorale_audio)
    with pytest.raises(RenderError, match=f"{LIBRARY_ENV}=none"):
        synthesize(chorale, synthesizer="fluidsynth")


def test_auto_plays_fluidsynth_when_its_library_loads(monkeypatch):
    found = ctypes.util.find_library("fluidsynth")
    if found is None:
        pytest.skip("no FluidSynth library on this machine")
    monkeypatch.setenv(LIBRARY_ENV, found)
    assert fluidsynth_available() and resolve_synthesizer("auto") == "fluidsynth"


def test_a_named_library_that_does_not_load(monkeypatch):
    monkeypatch.setenv(LIBRARY_ENV, "/nonexistent/libfluidsynth.so.3")
    assert resolve_synthesizer("auto") == "rustysynth"
    with pytest.raises(RenderError, match="not a FluidSynth 2 library"):
        synthesize(repeated(0), synthesizer="fluidsynth")


def test_cli_says_which_synthesizer_played(monkeypatch, tmp_path):
    monkeypatch.setenv(LIBRARY_ENV, "none")
    out = tmp_path / "out.wav"
    result = CliRunner().invoke(cli, ["render", CHORALE, "--wav", str(out)])
    assert result.exit_code == 0, (result.stderr, result.exception)
    assert f"rustysynth (midirenderer {rustysynth_version()})" in result.stdout
    assert out.stat().st_size > 100_000
