"""What musicians do with an MMM model: compose, continue, add a track, infill bars.

All four write into a :class:`~midilm.tokenization.mmm.Piece` (notes in grid steps, a bar
grid) one window at a time. A window is at most the model's ``bars_per_window`` bars: the
bars already known in it are fed as context, the rest are sampled, so a piece of any length
costs the same per new bar. Each candidate row keeps its own piece; the rows share only the
window's header.

Per window and track the script is: ``TRACK_START INST DENSITY`` and the known bars (forced),
then sampling until ``TRACK_END``; the grammar, told the window's bar count and meters,
makes the model write exactly the missing bars. Infilling uses the ``mmmbar`` form instead:
masked bars become ``FILL_IN`` and their answers are sampled after ``FILL_START``.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass

import numpy as np
from symusic.core import NoteTickList, ScoreTick, TempoTick, TimeSignatureTick, TrackTick

from midilm.sampling.loop import TokenLoop
from midilm.sampling.script import Script, Until, finish, run_scripts, until_token
from midilm.score.meter import Bar, Meter
from midilm.tokenization.grammar import GrammarState
from midilm.tokenization.mmm import MMMTokenizer, Piece, PieceTrack
from midilm.tokenization.mmm_vocab import DRUMS, Kind

__all__ = [
    "Steps",
    "TrackRequest",
    "add_track",
    "compose",
    "continue_piece",
    "finish",
    "infill",
    "piece_to_score",
]

Steps = Generator[tuple[int, int, list[Piece]], None, list[Piece]]
"""A task in progress: yields ``(bars written, bars to write, pieces so far)`` after each
window and
returns the pieces. Drive it with :func:`~midilm.sampling.script.finish`, or iterate it
to stream; closing it stops the work after the current window."""

Trace = list[list[list[int]]]
"""Per candidate row, the id sequence of each window the model read and wrote."""


@dataclass(frozen=True)
class TrackRequest:
    """A track to write: its program (0–127, or ``DRUMS``) and density bin (None: the
    density of the context, or the middle bin)."""

    program: int
    density: int | None = None


def compose(
    loop: TokenLoop,
    tok: MMMTokenizer,
    tracks: Sequence[TrackRequest],
    bars: int,
    *,
    meter: str | None = None,
    num_samples: int = 1,
    trace: Trace | None = None,
    voice_leading: bool = False,
) -> Steps:
    """New pieces of ``bars`` bars with the requested tracks (``voice_leading``: sample
    under :mod:`~midilm.sampling.voice_leading`'s guard)."""
    if bars < 1:
        raise ValueError(f"bars must be ≥ 1, received {bars}")
    if not tracks:
        raise ValueError("compose needs at least one track")
    meter = meter or (tok.config.meters or ("4/4",))[0]
    pieces = [_empty_piece(tok, tracks, bars, meter) for _ in range(num_samples)]
    densities = [_density(tok, r, None) for r in tracks]
    yield from _write_bars(loop, tok, pieces, list(range(len(tracks))), densities, 0, bars, trace,
                           voice_leading)  # fmt: skip
    return pieces


def continue_piece(
    loop: TokenLoop,
    tok: MMMTokenizer,
    prompt: Piece,
    bars: int,
    *,
    densities: Sequence[int | None] | None = None,
    num_samples: int = 1,
    trace: Trace | None = None,
    voice_leading: bool = False,
) -> Steps:
    """The prompt with ``bars`` more bars in every track (in the meter of its last bar)."""
    if bars < 1:
        raise ValueError(f"bars must be ≥ 1, received {bars}")
    start = len(prompt.bars)
    pieces = [_extended(prompt, bars) for _ in range(num_samples)]
    wanted = list(densities) if densities is not None else [None] * len(prompt.tracks)
    chosen = [
        d if d is not None else _context_density(tok, prompt, i) for i, d in enumerate(wanted)
    ]
    yield from _write_bars(loop, tok, pieces, list(range(len(prompt.tracks))), chosen, start,
                           start + bars, trace, voice_leading)  # fmt: skip
    return pieces


def add_track(
    loop: TokenLoop,
    tok: MMMTokenizer,
    piece: Piece,
    track: TrackRequest,
    *,
    num_samples: int = 1,
    trace: Trace | None = None,
    voice_leading: bool = False,
) -> Steps:
    """The piece with one more track, written against all the others."""
    pieces = [_with_track(piece, track.program) for _ in range(num_samples)]
    new = len(piece.tracks)
    density = _density(tok, track, None)
    yield from _write_bars(loop, tok, pieces, [new], [density], 0, len(piece.bars), trace,
                           voice_leading)  # fmt: skip
    return pieces


def infill(
    loop: TokenLoop,
    tok: MMMTokenizer,
    piece: Piece,
    cells: Sequence[tuple[int, int]],
    *,
    num_samples: int = 1,
    trace: Trace | None = None,
    voice_leading: bool = False,
) -> Steps:
    """The piece with the bars ``(track, bar)`` written anew; nothing else changes."""
    window = tok.config.bars_per_window
    todo = sorted(set(cells), key=lambda c: (c[1], c[0]))
    for track, bar in todo:
        if not 0 <= track < len(piece.tracks) or not 0 <= bar < len(piece.bars):
            raise ValueError(
                f"bar {bar + 1} of track {track + 1} is outside the piece "
                f"({len(piece.tracks)} tracks, {len(piece.bars)} bars)"
            )
    groups: list[list[tuple[int, int]]] = []
    for cell in todo:  # cells whose bars fit in one window go together
        if groups and cell[1] - groups[-1][0][1] < window:
            groups[-1].append(cell)
        else:
            groups.append([cell])
    pieces = [_copy_piece(piece) for _ in range(num_samples)]
    done = 0
    for group in groups:
        first = group[0][1]
        start = max(0, min(first, len(piece.bars) - window))
        stop = min(start + window, len(piece.bars))
        _infill_window(loop, tok, pieces, group, start, stop, trace, voice_leading)
        done += len({bar for _, bar in group})
        yield done, len({bar for _, bar in todo}), pieces
    return pieces


# ---------------------------------------------------------------------- windows
def _write_bars(
    loop: TokenLoop,
    tok: MMMTokenizer,
    pieces: list[Piece],
    targets: list[int],
    densities: list[int],
    first: int,
    stop: int,
    trace: Trace | None,
    voice_leading: bool = False,
) -> Steps:
    """Sample bars ``[first, stop)`` of the ``targets`` tracks in every piece, a window at a
    time; other tracks are context."""
    window = tok.config.bars_per_window
    hop = max(1, window // 2)
    spans = []
    new_from = first
    while new_from < stop:
        new_to = min(max(new_from + hop, window), stop)
        spans.append((max(0, new_to - window), new_from, new_to))
        new_from = new_to
    for start, new_from, new_to in spans:
        _sample_window(loop, tok, pieces, targets, densities, start, new_from, new_to, trace,
                       voice_leading)  # fmt: skip
        yield new_to - first, stop - first, pieces
    return pieces


def _sample_window(
    loop: TokenLoop,
    tok: MMMTokenizer,
    pieces: list[Piece],
    targets: list[int],
    densities: list[int],
    start: int,
    new_from: int,
    new_to: int,
    trace: Trace | None,
    voice_leading: bool = False,
) -> None:
    vocab = tok.vocab
    bars = pieces[0].bars[start:new_to]
    meters = [str(b.meter) for b in bars]
    header = [vocab.bare_id(Kind.PIECE_START)]
    if tok.config.meter_tokens:
        header.append(tok.token_to_id(f"TIME_SIGNATURE={meters[0]}"))
    track_end = vocab.bare_id(Kind.TRACK_END)
    scripts = []
    for piece in pieces:
        context = _bar_tokens(tok, piece, start, new_from)
        known = _bar_tokens(tok, piece, start, new_to)
        items: list[int | Until] = []
        for index, track in enumerate(piece.tracks):
            items += [vocab.bare_id(Kind.TRACK_START), int(vocab.inst[track.program])]
            if index in targets:
                density = densities[targets.index(index)]
                items.append(int(vocab.density[density]))
                items += context[index]
                items.append(until_token(track_end, f"track {index + 1}"))
            else:
                items.append(int(vocab.density[_span_density(tok, piece, index, start, new_to)]))
                items += known[index]
                items.append(track_end)
        scripts.append(Script(items))
    grammar = tok.grammar(bars=len(bars), allow_placeholders=False, bar_meters=meters)
    states: list[GrammarState] = [grammar.start() for _ in pieces]
    if voice_leading:
        from midilm.sampling.voice_leading import guard_window

        # The task feeds a track it writes up to its new bars, and one it keeps whole.
        known = [new_from if i in targets else new_to for i in range(len(pieces[0].tracks))]
        states = [guard_window(state, tok, piece, start, new_to, known)  # type: ignore[arg-type]
                  for state, piece in zip(states, pieces, strict=True)]  # fmt: skip
    list(run_scripts(loop, header, states, scripts))
    offset = bars[0].start_ticks
    new_start = pieces[0].bars[new_from].start_ticks - offset
    sequences = [header + _ids(script) for script in scripts]
    _record(trace, sequences)
    for piece, state_ids in zip(pieces, sequences, strict=True):
        window = tok.decode(state_ids, ticks_per_quarter=tok.config.steps_per_quarter)
        for index in targets:
            notes = window.tracks[index].notes.numpy()
            keep = notes["time"] >= new_start
            onset = notes["time"][keep].astype(np.int64) + offset
            end = onset + notes["duration"][keep].astype(np.int64)
            _add_notes(piece.tracks[index], onset, end, notes["pitch"][keep].astype(np.int64))


def _infill_window(
    loop: TokenLoop,
    tok: MMMTokenizer,
    pieces: list[Piece],
    cells: list[tuple[int, int]],
    start: int,
    stop: int,
    trace: Trace | None,
    voice_leading: bool = False,
) -> None:
    vocab = tok.vocab
    fill_start, fill_end = vocab.bare_id(Kind.FILL_START), vocab.bare_id(Kind.FILL_END)
    local = [(track, bar - start) for track, bar in cells]
    meters = [str(b.meter) for b in pieces[0].bars[start:stop]]
    grammar = tok.grammar(bars=stop - start, bar_meters=meters)
    # The context is the same for every row: all rows start from the same piece.
    ids = tok.encode_bars(pieces[0], start, stop, masked=local)
    prompt = ids[: ids.index(fill_start)] if fill_start in ids else ids
    order = sorted(local)  # answers come in order of appearance: by track, then bar
    items: list[int | Until] = []
    for _ in order:
        items += [fill_start, until_token(fill_end, "fill")]
    scripts = [Script(list(items)) for _ in pieces]
    states: list[GrammarState] = [grammar.start() for _ in pieces]
    if voice_leading:
        from midilm.sampling.voice_leading import guard_fills

        states = [guard_fills(state, tok, piece, start, stop, order)  # type: ignore[arg-type]
                  for state, piece in zip(states, pieces, strict=True)]  # fmt: skip
    list(run_scripts(loop, prompt, states, scripts))
    _record(trace, [prompt + _ids(script) for script in scripts])
    for piece, script in zip(pieces, scripts, strict=True):
        for (track, bar), answer in zip(order, script.spans, strict=True):
            filled = tok.decode(_single_bar(tok, meters[bar], answer[:-1]),
                                ticks_per_quarter=tok.config.steps_per_quarter)  # fmt: skip
            notes = filled.tracks[0].notes.numpy()
            bar_start = piece.bars[start + bar].start_ticks
            _replace_bar(piece.tracks[track], bar_start, piece.bars[start + bar].end_ticks,
                         notes["time"].astype(np.int64) + bar_start,
                         (notes["time"] + notes["duration"]).astype(np.int64) + bar_start,
                         notes["pitch"].astype(np.int64))  # fmt: skip


def _single_bar(tok: MMMTokenizer, meter: str, events: list[int]) -> list[int]:
    """A one-bar, one-track sequence around a fill answer, to decode it alone."""
    vocab = tok.vocab
    ids = [vocab.bare_id(Kind.PIECE_START)]
    if tok.config.meter_tokens:
        ids.append(tok.token_to_id(f"TIME_SIGNATURE={meter}"))
    ids += [vocab.bare_id(Kind.TRACK_START), int(vocab.inst[0]), int(vocab.density[0])]
    ids += [vocab.bare_id(Kind.BAR_START), *events, vocab.bare_id(Kind.BAR_END)]
    return [*ids, vocab.bare_id(Kind.TRACK_END)]


def _record(trace: Trace | None, sequences: list[list[int]]) -> None:
    if trace is None:
        return
    if not trace:
        trace.extend([] for _ in sequences)
    for row, ids in zip(trace, sequences, strict=True):
        row.append(list(ids))


# ---------------------------------------------------------------------- pieces
def _ids(script: Script) -> list[int]:
    """Every id a finished script fed or sampled, in order."""
    out: list[int] = []
    spans = iter(script.spans)
    for item in script.items:
        out.extend([item] if isinstance(item, int) else next(spans))
    return out


def _bar_tokens(tok: MMMTokenizer, piece: Piece, start: int, stop: int) -> list[list[int]]:
    """Per track, the tokens of bars ``[start, stop)`` as the encoder writes them in a
    window starting at ``start`` (``BAR_START`` … ``BAR_END`` each)."""
    if stop <= start:
        return [[] for _ in piece.tracks]
    ids = tok.encode_bars(piece, start, stop)
    vocab = tok.vocab
    out: list[list[int]] = []
    track_start, track_end = vocab.bare_id(Kind.TRACK_START), vocab.bare_id(Kind.TRACK_END)
    i = 0
    while i < len(ids):
        if ids[i] == track_start:
            j = ids.index(track_end, i)
            body = ids[i + 1 : j]
            first_bar = body.index(vocab.bare_id(Kind.BAR_START))
            out.append(body[first_bar:])
            i = j
        i += 1
    return out


def _empty_piece(tok: MMMTokenizer, tracks: Sequence[TrackRequest], bars: int, meter: str) -> Piece:
    parsed = Meter.parse(meter)
    length = parsed.bar_ticks(tok.config.steps_per_quarter)
    if length is None or meter not in (tok.config.meters or ()):
        raise ValueError(
            f"meter {meter} is not one this model knows ({', '.join(tok.config.meters or ())})"
        )
    grid = [Bar(i, i * length, length, parsed) for i in range(bars)]
    return Piece(grid, [_empty_track(r.program) for r in tracks])


def _empty_track(program: int) -> PieceTrack:
    empty = np.zeros(0, dtype=np.int64)
    return PieceTrack(program, "", empty, empty.copy(), empty.copy())


def _copy_piece(piece: Piece) -> Piece:
    return Piece(
        list(piece.bars),
        [
            PieceTrack(t.program, t.name, t.onset.copy(), t.end.copy(), t.pitch.copy())
            for t in piece.tracks
        ],
    )


def _extended(piece: Piece, bars: int) -> Piece:
    copy = _copy_piece(piece)
    last = copy.bars[-1]
    for _ in range(bars):
        copy.bars.append(
            Bar(len(copy.bars), copy.bars[-1].end_ticks, last.length_ticks, last.meter)
        )
    return copy


def _with_track(piece: Piece, program: int) -> Piece:
    copy = _copy_piece(piece)
    copy.tracks.append(_empty_track(program))
    return copy


def _add_notes(track: PieceTrack, onset: np.ndarray, end: np.ndarray, pitch: np.ndarray) -> None:
    track.onset = np.concatenate([track.onset, onset])
    track.end = np.concatenate([track.end, end])
    track.pitch = np.concatenate([track.pitch, pitch])
    order = np.lexsort((track.pitch, track.onset))
    track.onset, track.end, track.pitch = track.onset[order], track.end[order], track.pitch[order]


def _replace_bar(
    track: PieceTrack, lo: int, hi: int, onset: np.ndarray, end: np.ndarray, pitch: np.ndarray
) -> None:
    """Drop the notes that start in ``[lo, hi)`` and add the new ones."""
    keep = (track.onset < lo) | (track.onset >= hi)
    track.onset, track.end, track.pitch = track.onset[keep], track.end[keep], track.pitch[keep]
    _add_notes(track, onset, end, pitch)


def _density(tok: MMMTokenizer, request: TrackRequest, fallback: int | None) -> int:
    bins = tok.config.density_bins
    if request.density is not None:
        if not 0 <= request.density < bins:
            raise ValueError(f"density must be a bin in 0–{bins - 1}, received {request.density}")
        return request.density
    return fallback if fallback is not None else bins // 2


def _span_density(tok: MMMTokenizer, piece: Piece, index: int, start: int, stop: int) -> int:
    lo, hi = piece.bars[start].start_ticks, piece.bars[stop - 1].end_ticks
    track = piece.tracks[index]
    count = int(np.count_nonzero((track.onset < hi) & (track.end > lo)))
    return tok.density_bin(count, stop - start)


def _context_density(tok: MMMTokenizer, piece: Piece, index: int) -> int:
    window = tok.config.bars_per_window
    start = max(0, len(piece.bars) - window)
    return _span_density(tok, piece, index, start, len(piece.bars))


def piece_to_score(
    tok: MMMTokenizer,
    piece: Piece,
    *,
    ticks_per_quarter: int = 480,
    tempo_bpm: float = 120.0,
    names: Sequence[str] | None = None,
) -> ScoreTick:
    """A Score of a piece (notes at the model's velocity), with its meters and a tempo."""
    from midilm.score.gm import program_name

    scale = ticks_per_quarter // tok.config.steps_per_quarter
    score = ScoreTick(ticks_per_quarter)
    score.tempos.append(TempoTick(0, tempo_bpm))
    previous = None
    for bar in piece.bars:
        if bar.meter != previous:
            score.time_signatures.append(TimeSignatureTick(
                bar.start_ticks * scale, bar.meter.numerator, bar.meter.denominator))  # fmt: skip
            previous = bar.meter
    for i, track in enumerate(piece.tracks):
        is_drum = track.program == DRUMS
        program = 0 if is_drum else track.program
        name = names[i] if names is not None and i < len(names) else program_name(program, is_drum)
        out = TrackTick(name, program, is_drum)
        out.notes = NoteTickList.from_numpy(
            (track.onset * scale).astype(np.int32),
            ((track.end - track.onset) * scale).astype(np.int32),
            track.pitch.astype(np.int8),
            np.full(len(track.onset), tok.config.velocity, dtype=np.int8),
        )
        score.tracks.append(out)
    return score
