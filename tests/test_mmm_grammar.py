"""The MMM grammar: the state machine that masks the sampler's logits and counts syntax
errors. Real encodings pass it; random walks inside its mask are always well-formed
music; each kind of broken sequence is counted under its own kind."""

from __future__ import annotations

import numpy as np
import pytest

from midilm.score import bar_grid, quantize
from midilm.tokenization import ViolationKind
from midilm.tokenization.mmm import MMMTokenizer
from mmm_helpers import published_vocabulary


@pytest.fixture(scope="module")
def tok() -> MMMTokenizer:
    return MMMTokenizer(meter_tokens=True)


def _text_check(tok: MMMTokenizer, text: str, bars: int | None = None):
    return tok.grammar(bars=bars).check(tok.text_to_ids(text))


def test_real_encodings_pass_and_every_next_token_is_allowed(bach_scores, other_meter_scores, tok):
    from midilm.tokenization.mmm import COMMON_METERS

    pieces = [
        (s, x)
        for s, x in [*bach_scores[:30], *other_meter_scores]
        if {str(b.meter) for b in bar_grid(quantize(x, 4))} <= set(COMMON_METERS)
    ]
    assert len(pieces) >= 60
    for spec, score in pieces:
        ids = tok.encode(score)
        state = tok.grammar().start()
        for position, token_id in enumerate(ids):
            assert state.allowed()[token_id], (spec, position, tok.id_to_token(token_id))
            assert state.advance(token_id) is None
        assert state.is_complete() and state.finish() == []


def test_windows_and_infill_pass_with_the_window_length(bach_scores, tok):
    for _, score in bach_scores[:10]:
        for window in tok.windows(score, bars=4, hop=2):
            assert tok.grammar(bars=4).check(window.ids) == []
        ids = tok.encode_infill(score, [(0, 1), (1, 2)], bars=(0, 4))
        assert tok.grammar(bars=4).check(ids) == []


@pytest.mark.parametrize("seed", range(12))
def test_random_walks_inside_the_mask_are_well_formed(seed, tok):
    """What the sampler relies on: any path the mask allows decodes, has exactly the
    requested bars in every track, and has no violation."""
    rng = np.random.default_rng(seed)
    grammar = tok.grammar(bars=4, allow_placeholders=False)
    state = grammar.start()
    ids = []
    tracks_wanted = 3
    while True:
        mask = state.allowed()
        assert mask.any()
        candidates = np.flatnonzero(mask)
        if state.is_complete() and ids.count(tok.token_to_id("TRACK_END")) >= tracks_wanted:
            break
        # Each kind of token gets an equal chance, so walks hold music and stay short.
        kinds = [tok.vocab.token_type(int(c)) for c in candidates]
        # As a sampler does, the walk decides how many tracks it writes.
        never = (
            "TRACK_START"
            if ids.count(tok.token_to_id("TRACK_END")) >= tracks_wanted
            else "PIECE_END"
        )
        kinds = ["(never)" if k == never else k for k in kinds]
        weights = np.array([0.0 if k == "(never)" else 1.0 / kinds.count(k) for k in kinds])
        choice = int(rng.choice(candidates, p=weights / weights.sum()))
        assert state.advance(choice) is None
        ids.append(choice)
        assert len(ids) < 5_000
    assert grammar.check(ids) == []
    text = tok.ids_to_text(ids)
    for track in text.split("TRACK_START")[1:]:
        assert track.count("BAR_START") == 4 and track.count("BAR_END") == 4
    score = tok.decode(ids)
    assert len(score.tracks) == tracks_wanted
    bar_steps = {"4/4": 16}.get(text.split()[1].split("=")[1])
    if bar_steps:
        for track in score.tracks:
            assert all(n.end <= 4 * bar_steps * 120 for n in track.notes)


BASE = "PIECE_START TRACK_START INST=0 DENSITY=3"


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        ("BAR_START NOTE_OFF=60 BAR_END", ViolationKind.NOTE_OFF_WITHOUT_ON),
        (
            "BAR_START NOTE_ON=60 NOTE_ON=60 TIME_DELTA=2 NOTE_OFF=60 NOTE_OFF=60 BAR_END",
            ViolationKind.DUPLICATE_NOTE,
        ),
        ("BAR_START NOTE_ON=60 TIME_DELTA=12 TIME_DELTA=8 NOTE_OFF=60 BAR_END", ViolationKind.TIME),
        ("BAR_START NOTE_ON=60 NOTE_OFF=60 BAR_END", ViolationKind.TIME),
        ("BAR_START TIME_DELTA=16 NOTE_ON=60 BAR_END", ViolationKind.TIME),
        ("BAR_START NOTE_ON=60 TIME_DELTA=4 BAR_END", ViolationKind.UNCLOSED_NOTE),
        ("BAR_START INST=3 BAR_END", ViolationKind.TYPE),
        ("NOTE_ON=60 BAR_START BAR_END", ViolationKind.TYPE),
    ],
)
def test_broken_sequences_are_counted_by_kind(tok, body, kind):
    violations = _text_check(
        tok, f"PIECE_START TIME_SIGNATURE=4/4 TRACK_START INST=0 DENSITY=3 {body} TRACK_END", bars=1
    )
    assert violations, body
    assert violations[0].kind is kind, [str(v) for v in violations]


def test_track_with_too_few_bars_is_a_type_error():
    tok = MMMTokenizer()
    good = "BAR_START BAR_END BAR_START BAR_END"
    text = f"{BASE} {good} TRACK_END TRACK_START INST=1 DENSITY=0 BAR_START BAR_END TRACK_END"
    (violation,) = _text_check(tok, text)
    assert violation.kind is ViolationKind.TYPE and violation.token == "TRACK_END"


def test_sequence_ending_early_or_with_missing_answers():
    tok = MMMTokenizer()
    assert _text_check(tok, f"{BASE} BAR_START")[-1].kind is ViolationKind.TYPE
    text = f"{BASE} BAR_START FILL_IN BAR_END TRACK_END"
    (violation,) = _text_check(tok, text)
    assert "placeholder" in violation.message
    answered = f"{text} FILL_START NOTE_ON=60 TIME_DELTA=16 NOTE_OFF=60 FILL_END"
    assert _text_check(tok, answered) == []
    too_long = f"{text} FILL_START NOTE_ON=60 TIME_DELTA=16 TIME_DELTA=1 NOTE_OFF=60 FILL_END"
    assert _text_check(tok, too_long)[0].kind is ViolationKind.TIME


def test_later_tracks_must_follow_the_first_tracks_meters(tok):
    head = "PIECE_START TIME_SIGNATURE=4/4 TRACK_START INST=0 DENSITY=3"
    first = "BAR_START BAR_END BAR_START TIME_SIGNATURE=3/4 BAR_END"
    state = tok.grammar().start()
    for token_id in tok.text_to_ids(
        f"{head} {first} TRACK_END TRACK_START INST=1 DENSITY=0 BAR_START BAR_END BAR_START"
    ):
        assert state.advance(token_id) is None
    mask = state.allowed()
    assert np.flatnonzero(mask).tolist() == [tok.token_to_id("TIME_SIGNATURE=3/4")]


def test_note_across_a_bar_line_may_stay_open_until_the_last_bar():
    tok = MMMTokenizer()
    text = (
        f"{BASE} BAR_START TIME_DELTA=8 NOTE_ON=60 BAR_END "
        "BAR_START TIME_DELTA=4 NOTE_OFF=60 BAR_END TRACK_END"
    )
    assert _text_check(tok, text) == []
    state = tok.grammar(bars=2).start()
    for token_id in tok.text_to_ids(f"{BASE} BAR_START BAR_END BAR_START NOTE_ON=60 TIME_DELTA=16"):
        state.advance(token_id)
    allowed = {tok.id_to_token(int(i)) for i in np.flatnonzero(state.allowed())}
    assert allowed == {"NOTE_OFF=60"}, "the last bar may not end with a note sounding"


def test_mask_never_offers_a_token_the_published_vocabulary_lacks(tmp_path):
    text = (
        f"{BASE} BAR_START NOTE_ON=60 TIME_DELTA=4.0 NOTE_OFF=60 "
        "NOTE_ON=62 TIME_DELTA=12.0 NOTE_OFF=62 BAR_END TRACK_END"
    )
    published_vocabulary(tmp_path, [text])
    tok = MMMTokenizer.load(tmp_path)
    state = tok.grammar().start()
    for token_id in tok.text_to_ids(f"{BASE} BAR_START"):
        state.advance(token_id)
    allowed = {tok.id_to_token(int(i)) for i in np.flatnonzero(state.allowed())}
    assert allowed <= {
        "NOTE_ON=60",
        "NOTE_ON=62",
        "TIME_DELTA=4.0",
        "TIME_DELTA=12.0",
        "BAR_END",
        "FILL_IN",
    }
    assert {"NOTE_ON=60", "NOTE_ON=62", "TIME_DELTA=4.0", "TIME_DELTA=12.0", "BAR_END"} <= allowed
