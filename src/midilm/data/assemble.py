"""Phase 2 of ``midilm prepare``: records → dataset (:func:`assemble`).

It reads the records of one or more parts in the sorted order of the items: drops exact
duplicates (the first piece in item order is kept), fits what must come from the training
split alone (MMM: the density bin edges, percentiles of the training windows' note counts;
REMI: BPE over the training sequences), rewrites the ``DENSITY`` tokens (MMM) or applies
BPE and cuts sequences at bar lines to ``max_seq_len`` (REMI), and streams the shards,
``pieces.jsonl``, ``rejected.jsonl``, the tokenizer and the manifest. It needs the part
folders only, never the corpus, and reads records in item order, never in the order they
were made: the same records give the same bytes.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from midilm.data.prepare_config import PrepareConfig
from midilm.data.shards import (
    MANIFEST,
    SPLITS,
    DatasetError,
    ShardWriter,
    read_json_object,
    shards_digest,
)
from midilm.data.work import (
    PART_FILE,
    PART_FORMAT,
    PART_FORMAT_VERSION,
    Record,
    iter_items,
    read_record,
    record_path,
    write_json_atomic,
)
from midilm.data.workers import progress_bar

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "PIECES_FILE",
    "REJECTED_FILE",
    "STATE_FILE",
    "Part",
    "assemble",
    "check_parts",
    "load_part",
    "merged_inputs_key",
    "preload",
    "walk_records",
    "weighted_percentiles",
]

FORMAT = "midilm-dataset"
FORMAT_VERSION = 1
STATE_FILE = ".inputs.json"
REJECTED_FILE = "rejected.jsonl"
PIECES_FILE = "pieces.jsonl"
_COUNTED = ("infill", "new_instruments", "variants", "variants_dropped", "too_long")

# File names that are not valid UTF-8 reach Python as strings with lone surrogates: hashed as
# their original bytes, and written into JSON as \udcxx escapes (valid JSON, same string back).
RAW = "surrogateescape"
JSON_TEXT = "backslashreplace"


@dataclass
class Part:
    work: Path
    info: dict[str, Any]


def load_part(work: Path) -> Part:
    path = work / PART_FILE
    if not path.is_file():
        raise DatasetError(f"{work}: not a preparation part (no {PART_FILE})")
    info = read_json_object(path)
    if info.get("format") != PART_FORMAT:
        raise DatasetError(f"{path}: not a preparation part")
    if info.get("format_version") != PART_FORMAT_VERSION:
        raise DatasetError(
            f"{path}: made by another version of midilm (part format "
            f"{info.get('format_version')}, this one reads {PART_FORMAT_VERSION}); run its "
            "'midilm prepare --shard K/N' command again"
        )
    if not info.get("complete"):
        k, n = info.get("shard", ["?", "?"])
        raise DatasetError(
            f"{work}: part {k}/{n} is unfinished; run its 'midilm prepare --shard {k}/{n}' "
            "again to complete it"
        )
    return Part(work, info)


def check_parts(parts: list[Part]) -> None:
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


def walk_records(parts: list[Part]) -> Iterator[tuple[int, str, str, Path]]:
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


def merged_inputs_key(parts: list[Part]) -> str:
    digest = hashlib.sha256(parts[0].info["settings_key"].encode())
    for _, item, key, _ in walk_records(parts):
        digest.update(json.dumps([item, key], ensure_ascii=False).encode("utf-8", RAW))
    return digest.hexdigest()


def _read(path: Path, item: str, part: Part, *, names: Sequence[str] | None = None) -> Record:
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


def _scan(parts: list[Part], kind: str, bar: Any) -> tuple[_Scan, str]:
    scan = _Scan()
    first_of: dict[str, str] = {}
    n = len(parts)
    digest = hashlib.sha256(parts[0].info["settings_key"].encode())
    for index, item, key, path in walk_records(parts):
        digest.update(json.dumps([item, key], ensure_ascii=False).encode("utf-8", RAW))
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


def preload(kind: str) -> None:
    """Import the modules :func:`assemble` loads on first use for a ``kind`` ("mmm" or
    "remi") dataset. A run calls it while its workers start, so that phase 2 does not wait
    for imports (MidiTok alone takes a second or more) after the workers are done."""
    import numpy.ma  # noqa: F401 - numpy.unique (the density edges) loads it on first use
    import tokenizers  # noqa: F401 - saving the tokenizer; BPE training (REMI)

    if kind == "mmm":
        import midilm.tokenization.mmm
    else:
        import midilm.tokenization.remi  # noqa: F401 - MidiTok, for BPE training


def assemble(parts: list[Part], output: Path, progress: bool) -> dict[str, Any]:
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

    bar = progress_bar(progress, total=total, desc="check")
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
    bar = progress_bar(progress, total=total, desc="write")
    n = len(parts)
    try:
        with (
            atomic_path(output / REJECTED_FILE) as rejected_tmp,
            rejected_tmp.open("w", encoding="utf-8", errors=JSON_TEXT) as rejected,
            atomic_path(output / PIECES_FILE) as pieces_tmp,
            pieces_tmp.open("w", encoding="utf-8", errors=JSON_TEXT) as pieces,
        ):
            for index, item, _, path in walk_records(parts):
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
                for name in _COUNTED:
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

    def __init__(self, config: PrepareConfig, scan: _Scan, parts: list[Part]) -> None:
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

    def __init__(self, parts: list[Part], scan: _Scan) -> None:
        self._parts = parts
        self._scan = scan

    def __len__(self) -> int:
        return self._scan.train_sequences

    def __iter__(self) -> Iterator[np.ndarray]:
        n = len(self._parts)
        for index, item, _, path in walk_records(self._parts):
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
            "reinstrumented_sequences": stats["new_instruments"],
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
        "midilm_version": midilm_version(),
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


def midilm_version() -> str:
    from midilm import __version__

    return __version__
