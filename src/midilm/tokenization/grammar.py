"""Grammar as data: which token may follow which, shared by the sampler and the evaluator.

Each tokenizer provides a :class:`Grammar`. Its state machine answers two questions after
every token: *which ids may come next* (the sampler masks logits with it, so output is always
well-formed) and *was this token allowed* (the evaluator counts violations, the syntax-error
rate). One machine serves both, so the sampler and the metric cannot disagree. A sampler
reads :meth:`GrammarState.sampling_mask`: the legal ids, narrowed where the sequence asks for
something a sampler can honour (an MMM track's density bin); that narrowing only steers
sampling and is never counted as an error.

Violation kinds follow the token syntax errors (TSE) of *Byte Pair Encoding for Symbolic
Music* (Fradet et al., 2023): a token type that may not follow the previous one, time that
goes back or past the bar, a duplicate note, a note-off without its note-on, a note never
ended.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

__all__ = ["Grammar", "GrammarState", "Violation", "ViolationKind", "check"]


class ViolationKind(str, enum.Enum):
    TYPE = "type"
    TIME = "time"
    DUPLICATE_NOTE = "duplicate_note"
    NOTE_OFF_WITHOUT_ON = "note_off_without_on"
    UNCLOSED_NOTE = "unclosed_note"


@dataclass(frozen=True)
class Violation:
    """One token the grammar did not allow. ``index`` is its position in the sequence
    (``len(ids)`` for a problem found at the end, such as a note never ended)."""

    index: int
    token: str
    kind: ViolationKind
    message: str

    def __str__(self) -> str:
        return f"token {self.index} ({self.token}): {self.kind.value}: {self.message}"


class GrammarState(Protocol):
    """The machine after some tokens. ``advance`` never raises on a bad token: it reports
    the violation and recovers as the decoder would, so counting continues."""

    def allowed(self) -> np.ndarray:
        """Boolean mask over the vocabulary of ids that may come next (never all False)."""
        ...

    def sampling_mask(self) -> np.ndarray:
        """The ids a sampler may choose: ``allowed()``, or fewer where the sequence asked
        for something the grammar cannot check but a sampler can honour (an MMM track's
        density bin). Never all False."""
        ...

    def advance(self, token_id: int) -> Violation | None: ...

    def finish(self) -> list[Violation]:
        """Violations found at the end of the sequence (unclosed notes, missing bars)."""
        ...

    def is_complete(self) -> bool:
        """True when the sequence could end here."""
        ...


class Grammar(Protocol):
    vocab_size: int

    def start(self) -> GrammarState:
        """A fresh machine, before the first token."""
        ...

    def check(self, ids: Iterable[int]) -> list[Violation]:
        """All violations in a complete sequence (empty list: well-formed)."""
        ...


def check(grammar: Grammar, ids: Iterable[int]) -> list[Violation]:
    """Run ``ids`` through a fresh machine and collect every violation, end included."""
    state = grammar.start()
    found = []
    for token_id in ids:
        violation = state.advance(int(token_id))
        if violation is not None:
            found.append(violation)
    found.extend(state.finish())
    return found
