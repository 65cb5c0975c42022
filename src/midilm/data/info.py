"""A dataset's manifest as text people read (``midilm dataset-info``), and a check that its
shards are the ones the manifest describes."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from midilm.data.shards import SPLITS, offsets_path, shards_digest, tokens_path

__all__ = ["format_counts", "format_manifest", "verify_shards"]


def _count(value: int) -> str:
    """``2043300`` → ``"2.04M"``; small numbers as they are."""
    for threshold, size, suffix in ((1e9, 1e9, "G"), (1e6, 1e6, "M"), (1e4, 1e3, "k")):
        if value >= threshold:
            return f"{value / size:.3g}{suffix}"
    return str(value)


def _reasons(reasons: dict[str, int]) -> str:
    return ", ".join(f"{count} {reason}" for reason, count in reasons.items())


def format_counts(manifest: dict[str, Any]) -> str:
    """One line: files accepted and left out, and what each split holds."""
    counts = manifest["counts"]
    parts = [f"{counts['accepted']} of {counts['files_seen']} files accepted"]
    left_out = []
    if counts["rejected"]:
        left_out.append(f"{counts['rejected']} rejected: {_reasons(counts['rejected_by_reason'])}")
    if counts["duplicates"]:
        plural = "s" if counts["duplicates"] != 1 else ""
        left_out.append(f"{counts['duplicates']} duplicate{plural}")
    if left_out:
        parts[0] += f" ({'; '.join(left_out)})"
    splits = manifest["splits"]
    parts.append(
        ", ".join(
            f"{split} {_count(splits[split]['sequences'])} sequences / "
            f"{_count(splits[split]['tokens'])} tokens"
            for split in SPLITS
        )
    )
    return "; ".join(parts)


def format_manifest(manifest: dict[str, Any], directory: str | Path | None = None) -> str:
    """The manifest as an aligned, readable summary."""
    settings = manifest["settings"]
    tokenizer = manifest["tokenizer"]
    counts = manifest["counts"]
    config = tokenizer["config"]
    lines = []
    title = f"{directory}: " if directory is not None else ""
    lines.append(
        f"{title}midilm dataset (format {manifest['format_version']}, made by midilm "
        f"{manifest['midilm_version']})"
    )

    def row(label: str, text: str) -> None:
        lines.append(f"  {label:<12}{text}")

    kind = tokenizer["kind"]
    vocab = f"{manifest['vocab_size']} ids ({manifest['token_dtype']})"
    if kind == "mmm":
        meters = ", ".join(config.get("meters") or ())
        row(
            "tokenizer",
            f"MMM text, {vocab}; {config['bars_per_window']}-bar windows every "
            f"{settings['hop']} bars, {config['steps_per_quarter']} steps a quarter, "
            f"meters {meters}",
        )
        edges = " ".join(f"{e:g}" for e in manifest.get("density_edges") or ())
        row("density", f"{config['density_bins']} bins, edges {edges} (from train)")
    else:
        bpe = manifest.get("bpe") or {}
        row(
            "tokenizer",
            f"REMI + BPE, {vocab}, {bpe.get('base_vocab_size', '?')} base tokens (BPE "
            f"learned on train; {settings['vocab_size']} asked)",
        )
        row("sequences", f"at most {settings['max_seq_len']} ids with BOS and EOS, cut at bars")
    special = manifest["special_ids"]
    row("special ids", ", ".join(f"{k} {v}" for k, v in special.items() if v is not None))
    sources = manifest["sources"]
    row("sources", f"{' '.join(sources['given'])} ({sources['items']} items)")
    duplicates = f"{counts['duplicates']} duplicate{'s' if counts['duplicates'] != 1 else ''}"
    lines.append(
        f"  {'files':<12}{counts['files_seen']} seen: {counts['accepted']} accepted, "
        f"{counts['rejected']} rejected, {duplicates}"
    )
    for reason, count in counts["rejected_by_reason"].items():
        row("", f"{count:>6} {reason}")
    extra = []
    if counts.get("variants_dropped_out_of_range"):
        extra.append(f"{counts['variants_dropped_out_of_range']} transpositions out of 0–127")
    if counts.get("sequences_dropped_too_long"):
        extra.append(
            f"{counts['sequences_dropped_too_long']} windows over {settings['max_seq_len']} ids"
        )
    if extra:
        row("dropped", "; ".join(extra))
    if counts.get("sequences_cut_at_bar_lines"):
        inside = (manifest.get("bpe") or {}).get("cut_inside_bar", 0)
        text = f"{counts['sequences_cut_at_bar_lines']} cuts at bar lines"
        row("cut", text + (f", {inside} inside a bar longer than a sequence" if inside else ""))
    transpose = settings["transpose"]
    augment = [
        "no transposition"
        if transpose == [0, 0]
        else f"transposed {transpose[0]:+d}…{transpose[1]:+d} (train only)"
    ]
    if kind == "mmm":
        if settings["infill_share"]:
            augment.append(
                f"{settings['infill_share']:.0%} infilling (1–{settings['infill_bars']} cells)"
            )
        if settings["shuffle_tracks"]:
            augment.append("tracks shuffled")
    row("examples", f"{', '.join(augment)}; seed {settings['seed']}")
    ratios = "/".join(f"{r:g}" for r in settings["split_ratios"])
    header = f"{'pieces':>8}{'sequences':>12}{'tokens':>14}"
    lines.append(f"  {'splits':<12}{header}   (ratios {ratios})")
    for split in SPLITS:
        s = manifest["splits"][split]
        lines.append(f"  {split:>10}  {s['pieces']:>8}{s['sequences']:>12}{s['tokens']:>14}")
    row("digest", manifest["digest"])
    return "\n".join(lines)


def _file_sha256(path: Path) -> tuple[str, str, int]:
    """SHA-256 of a 1-D ``.npy`` file's data (as the writer hashed it), its dtype name and
    its length, reading it in blocks."""
    array = np.load(path, mmap_mode="r")
    digest = hashlib.sha256()
    step = max(1, (1 << 22) // max(array.dtype.itemsize, 1))
    for start in range(0, len(array), step):
        digest.update(np.ascontiguousarray(array[start : start + step]).tobytes())
    return digest.hexdigest(), array.dtype.name, len(array)


def verify_shards(directory: str | Path, manifest: dict[str, Any]) -> list[str]:
    """Problems found comparing the shard files with the manifest (empty: all good)."""
    directory = Path(directory)
    problems = []
    found = {}
    for split in SPLITS:
        expected = manifest["splits"][split]
        try:
            tokens_sha, dtype, length = _file_sha256(tokens_path(directory, split))
            offsets_sha, _, _ = _file_sha256(offsets_path(directory, split))
        except (OSError, ValueError) as err:
            problems.append(f"{split}: unreadable shard ({err})")
            continue
        found[split] = {"dtype": dtype, "tokens_sha256": tokens_sha, "offsets_sha256": offsets_sha}
        if length != expected["tokens"]:
            problems.append(f"{split}: {length} tokens, the manifest says {expected['tokens']}")
        for key, value in found[split].items():
            if value != expected[key]:
                problems.append(f"{split}: {key} differs from the manifest")
    if not problems and shards_digest(found) != manifest.get("digest"):
        problems.append("the digest differs from the manifest")
    return problems
