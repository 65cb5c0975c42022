"""The multi-track text codec of the "GPT-2 for Music" (MMM-style) models.

A piece is text such as ``PIECE_START TRACK_START INST=34 DENSITY=8 BAR_START NOTE_ON=60
TIME_DELTA=4 NOTE_OFF=60 BAR_END TRACK_END`` (grammar: ``docs/mmm-grammar.md``). Every
setting that varies between published releases is a field of :class:`MMMConfig`, saved with
the tokenizer, so that our models and the published checkpoints read the same text.

Rules this codec chose where the published format is silent:

- **Notes across bar lines.** A note keeps sounding across ``BAR_START``: its ``NOTE_OFF``
  is written in the bar where it ends, at its end time (a note ending exactly on a bar line is
  closed inside the earlier bar). So ``decode(encode(s)) == quantize(s)`` note for note.
  A window cuts notes at its edges: a note sounding into a window starts at the window's
  first step, one sounding out of it ends at the window's last bar line.
- **Meters.** With ``meter_tokens`` on, ``TIME_SIGNATURE=3/4`` follows ``PIECE_START`` (the
  meter of the first bar), and a bar whose meter differs from the bar before carries the
  new one right after its ``BAR_START``, in every track.
- **Density of a whole piece.** Bins are defined over a window of ``bars_per_window`` bars;
  a piece of another length is binned on its count scaled to that length.
- **Infill.** A masked bar is self-contained: notes crossing its bar lines are split there
  before masking, so an answer never closes a note it did not open.

The codec knows nothing about models or sampling; :mod:`.mmm_grammar` says which token may
follow which.
"""

from __future__ import annotations

import functools
import itertools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from symusic.core import NoteTickList, ScoreTick, TempoTick, TimeSignatureTick, TrackTick

from midilm.config import FrozenConfig
from midilm.errors import (
    ConfigError,
    TokenizerMismatchError,
    UnknownTokenError,
    UnsupportedScoreError,
)
from midilm.score.meter import Bar, Meter, bar_grid
from midilm.score.quantize import quantize
from midilm.tokenization.base import (
    MIDILM_JSON,
    TOKENIZER_JSON,
    read_midilm_json,
    write_midilm_json,
)
from midilm.tokenization.mmm_vocab import DRUMS, SPECIAL_TOKENS, Kind, MMMVocabulary, parse_token

if TYPE_CHECKING:
    from midilm.tokenization.mmm_grammar import MMMGrammar

__all__ = [
    "COMMON_METERS",
    "MMMConfig",
    "MMMTokenizer",
    "MMMWindow",
    "Piece",
    "PieceTrack",
    "window_spans",
]

COMMON_METERS = (
    "4/4", "3/4", "2/4", "2/2", "3/2", "6/4", "5/4", "7/4",
    "3/8", "6/8", "9/8", "12/8", "5/8", "7/8",
    "1/4", "1/2", "1/8",
)  # fmt: skip
"""Meters a ``meter_tokens`` vocabulary covers unless told otherwise (the short ones spell
incomplete bars cut by a meter change, see :func:`midilm.score.bar_grid`)."""


@dataclass(frozen=True)
class MMMConfig(FrozenConfig):
    """Settings of the MMM text format (each one a "setting" of ``mmm-grammar.md``).

    ``density_edges`` are note counts per window of ``bars_per_window`` bars (per bar when
    ``density_placement="bar"``); ``None`` means midilm's default ladder (1, 1.4, 2 … 16
    notes per bar, geometric) until :meth:`MMMTokenizer.fit_density` learns the corpus'
    percentiles. ``meters=None`` means 4/4 alone, or :data:`COMMON_METERS` with
    ``meter_tokens``.
    """

    steps_per_quarter: int = 4
    bars_per_window: int = 4
    density_bins: int = 10
    density_edges: tuple[float, ...] | None = None
    density_placement: Literal["track", "bar"] = "track"
    velocity: int = 80
    default_note_steps: int = 4
    fill_placeholder: str = "FILL_IN"
    meter_tokens: bool = False
    meters: tuple[str, ...] | None = None
    float_deltas: bool = False
    genres: tuple[str, ...] = ()

    def _validate(self) -> None:
        positive = ("steps_per_quarter", "bars_per_window", "density_bins", "default_note_steps")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"MMMConfig.{name} must be ≥ 1, received {getattr(self, name)}")
        if not 1 <= self.velocity <= 127:
            raise ConfigError(f"MMMConfig.velocity must be in 1–127, received {self.velocity}")
        if not self.fill_placeholder or " " in self.fill_placeholder:
            raise ConfigError(
                f"MMMConfig.fill_placeholder must be one word, received {self.fill_placeholder!r}"
            )
        meters = self.meters
        if meters is None:
            meters = COMMON_METERS if self.meter_tokens else ("4/4",)
            object.__setattr__(self, "meters", meters)
        if not meters:
            raise ConfigError("MMMConfig.meters must name at least one meter, received ()")
        if not self.meter_tokens and len(meters) != 1:
            raise ConfigError(
                f"MMMConfig.meters lists {len(meters)} meters but meter_tokens is off; "
                "without TIME_SIGNATURE tokens a vocabulary speaks one meter"
            )
        for text in meters:
            try:
                meter = Meter.parse(text)
            except ValueError as err:
                raise ConfigError(f"MMMConfig.meters: {err}") from None
            if meter.bar_ticks(self.steps_per_quarter) is None:
                raise ConfigError(
                    f"MMMConfig.meters: a {text} bar is not a whole number of steps at "
                    f"steps_per_quarter={self.steps_per_quarter}"
                )
        for genre in self.genres:
            if not genre or " " in genre:
                raise ConfigError(f"MMMConfig.genres: one word each, received {genre!r}")
        if self.density_edges is None:
            object.__setattr__(self, "density_edges", self._default_edges())
        edges = self.density_edges
        assert edges is not None
        if len(edges) != self.density_bins - 1:
            raise ConfigError(
                f"MMMConfig.density_edges needs density_bins - 1 = {self.density_bins - 1} "
                f"edges, received {len(edges)}"
            )
        if any(b < a for a, b in itertools.pairwise(edges)):
            raise ConfigError(f"MMMConfig.density_edges must not decrease, received {edges}")

    def _default_edges(self) -> tuple[float, ...]:
        if self.density_bins == 1:
            return ()
        per_bar = np.geomspace(1.0, 16.0, self.density_bins - 1)
        unit = 1 if self.density_placement == "bar" else self.bars_per_window
        return tuple(round(float(x) * unit, 3) for x in per_bar)

    @property
    def meter_list(self) -> tuple[Meter, ...]:
        assert self.meters is not None
        return tuple(Meter.parse(m) for m in self.meters)

    @property
    def max_bar_steps(self) -> int:
        return max(int(m.quarters_per_bar * self.steps_per_quarter) for m in self.meter_list)


@dataclass(frozen=True)
class MMMWindow:
    """One window of a piece: its first bar (from 0), its length in bars, and its ids."""

    start_bar: int
    num_bars: int
    ids: list[int]


@dataclass
class PieceTrack:
    """One track's notes in grid steps (what the encoder reads)."""

    program: int  # 0–127, or DRUMS
    name: str
    onset: np.ndarray  # (N,) steps
    end: np.ndarray  # (N,) steps
    pitch: np.ndarray  # (N,)


@dataclass
class Piece:
    """A quantized score cut into bars, in grid steps: the encoder's input. Samplers build
    one note by note and encode spans of it with :meth:`MMMTokenizer.encode_bars`."""

    bars: list[Bar]
    tracks: list[PieceTrack]


class MMMTokenizer:
    """Score ↔ MMM text ↔ ids.

    ``MMMTokenizer()`` is the published 4/4, 16th-note format; settings go as keywords
    (``MMMTokenizer(meter_tokens=True)``) or as an :class:`MMMConfig`.
    """

    kind: ClassVar[str] = "mmm"

    def __init__(
        self,
        config: MMMConfig | None = None,
        *,
        vocabulary: MMMVocabulary | None = None,
        **settings: Any,
    ) -> None:
        if config is not None and settings:
            raise TypeError("pass either an MMMConfig or keyword settings, not both")
        self.config = config if config is not None else MMMConfig.from_dict(settings)
        self.vocab = vocabulary if vocabulary is not None else _build_vocabulary(self.config)
        self._step_edges = np.asarray(self.config.density_edges, dtype=np.float64)

    # ------------------------------------------------------------------ vocabulary
    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def pad_id(self) -> int:
        return self.vocab.pad_id

    def token_to_id(self, token: str) -> int:
        return self.vocab.id(token)

    def id_to_token(self, token_id: int) -> str:
        return self.vocab.token(token_id)

    def ids_to_text(self, ids: Iterable[int]) -> str:
        tokens = self.vocab.tokens
        return " ".join(tokens[i] for i in ids)

    def text_to_ids(self, text: str) -> list[int]:
        return self.vocab.ids(text.split())

    def __repr__(self) -> str:
        c = self.config
        return (
            f"MMMTokenizer({len(self.vocab)} tokens, {c.steps_per_quarter} steps/quarter, "
            f"{c.bars_per_window}-bar windows, {c.density_bins} density bins, meters "
            f"{', '.join(c.meters or ())})"
        )

    # ------------------------------------------------------------------ density
    def density_bin(self, note_count: float, num_bars: int | None = None) -> int:
        """The density bin of ``note_count`` notes over ``num_bars`` bars (default: one
        window, or one bar with per-bar placement)."""
        unit = 1 if self.config.density_placement == "bar" else self.config.bars_per_window
        if num_bars is not None and num_bars != unit:
            note_count = note_count * unit / max(num_bars, 1)
        return int(np.digitize(note_count, self._step_edges))

    def density_range(self, bin_: int, num_bars: int | None = None) -> tuple[int, int | None]:
        """The note counts over ``num_bars`` bars that :meth:`density_bin` puts in ``bin_``,
        as ``(fewest, most)`` (``most`` None: no upper bound, the top bin). A bin no whole
        count reaches (edges closer than one note once scaled to a short window) gives the
        counts of the nearest bins instead, so that a sampler can always land within one."""
        unit = 1 if self.config.density_placement == "bar" else self.config.bars_per_window
        bars = unit if num_bars is None else max(num_bars, 1)
        top = float(self._step_edges[-1]) if len(self._step_edges) else 0.0
        limit = int(np.ceil(top * bars / unit)) + 1  # this count and more: the top bin
        counts = np.arange(limit + 1)
        bins = np.array([self.density_bin(int(c), bars) for c in counts])
        distance = np.abs(bins - bin_)
        chosen = counts[distance == distance.min()]
        most = int(chosen.max())
        return int(chosen.min()), None if most == limit else most

    def fit_density(self, scores: Iterable[ScoreTick], hop: int | None = None) -> MMMTokenizer:
        """A tokenizer whose density edges are the percentiles of the given training pieces
        at ``range(100 // bins, 100, 100 // bins)``, over windows (or bars) with notes."""
        bins = self.config.density_bins
        counts: list[int] = []
        for score in scores:
            piece = self._prepare(score)
            if self.config.density_placement == "bar":
                for track in piece.tracks:
                    starts = np.array([b.start_ticks for b in piece.bars])
                    per_bar = np.bincount(
                        np.searchsorted(starts, track.onset, "right") - 1, minlength=len(starts)
                    )
                    counts.extend(int(c) for c in per_bar if c > 0)
                continue
            for start, stop in window_spans(len(piece.bars), self.config.bars_per_window, hop):
                lo, hi = piece.bars[start].start_ticks, piece.bars[stop - 1].end_ticks
                for track in piece.tracks:
                    count = int(np.count_nonzero((track.onset < hi) & (track.end > lo)))
                    if count:
                        counts.append(count)
        if not counts:
            raise ValueError("fit_density needs at least one piece with notes")
        percentiles = list(range(100 // bins, 100, 100 // bins))[: bins - 1]
        edges = tuple(float(x) for x in np.percentile(np.asarray(counts), percentiles))
        return MMMTokenizer(self.config.replace(density_edges=edges))

    # ------------------------------------------------------------------ encoding
    def encode(self, score: ScoreTick, *, genre: str | None = None) -> list[int]:
        """The whole piece, all bars, as ids."""
        piece = self._prepare(score)
        return self._encode_span(piece, 0, len(piece.bars), genre=genre)

    def encode_text(self, score: ScoreTick, *, genre: str | None = None) -> str:
        return self.ids_to_text(self.encode(score, genre=genre))

    def windows(
        self,
        score: ScoreTick,
        bars: int | None = None,
        hop: int | None = None,
        *,
        genre: str | None = None,
    ) -> list[MMMWindow]:
        """Windows of ``bars`` bars (default ``bars_per_window``) every ``hop`` bars (default
        half a window), as a model sees them in training. Tracks silent in a window are left
        out of it; a window with no notes at all is skipped. A piece shorter than a window
        gives one window of its own length."""
        piece = self._prepare(score)
        out = []
        for start, stop in window_spans(len(piece.bars), bars or self.config.bars_per_window, hop):
            ids = self._encode_span(piece, start, stop, genre=genre)
            if ids:
                out.append(MMMWindow(start, stop - start, ids))
        return out

    def encode_infill(
        self,
        score: ScoreTick,
        masked: Iterable[tuple[int, int]],
        *,
        bars: tuple[int, int] | None = None,
        genre: str | None = None,
    ) -> list[int]:
        """Bar-infilling text: each masked ``(track, bar)`` (track index among the score's
        tracks with notes, bar index from 0 within the span) becomes ``BAR_START FILL_IN
        BAR_END`` and its events follow the last ``TRACK_END`` as ``FILL_START … FILL_END``,
        in order of appearance. ``bars`` = ``(first, stop)`` encodes a span (a window)
        instead of the whole piece."""
        piece = self._prepare(score)
        start, stop = bars if bars is not None else (0, len(piece.bars))
        if not 0 <= start < stop <= len(piece.bars):
            raise ValueError(f"bars must lie within 0–{len(piece.bars)}, received {bars}")
        cells = sorted(set(masked))
        for track, bar in cells:
            if not 0 <= track < len(piece.tracks) or not 0 <= bar < stop - start:
                raise ValueError(
                    f"masked cell (track {track}, bar {bar}) is outside the piece "
                    f"({len(piece.tracks)} tracks, {stop - start} bars)"
                )
        return self._encode_span(piece, start, stop, genre=genre, masked=cells, keep_empty=True)

    def encode_bars(
        self,
        piece: Piece,
        start: int,
        stop: int,
        *,
        masked: Sequence[tuple[int, int]] = (),
        genre: str | None = None,
    ) -> list[int]:
        """Bars ``[start, stop)`` of a piece as one sequence, every track kept in order even
        when silent there (a sampler needs track *i* of the text to be track *i*);
        ``masked`` ``(track, bar within the span)`` cells become infill placeholders."""
        if not 0 <= start < stop <= len(piece.bars):
            raise ValueError(f"bars must lie within 0–{len(piece.bars)}, received {start}–{stop}")
        cells = sorted(set(masked))
        return self._encode_span(piece, start, stop, genre=genre, masked=cells, keep_empty=True)

    def encode_window(
        self,
        piece: Piece,
        start: int,
        stop: int,
        *,
        track_order: Sequence[int] | None = None,
        masked: Sequence[tuple[int, int]] = (),
        densities: list[tuple[int, int]] | None = None,
        genre: str | None = None,
    ) -> list[int]:
        """Bars ``[start, stop)`` of a piece as a training example, as :meth:`windows`
        writes them: tracks silent in the span are left out, and ``[]`` comes back when
        every track is.

        Hooks for dataset preparation (:mod:`midilm.data.prepare`), which tokenizes a piece
        once and varies its examples: ``track_order`` lists the indices of
        ``piece.tracks`` in the order to write them (a shuffled order; tracks not listed
        are left out); ``masked`` ``(track index, bar within the span)`` cells become
        infill placeholders, answered after the last track in order of appearance;
        ``densities``, when given, receives ``(note count, bars)`` for every ``DENSITY``
        token written, in order, so that the caller can bin them again once the density
        edges are fitted (:meth:`density_bin` takes the same pair).
        """
        if not 0 <= start < stop <= len(piece.bars):
            raise ValueError(f"bars must lie within 0–{len(piece.bars)}, received {start}–{stop}")
        if track_order is not None:
            order = [int(i) for i in track_order]
            if len(set(order)) != len(order) or not all(0 <= i < len(piece.tracks) for i in order):
                raise ValueError(
                    f"track_order must list track indices (0–{len(piece.tracks) - 1}) at most "
                    f"once each, received {list(track_order)}"
                )
            track_order = order
        return self._encode_span(
            piece,
            start,
            stop,
            genre=genre,
            masked=sorted(set(masked)),
            track_order=track_order,
            densities=densities,
        )

    def prepare(self, score: ScoreTick) -> Piece:
        """Quantize a score and cut it into bars (raises for meters the settings lack)."""
        return self._prepare(score)

    def _prepare(self, score: ScoreTick) -> Piece:
        if not isinstance(score, ScoreTick):
            raise TypeError(f"expected a symusic Score (ticks), received {type(score).__name__}")
        cfg = self.config
        q = quantize(score, cfg.steps_per_quarter)
        if not q.tracks:
            raise UnsupportedScoreError("no_notes", "the score has no notes")
        bars = bar_grid(q)
        allowed = set(cfg.meter_list)
        for bar in bars:
            if bar.meter not in allowed:
                if not cfg.meter_tokens:
                    raise UnsupportedScoreError(
                        "meter",
                        f"bar {bar.index + 1} is in {bar.meter}; this tokenizer speaks "
                        f"{', '.join(cfg.meters or ())} only — set meter_tokens=True "
                        "(MMMConfig.meter_tokens) to encode other meters",
                    )
                raise UnsupportedScoreError(
                    "meter",
                    f"bar {bar.index + 1} is in {bar.meter}, which is not among this "
                    f"vocabulary's meters ({', '.join(cfg.meters or ())}; MMMConfig.meters)",
                )
        tracks = []
        for track in q.tracks:
            a = track.notes.numpy()
            onset = a["time"].astype(np.int64)
            tracks.append(
                PieceTrack(
                    program=DRUMS if track.is_drum else int(track.program),
                    name=str(track.name),
                    onset=onset,
                    end=onset + a["duration"].astype(np.int64),
                    pitch=a["pitch"].astype(np.int64),
                )
            )
        return Piece(bars, tracks)

    def _encode_span(
        self,
        piece: Piece,
        start: int,
        stop: int,
        *,
        genre: str | None = None,
        masked: Sequence[tuple[int, int]] = (),
        keep_empty: bool = False,
        track_order: Sequence[int] | None = None,
        densities: list[tuple[int, int]] | None = None,
    ) -> list[int]:
        cfg, vocab = self.config, self.vocab
        bars = piece.bars[start:stop]
        lo, hi = bars[0].start_ticks, bars[-1].end_ticks
        starts = np.array([b.start_ticks for b in bars], dtype=np.int64)
        header = [vocab.bare_id(Kind.PIECE_START)]
        if cfg.meter_tokens:
            header.append(self._meter_id(bars[0].meter))
        if genre is not None:
            header.append(vocab.id(f"GENRE={genre}"))
        out: list[int] = []
        fills: list[list[int]] = []
        masked_by_track: dict[int, list[int]] = {}
        for track_index, bar in masked:
            masked_by_track.setdefault(track_index, []).append(bar)
        for index in range(len(piece.tracks)) if track_order is None else track_order:
            track = piece.tracks[index]
            inside = (track.onset < hi) & (track.end > lo)
            if not inside.any() and not keep_empty:
                continue
            onset = np.maximum(track.onset[inside], lo)
            end = np.minimum(track.end[inside], hi)
            pitch = track.pitch[inside]
            cut_bars = masked_by_track.get(index, [])
            if cut_bars:
                cuts = sorted(
                    {bars[b].start_ticks for b in cut_bars} | {bars[b].end_ticks for b in cut_bars}
                )
                onset, end, pitch = _split_at(onset, end, pitch, np.array(cuts, dtype=np.int64))
            out.extend(
                self._track_ids(
                    track.program, onset, end, pitch, bars, starts, cut_bars, fills, densities
                )
            )
        if not out:
            return []
        ids = header + out
        for answer in fills:
            ids.append(vocab.bare_id(Kind.FILL_START))
            ids.extend(answer)
            ids.append(vocab.bare_id(Kind.FILL_END))
        return ids

    def _meter_id(self, meter: Meter) -> int:
        return self.vocab.id(f"TIME_SIGNATURE={meter}")

    def _track_ids(
        self,
        program: int,
        onset: np.ndarray,
        end: np.ndarray,
        pitch: np.ndarray,
        bars: list[Bar],
        starts: np.ndarray,
        masked_bars: Sequence[int],
        fills: list[list[int]],
        densities: list[tuple[int, int]] | None = None,
    ) -> list[int]:
        cfg, vocab = self.config, self.vocab
        n_bars = len(bars)
        inst = vocab.inst[program]
        if inst < 0:
            raise UnknownTokenError(
                f"{'INST=DRUMS' if program == DRUMS else f'INST={program}'!r} is not in "
                "this vocabulary"
            )
        # Events: note-offs then note-ons at one instant, earlier notes first.
        n = len(onset)
        times = np.concatenate([end, onset])
        is_on = np.concatenate([np.zeros(n, dtype=np.int64), np.ones(n, dtype=np.int64)])
        order = np.lexsort(
            (np.concatenate([pitch, pitch]), np.concatenate([onset, onset]), is_on, times)
        )
        times, is_on, pitches = times[order], is_on[order], np.concatenate([pitch, pitch])[order]
        # A note-on belongs to the bar it starts in; a note-off on a bar line to the bar before.
        bar_of = np.where(
            is_on == 1,
            np.searchsorted(starts, times, "right") - 1,
            np.searchsorted(starts, times, "left") - 1,
        )
        previous = np.empty_like(times)
        if len(times):
            previous[0] = starts[bar_of[0]]
            same_bar = bar_of[1:] == bar_of[:-1]
            previous[1:] = np.where(same_bar, times[:-1], starts[bar_of[1:]])
        delta = times - previous
        event_ids = np.where(is_on == 1, vocab.note_on[pitches], vocab.note_off[pitches])
        if len(event_ids) and event_ids.min() < 0:
            bad = int(np.argmax(event_ids < 0))
            kind = "NOTE_ON" if is_on[bad] else "NOTE_OFF"
            raise UnknownTokenError(vocab._missing_message(f"{kind}={int(pitches[bad])}"))
        has_delta = delta > 0
        if has_delta.any():
            if delta.max() >= len(vocab.time_delta) or vocab.time_delta[delta[has_delta]].min() < 0:
                bad = int(
                    delta[has_delta][
                        np.argmax(
                            (delta[has_delta] >= len(vocab.time_delta))
                            | (
                                vocab.time_delta[
                                    np.minimum(delta[has_delta], len(vocab.time_delta) - 1)
                                ]
                                < 0
                            )
                        )
                    ]
                )
                raise UnknownTokenError(vocab._missing_message(vocab.delta_spelling(bad)))
            delta_ids = np.where(has_delta, vocab.time_delta[np.where(has_delta, delta, 0)], -1)
        else:
            delta_ids = np.full(len(delta), -1, dtype=np.int64)
        pairs = np.stack([delta_ids, event_ids], axis=1).ravel()
        flat = pairs[pairs >= 0].tolist()
        per_event = np.concatenate([[0], np.cumsum(1 + has_delta)])
        bounds = per_event[np.searchsorted(bar_of, np.arange(n_bars + 1), "left")].tolist()

        bar_start = vocab.bare_id(Kind.BAR_START)
        bar_end = vocab.bare_id(Kind.BAR_END)
        out = [vocab.bare_id(Kind.TRACK_START), int(inst)]
        per_bar_density = cfg.density_placement == "bar"
        if per_bar_density:
            bar_counts = np.bincount(bar_of[is_on == 1], minlength=n_bars)
        else:
            out.append(self._density_id(self.density_bin(n, n_bars)))
            if densities is not None:
                densities.append((n, n_bars))
        masked = set(masked_bars)
        for b in range(n_bars):
            out.append(bar_start)
            if cfg.meter_tokens and b > 0 and bars[b].meter != bars[b - 1].meter:
                out.append(self._meter_id(bars[b].meter))
            if per_bar_density:
                out.append(self._density_id(self.density_bin(int(bar_counts[b]), 1)))
                if densities is not None:
                    densities.append((int(bar_counts[b]), 1))
            body = flat[bounds[b] : bounds[b + 1]]
            if b in masked:
                out.append(vocab.bare_id(Kind.FILL_IN))
                fills.append(body)
            else:
                out.extend(body)
            out.append(bar_end)
        out.append(vocab.bare_id(Kind.TRACK_END))
        return out

    def _density_id(self, bin_: int) -> int:
        if bin_ >= len(self.vocab.density) or self.vocab.density[bin_] < 0:
            raise UnknownTokenError(f"'DENSITY={bin_}' is not in this vocabulary")
        return int(self.vocab.density[bin_])

    # ------------------------------------------------------------------ decoding
    def decode(
        self,
        tokens: Sequence[int] | str | Sequence[str],
        *,
        ticks_per_quarter: int = 480,
        tempo_bpm: float = 120.0,
    ) -> ScoreTick:
        """MMM ids or text → Score, as the published decoders read it (time resets at every
        ``BAR_START``; a note never closed lasts ``default_note_steps`` or to the end of its
        track, whichever is first). Fill answers are spliced into their placeholders.
        Tokens that are not music (``[PAD]``, ``STYLE=…``, ``KEY=…``, ``DENSITY=…``) are
        skipped; decoding stops at ``PIECE_END``."""
        kinds, values, names = self._parse(tokens)
        if (kinds == Kind.FILL_START).any():
            kinds, values = _splice_fills(kinds, values)
        return _decode_events(kinds, values, names, self.config, ticks_per_quarter, tempo_bpm)

    def _parse(
        self, tokens: Sequence[int] | str | Sequence[str]
    ) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Kinds and values as arrays; a ``TIME_SIGNATURE`` value indexes the returned
        meter names."""
        vocab = self.vocab
        if isinstance(tokens, str):
            tokens = tokens.split()
        if len(tokens) and isinstance(tokens[0], str):
            kinds = np.empty(len(tokens), dtype=np.int64)
            values = np.full(len(tokens), -1, dtype=np.int64)
            names: list[str] = []
            index = vocab.index
            for position, token in enumerate(tokens):
                known = index.get(token)
                if known is not None and vocab.kinds[known] != Kind.TIME_SIGNATURE:
                    kinds[position] = vocab.kinds[known]
                    values[position] = vocab.values[known]
                    continue
                try:
                    kind, value = parse_token(str(token), self.config.fill_placeholder)
                except UnknownTokenError as err:
                    raise UnknownTokenError(f"token {position}: {err}") from None
                kinds[position] = kind
                if kind is Kind.TIME_SIGNATURE:
                    values[position] = len(names)
                    names.append(str(value))
                elif isinstance(value, int):
                    values[position] = value
            return kinds, values, names
        ids = np.asarray(tokens, dtype=np.int64)
        if len(ids) and (ids.min() < 0 or ids.max() >= len(vocab)):
            bad = int(ids[(ids < 0) | (ids >= len(vocab))][0])
            raise UnknownTokenError(f"id {bad} is outside the vocabulary (0–{len(vocab) - 1})")
        return vocab.kinds[ids].astype(np.int64), vocab.values[ids].astype(np.int64), vocab.meters

    # ------------------------------------------------------------------ grammar, files
    def grammar(
        self,
        bars: int | None = None,
        *,
        allow_placeholders: bool = True,
        bar_meters: list[str] | None = None,
        control_density: bool = True,
    ) -> MMMGrammar:
        """The state machine of which id may follow (``bars``: bars per track, if known;
        ``allow_placeholders=False`` when composing, where ``FILL_IN`` makes no sense;
        ``bar_meters``: the meter of every bar, when the bar grid is given;
        ``control_density=False``: its sampling mask does not steer tracks into their
        ``DENSITY`` bins)."""
        from midilm.tokenization.mmm_grammar import MMMGrammar

        return MMMGrammar(
            self,
            bars=bars,
            allow_placeholders=allow_placeholders,
            bar_meters=bar_meters,
            control_density=control_density,
        )

    def hf_tokenizer_json(self) -> str:
        """The vocabulary as a Hugging Face ``tokenizers`` WordLevel file."""
        from tokenizers import Tokenizer, models, pre_tokenizers

        hf = Tokenizer(models.WordLevel(vocab=dict(self.vocab.index), unk_token="[UNK]"))
        hf.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        hf.add_special_tokens([t for t in SPECIAL_TOKENS if t in self.vocab.index])
        return hf.to_str(pretty=True)

    def save(self, directory: str | Path) -> None:
        """``tokenizer.json`` (WordLevel, for ``AutoTokenizer``), ``tokenizer_config.json``
        and the settings in ``midilm.json``."""
        from midilm.io_utils import atomic_write_text

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write_text(directory / TOKENIZER_JSON, self.hf_tokenizer_json())
        hf_config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "unk_token": "[UNK]",
            "pad_token": "[PAD]",
            "mask_token": "[MASK]",
            "cls_token": "[CLS]",
            "sep_token": "[SEP]",
            "clean_up_tokenization_spaces": False,
        }
        atomic_write_text(
            directory / "tokenizer_config.json", json.dumps(hf_config, indent=2) + "\n"
        )
        write_midilm_json(
            directory, {"tokenizer": {"kind": "mmm", "config": self.config.to_dict()}}
        )

    @classmethod
    def load(cls, directory: str | Path, **overrides: Any) -> MMMTokenizer:
        """Load a saved tokenizer, or a published checkpoint's vocabulary (settings then
        inferred from the tokens: see :func:`_infer_config`; ``overrides`` fix any)."""
        directory = Path(directory)
        path = directory / TOKENIZER_JSON
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no tokenizer file")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            vocab_map = data["model"]["vocab"]
            if data["model"]["type"] != "WordLevel":
                raise TypeError(data["model"]["type"])
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
            raise TokenizerMismatchError(
                f"{path}: not a Hugging Face WordLevel tokenizer file ({err})"
            ) from err
        tokens = [t for t, _ in sorted(vocab_map.items(), key=lambda kv: kv[1])]
        if [vocab_map[t] for t in tokens] != list(range(len(tokens))):
            raise TokenizerMismatchError(f"{path}: ids must run 0…{len(tokens) - 1} without gaps")
        saved = read_midilm_json(directory).get("tokenizer", {})
        if saved and saved.get("kind") != "mmm":
            raise TokenizerMismatchError(
                f"{directory / MIDILM_JSON}: holds a {saved.get('kind')!r} tokenizer, not 'mmm'"
            )
        fill = overrides.get("fill_placeholder") or saved.get("config", {}).get(
            "fill_placeholder", "FILL_IN"
        )
        try:
            vocabulary = MMMVocabulary(tokens, fill_placeholder=fill)
        except UnknownTokenError as err:
            raise TokenizerMismatchError(f"{path}: {err}") from err
        settings = dict(saved["config"]) if "config" in saved else _infer_config(vocabulary)
        settings.update(overrides)
        config = MMMConfig.from_dict(settings)
        return cls(config, vocabulary=vocabulary)


# ---------------------------------------------------------------------- helpers
def _build_vocabulary(config: MMMConfig) -> MMMVocabulary:
    """The complete vocabulary of a configuration, always in this order."""
    tokens = list(SPECIAL_TOKENS)
    tokens += ["PIECE_START", "PIECE_END", "TRACK_START", "TRACK_END", "BAR_START", "BAR_END"]
    tokens += [config.fill_placeholder, "FILL_START", "FILL_END"]
    if config.meter_tokens:
        tokens += [f"TIME_SIGNATURE={m}" for m in config.meters or ()]
    tokens += [f"GENRE={g}" for g in config.genres]
    tokens += [f"INST={p}" for p in range(128)] + ["INST=DRUMS"]
    tokens += [f"DENSITY={d}" for d in range(config.density_bins)]
    tokens += [f"NOTE_ON={p}" for p in range(128)]
    tokens += [f"NOTE_OFF={p}" for p in range(128)]
    suffix = ".0" if config.float_deltas else ""
    tokens += [f"TIME_DELTA={s}{suffix}" for s in range(1, config.max_bar_steps + 1)]
    return MMMVocabulary(tokens, fill_placeholder=config.fill_placeholder)


def _infer_config(vocab: MMMVocabulary) -> dict[str, Any]:
    """Settings of a published vocabulary, read off its tokens. What tokens cannot tell
    (density edges, bars per window) takes midilm's defaults."""
    max_delta = len(vocab.time_delta) - 1
    steps = 8 if max_delta > 16 and not vocab.meters else 4
    bins = max(len(vocab.density), 1)
    settings: dict[str, Any] = {
        "steps_per_quarter": steps,
        "density_bins": bins,
        "float_deltas": vocab.float_deltas,
        "fill_placeholder": vocab.fill_placeholder,
    }
    if vocab.meters:
        settings["meter_tokens"] = True
        settings["meters"] = list(vocab.meters)
    genres = [
        vocab.tokens[i].partition("=")[2] for i in vocab.names if vocab.kinds[i] == Kind.GENRE
    ]
    if genres:
        settings["genres"] = genres
    return settings


def window_spans(total: int, bars: int | None, hop: int | None) -> list[tuple[int, int]]:
    """``[start, stop)`` bars of the windows the encoder cuts from ``total`` bars: ``bars``
    long (default 4) every ``hop`` bars (default half a window), the last one ending on the
    last bar; one window of every bar when they are fewer than a window."""
    if bars is not None and bars < 1:
        raise ValueError(f"bars must be ≥ 1, received {bars}")
    if hop is not None and hop < 1:
        raise ValueError(f"hop must be ≥ 1, received {hop}")
    size = bars or 4
    step = hop or max(1, size // 2)
    if total <= size:
        return [(0, total)]
    spans = [(s, s + size) for s in range(0, total - size + 1, step)]
    if spans[-1][1] < total:
        spans.append((total - size, total))
    return spans


def _split_at(
    onset: np.ndarray, end: np.ndarray, pitch: np.ndarray, cuts: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split every note that crosses one of the ``cuts`` (sorted step positions)."""
    o, e, p = [], [], []
    for a, b, x in zip(onset.tolist(), end.tolist(), pitch.tolist(), strict=True):
        inner = cuts[(cuts > a) & (cuts < b)].tolist()
        for lo, hi in itertools.pairwise([a, *inner, b]):
            o.append(lo)
            e.append(hi)
            p.append(x)
    return np.array(o, dtype=np.int64), np.array(e, dtype=np.int64), np.array(p, dtype=np.int64)


# Plain ints: comparing numpy arrays with enum members converts them on every call.
_STRUCTURAL = np.zeros(len(Kind), dtype=bool)
_STRUCTURAL[[Kind.TRACK_START, Kind.TRACK_END, Kind.BAR_START, Kind.INST, Kind.TIME_SIGNATURE]] = (
    True
)
_NOTE_EVENT = np.zeros(len(Kind), dtype=bool)
_NOTE_EVENT[[Kind.NOTE_ON, Kind.NOTE_OFF]] = True
_SKIPPED = np.zeros(len(Kind), dtype=bool)
_SKIPPED[[Kind.KEYS_START, Kind.PIECE_END]] = True
_BAR_START = int(Kind.BAR_START)
_FILL_END = int(Kind.FILL_END)
_FILL_IN = int(Kind.FILL_IN)
_FILL_START = int(Kind.FILL_START)
_INST = int(Kind.INST)
_KEYS_END = int(Kind.KEYS_END)
_KEYS_START = int(Kind.KEYS_START)
_NOTE_OFF = int(Kind.NOTE_OFF)
_NOTE_ON = int(Kind.NOTE_ON)
_PIECE_END = int(Kind.PIECE_END)
_TIME_DELTA = int(Kind.TIME_DELTA)
_TIME_SIGNATURE = int(Kind.TIME_SIGNATURE)
_TRACK_END = int(Kind.TRACK_END)
_TRACK_START = int(Kind.TRACK_START)


def _splice_fills(kinds: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Put each ``FILL_START … FILL_END`` answer in place of its placeholder, in order;
    a placeholder without an answer is an empty bar."""
    k, v = kinds.tolist(), values.tolist()
    answers: list[tuple[list[int], list[int]]] = []
    body: list[int] = []
    i, n = 0, len(k)
    while i < n:
        if k[i] == _FILL_START:
            j = i + 1
            while j < n and k[j] not in (_FILL_END, _FILL_START):
                j += 1
            answers.append((k[i + 1 : j], v[i + 1 : j]))
            i = j + 1 if j < n and k[j] == _FILL_END else j
            continue
        body.append(i)
        i += 1
    out_k: list[int] = []
    out_v: list[int] = []
    pending = iter(answers)
    for i in body:
        if k[i] == _FILL_IN:
            answer_k, answer_v = next(pending, ([], []))
            out_k.extend(answer_k)
            out_v.extend(answer_v)
        else:
            out_k.append(k[i])
            out_v.append(v[i])
    return np.asarray(out_k, dtype=np.int64), np.asarray(out_v, dtype=np.int64)


def _decode_events(
    k: np.ndarray,
    val: np.ndarray,
    meter_names: list[str],
    config: MMMConfig,
    tpq: int,
    tempo_bpm: float,
) -> ScoreTick:
    """Read parsed tokens as the published decoders do, with array arithmetic over the whole
    sequence: an event's time is the start step of the last anchor before it (its bar's
    ``BAR_START``, or its ``TRACK_START``) plus the deltas since. Note-offs pair with note-ons of
    the same pitch and track last-in first-out, like brackets (:func:`_pair_notes`); a note
    never closed lasts ``default_note_steps`` or to the end of its track, whichever is first.
    """
    spq = config.steps_per_quarter
    if tpq < 1 or tpq % spq:
        raise ValueError(f"ticks_per_quarter must be a positive multiple of {spq}, received {tpq}")
    if _SKIPPED[k].any():
        k, val = _drop_skipped(k, val)
    n = len(k)
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        meter = Meter.parse((config.meters or ("4/4",))[0])
        return _build_score([], empty, empty, empty, empty, meter, [], [0], config, tpq, tempo_bpm)
    idx = np.arange(n)
    # Tracks: a token belongs to the latest TRACK_START when no TRACK_END came since.
    is_start = k == _TRACK_START
    is_end = k == _TRACK_END
    track = np.cumsum(is_start) - 1
    last_start = np.maximum.accumulate(np.where(is_start, idx, -1))
    ended = np.maximum.accumulate(np.where(is_end, idx, -1))
    in_track = (last_start >= 0) & (last_start > np.concatenate([[-1], ended[:-1]]))
    n_tracks = int(track[-1]) + 1

    # Bars: the index of each BAR_START within its track, and where each bar starts.
    bar_at = np.flatnonzero((k == _BAR_START) & in_track)
    bar_track = track[bar_at]
    bar_index = np.arange(len(bar_at)) - np.searchsorted(bar_track, bar_track, "left")
    piece_meter, bar_starts, meter_changes = _bar_layout(
        k, val, meter_names, track, in_track, bar_at, bar_index, spq,
        default=(config.meters or ("4/4",))[0],
    )  # fmt: skip

    # Anchors: token positions from which an event's time counts (track and bar starts,
    # and track ends, after which events count for nothing).
    starts_at = np.flatnonzero(is_start)
    ends_at = np.flatnonzero(is_end & in_track)
    anchor_pos = np.concatenate([starts_at, bar_at, ends_at])
    order = np.argsort(anchor_pos, kind="stable")
    anchor_pos = anchor_pos[order]
    anchor_step = np.concatenate(
        [
            np.zeros(len(starts_at), np.int64),
            bar_starts[bar_index],
            np.zeros(len(ends_at), np.int64),
        ]
    )[order]
    anchor_live = np.concatenate(
        [np.ones(len(starts_at) + len(bar_at), bool), np.zeros(len(ends_at), bool)]
    )[order]
    programs = np.zeros(n_tracks, dtype=np.int64)
    inst_at = np.flatnonzero((k == _INST) & in_track)
    programs[track[inst_at]] = val[inst_at]  # the last INST of a track wins
    track_bars = np.bincount(bar_track, minlength=n_tracks)

    deltas = np.cumsum(np.where(k == _TIME_DELTA, val, 0))
    events = np.flatnonzero(_NOTE_EVENT[k])
    owner = np.searchsorted(anchor_pos, events, "right") - 1
    live = owner >= 0
    live[live] = anchor_live[owner[live]]
    events, owner = events[live], owner[live]
    pos_of = anchor_pos[owner]
    time = anchor_step[owner] + deltas[events] - deltas[pos_of]
    track_of = track[events]

    onsets, ends, pitches, note_tracks = _pair_notes(
        k[events] == _NOTE_ON, val[events], time, track_of
    )
    unclosed = ends < 0
    if unclosed.any():
        track_end = bar_starts[track_bars]
        limit = np.maximum(track_end[note_tracks[unclosed]], onsets[unclosed] + 1)
        ends[unclosed] = np.minimum(onsets[unclosed] + config.default_note_steps, limit)
    return _build_score(
        programs.tolist(), onsets, ends, pitches, note_tracks, piece_meter, meter_changes,
        bar_starts.tolist(), config, tpq, tempo_bpm,
    )  # fmt: skip


def _bar_layout(
    k: np.ndarray,
    val: np.ndarray,
    meter_names: list[str],
    track: np.ndarray,
    in_track: np.ndarray,
    bar_at: np.ndarray,
    bar_index: np.ndarray,
    spq: int,
    default: str,
) -> tuple[Meter, np.ndarray, list[tuple[int, Meter]]]:
    """The piece's first meter (a ``TIME_SIGNATURE`` before the first track), the start step
    of every bar plus one past the last, and the meter changes the first track states (a
    ``TIME_SIGNATURE`` right after its ``BAR_START``). Bars past the first track's last bar
    keep its last bar's length."""
    piece_meter = _meter(default)
    changes: list[tuple[int, Meter]] = []
    signatures = np.flatnonzero(k == _TIME_SIGNATURE) if meter_names else ()
    if len(signatures):
        header = signatures[track[signatures] < 0]
        if len(header):
            piece_meter = _meter(meter_names[val[header[-1]]])
        follows_bar = signatures[(signatures > 0) & in_track[signatures] & (track[signatures] == 0)]
        follows_bar = follows_bar[k[follows_bar - 1] == _BAR_START]
        where = np.searchsorted(bar_at, follows_bar - 1)
        changes = [
            (int(bar_index[w]), _meter(meter_names[val[i]]))
            for w, i in zip(where.tolist(), follows_bar.tolist(), strict=True)
        ]
    n_bars = int(bar_index.max()) + 1 if len(bar_index) else 1
    if not changes:
        return piece_meter, np.arange(n_bars + 1) * int(piece_meter.quarters_per_bar * spq), changes
    lengths = np.empty(n_bars, dtype=np.int64)
    length, cursor = int(piece_meter.quarters_per_bar * spq), 0
    for bar, meter in changes:
        lengths[cursor:bar] = length
        length, cursor = int(meter.quarters_per_bar * spq), bar
    lengths[cursor:] = length
    return piece_meter, np.concatenate([[0], np.cumsum(lengths)]), changes


@functools.lru_cache(maxsize=64)
def _meter(text: str) -> Meter:
    return Meter.parse(text)


def _drop_skipped(k: np.ndarray, val: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cut at ``PIECE_END`` and drop ``KEYS_START … KEYS_END`` spans."""
    stop = np.flatnonzero(k == _PIECE_END)
    if len(stop):
        k, val = k[: stop[0]], val[: stop[0]]
    depth = np.cumsum((k == _KEYS_START).astype(np.int64) - (k == _KEYS_END))
    keep = (depth <= 0) & (k != _KEYS_END)
    return k[keep], val[keep]


def _pair_notes(
    is_on: np.ndarray, pitch: np.ndarray, time: np.ndarray, track: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Match note-offs to note-ons of the same (track, pitch), last in first out.

    Arguments describe the note events in sequence order. Returns onset, end (-1 when never
    closed), pitch and track of every note, in the order of their note-ons.
    """
    if not len(is_on):
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty, empty
    group = track * 128 + pitch
    # A stable sort keeps sequence order within a group; 16-bit keys sort by radix.
    key = group.astype(np.int16) if group.max() < 2**15 else group
    order = np.argsort(key, kind="stable")
    group, on = group[order], is_on[order]
    same = group[1:] == group[:-1]
    first = np.concatenate([[True], ~same])
    ends = np.full(len(order), -1, dtype=np.int64)
    if on[first].all() and (on[1:] != on[:-1])[same].all():
        # Usual case: per group, ons and offs alternate; each off closes the on before it.
        closes = np.flatnonzero(~on & ~first)
        ends[closes - 1] = time[order[closes]]
    else:
        # Depth per group as a walk that ignores offs with nothing open (reflected at 0):
        # depth = S - min(0, running min of S). An on opens level d, an off closes level d.
        step = np.where(on, 1, -1)
        walk = np.cumsum(step)
        group_start = np.maximum.accumulate(np.where(first, np.arange(len(walk)), 0))
        s = walk - np.where(group_start > 0, walk[np.maximum(group_start - 1, 0)], 0)
        depth = s - np.minimum(_segment_running_min(s, first), 0)
        before = np.where(first, 0, np.concatenate([[0], depth[:-1]]))
        level = np.where(on, depth, before)
        kept = np.flatnonzero(on | (before > 0))
        # Within one (group, level), ons and offs alternate: each off closes the on before.
        seq = kept[np.lexsort((kept, level[kept], group[kept]))]
        same = (group[seq][1:] == group[seq][:-1]) & (level[seq][1:] == level[seq][:-1])
        closes = np.flatnonzero(np.concatenate([[False], ~on[seq][1:] & same]))
        ends[seq[closes - 1]] = time[order[seq[closes]]]
    ons = np.flatnonzero(on)
    source = order[ons]
    back = np.argsort(source)
    notes = source[back]
    return time[notes], ends[ons][back], pitch[notes], track[notes]


def _segment_running_min(values: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Running minimum of ``values`` restarting wherever ``first`` is True: shifting each
    segment below all earlier ones makes one global running minimum restart at each."""
    span = int(np.abs(values).max()) * 2 + 1 if len(values) else 1
    shift = np.cumsum(first) * span
    return np.minimum.accumulate(values - shift) + shift


def _build_score(
    programs: list[int],
    onsets: np.ndarray,
    ends: np.ndarray,
    pitches: np.ndarray,
    track_of: np.ndarray,
    piece_meter: Meter,
    meter_changes: list[tuple[int, Meter]],
    bar_starts: list[int],
    config: MMMConfig,
    tpq: int,
    tempo_bpm: float,
) -> ScoreTick:
    """Notes in steps (one array each, ``track_of`` says whose) → a Score in ticks."""
    from midilm.score.gm import program_name

    scale = tpq // config.steps_per_quarter
    score = ScoreTick(tpq)
    score.tempos.append(TempoTick(0, tempo_bpm))
    score.time_signatures.append(
        TimeSignatureTick(0, piece_meter.numerator, piece_meter.denominator)
    )
    for bar, meter in meter_changes:
        if bar > 0:
            score.time_signatures.append(
                TimeSignatureTick(bar_starts[bar] * scale, meter.numerator, meter.denominator)
            )
    keep = ends > onsets  # a note closed where it opened has no length: dropped
    span = int(onsets.max()) + 1 if len(onsets) else 1
    order = np.argsort((track_of[keep] * span + onsets[keep]) * 128 + pitches[keep])
    start = (onsets[keep][order] * scale).astype(np.int32)
    length = ((ends - onsets)[keep][order] * scale).astype(np.int32)
    pitch = pitches[keep][order].astype(np.int8)
    velocity = np.full(len(order), config.velocity, dtype=np.int8)
    bounds = np.searchsorted(track_of[keep][order], np.arange(len(programs) + 1)).tolist()
    for t, program in enumerate(programs):
        is_drum = program == DRUMS
        gm_program = 0 if is_drum else program
        track = TrackTick(program_name(gm_program, is_drum), gm_program, is_drum)
        lo, hi = bounds[t], bounds[t + 1]
        track.notes = NoteTickList.from_numpy(
            start[lo:hi], length[lo:hi], pitch[lo:hi], velocity[lo:hi]
        )
        score.tracks.append(track)
    return score
