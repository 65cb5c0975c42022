"""A voice-leading guard for MMM sampling: a chorale composer's first rules as constraints.

A small model learns what a chorale sounds like long before it learns never to write
parallel fifths, or to keep a tenor inside a tenor's range. The sampler can enforce both,
as its grammar mask already enforces well-formed music (DeepBach samples under constraints
in the same spirit). :class:`VoiceLeadingState` wraps a row's grammar state; when the row is
about to choose a ``NOTE_ON``, it narrows the pitches:

- **No parallel (or antiparallel, or compound) perfect fifths, octaves or unisons** with any
  other pitched track whose notes are known at that point: the tracks written earlier in
  the window, the context bars, the parts a task keeps. A *motion* is what
  :mod:`midilm.evaluation.voice_leading` counts: over the onsets of the two voices, both
  sound before and after and at least one moves (the highest note of a chord). A new note
  can only take part in the motion into its own onset (holding it is oblique motion), so
  checking that motion when the pitch is chosen leaves no parallel the evaluator would
  count between voices that were known. Both voices must move, and the intervals before
  and after must both be fifths or both octaves/unisons (mod 12); this rule bans every
  quartet music21's ``parallelFifth``/``parallelOctave`` flag (checked over 1.4 million
  quartets), and parallel unisons too.
- **Ranges**: in a piece of exactly four pitched tracks, each track's notes stay in its
  voice's :data:`~midilm.score.voices.VOICE_RANGES`. Roles follow the mean pitch
  of the notes known so far (a user's piece may list its parts in any order); tracks with
  no notes yet (a new piece, a part being added) take the roles left, in track order.
- **No voice falls silent alone**: chorale voices breathe together. Where a known voice
  sounds, a silent voice must start a note rather than rest (or end its bar early); where
  none sounds, it may rest until the next known onset at most. Where the grammar's density
  steering keeps a note from starting yet, the voice holds its note rather than leave a
  gap. A small model otherwise ends a third of its bars a beat early, a rest in one voice
  that Bach hardly ever writes (the bundled model: 38 % of its bars end short, 10 % of
  the chorales' bars, whose rests fall in all voices at once: 96 % of their onsets have
  all four voices sounding).

The guard never leaves a row without a pitch where the grammar offered one: when the
rules exclude every allowed pitch it drops the parallel rule, then the ranges; and never
without a choice where the grammar's sampling mask offered one. Motions into
notes a task keeps after a filled bar (infilling) are not checked: the new bar's last
duration is not known when its pitch is chosen.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from midilm.score.voices import VOICE_RANGES, VOICES
from midilm.tokenization.grammar import Violation
from midilm.tokenization.mmm import MMMTokenizer, Piece
from midilm.tokenization.mmm_grammar import MMMGrammarState, Phase
from midilm.tokenization.mmm_vocab import DRUMS, Kind

__all__ = ["VoiceLeadingState", "guard_fills", "guard_window", "voice_roles"]

_OPEN = np.iinfo(np.int64).max  # the end of a note not yet ended
_PITCHES = np.arange(128)
_EVENT_PHASES = (Phase.BAR_METER, Phase.BAR_DENSITY, Phase.IN_BAR, Phase.IN_FILL)
_CENTRES = {name: (lo + hi) / 2 for name, (lo, hi) in VOICE_RANGES.items()}


def voice_roles(means: Sequence[float | None]) -> list[str] | None:
    """The voice (``"soprano"`` … ``"bass"``) of each of four tracks, from the mean pitch of
    their known notes (``None``: no notes yet); ``None`` unless there are four tracks.

    Tracks with notes keep their pitch order and take the roles whose range centres are
    nearest (three parts known: the missing voice is the one that fits the gap); tracks
    without notes take the roles left, in track order."""
    if len(means) != len(VOICES):
        return None
    known = sorted(((m, i) for i, m in enumerate(means) if m is not None), key=lambda k: -k[0])

    def distance(roles: tuple[int, ...]) -> float:
        return sum(abs(m - _CENTRES[VOICES[r]]) for (m, _), r in zip(known, roles, strict=True))

    taken = min(itertools.combinations(range(len(VOICES)), len(known)), key=distance)
    out = [""] * len(VOICES)
    for (_, track), role in zip(known, taken, strict=True):
        out[track] = VOICES[role]
    left = [VOICES[r] for r in range(len(VOICES)) if r not in taken]
    for track, role in zip((i for i, m in enumerate(means) if m is None), left, strict=True):
        out[track] = role
    return out


class _Notes:
    """One track's notes in window steps, appended as the row writes them."""

    def __init__(self, onset: Sequence[int] = (), end: Sequence[int] = (),
                 pitch: Sequence[int] = ()) -> None:  # fmt: skip
        self.onset, self.end, self.pitch = list(onset), list(end), list(pitch)
        self._arrays: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def start(self, time: int, pitch: int) -> None:
        self.onset.append(time)
        self.end.append(_OPEN)
        self.pitch.append(pitch)
        self._arrays = None

    def stop(self, time: int, pitch: int) -> None:
        """End the earliest open note of ``pitch`` (as the decoder pairs them)."""
        for i, (end, p) in enumerate(zip(self.end, self.pitch, strict=True)):
            if end == _OPEN and p == pitch:
                self.end[i] = time
                self._arrays = None
                return

    def close(self, time: int) -> None:
        """End every open note (a track or a fill answer ends)."""
        self.end = [time if e == _OPEN else e for e in self.end]
        self._arrays = None

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._arrays is None:
            self._arrays = (np.asarray(self.onset, dtype=np.int64),
                            np.asarray(self.end, dtype=np.int64),
                            np.asarray(self.pitch, dtype=np.int64))  # fmt: skip
        return self._arrays


def _sounding(notes: tuple[np.ndarray, np.ndarray, np.ndarray], time: int) -> int:
    """The highest pitch sounding at ``time`` (onset ≤ time < end), -1 in a rest."""
    onset, end, pitch = notes
    inside = (onset <= time) & (time < end)
    return int(pitch[inside].max()) if inside.any() else -1


class VoiceLeadingState:
    """A row's :class:`~midilm.tokenization.mmm_grammar.MMMGrammarState` whose
    :meth:`sampling_mask` also keeps the voice-leading rules (see the module docstring).
    It reads every id the row is fed or samples, so it knows each track's notes as the
    grammar does; ``lookahead[k]`` holds the notes of track ``k`` that the task will feed
    later in the window (context bars), known before the track is reached."""

    def __init__(
        self,
        inner: MMMGrammarState,
        tok: MMMTokenizer,
        *,
        pitched: Sequence[bool],
        ranges: Sequence[tuple[int, int] | None],
        lookahead: Sequence[_Notes],
        fills: Sequence[tuple[int, int]] = (),
        bar_offsets: Sequence[int] = (),
    ) -> None:
        self.inner = inner
        self.pitched = list(pitched)
        self.ranges = list(ranges)
        self.lookahead = list(lookahead)
        self.fills = list(fills)  # (track, bar) of each fill answer, in order
        self.bar_offsets = list(bar_offsets)  # window steps before each bar
        self.notes = [_Notes() for _ in self.pitched]  # what the row was fed or wrote
        vocab = tok.vocab
        self._kinds = vocab.kinds
        self._values = vocab.values
        self._on_ids = vocab.note_on
        self._has_on = vocab.note_on >= 0
        self._is_on = self._kinds == Kind.NOTE_ON
        self._is_off = self._kinds == Kind.NOTE_OFF
        self._is_delta = self._kinds == Kind.TIME_DELTA
        self._ends_bar = (self._kinds == Kind.BAR_END) | (self._kinds == Kind.FILL_END)
        self._at = -1
        self._mask = np.zeros(0, dtype=bool)

    # --------------------------------------------------------- GrammarState protocol
    def allowed(self) -> np.ndarray:
        return self.inner.allowed()

    def sampling_mask(self) -> np.ndarray:
        """The grammar's sampling mask without the ``NOTE_ON`` ids the rules exclude
        (never all False, never without a pitch the grammar offered); read-only."""
        inner = self.inner
        if self._at == inner.position:
            return self._mask
        mask = inner.sampling_mask()
        if inner.phase in _EVENT_PHASES:
            mask = self._narrow(mask)
        self._mask, self._at = mask, inner.position
        return mask

    def advance(self, token_id: int) -> Violation | None:
        inner = self.inner
        if 0 <= token_id < len(self._kinds):
            kind = int(self._kinds[token_id])
            if kind in (Kind.NOTE_ON, Kind.NOTE_OFF) and inner.phase in _EVENT_PHASES:
                track, time = self._where()
                if 0 <= track < len(self.notes):
                    pitch = int(self._values[token_id])
                    if kind == Kind.NOTE_ON:
                        self.notes[track].start(time, pitch)
                    else:
                        self.notes[track].stop(time, pitch)
            elif kind in (Kind.TRACK_END, Kind.FILL_END):
                track, time = self._where()
                if 0 <= track < len(self.notes):
                    self.notes[track].close(time)
        return inner.advance(token_id)

    def finish(self) -> list[Violation]:
        return self.inner.finish()

    def is_complete(self) -> bool:
        return self.inner.is_complete()

    # ------------------------------------------------------------------ the rules
    def _where(self) -> tuple[int, int]:
        """The track being written and the time in window steps."""
        inner = self.inner
        if inner.phase is Phase.IN_FILL:
            index = inner.fills_done - 1
            if not 0 <= index < len(self.fills):
                return -1, 0
            track, bar = self.fills[index]
            return track, self.bar_offsets[bar] + inner.time
        return inner.track, inner.now

    def _narrow(self, mask: np.ndarray) -> np.ndarray:
        track, time = self._where()
        if not 0 <= track < len(self.notes) or not self.pitched[track]:
            return mask
        mask = self._together(mask, track, time)
        offered = self._has_on & mask[np.maximum(self._on_ids, 0)]
        if not offered.any():
            return mask
        out_of_range = np.zeros(128, dtype=bool)
        if self.ranges[track] is not None:
            lo, hi = self.ranges[track]  # type: ignore[misc]
            pitches = _PITCHES
            out_of_range = (pitches < lo) | (pitches > hi)
        parallel = self._parallels(track, time)
        for banned in (out_of_range | parallel, out_of_range):
            keep = offered & ~banned
            if keep.any():
                if not (offered & banned).any():
                    return mask
                narrowed = mask.copy()
                narrowed[self._on_ids[offered & banned]] = False
                return narrowed
        return mask

    def _together(self, mask: np.ndarray, track: int, time: int) -> np.ndarray:
        """No voice falls silent alone (see the module docstring)."""
        inner = self.inner
        left = inner.bar_length - inner.time
        if left <= 0:
            return mask
        filling = inner.phase is Phase.IN_FILL
        others = [v for k in range(len(self.notes)) if (v := self._known(k, track, filling))]
        if not others:
            return mask
        heard = any(_sounding(voice, time) >= 0 for voice in others)
        if _sounding(self.notes[track].arrays(), time) >= 0:
            # Sounding: where steering keeps the next note back, hold this one.
            if heard and not (mask & self._is_on).any() and (mask & self._is_delta).any():
                return _narrowed(mask, ~self._is_off)
            return mask
        if heard:
            return _narrowed(mask, self._is_on)
        later = [int(v[0][v[0] > time].min()) for v in others if (v[0] > time).any()]
        if not later:
            return mask
        gap = min(later) - time
        keep = ~self._is_delta | inner.g._delta_upto[min(gap, len(inner.g._delta_upto) - 1)]
        if gap < left:  # a known voice starts again inside this bar
            keep &= ~self._ends_bar
        return _narrowed(mask, keep)

    def _known(self, track: int, current: int, filling: bool) -> tuple[np.ndarray, ...] | None:
        """Track ``track``'s notes as known while ``current`` is written."""
        if not self.pitched[track] or track == current:
            return None
        if filling or track < current:
            notes = self.notes[track]
        else:
            notes = self.lookahead[track]
        return notes.arrays() if notes.onset else None

    def _parallels(self, track: int, time: int) -> np.ndarray:
        """Pitches whose note at ``time`` would move in parallel fifths or octaves with a
        known voice, from the latest onset of the two voices before ``time``."""
        pitches = _PITCHES
        banned = np.zeros(128, dtype=bool)
        own = self.notes[track].arrays()
        before = own[0][own[0] < time]
        chord = _sounding(own, time)  # a note already sounding now: only higher ones count
        filling = self.inner.phase is Phase.IN_FILL
        for other in range(len(self.notes)):
            voice = self._known(other, track, filling)
            if voice is None:
                continue
            earlier = voice[0][voice[0] < time]
            if not len(before) and not len(earlier):
                continue
            previous = int(max(before.max(initial=-1), earlier.max(initial=-1)))
            upper1 = _sounding(own, previous)
            lower1, lower2 = _sounding(voice, previous), _sounding(voice, time)
            if min(upper1, lower1, lower2) < 0 or lower1 == lower2:
                continue  # a rest, or the other voice holds: no parallel motion
            interval = abs(upper1 - lower1) % 12
            if interval not in (0, 7):
                continue
            banned |= (np.abs(pitches - lower2) % 12 == interval) & (pitches != upper1)
        banned &= pitches > chord
        return banned


def _narrowed(mask: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """``mask & keep``, or ``mask`` itself where that would leave nothing."""
    out = mask & keep
    return out if out.any() else mask


# ---------------------------------------------------------------------- builders
def _window_notes(piece: Piece, track: int, lo: int, hi: int) -> _Notes:
    """A track's notes in ``[lo, hi)`` as the encoder writes them (clipped), in steps from
    ``lo``."""
    part = piece.tracks[track]
    inside = (part.onset < hi) & (part.end > lo)
    return _Notes((np.maximum(part.onset[inside], lo) - lo).tolist(),
                  (np.minimum(part.end[inside], hi) - lo).tolist(),
                  part.pitch[inside].tolist())  # fmt: skip


def _ranges(piece: Piece) -> tuple[list[bool], list[tuple[int, int] | None]]:
    """Which tracks are pitched, and each one's voice range (four pitched tracks only)."""
    pitched = [t.program != DRUMS for t in piece.tracks]
    ranges: list[tuple[int, int] | None] = [None] * len(piece.tracks)
    voices = [i for i, p in enumerate(pitched) if p]
    means = [float(piece.tracks[i].pitch.mean()) if len(piece.tracks[i].pitch) else None
             for i in voices]  # fmt: skip
    roles = voice_roles(means)
    if roles is not None:
        for i, role in zip(voices, roles, strict=True):
            ranges[i] = VOICE_RANGES[role]
    return pitched, ranges


def guard_window(
    state: MMMGrammarState,
    tok: MMMTokenizer,
    piece: Piece,
    start: int,
    stop: int,
    known_until: Sequence[int],
) -> VoiceLeadingState:
    """The guard of one row writing bars ``[start, stop)`` of ``piece`` track after track;
    ``known_until[k]``: the bar up to which the task feeds track ``k`` (the context bars of
    a track it writes, all bars of one it keeps)."""
    pitched, ranges = _ranges(piece)
    lo = piece.bars[start].start_ticks
    lookahead = [
        _window_notes(piece, k, lo, piece.bars[until - 1].end_ticks) if until > start else _Notes()
        for k, until in enumerate(known_until)
    ]
    return VoiceLeadingState(state, tok, pitched=pitched, ranges=ranges, lookahead=lookahead)


def guard_fills(
    state: MMMGrammarState,
    tok: MMMTokenizer,
    piece: Piece,
    start: int,
    stop: int,
    fills: Sequence[tuple[int, int]],
) -> VoiceLeadingState:
    """The guard of one row answering the ``fills`` (``(track, bar within the window)``, in
    the order the answers come) of the window ``[start, stop)``: the prompt before them
    holds every track."""
    pitched, ranges = _ranges(piece)
    lo = piece.bars[start].start_ticks
    offsets = [bar.start_ticks - lo for bar in piece.bars[start:stop]]
    return VoiceLeadingState(state, tok, pitched=pitched, ranges=ranges,
                             lookahead=[_Notes() for _ in piece.tracks], fills=fills,
                             bar_offsets=offsets)  # fmt: skip
