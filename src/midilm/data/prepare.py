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

**Two phases**, one module each. Phase 1 turns each item into a *record*
(:mod:`midilm.data.work`), in parallel (:mod:`midilm.data.workers`), one item at a time per
worker (:mod:`midilm.data.examples`): load and validate the file, hash its notes
(:mod:`midilm.data.split`), assign its split, and tokenize all its examples with settings
that do not depend on the rest of the corpus, augmented as :mod:`midilm.data.augment` says.
Phase 2 (:mod:`midilm.data.assemble`) reads the records in the sorted order of the items,
drops exact duplicates, fits what must come from the training split alone (MMM's density
bins, REMI's BPE) and writes the dataset. This module checks the inputs and the output
folder, and runs the two; the settings are :class:`PrepareConfig`
(:mod:`midilm.data.prepare_config`).

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

Valid and test pieces are not transposed nor given other instruments (evaluation measures
music as written); their windows are shuffled and infilled like training windows, so that
validation loss measures the same task. It knows nothing about models or training.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from midilm.data.assemble import (
    JSON_TEXT,
    PIECES_FILE,
    RAW,
    REJECTED_FILE,
    STATE_FILE,
    Part,
    assemble,
    check_parts,
    load_part,
    merged_inputs_key,
    midilm_version,
    preload,
    weighted_percentiles,
)
from midilm.data.prepare_config import REJECTION_REASONS, PrepareConfig, PrepareResult
from midilm.data.shards import MANIFEST, DatasetError, read_json_object
from midilm.data.sources import expand_sources, is_music21
from midilm.data.work import (
    ITEMS_FILE,
    PART_FILE,
    PART_FORMAT,
    PART_FORMAT_VERSION,
    RECORDS_DIR,
    item_key,
    record_is_valid,
    record_path,
    write_json_atomic,
)
from midilm.data.workers import cpu_count, progress_bar, run_items
from midilm.errors import ConfigError

__all__ = [
    "REJECTION_REASONS",
    "PrepareConfig",
    "PrepareResult",
    "merge",
    "prepare",
    "weighted_percentiles",
]

WORK_DIR = ".work"


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
        "format_version": PART_FORMAT_VERSION,
        "midilm_version": midilm_version(),
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
    processed = _run_phase1(
        work, config, items, owned, keys, workers, progress, assemble_next=shard is None
    )
    _collect_garbage(work, {keys[i] for i in owned})
    info["complete"] = True
    write_json_atomic(work / PART_FILE, info)
    if shard is not None:
        return PrepareResult(output, info, processed, False)
    manifest = assemble([Part(work, info)], output, progress)
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
    loaded = [load_part(Path(p)) for p in parts]
    loaded.sort(key=lambda p: p.info["shard"][0])
    check_parts(loaded)
    for part in loaded:
        if output.resolve() == part.work.resolve():
            raise DatasetError(f"{output}: the output must not be one of the parts")
    _check_dataset_dir(output)
    inputs_key = merged_inputs_key(loaded)
    settings_key = loaded[0].info["settings_key"]
    _check_conflict(output, settings_key, inputs_key, overwrite, has_work=False)
    if _state_matches(output, inputs_key):
        return PrepareResult(output, read_json_object(output / MANIFEST), 0, True)
    manifest = assemble(loaded, output, progress)
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
        return cpu_count()
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers: expected an integer ≥ 1, received {workers!r}")
    return workers


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


def _size(item: str) -> float:
    """How much work an item is likely to be, to order the tasks: a file's size; a music21
    work (a conversion, slow) first, an unreadable file (a quick rejection) last."""
    if is_music21(item):
        return float("inf")
    try:
        return Path(item).stat().st_size
    except OSError:
        return -1


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
        digest.update(json.dumps([item, key], ensure_ascii=False).encode("utf-8", RAW))
    return digest.hexdigest()


def _items_sha256(items: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for item in items:
        digest.update(item.encode("utf-8", "surrogateescape") + b"\n")
    return digest.hexdigest()


def _write_items(work: Path, items: list[str], keys: list[str | None]) -> None:
    from midilm.io_utils import atomic_path

    path = work / ITEMS_FILE
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8", errors=JSON_TEXT) as fh:
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
        if len(folder.name) != 1:  # the 256 folders of part format 1
            shutil.rmtree(folder)
            continue
        for path in folder.iterdir():
            if path.name.startswith(".") or path.stem not in keep:
                path.unlink(missing_ok=True)


def _run_phase1(
    work: Path,
    config: PrepareConfig,
    items: list[str],
    owned: list[int],
    keys: list[str | None],
    workers: int,
    progress: bool,
    *,
    assemble_next: bool,
) -> int:
    """Make the missing records of the owned items; returns how many were made. With
    ``assemble_next``, what phase 2 needs is loaded while the workers work."""
    tasks = []
    for i in owned:
        key = keys[i]
        assert key is not None
        path = record_path(work, key)
        if not record_is_valid(path):
            tasks.append((items[i], str(path)))
    done = len(owned) - len(tasks)
    if workers > 1:
        # The largest files first (the time an item takes grows with its size): what is
        # left at the end of the phase is then small, so no worker finishes long after the
        # others. Records are named by their item: the order never shows in the dataset.
        tasks.sort(key=lambda task: _size(task[0]), reverse=True)
    bar = progress_bar(progress, total=len(owned), initial=done, desc="prepare")
    try:
        meanwhile = (lambda: preload(config.tokenizer)) if assemble_next else None
        run_items(tasks, config, workers, bar.update, meanwhile)
    finally:
        bar.close()
    return len(tasks)
