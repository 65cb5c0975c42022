"""REMI + BPE over MidiTok: the tokenizer of the "Maestro-REMI-bpe20k" seed model.

:class:`REMITokenizer` wraps ``miditok.REMI`` and saves MidiTok's own ``tokenizer.json``, so
``miditok.REMI(params=dir / "tokenizer.json")`` loads what midilm trains (the seed's users
load it that way). :class:`REMIConfig` holds the seed's settings as defaults (*Byte Pair
Encoding for Symbolic Music*, Fradet et al., 2023): pitches 21–108, beat resolution
{(0,1):8, (1,2):4, (2,4):2, (4,8):1}, 16 velocities, no chord / rest / tempo / program /
time-signature tokens, special tokens PAD, MASK, BOS, EOS, SEP.

What a REMI sequence keeps, and what it loses (single-stream mode, the default):

* **Tracks.** Drum tracks are dropped; the notes of every other track are merged into one
  piano stream (program 0) before MidiTok sees the score. Programs, track names, pedals,
  controllers, tempos, key and time signatures are not encoded.
* **Time.** Every bar is 4/4 (no time-signature tokens: a 3/4 piece is cut into 4-beat
  "bars"). Onsets are rounded to 1/8 beat (32 positions per bar). Durations are rounded to
  the nearest of: 1/8-beat steps up to 1 beat, 1/4 up to 2 beats, 1/2 up to 4 beats, whole
  beats up to 8 beats; longer notes are clipped to 8 beats. Decoded scores have 8 ticks per
  quarter, 120 bpm, 4/4.
* **Notes.** Pitches outside ``[min_pitch, max_pitch]`` are deleted. Velocities are rounded
  to the nearest of ``num_velocities`` values (7, 15, …, 127 for 16). Two notes with the same
  pitch and the same (rounded) onset are one note: MidiTok keeps the one sorted first by
  (duration, velocity), i.e. the shortest.

:meth:`REMITokenizer.preprocess` returns exactly that reduced score: ``decode(encode(s))``
gives back its notes. With ``multitrack=True`` there is one stream with a *Program* token
before each note (MidiTok's REMI+ without time signatures): tracks of the same program are
merged, drums are kept (as ``PitchDrum`` tokens, pitches 27–88).

BPE is learned over whole pieces (``encode_ids_split="no"``), as MidiTok 2.x did for the seed:
MidiTok 3's default per-bar split adds a Metaspace pre-tokenizer whose bare "▁" token expands
to no base token at all, which neither a grammar nor a language model wants.

**MidiTok 2 checkpoints.** The seed model ships a MidiTok 2.x ``tokenizer.conf``, which
MidiTok 3 does not read. :meth:`REMITokenizer.from_miditok2` (and :meth:`REMITokenizer.load`
on a directory holding only that file) converts it, so that midilm gives the ids MidiTok 2
gave, which are the ids the model was trained on:

* Its settings become a :class:`REMIConfig` (MidiTok 2's ``pitch_range`` is a Python
  ``range``, end excluded; midilm's ``max_pitch`` is included); its base vocabulary must equal
  MidiTok 3's for those settings, token for token.
* Its BPE model is kept as it is, with MidiTok 2's ids. MidiTok 2 trained BPE from the
  characters seen in the data, so its ids are not the base ids (``Pitch_38`` may be id 6),
  and a base token the training data never had has no id at all. MidiTok 2 silently dropped
  such a token when encoding; midilm raises :class:`UnknownTokenError` naming it.
* Notes are rounded as MidiTok 2 did (``REMIConfig(preprocessing="miditok2")``): onset and
  offset each to the nearest 1/8 beat (a tie rounds down), the length to the nearest
  duration bin (a tie to the shorter), the velocity to the nearest value (a tie to the
  softer); of notes with the same pitch and rounded onset the shortest stays (a tie: the
  one that starts first). MidiTok 3 rounds the onset and then the length, and breaks ties
  differently: on the humanized chorales of the test fixture that changes one base token
  in eight.

  The only remaining difference is in reading MIDI: for two overlapping notes of the same
  pitch in one track, MidiTok 2's reader (miditoolkit) and midilm's (symusic) may pair the
  note-offs differently. A piano performance has no such notes.

It does not add BOS/EOS to encoded sequences (dataset preparation does), and it knows nothing
about models or sampling.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import miditok
import numpy as np
import symusic
from miditok import TokSequence
from symusic.core import ScoreTick

from midilm.config import FrozenConfig
from midilm.errors import ConfigError, TokenizerMismatchError, UnknownTokenError
from midilm.io_utils import read_json_object
from midilm.tokenization.base import (
    MIDILM_JSON,
    TOKENIZER_JSON,
    read_midilm_json,
    write_midilm_json,
)
from midilm.tokenization.remi_grammar import REMIGrammar

__all__ = ["BPE_JOINER", "REMIConfig", "REMITokenizer"]

#: Joins the base tokens of a learned BPE token into its readable name
#: (``"Position_0+Pitch_60+Velocity_95+Duration_1.0.4"``); no MidiTok token contains it.
BPE_JOINER = "+"

_SPECIAL_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")
_REQUIRED_SPECIALS = ("PAD", "BOS", "EOS")
_MIDITOK_CLASS = "REMI"
_MIDITOK_2_CONF = "tokenizer.conf"


@dataclasses.dataclass(frozen=True)
class REMIConfig(FrozenConfig):
    """Settings of a REMI vocabulary; the defaults are the seed's ("Maestro-REMI-bpe20k").

    ``min_pitch`` and ``max_pitch`` are both inclusive (MidiTok 3 reads its ``pitch_range``
    inclusively; the seed's MidiTok 2 ``range(21, 109)`` is the same 88 keys, 21–108).
    ``beat_res`` is a tuple of ``(start_beat, end_beat, positions_per_beat)`` triples: the
    duration grid of notes lasting between ``start_beat`` and ``end_beat`` beats; the
    finest resolution is also the onset grid. ``special_tokens`` are names without value
    (MidiTok spells them ``PAD_None`` …); PAD, BOS and EOS are required. ``multitrack``
    switches to one stream with Program tokens (for non-piano corpora). ``preprocessing``
    says how notes are rounded before tokenizing: ``"miditok3"`` (MidiTok 3's rules) or
    ``"miditok2"`` (MidiTok 2's, set on tokenizers converted from a MidiTok 2 file so that
    they give the ids their model was trained on; single stream only; see the module
    docstring). The vocabulary size is not a setting: it is the result of
    :meth:`REMITokenizer.train`.
    """

    min_pitch: int = 21
    max_pitch: int = 108
    # ``tuple[int, ...]`` rather than ``tuple[int, int, int]``: midilm.config mis-checks
    # fixed-length tuple hints (it swaps hint and value); the length is checked below.
    beat_res: tuple[tuple[int, ...], ...] = ((0, 1, 8), (1, 2, 4), (2, 4, 2), (4, 8, 1))
    num_velocities: int = 16
    special_tokens: tuple[str, ...] = ("PAD", "MASK", "BOS", "EOS", "SEP")
    multitrack: bool = False
    preprocessing: Literal["miditok3", "miditok2"] = "miditok3"

    def _validate(self) -> None:
        name = type(self).__name__
        if self.preprocessing == "miditok2" and self.multitrack:
            raise ConfigError(
                f"{name}.preprocessing: 'miditok2' is for single-stream (piano) REMI only, "
                f"received multitrack=True"
            )
        if not 0 <= self.min_pitch < self.max_pitch <= 127:
            raise ConfigError(
                f"{name}.min_pitch/max_pitch: need 0 <= min_pitch < max_pitch <= 127, "
                f"received {self.min_pitch}, {self.max_pitch}"
            )
        if not self.beat_res or any(len(triple) != 3 for triple in self.beat_res):
            raise ConfigError(
                f"{name}.beat_res: needs (start_beat, end_beat, positions_per_beat) triples, "
                f"received {self.beat_res!r}"
            )
        expected_start = 0
        finest = max(res for _, _, res in self.beat_res)
        for start, end, res in self.beat_res:
            if start != expected_start or end <= start or res < 1 or finest % res != 0:
                raise ConfigError(
                    f"{name}.beat_res: ranges must start at beat 0, follow each other "
                    f"without gaps, and have resolutions >= 1 that divide the finest one "
                    f"({finest}); received {self.beat_res!r}"
                )
            expected_start = end
        if not 1 <= self.num_velocities <= 127:
            raise ConfigError(
                f"{name}.num_velocities: must be within 1 and 127, received {self.num_velocities}"
            )
        bad = [s for s in self.special_tokens if not _SPECIAL_NAME.match(s)]
        if bad:
            raise ConfigError(
                f"{name}.special_tokens: names are letters and digits only (MidiTok adds "
                f"'_None'), received {bad!r}"
            )
        if len(set(self.special_tokens)) != len(self.special_tokens):
            raise ConfigError(
                f"{name}.special_tokens: duplicated names, received {self.special_tokens!r}"
            )
        missing = [s for s in _REQUIRED_SPECIALS if s not in self.special_tokens]
        if missing:
            raise ConfigError(
                f"{name}.special_tokens: must include {', '.join(_REQUIRED_SPECIALS)}; "
                f"received {self.special_tokens!r}"
            )

    @property
    def positions_per_beat(self) -> int:
        """The onset grid: the finest ``beat_res`` resolution (8 for the seed)."""
        return max(res for _, _, res in self.beat_res)

    def to_miditok(self) -> miditok.TokenizerConfig:
        """The equivalent ``miditok.TokenizerConfig`` (a fresh object each call)."""
        return miditok.TokenizerConfig(
            pitch_range=(self.min_pitch, self.max_pitch),
            beat_res={(start, end): res for start, end, res in self.beat_res},
            num_velocities=self.num_velocities,
            special_tokens=list(self.special_tokens),
            use_velocities=True,
            use_chords=False,
            use_rests=False,
            use_tempos=False,
            use_time_signatures=False,
            use_key_signatures=False,
            use_sustain_pedals=False,
            use_pitch_bends=False,
            use_control_changes=False,
            use_pitch_intervals=False,
            use_programs=self.multitrack,
            one_token_stream_for_programs=self.multitrack,
            program_changes=False,
            use_pitchdrum_tokens=self.multitrack,
            # The grammar counts a repeated (pitch, position) as an error, as MidiTok's TSE
            # does when this is on; encoded data must then be free of them.
            remove_duplicated_notes=True,
            encode_ids_split="no",
        )

    @classmethod
    def from_miditok(
        cls, tok_config: miditok.TokenizerConfig, source: str = "<config>"
    ) -> REMIConfig:
        """Read the settings back from a MidiTok config (a ``tokenizer.json`` made without
        midilm). Raises :class:`TokenizerMismatchError` naming ``source`` when the MidiTok
        config uses features this class cannot express."""
        try:
            config = cls(
                min_pitch=int(tok_config.pitch_range[0]),
                max_pitch=int(tok_config.pitch_range[1]),
                beat_res=tuple(
                    (int(s), int(e), int(r)) for (s, e), r in sorted(tok_config.beat_res.items())
                ),
                num_velocities=int(tok_config.num_velocities),
                special_tokens=tuple(t.split("_")[0] for t in tok_config.special_tokens),
                multitrack=bool(tok_config.use_programs),
            )
        except ConfigError as err:
            raise TokenizerMismatchError(f"{source}: {err}") from err
        differences = _config_differences(config.to_miditok(), tok_config)
        if differences:
            raise TokenizerMismatchError(
                f"{source}: MidiTok settings midilm's REMI does not support: "
                + "; ".join(differences)
            )
        return config


# Fields of a MidiTok config that decide the vocabulary and the encoding; the others
# (chord maps, tempo range, …) have no effect when their feature is off.
_COMPARED_FIELDS = (
    "pitch_range",
    "beat_res",
    "num_velocities",
    "special_tokens",
    "use_velocities",
    "use_note_duration_programs",
    "use_chords",
    "use_rests",
    "use_tempos",
    "use_time_signatures",
    "use_key_signatures",
    "use_sustain_pedals",
    "use_pitch_bends",
    "use_control_changes",
    "use_pitch_intervals",
    "use_programs",
    "one_token_stream_for_programs",
    "program_changes",
    "use_pitchdrum_tokens",
    "remove_duplicated_notes",
    "encode_ids_split",
)
_COMPARED_ADDITIONAL = {"max_bar_embedding": None, "use_bar_end_tokens": False}


def _normalized(value: Any) -> Any:
    if isinstance(value, dict):
        return sorted(
            (tuple(k) if isinstance(k, (list, tuple)) else k, v) for k, v in value.items()
        )
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, (list, tuple)):
        return [_normalized(v) for v in value]
    return value


def _config_differences(
    expected: miditok.TokenizerConfig, found: miditok.TokenizerConfig
) -> list[str]:
    out = []
    for field in _COMPARED_FIELDS:
        want, got = getattr(expected, field, None), getattr(found, field, None)
        if _normalized(want) != _normalized(got):
            out.append(f"{field} is {got!r}, expected {want!r}")
    for key, want in _COMPARED_ADDITIONAL.items():
        got = found.additional_params.get(key, want)
        if got != want:
            out.append(f"{key} is {got!r}, expected {want!r}")
    return out


class REMITokenizer:
    """Score ↔ REMI token ids (BPE ids once trained), over ``miditok.REMI``.

    Ids below :attr:`base_vocab_size` are MidiTok's base tokens (``Bar_None``,
    ``Position_p``, ``Pitch_p``, ``Velocity_v``, ``Duration_b.p.r``, specials); a trained
    tokenizer adds learned BPE tokens above them, each standing for a run of base tokens
    (:meth:`base_tokens`; its name joins them with ``+``). Base ids are the same before and
    after training. A tokenizer converted from MidiTok 2 (:meth:`from_miditok2`) keeps
    MidiTok 2's ids instead, where base tokens are numbered in another order and some have
    no id. See the module docstring for what an encoding keeps.
    """

    kind: ClassVar[str] = "remi"

    def __init__(self, config: REMIConfig | None = None) -> None:
        if config is not None and not isinstance(config, REMIConfig):
            raise TypeError(f"config: expected a REMIConfig, received {type(config).__name__}")
        self._config = config if config is not None else REMIConfig()
        self._tok = miditok.REMI(self._config.to_miditok())
        self._sync_vocabulary()

    # ------------------------------------------------------------------ construction
    @classmethod
    def _wrap(cls, config: REMIConfig, tok: miditok.REMI) -> REMITokenizer:
        self = cls.__new__(cls)
        self._config = config
        self._tok = tok
        self._sync_vocabulary()
        return self

    def _sync_vocabulary(self) -> None:
        """Build the id ↔ name tables and each id's base-token expansion."""
        tok = self._tok
        base_vocab: dict[str, int] = tok.vocab
        base_names = [""] * len(base_vocab)
        for token, index in base_vocab.items():
            base_names[index] = token
        self._base_size = len(base_names)
        # Base ids that no id of the vocabulary spells (only in converted MidiTok 2 files).
        self._unencodable: frozenset[int] = frozenset()
        if not tok.is_trained:
            expansions = [(name,) for name in base_names]
        else:
            learned = tok.vocab_model  # BPE "byte string" -> id
            if sorted(learned.values()) != list(range(len(learned))):
                raise TokenizerMismatchError("the BPE vocabulary's ids are not 0..N-1")
            expansions = [()] * len(learned)
            # MidiTok's own decoding table (private, no public equivalent): byte string ->
            # base token strings.
            byte_to_tokens = tok._vocab_learned_bytes_to_tokens
            for byte_str, index in learned.items():
                if byte_str not in byte_to_tokens:
                    raise TokenizerMismatchError(f"BPE id {index} has no base-token expansion")
                tokens = tuple(byte_to_tokens[byte_str])
                if not tokens:
                    raise TokenizerMismatchError(
                        f"BPE id {index} ({byte_str!r}) stands for no base token"
                    )
                expansions[index] = tokens
            # midilm trains from the whole base alphabet, so base id i is BPE id i; a
            # MidiTok 2 vocabulary has its own order and only the tokens its data had.
            spelled = {e[0] for e in expansions if len(e) == 1}
            self._unencodable = frozenset(
                i for i, name in enumerate(base_names) if name not in spelled
            )
        self._expansions: list[tuple[str, ...]] = expansions
        self._names = [BPE_JOINER.join(e) for e in expansions]
        self._name_to_id = {name: i for i, name in enumerate(self._names)}
        self._grammar: REMIGrammar | None = None

    @classmethod
    def train(
        cls,
        sources: Iterable[str | Path | symusic.Score],
        vocab_size: int = 20_000,
        config: REMIConfig | None = None,
    ) -> REMITokenizer:
        """Learn a BPE vocabulary of ``vocab_size`` ids from MIDI files or Scores.

        Each source is encoded exactly as :meth:`encode` would (tracks merged, quantized)
        and its whole base-token sequence is one BPE "word". Files are read one at a time
        as the trainer iterates, with :func:`midilm.score.load_midi`: an unreadable one
        raises :class:`~midilm.errors.InvalidMidiError` naming it (nothing is skipped).
        A corpus too small to find ``vocab_size - base`` merges gives a smaller
        vocabulary: read :attr:`vocab_size` afterwards.
        """
        tokenizer = cls(config)
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int):
            raise ConfigError(f"vocab_size: expected an integer, received {vocab_size!r}")
        if vocab_size <= tokenizer.base_vocab_size:
            raise ConfigError(
                f"vocab_size: must be larger than the base vocabulary of "
                f"{tokenizer.base_vocab_size} tokens, received {vocab_size}"
            )
        corpus = _TrainingCorpus(tokenizer, list(sources))
        if len(corpus) == 0:
            raise ValueError("REMITokenizer.train: no sources to learn from")
        tokenizer._tok.train(vocab_size=vocab_size, model="BPE", iterator=corpus)
        tokenizer._sync_vocabulary()
        return tokenizer

    @classmethod
    def train_from_ids(
        cls,
        sequences: Iterable[Sequence[int]],
        vocab_size: int = 20_000,
        config: REMIConfig | None = None,
    ) -> REMITokenizer:
        """Learn BPE, as :meth:`train` does, from sequences of *base* ids (what an untrained
        tokenizer's :meth:`encode` gives). Dataset preparation tokenizes the corpus once in
        parallel, then learns BPE from the training split's stored sequences without
        reading the files again. ``sequences`` may be a one-pass iterable with ``len()``
        (MidiTok asks for it); it is iterated once. Empty sequences are skipped."""
        tokenizer = cls(config)
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int):
            raise ConfigError(f"vocab_size: expected an integer, received {vocab_size!r}")
        if vocab_size <= tokenizer.base_vocab_size:
            raise ConfigError(
                f"vocab_size: must be larger than the base vocabulary of "
                f"{tokenizer.base_vocab_size} tokens, received {vocab_size}"
            )
        corpus = _IdsCorpus(tokenizer, sequences)
        if len(corpus) == 0:
            raise ValueError("REMITokenizer.train_from_ids: no sequences to learn from")
        tokenizer._tok.train(vocab_size=vocab_size, model="BPE", iterator=corpus)
        tokenizer._sync_vocabulary()
        return tokenizer

    def encode_base_ids(self, sequences: Sequence[Sequence[int]]) -> list[list[int]]:
        """BPE ids of sequences of base ids, in one batch (the base ids unchanged when the
        tokenizer is not trained): ``encode(s)`` equals ``encode_base_ids([base])[0]``
        where ``base`` is the untrained tokenizer's ``encode(s)``."""
        if not self._tok.is_trained:
            return [[int(i) for i in ids] for ids in sequences]
        tok = self._tok
        chars = [[tok._ids_to_bytes([int(i) for i in ids], as_one_str=True)] for ids in sequences]
        # MidiTok's encode_token_ids does the same per TokSequence, after first rebuilding
        # every token's text; base ids map straight to the BPE model's characters.
        encoded = tok._model.encode_batch(chars, is_pretokenized=True)
        return [list(e.ids) for e in encoded]

    # ------------------------------------------------------------------ properties
    @property
    def config(self) -> REMIConfig:
        return self._config

    @property
    def miditok(self) -> miditok.REMI:
        """The wrapped MidiTok tokenizer (for MidiTok's own tools; do not modify it)."""
        return self._tok

    @property
    def vocab_size(self) -> int:
        """Number of ids: base tokens plus learned BPE tokens."""
        return len(self._expansions)

    @property
    def base_vocab_size(self) -> int:
        """Number of base REMI tokens (specials included); 162 for the seed's settings."""
        return self._base_size

    @property
    def is_trained(self) -> bool:
        return bool(self._tok.is_trained)

    @property
    def ticks_per_quarter(self) -> int:
        """Time division of decoded scores (the onset grid: 8 for the seed)."""
        return int(self._tok.time_division)

    @property
    def pad_id(self) -> int:
        return self.token_to_id("PAD_None")

    @property
    def bos_id(self) -> int:
        return self.token_to_id("BOS_None")

    @property
    def eos_id(self) -> int:
        return self.token_to_id("EOS_None")

    def __repr__(self) -> str:
        state = "trained BPE" if self.is_trained else "untrained"
        mode = "multitrack" if self._config.multitrack else "single stream"
        return (
            f"REMITokenizer({self.vocab_size} ids, {self.base_vocab_size} base tokens, "
            f"{state}, {mode})"
        )

    # ------------------------------------------------------------------ vocabulary
    def token_to_id(self, token: str) -> int:
        """Id of a base token (``"Pitch_60"``) or of a learned token by its ``+``-joined name."""
        try:
            return self._name_to_id[token]
        except (KeyError, TypeError):
            raise UnknownTokenError(f"unknown REMI token {token!r}") from None

    def id_to_token(self, token_id: int) -> str:
        """Name of an id: the base token, or its base tokens joined with ``+``."""
        self._check_id(token_id)
        return self._names[token_id]

    def base_tokens(self, ids: Iterable[int]) -> list[str]:
        """The base REMI tokens that ``ids`` stand for (BPE undone)."""
        out: list[str] = []
        for token_id in ids:
            self._check_id(token_id)
            out.extend(self._expansions[token_id])
        return out

    def expansion(self, token_id: int) -> tuple[str, ...]:
        """The base tokens of one id (a 1-tuple for a base id)."""
        self._check_id(token_id)
        return self._expansions[token_id]

    def _check_id(self, token_id: Any) -> None:
        if isinstance(token_id, (bool, np.bool_)) or not isinstance(token_id, (int, np.integer)):
            raise UnknownTokenError(f"token ids are integers, received {token_id!r}")
        if not 0 <= token_id < len(self._expansions):
            raise UnknownTokenError(
                f"token id {token_id} is outside the vocabulary (0..{len(self._expansions) - 1})"
            )

    # ------------------------------------------------------------------ encoding
    def preprocess(self, score: symusic.Score) -> ScoreTick:
        """The score as this tokenizer sees it: tracks merged (single stream), resampled to
        :attr:`ticks_per_quarter`, onsets / durations / velocities rounded, out-of-range
        pitches and duplicates removed. ``decode(encode(score))`` has the same notes."""
        prepared = self._prepare(score)
        if prepared is None:
            return symusic.Score(self.ticks_per_quarter)
        return self._tok.preprocess_score(prepared)

    def encode(self, score: symusic.Score) -> list[int]:
        """Token ids of a score (BPE ids once trained); ``[]`` for a score with no usable note."""
        seq = self._encode_seq(score, encode_ids=True)
        return [] if seq is None else [int(i) for i in seq.ids]

    def encode_tokens(self, score: symusic.Score) -> list[str]:
        """Base REMI tokens of a score (before BPE), e.g. ``["Bar_None", "Position_0", …]``."""
        seq = self._encode_seq(score, encode_ids=False)
        return [] if seq is None else list(seq.tokens)

    def _encode_seq(self, score: symusic.Score, *, encode_ids: bool) -> TokSequence | None:
        prepared = self._prepare(score)
        if prepared is None:
            return None
        result = self._tok.encode(prepared, encode_ids=False)
        seq = result if isinstance(result, TokSequence) else result[0]
        if len(seq.tokens) == 0:  # every note was out of range
            return None
        if encode_ids and self._tok.is_trained:
            if self._unencodable:
                self._check_encodable(seq)
            self._tok.encode_token_ids(seq)
        return seq

    def _check_encodable(self, seq: TokSequence) -> None:
        """Raise for a base token the (MidiTok 2) vocabulary has no id for: the BPE model
        would drop it without a word, as MidiTok 2 did."""
        missing = sorted({int(i) for i in seq.ids} & self._unencodable)
        if missing:
            names = ", ".join(self._tok[i] for i in missing[:5])
            raise UnknownTokenError(
                f"this vocabulary has no id for {names}: its BPE (MidiTok 2) was learned "
                f"from data without {'it' if len(missing) == 1 else 'them'}, and MidiTok 2 "
                f"silently dropped such tokens; transpose or drop those notes"
            )

    def _prepare(self, score: symusic.Score) -> ScoreTick | None:
        """Ticks, and (single stream) the non-drum tracks merged into one piano track;
        rounded as MidiTok 2 did when the settings ask for it."""
        score = _as_ticks(score)
        if self._config.multitrack:
            return score
        merged = _merge_pitched_tracks(score)
        if merged is not None and self._config.preprocessing == "miditok2":
            return _miditok2_round(merged, self._config)
        return merged

    # ------------------------------------------------------------------ decoding
    def decode(self, ids: Sequence[int]) -> ScoreTick:
        """A score from token ids (BPE or base). Specials are ignored; a Pitch not followed
        by Velocity and Duration is dropped (MidiTok's decoder). 4/4, 120 bpm,
        :attr:`ticks_per_quarter` ticks per quarter; one piano track in single-stream mode."""
        if hasattr(ids, "tolist"):  # a numpy array or a torch tensor
            ids = ids.tolist()
        tokens = self.base_tokens(ids)
        seq = TokSequence(tokens=tokens)
        if self._config.multitrack:
            return self._tok.decode(seq)
        return self._tok.decode([seq])

    # ------------------------------------------------------------------ grammar
    def grammar(self) -> REMIGrammar:
        """The machine of which id may follow which (built once, then cached)."""
        if self._grammar is None:
            specials = {t.split("_")[0] for t in self._tok.special_tokens}
            graph = {
                kind: {nxt for nxt in following if nxt not in specials and "_" not in nxt}
                for kind, following in self._tok.tokens_types_graph.items()
                if kind not in specials
            }
            self._grammar = REMIGrammar(
                self._expansions,
                graph,
                special_tokens=list(self._tok.special_tokens),
                names=self._names,
            )
        return self._grammar

    # ------------------------------------------------------------------ files
    def save(self, directory: str | Path) -> None:
        """Write MidiTok's ``tokenizer.json`` (loadable by ``miditok.REMI(params=…)``) and
        the ``tokenizer`` entry of ``midilm.json``, each atomically."""
        from midilm.io_utils import atomic_write_text

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self._tok.to_dict(), indent=4)
        atomic_write_text(directory / TOKENIZER_JSON, text + "\n")
        write_midilm_json(
            directory, {"tokenizer": {"kind": self.kind, "config": self._config.to_dict()}}
        )

    @classmethod
    def load(cls, directory: str | Path) -> REMITokenizer:
        """Load a directory written by :meth:`save`, or a MidiTok 3 ``tokenizer.json``
        alone (its settings are read back with :meth:`REMIConfig.from_miditok`), or a
        MidiTok 2.x ``tokenizer.conf`` alone (converted by :meth:`from_miditok2`).

        Raises ``FileNotFoundError`` for a missing directory or file and
        :class:`TokenizerMismatchError` for a garbled file, another tokenizer kind, or
        ``midilm.json`` settings that contradict ``tokenizer.json``; messages name the file.
        """
        directory = Path(directory)
        if not directory.is_dir():
            raise FileNotFoundError(f"{directory}: no such tokenizer directory")
        path = directory / TOKENIZER_JSON
        if not path.is_file():
            if (directory / _MIDITOK_2_CONF).is_file():
                _check_midilm_kind(directory, cls.kind)
                return cls.from_miditok2(directory / _MIDITOK_2_CONF)
            raise FileNotFoundError(f"{path}: no tokenizer file in this directory")
        data = read_json_object(path, TokenizerMismatchError)
        if not isinstance(data.get("config"), dict):
            raise TokenizerMismatchError(f"{path}: not a MidiTok tokenizer file (no 'config')")
        if data.get("tokenization") != _MIDITOK_CLASS:
            raise TokenizerMismatchError(
                f"{path}: a MidiTok {data.get('tokenization')!r} tokenizer, expected 'REMI'"
            )

        meta = read_midilm_json(directory).get("tokenizer")
        config: REMIConfig | None = None
        if meta is not None:
            meta_path = directory / MIDILM_JSON
            if not isinstance(meta, dict) or meta.get("kind") != cls.kind:
                kind = meta.get("kind") if isinstance(meta, dict) else meta
                raise TokenizerMismatchError(
                    f"{meta_path}: tokenizer kind {kind!r}, expected {cls.kind!r}"
                )
            if "config" not in meta:
                raise TokenizerMismatchError(f"{meta_path}: the tokenizer entry has no 'config'")
            try:
                config = REMIConfig.from_dict(meta["config"])
            except ConfigError as err:
                raise TokenizerMismatchError(f"{meta_path}: {err}") from err

        try:
            tok = miditok.REMI(params=path)
        # MidiTok and Hugging Face tokenizers raise bare Exception, KeyError, TypeError …
        # for malformed content; it is re-raised as one clear error naming the file.
        except Exception as err:
            raise TokenizerMismatchError(
                f"{path}: not a loadable MidiTok REMI tokenizer ({type(err).__name__}: {err})"
            ) from err

        if config is None:
            config = REMIConfig.from_miditok(tok.config, source=str(path))
        else:
            differences = _config_differences(config.to_miditok(), tok.config)
            if differences:
                raise TokenizerMismatchError(
                    f"{path}: contradicts the settings in midilm.json: " + "; ".join(differences)
                )
        try:
            return cls._wrap(config, tok)
        except TokenizerMismatchError as err:
            raise TokenizerMismatchError(f"{path}: {err}") from err

    @classmethod
    def from_miditok2(cls, path: str | Path) -> REMITokenizer:
        """Convert a MidiTok 2.0 ``tokenizer.conf`` (REMI, with or without BPE), keeping
        the id of every token, so that a model trained with it reads midilm's ids.

        The result encodes as MidiTok 2 did (``preprocessing="miditok2"``) and saves as a
        MidiTok 3 ``tokenizer.json`` with the same ids. What differs from MidiTok 2, and
        why, is in the module docstring. Raises ``FileNotFoundError`` for a missing file and
        :class:`TokenizerMismatchError` naming the file for one it cannot convert (another
        tokenization, chord/rest/tempo/program tokens, MidiTok 2's "slow" BPE, a base
        vocabulary that differs from MidiTok 3's).
        """
        import tempfile

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such MidiTok 2 tokenizer file")
        data = read_json_object(path, TokenizerMismatchError)

        def unreadable(reason: str) -> TokenizerMismatchError:
            return TokenizerMismatchError(
                f"{path}: a MidiTok 2.x tokenizer file that midilm cannot convert: {reason}"
            )

        if not isinstance(data, dict):
            raise unreadable("not a JSON object")
        if "config" in data:
            raise unreadable(
                "it has the 'config' entry of MidiTok 2.1 and later; midilm converts the "
                "MidiTok 2.0 layout (top-level 'pitch_range', 'beat_res', …)"
            )
        if data.get("tokenization") != _MIDITOK_CLASS:
            raise unreadable(f"tokenization {data.get('tokenization')!r}, expected 'REMI'")
        config = _miditok2_config(data, unreadable)
        tok = miditok.REMI(config.to_miditok())
        base_vocab: dict[str, int] = dict(tok.vocab)
        saved_base = data.get("_vocab_base")
        if saved_base is not None and saved_base != base_vocab:
            differences = sorted(
                set(saved_base.items()).symmetric_difference(base_vocab.items()),
                key=lambda item: item[1],
            )
            raise unreadable(
                "its base vocabulary differs from MidiTok 3's for the same settings "
                f"(first differences: {differences[:4]})"
            )
        if not data.get("has_bpe"):
            return cls._wrap(config, tok)
        if not isinstance(data.get("_bpe_model"), str):
            raise unreadable("its BPE was learned with MidiTok 2's slow method (no '_bpe_model')")
        byte_to_token = data.get("_vocab_base_byte_to_token")
        if not isinstance(byte_to_token, dict) or not set(byte_to_token.values()) <= set(
            base_vocab
        ):
            raise unreadable("'_vocab_base_byte_to_token' is missing or names unknown tokens")
        # MidiTok 3 needs a character for every base token; one the BPE model never saw gets
        # a private-use character, which no BPE token contains (it then has no id).
        token_to_byte = {token: byte for byte, token in byte_to_token.items()}
        for token, base_id in base_vocab.items():
            if token not in token_to_byte:
                byte = chr(_PRIVATE_USE_START + base_id)
                token_to_byte[token] = byte
                byte_to_token[byte] = token
        params = tok.to_dict()
        params.update(
            _vocab_base=base_vocab,
            _model=data["_bpe_model"],
            _vocab_base_byte_to_token=byte_to_token,
        )
        with tempfile.TemporaryDirectory(prefix="midilm-miditok2-") as tmp:
            converted = Path(tmp) / TOKENIZER_JSON
            converted.write_text(json.dumps(params), encoding="utf-8")
            try:
                tok = miditok.REMI(params=converted)
            # As in load: MidiTok and tokenizers raise bare exceptions for bad content.
            except Exception as err:
                raise unreadable(
                    f"its BPE model does not load ({type(err).__name__}: {err})"
                ) from err
        try:
            return cls._wrap(config, tok)
        except TokenizerMismatchError as err:
            raise TokenizerMismatchError(f"{path}: {err}") from err


# ---------------------------------------------------------------------- helpers
# Characters given to base tokens a MidiTok 2 BPE model never saw (Unicode plane 15, private
# use): far above MidiTok's chr(id + 33) range, and in no learned token.
_PRIVATE_USE_START = 0xF0000


def _check_midilm_kind(directory: Path, kind: str) -> None:
    meta = read_midilm_json(directory).get("tokenizer")
    if meta is not None and (not isinstance(meta, dict) or meta.get("kind") != kind):
        found = meta.get("kind") if isinstance(meta, dict) else meta
        raise TokenizerMismatchError(
            f"{directory / MIDILM_JSON}: tokenizer kind {found!r}, expected {kind!r}"
        )


def _miditok2_config(
    data: dict[str, Any], unreadable: Callable[[str], TokenizerMismatchError]
) -> REMIConfig:
    """The settings of a MidiTok 2.0 ``tokenizer.conf``, as a :class:`REMIConfig`."""
    additional = data.get("additional_tokens") or {}
    if not isinstance(additional, dict):
        raise unreadable("'additional_tokens' is not a mapping")
    used = [k for k in ("Chord", "Rest", "Tempo", "TimeSignature", "Program") if additional.get(k)]
    if used:
        raise unreadable(f"it uses {', '.join(used)} tokens, which midilm's REMI does not have")
    try:
        low, high = data["pitch_range"]  # a Python range: the end is excluded
        beat_res = tuple(
            (*map(int, key.split("_")), int(res)) for key, res in data["beat_res"].items()
        )
        velocities = data.get("_nb_velocities", data.get("nb_velocities"))
        return REMIConfig(
            min_pitch=int(low),
            max_pitch=int(high) - 1,
            beat_res=tuple(sorted(beat_res)),
            num_velocities=velocities,
            special_tokens=tuple(data.get("special_tokens", ())),
            preprocessing="miditok2",
        )
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        # ConfigError is a ValueError: a setting out of range lands here too.
        raise unreadable(f"{type(err).__name__}: {err}") from err


def _duration_bins(config: REMIConfig) -> list[tuple[int, int, int]]:
    """MidiTok's duration bins ``(beats, positions, positions_per_beat)``, shortest first
    (the zero duration left out, the end of the last range added)."""
    bins = [
        (beat, pos, res)
        for start, end, res in config.beat_res
        for beat in range(start, end)
        for pos in range(res)
    ]
    last_end, last_res = config.beat_res[-1][1], config.beat_res[-1][2]
    return [*bins[1:], (last_end, 0, last_res)]


def _miditok2_round(score: ScoreTick, config: REMIConfig) -> ScoreTick:
    """The one piano track of ``score`` rounded exactly as MidiTok 2.0 did (its
    ``_quantize_notes``, ``remove_duplicated_notes`` and ``REMI.track_to_tokens``), as a
    score on MidiTok 3's grid that MidiTok 3 then tokenizes without changing anything.

    Ticks are those of ``score``; like MidiTok 2, the grid step is ``int(tpq / res)`` for
    rounding and ``tpq / res`` for positions (the same when ``res`` divides ``tpq``).
    """
    tpq = score.ticks_per_quarter
    res = config.positions_per_beat
    soa = score.tracks[0].notes.numpy()
    start = soa["time"].astype(np.int64)
    end = start + soa["duration"].astype(np.int64)
    pitch = soa["pitch"].astype(np.int64)
    velocity = soa["velocity"].astype(np.int64)
    keep = (pitch >= config.min_pitch) & (pitch <= config.max_pitch)
    start, end, pitch, velocity = start[keep], end[keep], pitch[keep], velocity[keep]

    step = max(int(tpq / res), 1)

    def to_grid(ticks: np.ndarray) -> np.ndarray:  # nearest step, a tie rounds down
        offset = ticks % step
        return np.where(offset <= step / 2, ticks - offset, ticks + step - offset)

    start, end = to_grid(start), to_grid(end)
    end = np.where(start == end, end + step, end)
    values = np.linspace(0, 127, config.num_velocities + 1, dtype=np.intc)[1:].astype(np.int64)
    velocity = values[np.argmin(np.abs(values[None, :] - velocity[:, None]), axis=1)]
    # Sorted by (onset, pitch, offset), ties in input order; the first of each
    # (onset, pitch) stays: the shortest.
    order = np.lexsort((np.arange(len(start)), end, pitch, start))
    start, end, pitch, velocity = start[order], end[order], pitch[order], velocity[order]
    first = np.ones(len(start), dtype=bool)
    first[1:] = (start[1:] != start[:-1]) | (pitch[1:] != pitch[:-1])
    start, end, pitch, velocity = start[first], end[first], pitch[first], velocity[first]

    bins = _duration_bins(config)
    bin_ticks = np.array([(b * r + p) * tpq // r for b, p, r in bins], dtype=np.int64)
    index = np.argmin(np.abs(bin_ticks[None, :] - (end - start)[:, None]), axis=1)
    steps_per_bar = 4 * res  # REMI bars are 4 beats (no time-signature tokens)
    bar = start // (4 * tpq)
    position = ((start % (4 * tpq)) / (tpq / res)).astype(np.int64)
    length = np.array([(b * r + p) * res // r for b, p, r in bins], dtype=np.int64)[index]

    rounded = symusic.Score(res)
    track = symusic.Track(name="Piano", program=0, is_drum=False)
    track.notes = symusic.Note.from_numpy(
        time=(bar * steps_per_bar + position).astype(np.int32),
        duration=length.astype(np.int32),
        pitch=pitch.astype(np.int8),
        velocity=velocity.astype(np.int8),
    )
    rounded.tracks.append(track)
    return rounded


def _as_ticks(score: Any) -> ScoreTick:
    if isinstance(score, ScoreTick):
        return score
    if isinstance(score, (symusic.core.ScoreQuarter, symusic.core.ScoreSecond)):
        return score.to("tick")
    raise TypeError(f"expected a symusic.Score, received {type(score).__name__}")


def _merge_pitched_tracks(score: ScoreTick) -> ScoreTick | None:
    """One piano track (program 0) holding the notes of every non-drum track, sorted;
    ``None`` when there is none. Tempos and time signatures are copied (REMI ignores them)."""
    arrays = [t.notes.numpy() for t in score.tracks if not t.is_drum and len(t.notes) > 0]
    if not arrays:
        return None
    soa = {
        key: np.concatenate([a[key] for a in arrays])
        for key in ("time", "duration", "pitch", "velocity")
    }
    order = np.lexsort((soa["pitch"], soa["duration"], soa["time"]))
    notes = symusic.Note.from_numpy(**{k: v[order] for k, v in soa.items()})
    merged = symusic.Score(score.ticks_per_quarter)
    merged.tempos = score.tempos.copy()
    merged.time_signatures = score.time_signatures.copy()
    track = symusic.Track(name="Piano", program=0, is_drum=False)
    track.notes = notes
    merged.tracks.append(track)
    return merged


class _TrainingCorpus:
    """What MidiTok's BPE trainer iterates: one base-token "byte string" per source.

    Replaces ``miditok.TokTrainingIterator``, which would tokenize each track of a
    multi-track file separately instead of merging them as :meth:`REMITokenizer.encode`
    does, and silently skips unreadable files.
    """

    def __init__(self, tokenizer: REMITokenizer, sources: list[Any]) -> None:
        self._tokenizer = tokenizer
        self._sources = sources

    def __len__(self) -> int:
        return len(self._sources)

    def __iter__(self) -> Iterator[list[str]]:
        tok = self._tokenizer.miditok
        for source in self._sources:
            score = _load_source(source)
            seq = self._tokenizer._encode_seq(score, encode_ids=False)
            if seq is None:
                yield []
                continue
            # MidiTok's own training iterator maps base ids to the unicode "bytes" the
            # BPE model is learned on with this (private) helper.
            yield [tok._ids_to_bytes(list(seq.ids), as_one_str=True)]


class _IdsCorpus:
    """What MidiTok's BPE trainer iterates for :meth:`REMITokenizer.train_from_ids`."""

    def __init__(self, tokenizer: REMITokenizer, sequences: Iterable[Sequence[int]]) -> None:
        self._tokenizer = tokenizer
        self._sequences = sequences

    def __len__(self) -> int:
        return len(self._sequences)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[list[str]]:
        tok = self._tokenizer.miditok
        for ids in self._sequences:
            if len(ids):
                yield [tok._ids_to_bytes([int(i) for i in ids], as_one_str=True)]


def _load_source(source: Any) -> ScoreTick:
    if isinstance(source, (str, Path)):
        from midilm.score import load_midi

        return load_midi(source)
    return _as_ticks(source)
