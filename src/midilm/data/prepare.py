"""Corpus → training-ready dataset: ``midilm prepare`` as a library.

:func:`prepare` reads every item of the SOURCE arguments (:mod:`midilm.data.sources`) and
writes a dataset directory::

    manifest.json      what was read, with which settings, what came out (counts per split,
                       rejections by reason, density edges, digest of the shards)
    tokenizer.json     the fitted tokenizer (+ midilm.json, and tokenizer_config.json for MMM)
    {split}.tokens.npy, {split}.offsets.npy   token shards (:mod:`midilm.data.shards`)
    rejected.jsonl     one line per item not used: {"item", "reason", "detail"}
    pieces.jsonl       one line per piece used: {"item", "hash", "split", "sequences":
                       [first, stop)}, the rows of its split's shard that came from it
    .inputs.json       the fingerprint of the inputs, to tell "already done"

**Two phases.** Phase 1 turns each item into a *record* (:mod:`midilm.data.work`), in
parallel, one item at a time per worker: load and validate the file, hash its notes
(:mod:`midilm.data.split`), assign its split, and tokenize all its examples with settings
that do not depend on the rest of the corpus. MMM writes every window (``bars_per_window``
bars every ``hop`` bars, tracks in a seeded random order, some windows turned into
bar-infilling examples, every transposition of a training piece) with provisional
``DENSITY`` tokens, and keeps the note counts behind them; REMI writes base tokens (no BPE).
Phase 2 (:func:`merge`) reads the records in the sorted order of the items: drops exact
duplicates (the first piece in item order is kept), fits what must come from the training
split alone (MMM: the density bin edges, percentiles of the training windows' note counts;
REMI: BPE over the training sequences), rewrites the ``DENSITY`` tokens (MMM) or applies
BPE and cuts sequences at bar lines to ``max_seq_len`` (REMI), and streams the shards.

**Resumable.** A record is written atomically under a name that hashes the settings, the
item and the file's size and modification time, under ``DATASET/.work``. A run that is
killed at any point leaves only whole records and whole output files; the same command
reuses the records and assembles the same bytes. A second run with the same inputs finds
``.inputs.json`` current and does nothing. ``.work`` is removed when the dataset is complete
(``keep_work=True`` keeps it, so that a grown corpus only processes its new files).

**Shards across machines.** ``shard=(K, N)`` runs phase 1 only, for items ``K-1, K-1+N,
K-1+2N, …`` of the sorted list, into a *part* folder (a work folder with its
``part.json``). Every part lists the whole corpus, so ``merge(parts, DATASET)`` needs the
part folders only, not the corpus: it checks that they were made with the same settings from
the same items and cover 1…N, then runs phase 2. Density edges and BPE are fitted there, on
the whole training split, and a single-machine run is exactly "part 1/1, then merge": the
result is byte for byte the same whatever the number of workers or shards.

**Constant memory.** Items stream through the workers (a bounded number in flight) and
records stream into the shards; what grows with the corpus is a set of note hashes (for
duplicates) and, for REMI, what the BPE trainer holds.

Valid and test pieces are not transposed (evaluation measures music as written); their
windows are shuffled and infilled like training windows, so that validation loss measures
the same task. It knows nothing about models or training.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import sys
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from midilm.config import FrozenConfig
from midilm.data.shards import (
    MANIFEST,
    SPLITS,
    DatasetError,
    ShardWriter,
    read_json_object,
    shards_digest,
)
from midilm.data.sources import expand_sources, is_music21
from midilm.data.work import (
    ITEMS_FILE,
    PART_FILE,
    RECORDS_DIR,
    Record,
    item_key,
    iter_items,
    read_record,
    record_is_valid,
    record_path,
    write_json_atomic,
    write_record,
)
from midilm.errors import ConfigError, InvalidMidiError, UnsupportedScoreError

__all__ = [
    "REJECTION_REASONS",
    "PrepareConfig",
    "PrepareResult",
    "merge",
    "prepare",
]

FORMAT = "midilm-dataset"
PART_FORMAT = "midilm-prepare-part"
FORMAT_VERSION = 1
RECORD_VERSION = 1  # bump when records change meaning: old work folders are then redone
STATE_FILE = ".inputs.json"
WORK_DIR = ".work"
REJECTED_FILE = "rejected.jsonl"
PIECES_FILE = "pieces.jsonl"

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

# File names that are not valid UTF-8 reach Python as strings with lone surrogates: hashed as
# their original bytes, and written into JSON as \udcxx escapes (valid JSON, same string back).
_RAW = "surrogateescape"
_JSON_TEXT = "backslashreplace"

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
    train, valid and test, summing to 1. ``seed`` drives track order and infill choices.
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


# ---------------------------------------------------------------------- public entry points


def prepare(
    sources: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    config: PrepareConfig | None = None,
    *,
    shard: tuple[int, int] | None = None,
    workers: int | None = None,
    progress: bool = False,
    keep_work: bool = False,
    overwrite: bool = False,
    **settings: Any,
) -> PrepareResult:
    """Prepare a dataset from ``sources`` into ``output`` (see the module doc).

    ``config`` or keyword ``settings`` (fields of :class:`PrepareConfig`) decide the
    content; ``workers`` (default: every core), ``progress`` (a bar on stderr), ``shard``
    (phase 1 only, part ``K`` of ``N``, into the part folder ``output``) and
    ``keep_work`` decide how it runs, never what it writes. An ``output`` that holds a
    dataset from other inputs, or an unfinished preparation with other settings, is left
    alone unless ``overwrite``. Raises :class:`~midilm.data.sources.SourceError` for a
    SOURCE naming nothing and :class:`DatasetError` for an unusable ``output``.
    """
    if config is not None and settings:
        raise TypeError("pass either a PrepareConfig or keyword settings, not both")
    config = config if config is not None else PrepareConfig.from_dict(settings)
    if shard is not None:
        shard = _check_shard(shard)
    output = Path(output)
    workers = _check_workers(workers)
    given = [os.fspath(s) for s in sources] if not isinstance(sources, (str, os.PathLike)) else []
    items = expand_sources(sources)
    settings_key = config.key()
    if shard is None:
        work = output / WORK_DIR
        _check_dataset_dir(output)
    else:
        work = output
        _check_part_dir(output, settings_key, overwrite)
    owned, keys = _owned_keys(items, settings_key, shard or (1, 1))
    inputs_key = _inputs_key(settings_key, items, keys)
    if shard is None:
        _check_conflict(output, settings_key, inputs_key, overwrite, has_work=True)

    if shard is None and _state_matches(output, inputs_key):
        if work.exists() and not keep_work:
            shutil.rmtree(work)
        return PrepareResult(output, read_json_object(output / MANIFEST), 0, True)

    info = {
        "format": PART_FORMAT,
        "format_version": FORMAT_VERSION,
        "midilm_version": _version(),
        "shard": list(shard or (1, 1)),
        "settings": config.to_dict(),
        "settings_key": settings_key,
        "sources": given,
        "items": len(items),
        "items_sha256": _items_sha256(items),
        "inputs_key": inputs_key,
        "complete": False,
    }
    old = read_json_object(work / PART_FILE) if (work / PART_FILE).is_file() else None
    if shard is not None and old == {**info, "complete": True}:
        return PrepareResult(output, old, 0, True)
    if old != info:
        work.mkdir(parents=True, exist_ok=True)
        write_json_atomic(work / PART_FILE, info)
    _write_items(work, items, keys)
    processed = _run_phase1(work, config, items, owned, keys, workers, progress)
    _collect_garbage(work, {keys[i] for i in owned})
    info["complete"] = True
    write_json_atomic(work / PART_FILE, info)
    if shard is not None:
        return PrepareResult(output, info, processed, False)
    manifest = _assemble([_Part(work, info)], output, progress)
    if not keep_work:
        shutil.rmtree(work)
    return PrepareResult(output, manifest, processed, False)


def merge(
    parts: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    *,
    progress: bool = False,
    overwrite: bool = False,
) -> PrepareResult:
    """Join part folders made by ``prepare(..., shard=(K, N))`` into a dataset: the same
    bytes a single-machine ``prepare`` gives (see the module doc)."""
    if not parts:
        raise DatasetError("merge needs the part folders made with --shard K/N")
    output = Path(output)
    loaded = [_load_part(Path(p)) for p in parts]
    loaded.sort(key=lambda p: p.info["shard"][0])
    _check_parts(loaded)
    for part in loaded:
        if output.resolve() == part.work.resolve():
            raise DatasetError(f"{output}: the output must not be one of the parts")
    _check_dataset_dir(output)
    inputs_key = _merged_inputs_key(loaded)
    settings_key = loaded[0].info["settings_key"]
    _check_conflict(output, settings_key, inputs_key, overwrite, has_work=False)
    if _state_matches(output, inputs_key):
        return PrepareResult(output, read_json_object(output / MANIFEST), 0, True)
    manifest = _assemble(loaded, output, progress)
    return PrepareResult(output, manifest, 0, False)


# ---------------------------------------------------------------------- checks


def _check_shard(shard: tuple[int, int]) -> tuple[int, int]:
    try:
        k, n = (int(x) for x in shard)
    except (TypeError, ValueError):
        raise ConfigError(f"shard: expected (K, N), received {shard!r}") from None
    if not 1 <= k <= n:
        raise ConfigError(f"shard: need 1 ≤ K ≤ N, received {k}/{n}")
    return k, n


def _check_workers(workers: int | None) -> int:
    if workers is None:
        return _cpu_count()
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers: expected an integer ≥ 1, received {workers!r}")
    return workers


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


_OUTPUT_NAMES = {
    MANIFEST,
    STATE_FILE,
    WORK_DIR,
    REJECTED_FILE,
    PIECES_FILE,
    "tokenizer.json",
    "tokenizer_config.json",
    "midilm.json",
}


def _is_ours(name: str) -> bool:
    return (
        name in _OUTPUT_NAMES
        or name.endswith((".tokens.npy", ".offsets.npy"))
        or (name.startswith(".") and ".tmp-" in name)
    )


def _check_dataset_dir(output: Path) -> None:
    if output.exists() and not output.is_dir():
        raise DatasetError(f"{output}: exists and is not a folder")
    if not output.is_dir():
        return
    foreign = sorted(p.name for p in output.iterdir() if not _is_ours(p.name))
    if foreign:
        raise DatasetError(
            f"{output}: not empty and not a midilm dataset (holds {', '.join(foreign[:3])}"
            f"{' …' if len(foreign) > 3 else ''}); choose a new folder"
        )


def _check_conflict(
    output: Path, settings_key: str, inputs_key: str, overwrite: bool, *, has_work: bool
) -> None:
    """Refuse to replace a finished dataset made from other inputs, or to discard an
    unfinished preparation with other settings, unless ``overwrite``. A dataset whose
    manifest is there but whose state is not (killed between the two writes) is this
    run's own when its work folder matches."""
    if overwrite:
        return
    part_path = output / WORK_DIR / PART_FILE
    part = read_json_object(part_path) if has_work and part_path.is_file() else {}
    if (output / MANIFEST).is_file():
        state = read_json_object(output / STATE_FILE) if (output / STATE_FILE).is_file() else {}
        if inputs_key in (state.get("inputs_key"), part.get("inputs_key")):
            return
        manifest_settings = state.get("settings_key") or part.get("settings_key")
        what = "other source files" if manifest_settings == settings_key else "other settings"
        raise DatasetError(
            f"{output}: holds a dataset prepared from {what}; pass --overwrite to replace "
            "it, or choose another folder"
        )
    if part and part.get("settings_key") != settings_key:
        raise DatasetError(
            f"{output}: holds an unfinished preparation with other settings; pass "
            "--overwrite to discard it, or choose another folder"
        )


def _check_part_dir(output: Path, settings_key: str, overwrite: bool) -> None:
    if output.exists() and not output.is_dir():
        raise DatasetError(f"{output}: exists and is not a folder")
    if not output.is_dir():
        return
    allowed = {PART_FILE, ITEMS_FILE, RECORDS_DIR}
    foreign = sorted(
        p.name for p in output.iterdir() if p.name not in allowed and ".tmp-" not in p.name
    )
    if foreign:
        raise DatasetError(
            f"{output}: not empty and not a midilm preparation part (holds "
            f"{', '.join(foreign[:3])}{' …' if len(foreign) > 3 else ''}); choose a new folder"
        )
    part = output / PART_FILE
    if (
        not overwrite
        and part.is_file()
        and read_json_object(part).get("settings_key") != settings_key
    ):
        raise DatasetError(
            f"{output}: holds a part prepared with other settings; pass --overwrite to "
            "discard it, or choose another folder"
        )


def _state_matches(output: Path, inputs_key: str) -> bool:
    state_path = output / STATE_FILE
    if not (output / MANIFEST).is_file() or not state_path.is_file():
        return False
    try:
        return read_json_object(state_path).get("inputs_key") == inputs_key
    except DatasetError:
        return False


def _version() -> str:
    from midilm import __version__

    return __version__


# ---------------------------------------------------------------------- items and keys


def _fingerprint(item: str) -> str:
    """What says that an item changed: size and modification time of a file; the music21
    version and midilm's conversion revision for a corpus work."""
    if is_music21(item):
        import music21

        from midilm.score.music21_import import CONVERSION_REVISION

        return f"music21 {music21.__version__} r{CONVERSION_REVISION}"
    try:
        stat = Path(item).stat()
    except OSError:
        return "unreadable"
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def _owned_keys(
    items: list[str], settings_key: str, shard: tuple[int, int]
) -> tuple[list[int], list[str | None]]:
    k, n = shard
    owned = list(range(k - 1, len(items), n))
    keys: list[str | None] = [None] * len(items)
    for i in owned:
        keys[i] = item_key(settings_key, items[i], _fingerprint(items[i]))
    return owned, keys


def _inputs_key(settings_key: str, items: Sequence[str], keys: Sequence[str | None]) -> str:
    digest = hashlib.sha256(settings_key.encode())
    for item, key in zip(items, keys, strict=True):
        digest.update(json.dumps([item, key], ensure_ascii=False).encode("utf-8", _RAW))
    return digest.hexdigest()


def _items_sha256(items: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for item in items:
        digest.update(item.encode("utf-8", "surrogateescape") + b"\n")
    return digest.hexdigest()


def _write_items(work: Path, items: list[str], keys: list[str | None]) -> None:
    from midilm.io_utils import atomic_path

    path = work / ITEMS_FILE
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8", errors=_JSON_TEXT) as fh:
        for item, key in zip(items, keys, strict=True):
            fh.write(json.dumps({"item": item, "key": key}, ensure_ascii=False) + "\n")


def _collect_garbage(work: Path, keep: set[str | None]) -> None:
    """Remove records of items no longer in the corpus (or made with other settings), and
    temporary files a killed run left."""
    root = work / RECORDS_DIR
    if not root.is_dir():
        return
    for folder in root.iterdir():
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            if path.name.startswith(".") or path.stem not in keep:
                path.unlink(missing_ok=True)


# ---------------------------------------------------------------------- phase 1: records


class _ItemProcessor:
    """Turns one item into a record. One per worker process, holding the tokenizer."""

    def __init__(self, config: PrepareConfig) -> None:
        self.config = config
        if config.tokenizer == "mmm":
            from midilm.tokenization.mmm import MMMTokenizer

            self.mmm = MMMTokenizer(config.tokenizer_config())
        else:
            from midilm.tokenization.remi import REMITokenizer

            self.remi = REMITokenizer(config.tokenizer_config())

    def run(self, item: str, path: Path) -> tuple[str, str | None]:
        """Make the record of ``item`` at ``path``; ``(status, reason)`` for the progress."""
        header, arrays = self.process(item)
        write_record(path, header, arrays)
        return header["status"], header.get("reason")

    def process(self, item: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        with warnings.catch_warnings():
            # Libraries warn about odd files (MidiTok, music21); a file is either accepted
            # or rejected with a reason, and the outcome must not depend on warning filters.
            warnings.simplefilter("ignore")
            try:
                return self._process(item)
            except _Rejected as rejected:
                return _rejection(item, rejected.reason, rejected.detail), {}
            except (InvalidMidiError, UnsupportedScoreError) as err:
                return _rejection(item, err.reason, err.detail), {}
            # One file must never stop a corpus: an unexpected error is a bug, recorded with
            # its type and message, counted, and listed in rejected.jsonl.
            except Exception as err:  # noqa: BLE001
                return _rejection(item, "failed", f"{type(err).__name__}: {err}"), {}

    def _process(self, item: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        from midilm.data.split import note_hash, split_of
        from midilm.score import load_score

        cfg = self.config
        score = load_score(item)
        tracks = sum(1 for t in score.tracks if len(t.notes))
        if tracks > cfg.max_tracks:
            raise _Rejected(
                "too_many_tracks",
                f"{tracks} tracks with notes (the limit is {cfg.max_tracks}: max_tracks)",
            )
        piece_hash = note_hash(score)
        split = split_of(piece_hash, cfg.split_ratios)
        facts = {"hash": piece_hash, "split": split, "tracks": tracks}
        if cfg.tokenizer == "mmm":
            return self._mmm(item, score, facts)
        return self._remi(item, score, facts)

    def _check_length(self, bars: int, notes: int) -> None:
        cfg = self.config
        if bars < cfg.min_bars:
            raise _Rejected("too_short", f"{bars} bars (min_bars is {cfg.min_bars})")
        if notes < cfg.min_notes:
            raise _Rejected("too_short", f"{notes} notes (min_notes is {cfg.min_notes})")
        if bars > cfg.max_bars:
            raise _Rejected("too_long", f"{bars} bars (max_bars is {cfg.max_bars})")

    def _mmm(
        self, item: str, score: Any, facts: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        from midilm.data.augment import choose_infill_cells, transpose_piece
        from midilm.data.shards import token_dtype
        from midilm.data.split import piece_rng
        from midilm.tokenization.mmm import _window_spans

        cfg, tok = self.config, self.mmm
        piece = tok.prepare(score)
        notes = sum(len(t.onset) for t in piece.tracks)
        self._check_length(len(piece.bars), notes)
        spans = _window_spans(len(piece.bars), tok.config.bars_per_window, cfg.hop)
        # Notes sounding in each window, per track: what decides which tracks a window
        # writes, and (training split) what the density edges are fitted on.
        in_window = np.zeros((len(spans), len(piece.tracks)), dtype=np.int64)
        for w, (start, stop) in enumerate(spans):
            lo, hi = piece.bars[start].start_ticks, piece.bars[stop - 1].end_ticks
            for t, track in enumerate(piece.tracks):
                in_window[w, t] = np.count_nonzero((track.onset < hi) & (track.end > lo))
        fit = np.zeros(0, dtype=np.int64)
        if facts["split"] == "train":
            fit = _density_fit_counts(piece, in_window, tok.config.density_placement)

        rng = piece_rng(cfg.seed, facts["hash"])
        shifts = cfg.transpositions if facts["split"] == "train" else [0]
        chunks: list[list[int]] = []
        densities: list[tuple[int, int]] = []
        counts = Counter()
        assert cfg.max_seq_len is not None
        for shift in shifts:
            variant = transpose_piece(piece, shift)
            if variant is None:
                counts["variants_dropped"] += 1
                continue
            counts["variants"] += 1
            for w, (start, stop) in enumerate(spans):
                present = np.flatnonzero(in_window[w]).tolist()
                if not present:
                    continue
                order = rng.permutation(present).tolist() if cfg.shuffle_tracks else present
                masked: list[tuple[int, int]] = []
                if cfg.infill_share > 0 and rng.random() < cfg.infill_share:
                    masked = choose_infill_cells(rng, present, stop - start, cfg.infill_bars)
                window_densities: list[tuple[int, int]] = []
                ids = tok.encode_window(
                    variant, start, stop, track_order=order, masked=masked,
                    densities=window_densities,
                )  # fmt: skip
                if len(ids) > cfg.max_seq_len:
                    counts["too_long"] += 1
                    continue
                chunks.append(ids)
                densities.extend(window_densities)
                counts["infill"] += bool(masked)
        if not chunks:
            raise _Rejected(
                "too_long",
                f"every window is over max_seq_len ({cfg.max_seq_len} ids)",
            )
        lengths = np.array([len(c) for c in chunks], dtype=np.int64)
        tokens = np.fromiter(
            (i for c in chunks for i in c), dtype=token_dtype(tok.vocab_size), count=lengths.sum()
        )
        dens = np.asarray(densities, dtype=np.int64).reshape(-1, 2)
        values, weights = np.unique(fit, return_counts=True)
        header = {
            "status": "accepted",
            "item": item,
            **facts,
            "bars": len(piece.bars),
            "notes": notes,
            "sequences": len(chunks),
            "tokens": int(lengths.sum()),
            "infill": counts["infill"],
            "variants": counts["variants"],
            "variants_dropped": counts["variants_dropped"],
            "too_long": counts["too_long"],
        }
        arrays = {
            "fit_values": values.astype(np.int64),
            "fit_weights": weights.astype(np.int64),
            "lengths": lengths,
            "density_count": dens[:, 0].copy(),
            "density_bars": dens[:, 1].copy(),
            "tokens": tokens,
        }
        return header, arrays

    def _remi(
        self, item: str, score: Any, facts: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        import math

        from midilm.data.augment import transpose_score
        from midilm.data.shards import token_dtype
        from midilm.score import score_end_ticks

        cfg, tok = self.config, self.remi
        bars = max(1, math.ceil(score_end_ticks(score) / (4 * int(score.ticks_per_quarter))))
        notes = sum(len(t.notes) for t in score.tracks)
        self._check_length(bars, notes)
        shifts = cfg.transpositions if facts["split"] == "train" else [0]
        chunks: list[list[int]] = []
        counts = Counter()
        for shift in shifts:
            variant = transpose_score(score, shift)
            ids = tok.encode(variant) if variant is not None else []
            if not ids:
                if shift == 0:
                    raise _Rejected(
                        "no_notes",
                        "the REMI tokenizer keeps none of its notes (it drops drums and "
                        f"pitches outside {tok.config.min_pitch}–{tok.config.max_pitch})",
                    )
                counts["variants_dropped"] += 1
                continue
            counts["variants"] += 1
            chunks.append(ids)
        lengths = np.array([len(c) for c in chunks], dtype=np.int64)
        tokens = np.fromiter(
            (i for c in chunks for i in c),
            dtype=token_dtype(tok.vocab_size),
            count=int(lengths.sum()),
        )
        header = {
            "status": "accepted",
            "item": item,
            **facts,
            "bars": bars,
            "notes": notes,
            "sequences": len(chunks),
            "tokens": int(lengths.sum()),
            "infill": 0,
            "variants": counts["variants"],
            "variants_dropped": counts["variants_dropped"],
            "too_long": 0,
        }
        return header, {"lengths": lengths, "tokens": tokens}


class _Rejected(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _rejection(item: str, reason: str, detail: str) -> dict[str, Any]:
    return {"status": "rejected", "item": item, "reason": reason, "detail": detail}


def _density_fit_counts(piece: Any, in_window: np.ndarray, placement: str) -> np.ndarray:
    """The note counts the density edges are fitted on, as
    :meth:`~midilm.tokenization.mmm.MMMTokenizer.fit_density` takes them: per window and
    track with notes (per bar and track with onsets for per-bar placement)."""
    if placement == "bar":
        starts = np.array([b.start_ticks for b in piece.bars])
        counts = [
            np.bincount(np.searchsorted(starts, t.onset, "right") - 1, minlength=len(starts))
            for t in piece.tracks
        ]
        flat = np.concatenate(counts) if counts else np.zeros(0, dtype=np.int64)
        return flat[flat > 0].astype(np.int64)
    return in_window[in_window > 0].astype(np.int64)


# ---------------------------------------------------------------------- phase 1: running

_WORKER: _ItemProcessor | None = None


def _init_worker(settings: dict[str, Any], run_pid: int) -> None:
    global _WORKER  # noqa: PLW0603 - one processor per worker process, made once
    _WORKER = _ItemProcessor(PrepareConfig.from_dict(settings))
    threading.Thread(target=_exit_with, args=(run_pid,), daemon=True).start()


def _exit_with(run_pid: int) -> None:
    """Stop this worker soon after the run that started it is gone. A run killed with
    SIGKILL cannot tell its pool; its workers would wait for work forever, and keep its fork
    server alive with them."""
    while True:
        time.sleep(0.5)
        try:
            os.kill(run_pid, 0)
        except ProcessLookupError:
            os._exit(1)
        except PermissionError:  # the number now belongs to another user's process
            os._exit(1)


def _ping() -> int:
    """A task that does nothing: does the pool start at all?"""
    return os.getpid()


def _run_batch(batch: list[tuple[str, str]]) -> list[tuple[str, str | None]]:
    assert _WORKER is not None, "worker not initialized"
    return [_WORKER.run(item, Path(path)) for item, path in batch]


def _run_phase1(
    work: Path,
    config: PrepareConfig,
    items: list[str],
    owned: list[int],
    keys: list[str | None],
    workers: int,
    progress: bool,
) -> int:
    """Make the missing records of the owned items; returns how many were made."""
    tasks = []
    for i in owned:
        key = keys[i]
        assert key is not None
        path = record_path(work, key)
        if not record_is_valid(path):
            tasks.append((items[i], str(path)))
    bar = _progress(progress, total=len(owned), initial=len(owned) - len(tasks), desc="prepare")
    try:
        if workers <= 1 or len(tasks) <= 1:
            processor = _ItemProcessor(config)
            for item, path in tasks:
                processor.run(item, Path(path))
                bar.update(1)
        else:
            _run_pool(tasks, config, workers, bar.update)
    finally:
        bar.close()
    return len(tasks)


def _run_pool(
    tasks: list[tuple[str, str]],
    config: PrepareConfig,
    workers: int,
    advance: Callable[[int], Any],
) -> None:
    """Run the tasks in a process pool, a bounded number of small batches in flight (so
    that memory does not grow with the corpus). A worker that dies (a crash in a C library
    on one odd file) breaks the pool: the batches it had in flight are set aside, a new
    pool carries on with the rest, and the set-aside items are then run one per pool; an
    item that kills its worker again gets a "failed" record."""
    context = _mp_context(config.tokenizer)
    workers = min(workers, len(tasks))
    # Small batches: little to wait for at the end, and a cheap retry if a worker dies.
    size = max(1, min(8, len(tasks) // (workers * 64)))
    pending = (tasks[i : i + size] for i in range(0, len(tasks), size))
    suspects: list[tuple[str, str]] = []
    while _drain(pending, config, workers, context, advance, suspects):
        pass  # the pool broke: a new one takes the batches not yet submitted
    for item, path in suspects:
        if not record_is_valid(Path(path)):
            _run_isolated(item, path, config, context)
        advance(1)


def _drain(
    pending: Iterator[list[tuple[str, str]]],
    config: PrepareConfig,
    workers: int,
    context: Any,
    advance: Callable[[int], Any],
    suspects: list[tuple[str, str]],
) -> bool:
    """Run batches from ``pending`` in one pool until none is left (``False``) or the pool
    breaks (``True``; the batches in flight are added to ``suspects``)."""
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=context,
        initializer=_init_worker,
        initargs=(config.to_dict(), os.getpid()),
    ) as pool:
        _check_pool(pool)
        in_flight: dict[Any, list[tuple[str, str]]] = {}
        try:
            while True:
                while len(in_flight) < workers * 4:
                    batch = next(pending, None)
                    if batch is None:
                        break
                    try:
                        in_flight[pool.submit(_run_batch, batch)] = batch
                    except BrokenProcessPool:
                        suspects.extend(batch)
                        suspects.extend(task for b in in_flight.values() for task in b)
                        return True
                if not in_flight:
                    return False
                done, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
                for future in done:
                    batch = in_flight.pop(future)
                    try:
                        advance(len(future.result()))
                    except BrokenProcessPool:
                        suspects.extend(batch)
                        suspects.extend(task for b in in_flight.values() for task in b)
                        return True
        except BaseException:
            # Ctrl-C, or an error in this process: stop at once; finished records stay.
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def _run_isolated(item: str, path: str, config: PrepareConfig, context: Any) -> None:
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    with ProcessPoolExecutor(
        max_workers=1,
        mp_context=context,
        initializer=_init_worker,
        initargs=(config.to_dict(), os.getpid()),
    ) as pool:
        _check_pool(pool)
        try:
            pool.submit(_run_batch, [(item, path)]).result()
            return
        except BrokenProcessPool:
            pass
    detail = "the process reading it died (a crash in a library, or out of memory)"
    write_record(Path(path), _rejection(item, "failed", detail), {})


def _check_pool(pool: Any) -> None:
    """Fail the run (not the files) when worker processes cannot start at all."""
    from concurrent.futures.process import BrokenProcessPool

    try:
        pool.submit(_ping).result()
    except BrokenProcessPool as err:
        raise DatasetError(
            "the worker processes could not start (see the messages above); a script that "
            "calls prepare() with workers > 1 must do so under 'if __name__ == \"__main__\":'"
        ) from err


def _mp_context(kind: str) -> Any:
    """``forkserver``: workers start from a clean process that imported what they need once
    (MidiTok alone takes seconds), never from a fork of a process with threads (numpy's
    BLAS, torch, tokenizers), which can deadlock; Python 3.14's default on Linux.
    ``spawn`` where there is no forkserver."""
    import multiprocessing

    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        tokenizer = "midilm.tokenization.mmm" if kind == "mmm" else "midilm.tokenization.remi"
        context.set_forkserver_preload(
            ["midilm.data.prepare", "midilm.data.augment", "midilm.score", tokenizer]
        )
        return context
    return multiprocessing.get_context("spawn")


class _NoProgress:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(enabled: bool, *, total: int, initial: int = 0, desc: str) -> Any:
    if not enabled:
        return _NoProgress()
    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit="file",
        file=sys.stderr,
        dynamic_ncols=True,
        smoothing=0.1,
    )


# ---------------------------------------------------------------------- phase 2: assembly


@dataclass
class _Part:
    work: Path
    info: dict[str, Any]


def _load_part(work: Path) -> _Part:
    path = work / PART_FILE
    if not path.is_file():
        raise DatasetError(f"{work}: not a preparation part (no {PART_FILE})")
    info = read_json_object(path)
    if info.get("format") != PART_FORMAT:
        raise DatasetError(f"{path}: not a preparation part")
    if info.get("format_version") != FORMAT_VERSION:
        raise DatasetError(
            f"{path}: made by another version of midilm (part format "
            f"{info.get('format_version')}, this one reads {FORMAT_VERSION})"
        )
    if not info.get("complete"):
        k, n = info.get("shard", ["?", "?"])
        raise DatasetError(
            f"{work}: part {k}/{n} is unfinished; run its 'midilm prepare --shard {k}/{n}' "
            "again to complete it"
        )
    return _Part(work, info)


def _check_parts(parts: list[_Part]) -> None:
    first = parts[0].info
    n = first["shard"][1]
    for part in parts[1:]:
        for field_name, what in (
            ("settings_key", "settings"),
            ("items_sha256", "list of source items"),
            ("sources", "SOURCE arguments"),
        ):
            if part.info[field_name] != first[field_name]:
                raise DatasetError(
                    f"{part.work} and {parts[0].work} were prepared with another {what}; "
                    "every part must come from the same command with another --shard K/N"
                )
    shards = [p.info["shard"] for p in parts]
    if any(s[1] != n for s in shards) or sorted(s[0] for s in shards) != list(range(1, n + 1)):
        have = ", ".join(f"{k}/{m}" for k, m in shards)
        raise DatasetError(f"merge needs parts 1/{n} … {n}/{n} exactly once each; received {have}")


def _walk_records(parts: list[_Part]) -> Iterator[tuple[int, str, str, Path]]:
    """``(index, item, key, record path)`` of every item, in item order, from its part."""
    n = len(parts)
    streams = [iter_items(p.work) for p in parts]
    for index, rows in enumerate(zip(*streams, strict=True)):
        item = rows[0][0]
        if any(row[0] != item for row in rows):
            raise DatasetError(f"the parts list different items at position {index + 1}")
        owner = parts[index % n]
        key = rows[index % n][1]
        if key is None:
            raise DatasetError(f"{owner.work}: no record key for {item}; is the part damaged?")
        yield index, item, key, record_path(owner.work, key)


def _merged_inputs_key(parts: list[_Part]) -> str:
    digest = hashlib.sha256(parts[0].info["settings_key"].encode())
    for _, item, key, _ in _walk_records(parts):
        digest.update(json.dumps([item, key], ensure_ascii=False).encode("utf-8", _RAW))
    return digest.hexdigest()


def _read(path: Path, item: str, part: _Part, *, names: Sequence[str] | None = None) -> Record:
    try:
        record = read_record(path, names=names)
    except DatasetError as err:
        k, n = part.info["shard"]
        raise DatasetError(
            f"{err}: the record of {item} in part {k}/{n} ({part.work}) is missing or damaged; "
            "run that part's command again"
        ) from None
    return record


@dataclass
class _Scan:
    """What the first pass over the records learns (headers and fit statistics only)."""

    counts: Counter = field(default_factory=Counter)
    reasons: Counter = field(default_factory=Counter)
    duplicates: dict[int, str] = field(default_factory=dict)  # index -> the original item
    train_sequences: int = 0
    fit: Counter = field(default_factory=Counter)


def _scan(parts: list[_Part], kind: str, bar: Any) -> tuple[_Scan, str]:
    scan = _Scan()
    first_of: dict[str, str] = {}
    n = len(parts)
    digest = hashlib.sha256(parts[0].info["settings_key"].encode())
    for index, item, key, path in _walk_records(parts):
        digest.update(json.dumps([item, key], ensure_ascii=False).encode("utf-8", _RAW))
        names = ("fit_values", "fit_weights") if kind == "mmm" else ()
        record = _read(path, item, parts[index % n], names=names)
        header = record.header
        scan.counts["files_seen"] += 1
        bar.update(1)
        if header["status"] != "accepted":
            scan.reasons[header["reason"]] += 1
            continue
        original = first_of.get(header["hash"])
        if original is not None:
            scan.duplicates[index] = original
            continue
        first_of[header["hash"]] = item
        scan.counts["accepted"] += 1
        if header["split"] == "train":
            scan.train_sequences += header["sequences"]
            if kind == "mmm":
                values = record.arrays["fit_values"].tolist()
                weights = record.arrays["fit_weights"].tolist()
                scan.fit.update(dict(zip(values, weights, strict=True)))
    return scan, digest.hexdigest()


def _assemble(parts: list[_Part], output: Path, progress: bool) -> dict[str, Any]:
    """Phase 2 (see the module doc): records → tokenizer, shards, rejected.jsonl, manifest."""
    config = PrepareConfig.from_dict(parts[0].info["settings"])
    kind = config.tokenizer
    total = parts[0].info["items"]
    output.mkdir(parents=True, exist_ok=True)
    for name in (MANIFEST, STATE_FILE):
        (output / name).unlink(missing_ok=True)
    for path in output.iterdir():
        if path.name.startswith(".") and ".tmp-" in path.name:
            path.unlink(missing_ok=True)

    bar = _progress(progress, total=total, desc="check")
    try:
        scan, inputs_key = _scan(parts, kind, bar)
    finally:
        bar.close()
    if scan.counts["accepted"] == 0:
        raise DatasetError(
            f"no usable piece among {total} items (rejected: "
            f"{_reasons_text(scan.reasons) or 'none'}; duplicates: {len(scan.duplicates)})"
        )
    if scan.train_sequences == 0:
        raise DatasetError(
            f"the training split is empty: the {scan.counts['accepted']} usable pieces all "
            "fell in valid or test (splits follow each piece's note hash); add pieces or "
            "change split_ratios"
        )

    if kind == "mmm":
        writer_for = _MMMAssembler(config, scan)
    else:
        writer_for = _REMIAssembler(config, scan, parts)
    tokenizer = writer_for.tokenizer
    for name in ("tokenizer.json", "tokenizer_config.json", "midilm.json"):
        (output / name).unlink(missing_ok=True)

    from midilm.io_utils import atomic_path

    writers = {split: ShardWriter(output, split, tokenizer.vocab_size) for split in SPLITS}
    per_split = {split: Counter() for split in SPLITS}
    bar = _progress(progress, total=total, desc="write")
    n = len(parts)
    try:
        with (
            atomic_path(output / REJECTED_FILE) as rejected_tmp,
            rejected_tmp.open("w", encoding="utf-8", errors=_JSON_TEXT) as rejected,
            atomic_path(output / PIECES_FILE) as pieces_tmp,
            pieces_tmp.open("w", encoding="utf-8", errors=_JSON_TEXT) as pieces,
        ):
            for index, item, _, path in _walk_records(parts):
                bar.update(1)
                if index in scan.duplicates:
                    _reject_line(rejected, item, "duplicate",
                                 f"the same notes as {scan.duplicates[index]}",
                                 duplicate_of=scan.duplicates[index])  # fmt: skip
                    continue
                record = _read(path, item, parts[index % n])
                header = record.header
                if header["status"] != "accepted":
                    _reject_line(rejected, item, header["reason"], header["detail"])
                    continue
                split = header["split"]
                stats = per_split[split]
                stats["pieces"] += 1
                for name in ("infill", "variants", "variants_dropped", "too_long"):
                    stats[name] += header[name]
                first = writers[split].num_sequences
                writer_for.write(record, writers[split], stats)
                entry = {
                    "item": item,
                    "hash": header["hash"],
                    "split": split,
                    "sequences": [first, writers[split].num_sequences],
                }
                pieces.write(json.dumps(entry, ensure_ascii=False) + "\n")
        for writer in writers.values():
            writer.close()
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    finally:
        bar.close()

    tokenizer.save(output)
    manifest = _manifest(config, parts[0].info, scan, writers, per_split, writer_for)
    write_json_atomic(output / MANIFEST, manifest)
    write_json_atomic(
        output / STATE_FILE,
        {"inputs_key": inputs_key, "settings_key": parts[0].info["settings_key"]},
    )
    return manifest


def _reject_line(fh: Any, item: str, reason: str, detail: str, **extra: str) -> None:
    entry = {"item": item, "reason": reason, "detail": detail, **extra}
    fh.write(json.dumps(entry, ensure_ascii=False) + "\n")


def _reasons_text(reasons: Counter) -> str:
    return ", ".join(f"{count} {reason}" for reason, count in sorted(reasons.items()))


class _MMMAssembler:
    """Fits the density edges, then rewrites each record's provisional DENSITY tokens."""

    def __init__(self, config: PrepareConfig, scan: _Scan) -> None:
        from midilm.tokenization.mmm import MMMTokenizer
        from midilm.tokenization.mmm_vocab import Kind

        base = config.tokenizer_config()
        values = np.array(sorted(scan.fit), dtype=np.int64)
        weights = np.array([scan.fit[v] for v in values.tolist()], dtype=np.int64)
        bins = base.density_bins
        percentiles = list(range(100 // bins, 100, 100 // bins))[: bins - 1]
        edges = weighted_percentiles(values, weights, percentiles) if len(values) else None
        if edges is None:
            raise DatasetError("the training split has no window with notes")
        self.edges = edges
        self.tokenizer = MMMTokenizer(base.replace(density_edges=edges))
        vocab = self.tokenizer.vocab
        self._is_density = np.asarray(vocab.kinds) == int(Kind.DENSITY)
        self._density_ids = np.asarray(vocab.density, dtype=np.int64)
        self._edges = np.asarray(edges, dtype=np.float64)
        self._unit = 1 if base.density_placement == "bar" else base.bars_per_window

    def write(self, record: Record, writer: ShardWriter, stats: Counter) -> None:
        tokens = record.arrays["tokens"].astype(np.int64)
        counts = record.arrays["density_count"]
        bars = record.arrays["density_bars"]
        where = np.flatnonzero(self._is_density[tokens])
        if len(where) != len(counts):
            raise DatasetError(
                f"{record.header['item']}: record has {len(where)} DENSITY tokens but "
                f"{len(counts)} note counts"
            )
        # MMMTokenizer.density_bin, vectorized: counts scaled to a window of ``unit`` bars.
        scaled = np.where(
            bars != self._unit,
            counts * self._unit / np.maximum(bars, 1),
            counts.astype(np.float64),
        )
        tokens[where] = self._density_ids[np.digitize(scaled, self._edges)]
        lengths = record.arrays["lengths"]
        writer.append_many(tokens, lengths)
        stats["sequences"] += len(lengths)
        stats["tokens"] += len(tokens)

    def manifest_extra(self) -> dict[str, Any]:
        return {"density_edges": list(self.edges)}


class _REMIAssembler:
    """Trains BPE on the training split's base sequences, then cuts each piece at bar lines
    into sequences of at most ``max_seq_len - 2`` BPE ids.

    Each sequence is BPE-encoded on its own, so that it starts on a bar line and no learned
    token spans a cut (BPE readily merges the end of a bar with the next ``Bar``); a
    sequence is then exactly what :meth:`REMITokenizer.encode` gives for its bars. The cut
    is greedy: as many whole bars as fit. A single bar longer than the limit is cut inside
    (counted in the manifest).
    """

    def __init__(self, config: PrepareConfig, scan: _Scan, parts: list[_Part]) -> None:
        from midilm.tokenization.remi import REMITokenizer

        self.config = config
        base = REMITokenizer(config.tokenizer_config())
        corpus = _TrainSequences(parts, scan)
        if config.vocab_size > base.vocab_size:
            self.tokenizer = REMITokenizer.train_from_ids(
                corpus, config.vocab_size, config.tokenizer_config()
            )
        else:
            self.tokenizer = base
        self._bar = base.token_to_id("Bar_None")
        assert config.max_seq_len is not None
        self._limit = config.max_seq_len - 2
        self.cut_inside_bar = 0

    def write(self, record: Record, writer: ShardWriter, stats: Counter) -> None:
        lengths = record.arrays["lengths"].tolist()
        bounds = np.concatenate([[0], np.cumsum(lengths)]).tolist()
        base = record.arrays["tokens"]
        for lo, hi in itertools.pairwise(bounds):
            rows = self._cut(base[lo:hi].astype(np.int64))
            tokens = np.fromiter((i for row in rows for i in row), dtype=np.int64)
            writer.append_many(tokens, [len(row) for row in rows])
            stats["sequences"] += len(rows)
            stats["tokens"] += len(tokens)
            stats["cut_sequences"] += len(rows) - 1

    def _encode(self, base: np.ndarray) -> list[int]:
        return self.tokenizer.encode_base_ids([base.tolist()])[0]

    def _cut(self, base: np.ndarray) -> list[list[int]]:
        limit = self._limit
        whole = self._encode(base)
        if len(whole) <= limit:
            return [whole]
        starts = np.flatnonzero(base == self._bar)
        if not len(starts) or starts[0] != 0:
            starts = np.concatenate([[0], starts])
        bars = np.concatenate([starts, [len(base)]])  # bar b is base[bars[b]:bars[b + 1]]
        # Where the whole piece's BPE tokens end, in base tokens: estimates how many bars fit.
        ends = np.cumsum([len(self.tokenizer.expansion(i)) for i in whole])
        before = np.searchsorted(ends, bars, "right")  # whole tokens done before each bar
        rows: list[list[int]] = []
        first, n_bars = 0, len(bars) - 1
        while first < n_bars:
            guess = int(np.searchsorted(before, before[first] + limit, "right")) - 1
            stop = min(max(guess, first + 1), n_bars)
            row = self._encode(base[bars[first] : bars[stop]])
            while len(row) > limit and stop > first + 1:
                stop -= 1
                row = self._encode(base[bars[first] : bars[stop]])
            while stop < n_bars:
                longer = self._encode(base[bars[first] : bars[stop + 1]])
                if len(longer) > limit:
                    break
                stop, row = stop + 1, longer
            if len(row) > limit:  # one bar alone is too long: cut inside it
                self.cut_inside_bar += 1
                rows.extend(row[i : i + limit] for i in range(0, len(row), limit))
            else:
                rows.append(row)
            first = stop
        return rows

    def manifest_extra(self) -> dict[str, Any]:
        return {
            "density_edges": None,
            "bpe": {
                "vocab_size_requested": self.config.vocab_size,
                "vocab_size": self.tokenizer.vocab_size,
                "base_vocab_size": self.tokenizer.base_vocab_size,
                "cut_inside_bar": self.cut_inside_bar,
            },
        }


class _TrainSequences:
    """The training split's base-token sequences, read from the records as BPE training
    iterates (MidiTok asks for the length first)."""

    def __init__(self, parts: list[_Part], scan: _Scan) -> None:
        self._parts = parts
        self._scan = scan

    def __len__(self) -> int:
        return self._scan.train_sequences

    def __iter__(self) -> Iterator[np.ndarray]:
        n = len(self._parts)
        for index, item, _, path in _walk_records(self._parts):
            if index in self._scan.duplicates:
                continue
            header = read_record(path, arrays=False).header
            if header["status"] != "accepted" or header["split"] != "train":
                continue
            record = _read(path, item, self._parts[index % n])
            bounds = np.concatenate([[0], np.cumsum(record.arrays["lengths"])]).tolist()
            for lo, hi in itertools.pairwise(bounds):
                yield record.arrays["tokens"][lo:hi]


def weighted_percentiles(
    values: np.ndarray, weights: np.ndarray, percentiles: Sequence[float]
) -> tuple[float, ...]:
    """``numpy.percentile(numpy.repeat(values, weights), percentiles)`` (the default
    linear method), bit for bit, without building the repeated array: the density edges
    of a large corpus come from a histogram of note counts. ``values`` sorted, unique."""
    cumulative = np.cumsum(weights)
    n = int(cumulative[-1])

    def order_statistic(rank: int) -> Any:
        return values[int(np.searchsorted(cumulative, rank, "right"))]

    out = []
    for p in percentiles:
        virtual = (n - 1) * np.true_divide(p, 100)
        below = int(np.floor(virtual))
        gamma = virtual - below
        pair = np.array([order_statistic(below), order_statistic(min(below + 1, n - 1))])
        # numpy's own interpolation on the two neighbours: same arithmetic, same bits.
        out.append(float(np.quantile(pair, gamma)))
    return tuple(out)


def _manifest(
    config: PrepareConfig,
    info: dict[str, Any],
    scan: _Scan,
    writers: dict[str, ShardWriter],
    per_split: dict[str, Counter],
    assembler: Any,
) -> dict[str, Any]:
    tokenizer = assembler.tokenizer
    splits: dict[str, Any] = {}
    for split in SPLITS:
        writer, stats = writers[split], per_split[split]
        splits[split] = {
            "pieces": stats["pieces"],
            "sequences": writer.num_sequences,
            "tokens": writer.num_tokens,
            "infill_sequences": stats["infill"],
            "variants": stats["variants"],
            "dtype": writer.dtype.name,
            "tokens_sha256": writer.sha256["tokens"],
            "offsets_sha256": writer.sha256["offsets"],
        }
    if config.tokenizer == "mmm":
        special = {"pad": int(tokenizer.pad_id), "bos": None, "eos": None}
    else:
        special = {
            "pad": int(tokenizer.pad_id),
            "bos": int(tokenizer.bos_id),
            "eos": int(tokenizer.eos_id),
        }
    reasons = dict(sorted(scan.reasons.items()))
    counts = {
        "files_seen": scan.counts["files_seen"],
        "accepted": scan.counts["accepted"],
        "rejected": sum(reasons.values()),
        "rejected_by_reason": reasons,
        "duplicates": len(scan.duplicates),
        "variants_dropped_out_of_range": sum(s["variants_dropped"] for s in per_split.values()),
        "sequences_dropped_too_long": sum(s["too_long"] for s in per_split.values()),
        "sequences_cut_at_bar_lines": sum(s["cut_sequences"] for s in per_split.values()),
    }
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "midilm_version": _version(),
        "sources": {
            "given": info["sources"],
            "items": info["items"],
            "items_sha256": info["items_sha256"],
        },
        "settings": config.to_dict(),
        "tokenizer": {"kind": config.tokenizer, "config": tokenizer.config.to_dict()},
        "vocab_size": tokenizer.vocab_size,
        "token_dtype": writers["train"].dtype.name,
        "special_ids": special,
        **assembler.manifest_extra(),
        "counts": counts,
        "splits": splits,
        "digest": shards_digest(
            {
                split: {
                    "dtype": s["dtype"],
                    "tokens_sha256": s["tokens_sha256"],
                    "offsets_sha256": s["offsets_sha256"],
                }
                for split, s in splits.items()
            }
        ),
    }
