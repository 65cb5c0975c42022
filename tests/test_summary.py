"""describe / format_info (what `midilm info` prints), checked against music21's own counts
of the same chorales."""

from __future__ import annotations

from fractions import Fraction

import pytest
import symusic
from music21 import corpus, stream

from midilm.score import ScoreInfo, bar_grid, describe, format_info, import_music21


def _music21_parts(work: str):
    m21 = corpus.parse(work)
    return m21, [p.stripTies(matchByPitch=True) for p in m21.parts]


@pytest.mark.parametrize("work", ["bach/bwv66.6", "bach/bwv304", "bach/bwv1.6"])
def test_tracks_notes_and_bars_agree_with_music21(work):
    m21, parts = _music21_parts(work)
    info = describe(import_music21(f"music21:{work}"))
    assert isinstance(info, ScoreInfo)
    assert [t.name for t in info.tracks] == [p.partName for p in m21.parts]
    for track, part in zip(info.tracks, parts, strict=True):
        midi = [p.midi for n in part.flatten().notes for p in n.pitches]
        assert track.note_count == len(midi)
        assert (track.lowest_pitch, track.highest_pitch) == (min(midi), max(midi))
    assert info.note_count == sum(t.note_count for t in info.tracks)
    # none of these has repeat signs, so MIDI bars are music21's measures
    assert info.bar_count == len(m21.parts[0].getElementsByClass(stream.Measure))
    assert info.bar_note is None


def test_chorale_meter_tempo_and_length():
    m21, _ = _music21_parts("bach/bwv66.6")
    info = describe(import_music21("music21:bach/bwv66.6"))
    mark = m21.metronomeMarkBoundaries()[0][2].getQuarterBPM()
    assert [(m.bar, str(m)) for m in info.meters] == [(1, "4/4")]
    assert [(t.bar, t.bpm) for t in info.tempos] == [(1, pytest.approx(mark))]
    pickup = m21.parts[0].getElementsByClass(stream.Measure).first().paddingLeft
    seconds = (m21.highestTime + pickup) * 60 / mark  # the pickup bar is filled at the start
    assert info.duration_s == pytest.approx(seconds)
    assert info.ticks_per_quarter == 10080
    assert {t.instrument for t in info.tracks} == {"choir_aahs"}


def test_meter_changes_are_reported_at_music21_measure_numbers():
    m21 = corpus.parse("bach/bwv304")
    score = import_music21("music21:bach/bwv304")
    info = describe(score)
    measures = list(m21.parts[0].getElementsByClass(stream.Measure))
    tpq = score.ticks_per_quarter
    start_of = {
        int(Fraction(m21.parts[0].elementOffset(m)) * tpq): i + 1 for i, m in enumerate(measures)
    }
    for meter in info.meters:
        assert start_of[meter.time_ticks] == meter.bar
        assert bar_grid(score)[meter.bar - 1].start_ticks == meter.time_ticks
    assert {str(m) for m in info.meters} >= {"4/4", "3/4"}


def _score_with(meters, tempos, notes, tpq=480, drum=False):
    score = symusic.Score(tpq)
    for tick, num, den in meters:
        score.time_signatures.append(symusic.TimeSignature(tick, num, den))
    for tick, qpm in tempos:
        score.tempos.append(symusic.Tempo(tick, qpm))
    track = symusic.Track(name="Kit" if drum else "Keys", program=0, is_drum=drum)
    for time, duration, pitch in notes:
        track.notes.append(symusic.Note(time, duration, pitch, 90))
    score.tracks.append(track)
    return score


def test_bars_and_tempo_changes_are_numbered_from_one():
    # 2 bars of 4/4 then 3/4; a tempo change at the start of bar 3 and one after the end
    score = _score_with(
        [(0, 4, 4), (3840, 3, 4)],
        [(0, 120), (3840, 90), (3840 + 1440 * 3, 60)],
        [(0, 480, 60), (3840 + 1440, 480, 72)],
    )
    info = describe(score)
    assert info.bar_count == 4  # the last note ends in bar 4
    assert [(m.bar, str(m)) for m in info.meters] == [(1, "4/4"), (3, "3/4")]
    assert [(t.bar, t.bpm) for t in info.tempos] == [(1, 120), (3, 90), (6, 60)]
    # 8 quarters at 120 bpm, then 4 at 90 up to the end of the last note (not the tempo
    # event after it)
    assert info.duration_s == pytest.approx(8 * 60 / 120 + 4 * 60 / 90)


def test_meter_change_no_grid_can_hold_falls_back_to_downbeats():
    score = _score_with([(0, 4, 4), (1, 3, 4)], [(0, 120)], [(0, 480, 60), (4000, 480, 62)])
    info = describe(score)  # does not raise
    assert info.bar_note is not None and "downbeats" in info.bar_note
    assert info.bar_count >= 1
    assert info.note_count == 2


def test_drum_tracks_and_other_time_units():
    score = _score_with([], [], [(0, 240, 36), (480, 240, 38)], drum=True)
    info = describe(score)
    (track,) = info.tracks
    assert (track.instrument, track.is_drum) == ("drums", True)
    assert describe(score.to("quarter")).note_count == 2
    assert info.meters == () and info.tempos == ()


def test_format_info_is_readable():
    info = describe(import_music21("music21:bach/bwv66.6"))
    text = format_info(info)
    lines = text.splitlines()
    assert lines[0].startswith("length")
    assert f"{info.bar_count} bars" in text and f"{info.note_count} notes" in text
    assert "4/4 (bar 1)" in text and "96 bpm (bar 1)" in text
    for name in ("Soprano", "Alto", "Tenor", "Bass"):
        (line,) = [ln for ln in lines if f" {name} " in ln]
        assert "choir_aahs (52)" in line
    assert "E4–E5" in text  # the soprano's range
    assert format_info(describe(_score_with([], [], [(0, 1, 60)], drum=True))).count("drums") == 1
