"""What a task asks of one candidate row: ids to feed, then spans to sample.

A script is a list of items: an ``int`` is fed as is (forced: a prompt's next bar, an
instrument, a density), an :class:`Until` samples until its condition holds for the ids
sampled in that span (a ``TRACK_END``, a ``FILL_END``, so many ``BAR_END``s). Tasks write
scripts; :func:`run_scripts` plays them through a :class:`~midilm.sampling.loop.TokenLoop`.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from midilm.sampling.loop import Candidate, SamplingError, TokenLoop
from midilm.tokenization.grammar import GrammarState

__all__ = ["Script", "Until", "finish", "run_scripts"]

T = TypeVar("T")


@dataclass(frozen=True)
class Until:
    """Sample until ``done(ids sampled in this span)`` is true."""

    done: Callable[[list[int]], bool]
    label: str = "span"


def until_token(token_id: int, label: str = "") -> Until:
    """Sample until ``token_id`` has been sampled."""
    return Until(lambda ids: bool(ids) and ids[-1] == token_id, label or f"until {token_id}")


@dataclass
class Script:
    items: list[int | Until]
    position: int = 0
    span: list[int] = field(default_factory=list)  # ids sampled in the current Until
    spans: list[list[int]] = field(default_factory=list)  # finished Until spans, in order

    @property
    def finished(self) -> bool:
        return self.position >= len(self.items)

    def forced(self) -> int | None:
        item = self.items[self.position]
        return item if isinstance(item, int) else None

    def record(self, token_id: int) -> None:
        item = self.items[self.position]
        if isinstance(item, int):
            self.position += 1
            return
        self.span.append(token_id)
        if item.done(self.span):
            self.spans.append(self.span)
            self.span = []
            self.position += 1


def run_scripts(
    loop: TokenLoop,
    prompt: Sequence[int],
    states: Sequence[GrammarState],
    scripts: Sequence[Script],
) -> Iterator[tuple[int, int]]:
    """Play one script per row after a shared prompt; yields ``(row, id)`` as they come.
    A forced id the grammar forbids is a task's bug, and raises."""
    cache, candidates = loop.start(prompt, states)

    def force(row: int, candidate: Candidate) -> int | None:
        token_id = scripts[row].forced()
        if token_id is not None and loop.use_grammar and not candidate.state.allowed()[token_id]:
            raise SamplingError(
                f"row {row}: the task forced id {token_id} where the grammar forbids it"
            )
        return token_id

    def stop(row: int, candidate: Candidate) -> bool:
        scripts[row].record(candidate.ids[-1])
        return scripts[row].finished

    yield from loop.steps(cache, candidates, stop, force)


def finish(steps: Generator[object, None, T]) -> T:
    """Run a task (a generator of progress that returns its result) to its end.

    Tasks are generators so that one code path serves both uses: a caller that wants the
    result calls ``finish``, a server streaming progress iterates and may stop early."""
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value
