"""``midilm train DATASET -o MODEL_DIR``: train a GPT-2 on a prepared dataset
(:func:`midilm.training.train`), resumable, and the same command under ``torchrun``."""

from __future__ import annotations

import json
from typing import Any

import click

from midilm.errors import ConfigError


def _parse_set(items: tuple[str, ...]) -> dict[str, Any]:
    """``("lr=3e-4", "betas=[0.9, 0.95]", "dataset_mode=packed")`` → settings (JSON values,
    or the text itself when it is not JSON)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE, received {item!r}")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def _fixed_shapes(dataset: str, overrides: dict[str, Any]) -> bool:
    """Whether every batch has the same shape (packed or random crops). Keeping freed
    memory pays only then: with MMM windows padded to each batch's longest, the sizes
    vary from step to step, and a heap that is never trimmed grew by gigabytes."""
    from midilm.data.shards import read_manifest

    kind = (read_manifest(dataset).get("tokenizer") or {}).get("kind")
    mode = overrides.get("dataset_mode") or ("sequences" if kind == "mmm" else "packed")
    return mode != "sequences"


@click.command()
@click.argument("dataset", metavar="DATASET")
@click.option(
    "-o",
    "--output",
    "output",
    required=True,
    metavar="MODEL_DIR",
    help="Model directory to write (checkpoints and logs go inside it).",
)
@click.option(
    "--preset",
    default=None,
    metavar="NAME",
    help="Model shape: mmm-gpt2, remi-gpt2, small (default), tiny.",
)
@click.option(
    "--max-steps",
    type=click.IntRange(min=1),
    default=None,
    help="Optimizer steps (default 100000).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=None,
    help="Effective batch in sequences, over all processes (default 64).",
)
@click.option(
    "--micro-batch-size",
    type=click.IntRange(min=1),
    default=None,
    help="Sequences per process per forward pass (default: the largest that fits; "
    "gradients accumulate over the rest).",
)
@click.option("--lr", type=float, default=None, help="Peak learning rate (default 1e-4).")
@click.option(
    "--precision",
    type=click.Choice(["auto", "fp32", "bf16", "fp16"]),
    default=None,
    help="auto (default): bf16 or fp16 on GPUs, bf16 on CPUs that have it, else fp32.",
)
@click.option(
    "--seq-len",
    type=click.IntRange(min=2),
    default=None,
    help="Tokens per training sequence (default: the preset's context).",
)
@click.option(
    "--eval-every",
    type=click.IntRange(min=0),
    default=None,
    help="Evaluate on the valid split every N steps (default 1000; 0: never).",
)
@click.option(
    "--save-every",
    type=click.IntRange(min=0),
    default=None,
    help="Write a checkpoint every N steps (default 1000; 0: never).",
)
@click.option(
    "--keep-checkpoints",
    type=click.IntRange(min=1),
    default=None,
    help="Checkpoints kept on disk (default 3).",
)
@click.option(
    "--early-stopping",
    "patience",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Stop after N evaluations without a better valid loss.",
)
@click.option("--seed", type=int, default=None, help="Random seed (default 444).")
@click.option(
    "--resume",
    is_flag=True,
    help="Continue from the latest complete checkpoint in MODEL_DIR, with its "
    "settings (start at step 0 if there is none).",
)
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="KEY=VALUE",
    help="Any recipe or preset setting, e.g. --set warmup_ratio=0.1 --set n_layer=4 "
    "(repeatable; values are JSON).",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress lines on stderr.")
def train(
    dataset: str,
    output: str,
    preset: str | None,
    max_steps: int | None,
    batch_size: int | None,
    micro_batch_size: int | None,
    lr: float | None,
    precision: str | None,
    seq_len: int | None,
    eval_every: int | None,
    save_every: int | None,
    keep_checkpoints: int | None,
    patience: int | None,
    seed: int | None,
    resume: bool,
    settings: tuple[str, ...],
    quiet: bool,
) -> None:
    """Train a GPT-2 on DATASET (a directory made by 'midilm prepare') into MODEL_DIR.

    The defaults are the seed's recipe: AdamW lr 1e-4, betas (0.9, 0.999), eps 1e-8,
    batch 64, cosine-with-restarts schedule with 30% warm-up, seed 444, automatic mixed
    precision. Progress goes to stderr, TensorBoard logs to MODEL_DIR/logs.

    After an interruption, run the same command with --resume: training continues from
    the last checkpoint with the same optimizer, schedule, random state and data position.
    For several processes or GPUs, run it under torchrun, e.g.
    'torchrun --nproc_per_node=4 -m midilm train DATASET -o MODEL_DIR'; the batch stays
    the effective batch of all processes together.
    """
    from pathlib import Path

    overrides = _parse_set(settings)
    options = {
        "max_steps": max_steps,
        "batch_size": batch_size,
        "micro_batch_size": micro_batch_size,
        "lr": lr,
        "precision": precision,
        "seq_len": seq_len,
        "eval_every": eval_every,
        "save_every": save_every,
        "keep_checkpoints": keep_checkpoints,
        "early_stopping_patience": patience,
        "seed": seed,
    }
    overrides.update({k: v for k, v in options.items() if v is not None})
    if not Path(dataset).is_dir():
        raise click.ClickException(f"{dataset}: no such dataset directory")

    from midilm.training.allocator import keep_freed_memory
    from midilm.training.run import train as run_training

    if _fixed_shapes(dataset, overrides):
        keep_freed_memory()  # this process only trains: keep freed memory for the next step

    try:
        result = run_training(
            dataset, output, preset=preset, resume=resume, quiet=quiet, **overrides
        )
    finally:
        _end_process_group()
    if result.world_size == 1 or _rank() == 0:
        parts = [f"{result.output_dir}: step {result.global_step}"]
        parts += [f"{k} {v:.4f}" for k, v in result.metrics.items()]
        if result.stopped_early:
            parts.append("stopped early")
        click.echo(" | ".join(parts))


def _rank() -> int:
    import os

    return int(os.environ.get("RANK", "0"))


def _end_process_group() -> None:
    """Leave torchrun's process group cleanly (torch warns at exit otherwise)."""
    import sys

    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
