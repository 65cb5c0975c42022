"""Which REMI id may follow which, over BPE ids: the sampler's mask and the TSE counter.

A BPE id stands for a run of base REMI tokens (``Bar_None``, ``Position_p``, ``Pitch_p``,
``Velocity_v``, ``Duration_x.y.z``, ``Program_p``/``PitchDrum_p`` in multitrack mode). The
machine runs those base tokens through MidiTok's own rules (``MusicTokenizer._tokens_errors``,
the token syntax errors of *Byte Pair Encoding for Symbolic Music*), so on base sequences its
counts equal MidiTok's:

* ``type``: a token type that may not follow the previous one, from MidiTok's
  ``tokens_types_graph`` (Bar → Bar|Position; Position → Pitch (Program in multitrack);
  Pitch → Velocity; Velocity → Duration; Duration → Pitch|Position|Bar (Program instead of
  Pitch in multitrack); Program → Pitch|PitchDrum).
* ``time``: a Position that goes back or stays (its value ≤ the current position in the
  bar; a Bar resets the position).
* ``duplicate_note``: a pitch already played at the current position (by the same program).
  Like MidiTok, duration and velocity are not compared.
* REMI has no note-offs, so ``note_off_without_on`` and ``unclosed_note`` never occur, and
  :meth:`REMIGrammarState.finish` reports nothing (MidiTok does not count a trailing,
  unfinished note either; :meth:`~REMIGrammarState.is_complete` tells whether it ends cleanly).

Recovery follows MidiTok's counter, so counting continues: after a bad type the offending
token becomes the previous type, without moving time or recording a note; a Position that
goes back still sets the position (as the decoder does); a duplicate pitch is not recorded
twice. A BPE id with several faults reports the first; the next ones still update the state.

Rules midilm adds for the special tokens, which MidiTok leaves loose: a sequence starts with
``BOS`` or ``Bar`` (encoded pieces always start with a Bar); ``BOS`` only as the first token;
``EOS`` only where the sequence could end (start, after a Bar or a Duration: not inside a
note); after ``EOS`` only ``PAD``. A misplaced special (``PAD``, ``MASK``, ``SEP`` inside music,
a second ``BOS``…) is a ``type`` violation and is otherwise skipped, as the decoder skips it.

Speed: per id, the first and last type, the first Position (if it comes before any Bar),
the notes before the first time token, and the net effect on the state are precomputed, so
``advance`` is a handful of look-ups for a well-formed id (an exact base-token replay only
on a fault). ``allowed`` caches one mask per (previous type, position) pair, a few hundred at
most, and only clears the ids that would repeat a pitch already played at this position
(exact, also in multitrack mode). It knows nothing about tokenizers' files or models.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Iterable, Mapping, Sequence

import numpy as np

from midilm.tokenization.grammar import Violation, ViolationKind, check

__all__ = ["REMIGrammar", "REMIGrammarState"]

_BAR = "Bar"
_POSITION = "Position"
_PROGRAM = "Program"
_NOTE_TYPES = frozenset({"Pitch", "PitchDrum"})
_INT_VALUED = frozenset({_POSITION, _PROGRAM, *_NOTE_TYPES})
# Types after which a sequence may end (EOS allowed): a note or a bar is finished.
_COMPLETE_TYPES = ("Bar", "Duration")

_UNCHANGED = -2  # final position sentinel: the id has no time token
_NO_PROGRAM = -1000  # final program sentinel: the id has no Program token


def _key(program: int, pitch: int) -> int:
    """One int per (program, pitch); programs run from -1 (drums) to 127."""
    return (program + 1) * 128 + pitch


class REMIGrammar:
    """The REMI machine over a (BPE) vocabulary.

    ``expansions[i]`` are the base tokens of id ``i`` (a 1-tuple for a base id);
    ``type_graph`` maps each music token type to the types that may follow it (MidiTok's
    ``tokens_types_graph`` without the special tokens); ``special_tokens`` are the full
    special token strings (``"PAD_None"`` …); ``names[i]`` is how id ``i`` is shown in a
    :class:`Violation`.
    """

    def __init__(
        self,
        expansions: Sequence[Sequence[str]],
        type_graph: Mapping[str, Collection[str]],
        *,
        special_tokens: Collection[str],
        names: Sequence[str] | None = None,
        bos: str = "BOS_None",
        eos: str = "EOS_None",
        pad: str = "PAD_None",
    ) -> None:
        self.vocab_size = len(expansions)
        self._names = list(names) if names is not None else ["+".join(e) for e in expansions]
        types = sorted(
            set(type_graph) | {t for following in type_graph.values() for t in following}
        )
        if _BAR not in types:
            raise ValueError("a REMI type graph needs the Bar type")
        self._types = types
        index = {t: i for i, t in enumerate(types)}
        n_types = len(types)
        self._bar, self._position = index[_BAR], index.get(_POSITION, -1)
        self._program_type = index.get(_PROGRAM, -1)
        self._note_types = frozenset(index[t] for t in _NOTE_TYPES if t in index)
        # Machine states: 0..n_types-1 = type of the last music token, then these three.
        self.start_state, self.bos_state, self.eos_state = n_types, n_types + 1, n_types + 2
        self._state_names = [*types, "start", "BOS", "EOS"]
        succ = np.zeros((n_types + 3, n_types), dtype=bool)
        for kind, following in type_graph.items():
            for nxt in following:
                succ[index[kind], index[nxt]] = True
        succ[self.start_state, self._bar] = succ[self.bos_state, self._bar] = True
        self._succ = succ
        self._succ_rows = [[bool(x) for x in row] for row in succ]
        complete = np.zeros(n_types + 3, dtype=bool)
        complete[[self.start_state, self.bos_state, self.eos_state]] = True
        for t in _COMPLETE_TYPES:
            if t in index:
                complete[index[t]] = True
        self._complete = [bool(x) for x in complete]

        specials = set(special_tokens)
        self._special_ids: dict[int, str] = {}
        ids_of = {}
        vocab_size = self.vocab_size
        first = np.zeros(vocab_size, dtype=np.int64)
        lead_pos = np.full(vocab_size, -1, dtype=np.int64)
        internal_ok = np.zeros(vocab_size, dtype=bool)
        self._base: list[tuple[tuple[int, int], ...]] = [()] * vocab_size
        self._last: list[int] = [0] * vocab_size
        self._lead_pos: list[int] = [-1] * vocab_size
        self._final_pos: list[int] = [_UNCHANGED] * vocab_size
        self._final_program: list[int] = [_NO_PROGRAM] * vocab_size
        self._has_time: list[bool] = [False] * vocab_size
        self._lead_entry: list[tuple[int, ...]] = [()] * vocab_size
        self._lead_explicit: list[tuple[int, ...]] = [()] * vocab_size
        self._trail_entry: list[tuple[int, ...]] = [()] * vocab_size
        self._trail_explicit: list[tuple[int, ...]] = [()] * vocab_size
        self._bad_entry: list[frozenset[int]] = [frozenset()] * vocab_size
        self._fast: list[bool] = [False] * vocab_size

        for token_id, expansion in enumerate(expansions):
            if len(expansion) == 1 and expansion[0] in specials:
                self._special_ids[token_id] = expansion[0]
                ids_of[expansion[0]] = token_id
                continue
            if not expansion or any(t in specials for t in expansion):
                raise ValueError(f"id {token_id}: a special token inside a learned token")
            base = []
            for token in expansion:
                kind, _, value = token.partition("_")
                if kind not in index:
                    raise ValueError(f"id {token_id}: token type {kind!r} is not in the graph")
                base.append((index[kind], int(value) if kind in _INT_VALUED else 0))
            self._base[token_id] = tuple(base)
            summary = self._summarize(base)
            first[token_id] = base[0][0]
            self._last[token_id] = base[-1][0]
            internal_ok[token_id] = summary["ok"]
            lead_pos[token_id] = summary["lead_pos"]
            self._lead_pos[token_id] = summary["lead_pos"]
            self._final_pos[token_id] = summary["final_pos"]
            self._final_program[token_id] = summary["final_program"]
            self._has_time[token_id] = summary["has_time"]
            self._lead_entry[token_id] = summary["lead_entry"]
            self._lead_explicit[token_id] = summary["lead_explicit"]
            self._trail_entry[token_id] = summary["trail_entry"]
            self._trail_explicit[token_id] = summary["trail_explicit"]
            self._bad_entry[token_id] = summary["bad_entry"]
            self._fast[token_id] = summary["ok"]

        for name, token in (("bos", bos), ("eos", eos), ("pad", pad)):
            if token not in ids_of:
                raise ValueError(f"the vocabulary has no {name} token {token!r}")
        self.bos_id, self.eos_id, self.pad_id = ids_of[bos], ids_of[eos], ids_of[pad]
        self._first = first
        self._lead_pos_arr = lead_pos
        self._internal_ok = internal_ok
        self._first_row_index = np.where(internal_ok, first, 0)

        # Indexes for clearing ids that would repeat a pitch: by entry-program pitch, by
        # explicit (program, pitch) key, and by entry program for ids whose own notes
        # collide once the entry program is known.
        by_entry: dict[int, list[int]] = {}
        by_explicit: dict[int, list[int]] = {}
        by_program: dict[int, list[int]] = {}
        for token_id in np.flatnonzero(internal_ok):
            for pitch in set(self._lead_entry[token_id]):
                by_entry.setdefault(pitch, []).append(int(token_id))
            for key in set(self._lead_explicit[token_id]):
                by_explicit.setdefault(key, []).append(int(token_id))
            for program in self._bad_entry[token_id]:
                by_program.setdefault(program, []).append(int(token_id))
        self._ban_entry = {k: np.array(v, dtype=np.int64) for k, v in by_entry.items()}
        self._ban_explicit = {k: np.array(v, dtype=np.int64) for k, v in by_explicit.items()}
        self._ban_program = {k: np.array(v, dtype=np.int64) for k, v in by_program.items()}
        self._mask_cache: dict[tuple[int, int], np.ndarray] = {}

    def _summarize(self, base: list[tuple[int, int]]) -> dict:
        """What one id does, independent of the state it is read in."""
        succ = self._succ
        ok = all(succ[a, b] for (a, _), (b, _) in itertools.pairwise(base))
        has_time = False
        lead_pos = -1
        position = -1
        final_pos = _UNCHANGED
        program: int | None = None  # None: the program in effect before this id
        final_program = _NO_PROGRAM
        segment: set[tuple[int | None, int]] = set()
        lead: list[tuple[int | None, int]] = []
        bad_entry: set[int] = set()

        def close(notes: set[tuple[int | None, int]]) -> None:
            # Notes read under the entry program collide with explicit ones of the same
            # pitch when the entry program turns out to be theirs.
            entry = {p for q, p in notes if q is None}
            bad_entry.update(q for q, p in notes if q is not None and p in entry)

        for kind, value in base:
            if kind == self._bar:
                close(segment)
                has_time, position, final_pos, segment = True, -1, -1, set()
            elif kind == self._position:
                close(segment)
                if not has_time:
                    lead_pos = value
                elif value <= position:
                    ok = False
                has_time, position, final_pos, segment = True, value, value, set()
            elif kind in self._note_types:
                note = (program, value)
                if note in segment:
                    ok = False
                segment.add(note)
                if not has_time:
                    lead.append(note)
            elif kind == self._program_type:
                program = final_program = value
        close(segment)
        trail = segment if has_time else set()
        return {
            "ok": ok,
            "lead_pos": lead_pos,
            "final_pos": final_pos,
            "final_program": final_program,
            "has_time": has_time,
            "lead_entry": tuple(p for q, p in lead if q is None),
            "lead_explicit": tuple(_key(q, p) for q, p in lead if q is not None),
            "trail_entry": tuple(p for q, p in trail if q is None),
            "trail_explicit": tuple(_key(q, p) for q, p in trail if q is not None),
            "bad_entry": frozenset(bad_entry),
        }

    def start(self) -> REMIGrammarState:
        return REMIGrammarState(self)

    def check(self, ids: Iterable[int]) -> list[Violation]:
        return check(self, ids)

    def _base_mask(self, prev: int, position: int) -> np.ndarray:
        key = (prev, position)
        mask = self._mask_cache.get(key)
        if mask is None:
            row = self._succ[prev]
            mask = (
                self._internal_ok
                & row[self._first_row_index]
                & ((self._lead_pos_arr < 0) | (self._lead_pos_arr > position))
            )
            mask[self.bos_id] = prev == self.start_state
            mask[self.eos_id] = self._complete[prev] and prev != self.eos_state
            mask[self.pad_id] = prev == self.eos_state
            mask.flags.writeable = False
            self._mask_cache[key] = mask
        return mask

    def __repr__(self) -> str:
        return f"REMIGrammar({self.vocab_size} ids, types {', '.join(self._types)})"


class REMIGrammarState:
    """The machine after some ids. See the module docstring for the rules."""

    __slots__ = ("_g", "_index", "_pitches", "_position", "_prev", "_program")

    def __init__(self, grammar: REMIGrammar) -> None:
        self._g = grammar
        self._prev = grammar.start_state
        self._position = -1
        self._program = 0
        self._pitches: set[int] = set()
        self._index = 0

    def copy(self) -> REMIGrammarState:
        other = REMIGrammarState.__new__(REMIGrammarState)
        other._g = self._g
        other._prev = self._prev
        other._position = self._position
        other._program = self._program
        other._pitches = set(self._pitches)
        other._index = self._index
        return other

    @property
    def last_type(self) -> str:
        """Type of the last music token, or ``"start"``, ``"BOS"``, ``"EOS"``."""
        return self._g._state_names[self._prev]

    @property
    def position(self) -> int:
        """Current position in the bar (-1 before the bar's first Position)."""
        return self._position

    @property
    def num_tokens(self) -> int:
        """Ids consumed so far (the index the next violation would carry)."""
        return self._index

    def is_complete(self) -> bool:
        return self._g._complete[self._prev]

    def finish(self) -> list[Violation]:
        return []

    def allowed(self) -> np.ndarray:
        """Read-only boolean mask over the vocabulary (copy it before changing it)."""
        g = self._g
        mask = g._base_mask(self._prev, self._position)
        banned = []
        program = self._program
        if self._pitches:
            base_key = _key(program, 0)
            for key in self._pitches:
                ids = g._ban_explicit.get(key)
                if ids is not None:
                    banned.append(ids)
                if base_key <= key < base_key + 128:
                    ids = g._ban_entry.get(key - base_key)
                    if ids is not None:
                        banned.append(ids)
        ids = g._ban_program.get(program)
        if ids is not None:
            banned.append(ids)
        if not banned:
            return mask
        out = mask.copy()
        for ids in banned:
            out[ids] = False
        if not out.any():
            # Every continuation repeats a pitch (all 88 keys struck at once): allow the
            # least bad ones rather than nothing, so a sampler can always go on.
            return mask
        return out

    def sampling_mask(self) -> np.ndarray:
        """REMI takes no controls to steer: the legal ids."""
        return self.allowed()

    def advance(self, token_id: int) -> Violation | None:
        g = self._g
        index = self._index
        self._index += 1
        if not 0 <= token_id < g.vocab_size:
            return Violation(
                index, f"<id {token_id}>", ViolationKind.TYPE, "id outside the vocabulary"
            )
        special = g._special_ids.get(token_id)
        if special is not None:
            return self._advance_special(index, token_id, special)
        if g._fast[token_id] and self._fits(token_id):
            self._apply(token_id)
            return None
        return self._replay(index, token_id)

    # ---------------------------------------------------------------- internals
    def _advance_special(self, index: int, token_id: int, token: str) -> Violation | None:
        g = self._g
        prev = self._prev
        if token_id == g.bos_id:
            if prev == g.start_state:
                self._prev = g.bos_state
                return None
            reason = "BOS only as the first token"
        elif token_id == g.eos_id:
            if g._complete[prev] and prev != g.eos_state:
                self._prev = g.eos_state
                return None
            reason = "EOS after EOS" if prev == g.eos_state else "EOS inside a note"
        elif token_id == g.pad_id:
            if prev == g.eos_state:
                return None
            reason = "PAD only after EOS"
        else:
            reason = f"{token} is not part of a REMI sequence"
        return Violation(index, token, ViolationKind.TYPE, reason)

    def _fits(self, token_id: int) -> bool:
        g = self._g
        if not g._succ_rows[self._prev][g._first[token_id]]:
            return False
        lead_pos = g._lead_pos[token_id]
        if 0 <= lead_pos <= self._position:
            return False
        if self._program in g._bad_entry[token_id]:
            return False
        pitches = self._pitches
        if pitches:
            base_key = _key(self._program, 0)
            for pitch in g._lead_entry[token_id]:
                if base_key + pitch in pitches:
                    return False
            for key in g._lead_explicit[token_id]:
                if key in pitches:
                    return False
        return True

    def _apply(self, token_id: int) -> None:
        g = self._g
        base_key = _key(self._program, 0)
        if g._has_time[token_id]:
            pitches = {base_key + p for p in g._trail_entry[token_id]}
            pitches.update(g._trail_explicit[token_id])
            self._pitches = pitches
            self._position = g._final_pos[token_id]
        else:
            self._pitches.update(base_key + p for p in g._lead_entry[token_id])
            self._pitches.update(g._lead_explicit[token_id])
        program = g._final_program[token_id]
        if program != _NO_PROGRAM:
            self._program = program
        self._prev = g._last[token_id]

    def _replay(self, index: int, token_id: int) -> Violation | None:
        """Exact base-token replay of MidiTok's counter; reports the first fault."""
        g = self._g
        first: Violation | None = None
        for kind, value in g._base[token_id]:
            fault = self._step(kind, value)
            if fault is not None and first is None:
                first = Violation(index, g._names[token_id], fault[0], fault[1])
        return first

    def _step(self, kind: int, value: int) -> tuple[ViolationKind, str] | None:
        g = self._g
        prev = self._prev
        self._prev = kind
        if not g._succ_rows[prev][kind]:
            return (
                ViolationKind.TYPE,
                f"{g._types[kind]} may not follow {g._state_names[prev]}",
            )
        if kind == g._bar:
            self._position = -1
            self._pitches = set()
        elif kind == g._position:
            old = self._position
            self._position = value
            self._pitches = set()
            if value <= old:
                return (
                    ViolationKind.TIME,
                    f"Position_{value} does not move forward from Position_{old} in this bar",
                )
        elif kind in g._note_types:
            key = _key(self._program, value)
            if key in self._pitches:
                return (
                    ViolationKind.DUPLICATE_NOTE,
                    f"pitch {value} already played at position {self._position}",
                )
            self._pitches.add(key)
        elif kind == g._program_type:
            self._program = value
        return None
