"""Meters and the bar grid, on scores built in the test and on real music."""

from __future__ import annotations

import itertools
from fractions import Fraction

import pytest
import symusic
from hypothesis import given, settings
from hypothesis import strategies as st

from midilm.errors import UnsupportedScoreError
from midilm.score import Meter, bar_grid, score_end_ticks


def make_score(meters: list[tuple[int, int, int]], end_ticks: int, tpq: int = 480):
    """A score with time signatures (tick, numerator, denominator) and one note ending at
    ``end_ticks``."""
    score = symusic.Score(tpq)
    for tick, num, den in meters:
        score.time_signatures.append(symusic.TimeSignature(tick, num, den))
    track = symusic.Track(name="t", program=0)
    track.notes.append(symusic.Note(max(0, end_ticks - 1), 1, 60, 90))
    score.tracks.append(track)
    return score


def test_meter_parse_and_lengths():
    assert Meter.parse(" 6/8 ") == Meter(6, 8)
    assert Meter(6, 8).quarters_per_bar == Fraction(3)
    assert Meter(7, 8).bar_ticks(480) == 1680
    assert Meter(7, 16).bar_ticks(2) is None  # 3.5 ticks
    assert str(Meter(3, 4)) == "3/4"


@pytest.mark.parametrize("text", ["3/5", "0/4", "x/4", "3", "3/4/4"])
def test_meter_rejects_bad_text(text):
    with pytest.raises(ValueError, match="received"):
        Meter.parse(text)


def test_no_time_signature_means_4_4():
    bars = bar_grid(make_score([], end_ticks=3 * 1920))
    assert [(b.start_ticks, b.length_ticks, str(b.meter)) for b in bars] == [
        (0, 1920, "4/4"),
        (1920, 1920, "4/4"),
        (3840, 1920, "4/4"),
    ]


def test_meter_changes_on_bar_lines():
    # two bars of 4/4, three of 3/4, one of 6/8
    score = make_score([(0, 4, 4), (3840, 3, 4), (3840 + 3 * 1440, 6, 8)], end_ticks=8160 + 1440)
    bars = bar_grid(score)
    assert [str(b.meter) for b in bars] == ["4/4", "4/4", "3/4", "3/4", "3/4", "6/8"]
    assert [b.index for b in bars] == list(range(6))
    for before, after in itertools.pairwise(bars):
        assert after.start_ticks == before.end_ticks


def test_meter_change_inside_a_bar_cuts_that_bar_short():
    # half a bar of 4/4, then 3/4: the cut bar becomes a 2/4 bar
    score = make_score([(0, 4, 4), (960, 3, 4)], end_ticks=960 + 2 * 1440)
    bars = bar_grid(score)
    assert [(b.start_ticks, b.length_ticks, str(b.meter)) for b in bars] == [
        (0, 960, "2/4"),
        (960, 1440, "3/4"),
        (2400, 1440, "3/4"),
    ]


def test_mid_bar_change_no_meter_spells_is_refused():
    score = make_score([(0, 4, 4), (1, 3, 4)], end_ticks=4000)  # a bar 1/480 quarter long
    with pytest.raises(UnsupportedScoreError, match="no meter spells") as info:
        bar_grid(score)
    assert info.value.reason == "meter"


def test_meter_change_after_the_last_note_is_ignored():
    score = make_score([(0, 3, 4), (999_999, 5, 4)], end_ticks=1440 * 2)
    assert [str(b.meter) for b in bar_grid(score)] == ["3/4", "3/4"]


def test_repeated_meter_is_not_a_change():
    score = make_score([(0, 3, 4), (500, 3, 4)], end_ticks=1440 * 2)
    assert len(bar_grid(score)) == 2


def test_explicit_end_extends_the_grid():
    score = make_score([(0, 3, 4)], end_ticks=10)
    assert len(bar_grid(score, end_ticks=1440 * 4 + 1)) == 5


def test_bar_that_is_not_a_whole_number_of_ticks():
    score = make_score([(0, 7, 16)], end_ticks=10, tpq=2)
    with pytest.raises(UnsupportedScoreError, match="whole number of ticks"):
        bar_grid(score)


@settings(max_examples=60, deadline=None)
@given(
    sections=st.lists(
        st.tuples(
            st.sampled_from([(2, 4), (3, 4), (4, 4), (6, 8), (5, 8), (7, 8), (3, 2)]),
            st.integers(1, 4),
        ),
        min_size=1,
        max_size=6,
    ),
    tpq=st.sampled_from([24, 96, 480]),
)
def test_grid_reproduces_any_sequence_of_sections(sections, tpq):
    events, expected, tick = [], [], 0
    for (num, den), count in sections:
        events.append((tick, num, den))
        length = 4 * num * tpq // den
        for _ in range(count):
            expected.append((tick, length, Meter(num, den)))
            tick += length
    bars = bar_grid(make_score(events, end_ticks=tick, tpq=tpq))
    # consecutive sections in the same meter are one section
    assert [(b.start_ticks, b.length_ticks, b.meter) for b in bars] == expected


def test_real_pieces_have_contiguous_grids_covering_every_note(bach_scores, other_meter_scores):
    for spec, score in [*bach_scores[:40], *other_meter_scores]:
        bars = bar_grid(score)
        assert bars[0].start_ticks == 0, spec
        for before, after in itertools.pairwise(bars):
            assert after.start_ticks == before.end_ticks, spec
        assert bars[-1].end_ticks >= score_end_ticks(score) > bars[-1].start_ticks, spec
        starts = {b.start_ticks: b for b in bars}
        for ts in score.time_signatures:
            if ts.time < score_end_ticks(score):
                assert starts[ts.time].meter == Meter(ts.numerator, ts.denominator), spec
