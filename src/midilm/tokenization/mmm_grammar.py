"""The MMM grammar as a state machine over ids (see ``docs/mmm-grammar.md``).

``PIECE_START (TIME_SIGNATURE) (GENRE|STYLE)* (TRACK_START INST DENSITY (BAR_START events
BAR_END)×bars TRACK_END)+ (FILL_START events FILL_END)*``. Within a bar a ``NOTE_ON`` needs
its pitch silent and time left in the bar, a ``NOTE_OFF`` a pitch sounding since an earlier
step, and the deltas never pass the bar's length. Notes may sound across bar lines but are
closed before their track ends; a fill answer closes every note it opens.

The same machine masks logits while sampling and counts syntax errors in evaluation.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

from midilm.score.meter import Meter
from midilm.tokenization.grammar import Violation, ViolationKind, check
from midilm.tokenization.mmm_vocab import Kind

if TYPE_CHECKING:
    from midilm.tokenization.mmm import MMMTokenizer

__all__ = ["MMMGrammar", "MMMGrammarState"]


class Phase(enum.IntEnum):
    START = 0  # before PIECE_START
    HEADER = 1  # after PIECE_START: meter, genre, first TRACK_START
    INST = 2  # after TRACK_START
    DENSITY = 3  # after INST (density per track)
    BAR = 4  # before a bar: BAR_START
    BAR_METER = 5  # after BAR_START: optional/required TIME_SIGNATURE
    BAR_DENSITY = 6  # after BAR_START (density per bar)
    IN_BAR = 7  # events
    PLACEHOLDER = 8  # after FILL_IN: BAR_END
    AFTER_BAR = 9  # after BAR_END: BAR_START or TRACK_END
    AFTER_TRACK = 10  # TRACK_START, FILL_START or the end
    IN_FILL = 11  # events of a fill answer
    AFTER_FILL = 12  # FILL_START or the end
    DONE = 13  # after PIECE_END


class MMMGrammar:
    """Grammar of one MMM tokenizer. ``bars``: bars per track when known (a window);
    ``None`` lets the first track set it. ``allow_placeholders=False`` forbids ``FILL_IN``
    (a sampler composing music never wants a placeholder). ``bar_meters`` fixes the meter of
    each bar (a sampler writing into a known bar grid): the first track may then not change
    meter where the grid does not."""

    def __init__(
        self,
        tokenizer: MMMTokenizer,
        bars: int | None = None,
        allow_placeholders: bool = True,
        bar_meters: list[str] | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.config = tokenizer.config
        self.vocab = tokenizer.vocab
        self.vocab_size = len(self.vocab)
        self.bars = bars
        self.allow_placeholders = allow_placeholders
        self.bar_meters = bar_meters
        v = self.vocab
        self._kind_masks = {k: v.kinds == int(k) for k in Kind}
        self._on_ids = v.note_on
        self._off_ids = v.note_off
        # _delta_upto[r]: mask of TIME_DELTA ids advancing at most r steps.
        max_delta = len(v.time_delta) - 1
        upto = np.zeros((max_delta + 1, len(v)), dtype=bool)
        for steps in range(1, max_delta + 1):
            upto[steps] = upto[steps - 1]
            if v.time_delta[steps] >= 0:
                upto[steps, v.time_delta[steps]] = True
        self._delta_upto = upto
        self._meter_steps = {
            m: int(Meter.parse(m).quarters_per_bar * self.config.steps_per_quarter)
            for m in v.meters
        }
        self.default_meter = (self.config.meters or ("4/4",))[0]

    def start(self) -> MMMGrammarState:
        return MMMGrammarState(self)

    def check(self, ids: Iterable[int]) -> list[Violation]:
        return check(self, ids)

    def bar_steps(self, meter: str) -> int:
        return self._meter_steps.get(meter) or int(
            Meter.parse(meter).quarters_per_bar * self.config.steps_per_quarter
        )


class MMMGrammarState:
    """The machine after some ids; see :class:`~midilm.tokenization.grammar.GrammarState`."""

    def __init__(self, grammar: MMMGrammar) -> None:
        self.g = grammar
        self.phase = Phase.START
        self.position = 0  # ids seen
        self.bars_expected = grammar.bars
        self.track = -1
        self.bar = -1  # bar index within the current track
        self.time = 0  # steps since the bar started
        self.bar_length = grammar.bar_steps(grammar.default_meter)
        self.origin = 0  # absolute step where the current bar starts
        self.meter = grammar.default_meter
        self.piece_meter = grammar.default_meter
        self.header_meter_seen = False
        self.first_track_meters: list[str] = []  # meter of each bar, from the first track
        self.sounding = np.zeros(128, dtype=np.int32)  # open notes per pitch
        self.onset = np.zeros(128, dtype=np.int64)  # absolute step of the latest open note
        self.placeholders: list[int] = []  # bar length of each FILL_IN, in order
        self.fills_done = 0
        self._bar_is_empty = True  # no event yet in the current bar
        self._mask_at = -1  # position at which _mask was computed
        self._mask = np.zeros(0, dtype=bool)

    # ------------------------------------------------------------------ queries
    @property
    def now(self) -> int:
        return self.origin + self.time

    @property
    def fills_pending(self) -> int:
        return len(self.placeholders) - self.fills_done

    def is_complete(self) -> bool:
        if self.phase is Phase.DONE:
            return True
        return self.phase in (Phase.AFTER_TRACK, Phase.AFTER_FILL) and self.fills_pending == 0

    def _last_bar(self) -> bool:
        return self.bars_expected is not None and self.bar + 1 >= self.bars_expected

    def _forced_meter(self) -> str | None:
        """The meter this bar must have: from the fixed grid, or, for tracks after the
        first, the one the first track gave it."""
        fixed = self.g.bar_meters
        if fixed is not None and 0 <= self.bar < len(fixed):
            return fixed[self.bar]
        if self.track > 0 and self.bar < len(self.first_track_meters):
            return self.first_track_meters[self.bar]
        return None

    def allowed(self) -> np.ndarray:
        # A sampler asks for the mask, then advances with the chosen id: compute it once.
        if self._mask_at == self.position:
            return self._mask
        self._mask = self._compute_allowed()
        self._mask_at = self.position
        return self._mask

    def _compute_allowed(self) -> np.ndarray:
        g, v, phase = self.g, self.g.vocab, self.phase
        km = g._kind_masks
        mask = np.zeros(g.vocab_size, dtype=bool)

        def allow(kind: Kind) -> None:
            mask[km[kind]] = True

        if phase is Phase.START:
            allow(Kind.PIECE_START)
        elif phase is Phase.HEADER:
            if g.config.meter_tokens and not self.header_meter_seen and v.meters:
                if g.bar_meters and g.bar_meters[0] in v.time_signature:
                    mask[v.time_signature[g.bar_meters[0]]] = True
                else:
                    allow(Kind.TIME_SIGNATURE)
            else:
                allow(Kind.TRACK_START)
                allow(Kind.GENRE)
                allow(Kind.STYLE)
        elif phase is Phase.INST:
            allow(Kind.INST)
        elif phase is Phase.DENSITY:
            allow(Kind.DENSITY)
        elif phase is Phase.BAR:
            allow(Kind.BAR_START)
        elif phase is Phase.BAR_METER:
            forced = self._forced_meter()
            if forced is None:
                allow(Kind.TIME_SIGNATURE)
                self._after_meter_mask(mask)
            elif forced != self.meter and forced in v.time_signature:
                mask[v.time_signature[forced]] = True
            else:
                self._after_meter_mask(mask)
        elif phase is Phase.BAR_DENSITY:
            allow(Kind.DENSITY)
        elif phase in (Phase.IN_BAR, Phase.IN_FILL):
            self._event_mask(mask)
        elif phase is Phase.PLACEHOLDER:
            allow(Kind.BAR_END)
        elif phase is Phase.AFTER_BAR:
            open_notes = bool(self.sounding.any())
            if self.bars_expected is None or self.bar + 1 < self.bars_expected:
                allow(Kind.BAR_START)
            if (
                self.bars_expected is None or self.bar + 1 == self.bars_expected
            ) and not open_notes:
                allow(Kind.TRACK_END)
        elif phase is Phase.AFTER_TRACK:
            allow(Kind.TRACK_START)
            if self.fills_pending:
                allow(Kind.FILL_START)
            else:
                allow(Kind.PIECE_END)
        elif phase is Phase.AFTER_FILL:
            if self.fills_pending:
                allow(Kind.FILL_START)
            else:
                allow(Kind.PIECE_END)
        if not mask.any():  # DONE, or a vocabulary lacking what the state needs
            mask[v.pad_id if v.pad_id >= 0 else 0] = True
        return mask

    def _after_meter_mask(self, mask: np.ndarray) -> None:
        if self.g.config.density_placement == "bar":
            mask[self.g._kind_masks[Kind.DENSITY]] = True
        else:
            self._event_mask(mask)

    def _event_mask(self, mask: np.ndarray) -> None:
        g = self.g
        sounding = self.sounding > 0
        if self.time < self.bar_length:
            ids = g._on_ids[~sounding]
            mask[ids[ids >= 0]] = True
        closable = sounding & (self.onset < self.now)
        ids = g._off_ids[closable]
        mask[ids[ids >= 0]] = True
        room = min(self.bar_length - self.time, len(g._delta_upto) - 1)
        if room > 0:
            mask |= g._delta_upto[room]
        if self.phase is Phase.IN_FILL:
            if not sounding.any():
                mask[g._kind_masks[Kind.FILL_END]] = True
        elif not (self._last_bar() and sounding.any()):
            mask[g._kind_masks[Kind.BAR_END]] = True
        in_bar = self.phase is not Phase.IN_FILL
        if in_bar and self._bar_is_empty and g.allow_placeholders and not sounding.any():
            mask[g._kind_masks[Kind.FILL_IN]] = True

    # ------------------------------------------------------------------ transitions
    def advance(self, token_id: int) -> Violation | None:
        g, v = self.g, self.g.vocab
        index = self.position
        if not 0 <= token_id < g.vocab_size:
            self.position += 1
            return Violation(index, str(token_id), ViolationKind.TYPE, "id outside the vocabulary")
        allowed = bool(self.allowed()[token_id])  # before the position moves: cached mask
        self.position += 1
        kind = Kind(int(v.kinds[token_id]))
        value = int(v.values[token_id])
        token = v.tokens[token_id]
        problem = None if allowed else self._classify(kind, value)
        self._apply(kind, value, token)
        if problem is None:
            return None
        violation_kind, message = problem
        return Violation(index, token, violation_kind, message)

    def _classify(self, kind: Kind, value: int) -> tuple[ViolationKind, str]:
        """Why a token was not allowed, by TSE kind."""
        in_events = self.phase in (Phase.IN_BAR, Phase.IN_FILL, Phase.BAR_METER, Phase.BAR_DENSITY)
        if in_events and kind is Kind.NOTE_ON and self.sounding[value] > 0:
            return ViolationKind.DUPLICATE_NOTE, f"pitch {value} is already sounding"
        if in_events and kind is Kind.NOTE_ON and self.time >= self.bar_length:
            return ViolationKind.TIME, "a note starts at the end of the bar"
        if in_events and kind is Kind.NOTE_OFF and self.sounding[value] == 0:
            return ViolationKind.NOTE_OFF_WITHOUT_ON, f"pitch {value} is not sounding"
        if in_events and kind is Kind.NOTE_OFF:
            return ViolationKind.TIME, f"pitch {value} would end where it starts"
        if in_events and kind is Kind.TIME_DELTA:
            return ViolationKind.TIME, (
                f"time passes the bar's end ({self.time} + {value} > {self.bar_length} steps)"
            )
        closing = kind in (Kind.BAR_END, Kind.TRACK_END, Kind.FILL_END)
        if (
            closing
            and self.sounding.any()
            and self.phase in (Phase.IN_BAR, Phase.IN_FILL, Phase.AFTER_BAR)
        ):
            pitches = np.flatnonzero(self.sounding).tolist()
            return ViolationKind.UNCLOSED_NOTE, f"notes never ended: pitches {pitches}"
        return ViolationKind.TYPE, f"{kind.name} may not follow here ({self.phase.name.lower()})"

    def _apply(self, kind: Kind, value: int, token: str) -> None:
        """Move the machine as the decoder would read the token, allowed or not."""
        g = self.g
        if kind is Kind.PIECE_START:
            if self.phase is Phase.START:
                self.phase = Phase.HEADER
        elif kind is Kind.TIME_SIGNATURE:
            meter = token.partition("=")[2]
            if self.phase is Phase.HEADER:
                self.header_meter_seen = True
                self.piece_meter = self.meter = meter
                self.bar_length = g.bar_steps(meter)
            elif self.phase in (Phase.BAR_METER, Phase.IN_BAR) and self.time == 0:
                self.meter = meter
                self.bar_length = g.bar_steps(meter)
                if self.track == 0 and self.bar < len(self.first_track_meters):
                    self.first_track_meters[self.bar] = meter
                self.phase = (
                    Phase.BAR_DENSITY if g.config.density_placement == "bar" else Phase.IN_BAR
                )
        elif kind in (Kind.GENRE, Kind.STYLE):
            pass
        elif kind is Kind.TRACK_START:
            self._close_track()
            self.track += 1
            self.bar = -1
            self.origin = 0
            self.time = 0
            self.meter = self.piece_meter
            self.bar_length = g.bar_steps(self.meter)
            self.phase = Phase.INST
        elif kind is Kind.INST:
            self.phase = Phase.DENSITY if g.config.density_placement == "track" else Phase.BAR
        elif kind is Kind.DENSITY:
            if self.phase is Phase.DENSITY:
                self.phase = Phase.BAR
            elif self.phase in (Phase.BAR_DENSITY, Phase.BAR_METER):
                self.phase = Phase.IN_BAR
        elif kind is Kind.BAR_START:
            if self.bar >= 0:
                self.origin += self.bar_length
            self.bar += 1
            self.time = 0
            self._bar_is_empty = True
            if self.track == 0:
                self.first_track_meters.append(self.meter)
            if g.config.meter_tokens:
                self.phase = Phase.BAR_METER
            elif g.config.density_placement == "bar":
                self.phase = Phase.BAR_DENSITY
            else:
                self.phase = Phase.IN_BAR
        elif kind is Kind.BAR_END:
            self.phase = Phase.AFTER_BAR
        elif kind is Kind.TRACK_END:
            self._close_track()
            self.phase = Phase.AFTER_TRACK
        elif kind is Kind.FILL_IN:
            self.placeholders.append(self.bar_length)
            self.phase = Phase.PLACEHOLDER
        elif kind is Kind.FILL_START:
            length = (
                self.placeholders[self.fills_done]
                if self.fills_done < len(self.placeholders)
                else self.bar_length
            )
            self.fills_done += 1
            self.sounding[:] = 0
            self.origin, self.time, self.bar_length = 0, 0, length
            self.phase = Phase.IN_FILL
        elif kind is Kind.FILL_END:
            self.sounding[:] = 0
            self.phase = Phase.AFTER_FILL
        elif kind is Kind.PIECE_END:
            self.phase = Phase.DONE
        elif kind in (Kind.NOTE_ON, Kind.NOTE_OFF, Kind.TIME_DELTA):
            if self.phase in (Phase.BAR_METER, Phase.BAR_DENSITY):
                self.phase = Phase.IN_BAR
            self._bar_is_empty = False
            if kind is Kind.NOTE_ON:
                self.sounding[value] += 1
                self.onset[value] = self.now
            elif kind is Kind.NOTE_OFF:
                if self.sounding[value] > 0:
                    self.sounding[value] -= 1
            else:
                self.time += value

    def _close_track(self) -> None:
        if self.track == 0 and self.bars_expected is None and self.bar >= 0:
            self.bars_expected = self.bar + 1
        self.sounding[:] = 0

    def finish(self) -> list[Violation]:
        if self.is_complete():
            return []
        where = self.phase.name.lower()
        if self.sounding.any() and self.phase in (Phase.IN_BAR, Phase.IN_FILL, Phase.AFTER_BAR):
            pitches = np.flatnonzero(self.sounding).tolist()
            return [
                Violation(
                    self.position,
                    "<end>",
                    ViolationKind.UNCLOSED_NOTE,
                    f"notes never ended: pitches {pitches}",
                )
            ]
        message = f"the sequence ends too early ({where})"
        if self.fills_pending and self.phase in (Phase.AFTER_TRACK, Phase.AFTER_FILL):
            message = f"{self.fills_pending} placeholder(s) without an answer"
        return [Violation(self.position, "<end>", ViolationKind.TYPE, message)]
