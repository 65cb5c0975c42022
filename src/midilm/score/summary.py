"""What a score holds, in the terms a musician reads: tracks and instruments, tempos and
meters by bar, bar and note counts, length in seconds. ``midilm info`` prints
:func:`format_info` of :func:`describe`.

Bars are numbered from 1, as in a DAW; track indices are from 0, as everywhere in Python
(the CLI adds 1 when it prints them). Bars come from :func:`midilm.score.meter.bar_grid`;
when a meter change falls inside a bar (which that grid refuses), bars are counted from
symusic's downbeats instead and ``ScoreInfo.bar_note`` says so.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from symusic.core import ScoreTick

from midilm.errors import UnsupportedScoreError
from midilm.score.gm import program_name
from midilm.score.meter import bar_grid, score_end_ticks

__all__ = [
    "MeterInfo",
    "ScoreInfo",
    "TempoInfo",
    "TrackInfo",
    "describe",
    "format_info",
    "pitch_name",
]

_PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


@dataclass(frozen=True)
class TrackInfo:
    index: int  # from 0
    name: str
    program: int
    instrument: str  # GM name, or "drums"
    is_drum: bool
    note_count: int
    lowest_pitch: int | None  # None for a track without notes
    highest_pitch: int | None


@dataclass(frozen=True)
class TempoInfo:
    bar: int  # from 1
    time_ticks: int
    bpm: float  # quarter notes per minute


@dataclass(frozen=True)
class MeterInfo:
    bar: int  # from 1
    time_ticks: int
    numerator: int
    denominator: int

    def __str__(self) -> str:
        return f"{self.numerator}/{self.denominator}"


@dataclass(frozen=True)
class ScoreInfo:
    tracks: tuple[TrackInfo, ...]
    tempos: tuple[TempoInfo, ...]
    meters: tuple[MeterInfo, ...]
    bar_count: int
    note_count: int
    duration_s: float  # when the last note ends
    ticks_per_quarter: int
    bar_note: str | None = None  # how bars were counted, when not from the bar grid


def describe(score: ScoreTick) -> ScoreInfo:
    """Summarize a score (any symusic time unit; it is read in ticks)."""
    if not isinstance(score, ScoreTick):
        score = score.to("tick")
    end_ticks = score_end_ticks(score)
    bar_of, bar_count, bar_note = _bar_numbering(score, end_ticks)

    tracks = []
    for index, track in enumerate(score.tracks):
        count = len(track.notes)
        pitches = track.notes.numpy()["pitch"] if count else None
        tracks.append(
            TrackInfo(
                index=index,
                name=str(track.name),
                program=int(track.program),
                instrument=program_name(int(track.program), bool(track.is_drum)),
                is_drum=bool(track.is_drum),
                note_count=count,
                lowest_pitch=int(pitches.min()) if count else None,
                highest_pitch=int(pitches.max()) if count else None,
            )
        )
    tempos = tuple(
        TempoInfo(bar_of(int(t.time)), int(t.time), round(float(t.qpm), 3))
        for t in sorted(score.tempos, key=lambda t: t.time)
    )
    meters = tuple(
        MeterInfo(bar_of(int(ts.time)), int(ts.time), int(ts.numerator), int(ts.denominator))
        for ts in sorted(score.time_signatures, key=lambda ts: ts.time)
    )
    return ScoreInfo(
        tracks=tuple(tracks),
        tempos=tempos,
        meters=meters,
        bar_count=bar_count,
        note_count=sum(t.note_count for t in tracks),
        duration_s=_last_note_end_s(score),
        ticks_per_quarter=int(score.ticks_per_quarter),
        bar_note=bar_note,
    )


def _last_note_end_s(score: ScoreTick) -> float:
    """When the last note ends, in seconds (events after it, such as a trailing tempo
    change, do not lengthen the piece)."""
    end = 0.0
    for track in score.to("second").tracks:
        if len(track.notes):
            a = track.notes.numpy()
            end = max(end, float((a["time"] + a["duration"]).max()))
    return end


def _bar_numbering(
    score: ScoreTick, end_ticks: int
) -> tuple[Callable[[int], int], int, str | None]:
    """(tick → bar number from 1, number of bars up to the last note, note or None)."""
    try:
        bars = bar_grid(score, end_ticks)
    except UnsupportedScoreError as err:
        downbeats = np.asarray(score.get_downbeats(), dtype=np.int64)
        count = int(np.count_nonzero(downbeats < max(end_ticks, 1))) if len(downbeats) else 1

        def bar_from_downbeats(tick: int) -> int:
            return max(1, int(np.searchsorted(downbeats, tick, side="right")))

        note = f"bars counted from downbeats: {err}"
        return bar_from_downbeats, max(count, 1), note

    starts = [bar.start_ticks for bar in bars]
    last = bars[-1]

    def bar_from_grid(tick: int) -> int:
        if tick >= last.end_ticks:  # after the last note: continue the last meter
            return last.index + 2 + (tick - last.end_ticks) // last.length_ticks
        return bisect.bisect_right(starts, tick)

    return bar_from_grid, len(bars), None


def pitch_name(pitch: int) -> str:
    """MIDI pitch → scientific name (60 → ``"C4"``)."""
    return f"{_PITCH_CLASSES[pitch % 12]}{pitch // 12 - 1}"


def format_info(info: ScoreInfo) -> str:
    """A readable multi-line summary (what ``midilm info`` prints)."""
    minutes, seconds = divmod(info.duration_s, 60)
    lines = [
        f"length     {info.bar_count} bars, {info.note_count} notes, "
        f"{int(minutes)}:{seconds:04.1f} ({info.duration_s:.1f} s)",
        f"resolution {info.ticks_per_quarter} ticks per quarter",
        "meter      " + _changes([(str(m), m.bar) for m in info.meters] or [("4/4 (assumed)", 1)]),
        "tempo      "
        + _changes([(f"{t.bpm:g} bpm", t.bar) for t in info.tempos] or [("120 bpm (assumed)", 1)]),
    ]
    if info.bar_note:
        lines.append(f"note       {info.bar_note}")
    lines.append(f"tracks     {len(info.tracks)}")
    width = max((len(t.name) for t in info.tracks), default=0)
    for t in info.tracks:
        instrument = t.instrument if t.is_drum else f"{t.instrument} ({t.program})"
        pitches = (
            f"{pitch_name(t.lowest_pitch)}–{pitch_name(t.highest_pitch)}"
            if t.lowest_pitch is not None and t.highest_pitch is not None
            else "no notes"
        )
        lines.append(
            f"  {t.index + 1:>2}  {t.name:<{width}}  {instrument:<28} "
            f"{t.note_count:>6} notes  {pitches}"
        )
    return "\n".join(lines)


def _changes(items: list[tuple[str, int]], limit: int = 8) -> str:
    shown = [f"{value} (bar {bar})" for value, bar in items[:limit]]
    if len(items) > limit:
        shown.append(f"… {len(items) - limit} more")
    return ", ".join(shown)
