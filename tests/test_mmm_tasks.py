"""Compose, continue, add a track and infill with a real (tiny, quickly trained) model:
outputs are well-formed, have exactly the requested bars, land in the requested density bins,
and keep what must not change."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from midilm.evaluation.controls import achieved_density
from midilm.sampling import TokenLoop
from midilm.sampling.mmm_tasks import (
    TrackRequest,
    add_track,
    compose,
    continue_piece,
    finish,
    infill,
    piece_to_score,
)
from midilm.score import bar_grid, quantize
from midilm.tokenization.mmm import MMMTokenizer
from midilm.tokenization.mmm_vocab import DRUMS
from sampling_helpers import tiny_engine_fixture, tiny_tok_fixture  # noqa: F401 (fixtures)


def _loop(engine, seed, temperature=1.0):
    return TokenLoop(engine, temperature=temperature, generator=torch.Generator().manual_seed(seed))


def _notes(track):
    return sorted(zip(track.onset.tolist(), track.end.tolist(), track.pitch.tolist(), strict=True))


def _well_formed(tok, piece, bars):
    """Every track encodes and decodes, has exactly ``bars`` bars, passes the grammar."""
    assert len(piece.bars) == bars
    ids = tok.encode_bars(piece, 0, bars)
    assert tok.grammar(bars=bars).check(ids) == []
    text = tok.ids_to_text(ids)
    assert all(t.count("BAR_START") == bars for t in text.split("TRACK_START")[1:])
    for track in piece.tracks:
        assert (track.end > track.onset).all()
        assert track.end.max(initial=0) <= piece.bars[-1].end_ticks


@pytest.mark.parametrize("seed", range(4))
def test_compose_writes_exact_bars_at_high_temperature(engine, tok, seed):
    requests = [TrackRequest(52, 3), TrackRequest(33, 1), TrackRequest(DRUMS, 2)]
    (piece,) = finish(compose(_loop(engine, seed, temperature=2.0), tok, requests, bars=6))
    _well_formed(tok, piece, 6)
    assert [t.program for t in piece.tracks] == [52, 33, DRUMS]
    score = piece_to_score(tok, piece)
    assert [t.is_drum for t in score.tracks] == [False, False, True]


def test_compose_in_another_meter_and_many_samples(engine, tok):
    pieces = finish(
        compose(_loop(engine, 1), tok, [TrackRequest(0)], bars=5, meter="3/4", num_samples=3)
    )
    assert len(pieces) == 3
    for piece in pieces:
        _well_formed(tok, piece, 5)
        assert {str(b.meter) for b in piece.bars} == {"3/4"}


def test_same_seed_same_music(engine, tok):
    def run(seed):
        (piece,) = finish(
            compose(_loop(engine, seed), tok, [TrackRequest(0), TrackRequest(40)], bars=4)
        )
        return [_notes(t) for t in piece.tracks]

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_thirty_two_bars_from_a_four_bar_model(engine, tok):
    (piece,) = finish(compose(_loop(engine, 2), tok, [TrackRequest(0)], bars=32))
    _well_formed(tok, piece, 32)
    onsets = piece.tracks[0].onset
    assert (onsets >= piece.bars[24].start_ticks).any(), "the last bars hold music too"


def test_continue_keeps_the_prompt(engine, tok, bach_scores):
    prompt = tok.prepare(bach_scores[2][1])
    (piece,) = finish(continue_piece(_loop(engine, 3), tok, prompt, bars=3))
    _well_formed(tok, piece, len(prompt.bars) + 3)
    edge = prompt.bars[-1].end_ticks
    for before, after in zip(prompt.tracks, piece.tracks, strict=True):
        kept = after.onset < edge
        assert _notes(before) == sorted(
            zip(
                after.onset[kept].tolist(),
                after.end[kept].tolist(),
                after.pitch[kept].tolist(),
                strict=True,
            )
        )


def test_continuing_a_busy_prompt_at_the_sparsest_bin_adds_nothing(engine, tok, bach_scores):
    """The prompt's bars are context forced into each window: when they already hold more
    notes than the bin allows, the window adds no note (and nothing fails)."""
    prompt = tok.prepare(bach_scores[2][1])
    most = tok.density_range(0, tok.config.bars_per_window)[1]
    edge = prompt.bars[-1].end_ticks
    late = prompt.bars[-2].start_ticks
    assert all(np.count_nonzero(t.end > late) > most for t in prompt.tracks)
    densities = [0] * len(prompt.tracks)
    (piece,) = finish(continue_piece(_loop(engine, 3), tok, prompt, bars=3, densities=densities))
    _well_formed(tok, piece, len(prompt.bars) + 3)
    stop = piece.bars[len(prompt.bars) + 1].end_ticks  # the new bars of the first window
    assert all(not ((t.onset >= edge) & (t.onset < stop)).any() for t in piece.tracks)


def test_add_track_keeps_the_others(engine, tok, bach_scores):
    piece = tok.prepare(bach_scores[4][1])
    (out,) = finish(add_track(_loop(engine, 4), tok, piece, TrackRequest(33, 2)))
    assert len(out.tracks) == len(piece.tracks) + 1
    for before, after in zip(piece.tracks, out.tracks, strict=False):
        assert _notes(before) == _notes(after)
    _well_formed(tok, out, len(piece.bars))
    score = piece_to_score(tok, out)
    assert set(achieved_density(tok, score, len(piece.tracks), len(piece.bars))) == {2}


@pytest.mark.parametrize(
    ("seed", "bars", "window"), [(0, 4, 4), (1, 2, 4), (2, 6, 4), (3, 5, 2), (4, 2, 2)]
)
def test_composed_tracks_land_in_their_density_bins(engine, tok, seed, bars, window):
    """The grammar steers every track into the bin it asked for, in every window the
    evaluation measures, whatever the bin: the sparsest, the busiest, drums too."""
    if window != tok.config.bars_per_window:  # the same vocabulary, other windows and edges
        tok = MMMTokenizer(tok.config.replace(bars_per_window=window, density_edges=None))
    rng = np.random.default_rng(seed)
    bins = [int(b) for b in rng.choice(tok.config.density_bins, size=3, replace=False)]
    requests = [TrackRequest(p, b) for p, b in zip([0, 33, DRUMS], bins, strict=True)]
    pieces = finish(compose(_loop(engine, seed), tok, requests, bars=bars, num_samples=2))
    for piece in pieces:
        _well_formed(tok, piece, bars)
        score = piece_to_score(tok, piece)
        for index, wanted in enumerate(bins):
            assert set(achieved_density(tok, score, index, bars)) == {wanted}, (index, wanted)


def test_infill_changes_only_the_chosen_bars(engine, tok, bach_scores):
    piece = tok.prepare(bach_scores[6][1])
    cells = [(1, 2), (1, 3), (3, 6)]
    (out,) = finish(infill(_loop(engine, 5), tok, piece, cells))
    for index, (before, after) in enumerate(zip(piece.tracks, out.tracks, strict=True)):
        spans = [
            (piece.bars[b].start_ticks, piece.bars[b].end_ticks) for t, b in cells if t == index
        ]

        def outside(track, spans=spans):
            keep = np.ones(len(track.onset), dtype=bool)
            for lo, hi in spans:
                keep &= (track.onset < lo) | (track.onset >= hi)
            return sorted(
                zip(
                    track.onset[keep].tolist(),
                    track.end[keep].tolist(),
                    track.pitch[keep].tolist(),
                    strict=True,
                )
            )

        assert outside(before) == outside(after), f"track {index + 1} changed outside its bars"
    _well_formed(tok, out, len(piece.bars))


def test_piece_to_score_round_trips_through_the_codec(engine, tok):
    (piece,) = finish(
        compose(_loop(engine, 9), tok, [TrackRequest(0), TrackRequest(DRUMS)], bars=4)
    )
    score = piece_to_score(tok, piece)
    back = tok.prepare(score)
    assert len(bar_grid(quantize(score, 4))) <= 4
    for a, b in zip(piece.tracks, back.tracks, strict=False):
        assert _notes(a) == _notes(b)
