"""The MMM grammar as a state machine over ids (see ``docs/mmm-grammar.md``).

``PIECE_START (TIME_SIGNATURE) (GENRE|STYLE)* (TRACK_START INST DENSITY (BAR_START events
BAR_END)×bars TRACK_END)+ (FILL_START events FILL_END)*``. Within a bar a ``NOTE_ON`` needs
its pitch silent and time left in the bar, a ``NOTE_OFF`` a pitch sounding since an earlier
step, and the deltas never pass the bar's length. Notes may sound across bar lines but are
closed before their track ends; a fill answer closes every note it opens.

The same machine masks logits while sampling and counts syntax errors in evaluation.

A sampler also asks it for :meth:`MMMGrammarState.sampling_mask`: the legal ids narrowed so
that each track lands in the note count of its ``DENSITY`` bin (a model alone misses bins
one or two notes wide). ``NOTE_ON`` is forbidden once the track has the bin's most notes;
ending the track is forbidden while it has fewer than the fewest, and time may not run so
far ahead that the notes still owed no longer fit at a plausible pace. This steers sampling
only: a sequence outside its bin is still well-formed, never a violation.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

from midilm.score.meter import Meter
from midilm.tokenization.grammar import Violation, ViolationKind, check
from midilm.tokenization.mmm_vocab import Kind

if TYPE_CHECKING:
    from midilm.tokenization.mmm import MMMTokenizer

__all__ = ["MMMGrammar", "MMMGrammarState"]

_NO_LIMIT = 1 << 30  # the most notes of the top density bin
DENSITY_PACE = 2.0
"""How far behind or ahead of its bin a track may run before the mask steps in: time may not
pass the point from which the notes still owed need more than this many times the bin's
average rate (nor more than a note per step, the hard limit, always kept), and a note waits
while fewer than 1 / DENSITY_PACE of that rate would be left for the time still to come.
Measured on the bundled model (96 pieces × 4 voices at random bins): as many notes start in
a window's last eighth as without steering (0.20 per track; the hard limits alone cram 0.42)
and nearly as few tracks end on a silent bar (2.6 %; 1.8 % unsteered, 6.5 % with the hard
limits alone)."""


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
    meter where the grid does not. ``control_density=False`` leaves
    :meth:`MMMGrammarState.sampling_mask` equal to the legal ids (no density steering)."""

    def __init__(
        self,
        tokenizer: MMMTokenizer,
        bars: int | None = None,
        allow_placeholders: bool = True,
        bar_meters: list[str] | None = None,
        control_density: bool = True,
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
        self.control_density = control_density
        # What density steering keeps: all but NOTE_ON, all but BAR_END, and (row r) all
        # but the TIME_DELTA ids advancing more than r steps.
        self._not_note_on = ~self._kind_masks[Kind.NOTE_ON]
        self._not_bar_end = ~self._kind_masks[Kind.BAR_END]
        self._delta_within = ~(self._kind_masks[Kind.TIME_DELTA][None, :] & ~upto)
        # _bar_offsets[j]: steps before bar j of the fixed grid.
        self._bar_offsets = (
            np.concatenate([[0], np.cumsum([self.bar_steps(m) for m in bar_meters])]).tolist()
            if bar_meters
            else None
        )
        self._ranges: dict[tuple[int, int], tuple[int, int]] = {}

    def density_range(self, bin_: int, num_bars: int) -> tuple[int, int]:
        """Fewest and most notes of density ``bin_`` over ``num_bars`` bars (cached)."""
        key = (bin_, num_bars)
        if key not in self._ranges:
            fewest, most = self.tokenizer.density_range(bin_, num_bars)
            self._ranges[key] = (fewest, _NO_LIMIT if most is None else most)
        return self._ranges[key]

    def start(self) -> MMMGrammarState:
        return MMMGrammarState(self)

    def check(self, ids: Iterable[int]) -> list[Violation]:
        return check(self, ids)

    def bar_steps(self, meter: str) -> int:
        return self._meter_steps.get(meter) or int(
            Meter.parse(meter).quarters_per_bar * self.config.steps_per_quarter
        )


def _unless_empty(mask: np.ndarray, legal: np.ndarray) -> np.ndarray:
    """``mask``, or ``legal`` where steering left nothing (a vocabulary lacking a delta)."""
    return mask if mask.any() else legal


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
        self._steered_at = -1  # position at which _steered was computed
        self._steered = self._mask
        # The density the current track (or bar, with per-bar density) must land in.
        self.density_active = False
        self.density_notes = 0  # NOTE_ONs counted against it so far
        self.density_fewest = 0
        self.density_most = _NO_LIMIT
        self._density_last_bar = -1  # the bar that ends its span
        self._rate = 1.0  # the pace owed notes are asked for, in notes per step
        self._reserve_div = 1  # steps in its span × DENSITY_PACE
        self._after_bar = -2  # the bar _after_steps was computed for
        self._after_steps = 0  # steps in its span after that bar

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

    def sampling_mask(self) -> np.ndarray:
        """The legal ids a sampler may choose so that the track lands in its density bin
        (see the module's docstring); shared, so read-only. Never all False: where steering
        would leave nothing, the legal ids stand."""
        if self._steered_at == self.position:
            return self._steered
        mask = self.allowed()
        if self.density_active and self.phase in (Phase.IN_BAR, Phase.BAR_METER):
            mask = self._steer(mask)
        self._steered = mask
        self._steered_at = self.position
        return mask

    def _steer(self, legal: np.ndarray) -> np.ndarray:
        g = self.g
        notes, fewest, most = self.density_notes, self.density_fewest, self.density_most
        if notes >= most:  # (then no note is owed: fewest ≤ most)
            return _unless_empty(legal & g._not_note_on, legal)
        owed = fewest - notes
        if owed <= 0 and most == _NO_LIMIT:
            return legal
        left = max(self.bar_length - self.time, 0)  # steps left in this bar
        last = self.bar >= self._density_last_bar
        ahead = left  # steps a note may still start on
        if not last:
            if self._after_bar != self.bar:
                self._after_bar, self._after_steps = self.bar, self._steps_after_bar()
            ahead += self._after_steps
        # Keep notes for the time still to come, at 1 / DENSITY_PACE of the bin's average
        # rate, so that a busy start does not leave the last bars silent.
        spend = notes < most - (ahead - 1) * most // self._reserve_div
        if owed <= 0:
            return legal if spend else _unless_empty(legal & g._not_note_on, legal)
        # A note per step at most keeps the count reachable without chords; the pace asks
        # for the owed notes at DENSITY_PACE × the bin's average rate, but never stops
        # time altogether while a step is to spare.
        reach = max(0, ahead - math.ceil(owed / self._rate), min(1, ahead - owed))
        mask = legal
        if reach < min(left, len(g._delta_within) - 1):
            mask = mask & g._delta_within[reach]  # time may move this far at most
        if last or left > reach:
            mask = mask & g._not_bar_end
        if not spend and reach > 0:  # a note may wait: time can still move
            mask = mask & g._not_note_on
        return mask if mask is legal else _unless_empty(mask, legal)

    def _steps_after_bar(self) -> int:
        """Steps in the bars after the current one, up to the end of the density's span."""
        later = self._density_last_bar - self.bar
        offsets = self.g._bar_offsets
        if offsets is not None and self._density_last_bar + 1 < len(offsets):
            return offsets[self._density_last_bar + 1] - offsets[self.bar + 1]
        return later * self.bar_length

    def _start_density(
        self, bin_: int, bars: int, last_bar: int, steps: int, *, sound: bool = False
    ) -> None:
        """``sound``: a track asked for must sound, whatever its bin allows (the lowest bin
        of a track's window counts from zero notes; a bar of its own may rest)."""
        fewest, most = self.g.density_range(bin_, bars)
        if sound and most > 0:
            fewest = max(fewest, 1)
        self.density_fewest, self.density_most = fewest, most
        self.density_active = self.g.control_density
        self.density_notes = 0
        self._density_last_bar = last_bar
        steps = max(steps, 1)
        self._rate = min(1.0, DENSITY_PACE * self.density_fewest / steps) or 1.0
        self._reserve_div = math.ceil(steps * DENSITY_PACE)
        self._after_bar = -2  # the bar _after_steps was computed for
        self._after_steps = 0

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
            self.density_active = False
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
                bars = self.bars_expected
                if bars is not None:  # the first track of a free sequence: unknown length
                    offsets = g._bar_offsets
                    steps = (
                        offsets[bars]
                        if offsets is not None and bars < len(offsets)
                        else bars * self.bar_length
                    )
                    self._start_density(value, bars, bars - 1, steps, sound=True)
            elif self.phase in (Phase.BAR_DENSITY, Phase.BAR_METER):
                self.phase = Phase.IN_BAR
                self._start_density(value, 1, self.bar, self.bar_length)
        elif kind is Kind.BAR_START:
            if self.bar >= 0:
                self.origin += self.bar_length
            self.bar += 1
            self.time = 0
            self._bar_is_empty = True
            if g.config.density_placement == "bar":
                self.density_active = False  # until this bar's DENSITY
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
            self.density_active = False  # the placeholder's notes are not known here
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
                if self.phase is not Phase.IN_FILL:
                    self.density_notes += 1
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
