"""load_midi / save_midi: what users and dataset preparation rely on.

Malformed inputs are built byte by byte here, so each test shows exactly what is wrong with
the file; the fuzz tests check that nothing but InvalidMidiError (and no crash of the C++
parser) ever comes out of load_midi.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from symusic.core import ScoreTick

from midilm.errors import InvalidMidiError
from midilm.score import MAX_MIDI_BYTES, load_midi, save_midi

# --------------------------------------------------------------------------- byte builders


def vlq(value: int) -> bytes:
    """A MIDI variable-length quantity."""
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def header(fmt: int = 0, n_tracks: int = 1, division: int = 480, length: int = 6) -> bytes:
    return b"MThd" + struct.pack(">IHHH", length, fmt, n_tracks, division)


def chunk(payload: bytes, chunk_id: bytes = b"MTrk", declared: int | None = None) -> bytes:
    length = len(payload) if declared is None else declared
    return chunk_id + struct.pack(">I", length) + payload


END_OF_TRACK = b"\x00\xff\x2f\x00"
TEMPO_120 = b"\x00\xff\x51\x03\x07\xa1\x20"  # 500,000 µs per quarter
METER_3_4 = b"\x00\xff\x58\x04\x03\x02\x18\x08"


def note(pitch: int = 60, velocity: int = 100, duration: int = 480, delta: int = 0) -> bytes:
    """Note-on after ``delta`` ticks, note-off ``duration`` ticks later (channel 1)."""
    return vlq(delta) + bytes([0x90, pitch, velocity]) + vlq(duration) + bytes([0x80, pitch, 64])


ONE_NOTE_TRACK = chunk(TEMPO_120 + METER_3_4 + note() + END_OF_TRACK)
ONE_NOTE_FILE = header() + ONE_NOTE_TRACK


# --------------------------------------------------------------------------- valid input


def test_loads_a_file_built_byte_by_byte(tmp_path):
    path = tmp_path / "one.mid"
    path.write_bytes(ONE_NOTE_FILE)
    score = load_midi(path)
    assert isinstance(score, ScoreTick)
    assert score.ticks_per_quarter == 480
    (track,) = score.tracks
    (n,) = track.notes
    assert (n.time, n.duration, n.pitch, n.velocity) == (0, 480, 60, 100)
    assert [(t.time, t.mspq) for t in score.tempos] == [(0, 500_000)]
    assert [(m.numerator, m.denominator) for m in score.time_signatures] == [(3, 4)]


def test_loads_bytes_and_str_paths_alike(tmp_path):
    path = tmp_path / "one.midi"
    path.write_bytes(ONE_NOTE_FILE)
    assert load_midi(str(path)).tracks[0].notes == load_midi(ONE_NOTE_FILE).tracks[0].notes
    assert load_midi(bytearray(ONE_NOTE_FILE)).tracks[0].notes == load_midi(path).tracks[0].notes


def test_karaoke_kar_file_is_ordinary_midi(tmp_path):
    text = b"\x00\xff\x01\x13@KMIDI KARAOKE FILE"
    lyric = b"\x00\xff\x05\x05Hello"
    track = chunk(text + TEMPO_120 + lyric + note(64) + END_OF_TRACK)
    path = tmp_path / "song.kar"
    path.write_bytes(header() + track)
    score = load_midi(path)
    assert [n.pitch for t in score.tracks for n in t.notes] == [64]
    # symusic keeps channel-less lyrics in a track of their own
    assert [lyr.text for t in score.tracks for lyr in t.lyrics] == ["Hello"]


def test_riff_wrapped_rmid_is_unwrapped(tmp_path):
    data = ONE_NOTE_FILE + b"\x00" * (len(ONE_NOTE_FILE) & 1)
    body = b"RMID" + b"data" + struct.pack("<I", len(ONE_NOTE_FILE)) + data
    path = tmp_path / "old.rmi"
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    assert load_midi(path).tracks[0].notes == load_midi(ONE_NOTE_FILE).tracks[0].notes


def test_foreign_chunks_and_trailing_bytes_are_ignored():
    alien = chunk(b"hello", chunk_id=b"XFIH")
    score = load_midi(header() + alien + ONE_NOTE_TRACK + b"\x00\x00trailing junk")
    assert len(score.tracks[0].notes) == 1


# --------------------------------------------------------------------------- bad input

MALFORMED = {
    "empty": (b"", "empty"),
    "text_named_mid": (b"These are my notes: C D E F G\n", "not_midi"),
    "wav_file": (b"RIFF\x24\x00\x00\x00WAVEfmt ", "not_midi"),
    "header_cut_in_magic": (b"MTh", "corrupt"),
    "header_truncated": (b"MThd\x00\x00\x00\x06\x00\x00\x00", "corrupt"),
    "header_length_2": (header(length=2) + ONE_NOTE_TRACK, "corrupt"),
    "header_length_past_end": (header(length=4000) + ONE_NOTE_TRACK, "corrupt"),
    "unknown_format": (header(fmt=7) + ONE_NOTE_TRACK, "corrupt"),
    "chunk_length_too_long": (header() + chunk(note() + END_OF_TRACK, declared=1000), "corrupt"),
    "chunk_length_too_short": (
        header(n_tracks=2) + chunk(note() + END_OF_TRACK, declared=5) + ONE_NOTE_TRACK,
        "corrupt",
    ),
    "huge_declared_chunk": (header() + chunk(note(), declared=0xFFFFFFFF), "corrupt"),
    "track_header_truncated": (header() + b"MTrk\x00\x00", "corrupt"),
    "missing_tracks": (header(fmt=1, n_tracks=3) + ONE_NOTE_TRACK, "corrupt"),
    "event_runs_past_chunk": (header() + chunk(b"\x00\xff\x51\x7f\x07"), "corrupt"),
    "sysex_runs_past_chunk": (header() + chunk(b"\x00\xf0\x7f\x01\x02"), "corrupt"),
    "smpte_division": (header(division=0xE728) + ONE_NOTE_TRACK, "unsupported"),
    "zero_ticks_per_quarter": (header(division=0) + ONE_NOTE_TRACK, "unsupported"),
    "too_many_tracks": (header(fmt=1, n_tracks=5000) + ONE_NOTE_TRACK, "too_large"),
    "no_tracks": (header(n_tracks=0), "no_notes"),
    "tempo_only": (header() + chunk(TEMPO_120 + END_OF_TRACK), "no_notes"),
    "note_on_never_released": (header() + chunk(b"\x00\x90\x3c\x64" + END_OF_TRACK), "no_notes"),
    # 2,000 quarters at the slowest tempo (16.8 s a quarter): over nine hours
    "longer_than_six_hours": (
        header(division=1)
        + chunk(b"\x00\xff\x51\x03\xff\xff\xff" + note(duration=2000) + END_OF_TRACK),
        "too_large",
    ),
}


@pytest.mark.parametrize(("data", "reason"), MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_file_raises_with_reason_and_file_name(tmp_path, data, reason):
    path = tmp_path / "broken_song.mid"
    path.write_bytes(data)
    with pytest.raises(InvalidMidiError) as info:
        load_midi(path)
    assert info.value.reason == reason
    assert info.value.source == str(path)
    assert "broken_song.mid" in str(info.value)
    assert isinstance(info.value, ValueError)  # what a Python user would catch


@pytest.mark.parametrize(("data", "reason"), MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_bytes_name_the_source(data, reason):
    with pytest.raises(InvalidMidiError) as info:
        load_midi(data, name="upload #3")
    assert info.value.reason == reason
    assert str(info.value).startswith("upload #3: ")


def test_bytes_without_a_name_are_called_bytes():
    with pytest.raises(InvalidMidiError, match=r"^<bytes>: "):
        load_midi(b"")


def test_missing_file(tmp_path):
    with pytest.raises(InvalidMidiError) as info:
        load_midi(tmp_path / "nowhere.mid")
    assert info.value.reason == "missing"
    assert "nowhere.mid" in str(info.value)


def test_folder_instead_of_file(tmp_path):
    with pytest.raises(InvalidMidiError) as info:
        load_midi(tmp_path)
    assert info.value.reason == "missing"


def test_file_over_the_byte_cap_is_not_read(tmp_path):
    path = tmp_path / "big.mid"
    path.write_bytes(ONE_NOTE_FILE)
    with pytest.raises(InvalidMidiError) as info:
        load_midi(path, max_bytes=len(ONE_NOTE_FILE) - 1)
    assert info.value.reason == "too_large"
    assert "big.mid" in str(info.value)
    assert load_midi(path, max_bytes=len(ONE_NOTE_FILE)).tracks  # exactly at the cap is fine
    assert MAX_MIDI_BYTES == 32 * 1024 * 1024


def test_wrong_kind_of_source_is_a_type_error():
    with pytest.raises(TypeError, match="path or bytes"):
        load_midi(42)


# --------------------------------------------------------------------------- fuzzing

FUZZ = settings(max_examples=70, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _load_or_reject(data: bytes) -> None:
    """Loading either gives a score with notes or raises InvalidMidiError, nothing else."""
    try:
        score = load_midi(data)
    except InvalidMidiError as err:
        assert err.reason in {
            "corrupt",
            "no_notes",
            "not_midi",
            "empty",
            "too_large",
            "unsupported",
        }
    else:
        assert sum(len(t.notes) for t in score.tracks) > 0


@FUZZ
@given(tail=st.binary(max_size=400), fmt=st.integers(0, 3), n_tracks=st.integers(0, 4))
def test_fuzz_random_bytes_after_a_valid_header(tail, fmt, n_tracks):
    _load_or_reject(header(fmt=fmt, n_tracks=n_tracks) + tail)


@FUZZ
@given(payload=st.binary(max_size=300))
def test_fuzz_random_events_inside_a_well_formed_chunk(payload):
    _load_or_reject(header() + chunk(payload))


@pytest.fixture(scope="module")
def real_midi_bytes(bach_scores) -> bytes:
    return bytes(bach_scores[0][1].dumps_midi())


@FUZZ
@given(data=st.data())
def test_fuzz_truncated_and_flipped_real_file(real_midi_bytes, data):
    raw = bytearray(real_midi_bytes)
    cut = data.draw(st.integers(0, len(raw)), label="cut")
    flips = data.draw(
        st.lists(st.tuples(st.integers(0, len(raw) - 1), st.integers(0, 255)), max_size=8),
        label="flips",
    )
    for index, value in flips:
        raw[index] = value
    _load_or_reject(bytes(raw[:cut]))


def test_every_truncation_of_a_real_file_header_is_rejected(real_midi_bytes):
    for cut in range(40):
        with pytest.raises(InvalidMidiError) as info:
            load_midi(real_midi_bytes[:cut])
        assert info.value.reason in {"empty", "corrupt"}


# --------------------------------------------------------------------------- save


def _notes(track) -> np.ndarray:
    a = track.notes.numpy()
    return np.stack([a["time"], a["duration"], a["pitch"], a["velocity"]], axis=1)


def test_save_then_load_keeps_every_note_tempo_and_meter(tmp_path, bach_scores, other_meter_scores):
    for spec, score in [*bach_scores[:8], *other_meter_scores[::6]]:
        path = tmp_path / "round_trip.mid"
        save_midi(score, path)
        back = load_midi(path)
        assert back.ticks_per_quarter == score.ticks_per_quarter, spec
        assert len(back.tracks) == len(score.tracks), spec
        for a, b in zip(score.tracks, back.tracks, strict=True):
            assert (b.name, b.program, b.is_drum) == (a.name, a.program, a.is_drum), spec
            np.testing.assert_array_equal(_notes(b), _notes(a), err_msg=spec)
        assert [(t.time, t.mspq) for t in back.tempos] == [(t.time, t.mspq) for t in score.tempos]
        assert [(m.time, m.numerator, m.denominator) for m in back.time_signatures] == [
            (m.time, m.numerator, m.denominator) for m in score.time_signatures
        ], spec


def test_save_creates_parent_folders(tmp_path):
    score = load_midi(ONE_NOTE_FILE)
    path = tmp_path / "a" / "b" / "out.mid"
    save_midi(score, path)
    assert load_midi(path).tracks[0].notes == score.tracks[0].notes
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.mid"]


class _FailsWhileWriting:
    """Stands in for a score whose serialization fails halfway."""

    def dumps_midi(self) -> bytes:
        raise RuntimeError("disk on fire")


def test_failed_save_keeps_the_old_file_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "keep.mid"
    path.write_bytes(ONE_NOTE_FILE)
    with pytest.raises(RuntimeError, match="disk on fire"):
        save_midi(_FailsWhileWriting(), path)
    assert path.read_bytes() == ONE_NOTE_FILE
    assert [p.name for p in tmp_path.iterdir()] == ["keep.mid"]


def test_save_to_a_folder_fails_cleanly(tmp_path):
    folder = tmp_path / "song.mid"
    folder.mkdir()
    with pytest.raises(IsADirectoryError):
        save_midi(load_midi(ONE_NOTE_FILE), folder)
    assert list(folder.iterdir()) == []
    assert [p.name for p in tmp_path.iterdir()] == ["song.mid"]


def test_save_rejects_what_is_not_a_score(tmp_path):
    with pytest.raises(TypeError, match="symusic score"):
        save_midi("not a score", tmp_path / "x.mid")
    assert list(tmp_path.iterdir()) == []
