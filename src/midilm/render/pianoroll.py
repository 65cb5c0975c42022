"""Piano-roll pictures of a score (PNG or SVG), to see what a model wrote.

One colour per track, with a legend naming each track's General MIDI instrument; bar lines
and bar numbers from :func:`midilm.score.bar_grid`, so 3/4, 6/8 and meter changes are drawn
where the music has them; drum tracks in a lane of their own, one row per drum sound, named
after the GM percussion map; and, optionally, highlighted bars: the ones a model generated
or infilled. Notes are drawn without anti-aliasing, so each track's notes are exactly its
colour (:func:`track_color`), which tests and image tools can count.

matplotlib draws it (its object API, without pyplot, so no global figure state); it is
imported on first use. What this does not draw: velocities, controllers, lyrics.
"""

from __future__ import annotations

import colorsys
import io
import math
import operator
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from symusic.core import ScoreQuarter, ScoreSecond, ScoreTick

from midilm.errors import ConfigError, UnsupportedScoreError
from midilm.io_utils import atomic_write_bytes
from midilm.render.errors import UnsupportedFormatError
from midilm.score.gm import program_name
from midilm.score.meter import Bar, bar_grid, score_end_ticks

__all__ = [
    "GM_DRUM_NAMES",
    "HIGHLIGHT_COLOR",
    "IMAGE_FORMATS",
    "TRACK_COLORS",
    "Highlight",
    "image_format",
    "pianoroll_bytes",
    "render_pianoroll",
    "track_color",
]

IMAGE_FORMATS = ("png", "svg")

# matplotlib's tab10 and tab20's light shades, without their greys (grey is for text and
# grid lines), each set closed by a dark tab20b colour: 20 colours that tell tracks apart.
TRACK_COLORS: tuple[str, ...] = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#bcbd22", "#17becf", "#393b79",
    "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5",
    "#c49c94", "#f7b6d2", "#dbdb8d", "#9edae5", "#637939",
)  # fmt: skip
HIGHLIGHT_COLOR = "#fff1a8"  # behind the notes of highlighted bars
_BAR_LINE_COLOR = "#dddddd"
_METER_LINE_COLOR = "#888888"  # bar lines where the meter changes

# General MIDI percussion (channel 10) by key number.
GM_DRUM_NAMES: dict[int, str] = {
    35: "Acoustic Bass Drum", 36: "Bass Drum", 37: "Side Stick", 38: "Acoustic Snare",
    39: "Hand Clap", 40: "Electric Snare", 41: "Low Floor Tom", 42: "Closed Hi-Hat",
    43: "High Floor Tom", 44: "Pedal Hi-Hat", 45: "Low Tom", 46: "Open Hi-Hat",
    47: "Low-Mid Tom", 48: "Hi-Mid Tom", 49: "Crash Cymbal 1", 50: "High Tom",
    51: "Ride Cymbal 1", 52: "Chinese Cymbal", 53: "Ride Bell", 54: "Tambourine",
    55: "Splash Cymbal", 56: "Cowbell", 57: "Crash Cymbal 2", 58: "Vibraslap",
    59: "Ride Cymbal 2", 60: "Hi Bongo", 61: "Low Bongo", 62: "Mute Hi Conga",
    63: "Open Hi Conga", 64: "Low Conga", 65: "High Timbale", 66: "Low Timbale",
    67: "High Agogo", 68: "Low Agogo", 69: "Cabasa", 70: "Maracas", 71: "Short Whistle",
    72: "Long Whistle", 73: "Short Guiro", 74: "Long Guiro", 75: "Claves",
    76: "Hi Wood Block", 77: "Low Wood Block", 78: "Mute Cuica", 79: "Open Cuica",
    80: "Mute Triangle", 81: "Open Triangle",
}  # fmt: skip

_NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")

# Bars to highlight: a bar index (all tracks) or a (track index, bar index) pair, from 0.
Highlight = Iterable[int | tuple[int, int]]

# Layout, in pixels at the figure's dpi.
_LEFT_PX, _LEFT_DRUMS_PX, _RIGHT_PX, _BOTTOM_PX = 56, 118, 14, 42
_TITLE_PX, _LEGEND_ROW_PX, _LEGEND_ENTRY_PX, _METER_PX = 26, 20, 230, 16
_SEMITONE_PX, _DRUM_ROW_PX = 7, 14
_BAR_LABEL_MIN_PX = 26  # bar numbers at least this far apart

_SVG_LOCK = threading.Lock()  # the SVG options are matplotlib rcParams, i.e. global


def track_color(index: int) -> str:
    """The colour of track ``index`` (from 0) as ``"#rrggbb"``: :data:`TRACK_COLORS`, then
    hues spread by the golden angle, so that every track of a large score has its own."""
    if index < len(TRACK_COLORS):
        return TRACK_COLORS[index]
    hue = (index * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.65, 0.8)
    return f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}"


def image_format(path: str | os.PathLike[str]) -> str:
    """The picture format an output path asks for (``"roll.SVG"`` → ``"svg"``); raises
    :class:`UnsupportedFormatError` for other extensions."""
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in IMAGE_FORMATS:
        raise UnsupportedFormatError(
            f"{path}: midilm draws piano rolls as .{' .'.join(IMAGE_FORMATS)}"
            + (f", received .{suffix}" if suffix else "")
        )
    return suffix


def render_pianoroll(
    score: ScoreTick | ScoreQuarter | ScoreSecond,
    path: str | os.PathLike[str],
    *,
    highlight: Highlight | None = None,
    width_px: int = 1600,
    height_px: int | None = None,
    title: str | None = None,
    dpi: int = 100,
) -> Path:
    """Draw the score as a piano roll into ``path`` (``.png`` or ``.svg``); return the path.

    ``highlight`` marks bars, numbered from 0: an ``int`` marks a bar in every track, a
    ``(track, bar)`` pair marks it in one track's rows. The picture is ``width_px`` pixels
    wide (at ``dpi``) and ``height_px`` high; by default high enough for the pitch range
    and drum sounds used. The file appears complete or not at all.
    """
    fmt = image_format(path)
    data = pianoroll_bytes(
        score,
        fmt,
        highlight=highlight,
        width_px=width_px,
        height_px=height_px,
        title=title,
        dpi=dpi,
    )
    atomic_write_bytes(path, data)
    return Path(path)


def pianoroll_bytes(
    score: ScoreTick | ScoreQuarter | ScoreSecond,
    format: str = "png",
    *,
    highlight: Highlight | None = None,
    width_px: int = 1600,
    height_px: int | None = None,
    title: str | None = None,
    dpi: int = 100,
) -> bytes:
    """The piano roll as the bytes of a PNG or SVG file (for the HTTP server, notebooks);
    the options are those of :func:`render_pianoroll`."""
    fmt = format.lower().lstrip(".")
    if fmt not in IMAGE_FORMATS:
        raise UnsupportedFormatError(
            f"midilm draws piano rolls as {' or '.join(IMAGE_FORMATS)}, received {format!r}"
        )
    score = _as_score(score)
    for name, value, low in (("width_px", width_px, 200), ("dpi", dpi, 10)):
        _check_int(name, value, low)
    if height_px is not None:
        _check_int("height_px", height_px, 100)
    roll = _Roll.of(score)
    marks = _highlights(highlight, roll)
    fig = _draw(roll, marks, width_px, height_px, title, dpi)
    buffer = io.BytesIO()
    if fmt == "svg":
        import matplotlib

        with _SVG_LOCK, matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "midilm"}):
            fig.savefig(buffer, format="svg", dpi=dpi, metadata={"Date": None})
    else:
        fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


# --------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class _Roll:
    """What the picture shows, in ticks: the bars, the end, and each track's notes."""

    score: ScoreTick
    bars: list[Bar] | None  # None: a meter no bar grid spells (drawn without bar lines)
    end_ticks: int
    notes: list[dict[str, np.ndarray]]
    drum_keys: list[int]  # the drum sounds used, low to high

    @classmethod
    def of(cls, score: ScoreTick) -> _Roll:
        end = score_end_ticks(score)
        try:
            bars: list[Bar] | None = bar_grid(score, end)
        except UnsupportedScoreError:
            bars = None
        end_ticks = bars[-1].end_ticks if bars else max(end, 4 * int(score.ticks_per_quarter))
        notes = [track.notes.numpy() for track in score.tracks]
        keys: set[int] = set()
        for track, arrays in zip(score.tracks, notes, strict=True):
            if track.is_drum:
                keys.update(int(p) for p in np.unique(arrays["pitch"]))
        return cls(score, bars, end_ticks, notes, sorted(keys))

    def melodic_range(self) -> tuple[int, int] | None:
        pitches = [
            a["pitch"]
            for t, a in zip(self.score.tracks, self.notes, strict=True)
            if not t.is_drum and len(a["pitch"])
        ]
        if not pitches:
            return None
        every = np.concatenate(pitches)
        return int(every.min()), int(every.max())


def _highlights(highlight: Highlight | None, roll: _Roll) -> list[tuple[int | None, int]]:
    """``(track or None, bar)`` pairs, checked against the score."""
    if highlight is None:
        return []
    if isinstance(highlight, (int, tuple)):
        highlight = [highlight]  # type: ignore[list-item]
    n_tracks = len(roll.score.tracks)
    marks: list[tuple[int | None, int]] = []
    for item in highlight:
        if isinstance(item, Sequence) and not isinstance(item, str) and len(item) == 2:
            track, bar = _index(item[0], "track"), _index(item[1], "bar")
            if not 0 <= track < n_tracks:
                raise ConfigError(
                    f"highlight: track index {track} (track {track + 1} counting from 1) is "
                    f"out of range: the score has {n_tracks} tracks"
                )
            marks.append((track, bar))
        else:
            marks.append((None, _index(item, "bar")))
    if marks and roll.bars is None:
        raise ConfigError("highlight: this score's meters give no bar grid to highlight")
    n_bars = len(roll.bars or [])
    for _, bar in marks:
        if not 0 <= bar < n_bars:
            raise ConfigError(
                f"highlight: bar index {bar} (bar {bar + 1} counting from 1) is out of range: "
                f"the score has {n_bars} bars"
            )
    return marks


def _index(value: Any, what: str) -> int:
    try:
        if isinstance(value, bool):
            raise TypeError
        return operator.index(value)
    except TypeError:
        raise ConfigError(
            f"highlight takes bar numbers or (track, bar) pairs, received {what} {value!r}"
        ) from None


# --------------------------------------------------------------------------- drawing


def _draw(
    roll: _Roll,
    marks: list[tuple[int | None, int]],
    width_px: int,
    height_px: int | None,
    title: str | None,
    dpi: int,
) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    score = roll.score
    pitch_range = roll.melodic_range()
    has_drums = bool(roll.drum_keys)
    lanes: list[str] = []
    if pitch_range is not None or not has_drums:
        lanes.append("melodic")
    if has_drums:
        lanes.append("drums")
    low, high = pitch_range or (60, 72)
    lane_px = {
        "melodic": min(max((high - low + 4) * _SEMITONE_PX, 160), 640),
        "drums": min(max((len(roll.drum_keys) + 1) * _DRUM_ROW_PX, 70), 260),
    }

    left_px = _LEFT_DRUMS_PX if has_drums else _LEFT_PX
    plot_w = max(width_px - left_px - _RIGHT_PX, 50)
    per_row = max(1, plot_w // _LEGEND_ENTRY_PX)
    legend_rows = math.ceil(len(score.tracks) / per_row) if len(score.tracks) else 0
    top_px = (_TITLE_PX if title else 6) + legend_rows * _LEGEND_ROW_PX + _METER_PX + 6
    if height_px is None:
        height_px = top_px + _BOTTOM_PX + sum(lane_px[lane] for lane in lanes) + 8 * len(lanes)

    fig = Figure(figsize=(width_px / dpi, height_px / dpi), dpi=dpi, facecolor="white")
    FigureCanvasAgg(fig)
    fig.subplots_adjust(
        left=left_px / width_px,
        right=1 - _RIGHT_PX / width_px,
        bottom=_BOTTOM_PX / height_px,
        top=1 - top_px / height_px,
        hspace=8 * len(lanes) / max(height_px - top_px - _BOTTOM_PX, 1),
    )
    grid = fig.add_gridspec(len(lanes), 1, height_ratios=[lane_px[lane] for lane in lanes])
    axes: dict[str, Any] = {}
    for row, lane in enumerate(lanes):
        ax = fig.add_subplot(grid[row, 0], sharex=axes.get("melodic"))
        ax.set_xlim(0, roll.end_ticks)
        ax.set_facecolor("white")
        for spine in ax.spines.values():
            spine.set_color("#bbbbbb")
        ax.tick_params(labelsize=8, colors="#444444", length=2)
        axes[lane] = ax

    ticks_per_px = roll.end_ticks / plot_w
    if "melodic" in axes:
        _pitch_axis(axes["melodic"], low, high)
    if "drums" in axes:
        _drum_axis(axes["drums"], roll.drum_keys)
    _bar_lines(axes, roll, ticks_per_px)
    _highlight_bars(axes, roll, marks)
    _notes(axes, roll, ticks_per_px, (lane_px["melodic"] / max(high - low + 3, 1)))
    if pitch_range is None and not has_drums:
        axes["melodic"].text(
            0.5, 0.5, "no notes", transform=axes["melodic"].transAxes,
            ha="center", va="center", color="#999999",
        )  # fmt: skip

    handles = [
        Patch(facecolor=track_color(i), edgecolor="none", label=_track_label(i, track))
        for i, track in enumerate(score.tracks)
    ]
    if handles:
        fig.legend(
            handles=handles,
            loc="upper left",
            bbox_to_anchor=(left_px / width_px, 1 - ((_TITLE_PX if title else 6) / height_px)),
            ncol=per_row,
            frameon=False,
            fontsize=8,
            handlelength=1.2,
            borderaxespad=0,
            borderpad=0,
            columnspacing=1.2,
        )
    if title:
        fig.suptitle(title, x=left_px / width_px, y=1 - 4 / height_px, ha="left", va="top")
    return fig


def _track_label(index: int, track: Any) -> str:
    label = f"{index + 1} {program_name(int(track.program), bool(track.is_drum))}"
    name = str(track.name).strip()
    if name and name.lower().replace(" ", "_") not in label:
        label += f" ({name[:24]})"
    return label


def _pitch_axis(ax: Any, low: int, high: int) -> None:
    ax.set_ylim(low - 1.5, high + 1.5)
    cs = [p for p in range(low - 1, high + 2) if p % 12 == 0]
    ticks = cs if cs else [low, high]
    ax.set_yticks(ticks, [f"{_NOTE_NAMES[p % 12]}{p // 12 - 1}" for p in ticks])


def _drum_axis(ax: Any, keys: list[int]) -> None:
    ax.set_ylim(-0.7, len(keys) - 0.3)
    ax.set_yticks(range(len(keys)), [GM_DRUM_NAMES.get(k, f"Key {k}") for k in keys])
    ax.tick_params(axis="y", labelsize=7)


def _bar_lines(axes: dict[str, Any], roll: _Roll, ticks_per_px: float) -> None:
    bottom = list(axes.values())[-1]
    if roll.bars is None:
        tpq = int(roll.score.ticks_per_quarter)
        bottom.set_xlabel("quarter notes (no bar grid for these meters)", fontsize=8)
        step = _nice_step(tpq / ticks_per_px)
        positions = list(range(0, roll.end_ticks + 1, tpq * step))
        bottom.set_xticks(positions, [str(p // tpq) for p in positions])
        return
    bar_px = roll.end_ticks / len(roll.bars) / ticks_per_px
    line_step = 1 if bar_px >= 3 else _nice_step(bar_px, min_px=3)
    label_step = _nice_step(bar_px)
    meter_bars = [
        bar for i, bar in enumerate(roll.bars) if i == 0 or bar.meter != roll.bars[i - 1].meter
    ]
    starts = [b.start_ticks for b in roll.bars if b.index % line_step == 0]
    changes = [b.start_ticks for b in meter_bars if b.index > 0]
    for ax in axes.values():
        ax.vlines(starts, 0, 1, transform=ax.get_xaxis_transform(), colors=_BAR_LINE_COLOR,
                  linewidth=0.8, zorder=1)  # fmt: skip
        if changes:
            ax.vlines(changes, 0, 1, transform=ax.get_xaxis_transform(),
                      colors=_METER_LINE_COLOR, linewidth=0.9, zorder=1)  # fmt: skip
        ax.tick_params(axis="x", labelbottom=False)
    labelled = [b for b in roll.bars if b.index % label_step == 0]
    bottom.set_xticks([b.start_ticks for b in labelled], [str(b.index + 1) for b in labelled])
    bottom.tick_params(axis="x", labelbottom=True)
    bottom.set_xlabel("bar", fontsize=8, labelpad=2)
    top = next(iter(axes.values()))
    for bar in meter_bars:
        top.text(bar.start_ticks, 1.0, f" {bar.meter}", transform=top.get_xaxis_transform(),
                 fontsize=7, color="#555555", ha="left", va="bottom")  # fmt: skip


def _nice_step(px_per_unit: float, min_px: float = _BAR_LABEL_MIN_PX) -> int:
    """The smallest of 1, 2, 4, 5, 10, 20, 25, 50, 100… units that is at least min_px."""
    for magnitude in (1, 10, 100, 1000, 10000):
        for step in (1, 2, 4, 5) if magnitude == 1 else (1, 2, 2.5, 5):
            units = int(step * magnitude)
            if units * px_per_unit >= min_px:
                return units
    return 100000


def _highlight_bars(
    axes: dict[str, Any],
    roll: _Roll,
    marks: list[tuple[int | None, int]],
) -> None:
    from matplotlib.patches import Rectangle

    for track, bar_index in marks:
        bar = roll.bars[bar_index]  # type: ignore[index]  # marks imply a bar grid
        if track is None:
            for ax in axes.values():
                ax.axvspan(bar.start_ticks, bar.end_ticks, color=HIGHLIGHT_COLOR, lw=0, zorder=0)
            continue
        is_drum = bool(roll.score.tracks[track].is_drum)
        ax = axes["drums" if is_drum else "melodic"]
        pitches = roll.notes[track]["pitch"]
        if is_drum or not len(pitches):
            y0, y1 = ax.get_ylim()
        else:
            y0, y1 = int(pitches.min()) - 1.0, int(pitches.max()) + 1.0
        ax.add_patch(
            Rectangle((bar.start_ticks, y0), bar.length_ticks, y1 - y0,
                      facecolor=HIGHLIGHT_COLOR, edgecolor=track_color(track),
                      linewidth=1.0, zorder=0)
        )  # fmt: skip


def _notes(axes: dict[str, Any], roll: _Roll, ticks_per_px: float, semitone_px: float) -> None:
    from matplotlib.collections import PolyCollection

    row_of = {key: row for row, key in enumerate(roll.drum_keys)}
    min_width = 1.5 * ticks_per_px  # a 32nd note in a long piece stays visible
    half = 0.4 if semitone_px >= 3 else 0.5
    for index, (track, arrays) in enumerate(zip(roll.score.tracks, roll.notes, strict=True)):
        if not len(arrays["time"]):
            continue
        x0 = arrays["time"].astype(np.float64)
        width = np.maximum(arrays["duration"].astype(np.float64), min_width)
        if track.is_drum:
            ax = axes["drums"]
            y = np.array([row_of[int(p)] for p in arrays["pitch"]], dtype=np.float64)
            width = np.maximum(width, 3 * ticks_per_px)
        else:
            ax = axes["melodic"]
            y = arrays["pitch"].astype(np.float64)
        verts = np.empty((len(x0), 4, 2))
        verts[:, 0] = np.stack([x0, y - half], 1)
        verts[:, 1] = np.stack([x0 + width, y - half], 1)
        verts[:, 2] = np.stack([x0 + width, y + half], 1)
        verts[:, 3] = np.stack([x0, y + half], 1)
        ax.add_collection(
            PolyCollection(verts, facecolors=track_color(index), edgecolors="none",
                           linewidths=0, antialiaseds=False, zorder=2 + index * 1e-3)
        )  # fmt: skip


# --------------------------------------------------------------------------- checks


def _as_score(score: object) -> ScoreTick:
    if isinstance(score, ScoreTick):
        return score
    if isinstance(score, (ScoreQuarter, ScoreSecond)):
        return score.to("tick")
    raise TypeError(f"expected a symusic Score, received {type(score).__name__}")


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ConfigError(f"{name} must be an integer ≥ {low}, received {value!r}")
