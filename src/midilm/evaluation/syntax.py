"""Syntax-error rates of sampled token sequences, by kind.

The token syntax errors (TSE) of *Byte Pair Encoding for Symbolic Music* (Fradet et al.,
2023): ``type`` (a token that may not follow the previous one), ``time`` (time going back or
past the bar), ``duplicate_note``, ``note_off_without_on`` and ``unclosed_note``. They are
counted by running each sequence through the tokenizer's own grammar
(:mod:`midilm.tokenization.grammar`), the machine the sampler masks logits with, so a
constrained sampler must score 0 and an unconstrained one shows what the mask prevents.

A rate is errors of that kind per sampled token (the prompt, fed by the task, is not
counted). A sequence stopped by the token budget rather than by its own end is
*truncated*: its tokens are counted, but not the errors its ending would raise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from midilm.tokenization.grammar import GrammarState, Violation, ViolationKind

__all__ = ["KINDS", "SyntaxCounts", "count_violations"]

KINDS: tuple[str, ...] = tuple(kind.value for kind in ViolationKind)


@dataclass
class SyntaxCounts:
    """Errors of a set of sampled sequences (``counts`` by kind)."""

    sequences: int = 0
    tokens: int = 0
    truncated: int = 0
    sequences_with_errors: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    examples: list[str] = field(default_factory=list)  # a few violations, for the reader

    @property
    def errors(self) -> int:
        return sum(self.counts.values())

    def rate(self, kind: str | None = None) -> float:
        """Errors (of ``kind``, or all) per sampled token; 0 when nothing was sampled."""
        errors = self.errors if kind is None else self.counts[kind]
        return min(1.0, errors / self.tokens) if self.tokens else 0.0

    def add(self, violations: Sequence[Violation], sampled: int, truncated: bool) -> None:
        self.sequences += 1
        self.tokens += sampled
        self.truncated += truncated
        self.sequences_with_errors += bool(violations)
        for violation in violations:
            self.counts[violation.kind.value] += 1
            if len(self.examples) < 5:
                self.examples.append(str(violation))

    def to_dict(self) -> dict[str, object]:
        return {
            "sequences": self.sequences,
            "tokens": self.tokens,
            "truncated": self.truncated,
            "errors": self.errors,
            "error_rate": self.rate(),
            "sequences_with_errors": (
                round(self.sequences_with_errors / self.sequences, 4) if self.sequences else 0.0
            ),
            "rate_by_kind": {kind: self.rate(kind) for kind in KINDS},
            "count_by_kind": dict(self.counts),
            "examples": list(self.examples),
        }


def count_violations(
    start: Callable[[], GrammarState],
    sequences: Sequence[Sequence[int]],
    *,
    prompt_lengths: Sequence[int] | None = None,
    truncated: Sequence[bool] | None = None,
) -> SyntaxCounts:
    """Count the grammar violations of complete sequences (prompt + sampled ids).

    ``start`` makes a fresh machine per sequence; ``prompt_lengths[i]`` ids at the front of
    sequence ``i`` were fed, not sampled, and are neither counted as tokens nor as errors;
    ``truncated[i]`` marks a sequence cut by the token budget, whose ending is not judged.
    """
    result = SyntaxCounts()
    for i, ids in enumerate(sequences):
        skip = prompt_lengths[i] if prompt_lengths is not None else 0
        cut = bool(truncated[i]) if truncated is not None else False
        state = start()
        found: list[Violation] = []
        for position, token_id in enumerate(ids):
            violation = state.advance(int(token_id))
            if violation is not None and position >= skip:
                found.append(violation)
        if not cut:
            found.extend(state.finish())
        result.add(found, max(0, len(ids) - skip), cut)
    return result
