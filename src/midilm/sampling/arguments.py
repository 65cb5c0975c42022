"""What a user asks for, checked and turned into what the tasks take.

Users name instruments (``"piano"``, ``"bass"``, 33), describe density in words
(``"low"``) or bins, and ask for bars, tracks and candidates. Each bad value becomes one
:class:`~midilm.errors.GenerationRequestError` naming the argument, raised before any
sampling starts, so the CLI and the HTTP server can report it as the user's mistake.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NoReturn

from midilm.errors import GenerationRequestError, MidilmError
from midilm.tokenization.mmm import MMMTokenizer
from midilm.tokenization.mmm_vocab import DRUMS

__all__ = [
    "DENSITY_WORDS",
    "MAX_BARS",
    "MAX_SAMPLES",
    "Sampling",
    "check_bars",
    "density_bin",
    "resolve_densities",
    "resolve_instrument",
    "resolve_instruments",
    "resolve_meter",
]

DENSITY_WORDS = ("low", "medium", "high")
MAX_BARS = 1024  # a long piece; what the window slides over, not a model limit
MAX_SAMPLES = 64  # candidates sampled side by side in one batch

Instrument = int | str
Density = int | str | None


@dataclass(frozen=True)
class Sampling:
    """The sampling settings of one request, checked. ``voice_leading``: sample MMM
    tracks under the voice-leading guard (:mod:`midilm.sampling.voice_leading`); it narrows
    the grammar's mask, so it has no effect with ``constrained=False``."""

    temperature: float
    top_k: int | None
    top_p: float | None
    seed: int | None
    num_samples: int
    constrained: bool = True
    voice_leading: bool = False

    def __post_init__(self) -> None:
        if not _is_number(self.temperature) or self.temperature < 0:
            _fail("temperature", f"temperature must be a number ≥ 0, received {self.temperature!r}")
        if self.top_k is not None and (not _is_int(self.top_k) or self.top_k < 1):
            _fail("top_k", f"top_k must be an integer ≥ 1 (or None), received {self.top_k!r}")
        if self.top_p is not None and (not _is_number(self.top_p) or not 0 < self.top_p <= 1):
            _fail("top_p", f"top_p must be in (0, 1] (or None), received {self.top_p!r}")
        if self.seed is not None and (not _is_int(self.seed) or self.seed < 0):
            _fail("seed", f"seed must be an integer ≥ 0, received {self.seed!r}")
        if not _is_int(self.num_samples) or not 1 <= self.num_samples <= MAX_SAMPLES:
            _fail(
                "num_samples",
                f"num_samples must be an integer in 1–{MAX_SAMPLES}, received {self.num_samples!r}",
            )
        if not isinstance(self.voice_leading, bool):
            _fail("voice_leading", f"voice_leading must be true or false, received "
                                   f"{self.voice_leading!r}")  # fmt: skip


def check_bars(bars: object, *, field: str = "bars") -> int:
    """A number of bars to write: an integer in 1–``MAX_BARS``."""
    if not _is_int(bars) or not 1 <= bars <= MAX_BARS:
        _fail(field, f"{field} must be an integer in 1–{MAX_BARS}, received {bars!r}")
    return int(bars)


def resolve_instrument(tok: MMMTokenizer, value: Instrument, *, field: str = "instrument") -> int:
    """The MMM program (0–127, or ``DRUMS``) of a GM number, name or alias that the model's
    vocabulary can write."""
    from midilm.score.gm import parse_instrument, program_name

    if isinstance(value, bool) or not isinstance(value, int | str):
        _fail(field, f"{field}: expected a GM program number or name, received {value!r}")
    try:
        program, is_drum = parse_instrument(value)
    except (MidilmError, ValueError, TypeError) as err:
        raise GenerationRequestError(f"{field}: {err}", field=field) from None
    token = DRUMS if is_drum else program
    if tok.vocab.inst[token] < 0:
        known = [program_name(p, p == DRUMS) for p in _known_programs(tok)]
        name = program_name(program, is_drum)
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f"; close: {', '.join(close)}" if close else ""
        _fail(field, f"{field}: this model has no token for {name}{hint} "
                     f"(it knows {len(known)} instruments; see capabilities())")  # fmt: skip
    return token


def resolve_instruments(tok: MMMTokenizer, values: Sequence[Instrument]) -> list[int]:
    if isinstance(values, str | int):
        values = [values]
    values = list(values)
    if not values:
        _fail("instruments", "instruments: ask for at least one instrument")
    return [resolve_instrument(tok, v, field="instruments") for v in values]


def density_bin(tok: MMMTokenizer, value: Density, *, field: str = "density") -> int | None:
    """A density bin from a bin number or a word; ``None`` stays ``None`` (the context's
    density, or the middle bin). The words split the bins in thirds and pick the middle bin
    of each third (10 bins: low 1, medium 4, high 7)."""
    bins = tok.config.density_bins
    if value is None:
        return None
    if isinstance(value, str):
        word = value.strip().lower()
        if word.isdigit():
            value = int(word)
        elif word in DENSITY_WORDS:
            third = DENSITY_WORDS.index(word)
            lo, hi = third * bins // 3, (third + 1) * bins // 3
            return (lo + max(lo, hi - 1)) // 2
        else:
            _fail(field, f"{field}: {value!r} is not a density; use a bin 0–{bins - 1} or "
                         f"one of {', '.join(DENSITY_WORDS)}")  # fmt: skip
    if not _is_int(value) or not 0 <= value < bins:
        _fail(field, f"{field}: density bins are 0–{bins - 1} for this model, received {value!r}")
    return int(value)


def resolve_densities(tok: MMMTokenizer, density: object, tracks: int) -> list[int | None]:
    """One bin (or ``None``) per track: one value for all, or a list as long as the tracks."""
    if density is None or isinstance(density, int | str):
        return [density_bin(tok, density)] * tracks  # type: ignore[arg-type]
    values = list(density)  # type: ignore[call-overload]
    if len(values) != tracks:
        _fail("density", f"density: {len(values)} values for {tracks} track(s); give one per "
                         "track, or one for all")  # fmt: skip
    return [density_bin(tok, v) for v in values]


def resolve_meter(tok: MMMTokenizer, meter: str | None) -> str:
    known = list(tok.config.meters or ("4/4",))
    if meter is None:
        return known[0]
    if meter not in known:
        _fail("meter", f"meter: this model writes {', '.join(known)}, not {meter!r}")
    return meter


def _known_programs(tok: MMMTokenizer) -> list[int]:
    return [p for p in range(DRUMS + 1) if tok.vocab.inst[p] >= 0]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _fail(field: str, message: str) -> NoReturn:
    raise GenerationRequestError(message, field=field)
