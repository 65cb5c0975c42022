"""The MMM text codec: exact round trips on real music, the format's rules, and the files
that published checkpoints and Hugging Face tools read."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from midilm.errors import ConfigError, UnknownTokenError, UnsupportedScoreError
from midilm.score import bar_grid, quantize
from midilm.tokenization import load_tokenizer
from midilm.tokenization.mmm import COMMON_METERS, MMMConfig, MMMTokenizer
from mmm_helpers import make_score, note_set, published_vocabulary, reference_decode

SEED_EXAMPLE = (
    "PIECE_START TRACK_START INST=34 DENSITY=8 BAR_START NOTE_ON=60 TIME_DELTA=4 NOTE_OFF=60 "
    "BAR_END TRACK_END"
)


@pytest.fixture(scope="module")
def meter_tok() -> MMMTokenizer:
    return MMMTokenizer(meter_tokens=True)


# ---------------------------------------------------------------- round trips on real music
def test_round_trip_on_real_pieces(bach_scores, other_meter_scores):
    """≥ 100 real pieces in many meters: decode(encode(s)) has exactly quantize(s)'s notes."""
    pieces = [*bach_scores, *other_meter_scores]
    found = {str(b.meter) for _, s in pieces for b in bar_grid(quantize(s, 4))}
    unusual = tuple(sorted(found - set(COMMON_METERS)))  # e.g. a 13/16 bar in a folk song
    assert unusual, "the corpus has bars in meters beyond the common ones"
    with pytest.raises(UnsupportedScoreError, match=r"MMMConfig\.meters"):
        for _, score in pieces:
            MMMTokenizer(meter_tokens=True).encode(score)
    tok = MMMTokenizer(meter_tokens=True, meters=COMMON_METERS + unusual)
    checked = 0
    for spec, score in pieces:
        back = tok.decode(tok.encode(score))
        assert note_set(back) == note_set(score), spec
        assert [str(b.meter) for b in bar_grid(quantize(back, 4))] == [
            str(b.meter) for b in bar_grid(quantize(score, 4))
        ], spec
        checked += 1
    assert checked >= 160


def test_round_trip_in_4_4_without_meter_tokens(bach_scores):
    tok = MMMTokenizer()
    four_four = [
        (spec, s)
        for spec, s in bach_scores
        if {(t.numerator, t.denominator) for t in s.time_signatures} == {(4, 4)}
    ]
    assert len(four_four) >= 50
    for spec, score in four_four:
        text = tok.encode_text(score)
        assert "TIME_SIGNATURE" not in text
        assert note_set(tok.decode(text)) == note_set(score), spec


def test_other_meter_without_the_setting_names_it(other_meter_scores):
    score = next(
        s
        for _, s in other_meter_scores
        if all((t.numerator, t.denominator) != (4, 4) for t in s.time_signatures)
    )
    with pytest.raises(UnsupportedScoreError, match="meter_tokens") as info:
        MMMTokenizer().encode(score)
    assert info.value.reason == "meter"


def test_meter_change_is_written_in_every_track(other_meter_scores, meter_tok):
    changing = [
        (spec, s)
        for spec, s in other_meter_scores
        if len({(t.numerator, t.denominator) for t in s.time_signatures}) > 1
    ]
    assert changing, "the corpus fixture should hold a piece that changes meter"
    spec, score = changing[0]
    text = meter_tok.encode_text(score)
    tracks = text.split("TRACK_START")[1:]
    in_track = [t.count("TIME_SIGNATURE=") for t in tracks]
    assert len(set(in_track)) == 1 and in_track[0] >= 1, spec
    assert text.split()[1].startswith("TIME_SIGNATURE=")


# ---------------------------------------------------------------- property tests
notes_strategy = st.lists(
    st.tuples(st.integers(0, 70), st.integers(1, 40), st.integers(0, 127)), min_size=1, max_size=40
)
tracks_strategy = st.lists(
    st.tuples(st.integers(0, 127), st.booleans(), notes_strategy), min_size=1, max_size=4
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tracks=tracks_strategy, meter=st.sampled_from(["4/4", "3/4", "6/8", "5/4", "2/2", "7/8"]))
def test_round_trip_property(tracks, meter):
    """Any notes on the grid, overlapping, crossing bar lines, drums included, survive."""
    num, den = (int(x) for x in meter.split("/"))
    score = make_score(tracks, tpq=4, meters=[(0, num, den)])
    tok = MMMTokenizer(meter_tokens=True)
    ids = tok.encode(score)
    assert tok.grammar().check(ids) == []
    assert note_set(tok.decode(ids)) == note_set(score)


@settings(max_examples=100, deadline=None)
@given(tracks=tracks_strategy, tpq=st.sampled_from([96, 480, 10080]))
def test_round_trip_off_grid_equals_quantize(tracks, tpq):
    """Off-grid timing is lost only as quantize() says: decode(encode(s)) == quantize(s)."""
    scaled = [
        (p, d, [(o * tpq // 7, max(1, dur * tpq // 5), x) for o, dur, x in ns])
        for p, d, ns in tracks
    ]
    score = make_score(scaled, tpq=tpq)
    tok = MMMTokenizer()
    assert note_set(tok.decode(tok.encode(score))) == note_set(score)


# ---------------------------------------------------------------- the format's rules
def test_seed_example_decodes():
    score = MMMTokenizer().decode(SEED_EXAMPLE)
    (track,) = score.tracks
    assert track.program == 34 and not track.is_drum
    ((onset, duration, pitch),) = [(n.time, n.duration, n.pitch) for n in track.notes]
    assert (onset, duration, pitch) == (0, score.ticks_per_quarter, 60)


def test_float_deltas_read_like_integers():
    tok = MMMTokenizer()
    assert note_set(tok.decode(SEED_EXAMPLE.replace("=4 ", "=4.0 "))) == note_set(
        tok.decode(SEED_EXAMPLE)
    )


def test_restruck_pitch_reads_off_then_on():
    score = make_score([(0, False, [(0, 4, 60), (4, 4, 60)])])
    assert "NOTE_ON=60 TIME_DELTA=4 NOTE_OFF=60 NOTE_ON=60 TIME_DELTA=4 NOTE_OFF=60" in (
        MMMTokenizer().encode_text(score)
    )


def test_note_ending_on_the_bar_line_closes_inside_its_bar():
    score = make_score([(0, False, [(4, 12, 62), (16, 4, 64)])])
    text = MMMTokenizer().encode_text(score)
    first_bar = text.split("BAR_START")[1]
    assert first_bar.split() == [
        "TIME_DELTA=4",
        "NOTE_ON=62",
        "TIME_DELTA=12",
        "NOTE_OFF=62",
        "BAR_END",
    ]


def test_note_across_a_bar_line_closes_in_the_later_bar():
    score = make_score([(40, False, [(12, 8, 67)])])
    bars = MMMTokenizer().encode_text(score).split("BAR_START")[1:]
    assert bars[0].split() == ["TIME_DELTA=12", "NOTE_ON=67", "BAR_END"]
    assert bars[1].split()[:2] == ["TIME_DELTA=4", "NOTE_OFF=67"]


def test_empty_bars_and_drums():
    score = make_score([(0, True, [(0, 1, 36), (40, 1, 38)]), (33, False, [(0, 48, 40)])])
    text = MMMTokenizer().encode_text(score)
    assert "INST=DRUMS" in text and "INST=33" in text
    assert "BAR_START BAR_END" in text  # bar 2 of the drum track is silent
    back = MMMTokenizer().decode(text)
    assert [(t.is_drum, t.program) for t in back.tracks] == [(True, 0), (False, 33)]


def test_density_is_the_digitized_note_count():
    tok = MMMTokenizer(density_bins=5, density_edges=(2, 4, 8, 16))
    for count, expected in [(1, 0), (2, 1), (5, 2), (8, 3), (40, 4)]:
        score = make_score([(0, False, [(i % 64, 1, 60 + i % 12) for i in range(count)])])
        text = tok.encode_text(score)
        bars = len(bar_grid(quantize(score, 4)))
        assert f"DENSITY={tok.density_bin(count, bars)}" in text
        if bars == 4:
            assert f"DENSITY={expected}" in text


def test_fit_density_uses_percentiles(bach_scores):
    tok = MMMTokenizer(meter_tokens=True, density_bins=5)
    fitted = tok.fit_density(s for _, s in bach_scores[:30])
    edges = fitted.config.density_edges
    assert len(edges) == 4 and list(edges) == sorted(edges)
    counts = []
    for _, score in bach_scores[:30]:
        for window in tok.windows(score):
            text = tok.ids_to_text(window.ids)
            counts += [t.count("NOTE_ON") for t in text.split("TRACK_START")[1:]]
    assert np.allclose(edges, np.percentile(counts, [20, 40, 60, 80]))


# ---------------------------------------------------------------- decoding rules
def test_unclosed_note_gets_the_default_length_or_the_window_end():
    tok = MMMTokenizer()
    text = (
        "PIECE_START TRACK_START INST=0 DENSITY=0 "
        "BAR_START NOTE_ON=60 TIME_DELTA=14 NOTE_ON=62 BAR_END TRACK_END"
    )
    notes = sorted(
        (n.time // 120, n.duration // 120, n.pitch) for n in tok.decode(text).tracks[0].notes
    )
    assert notes == [(0, 4, 60), (14, 2, 62)]


def test_time_resets_at_every_bar_and_stray_tokens_are_skipped():
    tok = MMMTokenizer()
    text = (
        "PIECE_START STYLE=JSFAKES TRACK_START INST=0 DENSITY=1 "
        "BAR_START TIME_DELTA=16 TIME_DELTA=16 NOTE_OFF=70 BAR_END "
        "BAR_START KEYS_START KEY=C KEYS_END NOTE_ON=60 TIME_DELTA=2 NOTE_OFF=60 BAR_END TRACK_END "
        "PIECE_END TRACK_START INST=5 DENSITY=0 "
        "BAR_START NOTE_ON=1 TIME_DELTA=1 NOTE_OFF=1 BAR_END TRACK_END"
    )
    score = tok.decode(text)
    assert len(score.tracks) == 1
    assert [(n.time // 120, n.duration // 120, n.pitch) for n in score.tracks[0].notes] == [
        (16, 2, 60)
    ]


@settings(max_examples=200, deadline=None)
@given(
    events=st.lists(
        st.one_of(
            st.tuples(st.just("NOTE_ON"), st.integers(60, 62)),
            st.tuples(st.just("NOTE_OFF"), st.integers(60, 62)),
            st.tuples(st.just("TIME_DELTA"), st.integers(1, 3)),
            st.tuples(st.just("BAR"), st.just(0)),
            st.tuples(st.just("TRACK"), st.just(0)),
        ),
        max_size=60,
    )
)
def test_decoder_matches_a_plain_token_loop(events):
    """Arbitrary (even malformed) event streams decode as a simple last-in-first-out loop
    over the tokens reads them: the vectorized decoder is only faster, not different."""
    tokens = ["PIECE_START", "TRACK_START", "INST=0", "DENSITY=0", "BAR_START"]
    for name, value in events:
        if name == "BAR":
            tokens += ["BAR_END", "BAR_START"]
        elif name == "TRACK":
            tokens += ["BAR_END", "TRACK_END", "TRACK_START", "INST=1", "DENSITY=0", "BAR_START"]
        else:
            tokens.append(f"{name}={value}")
    tokens += ["BAR_END", "TRACK_END"]
    text = " ".join(tokens)
    score = MMMTokenizer().decode(text, ticks_per_quarter=4)
    got = sorted(
        (i, n.time, n.time + n.duration, n.pitch)
        for i, t in enumerate(score.tracks)
        for n in t.notes
    )
    assert got == reference_decode(text)


def test_decode_rejects_unknown_tokens_with_their_position():
    with pytest.raises(UnknownTokenError, match="token 2"):
        MMMTokenizer().decode("PIECE_START TRACK_START NOTE_ON=200")
    with pytest.raises(UnknownTokenError, match="outside the vocabulary"):
        MMMTokenizer().decode([5, 7, 100_000])


# ---------------------------------------------------------------- windows and infill
def test_windows_cover_the_piece_with_a_hop(bach_scores, meter_tok):
    spec, score = bach_scores[3]
    q = quantize(score, 4)
    bars = bar_grid(q)
    windows = meter_tok.windows(score, bars=4, hop=2)
    assert [w.start_bar for w in windows[:-1]] == list(range(0, len(bars) - 4 + 1, 2))
    assert all(w.num_bars == 4 for w in windows)
    assert windows[-1].start_bar + 4 == len(bars)
    for w in windows:
        lo, hi = bars[w.start_bar].start_ticks, bars[w.start_bar + 3].end_ticks
        expected = sorted(
            (t.program, max(n.time, lo) - lo, min(n.end, hi) - max(n.time, lo), n.pitch)
            for t in q.tracks
            for n in t.notes
            if n.time < hi and n.end > lo
        )
        back = quantize(meter_tok.decode(w.ids), 4)
        got = sorted((t.program, n.time, n.duration, n.pitch) for t in back.tracks for n in t.notes)
        assert got == expected, (spec, w.start_bar)
        assert meter_tok.grammar(bars=4).check(w.ids) == []


def test_infill_text_moves_masked_bars_to_the_end(bach_scores, meter_tok):
    _, score = bach_scores[0]
    cells = [(1, 1), (0, 3), (2, 2)]
    ids = meter_tok.encode_infill(score, cells, bars=(0, 4))
    text = meter_tok.ids_to_text(ids)
    assert text.count("FILL_IN") == 3 and text.count("FILL_START") == 3
    assert text.index("FILL_START") > text.rindex("TRACK_END")
    assert meter_tok.grammar(bars=4).check(ids) == []
    # Spliced back, the window is the plain window with notes split at the masked bar lines.
    plain = quantize(meter_tok.decode(meter_tok.encode_infill(score, [], bars=(0, 4))), 4)
    back = quantize(meter_tok.decode(ids), 4)
    bar_len = bar_grid(plain)[0].length_ticks
    for index, (a, b) in enumerate(zip(plain.tracks, back.tracks, strict=True)):
        cuts = sorted(
            {bar * bar_len for t, bar in cells if t == index}
            | {(bar + 1) * bar_len for t, bar in cells if t == index}
        )
        expected = []
        for n in a.notes:
            edges = [n.time, *[c for c in cuts if n.time < c < n.end], n.end]
            expected += [(lo, hi - lo, n.pitch) for lo, hi in itertools.pairwise(edges)]
        assert sorted(expected) == sorted((n.time, n.duration, n.pitch) for n in b.notes), index


def test_infill_rejects_cells_outside_the_piece(bach_scores, meter_tok):
    with pytest.raises(ValueError, match="outside the piece"):
        meter_tok.encode_infill(bach_scores[0][1], [(9, 0)])


# ---------------------------------------------------------------- settings and files
def test_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="unknown setting"):
        MMMConfig.from_dict({"steps_per_qaurter": 4})
    with pytest.raises(ConfigError, match="received 'four'"):
        MMMConfig(steps_per_quarter="four")
    with pytest.raises(ConfigError, match="density_edges"):
        MMMConfig(density_bins=3, density_edges=(1.0,))
    with pytest.raises(ConfigError, match="meter_tokens"):
        MMMConfig(meters=("4/4", "3/4"))
    with pytest.raises(ConfigError, match="whole number of steps"):
        MMMConfig(meter_tokens=True, meters=("3/16",), steps_per_quarter=2)
    assert MMMConfig(meter_tokens=True).meters == COMMON_METERS


def test_vocabulary_is_complete_and_stable():
    a, b = MMMTokenizer(), MMMTokenizer()
    assert a.vocab.tokens == b.vocab.tokens
    assert a.vocab.tokens[:5] == ("[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]")
    for p in range(128):
        assert a.vocab.token_type(a.token_to_id(f"NOTE_ON={p}")) == "NOTE_ON"
    assert a.token_to_id("TIME_DELTA=16") and "TIME_DELTA=17" not in a.vocab.index
    assert "NOTE_ON" in repr(a.vocab)


def test_saved_tokenizer_loads_in_hugging_face_and_midilm(tmp_path, bach_scores, meter_tok):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    meter_tok.save(tmp_path)
    _, score = bach_scores[5]
    ids = meter_tok.encode(score)
    text = meter_tok.ids_to_text(ids)
    hf = AutoTokenizer.from_pretrained(tmp_path)
    assert hf(text)["input_ids"] == ids
    fast = PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"))
    assert fast(text)["input_ids"] == ids
    again = load_tokenizer(tmp_path)
    assert isinstance(again, MMMTokenizer) and again.config == meter_tok.config
    assert again.encode(score) == ids


def test_published_vocabulary_keeps_its_ids(tmp_path, bach_scores):
    four_four = [
        s
        for _, s in bach_scores
        if {(t.numerator, t.denominator) for t in s.time_signatures} == {(4, 4)}
    ]
    ours = MMMTokenizer(density_bins=5)
    # Older published files spell deltas as floats (TIME_DELTA=4.0).
    texts = [
        " ".join(
            t + ".0" if t.startswith("TIME_DELTA=") else t for t in ours.encode_text(s).split()
        )
        for s in four_four[:20]
    ]
    hf = published_vocabulary(tmp_path, texts)
    tok = load_tokenizer(tmp_path)
    assert isinstance(tok, MMMTokenizer)
    # Density edges are not in a published vocabulary; the bins run up to the highest seen.
    seen = {int(t[8:]) for text in texts for t in text.split() if t.startswith("DENSITY=")}
    assert tok.config.float_deltas and tok.config.density_bins == max(seen) + 1
    assert tok.vocab_size == hf.get_vocab_size()
    # What the tokens cannot tell is given when loading: the density settings in use.
    tok = MMMTokenizer.load(tmp_path, density_bins=5)
    ids = tok.encode(four_four[0])
    assert ids == hf.encode(texts[0].split(), is_pretokenized=True).ids
    assert "TIME_DELTA=4.0" in tok.ids_to_text(ids)
    high = make_score([(0, False, [(0, 4, 127)])])
    with pytest.raises(UnknownTokenError, match="transpose"):
        tok.encode(high)


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"tokenizer\.json"):
        MMMTokenizer.load(tmp_path)
    (tmp_path / "tokenizer.json").write_text(json.dumps({"model": {"type": "BPE", "vocab": {}}}))
    with pytest.raises(ValueError, match=r"tokenizer\.json"):
        MMMTokenizer.load(tmp_path)


# ---------------------------------------------------------------- golden files
GOLDEN = ["music21:bach/bwv66.6", "music21:bach/bwv1.6", "music21:essenFolksong/han1#3"]


@pytest.mark.parametrize("spec", GOLDEN)
def test_golden_tokens(spec):
    """Tokens of three pieces, as committed by ``scripts/regenerate_golden.py``. A change
    here is a format change: regenerate on purpose, never edit by hand."""
    from pathlib import Path

    from midilm.score import import_music21

    stem = spec.split(":")[1].replace("/", "_").replace("#", "_")
    expected = (Path(__file__).parent / "golden" / f"{stem}.txt").read_text().strip()
    assert MMMTokenizer(meter_tokens=True).encode_text(import_music21(spec)) == expected
