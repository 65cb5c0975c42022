"""Continue a piano piece with a REMI + BPE model: the seed system's own use.

The prompt is tokenized (one piano stream), its last bars up to half the context are fed
after BOS, and tokens are sampled under the REMI grammar until the requested number of new
bars has begun and ended. A continuation longer than the context slides: the context is cut
again at a bar line, the cache refilled, and sampling goes on, so cost per bar stays flat.

The notes of the new bars are added to the prompt's first pitched track (a REMI stream has
one piano part); everything in the prompt comes back as it was. Without a prompt, the model
starts from BOS and the bars make a new piano piece.
"""

from __future__ import annotations

from collections.abc import Generator

import numpy as np
from symusic.core import NoteTickList, ScoreTick, TempoTick, TimeSignatureTick, TrackTick

from midilm.sampling.loop import SamplingError, TokenLoop
from midilm.sampling.script import Script, Until, run_scripts
from midilm.tokenization.remi import REMITokenizer

__all__ = ["continue_remi"]

BAR = "Bar_None"


def _bars_in(remi: REMITokenizer, ids: list[int]) -> int:
    return sum(remi.expansion(i).count(BAR) for i in ids)


def _cut_at_bar(remi: REMITokenizer, ids: list[int], max_tokens: int) -> int:
    """Where to start a context of at most ``max_tokens`` ids so that it opens with a bar
    (the latest bar line when even the last bar is longer)."""
    starts = [i for i, token_id in enumerate(ids) if remi.expansion(token_id)[0] == BAR]
    if not starts:
        raise SamplingError("the prompt has no bar to start a context from")
    return next((i for i in starts if len(ids) - i <= max_tokens), starts[-1])


def continue_remi(
    loop: TokenLoop,
    remi: REMITokenizer,
    prompt: ScoreTick | None,
    bars: int,
    *,
    n_positions: int,
    trace: list[list[int]] | None = None,
) -> Generator[tuple[int, int, ScoreTick], None, ScoreTick]:
    """The prompt with ``bars`` new bars of piano after its last bar (in 4/4, as REMI
    counts bars). Yields ``(bars written, bars, the score so far)`` as context windows
    finish; each window's ids are appended to ``trace`` when given."""
    if bars < 1:
        raise ValueError(f"bars must be ≥ 1, received {bars}")
    ids = remi.encode(prompt) if prompt is not None else []
    if prompt is not None and not ids:
        raise SamplingError("the prompt has no note the REMI tokenizer can encode")
    prompt_bars = _bars_in(remi, ids)
    wanted = prompt_bars + bars + 1  # the bar after the last new one closes it
    history = list(ids)
    while (have := _bars_in(remi, history)) < wanted:
        start = _cut_at_bar(remi, history, n_positions // 2) if history else 0
        context = [remi.bos_id, *history[start:]]
        room = n_positions - len(context) - 1
        if room < 16:
            raise SamplingError(f"a context of {n_positions} tokens is too short to continue")

        def done(span: list[int], have: int = have, room: int = room) -> bool:
            return have + _bars_in(remi, span) >= wanted or len(span) >= room

        script = Script([Until(done, "bars")])
        list(run_scripts(loop, context, [remi.grammar().start()], [script]))
        history += script.spans[0]
        if trace is not None:
            trace.append(context + script.spans[0])
        written = min(bars, max(0, _bars_in(remi, history) - prompt_bars - 1))
        yield written, bars, _splice(remi, prompt, history, prompt_bars, written)
    return _splice(remi, prompt, history, prompt_bars, bars)


def _splice(
    remi: REMITokenizer, prompt: ScoreTick | None, history: list[int], prompt_bars: int, bars: int
) -> ScoreTick:
    decoded = remi.decode(history)
    tpq = remi.ticks_per_quarter
    bar_ticks = 4 * tpq
    lo, hi = prompt_bars * bar_ticks, (prompt_bars + bars) * bar_ticks
    notes = decoded.tracks[0].notes.numpy() if decoded.tracks else None
    if prompt is None:
        prompt = ScoreTick(tpq)
        prompt.tempos.append(TempoTick(0, 120.0))
        prompt.time_signatures.append(TimeSignatureTick(0, 4, 4))
    out = prompt.copy()
    if notes is None:
        return out
    keep = (notes["time"] >= lo) & (notes["time"] < hi)
    scale = int(prompt.ticks_per_quarter) / tpq
    time = np.round(notes["time"][keep] * scale).astype(np.int32)
    duration = np.maximum(1, np.round(notes["duration"][keep] * scale)).astype(np.int32)
    new = NoteTickList.from_numpy(time, duration, notes["pitch"][keep], notes["velocity"][keep])
    pitched = [t for t in out.tracks if not t.is_drum]
    if pitched:
        target = pitched[0]
        merged = list(target.notes) + list(new)
        target.notes = NoteTickList(sorted(merged, key=lambda n: (n.time, n.pitch)))
    else:
        track = TrackTick("acoustic_grand_piano", 0, False)
        track.notes = new
        out.tracks.append(track)
    return out
