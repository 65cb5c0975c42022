"""The MMM vocabulary: token spellings, their kinds and values, and the id layout.

One object answers "what is id 212?" and "which id is NOTE_ON=60?" for the codec, the grammar
and the sampler alike. A vocabulary built from settings is complete and always in the same
order; one loaded from a published checkpoint keeps that checkpoint's ids (learned from data:
ordered by frequency, holding only the tokens seen in training).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from midilm.errors import UnknownTokenError

__all__ = ["DRUMS", "SPECIAL_TOKENS", "Kind", "MMMVocabulary", "parse_token"]

SPECIAL_TOKENS = ("[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]")
DRUMS = 128
"""``INST=DRUMS`` is stored as program value 128."""


class Kind(enum.IntEnum):
    """Token kinds. Values index numpy arrays, so they are small integers."""

    SPECIAL = 0
    PIECE_START = 1
    PIECE_END = 2
    TRACK_START = 3
    TRACK_END = 4
    BAR_START = 5
    BAR_END = 6
    FILL_IN = 7
    FILL_START = 8
    FILL_END = 9
    INST = 10
    DENSITY = 11
    NOTE_ON = 12
    NOTE_OFF = 13
    TIME_DELTA = 14
    TIME_SIGNATURE = 15
    GENRE = 16
    STYLE = 17
    KEYS_START = 18
    KEY = 19
    KEYS_END = 20


_BARE = {
    "PIECE_START": Kind.PIECE_START,
    "PIECE_END": Kind.PIECE_END,
    "TRACK_START": Kind.TRACK_START,
    "TRACK_END": Kind.TRACK_END,
    "BAR_START": Kind.BAR_START,
    "BAR_END": Kind.BAR_END,
    "FILL_START": Kind.FILL_START,
    "FILL_END": Kind.FILL_END,
    "KEYS_START": Kind.KEYS_START,
    "KEYS_END": Kind.KEYS_END,
}
_VALUED = {
    "INST": Kind.INST,
    "DENSITY": Kind.DENSITY,
    "NOTE_ON": Kind.NOTE_ON,
    "NOTE_OFF": Kind.NOTE_OFF,
    "TIME_DELTA": Kind.TIME_DELTA,
    "TIME_SIGNATURE": Kind.TIME_SIGNATURE,
    "GENRE": Kind.GENRE,
    "STYLE": Kind.STYLE,
    "KEY": Kind.KEY,
}


def parse_token(token: str, fill_placeholder: str = "FILL_IN") -> tuple[Kind, int | str | None]:
    """``"NOTE_ON=60"`` → ``(Kind.NOTE_ON, 60)``; ``"TIME_DELTA=4.0"`` → ``(Kind.TIME_DELTA, 4)``.

    Values are ints for programs (drums = 128), bins, pitches and steps; the meter text for
    ``TIME_SIGNATURE``; the name for ``GENRE``/``STYLE``/``KEY``. Raises
    :class:`UnknownTokenError` for a spelling that is not MMM text.
    """
    if token in _BARE:
        return _BARE[token], None
    if token == fill_placeholder:
        return Kind.FILL_IN, None
    if token in SPECIAL_TOKENS:
        return Kind.SPECIAL, None
    name, sep, raw = token.partition("=")
    kind = _VALUED.get(name)
    if not sep or kind is None or not raw:
        raise UnknownTokenError(f"{token!r} is not an MMM token")
    if kind in (Kind.GENRE, Kind.STYLE, Kind.KEY, Kind.TIME_SIGNATURE):
        return kind, raw
    if kind is Kind.INST and raw == "DRUMS":
        return kind, DRUMS
    try:
        number = float(raw)
    except ValueError:
        raise UnknownTokenError(f"{token!r}: {name} needs a number, received {raw!r}") from None
    if number != int(number) or number < 0:
        raise UnknownTokenError(f"{token!r}: {name} needs a whole number ≥ 0, received {raw!r}")
    value = int(number)
    limit = {Kind.INST: 127, Kind.NOTE_ON: 127, Kind.NOTE_OFF: 127}.get(kind)
    if limit is not None and value > limit:
        raise UnknownTokenError(f"{token!r}: {name} is at most {limit}, received {value}")
    if kind is Kind.TIME_DELTA and value == 0:
        raise UnknownTokenError(f"{token!r}: a time delta advances by at least one step")
    return kind, value


@dataclass(frozen=True)
class _Range:
    name: str
    first: int
    last: int


class MMMVocabulary:
    """Token ↔ id, with lookup tables by kind.

    ``kinds[i]`` and ``values[i]`` describe id ``i`` (values: pitch, program, bin, steps, or
    an index into ``meters`` for ``TIME_SIGNATURE``; -1 when none). ``note_on[p]``,
    ``note_off[p]``, ``inst[program]`` (``inst[128]`` = drums), ``density[bin]`` and
    ``time_delta[steps]`` give ids, or -1 where the vocabulary lacks the token.
    """

    def __init__(self, tokens: Sequence[str], fill_placeholder: str = "FILL_IN") -> None:
        self.tokens: tuple[str, ...] = tuple(tokens)
        self.index: dict[str, int] = {t: i for i, t in enumerate(self.tokens)}
        if len(self.index) != len(self.tokens):
            raise ValueError("a vocabulary lists each token once")
        self.fill_placeholder = fill_placeholder
        size = len(self.tokens)
        self.kinds = np.zeros(size, dtype=np.int8)
        self.values = np.full(size, -1, dtype=np.int32)
        self.meters: list[str] = []
        self.names: dict[int, str] = {}
        parsed = [parse_token(t, fill_placeholder) for t in self.tokens]
        max_delta = max((v for k, v in parsed if k is Kind.TIME_DELTA), default=0)
        max_bin = max((v for k, v in parsed if k is Kind.DENSITY), default=-1)
        self.note_on = np.full(128, -1, dtype=np.int64)
        self.note_off = np.full(128, -1, dtype=np.int64)
        self.inst = np.full(129, -1, dtype=np.int64)
        self.density = np.full(max_bin + 1, -1, dtype=np.int64)
        self.time_delta = np.full(int(max_delta) + 1, -1, dtype=np.int64)
        self.time_signature: dict[str, int] = {}
        self.bare: dict[Kind, int] = {}
        tables = {
            Kind.NOTE_ON: self.note_on,
            Kind.NOTE_OFF: self.note_off,
            Kind.INST: self.inst,
            Kind.DENSITY: self.density,
            Kind.TIME_DELTA: self.time_delta,
        }
        for i, (kind, value) in enumerate(parsed):
            self.kinds[i] = kind
            if kind in tables:
                self.values[i] = value
                tables[kind][value] = i
            elif kind is Kind.TIME_SIGNATURE:
                self.values[i] = len(self.meters)
                self.meters.append(str(value))
                self.time_signature[str(value)] = i
            elif kind in (Kind.GENRE, Kind.STYLE, Kind.KEY):
                self.names[i] = str(value)
            elif kind is not Kind.SPECIAL:
                self.bare.setdefault(kind, i)
        self.float_deltas = any(t.startswith("TIME_DELTA=") and "." in t for t in self.tokens)
        self.pad_id = self.index.get("[PAD]", -1)
        self.unk_id = self.index.get("[UNK]", -1)

    def __len__(self) -> int:
        return len(self.tokens)

    def __repr__(self) -> str:
        lines = [f"MMMVocabulary({len(self)} tokens)"]
        lines.extend(f"  {r.first:>5}–{r.last:<5} {r.name}" for r in self.ranges())
        return "\n".join(lines)

    def ranges(self) -> list[_Range]:
        """Runs of consecutive ids of one kind, for printing the layout."""
        out: list[_Range] = []
        for i, kind in enumerate(self.kinds):
            name = Kind(int(kind)).name
            if out and out[-1].name == name and out[-1].last == i - 1:
                out[-1] = _Range(name, out[-1].first, i)
            else:
                out.append(_Range(name, i, i))
        return out

    def token_type(self, token_id: int) -> str:
        """``"NOTE_ON"``, ``"BAR_START"``… for an id."""
        return Kind(int(self.kinds[self._check_id(token_id)])).name

    def id(self, token: str) -> int:
        """The id of a token spelling; UnknownTokenError when the vocabulary lacks it."""
        try:
            return self.index[token]
        except KeyError:
            raise UnknownTokenError(self._missing_message(token)) from None

    def token(self, token_id: int) -> str:
        return self.tokens[self._check_id(token_id)]

    def bare_id(self, kind: Kind) -> int:
        try:
            return self.bare[kind]
        except KeyError:
            raise UnknownTokenError(f"the vocabulary has no {kind.name} token") from None

    def delta_spelling(self, steps: int) -> str:
        return f"TIME_DELTA={steps}.0" if self.float_deltas else f"TIME_DELTA={steps}"

    def ids(self, tokens: Iterable[str]) -> list[int]:
        index = self.index
        out = []
        for position, token in enumerate(tokens):
            i = index.get(token)
            if i is None:
                raise UnknownTokenError(f"token {position}: {self._missing_message(token)}")
            out.append(i)
        return out

    def _check_id(self, token_id: int) -> int:
        if not 0 <= int(token_id) < len(self.tokens):
            raise UnknownTokenError(
                f"id {token_id} is outside the vocabulary (0–{len(self.tokens) - 1})"
            )
        return int(token_id)

    def _missing_message(self, token: str) -> str:
        try:
            kind, _ = parse_token(token, self.fill_placeholder)
        except UnknownTokenError as err:
            return str(err)
        hint = ""
        if kind in (Kind.NOTE_ON, Kind.NOTE_OFF):
            hint = " (this vocabulary was learned from data; transpose the piece into its range)"
        return f"{token!r} is not in this vocabulary{hint}"
