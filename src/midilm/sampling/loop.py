"""The token loop: candidates sampled in lockstep over one KV cache, masked by a grammar.

Every step feeds one id per row (sampled, or forced by the task — an instrument, a density,
the context of the next window) and reads the next logits. Forced and sampled ids share the
same cache, so a prompt or a context costs one batched forward, not a token loop. Rows stop
on their own structural condition (a ``TRACK_END``, a ``FILL_END`` …), never on a token
count alone; the cache's capacity is the only hard limit.

The loop knows grammars only through the ``GrammarState`` protocol and models only through
:class:`~midilm.sampling.engine.GPT2Engine`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from midilm.errors import MidilmError
from midilm.sampling.engine import GPT2Engine, KVCache
from midilm.sampling.processors import sample_next
from midilm.tokenization.grammar import GrammarState

__all__ = ["Candidate", "SamplingError", "TokenLoop"]


class SamplingError(MidilmError, RuntimeError):
    """Sampling could not finish: the context is full, or a prompt breaks the grammar."""


@dataclass
class Candidate:
    """One row of the batch: its grammar state, the ids it sampled, and whether it is done."""

    state: GrammarState
    ids: list[int] = field(default_factory=list)
    done: bool = False


Forcer = Callable[[int, Candidate], int | None]
"""``(row, candidate) → id`` to feed instead of sampling, or None to sample."""
Stopper = Callable[[int, Candidate], bool]
"""``(row, candidate) → True`` once the row has what it needs."""


class TokenLoop:
    """Grammar-masked sampling of ``rows`` candidates that share a prompt."""

    def __init__(
        self,
        engine: GPT2Engine,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        use_grammar: bool = True,
        generator: torch.Generator | None = None,
        banned: Sequence[int] = (),
    ) -> None:
        self.engine = engine
        self.temperature = temperature
        self.top_k = top_k
        self.top_p = top_p
        self.use_grammar = use_grammar
        self.generator = generator
        self.banned = list(banned)  # ids a task never wants sampled (an EOS mid-piece)

    def start(
        self, prompt: Sequence[int], states: Sequence[GrammarState]
    ) -> tuple[KVCache, list[Candidate]]:
        """Feed the prompt through every row's grammar and the model's cache."""
        if not prompt:
            raise SamplingError("the prompt is empty")
        candidates = [Candidate(state) for state in states]
        for candidate in candidates:
            for token_id in prompt:
                violation = candidate.state.advance(int(token_id))
                if violation is not None and self.use_grammar:
                    raise SamplingError(f"the prompt breaks the grammar at {violation}")
        # Every row shares the prompt: feed it once and copy its keys and values to each row.
        cache = self.engine.new_cache(1)
        self._check_room(cache, len(prompt))
        if len(prompt) > 1:
            self.engine.forward(torch.tensor([list(prompt[:-1])], device=self.engine.device), cache)
        if len(candidates) > 1:
            cache = cache.tile(len(candidates))
        self._last = torch.tensor([[prompt[-1]]] * len(candidates), device=self.engine.device)
        return cache, candidates

    def steps(
        self,
        cache: KVCache,
        candidates: list[Candidate],
        stop: Stopper,
        force: Forcer | None = None,
    ) -> Iterator[tuple[int, int]]:
        """Sample until every row stops; yields ``(row, id)`` as ids are chosen."""
        pad = 0
        batch, vocab = len(candidates), self.engine.vocab_size
        # Buffers reused every token (the loop's own costs are a tenth of a small model's
        # token): the rows' masks and the ids fed next.
        allowed = np.ones((batch, vocab), dtype=bool)
        fed = torch.empty(batch, 1, dtype=torch.long)
        masked = self.use_grammar or bool(self.banned)
        while not all(c.done for c in candidates):
            self._check_room(cache, 1)
            logits = self.engine.forward(self._last, cache)  # (B, V)
            if self.use_grammar:
                for row, c in enumerate(candidates):
                    allowed[row] = c.state.sampling_mask() if not c.done else _first_only(vocab)
            rows_allowed = allowed
            if self.banned:
                rows_ok = allowed.copy()
                rows_ok[:, self.banned] = False
                # A ban never leaves a row with nothing to choose.
                rows_allowed = np.where(rows_ok.any(-1, keepdims=True), rows_ok, allowed)
            chosen = sample_next(
                logits,
                self.generator,
                temperature=self.temperature,
                top_k=self.top_k,
                top_p=self.top_p,
                allowed=torch.from_numpy(rows_allowed).to(logits.device) if masked else None,
            ).tolist()
            for row, candidate in enumerate(candidates):
                if candidate.done:
                    chosen[row] = pad
                    continue
                forced = force(row, candidate) if force is not None else None
                token_id = forced if forced is not None else chosen[row]
                chosen[row] = token_id
                if self.use_grammar:
                    candidate.state.advance(token_id)
                candidate.ids.append(token_id)
                yield row, token_id
                if stop(row, candidate):
                    candidate.done = True
            fed.numpy()[:, 0] = chosen
            self._last = fed.to(self.engine.device)

    def _check_room(self, cache: KVCache, needed: int) -> None:
        if cache.length + needed > cache.capacity:
            raise SamplingError(
                f"the context is full ({cache.capacity} tokens); generate fewer bars at once"
            )


@functools.cache
def _first_only(size: int) -> np.ndarray:
    """The mask of a finished row (it is fed a pad until the others finish); shared, so
    read-only."""
    mask = np.zeros(size, dtype=bool)
    mask[0] = True
    mask.flags.writeable = False
    return mask
