"""Score ↔ token ids: the MMM text codec, REMI + BPE over MidiTok, and their grammars."""

from __future__ import annotations

from midilm.tokenization.base import Tokenizer, load_tokenizer
from midilm.tokenization.grammar import Grammar, GrammarState, Violation, ViolationKind, check

__all__ = [
    "Grammar",
    "GrammarState",
    "Tokenizer",
    "Violation",
    "ViolationKind",
    "check",
    "load_tokenizer",
]
