"""The samples an evaluation judges, all seeded.

- **free** sequences for the syntax metric, drawn with the low-level token loop (the only
  place that exposes raw ids and the grammar switch): from the shortest prompt
  (``PIECE_START``, or ``BOS`` for REMI) the model writes everything, headers included,
  until its own end (so many ``TRACK_END``, so many bars) or a token budget; once with the
  grammar mask (``constrained``) and once without, through the same
  :class:`~midilm.sampling.TokenLoop`;
- **composed** pieces and **infilled** bars, through the public API users call
  (:meth:`MusicModel.stream <midilm.MusicModel.stream>`: ``generate``, ``infill``), timed,
  for the music statistics, the controls, infilling and speed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from midilm.sampling.loop import TokenLoop
from midilm.sampling.script import Script, Until, run_scripts

if TYPE_CHECKING:
    from symusic.core import ScoreTick

    from midilm.model.music_model import MusicModel
    from midilm.sampling.engine import GPT2Engine
    from midilm.tokenization.mmm import MMMTokenizer
    from midilm.tokenization.remi import REMITokenizer

__all__ = [
    "FreeSamples",
    "Sampling",
    "free_mmm",
    "free_remi",
    "run_task",
    "window_bars",
    "window_header",
]

TOKENS_PER_BAR_BUDGET = 96
"""Token budget of a free sequence, per bar and track: several times what a dense bar of
real music takes, so only a model that never closes its bars reaches it."""


@dataclass(frozen=True)
class Sampling:
    """The sampling settings of an evaluation (``None`` switches a filter off;
    ``voice_leading``: composed and infilled bars are sampled under the voice-leading
    guard, :mod:`midilm.sampling.voice_leading`)."""

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = 0.95
    voice_leading: bool = False

    def arguments(self, vocab_size: int) -> dict[str, Any]:
        """The same settings as keywords of :meth:`MusicModel.generate` (which reads
        ``None`` as "the model's default", so "off" is spelt as a filter that keeps all)."""
        return {
            "temperature": self.temperature,
            "top_k": self.top_k or vocab_size,
            "top_p": self.top_p or 1.0,
            "voice_leading": self.voice_leading,
        }


@dataclass(frozen=True)
class TaskRun:
    """One finished task of the public sampling API: its score, the ids the model read
    and wrote (all windows), and the wall time."""

    score: ScoreTick
    tokens: int
    seconds: float


def run_task(model: MusicModel, task: str, *args: Any, **arguments: Any) -> TaskRun:
    """Run ``model.stream(task, …)`` to its end (one sample), timed."""
    start = time.perf_counter()
    done = None
    for event in model.stream(task, *args, **arguments):
        if event.kind == "done":
            done = event
    seconds = time.perf_counter() - start
    assert done is not None and done.result and done.tokens is not None
    tokens = sum(len(line.split()) for line in done.tokens[0].splitlines())
    return TaskRun(done.result[0], tokens, seconds)


@dataclass
class FreeSamples:
    """Free sequences: ``sequences[i]`` is the prompt then the sampled ids."""

    sequences: list[list[int]]
    prompt_length: int
    truncated: list[bool]


def _free(
    engine: GPT2Engine,
    prompt: list[int],
    states: Sequence[Any],
    stops: Sequence[Any],
    budget: int,
    sampling: Sampling,
    seed: int,
    constrained: bool,
    banned: Sequence[int],
) -> FreeSamples:
    import torch

    loop = TokenLoop(
        engine,
        temperature=sampling.temperature,
        top_k=sampling.top_k,
        top_p=sampling.top_p,
        use_grammar=constrained,
        generator=torch.Generator(device=engine.device).manual_seed(int(seed)),
        banned=banned,
    )
    room = engine.n_positions - len(prompt) - 1
    budget = max(1, min(budget, room))
    scripts = []
    for stop in stops:

        def done(span: list[int], stop: Any = stop) -> bool:
            return stop(span) or len(span) >= budget

        scripts.append(Script([Until(done, "free")]))
    for _ in run_scripts(loop, prompt, list(states), scripts):
        pass
    spans = [s.spans[0] for s in scripts]
    return FreeSamples(
        sequences=[prompt + span for span in spans],
        prompt_length=len(prompt),
        truncated=[not stop(span) for stop, span in zip(stops, spans, strict=True)],
    )


def free_mmm(
    engine: GPT2Engine,
    tok: MMMTokenizer,
    track_counts: Sequence[int],
    *,
    constrained: bool,
    sampling: Sampling,
    seed: int,
) -> FreeSamples:
    """One free window per entry of ``track_counts`` (its number of tracks), in one batch:
    ``PIECE_START``, then the model writes until that many ``TRACK_END`` (``PIECE_END`` is
    never sampled: the task decides how many tracks)."""
    from midilm.tokenization.mmm_vocab import Kind

    vocab = tok.vocab
    track_end, piece_end = vocab.bare_id(Kind.TRACK_END), vocab.bare_id(Kind.PIECE_END)
    bars = tok.config.bars_per_window
    grammar = tok.grammar(bars=bars, allow_placeholders=False)

    def stop_after(tracks: int) -> Any:
        def stop(span: list[int]) -> bool:
            return bool(span) and span[-1] == track_end and span.count(track_end) >= tracks

        return stop

    budget = TOKENS_PER_BAR_BUDGET * bars * max(track_counts)
    return _free(
        engine,
        [vocab.bare_id(Kind.PIECE_START)],
        [grammar.start() for _ in track_counts],
        [stop_after(n) for n in track_counts],
        budget,
        sampling,
        seed,
        constrained,
        [piece_end],
    )


def _bars_in(remi: REMITokenizer, ids: Sequence[int]) -> int:
    return sum(remi.expansion(i).count("Bar_None") for i in ids)


def free_remi(
    engine: GPT2Engine,
    remi: REMITokenizer,
    count: int,
    bars: int,
    *,
    constrained: bool,
    sampling: Sampling,
    seed: int,
) -> FreeSamples:
    """``count`` free REMI streams in one batch: ``BOS``, then the model writes until
    ``bars`` bars are finished (the next one has begun); ``EOS`` is never sampled."""
    grammar = remi.grammar()

    def stop(span: list[int]) -> bool:
        return bool(span) and _bars_in(remi, span[-1:]) > 0 and _bars_in(remi, span) > bars

    budget = TOKENS_PER_BAR_BUDGET * 4 * bars
    return _free(
        engine,
        [remi.bos_id],
        [grammar.start() for _ in range(count)],
        [stop] * count,
        budget,
        sampling,
        seed,
        constrained,
        [remi.eos_id],
    )


def window_header(tok: MMMTokenizer, ids: Sequence[int]) -> tuple[list[tuple[int, int]], str]:
    """The ``(program, density bin)`` of each track of an MMM window, in order, and its
    meter (the first ``TIME_SIGNATURE``, or the tokenizer's first meter)."""
    from midilm.tokenization.mmm_vocab import Kind

    vocab = tok.vocab
    kinds = vocab.kinds[np.asarray(ids, dtype=np.int64)]
    tracks: list[tuple[int, int]] = []
    meter = (tok.config.meters or ("4/4",))[0]
    program = None
    seen_meter = False
    for token_id, kind in zip(ids, kinds.tolist(), strict=True):
        if kind == Kind.INST:
            program = int(vocab.values[token_id])
        elif kind == Kind.DENSITY and program is not None:
            tracks.append((program, int(vocab.values[token_id])))
            program = None
        elif kind == Kind.TIME_SIGNATURE and not seen_meter:
            meter = vocab.tokens[token_id].partition("=")[2]
            seen_meter = True
    return tracks, meter


def window_bars(tok: MMMTokenizer, ids: Sequence[int]) -> int:
    """Bars of an MMM window (those of its first track)."""
    from midilm.tokenization.mmm_vocab import Kind

    vocab = tok.vocab
    bar_start, track_end = vocab.bare_id(Kind.BAR_START), vocab.bare_id(Kind.TRACK_END)
    ids = list(ids)
    stop = ids.index(track_end) if track_end in ids else len(ids)
    return max(1, ids[:stop].count(bar_start))
