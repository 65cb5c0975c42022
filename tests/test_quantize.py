"""quantize: the properties the MMM codec relies on, for any input and for real music."""

from __future__ import annotations

import itertools
from collections import defaultdict

import pytest
import symusic
from hypothesis import given, settings
from hypothesis import strategies as st

from midilm.score import quantize

NOTE = st.tuples(
    st.integers(0, 20_000),  # time
    st.integers(0, 3_000),  # duration (0: a zero-length note)
    st.integers(20, 100),  # pitch: a narrow range so that unisons happen
    st.integers(1, 127),  # velocity
)


def make_score(tracks: list[list[tuple[int, int, int, int]]], tpq: int):
    score = symusic.Score(tpq)
    score.tempos.append(symusic.Tempo(0, 100.0))
    score.time_signatures.append(symusic.TimeSignature(0, 3, 4))
    for index, notes in enumerate(tracks):
        track = symusic.Track(name=f"t{index}", program=index)
        for time, duration, pitch, velocity in notes:
            track.notes.append(symusic.Note(time, duration, pitch, velocity))
        score.tracks.append(track)
    return score


def check_properties(original, out, steps: int) -> None:
    tpq = original.ticks_per_quarter
    assert out.ticks_per_quarter == steps
    kept = [t for t in original.tracks if len(t.notes)]
    assert [t.name for t in out.tracks] == [t.name for t in kept]
    for before, after in zip(kept, out.tracks, strict=True):
        assert after.program == before.program
        assert 0 < len(after.notes) <= len(before.notes)
        onsets_by_pitch = defaultdict(list)
        for n in before.notes:
            onsets_by_pitch[n.pitch].append(n.time * steps / tpq)
        by_pitch = defaultdict(list)
        for n in after.notes:
            assert n.duration >= 1  # every note lasts at least one step
            # its onset is within half a step of an original onset of the same pitch
            assert min(abs(n.time - t) for t in onsets_by_pitch[n.pitch]) <= 0.5
            by_pitch[n.pitch].append((n.time, n.time + n.duration))
        for spans in by_pitch.values():  # no two notes of one pitch overlap in a track
            spans.sort()
            for (_, end), (start, _) in itertools.pairwise(spans):
                assert end <= start


@settings(max_examples=80, deadline=None)
@given(
    tracks=st.lists(st.lists(NOTE, max_size=40), min_size=1, max_size=3),
    tpq=st.sampled_from([96, 480, 10080]),
    steps=st.sampled_from([1, 4, 12]),
)
def test_quantize_properties(tracks, tpq, steps):
    score = make_score(tracks, tpq)
    check_properties(score, quantize(score, steps), steps)


@settings(max_examples=30, deadline=None)
@given(tpq=st.sampled_from([96, 480]), steps=st.sampled_from([2, 4]), n=st.integers(1, 20))
def test_notes_already_on_the_grid_are_kept_exactly(tpq, steps, n):
    step = tpq // steps
    notes = [(i * step, step * (1 + i % 3), 60 + i % 5, 80) for i in range(n)]
    out = quantize(make_score([notes], tpq), steps)
    got = sorted((x.time, x.duration, x.pitch) for x in out.tracks[0].notes)
    # same-pitch notes may be cut where the next one starts, never moved
    assert [(t, p) for t, _, p in got] == sorted((t // step, p) for t, _, p, _ in notes)


def test_tempo_and_meter_move_to_the_new_grid():
    score = make_score([[(0, 480, 60, 90)]], 480)
    score.time_signatures.append(symusic.TimeSignature(1440 * 2, 6, 8))
    out = quantize(score, 4)
    assert [(ts.time, ts.numerator, ts.denominator) for ts in out.time_signatures] == [
        (0, 3, 4),
        (24, 6, 8),
    ]
    assert [round(t.qpm) for t in out.tempos] == [100]


def test_empty_tracks_are_dropped():
    score = make_score([[], [(0, 480, 60, 90)]], 480)
    assert [t.name for t in quantize(score, 4).tracks] == ["t1"]


def test_steps_per_quarter_must_be_positive():
    with pytest.raises(ValueError, match="received 0"):
        quantize(make_score([[(0, 1, 60, 90)]], 480), 0)


def test_real_music_keeps_its_properties(bach_scores, other_meter_scores):
    for _, score in [*bach_scores[:20], *other_meter_scores[::5]]:
        for steps in (4, 12):
            check_properties(score, quantize(score, steps), steps)
