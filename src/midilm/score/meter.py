"""Meters and the bar grid: where each bar of a score starts and how long it is.

A bar starts at tick 0 and at every bar line after it; a time-signature event starts a new
bar, as in MIDI. Used by the tokenizers (which write one ``BAR_START`` per bar), by
``midilm info`` (bar counts) and by the music21 importer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from symusic.core import ScoreTick

from midilm.errors import UnsupportedScoreError

__all__ = ["Bar", "Meter", "bar_grid", "score_end_ticks"]


@dataclass(frozen=True, order=True)
class Meter:
    """A time signature such as 3/4 or 6/8."""

    numerator: int
    denominator: int

    def __post_init__(self) -> None:
        if self.numerator < 1 or self.denominator < 1 or self.denominator & (self.denominator - 1):
            raise ValueError(
                f"a meter needs a positive numerator and a power-of-two denominator, "
                f"received {self.numerator}/{self.denominator}"
            )

    @classmethod
    def parse(cls, text: str) -> Meter:
        """``"3/4"`` → ``Meter(3, 4)``."""
        try:
            num, den = text.strip().split("/")
            return cls(int(num), int(den))
        except ValueError as err:
            raise ValueError(f"expected a meter such as '3/4', received {text!r}") from err

    @property
    def quarters_per_bar(self) -> Fraction:
        return Fraction(4 * self.numerator, self.denominator)

    def bar_ticks(self, ticks_per_quarter: int) -> int | None:
        """Bar length in ticks, or None when it is not a whole number of ticks."""
        length = self.quarters_per_bar * ticks_per_quarter
        return int(length) if length.denominator == 1 else None

    def __str__(self) -> str:
        return f"{self.numerator}/{self.denominator}"


@dataclass(frozen=True)
class Bar:
    index: int
    start_ticks: int
    length_ticks: int
    meter: Meter

    @property
    def end_ticks(self) -> int:
        return self.start_ticks + self.length_ticks


def score_end_ticks(score: ScoreTick) -> int:
    """Tick at which the last note ends (0 for a score without notes)."""
    end = 0
    for track in score.tracks:
        if len(track.notes):
            arrays = track.notes.numpy()
            end = max(end, int((arrays["time"] + arrays["duration"]).max()))
    return end


def _meter_changes(score: ScoreTick) -> list[tuple[int, Meter]]:
    """Time-signature events as (tick, meter), sorted, one per tick (the last one wins),
    repeated meters dropped, with 4/4 at tick 0 when the score states nothing there."""
    by_tick: dict[int, Meter] = {}
    for ts in score.time_signatures:
        try:
            by_tick[int(ts.time)] = Meter(int(ts.numerator), int(ts.denominator))
        except ValueError as err:
            raise UnsupportedScoreError(
                "meter", f"time signature at tick {ts.time}: {err}"
            ) from err
    changes = sorted(by_tick.items())
    if not changes or changes[0][0] > 0:
        changes.insert(0, (0, Meter(4, 4)))
    kept = [changes[0]]
    for tick, meter in changes[1:]:
        if meter != kept[-1][1]:
            kept.append((tick, meter))
    return kept


def bar_grid(score: ScoreTick, end_ticks: int | None = None) -> list[Bar]:
    """The bars covering ``[0, end_ticks)`` (default: up to the end of the last note).

    A time-signature event starts a new bar, as in MIDI. One that falls inside a bar cuts
    that bar short; the short bar gets the meter of its length (three quarters of a 4/4 bar
    is a 3/4 bar), so that every bar is a whole bar of some meter. A short bar whose length
    no meter spells at this resolution raises :class:`UnsupportedScoreError` ("meter").
    """
    tpq = int(score.ticks_per_quarter)
    if end_ticks is None:
        end_ticks = score_end_ticks(score)
    changes = _meter_changes(score)
    bars: list[Bar] = []
    tick = 0
    for i, (change_tick, meter) in enumerate(changes):
        if bars and change_tick >= end_ticks:
            break  # meter changes after the last note do not shape any bar
        if change_tick < tick:
            bars[-1] = _cut_bar(bars[-1], change_tick, tpq)
            tick = change_tick
        length = meter.bar_ticks(tpq)
        if length is None:
            raise UnsupportedScoreError(
                "meter", f"a {meter} bar is not a whole number of ticks at {tpq} ticks per quarter"
            )
        stop = end_ticks if i + 1 == len(changes) else min(changes[i + 1][0], end_ticks)
        count = max(1, math.ceil((stop - tick) / length))
        for _ in range(count):
            bars.append(Bar(len(bars), tick, length, meter))
            tick += length
    return bars


def _cut_bar(bar: Bar, end_ticks: int, tpq: int) -> Bar:
    """``bar`` ending at ``end_ticks``, with the meter that spells its new length."""
    length = Fraction(end_ticks - bar.start_ticks, tpq)  # in quarters
    denominator = bar.meter.denominator
    while denominator <= 64:
        beats = length * denominator / 4
        if beats.denominator == 1 and beats > 0:
            return Bar(
                bar.index,
                bar.start_ticks,
                end_ticks - bar.start_ticks,
                Meter(int(beats), denominator),
            )
        denominator *= 2
    raise UnsupportedScoreError(
        "meter",
        f"bar {bar.index + 1} is cut to {length} quarters by a time signature at tick "
        f"{end_ticks}, a length no meter spells",
    )
