"""Audio rendering through a real synthesizer (FluidSynth) and real GM soundfonts: what a
user hears matches the score (length, tempo, programs, drums, velocities), files are real
audio files, and every failure is one clear error.

The soundfont is whichever :func:`midilm.render.find_soundfont` picks on this machine (CI
installs FluidR3_GM); the tests that need the small one pretty_midi ships name it.
"""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest
import soundfile
from click.testing import CliRunner, Result
from symusic import Note, Score, Tempo, Track

import midilm
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
from midilm.errors import ConfigError, MidilmError
from midilm.render import (
    AUDIO_FORMATS,
    RenderError,
    SoundfontNotFoundError,
    UnsupportedFormatError,
    audio_bytes,
    encode_audio,
    find_soundfont,
    fluid,
    render_audio,
    synthesize,
)
from midilm.render import soundfont as soundfont_module
from midilm.render.soundfont import SOUNDFONT_ENV, packaged_soundfont
from midilm.score import save_midi


@pytest.fixture(scope="module")
def chorale_audio(chorale) -> np.ndarray:
    return synthesize(chorale)


def last_note_end_s(score: Score) -> float:
    seconds = score.to("second")
    return max(float(n.time + n.duration) for t in seconds.tracks for n in t.notes)


# ---------------------------------------------------------------------- what is heard


def test_chorale_lasts_as_long_as_the_score_and_is_loud(chorale, chorale_audio):
    audio = chorale_audio
    assert audio.dtype == np.float32 and audio.ndim == 2 and audio.shape[1] == 2
    end_s = last_note_end_s(chorale)
    length_s = len(audio) / SR
    assert end_s - 0.5 <= length_s <= end_s + 0.5 + MAX_RELEASE_S, (length_s, end_s)
    assert rms(audio) > 0.005  # well above silence (-46 dBFS): voices are sounding
    assert float(np.abs(audio).max()) <= 1.0
    # Before the first note (the pickup is shifted right) the audio is silent.
    first_onset_s = min(float(n.time) for t in chorale.to("second").tracks for n in t.notes)
    if first_onset_s > 0.1:
        assert float(np.abs(audio[: int((first_onset_s - 0.05) * SR)]).max()) < 1e-3


def test_same_score_gives_same_samples(chorale, chorale_audio):
    assert np.array_equal(synthesize(chorale), chorale_audio)


def test_drum_track_sounds_as_drums():
    kit = Score(480)
    drums = Track("Drums", 0, True)
    for i in range(8):  # kick, hat, snare, hat…
        drums.notes.append(Note(i * 480, 240, (36, 42, 38, 42)[i % 4], 110))
    kit.tracks.append(drums)
    audio = synthesize(kit)
    assert rms(audio) > 1e-3 and float(np.abs(audio).max()) > 0.02
    # A closed hi-hat is noise; the same key on a piano is F#2 (92 Hz).
    hat = synthesize(repeated(0, drum=True, pitch=42))
    piano = synthesize(repeated(0, pitch=42))
    assert spectral_centroid_hz(hat) > 4000 > 2 * spectral_centroid_hz(piano)


def test_programs_change_the_sound():
    piano, violin = synthesize(repeated(0)), synthesize(repeated(40))
    n = min(len(piano), len(violin))
    assert rms(piano[:n] - violin[:n]) > 0.5 * rms(piano)
    assert abs(spectral_centroid_hz(piano) - spectral_centroid_hz(violin)) > 200


def test_velocities_change_the_loudness():
    soft, loud = synthesize(repeated(0, velocity=40)), synthesize(repeated(0, velocity=110))
    assert rms(loud) > 2 * rms(soft)


def test_tempo_changes_are_honoured():
    steady = repeated(0)
    slower = repeated(0)
    slower.tempos.append(Tempo(0, 120))
    slower.tempos.append(Tempo(4 * 480, 60))  # the last four notes at half speed
    steady_s, slower_s = len(synthesize(steady)) / SR, len(synthesize(slower)) / SR
    assert 3.75 - 0.1 <= steady_s <= 3.75 + MAX_RELEASE_S
    assert 5.5 - 0.1 <= slower_s <= 5.5 + MAX_RELEASE_S
    assert slower_s - steady_s > 1.0


def test_packaged_soundfont_plays(chorale):
    """The soundfont in pretty_midi's wheel: audio with no system soundfont at all."""
    path = packaged_soundfont()
    assert path is not None and path.name == "TimGM6mb.sf2"
    assert rms(synthesize(chorale, soundfont=path)) > 0.005


def test_threads_share_a_soundfont(chorale):
    expected = synthesize(chorale, sample_rate=22_050)
    results: list[np.ndarray] = []
    workers = [
        threading.Thread(target=lambda: results.append(synthesize(chorale, sample_rate=22_050)))
        for _ in range(3)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len(results) == 3 and all(np.array_equal(r, expected) for r in results)


def test_empty_score_is_empty_audio():
    assert synthesize(Score(480)).shape == (0, 2)


# ---------------------------------------------------------------------- files and bytes


@pytest.mark.parametrize("ext", ["wav", "flac"])
def test_render_audio_writes_a_readable_file(chorale, tmp_path, ext):
    path = midilm.render_audio(chorale, tmp_path / f"out.{ext}", sample_rate=22_050)
    assert path == tmp_path / f"out.{ext}"
    data, rate = soundfile.read(path, dtype="float32")
    expected = synthesize(chorale, sample_rate=22_050)
    assert rate == 22_050 and data.shape == expected.shape
    assert np.abs(data - expected).max() < 1e-3  # 16-bit PCM of the same samples
    assert [p.name for p in tmp_path.iterdir()] == [f"out.{ext}"]  # no temporary left


def test_audio_bytes_is_the_file(chorale, tmp_path):
    path = render_audio(chorale, tmp_path / "out.wav", sample_rate=22_050)
    assert audio_bytes(chorale, "wav", sample_rate=22_050) == path.read_bytes()


@pytest.mark.parametrize("fmt", sorted(AUDIO_FORMATS))
def test_every_format_decodes(chorale_audio, fmt):
    if not soundfile.check_format(*AUDIO_FORMATS[fmt]):
        with pytest.raises(UnsupportedFormatError, match=fmt):
            encode_audio(chorale_audio, SR, fmt)
        return
    data, rate = soundfile.read(io.BytesIO(encode_audio(chorale_audio, SR, fmt)), dtype="float32")
    assert rate == SR and data.shape[1] == 2
    assert abs(len(data) - len(chorale_audio)) / SR < 0.2  # lossy codecs pad a little
    assert abs(rms(data) - rms(chorale_audio)) < 0.1 * rms(chorale_audio)


def test_unknown_format_fails_before_synthesis(chorale, tmp_path):
    with pytest.raises(UnsupportedFormatError, match=r"\.wav \.flac"):
        render_audio(chorale, tmp_path / "out.aiff")
    with pytest.raises(UnsupportedFormatError, match="no extension"):
        render_audio(chorale, tmp_path / "out")
    with pytest.raises(UnsupportedFormatError):
        audio_bytes(chorale, "aac")
    assert list(tmp_path.iterdir()) == []


def test_failed_render_leaves_existing_file(chorale, tmp_path):
    path = tmp_path / "out.wav"
    path.write_bytes(b"old")
    with pytest.raises(ConfigError, match="sample_rate"):
        render_audio(chorale, path, sample_rate=1000)
    assert path.read_bytes() == b"old"


def test_bad_arguments(chorale):
    with pytest.raises(TypeError, match="symusic Score"):
        synthesize("not a score")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="synthesizer"):
        synthesize(chorale, synthesizer="timidity")  # type: ignore[arg-type]


# ---------------------------------------------------------------------- soundfonts


def test_named_soundfont_must_exist(tmp_path):
    with pytest.raises(SoundfontNotFoundError, match="no such file") as info:
        find_soundfont(tmp_path / "nope.sf2")
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, MidilmError)
    assert str(tmp_path / "nope.sf2") in str(info.value)


def test_environment_variable_wins(monkeypatch, tmp_path):
    packaged = packaged_soundfont()
    monkeypatch.setenv(SOUNDFONT_ENV, str(packaged))
    assert find_soundfont() == packaged
    monkeypatch.setenv(SOUNDFONT_ENV, str(tmp_path / "gone.sf2"))
    with pytest.raises(SoundfontNotFoundError, match=SOUNDFONT_ENV):
        find_soundfont()


def test_no_soundfont_anywhere_says_how_to_install_one(monkeypatch, chorale):
    monkeypatch.delenv(SOUNDFONT_ENV, raising=False)
    monkeypatch.setattr(soundfont_module, "SYSTEM_SOUNDFONTS", ())
    monkeypatch.setattr(soundfont_module, "packaged_soundfont", lambda: None)
    with pytest.raises(SoundfontNotFoundError) as info:
        synthesize(chorale)
    message = str(info.value)
    assert "apt-get install fluid-soundfont-gm" in message
    assert "pip install pretty_midi" in message and SOUNDFONT_ENV in message


def test_a_file_that_is_not_a_soundfont(tmp_path, chorale):
    """One clear error naming the file, whichever synthesizer plays (FluidSynth where its
    library is installed, else rustysynth)."""
    fake = tmp_path / "fake.sf2"
    fake.write_bytes(b"RIFF not really a soundfont")
    with pytest.raises(RenderError, match=r"fake\.sf2") as info:
        synthesize(chorale, soundfont=fake)
    assert "soundfont" in str(info.value).lower()


def test_missing_fluidsynth_library_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(fluid, "_lib", lambda: None)  # as on a machine without libfluidsynth
    with pytest.raises(RenderError, match="apt-get install fluidsynth"):
        fluid.FluidSynth(find_soundfont())


def test_symusic_synthesizer_plays_or_says_why(chorale):
    """symusic's Prestosynth, the fallback without FluidSynth: symusic 0.6.0 cannot return
    its audio; then the error must say what to install instead."""
    try:
        audio = synthesize(chorale, synthesizer="symusic")
    except RenderError as err:
        assert "apt-get install fluidsynth" in str(err)
    else:
        assert rms(audio) > 0.005


# ---------------------------------------------------------------------- the command


def invoke(*args: object) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_error(result: Result, *fragments: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert result.stdout == ""
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_cli_renders_audio_and_picture(chorale, chorale_audio, tmp_path):
    midi = tmp_path / "in.mid"
    save_midi(chorale, midi)
    wav, png = tmp_path / "out.wav", tmp_path / "roll.png"
    result = invoke("render", midi, "--wav", wav, "--png", png, "--highlight", "3-4")
    assert result.exit_code == 0, (result.stderr, result.exception)
    lines = result.stdout.splitlines()
    assert lines[0] == f"wrote {png}"
    assert lines[1].startswith(f"wrote {wav} (") and find_soundfont().name in lines[1]
    info = soundfile.info(wav)
    assert info.samplerate == SR and info.channels == 2
    assert info.frames == len(chorale_audio)
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_cli_flac_from_a_corpus_work_with_a_soundfont(tmp_path):
    out = tmp_path / "out.flac"
    packaged = packaged_soundfont()
    result = invoke("render", CHORALE, "--audio", out, "--soundfont", packaged,
                    "--sample-rate", "22050")  # fmt: skip
    assert result.exit_code == 0, (result.stderr, result.exception)
    assert "TimGM6mb.sf2" in result.stdout
    assert soundfile.info(out).samplerate == 22_050


def test_cli_errors_are_one_line(tmp_path):
    corrupt = tmp_path / "bad.mid"
    corrupt.write_bytes(b"MThd\x00\x00\x00\x06\x00\x01\x00\x01\x01\xe0MTrk\x00\x00\x10\x00\x90")
    assert_error(invoke("render", corrupt, "--wav", tmp_path / "o.wav"), "bad.mid")
    assert_error(invoke("render", tmp_path / "missing.mid", "--png", tmp_path / "o.png"),
                 "missing.mid")  # fmt: skip
    assert_error(invoke("render", CHORALE), "nothing to render")
    assert_error(invoke("render", CHORALE, "--wav", tmp_path / "o.aiff"), ".aiff")
    assert_error(invoke("render", CHORALE, "--png", tmp_path / "o.jpg"), ".png .svg")
    assert_error(invoke("render", CHORALE, "--wav", tmp_path / "o.wav", "--soundfont",
                        tmp_path / "none.sf2"), "none.sf2", "no such file")  # fmt: skip
    assert_error(invoke("render", CHORALE, "--png", tmp_path / "o.png", "--highlight", "0-2"),
                 "--highlight", "numbered from 1")  # fmt: skip
    assert_error(invoke("render", CHORALE, "--png", tmp_path / "o.png", "--highlight", "99"),
                 "bar 99 counting from 1", "out of range")  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.mid"]
