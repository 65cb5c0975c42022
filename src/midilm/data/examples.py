"""Phase 1 of ``midilm prepare``: one source item → its *record* (:mod:`midilm.data.work`).

:class:`ItemProcessor` loads and validates a file, hashes its notes
(:mod:`midilm.data.split`), assigns its split, and tokenizes every example of the piece
with settings that do not depend on the rest of the corpus. MMM writes every window
(``bars_per_window`` bars every ``hop`` bars, tracks in a seeded random order, some windows
turned into bar-infilling examples, every transposition of a training piece and, with
instrument augmentation, other programs per window) with provisional ``DENSITY`` tokens,
and keeps the note counts behind them; REMI writes base tokens (no BPE). A file that
cannot be used becomes a rejection record with its reason. It runs the same in the main
process and in a worker (:mod:`midilm.data.workers`), and knows nothing about the others.
"""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from midilm.data.prepare_config import PrepareConfig
from midilm.data.work import write_record
from midilm.errors import InvalidMidiError, UnsupportedScoreError

__all__ = ["ItemProcessor", "Rejected", "density_fit_counts", "rejection"]

_INSTRUMENTS = 1  # the stream of the piece's generator that instrument choices come from


class ItemProcessor:
    """Turns one item into a record. One per worker process, holding the tokenizer."""

    def __init__(self, config: PrepareConfig) -> None:
        self.config = config
        if config.tokenizer == "mmm":
            from midilm.tokenization.mmm import MMMTokenizer

            self.mmm = MMMTokenizer(config.tokenizer_config())
        else:
            from midilm.tokenization.remi import REMITokenizer

            self.remi = REMITokenizer(config.tokenizer_config())

    def run(self, item: str, path: Path) -> tuple[str, str | None]:
        """Make the record of ``item`` at ``path``; ``(status, reason)`` for the progress."""
        header, arrays = self.process(item)
        write_record(path, header, arrays)
        return header["status"], header.get("reason")

    def process(self, item: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        with warnings.catch_warnings():
            # Libraries warn about odd files (MidiTok, music21); a file is either accepted
            # or rejected with a reason, and the outcome must not depend on warning filters.
            warnings.simplefilter("ignore")
            try:
                return self._process(item)
            except Rejected as rejected:
                return rejection(item, rejected.reason, rejected.detail), {}
            except (InvalidMidiError, UnsupportedScoreError) as err:
                return rejection(item, err.reason, err.detail), {}
            # One file must never stop a corpus: an unexpected error is a bug, recorded with
            # its type and message, counted, and listed in rejected.jsonl.
            except Exception as err:  # noqa: BLE001
                return rejection(item, "failed", f"{type(err).__name__}: {err}"), {}

    def _process(self, item: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        from midilm.data.split import note_hash, split_of
        from midilm.score import load_score

        cfg = self.config
        score = load_score(item)
        tracks = sum(1 for t in score.tracks if len(t.notes))
        if tracks > cfg.max_tracks:
            raise Rejected(
                "too_many_tracks",
                f"{tracks} tracks with notes (the limit is {cfg.max_tracks}: max_tracks)",
            )
        piece_hash = note_hash(score)
        split = split_of(piece_hash, cfg.split_ratios)
        facts = {"hash": piece_hash, "split": split, "tracks": tracks}
        if cfg.tokenizer == "mmm":
            return self._mmm(item, score, facts)
        return self._remi(item, score, facts)

    def _check_length(self, bars: int, notes: int) -> None:
        cfg = self.config
        if bars < cfg.min_bars:
            raise Rejected("too_short", f"{bars} bars (min_bars is {cfg.min_bars})")
        if notes < cfg.min_notes:
            raise Rejected("too_short", f"{notes} notes (min_notes is {cfg.min_notes})")
        if bars > cfg.max_bars:
            raise Rejected("too_long", f"{bars} bars (max_bars is {cfg.max_bars})")

    def _mmm(
        self, item: str, score: Any, facts: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        from midilm.data.augment import (
            choose_infill_cells,
            choose_programs,
            transpose_piece,
            with_programs,
        )
        from midilm.data.shards import token_dtype
        from midilm.data.split import piece_rng
        from midilm.tokenization.mmm import window_spans
        from midilm.tokenization.mmm_vocab import DRUMS

        cfg, tok = self.config, self.mmm
        piece = tok.prepare(score)
        notes = sum(len(t.onset) for t in piece.tracks)
        self._check_length(len(piece.bars), notes)
        train = facts["split"] == "train"
        instruments = train and cfg.instrument_augmentation != "none"
        spans = window_spans(len(piece.bars), tok.config.bars_per_window, cfg.hop)
        # Notes sounding in each window, per track: what decides which tracks a window
        # writes, and (training split) what the density edges are fitted on. With
        # instrument augmentation, also their lowest and highest pitch.
        shape = (len(spans), len(piece.tracks))
        in_window = np.zeros(shape, dtype=np.int64)
        lowest, highest = np.zeros(shape, dtype=np.int64), np.zeros(shape, dtype=np.int64)
        for w, (start, stop) in enumerate(spans):
            lo, hi = piece.bars[start].start_ticks, piece.bars[stop - 1].end_ticks
            for t, track in enumerate(piece.tracks):
                inside = (track.onset < hi) & (track.end > lo)
                in_window[w, t] = np.count_nonzero(inside)
                if instruments and in_window[w, t]:
                    lowest[w, t] = track.pitch[inside].min()
                    highest[w, t] = track.pitch[inside].max()
        fit = np.zeros(0, dtype=np.int64)
        if train:
            fit = density_fit_counts(piece, in_window, tok.config.density_placement)
        pitched = [track.program != DRUMS for track in piece.tracks]

        rng = piece_rng(cfg.seed, facts["hash"])
        shifts = cfg.transpositions if train else [0]
        chunks: list[list[int]] = []
        densities: list[tuple[int, int]] = []
        counts = Counter()
        assert cfg.max_seq_len is not None
        for shift in shifts:
            variant = transpose_piece(piece, shift)
            if variant is None:
                counts["variants_dropped"] += 1
                continue
            counts["variants"] += 1
            # Instruments come from a generator of their own per variant: the track orders
            # and infill choices are those of a dataset without instrument augmentation.
            programs_rng = None
            if instruments:
                programs_rng = piece_rng(cfg.seed, facts["hash"], _INSTRUMENTS, shift + 128)
            for w, (start, stop) in enumerate(spans):
                present = np.flatnonzero(in_window[w]).tolist()
                if not present:
                    continue
                order = rng.permutation(present).tolist() if cfg.shuffle_tracks else present
                masked: list[tuple[int, int]] = []
                if cfg.infill_share > 0 and rng.random() < cfg.infill_share:
                    masked = choose_infill_cells(rng, present, stop - start, cfg.infill_bars)
                window, renamed = variant, False
                if programs_rng is not None:
                    ranges = [
                        (int(lowest[w, t]) + shift, int(highest[w, t]) + shift)
                        if in_window[w, t] and pitched[t]
                        else None
                        for t in range(len(piece.tracks))
                    ]
                    _, programs = choose_programs(
                        programs_rng,
                        ranges,
                        keep_share=cfg.instrument_keep_share,
                        mixed_share=cfg.instrument_mixed_share,
                    )
                    renamed = any(
                        p is not None and p != track.program
                        for p, track in zip(programs, piece.tracks, strict=True)
                    )
                    if renamed:
                        window = with_programs(variant, programs)
                window_densities: list[tuple[int, int]] = []
                ids = tok.encode_window(
                    window, start, stop, track_order=order, masked=masked,
                    densities=window_densities,
                )  # fmt: skip
                if len(ids) > cfg.max_seq_len:
                    counts["too_long"] += 1
                    continue
                chunks.append(ids)
                densities.extend(window_densities)
                counts["infill"] += bool(masked)
                counts["new_instruments"] += renamed
        if not chunks:
            raise Rejected(
                "too_long",
                f"every window is over max_seq_len ({cfg.max_seq_len} ids)",
            )
        lengths = np.array([len(c) for c in chunks], dtype=np.int64)
        tokens = np.fromiter(
            (i for c in chunks for i in c), dtype=token_dtype(tok.vocab_size), count=lengths.sum()
        )
        dens = np.asarray(densities, dtype=np.int64).reshape(-1, 2)
        values, weights = np.unique(fit, return_counts=True)
        header = {
            "status": "accepted",
            "item": item,
            **facts,
            "bars": len(piece.bars),
            "notes": notes,
            "sequences": len(chunks),
            "tokens": int(lengths.sum()),
            "infill": counts["infill"],
            "new_instruments": counts["new_instruments"],
            "variants": counts["variants"],
            "variants_dropped": counts["variants_dropped"],
            "too_long": counts["too_long"],
        }
        arrays = {
            "fit_values": values.astype(np.int64),
            "fit_weights": weights.astype(np.int64),
            "lengths": lengths,
            "density_count": dens[:, 0].copy(),
            "density_bars": dens[:, 1].copy(),
            "tokens": tokens,
        }
        return header, arrays

    def _remi(
        self, item: str, score: Any, facts: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        import math

        from midilm.data.augment import transpose_score
        from midilm.data.shards import token_dtype
        from midilm.score import score_end_ticks

        cfg, tok = self.config, self.remi
        bars = max(1, math.ceil(score_end_ticks(score) / (4 * int(score.ticks_per_quarter))))
        notes = sum(len(t.notes) for t in score.tracks)
        self._check_length(bars, notes)
        shifts = cfg.transpositions if facts["split"] == "train" else [0]
        chunks: list[list[int]] = []
        counts = Counter()
        for shift in shifts:
            variant = transpose_score(score, shift)
            ids = tok.encode(variant) if variant is not None else []
            if not ids:
                if shift == 0:
                    raise Rejected(
                        "no_notes",
                        "the REMI tokenizer keeps none of its notes (it drops drums and "
                        f"pitches outside {tok.config.min_pitch}–{tok.config.max_pitch})",
                    )
                counts["variants_dropped"] += 1
                continue
            counts["variants"] += 1
            chunks.append(ids)
        lengths = np.array([len(c) for c in chunks], dtype=np.int64)
        tokens = np.fromiter(
            (i for c in chunks for i in c),
            dtype=token_dtype(tok.vocab_size),
            count=int(lengths.sum()),
        )
        header = {
            "status": "accepted",
            "item": item,
            **facts,
            "bars": bars,
            "notes": notes,
            "sequences": len(chunks),
            "tokens": int(lengths.sum()),
            "infill": 0,
            "new_instruments": 0,
            "variants": counts["variants"],
            "variants_dropped": counts["variants_dropped"],
            "too_long": 0,
        }
        return header, {"lengths": lengths, "tokens": tokens}


class Rejected(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def rejection(item: str, reason: str, detail: str) -> dict[str, Any]:
    return {"status": "rejected", "item": item, "reason": reason, "detail": detail}


def density_fit_counts(piece: Any, in_window: np.ndarray, placement: str) -> np.ndarray:
    """The note counts the density edges are fitted on, as
    :meth:`~midilm.tokenization.mmm.MMMTokenizer.fit_density` takes them: per window and
    track with notes (per bar and track with onsets for per-bar placement)."""
    if placement == "bar":
        starts = np.array([b.start_ticks for b in piece.bars])
        counts = [
            np.bincount(np.searchsorted(starts, t.onset, "right") - 1, minlength=len(starts))
            for t in piece.tracks
        ]
        flat = np.concatenate(counts) if counts else np.zeros(0, dtype=np.int64)
        return flat[flat > 0].astype(np.int64)
    return in_window[in_window > 0].astype(np.int64)
