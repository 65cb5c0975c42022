"""The MMM grammar: the state machine that masks the sampler's logits and counts syntax
errors. Real encodings pass it; random walks inside its mask are always well-formed
music, and walks inside its sampling mask land in their density bins; each kind of broken
sequence is counted under its own kind."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from midilm.score import bar_grid, quantize
from midilm.tokenization import ViolationKind
from midilm.tokenization.mmm import MMMTokenizer
from midilm.tokenization.mmm_vocab import DRUMS, Kind
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


# ---------------------------------------------------------------------- density steering
NARROW_EDGES = (9.0, 12.0, 14.0, 15.0, 16.0, 17.0, 18.0, 20.0, 22.0)  # the bundled model's


@functools.cache
def _density_tok(window: int, placement: str, narrow: bool) -> MMMTokenizer:
    edges = NARROW_EDGES if narrow and placement == "track" else None
    if edges is not None and window != 4:
        edges = tuple(e * window / 4 for e in edges)
    return MMMTokenizer(
        meter_tokens=True, bars_per_window=window, density_placement=placement, density_edges=edges
    )


def _pick(tok, rng, candidates: np.ndarray, policy: str) -> int:
    """One id among ``candidates``: a kind first (``eager`` favours notes, ``lazy`` long
    deltas and bar ends), then an id of that kind."""
    kinds = tok.vocab.kinds[candidates]
    present = sorted(set(kinds.tolist()))
    favourite = {"eager": {Kind.NOTE_ON}, "lazy": {Kind.TIME_DELTA, Kind.BAR_END}}.get(policy, ())
    weights = np.array([8.0 if k in favourite else 1.0 for k in present])
    kind = present[int(rng.choice(len(present), p=weights / weights.sum()))]
    of_kind = candidates[kinds == kind]
    if policy == "lazy" and kind == Kind.TIME_DELTA:
        return int(of_kind[np.argmax(tok.vocab.values[of_kind])])
    return int(rng.choice(of_kind))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    window=st.sampled_from([2, 4]),
    placement=st.sampled_from(["track", "track", "bar"]),
    narrow=st.booleans(),
    data=st.data(),
)
def test_walks_inside_the_sampling_mask_land_in_their_density_bins(window, placement, narrow, data):
    """Whatever a sampler picks inside ``sampling_mask`` (eager, lazy or even-handed, after
    forced context bars that may already hold too many notes or too few), the mask never
    runs dry, the sequence is well-formed, and each track's note count is one its bin
    allows: exactly its bin wherever a whole count reaches it."""
    tok = _density_tok(window, placement, narrow)
    bars = data.draw(st.integers(1, window), label="bars")
    meters = data.draw(st.lists(st.sampled_from(["4/4", "3/4", "6/8", "2/4"]),
                                min_size=bars, max_size=bars), label="meters")  # fmt: skip
    tracks = data.draw(st.lists(st.tuples(st.integers(0, 9), st.sampled_from([0, 40, DRUMS]),
                                          st.integers(0, bars - 1)),
                                min_size=1, max_size=3), label="tracks")  # fmt: skip
    policy = data.draw(st.sampled_from(["eager", "lazy", "even"]), label="policy")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16), label="seed"))
    grammar = tok.grammar(bars=bars, allow_placeholders=False, bar_meters=meters)
    state = grammar.start()
    ids = [tok.token_to_id("PIECE_START"), tok.token_to_id(f"TIME_SIGNATURE={meters[0]}")]
    checks = []  # (bin, notes forced before sampling, bars forced)
    for token_id in ids:
        assert state.advance(token_id) is None
    for bin_, program, context_bars in tracks:
        inst = "INST=DRUMS" if program == DRUMS else f"INST={program}"
        head = ["TRACK_START", inst] + ([f"DENSITY={bin_}"] if placement == "track" else [])
        for token in head:
            ids.append(tok.token_to_id(token))
            assert state.advance(ids[-1]) is None
        context = 0
        while True:
            # Forced context: any legal token, the bin ignored (a prompt may be too busy).
            forced = state.bar < context_bars
            legal, steered = state.allowed(), state.sampling_mask()
            assert steered.any() and not (steered & ~legal).any()
            chosen = _pick(tok, rng, np.flatnonzero(legal if forced else steered), policy)
            if placement == "bar" and tok.vocab.kinds[chosen] == Kind.DENSITY:
                chosen = tok.token_to_id(f"DENSITY={bin_}")
            if forced and tok.vocab.kinds[chosen] == Kind.NOTE_ON:
                context += 1
            assert state.advance(chosen) is None
            ids.append(chosen)
            assert len(ids) < 20_000
            if chosen == tok.token_to_id("TRACK_END"):
                break
        checks.append((bin_, context, context_bars))
    assert grammar.check(ids) == []
    text = tok.ids_to_text(ids).split("TRACK_START")[1:]
    for (bin_, context, context_bars), track in zip(checks, text, strict=True):
        # Per-bar density: the bars after the forced ones each land in their bin.
        spans = [track] if placement == "track" else track.split("BAR_START")[1 + context_bars :]
        for span in spans:
            notes = span.count("NOTE_ON=")
            fewest, most = tok.density_range(bin_, bars if placement == "track" else 1)
            if placement == "track" and context > (most if most is not None else notes):
                assert notes == context, "no note is added to a track already too busy"
                continue
            assert fewest <= notes and (most is None or notes <= most), (bin_, notes, span)
            reachable = any(
                tok.density_bin(c, bars if placement == "track" else 1) == bin_
                for c in range(fewest, (most if most is not None else fewest) + 1)
            )
            if reachable:
                assert tok.density_bin(notes, bars if placement == "track" else 1) == bin_


def test_density_steers_sampling_only(tok):
    """A track outside its bin is still well-formed: the steering is no syntax rule, and a
    forced prompt already past the bin's most notes goes through (only more NOTE_ON are
    kept from the sampler)."""
    busy = " ".join(f"NOTE_ON={60 + i} TIME_DELTA=1 NOTE_OFF={60 + i}" for i in range(12))
    text = f"PIECE_START TIME_SIGNATURE=4/4 TRACK_START INST=0 DENSITY=0 BAR_START {busy}"
    grammar = tok.grammar(bars=1, allow_placeholders=False)
    state = grammar.start()
    for token_id in tok.text_to_ids(text):
        assert state.advance(token_id) is None
    steered, legal = state.sampling_mask(), state.allowed()
    on = tok.vocab.kinds == Kind.NOTE_ON
    assert legal[on].any() and not steered[on].any()
    assert steered[tok.token_to_id("BAR_END")]
    assert grammar.check(tok.text_to_ids(f"{text} BAR_END TRACK_END")) == []
    sparse = (
        "PIECE_START TIME_SIGNATURE=4/4 TRACK_START INST=0 DENSITY=9 BAR_START BAR_END TRACK_END"
    )
    assert grammar.check(tok.text_to_ids(sparse)) == []
    state = grammar.start()
    for token_id in tok.text_to_ids(sparse)[:-2]:
        state.advance(token_id)
    assert not state.sampling_mask()[tok.token_to_id("BAR_END")], "a bin-9 bar may not stay empty"
    free = tok.grammar(bars=1, allow_placeholders=False, control_density=False).start()
    for token_id in tok.text_to_ids(sparse)[:-2]:
        free.advance(token_id)
    assert free.sampling_mask()[tok.token_to_id("BAR_END")]


def test_density_range_matches_density_bin():
    tok = _density_tok(4, "track", True)
    assert tok.density_range(0, 4) == (0, 8)
    assert tok.density_range(3, 4) == (14, 14)
    assert tok.density_range(9, 4) == (22, None)
    # Two bars: a count counts double, and no whole count reaches [15, 16): both neighbours.
    assert tok.density_range(4, 2) == (7, 8)
    assert {tok.density_bin(c, 2) for c in (7, 8)} == {3, 5}
    for bars in (1, 2, 3, 4):
        for bin_ in range(10):
            fewest, most = tok.density_range(bin_, bars)
            for count in range(fewest, (most or fewest + 5) + 1):
                assert abs(tok.density_bin(count, bars) - bin_) <= 1


@pytest.mark.parametrize("window", [2, 4])
def test_a_lazy_sampler_still_sounds_every_track(window):
    """The sparsest bin counts from zero notes, yet a track asked for must sound: a sampler
    that always rests as long as it may still writes a note in every track (unless the bin
    allows no note at all over so few bars)."""
    tok = _density_tok(window, "track", False)
    rng = np.random.default_rng(0)
    for bars in range(1, window + 1):
        state = tok.grammar(bars=bars, allow_placeholders=False).start()
        ids = [tok.token_to_id(t) for t in ("PIECE_START", "TIME_SIGNATURE=4/4", "TRACK_START",
                                            "INST=0", "DENSITY=0")]  # fmt: skip
        for token_id in ids:
            assert state.advance(token_id) is None
        while ids[-1] != tok.token_to_id("TRACK_END"):
            ids.append(_pick(tok, rng, np.flatnonzero(state.sampling_mask()), "lazy"))
            assert state.advance(ids[-1]) is None
        notes = tok.ids_to_text(ids).count("NOTE_ON=")
        most = tok.density_range(0, bars)[1]
        assert notes >= 1 if most is None or most >= 1 else notes == 0, (bars, most)
