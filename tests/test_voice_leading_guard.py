"""The voice-leading guard: a pitch that would make parallel fifths or octaves with a known
voice is masked (and only it), four voices stay in their ranges, no voice falls silent
alone, and music composed or infilled under the guard has no parallel the evaluator would
count."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from midilm.evaluation.statistics import piece_notes
from midilm.evaluation.voice_leading import VOICE_RANGES, voice_leading_stats
from midilm.model.generation import GenerationDefaults
from midilm.model.loading import load_model
from midilm.sampling import TokenLoop
from midilm.sampling.mmm_tasks import TrackRequest, compose, finish, infill, piece_to_score
from midilm.sampling.voice_leading import guard_window, voice_roles
from midilm.score.meter import Bar, Meter
from midilm.tokenization.mmm import Piece, PieceTrack
from midilm.tokenization.mmm_vocab import DRUMS, Kind
from sampling_helpers import (  # noqa: F401 (fixtures 'engine' and 'tok')
    tiny_engine_fixture,
    tiny_mmm,
    tiny_mmm_dir,
    tiny_tok_fixture,
)
from test_cli import assert_ok, invoke

CHOIR = 52  # the chorales' program
SATB = ("soprano", "alto", "tenor", "bass")


def _loop(engine, seed):
    return TokenLoop(engine, generator=torch.Generator().manual_seed(seed))


def _piece(tok, parts, bars=1):
    """A 4/4 piece of ``bars`` bars; ``parts``: per track, ``(program, [(onset, end,
    pitch), …])`` in grid steps."""
    steps = 4 * tok.config.steps_per_quarter
    grid = [Bar(i, i * steps, steps, Meter.parse("4/4")) for i in range(bars)]
    tracks = []
    for program, notes in parts:
        onset, end, pitch = (np.array([n[i] for n in notes], dtype=np.int64) for i in range(3))
        tracks.append(PieceTrack(program, "", onset, end, pitch))
    return Piece(grid, tracks)


def _feed(state, ids):
    for token_id in ids:
        state.advance(int(token_id))
    return state


def _on(tok, pitch):
    return int(tok.vocab.note_on[pitch])


def _pitches(tok, mask):
    """The pitches whose NOTE_ON a mask allows."""
    ids = tok.vocab.note_on
    return {p for p in range(128) if ids[p] >= 0 and mask[ids[p]]}


@pytest.mark.parametrize(
    ("first", "examples", "kept"),
    [
        (67, [55, 69, 81], [66, 67, 68, 70, 74]),  # G4 over C4: fifths once the bass takes D4
        (72, [50, 62, 74, 86], [69, 72, 73, 75]),  # C5 over C4: octaves (and the unison)
    ],
)
def test_a_pitch_that_makes_parallels_with_a_known_voice_is_masked(tok, first, examples, kept):
    """Track 1 (known) goes C4 → D4 at step 8; track 2 sang ``first`` over the C4 and now
    chooses its next pitch at step 8: every pitch at the same interval (mod 12) from D4 is
    out, compound and below included; staying on ``first`` is oblique motion."""
    interval = (first - 60) % 12
    banned = {p for p in range(128) if abs(p - 62) % 12 == interval and p != first}
    assert set(examples) <= banned and not set(kept) & banned
    piece = _piece(tok, [(CHOIR, [(0, 8, 60), (8, 16, 62)]), (CHOIR, [(0, 8, first)])])
    ids = tok.encode_bars(piece, 0, 1)
    cut = len(ids) - 1 - ids[::-1].index(int(tok.vocab.note_off[first]))
    # The second track's density: the top bin, so that density steering allows any note.
    density = max(i for i in range(cut) if tok.vocab.kinds[ids[i]] == Kind.DENSITY)
    ids[density] = int(tok.vocab.density[tok.config.density_bins - 1])
    grammar = tok.grammar(bars=1, allow_placeholders=False)
    plain = _feed(grammar.start(), ids[: cut + 1])
    guarded = _feed(guard_window(grammar.start(), tok, piece, 0, 1, [0, 0]), ids[: cut + 1])
    before, after = plain.sampling_mask(), guarded.sampling_mask()
    assert banned <= _pitches(tok, before), "the grammar alone allows them"
    assert _pitches(tok, after) == _pitches(tok, before) - banned
    assert set(kept) <= _pitches(tok, after)
    others = np.ones(len(before), dtype=bool)
    others[tok.vocab.note_on[tok.vocab.note_on >= 0]] = False
    assert (after[others] == before[others]).all(), "only NOTE_ON ids change"


def _allowed_per_track(tok, piece):
    """The NOTE_ON pitches the guard allows at the start of each track of an empty bar."""
    vocab = tok.vocab
    grammar = tok.grammar(bars=1, allow_placeholders=False)
    state = guard_window(grammar.start(), tok, piece, 0, 1, [0] * len(piece.tracks))
    _feed(state, [vocab.bare_id(Kind.PIECE_START), tok.token_to_id("TIME_SIGNATURE=4/4")])
    out = []
    for track in piece.tracks:
        top = vocab.density[tok.config.density_bins - 1]  # no density steering
        _feed(state, [vocab.bare_id(Kind.TRACK_START), vocab.inst[track.program], top,
                      vocab.bare_id(Kind.BAR_START)])  # fmt: skip
        out.append(_pitches(tok, state.sampling_mask()))
        _feed(state, [vocab.bare_id(Kind.BAR_END), vocab.bare_id(Kind.TRACK_END)])
    return out


def test_four_voices_keep_their_ranges_by_order_then_by_mean_pitch(tok):
    def span(role):
        lo, hi = VOICE_RANGES[role]
        return set(range(lo, hi + 1))

    empty = _piece(tok, [(CHOIR, [])] * 4)
    assert _allowed_per_track(tok, empty) == [span(role) for role in SATB]
    # A user's piece listing bass, soprano, tenor, alto: roles follow the notes.
    shuffled = _piece(tok, [(CHOIR, [(0, 4, p)]) for p in (48, 72, 57, 64)])
    roles = ("bass", "soprano", "tenor", "alto")
    assert _allowed_per_track(tok, shuffled) == [span(role) for role in roles]
    # Drums do not count: four pitched tracks and a drum kit are still four voices.
    with_drums = _piece(tok, [(CHOIR, [])] * 4 + [(DRUMS, [])])
    allowed = _allowed_per_track(tok, with_drums)
    assert allowed[:4] == [span(role) for role in SATB]
    assert len(allowed[4]) > 100, "drums are left alone"
    # Three parts are not four voices: no ranges.
    three = _piece(tok, [(CHOIR, [])] * 3)
    assert all(len(pitches) > 100 for pitches in _allowed_per_track(tok, three))


def test_voice_roles():
    assert voice_roles([None] * 4) == list(SATB)
    assert voice_roles([50.0, 70.0, 58.0, 64.0]) == ["bass", "soprano", "tenor", "alto"]
    # A part being added takes the voice the others leave: here the alto.
    assert voice_roles([70.0, 57.0, 48.0, None]) == ["soprano", "tenor", "bass", "alto"]
    assert voice_roles([70.0, 65.0, 57.0, None]) == ["soprano", "alto", "tenor", "bass"]
    assert voice_roles([60.0, 50.0]) is None


def _kinds(tok, mask):
    """The kinds of token a mask allows."""
    return {Kind(int(k)) for k in np.unique(tok.vocab.kinds[mask])}


def _deltas(tok, mask):
    """The TIME_DELTA values a mask allows."""
    vocab = tok.vocab
    return {int(vocab.values[i]) for i in np.flatnonzero(mask & (vocab.kinds == Kind.TIME_DELTA))}


def _alto_after(tok, soprano, alto_ids):
    """The plain and the guarded sampling masks of a second voice (no density steering)
    after its own ``alto_ids``, under a known ``soprano`` (one 4/4 bar)."""
    vocab = tok.vocab
    piece = _piece(tok, [(CHOIR, soprano), (CHOIR, [])])
    ids = tok.encode_bars(piece, 0, 1)
    ids = ids[: len(ids) - 1 - ids[::-1].index(vocab.bare_id(Kind.BAR_START)) + 1]
    ids += [tok.token_to_id(text) for text in alto_ids]
    grammar = tok.grammar(bars=1, allow_placeholders=False, control_density=False)
    plain = _feed(grammar.start(), ids).sampling_mask()
    guarded = _feed(guard_window(grammar.start(), tok, piece, 0, 1, [0, 0]), ids)
    return plain, guarded.sampling_mask()


def test_a_voice_does_not_rest_while_a_known_voice_sounds(tok):
    soprano = [(0, 8, 72), (8, 16, 71)]  # sounds through the bar
    # At the bar's start, and after a note ends mid-bar: a note must start now.
    for alto in ([], ["NOTE_ON=64", "TIME_DELTA=4", "NOTE_OFF=64"]):
        plain, guarded = _alto_after(tok, soprano, alto)
        assert {Kind.TIME_DELTA, Kind.BAR_END} <= _kinds(tok, plain), "a rest is legal"
        assert _kinds(tok, guarded) == {Kind.NOTE_ON}
        assert _pitches(tok, guarded) == _pitches(tok, plain)
    # A note sounding may go on or end, as the grammar allows.
    plain, guarded = _alto_after(tok, soprano, ["NOTE_ON=64", "TIME_DELTA=4"])
    assert (plain == guarded).all()


def test_a_voice_rests_with_the_others_and_comes_back_with_them(tok):
    soprano = [(0, 8, 72), (12, 16, 71)]  # a breath over steps 8-12
    plain, guarded = _alto_after(tok, soprano, ["NOTE_ON=64", "TIME_DELTA=8", "NOTE_OFF=64"])
    assert _deltas(tok, plain) == set(range(1, 9)) & _deltas(tok, plain)
    assert max(_deltas(tok, plain)) == 8 and max(_deltas(tok, guarded)) == 4
    assert Kind.BAR_END in _kinds(tok, plain) and Kind.BAR_END not in _kinds(tok, guarded)
    assert _pitches(tok, guarded) == _pitches(tok, plain), "or it sings through the breath"
    # A last breath to the bar's end: the bar may end now.
    plain, guarded = _alto_after(tok, [(0, 8, 72)], ["NOTE_ON=64", "TIME_DELTA=8", "NOTE_OFF=64"])
    assert (plain == guarded).all()


def _dropped_out(pieces):
    """Steps at which a voice is silent while a voice written before it sounds."""
    count = 0
    for notes in pieces:
        total = int(notes.bar_starts[-1] + notes.bar_lengths[-1])
        cover = np.zeros((len(notes.pitched), total), dtype=bool)
        for row, track in enumerate(notes.pitched):
            for onset, end in zip(track.onset, track.end, strict=True):
                cover[row, onset:end] = True
        earlier_sounds = np.logical_or.accumulate(cover, axis=0)
        count += int((~cover[1:] & earlier_sounds[:-1]).sum())
    return count


def test_composed_voices_never_drop_out_under_the_voices_before_them(engine, tok):
    requests = [TrackRequest(CHOIR)] * 4
    counts = {}
    for guard in (False, True):
        pieces = finish(compose(_loop(engine, 3), tok, requests, bars=4, num_samples=4,
                                voice_leading=guard))  # fmt: skip
        counts[guard] = _dropped_out([piece_notes(piece_to_score(tok, p), 4) for p in pieces])
    assert counts == {False: counts[False], True: 0} and counts[False] > 0, counts


def _voice_stats(tok, pieces, bars):
    return voice_leading_stats(piece_notes(piece_to_score(tok, p), bars) for p in pieces)


def test_a_composed_chorale_has_no_parallels_and_its_voices_in_range(engine, tok):
    requests = [TrackRequest(CHOIR)] * 4
    pieces = finish(compose(_loop(engine, 3), tok, requests, bars=8, num_samples=3,
                            voice_leading=True))  # fmt: skip
    stats = _voice_stats(tok, pieces, 8)
    assert stats["pieces"] == 3 and stats["motions"] > 50
    assert stats["parallel_fifths"] == 0 and stats["parallel_octaves"] == 0
    assert stats["in_range"] == dict.fromkeys(SATB, 1.0)


def test_the_guard_is_transparent_where_it_has_nothing_to_forbid(engine, tok):
    """One pitched part and drums: no voice to move against, no four voices: the same
    seed writes the same tokens with the guard on and off."""
    requests = [TrackRequest(0), TrackRequest(DRUMS)]
    traces = []
    for voice_leading in (False, True):
        trace: list = []
        finish(compose(_loop(engine, 4), tok, requests, bars=4, num_samples=2, trace=trace,
                       voice_leading=voice_leading))  # fmt: skip
        traces.append(trace)
    assert traces[0] == traces[1]


def test_infill_under_the_guard_changes_only_the_chosen_bars(engine, tok, bach_scores):
    piece = tok.prepare(bach_scores[6][1])
    cells = [(1, 2), (2, 2), (3, 5)]
    (out,) = finish(infill(_loop(engine, 5), tok, piece, cells, voice_leading=True))
    for index, (before, after) in enumerate(zip(piece.tracks, out.tracks, strict=True)):
        inside = np.zeros(len(before.onset), dtype=bool)
        new = np.zeros(len(after.onset), dtype=bool)
        for track, bar in cells:
            if track == index:
                lo, hi = piece.bars[bar].start_ticks, piece.bars[bar].end_ticks
                inside |= (before.onset >= lo) & (before.onset < hi)
                new |= (after.onset >= lo) & (after.onset < hi)

        def notes(track, keep):
            return sorted(zip(track.onset[keep].tolist(), track.end[keep].tolist(),
                              track.pitch[keep].tolist(), strict=True))  # fmt: skip

        assert notes(before, ~inside) == notes(after, ~new), f"track {index + 1} changed"
    # The chorale lists soprano, alto, tenor, bass: the new bars keep those ranges.
    for track, bar in cells:
        lo, hi = VOICE_RANGES[SATB[track]]
        part = out.tracks[track]
        start, end = piece.bars[bar].start_ticks, piece.bars[bar].end_ticks
        pitches = part.pitch[(part.onset >= start) & (part.onset < end)]
        assert ((pitches >= lo) & (pitches <= hi)).all()


# ---------------------------------------------------------------------- the settings
def test_the_models_defaults_switch_the_guard_and_an_argument_overrides_it(tmp_path, bach_scores):
    from midilm.model.directory import save_model

    model, tok = tiny_mmm(bach_scores)
    on = GenerationDefaults(instruments=("choir_aahs",) * 4, bars=4, voice_leading=True)
    folder = save_model(tmp_path / "guarded", model, tok, generation_defaults=on)
    lm = load_model(folder)
    assert lm.generation.voice_leading is True
    assert load_model("bundled:default").generation.voice_leading is True

    def tokens(**options):
        (*_, done) = lm.stream("generate", seed=7, **options)
        return done.tokens, done.result

    default, scores = tokens()
    assert tokens(voice_leading=True)[0] == default
    assert tokens(voice_leading=False)[0] != default
    notes = [piece_notes(score, 4) for score in scores]
    stats = voice_leading_stats(notes)
    assert stats["parallel_fifths"] == stats["parallel_octaves"] == 0


def test_generation_config_round_trip():
    on = GenerationDefaults(voice_leading=True)
    config = on.to_generation_config(pad_id=3)
    assert GenerationDefaults.from_generation_config(config.to_dict()) == on
    assert "voice_leading" not in GenerationDefaults().to_generation_config().to_dict()
    assert GenerationDefaults.from_generation_config({}).voice_leading is False


def test_cli_switches_the_guard(tmp_path_factory, tmp_path, bach_scores):
    model_dir = tiny_mmm_dir(tmp_path_factory, bach_scores)
    outputs = {}
    for flag in ("--voice-leading", "--no-voice-leading"):
        out = tmp_path / f"{flag}.mid"
        tokens = tmp_path / f"{flag}.txt"
        result = invoke("generate", "--model", model_dir, "--bars", 4, "--instruments",
                        "52,52,52,52", "--seed", 2, "-o", out, "--save-tokens", tokens,
                        flag, "-q")  # fmt: skip
        assert_ok(result)
        outputs[flag] = tokens.read_text()
    assert outputs["--voice-leading"] != outputs["--no-voice-leading"]
