"""What decides the content of a dataset (:class:`PrepareConfig`, saved in its manifest),
what a call to ``prepare`` reports (:class:`PrepareResult`), and every reason an item can
be left out (:data:`REJECTION_REASONS`). Imported through :mod:`midilm.data.prepare`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from midilm.config import FrozenConfig
from midilm.errors import ConfigError

__all__ = ["RECORD_VERSION", "REJECTION_REASONS", "PrepareConfig", "PrepareResult"]

RECORD_VERSION = 2  # bump when records change meaning: old work folders are then redone

REJECTION_REASONS: dict[str, str] = {
    "missing": "no such file",
    "unreadable": "the file cannot be read (or music21 cannot parse the work)",
    "empty": "the file has 0 bytes",
    "too_large": "over the size, track, note or duration limits of midilm.load_midi",
    "not_midi": "not a MIDI file",
    "corrupt": "a damaged MIDI file",
    "unsupported": "SMPTE timing, or a kind of file midilm does not read",
    "no_notes": "no notes (or none the tokenizer keeps)",
    "meter": "a meter the tokenizer settings cannot express (MMM: --meter-tokens)",
    "too_many_tracks": "more tracks with notes than max_tracks",
    "too_short": "fewer bars than min_bars or fewer notes than min_notes",
    "too_long": "more bars than max_bars (MMM: or every window over max_seq_len ids)",
    "duplicate": "the same notes as an earlier item (see the note hash in midilm.data.split)",
    "failed": "an unexpected error while reading it (a bug: please report it)",
}
"""Every reason a source item can be left out, as counted in the manifest and written in
``rejected.jsonl``."""


_DEFAULT_TRANSPOSE = {"mmm": (-5, 6), "remi": (0, 0)}
_DEFAULT_MAX_SEQ_LEN = {"mmm": 2048, "remi": 1024}


@dataclass(frozen=True)
class PrepareConfig(FrozenConfig):
    """Everything that decides the content of a dataset (saved in its manifest).

    ``tokenizer_settings`` are the fields of :class:`~midilm.tokenization.mmm.MMMConfig` or
    :class:`~midilm.tokenization.remi.REMIConfig` (stored complete, defaults filled in;
    MMM's ``density_edges`` are always fitted, never given). An MMM window is
    ``bars_per_window`` bars (a tokenizer setting, 4 by default), one every ``hop`` bars.

    ``transpose`` = ``(low, high)`` semitones, both included, applied to training pieces
    only; ``None`` means ``(-5, 6)`` (every key) for MMM and ``(0, 0)`` (none) for REMI.
    ``infill_share`` of the MMM windows become bar-infilling examples masking 1 to
    ``infill_bars`` (track, bar) cells. ``max_seq_len``: an MMM window with more tokens is
    dropped (counted); a REMI piece is cut at bar lines into sequences of at most
    ``max_seq_len - 2`` ids (room for the BOS and EOS the dataset adds); ``None`` means 2048
    (MMM) or 1024 (REMI). ``vocab_size`` is REMI's BPE vocabulary. ``split_ratios`` are
    train, valid and test, summing to 1. ``seed`` drives track order, infill and instrument
    choices.

    ``instrument_augmentation="ensembles"`` (MMM) gives each training window other General
    MIDI programs that fit its tracks' pitch ranges (:mod:`midilm.data.augment`):
    ``instrument_keep_share`` of the windows keep their programs; of the others,
    ``instrument_mixed_share`` draw a family per track and the rest one family for all
    tracks (an ensemble). ``"none"`` keeps every program.
    """

    tokenizer: Literal["mmm", "remi"] = "mmm"
    tokenizer_settings: dict[str, Any] = field(default_factory=dict)
    split_ratios: tuple[float, ...] = (0.9, 0.05, 0.05)
    min_bars: int = 2
    max_bars: int = 2000
    min_notes: int = 8
    max_tracks: int = 32
    hop: int = 2
    transpose: tuple[int, ...] | None = None
    shuffle_tracks: bool = True
    infill_share: float = 0.25
    infill_bars: int = 2
    max_seq_len: int | None = None
    vocab_size: int = 20_000
    seed: int = 0
    instrument_augmentation: Literal["none", "ensembles"] = "none"
    instrument_keep_share: float = 0.25
    instrument_mixed_share: float = 0.25

    def _validate(self) -> None:
        name = type(self).__name__
        settings = dict(self.tokenizer_settings)
        if self.tokenizer == "mmm":
            from midilm.tokenization.mmm import MMMConfig

            if "density_edges" in settings:
                raise ConfigError(
                    f"{name}.tokenizer_settings: density_edges are fitted on the training "
                    "split; do not set them"
                )
            full = MMMConfig.from_dict(settings).to_dict()
            full.pop("density_edges")
        else:
            from midilm.tokenization.remi import REMIConfig

            full = REMIConfig.from_dict(settings).to_dict()
        object.__setattr__(self, "tokenizer_settings", full)
        ratios = self.split_ratios
        if len(ratios) != 3 or any(r < 0 for r in ratios) or abs(sum(ratios) - 1) > 1e-9:
            raise ConfigError(
                f"{name}.split_ratios: three shares (train, valid, test), each ≥ 0, summing "
                f"to 1, received {list(ratios)}"
            )
        if ratios[0] <= 0:
            raise ConfigError(f"{name}.split_ratios: the training share must be > 0")
        for field_name in ("min_bars", "max_bars", "max_tracks", "hop", "infill_bars"):
            if getattr(self, field_name) < 1:
                raise ConfigError(
                    f"{name}.{field_name} must be ≥ 1, received {getattr(self, field_name)}"
                )
        if self.min_notes < 1:
            raise ConfigError(f"{name}.min_notes must be ≥ 1, received {self.min_notes}")
        if self.max_bars < self.min_bars:
            raise ConfigError(
                f"{name}.max_bars ({self.max_bars}) must be ≥ min_bars ({self.min_bars})"
            )
        transpose = self.transpose
        if transpose is None:
            transpose = _DEFAULT_TRANSPOSE[self.tokenizer]
            object.__setattr__(self, "transpose", transpose)
        if len(transpose) != 2 or transpose[0] > 0 or transpose[1] < 0:
            raise ConfigError(
                f"{name}.transpose: (low, high) semitones with low ≤ 0 ≤ high, "
                f"received {list(transpose)}"
            )
        if max(-transpose[0], transpose[1]) > 127:
            raise ConfigError(f"{name}.transpose: at most 127 semitones, received {transpose}")
        if not 0.0 <= self.infill_share <= 1.0:
            raise ConfigError(f"{name}.infill_share must be in 0–1, received {self.infill_share}")
        if self.max_seq_len is None:
            object.__setattr__(self, "max_seq_len", _DEFAULT_MAX_SEQ_LEN[self.tokenizer])
        assert self.max_seq_len is not None
        if self.max_seq_len < 8:
            raise ConfigError(f"{name}.max_seq_len must be ≥ 8, received {self.max_seq_len}")
        if self.vocab_size < 1:
            raise ConfigError(f"{name}.vocab_size must be ≥ 1, received {self.vocab_size}")
        if self.seed < 0:
            raise ConfigError(f"{name}.seed must be ≥ 0, received {self.seed}")
        if self.instrument_augmentation != "none" and self.tokenizer != "mmm":
            raise ConfigError(
                f"{name}.instrument_augmentation applies to MMM datasets (REMI writes no "
                f"instruments), received {self.instrument_augmentation!r} with "
                f"tokenizer={self.tokenizer!r}"
            )
        for field_name in ("instrument_keep_share", "instrument_mixed_share"):
            if not 0.0 <= getattr(self, field_name) <= 1.0:
                raise ConfigError(
                    f"{name}.{field_name} must be in 0–1, received {getattr(self, field_name)}"
                )

    @property
    def transpositions(self) -> list[int]:
        """Semitone shifts of a training piece, ascending (0 included)."""
        assert self.transpose is not None
        return list(range(self.transpose[0], self.transpose[1] + 1))

    def tokenizer_config(self) -> Any:
        """The MMMConfig or REMIConfig of ``tokenizer_settings`` (MMM: default edges)."""
        if self.tokenizer == "mmm":
            from midilm.tokenization.mmm import MMMConfig

            return MMMConfig.from_dict(self.tokenizer_settings)
        from midilm.tokenization.remi import REMIConfig

        return REMIConfig.from_dict(self.tokenizer_settings)

    def key(self) -> str:
        """A hash of everything that decides a record: the settings, the record format and
        the versions of the code that makes them."""
        from importlib.metadata import version

        from midilm import __version__

        versions = {"midilm": __version__, "symusic": version("symusic")}
        if self.tokenizer == "remi":
            versions["miditok"] = version("miditok")
        text = json.dumps(
            {"record": RECORD_VERSION, "settings": self.to_dict(), "versions": versions},
            sort_keys=True,
        )
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class PrepareResult:
    """What a call did: ``manifest`` (the dataset's, or a part's ``part.json`` for a
    shard), ``processed`` items turned into records by this call (0 when everything was
    done already), and ``up_to_date`` when nothing needed doing at all."""

    directory: Path
    manifest: dict[str, Any]
    processed: int
    up_to_date: bool
