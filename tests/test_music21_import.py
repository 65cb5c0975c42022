"""The music21 importer and load_score, cross-checked against music21's own reading of the
same works (measure numbers, offsets, pitches), never against hard-coded lists."""

from __future__ import annotations

import shutil
from fractions import Fraction
from pathlib import Path

import pytest
from music21 import corpus, instrument, meter, note, repeat, stream

from midilm.errors import InvalidMidiError
from midilm.score import (
    Meter,
    bar_grid,
    import_music21,
    iter_music21,
    load_midi,
    load_score,
    music21_specs,
    save_midi,
)
from midilm.score.music21_import import CONVERSION_REVISION, stream_to_score


def _corpus_file(relative: str) -> Path:
    from music21 import common

    return Path(common.getCorpusFilePath()) / relative


def _onsets(score) -> list[list[tuple[int, int, int]]]:
    """Per track, the sorted (onset ticks, pitch, duration ticks) of its notes."""
    return sorted_tracks([[(n.time, n.pitch, n.duration) for n in t.notes] for t in score.tracks])


def sorted_tracks(tracks):
    return [sorted(t) for t in tracks]


# --------------------------------------------------------------------------- bwv66.6


@pytest.fixture(scope="module")
def bwv66_6():
    return import_music21("music21:bach/bwv66.6")


def test_chorale_has_one_named_choir_track_per_voice(bwv66_6):
    assert [t.name for t in bwv66_6.tracks] == ["Soprano", "Alto", "Tenor", "Bass"]
    assert {(t.program, t.is_drum) for t in bwv66_6.tracks} == {(52, False)}


def test_chorale_keeps_music21_meter_and_tempo(bwv66_6):
    m21 = corpus.parse("bach/bwv66.6")
    ts = m21.recurse().getElementsByClass(meter.TimeSignature).first()
    assert [(m.time, m.numerator, m.denominator) for m in bwv66_6.time_signatures] == [
        (0, ts.numerator, ts.denominator)
    ]
    (_, _, mark), *_ = m21.metronomeMarkBoundaries()
    assert [t.time for t in bwv66_6.tempos] == [0]
    assert bwv66_6.tempos[0].qpm == pytest.approx(mark.getQuarterBPM(), rel=1e-6)


def _music21_notes(m21_score, tpq) -> list[list[tuple[int, int, int]]]:
    """(onset, pitch, duration) per part on music21's own timeline (repeats played out, as
    in MIDI, or once through where music21 cannot play them out), moved right by the pickup's
    left padding."""
    try:
        expanded = m21_score.expandRepeats()
    except repeat.ExpanderException:
        expanded = m21_score
    first = expanded.parts[0].getElementsByClass(stream.Measure).first()
    shift = Fraction(first.paddingLeft)
    tracks = []
    for m21_part in expanded.parts:
        part = m21_part.stripTies(matchByPitch=True)
        notes = []
        for measure in part.getElementsByClass(stream.Measure):
            for element in measure.flatten().notes:
                assert element.measureNumber == measure.number
                if element.duration.isGrace:
                    continue  # no time in the score: the importer leaves them out
                onset = shift + Fraction(part.elementOffset(measure)) + Fraction(element.offset)
                length = Fraction(element.quarterLength)
                notes += [(int(onset * tpq), p.midi, int(length * tpq)) for p in element.pitches]
        tracks.append(notes)
    return sorted_tracks(tracks)


# bwv66.6 and bwv1.6 open with a one-beat pickup; bwv304 and bwv362 change from 4/4 to 3/4
# (bwv304 through a one-beat bar, the pickup of its 3/4 section); bwv11.6 (3/4) and bwv362
# have repeat signs, which music21 plays out in MIDI, with a bar split across the repeat.
CROSS_CHECKED = ["bach/bwv66.6", "bach/bwv1.6", "bach/bwv304", "bach/bwv362", "bach/bwv11.6"]


@pytest.mark.parametrize("work", CROSS_CHECKED)
def test_notes_sit_where_music21_puts_them(work):
    m21 = corpus.parse(work)
    score = import_music21(f"music21:{work}")
    assert _onsets(score) == _music21_notes(m21, score.ticks_per_quarter)


@pytest.mark.parametrize("work", CROSS_CHECKED)
def test_every_full_measure_of_music21_is_a_bar_of_the_grid(work):
    """Downbeats fall on the bar grid: each measure music21 reads as complete starts a bar
    of its meter, and the notes' offsets in it are music21's offsets in the measure."""
    m21 = corpus.parse(work).expandRepeats()
    score = import_music21(f"music21:{work}")
    tpq = score.ticks_per_quarter
    bars = {bar.start_ticks: bar for bar in bar_grid(score)}
    plain = list(m21.parts[0].getElementsByClass(stream.Measure))
    part = m21.parts[0].stripTies(matchByPitch=True)  # tied notes as MIDI plays them
    measures = list(part.getElementsByClass(stream.Measure))
    shift = Fraction(plain[0].paddingLeft)
    onsets = {n.time for n in score.tracks[0].notes}
    checked = 0
    ts = None
    for layout, measure in zip(plain, measures, strict=True):
        ts = layout.timeSignature or ts
        if layout.duration.quarterLength != layout.barDuration.quarterLength:
            continue  # a pickup or a bar cut by a repeat
        checked += 1
        start = int((shift + Fraction(part.elementOffset(measure))) * tpq)
        assert start in bars, (measure.number, start)
        assert bars[start].meter == Meter(ts.numerator, ts.denominator)
        for n in measure.flatten().notes:
            assert start + int(Fraction(n.offset) * tpq) in onsets
    assert checked >= 0.8 * len(measures)


def test_pickup_is_shifted_onto_the_bar_grid(bwv66_6):
    m21 = corpus.parse("bach/bwv66.6")
    pickup = m21.parts[0].getElementsByClass(stream.Measure).first()
    assert pickup.paddingLeft > 0  # music21 reads the first bar as a pickup
    bars = bar_grid(bwv66_6)
    tpq = bwv66_6.ticks_per_quarter
    first_onset = min(n.time for t in bwv66_6.tracks for n in t.notes)
    # the pickup fills the end of bar 1; the next measure starts exactly on bar 2
    assert first_onset == bars[1].start_ticks - int(Fraction(pickup.quarterLength) * tpq)
    assert bars[0].meter == Meter(4, 4)
    assert [(m.time, m.numerator) for m in bwv66_6.time_signatures] == [(0, 4)]


# String quartet movements with grace notes (30 in haydn/opus74no1/movement3), which music21
# writes as zero-length MIDI notes that once left a note-on open and stretched every later
# note of that pitch over many bars; repeats are played out as in the chorales.
QUARTETS = ["haydn/opus74no1/movement3", "haydn/opus1no1/movement2", "mozart/k458/movement2"]


@pytest.mark.parametrize("work", QUARTETS)
def test_quartet_notes_sit_where_music21_puts_them(work):
    m21 = corpus.parse(work)
    assert any(n.duration.isGrace for n in m21.recurse().notes)
    score = import_music21(f"music21:{work}")
    assert _onsets(score) == _music21_notes(m21, score.ticks_per_quarter)


@pytest.mark.parametrize("work", QUARTETS)
def test_quartet_notes_are_no_longer_than_music21_says(work):
    """No note lasts over two bars unless music21's own tied-through note does."""
    m21 = corpus.parse(work)
    score = import_music21(f"music21:{work}")
    tpq = score.ticks_per_quarter
    two_bars = max(8 * tpq * m.numerator // m.denominator for m in score.time_signatures)
    for track, m21_part in zip(score.tracks, m21.parts, strict=True):
        longest = max(
            n.quarterLength for n in m21_part.stripTies(matchByPitch=True).flatten().notes
        )
        limit = max(two_bars, int(Fraction(longest) * tpq))
        assert max(n.duration for n in track.notes) <= limit, track.name


def test_grace_notes_are_dropped_and_leave_later_notes_alone():
    part = stream.Part()
    part.partName = "Violin"
    measure = stream.Measure(number=1)
    measure.append(meter.TimeSignature("4/4"))
    measure.append(note.Note(60, quarterLength=1))
    measure.append(note.Note(67).getGrace())
    measure.append(note.Note(65, quarterLength=1))
    measure.append(note.Note(67, quarterLength=1))
    measure.append(note.Note(67, quarterLength=1))
    part.append(measure)
    score = stream_to_score(part, "<test>")
    tpq = score.ticks_per_quarter
    assert [(n.time // tpq, n.pitch, n.duration // tpq) for n in score.tracks[0].notes] == [
        (0, 60, 1),
        (1, 65, 1),
        (2, 67, 1),
        (3, 67, 1),
    ]


@pytest.mark.parametrize(
    ("work", "instrument_class"),
    [
        ("haydn/opus74no1/movement1", instrument.Piano),  # a piano sound on each string part
        ("mozart/k155/movement3", instrument.StringInstrument),  # "String Ensemble 1"
    ],
)
def test_string_parts_with_a_generic_sound_get_string_programs(work, instrument_class):
    m21 = corpus.parse(work)
    assert all(type(p.getInstrument()) is instrument_class for p in m21.parts)
    # the opening bars are enough: programs come from the parts' instruments and names
    score = stream_to_score(m21.measures(1, 4), work)
    programs = {"violin": 40, "viola": 41, "cello": 42}
    expected = [
        next(program for key, program in programs.items() if key in p.partName.lower())
        for p in m21.parts
    ]
    assert [t.program for t in score.tracks] == expected == [40, 40, 41, 42]


def test_meter_change_lands_on_a_bar_line():
    score = import_music21("music21:bach/bwv362")
    bars = bar_grid(score)
    changes = [
        (i, bar.meter) for i, bar in enumerate(bars) if i == 0 or bar.meter != bars[i - 1].meter
    ]
    assert [str(m) for _, m in changes] == ["4/4", "3/4"]
    assert [m.time for m in score.time_signatures] == [bars[i].start_ticks for i, _ in changes]


# --------------------------------------------------------------------------- conversion rules


def _part(name: str | None, inst=None, pitches=(60, 62, 64, 65)) -> stream.Part:
    part = stream.Part()
    if name is not None:
        part.partName = name
    if inst is not None:
        part.insert(0, inst)
    measure = stream.Measure(number=1)
    measure.append(meter.TimeSignature("4/4"))
    for pitch in pitches:
        measure.append(note.Note(pitch, quarterLength=1))
    part.append(measure)
    return part


def test_programs_follow_instrument_then_part_name():
    score = stream.Score()
    oboe_named_flute = instrument.Oboe()
    oboe_named_flute.partName = "Flute?"  # music21's midiProgram for an oboe (68) wins
    for part in [
        _part("Violoncello"),
        _part("Contrabass"),
        _part("Viola da braccio"),
        _part("Violin I"),
        _part("Tenor"),
        _part("Flute 1"),
        _part("Organo", instrument.Organ()),
        _part("Melody", oboe_named_flute),
        _part("Violin 2", instrument.Piano()),  # piano: the default sound; the name wins
        _part("Cello", instrument.StringInstrument()),  # a family class: the name wins
        _part("Piano", instrument.Piano()),
        _part("Soprano", instrument.Harpsichord()),  # a specific instrument wins
        _part("Kazoo"),
        _part(None),
    ]:
        score.insert(0, part)
    converted = stream_to_score(score, "<test>")
    assert [(t.name, t.program) for t in converted.tracks] == [
        ("Violoncello", 42),
        ("Contrabass", 43),
        ("Viola da braccio", 41),
        ("Violin I", 40),
        ("Tenor", 52),
        ("Flute 1", 73),
        ("Organo", instrument.Organ().midiProgram),
        ("Melody", 68),
        ("Violin 2", 40),
        ("Cello", 42),
        ("Piano", 0),
        ("Soprano", instrument.Harpsichord().midiProgram),
        ("Kazoo", 0),
        ("Part 14", 0),
    ]
    assert not any(t.is_drum for t in converted.tracks)


def test_parts_without_notes_are_dropped():
    score = stream.Score()
    score.insert(0, _part("Soprano"))
    rests = stream.Part()
    rests.partName = "Silent"
    measure = stream.Measure(number=1)
    measure.append(note.Rest(quarterLength=4))
    rests.append(measure)
    score.insert(0, rests)
    assert [t.name for t in stream_to_score(score, "<test>").tracks] == ["Soprano"]


def test_short_bar_inside_a_piece_becomes_its_own_meter():
    part = stream.Part()
    part.partName = "Voice"
    layout = [("3/4", 3), (None, 3), (None, 1), (None, 3), (None, 3)]  # bar 3 is one beat
    for number, (sig, quarters) in enumerate(layout, start=1):
        measure = stream.Measure(number=number)
        if sig:
            measure.append(meter.TimeSignature(sig))
        measure.append(note.Note(60 + number, quarterLength=quarters))
        part.append(measure)
    score = stream_to_score(part, "<test>")
    tpq = score.ticks_per_quarter
    assert [(m.time // tpq, m.numerator, m.denominator) for m in score.time_signatures] == [
        (0, 3, 4),
        (6, 1, 4),
        (7, 3, 4),
    ]
    bars = bar_grid(score)
    onsets = [n.time for n in score.tracks[0].notes]
    assert onsets == [bar.start_ticks for bar in bars]


# --------------------------------------------------------------------------- specs and cache


def test_bach_specs_are_sorted_unique_and_exclude_duplicate_encodings():
    specs = music21_specs("music21:bach")
    assert specs == sorted(specs)
    assert len(specs) == len(set(specs)) > 300
    assert "music21:bach/bwv66.6" in specs
    # bwv277 exists as .mxl and .krn: listed once, the .krn still loads by its full name
    assert "music21:bach/bwv277" in specs
    assert not any(s.endswith(".krn") for s in specs)


def test_opus_files_list_each_tune_by_its_x_number():
    specs = music21_specs("music21:essenFolksong/testd")
    text = _corpus_file("essenFolksong/testd.abc").read_text("latin-1")
    numbers = [line[2:].strip() for line in text.splitlines() if line.startswith("X:")]
    assert specs == [f"music21:essenFolksong/testd#{n}" for n in numbers]
    han1 = music21_specs("music21:essenFolksong")
    assert han1.index("music21:essenFolksong/han1#9") < han1.index("music21:essenFolksong/han1#10")
    assert all("#" not in s for s in music21_specs("music21:ryansMammoth")[:50])


def test_iter_music21_yields_every_tune_of_an_opus_in_spec_order():
    pairs = list(iter_music21("music21:essenFolksong/testd"))
    assert [spec for spec, _ in pairs] == music21_specs("music21:essenFolksong/testd")
    assert all(sum(len(t.notes) for t in score.tracks) > 0 for _, score in pairs)
    spec, score = pairs[2]
    assert _onsets(score) == _onsets(import_music21(spec))


def test_conversion_is_cached_as_plain_midi(tmp_path, monkeypatch):
    import music21

    monkeypatch.setenv("MIDILM_CACHE_DIR", str(tmp_path))
    first = import_music21("music21:essenFolksong/testd#2")
    version = f"{music21.__version__}-r{CONVERSION_REVISION}"
    cached = tmp_path / "music21" / version / "essenFolksong" / "testd#2.mid"
    assert cached.is_file()
    assert _onsets(load_midi(cached)) == _onsets(first)
    # a later call reads the cache: prove it by replacing the cached file
    save_midi(load_midi(cached).shift_time(480), cached)
    again = import_music21("music21:essenFolksong/testd#2")
    assert _onsets(again) == [[(t + 480, p, d) for t, p, d in trk] for trk in _onsets(first)]


def test_converted_and_cached_scores_are_identical(tmp_path, monkeypatch):
    monkeypatch.setenv("MIDILM_CACHE_DIR", str(tmp_path))
    fresh = import_music21("music21:bach/bwv1.6")
    cached = import_music21("music21:bach/bwv1.6")
    assert [(t.name, t.program) for t in cached.tracks] == [
        (t.name, t.program) for t in fresh.tracks
    ]
    assert _onsets(cached) == _onsets(fresh)
    assert list(cached.time_signatures) == list(fresh.time_signatures)
    assert list(cached.tempos) == list(fresh.tempos)


BAD_SPECS = {
    "no_such_work": ("music21:bach/bwv0.0", "missing"),
    "no_such_tune": ("music21:essenFolksong/testd#9999", "missing"),
    "opus_without_number": ("music21:essenFolksong/testd", "unsupported"),
    "collection": ("music21:bach", "unsupported"),
    "not_a_spec": ("bach/bwv66.6", "unsupported"),
    "escapes_corpus": ("music21:../../etc/passwd", "unsupported"),
    "bad_number": ("music21:essenFolksong/testd#two", "unsupported"),
}


@pytest.mark.parametrize(("spec", "reason"), BAD_SPECS.values(), ids=BAD_SPECS.keys())
def test_bad_specs_raise_invalid_midi_error(spec, reason):
    with pytest.raises(InvalidMidiError) as info:
        import_music21(spec)
    assert info.value.reason == reason
    assert spec in str(info.value)


def test_explicit_extension_picks_that_encoding():
    krn = import_music21("music21:bach/bwv277.krn")
    mxl = import_music21("music21:bach/bwv277")
    assert len(krn.tracks) == len(mxl.tracks) == 4
    assert sum(len(t.notes) for t in krn.tracks) > 0


# --------------------------------------------------------------------------- load_score


def test_load_score_reads_musicxml_like_the_importer(tmp_path):
    path = tmp_path / "chorale.mxl"
    shutil.copy(_corpus_file("bach/bwv66.6.mxl"), path)
    from_file = load_score(path)
    assert _onsets(from_file) == _onsets(import_music21("music21:bach/bwv66.6"))
    assert [t.name for t in from_file.tracks] == ["Soprano", "Alto", "Tenor", "Bass"]


def test_load_score_reads_kern_and_abc(tmp_path):
    krn = tmp_path / "chorale.krn"
    shutil.copy(_corpus_file("bach/bwv277.krn"), krn)
    assert _onsets(load_score(krn)) == _onsets(import_music21("music21:bach/bwv277.krn"))
    abc = tmp_path / "reel.abc"
    shutil.copy(_corpus_file("ryansMammoth/AcaciaReel.abc"), abc)
    assert _onsets(load_score(abc)) == _onsets(import_music21("music21:ryansMammoth/AcaciaReel"))


def test_load_score_reads_midi_bytes_and_specs(tmp_path, bwv66_6):
    path = tmp_path / "chorale.mid"
    save_midi(bwv66_6, path)
    assert _onsets(load_score(path)) == _onsets(bwv66_6)
    assert _onsets(load_score(path.read_bytes())) == _onsets(bwv66_6)
    assert _onsets(load_score("music21:bach/bwv66.6")) == _onsets(bwv66_6)


def test_load_score_rejects_what_it_cannot_read(tmp_path):
    cases = {
        "notes.txt": (b"C D E F G", "unsupported"),
        "tunes.abc": (_corpus_file("essenFolksong/testd.abc").read_bytes(), "unsupported"),
        "broken.xml": (b"<score-partwise><part id='P1'><measure", "unreadable"),
        "broken.mid": (b"MThd", "corrupt"),
    }
    for name, (data, reason) in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(InvalidMidiError) as info:
            load_score(path)
        assert info.value.reason == reason, name
        assert name in str(info.value)
    for missing in ["gone.musicxml", "gone.mid", "gone.txt"]:
        with pytest.raises(InvalidMidiError) as info:
            load_score(tmp_path / missing)
        assert info.value.reason == "missing", missing


# --------------------------------------------------------------------------- fixtures


def test_bach_fixture_is_the_first_120_chorales(bach_scores):
    assert [spec for spec, _ in bach_scores] == music21_specs("music21:bach")[:120]


def test_other_meter_fixture_holds_real_non_4_4_pieces(other_meter_scores):
    specs = [spec for spec, _ in other_meter_scores]
    assert len(specs) >= 40
    assert len(set(specs)) == len(specs)
    meters = [
        {(m.numerator, m.denominator) for m in s.time_signatures} for _, s in other_meter_scores
    ]
    assert all(m != {(4, 4)} for m in meters)
    assert sum(len(m) > 1 for m in meters) >= 5  # pieces that change meter
    assert {(3, 4), (6, 8)} <= set().union(*meters)
    for spec, score in other_meter_scores:
        assert bar_grid(score), spec


def test_midi_dir_holds_loadable_files(midi_dir):
    files = sorted(midi_dir.glob("*.mid"))
    assert len(files) >= 60
    for path in files[::10]:
        assert load_midi(path).tracks
