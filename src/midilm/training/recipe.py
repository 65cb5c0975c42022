"""The training recipe: every setting of a training run that is not the model's shape.

The defaults are the seed's recipe (the BPE paper's Maestro-REMI-bpe20k run): Adam(W) with
lr 1e-4, betas (0.9, 0.999), eps 1e-8; a batch of 64 sequences; a cosine-with-restarts
schedule after a warm-up of 30 % of the steps; seed 444; mixed precision chosen for the
machine (see :mod:`midilm.training.precision`); 100k steps.

``batch_size`` is the *effective* (global) batch: what one optimizer step sees, whatever the
number of processes. Each process runs micro-batches of ``micro_batch_size`` sequences and
accumulates gradients over ``batch_size / (micro_batch_size × world_size)`` of them, so the
same recipe gives the same optimization on one CPU or on many GPUs.

A recipe is saved in every checkpoint and in the model directory (``midilm.json``,
``"training"``); ``--resume`` reads it back, so a resumed run needs no options repeated.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Literal

from midilm.config import FrozenConfig
from midilm.errors import ConfigError

__all__ = ["RESUMABLE_CHANGES", "Precision", "TrainingRecipe", "recipe_fields"]

Precision = Literal["auto", "fp32", "bf16", "fp16"]

RESUMABLE_CHANGES = frozenset(
    {
        "micro_batch_size",  # same effective batch: the same sums, in other chunks
        "eval_batch_size",
        "eval_every",
        "eval_samples",
        "save_every",
        "keep_checkpoints",
        "log_every",
        "num_workers",
        "early_stopping_patience",
        "early_stopping_threshold",
        "precision",  # a run moved to another machine may need another one
        "deterministic",
        "compile",
    }
)
"""Recipe fields a resumed run may change: none of them changes what the optimizer sees."""


@dataclass(frozen=True)
class TrainingRecipe(FrozenConfig):
    """Settings of a training run (the seed's recipe by default). Counts are optimizer steps.

    ``micro_batch_size=None`` picks the largest micro-batch that divides the per-process batch
    and fits in memory by an estimate (see :func:`midilm.training.run.auto_micro_batch`).
    ``seq_len=None`` means the preset's context length. ``dataset_mode=None`` reads MMM
    datasets window by window and REMI ones packed (see :class:`midilm.data.TokenDataset`).
    ``eval_every=0`` / ``save_every=0`` turn periodic evaluation / checkpoints off;
    ``eval_samples`` caps the valid sequences a periodic evaluation reads (``None``: all).
    ``early_stopping_patience`` (``None``: off) stops after that many evaluations without an
    improvement of the valid loss by more than ``early_stopping_threshold``; the saved model
    is then the best checkpoint's, so ``save_every`` must be a multiple of ``eval_every``.
    """

    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    batch_size: int = 64
    micro_batch_size: int | None = None
    eval_batch_size: int | None = None
    max_steps: int = 100_000
    warmup_ratio: float = 0.3
    scheduler: Literal["cosine_with_restarts", "cosine", "linear", "constant_with_warmup"] = (
        "cosine_with_restarts"
    )
    num_cycles: int = 1
    seed: int = 444
    precision: Precision = "auto"
    seq_len: int | None = None
    dataset_mode: Literal["sequences", "packed", "random"] | None = None
    eval_every: int = 1000
    eval_samples: int | None = None
    save_every: int = 1000
    keep_checkpoints: int = 3
    early_stopping_patience: int | None = None
    early_stopping_threshold: float = 0.0
    log_every: int = 50
    num_workers: int = 0
    optimizer: Literal["adamw_torch_fused", "adamw_torch"] = "adamw_torch_fused"
    deterministic: bool = False
    compile: bool = False

    def _validate(self) -> None:
        def fail(name: str, rule: str) -> None:
            raise ConfigError(
                f"TrainingRecipe.{name} must be {rule}, received {getattr(self, name)!r}"
            )

        if not self.lr > 0:
            fail("lr", "> 0")
        if not all(0.0 <= b < 1.0 for b in self.betas):
            fail("betas", "two numbers in [0, 1)")
        if not self.eps > 0:
            fail("eps", "> 0")
        if self.weight_decay < 0:
            fail("weight_decay", "≥ 0")
        if self.max_grad_norm < 0:
            fail("max_grad_norm", "≥ 0 (0: no clipping)")
        for name in ("batch_size", "max_steps", "num_cycles", "keep_checkpoints", "log_every"):
            if getattr(self, name) < 1:
                fail(name, "≥ 1")
        for name in ("micro_batch_size", "eval_batch_size", "eval_samples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                fail(name, "≥ 1 or None")
        if self.micro_batch_size is not None and self.batch_size % self.micro_batch_size:
            fail("micro_batch_size", f"a divisor of batch_size ({self.batch_size})")
        if not 0.0 <= self.warmup_ratio < 1.0:
            fail("warmup_ratio", "in [0, 1)")
        if self.seq_len is not None and self.seq_len < 2:
            fail("seq_len", "≥ 2 or None")
        for name in ("eval_every", "save_every", "num_workers"):
            if getattr(self, name) < 0:
                fail(name, "≥ 0")
        if self.early_stopping_patience is not None:
            if self.early_stopping_patience < 1:
                fail("early_stopping_patience", "≥ 1 or None")
            if self.eval_every == 0:
                raise ConfigError(
                    "TrainingRecipe.early_stopping_patience needs evaluations: "
                    "eval_every must be ≥ 1, received 0"
                )
            if self.save_every == 0 or self.save_every % self.eval_every:
                raise ConfigError(
                    "TrainingRecipe.save_every must be a multiple of eval_every with early "
                    "stopping (the best evaluated weights are kept from a checkpoint), "
                    f"received save_every={self.save_every}, eval_every={self.eval_every}"
                )
        if self.early_stopping_threshold < 0:
            fail("early_stopping_threshold", "≥ 0")

    @property
    def warmup_steps(self) -> int:
        return round(self.warmup_ratio * self.max_steps)

    def accumulation_steps(self, micro_batch_size: int, world_size: int = 1) -> int:
        """Micro-batches each process accumulates per optimizer step; a clear error when the
        effective batch does not split evenly over the processes."""
        per_step = micro_batch_size * world_size
        if self.batch_size % per_step:
            raise ConfigError(
                f"batch_size {self.batch_size} does not split into micro-batches of "
                f"{micro_batch_size} on {world_size} process(es): it must be a multiple of "
                f"{per_step}"
            )
        return self.batch_size // per_step

    def differences(self, other: TrainingRecipe) -> dict[str, tuple[Any, Any]]:
        """``{field: (self's value, other's value)}`` for every field that differs."""
        return {
            f.name: (getattr(self, f.name), getattr(other, f.name))
            for f in fields(self)
            if getattr(self, f.name) != getattr(other, f.name)
        }


def recipe_fields() -> frozenset[str]:
    """Names of the recipe's settings (the CLI's ``--set`` keys besides the preset's)."""
    return frozenset(f.name for f in fields(TrainingRecipe))
