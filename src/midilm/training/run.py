"""One training run: a prepared dataset in, a model directory out.

:func:`train` builds a GPT-2 of a preset's shape for the dataset's vocabulary and trains it
with the Hugging Face ``Trainer`` (:class:`~midilm.training.trainer.MidilmTrainer`), which
brings gradient accumulation, autocast, DDP under ``torchrun``, optimizer / scheduler / RNG /
data-position checkpoints and TensorBoard. midilm adds the recipe, the choice of precision
and micro-batch, atomic checkpoints, metrics that compare across tokenizations and the model
directory at the end. The same call runs in one process or in each process of ``torchrun``.

Layout of ``output_dir``::

    config.json  model.safetensors  generation_config.json  tokenizer.json  midilm.json
    README.md                          the model (midilm.model.directory.save_model)
    checkpoints/checkpoint-<step>/     the last ``keep_checkpoints`` checkpoints
    logs/                              TensorBoard event files

This module knows nothing about the command line; :mod:`midilm.cli.train` wraps it.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from midilm.data.shards import read_manifest
from midilm.errors import ConfigError
from midilm.io_utils import fsync_dir
from midilm.model.presets import ModelPreset, get_preset
from midilm.training.checkpoints import (
    CHECKPOINTS_DIR,
    STAGING_DIR,
    latest_checkpoint,
    list_checkpoints,
    read_run_info,
)
from midilm.training.recipe import RESUMABLE_CHANGES, TrainingRecipe, recipe_fields

if TYPE_CHECKING:
    from transformers import TrainerCallback

    from midilm.tokenization.base import Tokenizer

__all__ = [
    "TrainResult",
    "auto_micro_batch",
    "estimate_training_bytes",
    "resolve_settings",
    "train",
]

DEFAULT_PRESET = "small"
LOGS_DIR = "logs"
SAVING_DIR = ".saving"


@dataclass(frozen=True)
class TrainResult:
    """What a finished run did. ``metrics`` are the final valid-split metrics (``loss``,
    ``perplexity``, ``bits_per_note``, ``bits_per_token``; empty without a valid split);
    ``tokens_per_second`` counts non-padding tokens of all processes, evaluations and
    checkpoints left out."""

    output_dir: Path
    global_step: int
    metrics: dict[str, float]
    recipe: TrainingRecipe
    preset: ModelPreset
    precision: str
    world_size: int
    micro_batch_size: int
    accumulation_steps: int
    resumed_from: Path | None = None
    stopped_early: bool = False
    tokens_per_second: float = math.nan
    train_loss: float | None = None
    log_history: list[dict[str, Any]] = field(default_factory=list, repr=False)


# ---------------------------------------------------------------------- settings
def resolve_settings(
    preset: str | ModelPreset | None,
    recipe: TrainingRecipe | None,
    overrides: dict[str, Any],
    run_info: dict[str, Any] | None = None,
) -> tuple[ModelPreset, TrainingRecipe]:
    """The preset and recipe of a run: arguments, then ``overrides`` (any recipe or preset
    field). When resuming, ``run_info`` (the checkpoint's) is the base, and a change that
    would alter the optimization (anything but :data:`RESUMABLE_CHANGES`) is an error."""
    preset_names = {f for f in ModelPreset.__dataclass_fields__ if f != "name"}
    known = recipe_fields() | preset_names
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(
            f"unknown setting(s) {', '.join(unknown)}; recipe settings: "
            f"{', '.join(sorted(recipe_fields()))}; "
            f"model settings: {', '.join(sorted(preset_names))}"
        )
    preset_changes = {k: v for k, v in overrides.items() if k in preset_names}
    recipe_changes = {k: v for k, v in overrides.items() if k in recipe_fields()}

    saved_preset = saved_recipe = None
    if run_info is not None:
        saved_preset = ModelPreset.from_dict(run_info["preset"])
        saved_recipe = TrainingRecipe.from_dict(run_info["recipe"])

    if isinstance(preset, ModelPreset):
        base_preset = preset
    elif preset is not None:
        base_preset = get_preset(preset)
    else:
        base_preset = saved_preset or get_preset(DEFAULT_PRESET)
    final_preset = base_preset.replace(**preset_changes) if preset_changes else base_preset

    base_recipe = recipe if recipe is not None else (saved_recipe or TrainingRecipe())
    if not isinstance(base_recipe, TrainingRecipe):
        raise TypeError(f"recipe: expected a TrainingRecipe, received {type(base_recipe).__name__}")
    final_recipe = base_recipe.replace(**recipe_changes) if recipe_changes else base_recipe

    if saved_preset is not None and saved_recipe is not None:
        shape = {
            k: (v, getattr(final_preset, k))
            for k, v in saved_preset.to_dict().items()
            if k not in ("name", "description") and v != getattr(final_preset, k)
        }
        changed = {
            k: v for k, v in saved_recipe.differences(final_recipe).items()
            if k not in RESUMABLE_CHANGES
        }  # fmt: skip
        changed.update(shape)
        if changed:
            listing = "; ".join(
                f"{k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in changed.items()
            )
            raise ConfigError(
                f"cannot resume with settings that change the training: {listing} "
                "(resume with the run's own settings, or train into a new directory)"
            )
    return final_preset, final_recipe


# ---------------------------------------------------------------------- memory
def estimate_training_bytes(
    preset: ModelPreset, vocab_size: int, seq_len: int, micro_batch: int, precision: str
) -> int:
    """A deliberately generous estimate of one process's training memory: weights, grads
    and AdamW state (fp32), stored activations (Korthikanti et al. 2022: ``s·b·h·(34 +
    5·a·s/h)`` bytes per layer in 16 bits, twice that in fp32) and the logits with their
    softmax and gradient."""
    d, layers, heads, s, b = preset.n_embd, preset.n_layer, preset.n_head, seq_len, micro_batch
    inner = preset.n_inner or 4 * d
    params = vocab_size * d + preset.n_positions * d + layers * (4 * d * d + 2 * d * inner)
    states = params * (4 + 4 + 8)
    scale = 1.0 if precision in ("bf16", "fp16") else 2.0
    activations = layers * s * b * (34 * d + 5 * heads * s) * scale
    logits = s * b * vocab_size * (12 + (2 if precision in ("bf16", "fp16") else 0))
    return int(states + activations + logits)


def _memory_budget(device_type: str, local_world_size: int) -> int:
    if device_type == "cuda":
        import torch

        _, total = torch.cuda.mem_get_info()
        return int(total * 0.8)
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        available = 8 << 30
    return int(available * 0.6) // max(local_world_size, 1)


def auto_micro_batch(
    per_process_batch: int,
    preset: ModelPreset,
    vocab_size: int,
    seq_len: int,
    precision: str,
    budget_bytes: int,
) -> int:
    """The largest divisor of ``per_process_batch`` whose estimated training memory fits
    ``budget_bytes`` (at least 1): gradients accumulate over the rest."""
    divisors = [m for m in range(per_process_batch, 0, -1) if per_process_batch % m == 0]
    for micro in divisors:
        if estimate_training_bytes(preset, vocab_size, seq_len, micro, precision) <= budget_bytes:
            return micro
    return 1


# ---------------------------------------------------------------------- the run
def train(
    dataset_dir: str | Path,
    output_dir: str | Path,
    *,
    preset: str | ModelPreset | None = None,
    recipe: TrainingRecipe | None = None,
    resume: bool = False,
    callbacks: Sequence[TrainerCallback] = (),
    quiet: bool = False,
    **overrides: Any,
) -> TrainResult:
    """Train a GPT-2 on a prepared dataset and save it as a model directory.

    ``preset`` (default ``"small"``) fixes the shape; ``recipe`` (default: the seed's) and
    ``overrides`` (any recipe or preset field: ``max_steps=200``, ``n_layer=2``) the rest.
    With ``resume=True`` the run continues from the latest complete checkpoint in
    ``output_dir``, whose settings are then the defaults; with no checkpoint there it starts
    at step 0. Under ``torchrun`` every process calls this; process 0 writes the model
    directory. Progress goes to stderr unless ``quiet``; ``callbacks`` are extra Hugging
    Face ``TrainerCallback`` objects.
    """

    from midilm.tokenization.base import load_tokenizer
    from midilm.training.precision import resolve_precision

    dataset_dir, output_dir = Path(dataset_dir), Path(output_dir)
    manifest = read_manifest(dataset_dir)
    rank = int(os.environ.get("RANK", "0"))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))

    def say(line: str) -> None:
        if not quiet and rank == 0:
            sys.stderr.write(line + "\n")

    checkpoint = _checkpoint_to_resume(output_dir, resume, say)
    run_info = read_run_info(checkpoint) if checkpoint is not None else None
    model_preset, recipe = resolve_settings(preset, recipe, overrides, run_info)
    digest = manifest.get("digest")
    if run_info is not None and run_info.get("dataset", {}).get("digest") != digest:
        raise ConfigError(
            f"{dataset_dir}: not the dataset the checkpoint was trained on (digest "
            f"{run_info.get('dataset', {}).get('digest')!r}, this one {digest!r})"
        )

    tokenizer = load_tokenizer(dataset_dir)
    seq_len = recipe.seq_len or model_preset.n_positions
    if seq_len > model_preset.n_positions:
        raise ConfigError(
            f"seq_len {seq_len} exceeds the preset's context of {model_preset.n_positions} "
            "positions (raise n_positions or lower seq_len)"
        )
    train_set, eval_set = _datasets(dataset_dir, recipe, seq_len)

    device_type = _device_type()
    precision = resolve_precision(recipe.precision, device_type)
    vocab_size = int(manifest.get("vocab_size", tokenizer.vocab_size))
    micro, accumulation = _batch_split(
        recipe, world_size, model_preset, vocab_size, _longest(train_set), precision, device_type
    )
    ckpt_root = output_dir / CHECKPOINTS_DIR
    if rank == 0:
        shutil.rmtree(ckpt_root / STAGING_DIR, ignore_errors=True)
        shutil.rmtree(output_dir / SAVING_DIR, ignore_errors=True)
    args = _training_arguments(
        recipe, ckpt_root, micro, accumulation, precision, device_type, world_size, eval_set
    )
    model = _new_model(model_preset, vocab_size, manifest.get("special_ids", {}), recipe.seed)
    info = {
        "preset": model_preset.to_dict(),
        "recipe": recipe.to_dict(),
        # The settings tell a sampler what the model saw (e.g. infill examples or not).
        "dataset": {
            "path": str(dataset_dir.resolve()),
            "digest": digest,
            "settings": manifest.get("settings", {}),
        },
    }
    trainer = _trainer(
        model, args, train_set, eval_set, tokenizer, recipe, info, output_dir, callbacks, quiet
    )
    say(
        f"training {model_preset.name} ({model.num_parameters():,} parameters) on "
        f"{dataset_dir}: {recipe.max_steps} steps of {recipe.batch_size} sequences "
        f"({world_size} process(es) × {micro} × {accumulation} accumulated), "
        f"seq_len {seq_len}, {precision} on {device_type}"
    )
    if checkpoint is not None:
        say(f"resuming from {checkpoint}")
    with _deterministic(recipe.deterministic):
        output = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        trainer.flush_throughput()
        metrics = _final_metrics(trainer, eval_set is not None)

    global_step = trainer.state.global_step
    result = TrainResult(
        output_dir=output_dir,
        global_step=global_step,
        metrics=metrics,
        recipe=recipe,
        preset=model_preset,
        precision=precision,
        world_size=world_size,
        micro_batch_size=micro,
        accumulation_steps=accumulation,
        resumed_from=checkpoint,
        stopped_early=global_step < recipe.max_steps,
        tokens_per_second=(
            trainer.tokens_seen / trainer.training_seconds if trainer.training_seconds else math.nan
        ),
        train_loss=output.metrics.get("train_loss"),
        log_history=list(trainer.state.log_history),
    )
    if trainer.is_world_process_zero():
        model.config.use_cache = True
        _install_model(output_dir, model, tokenizer, _model_info(result, info))
    trainer.accelerator.wait_for_everyone()
    say(f"saved {output_dir} (step {global_step})")
    return result


@contextlib.contextmanager
def _deterministic(enabled: bool) -> Iterator[None]:
    """Torch's deterministic algorithms for the duration (then as they were): what makes a
    resumed GPU run end at the same weights bit for bit. CPU kernels are deterministic at a
    fixed thread count anyway."""
    if not enabled:
        yield
        return
    import torch

    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[1:]


def _checkpoint_to_resume(
    output_dir: Path, resume: bool, say: Callable[[str], None]
) -> Path | None:
    """The checkpoint to continue from; checks that a new run does not mix with an old one."""
    has_model = (output_dir / "model.safetensors").is_file()
    ckpt_root = output_dir / CHECKPOINTS_DIR
    if not resume:
        if has_model or list_checkpoints(ckpt_root):
            what = "a trained model" if has_model else "checkpoints of an earlier run"
            raise ConfigError(
                f"{output_dir} holds {what}: resume it (--resume), or train into a new directory"
            )
        return None
    checkpoint = latest_checkpoint(ckpt_root)
    if checkpoint is None:
        if has_model:
            raise ConfigError(
                f"{output_dir}: a trained model and no checkpoint to resume from; "
                "train into a new directory"
            )
        say(f"no complete checkpoint in {ckpt_root}: starting at step 0")
    return checkpoint


def _datasets(dataset_dir: Path, recipe: TrainingRecipe, seq_len: int) -> tuple[Any, Any]:
    """The training set and the (possibly capped) valid set, or None without a valid split."""
    import torch

    from midilm.data.dataset import TokenDataset

    train_set = TokenDataset(dataset_dir, "train", seq_len, recipe.dataset_mode, seed=recipe.seed)
    if not (dataset_dir / "valid.tokens.npy").is_file():
        if recipe.eval_every or recipe.early_stopping_patience:
            raise ConfigError(
                f"{dataset_dir}: no 'valid' split to evaluate on; set eval_every=0 to train "
                "without evaluation"
            )
        return train_set, None
    # Random crops are for training; evaluation reads every valid token once.
    eval_mode = "packed" if train_set.mode == "random" else train_set.mode
    eval_set: Any = TokenDataset(dataset_dir, "valid", seq_len, eval_mode, seed=recipe.seed)
    if recipe.eval_samples is not None and recipe.eval_samples < len(eval_set):
        eval_set = torch.utils.data.Subset(eval_set, range(recipe.eval_samples))
    return train_set, eval_set


def _longest(train_set: Any, chunk: int = 1 << 20) -> int:
    """The longest training item (what the memory estimate must allow for), reading the
    memory-mapped offsets a chunk at a time and stopping at ``seq_len``."""
    import numpy as np

    if train_set.mode != "sequences":
        return train_set.seq_len
    offsets, longest = train_set.offsets, 1
    for lo in range(0, len(offsets) - 1, chunk):
        longest = max(longest, int(np.diff(np.asarray(offsets[lo : lo + chunk + 1])).max()))
        if longest >= train_set.seq_len:
            break
    return min(train_set.seq_len, longest)


def _device_type() -> str:
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def _batch_split(
    recipe: TrainingRecipe,
    world_size: int,
    preset: ModelPreset,
    vocab_size: int,
    longest: int,
    precision: str,
    device_type: str,
) -> tuple[int, int]:
    """``(micro_batch_size, accumulation_steps)`` per process for the effective batch."""
    if recipe.batch_size % world_size:
        raise ConfigError(
            f"batch_size {recipe.batch_size} does not split over {world_size} processes: "
            f"it must be a multiple of {world_size}"
        )
    micro = recipe.micro_batch_size
    if micro is None:
        local = int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size)))
        budget = _memory_budget(device_type, local)
        per_process = recipe.batch_size // world_size
        micro = auto_micro_batch(per_process, preset, vocab_size, longest, precision, budget)
    return micro, recipe.accumulation_steps(micro, world_size)


def _training_arguments(
    recipe: TrainingRecipe,
    ckpt_root: Path,
    micro: int,
    accumulation: int,
    precision: str,
    device_type: str,
    world_size: int,
    eval_set: Any,
) -> Any:
    """The recipe in Hugging Face terms."""
    from transformers import TrainingArguments

    evaluate = bool(recipe.eval_every) and eval_set is not None
    return TrainingArguments(
        output_dir=str(ckpt_root),
        max_steps=recipe.max_steps,
        per_device_train_batch_size=micro,
        per_device_eval_batch_size=recipe.eval_batch_size or micro,
        gradient_accumulation_steps=accumulation,
        learning_rate=recipe.lr,
        adam_beta1=recipe.betas[0],
        adam_beta2=recipe.betas[1],
        adam_epsilon=recipe.eps,
        weight_decay=recipe.weight_decay,
        max_grad_norm=recipe.max_grad_norm,
        optim=recipe.optimizer,
        lr_scheduler_type=recipe.scheduler,
        lr_scheduler_kwargs=(
            {"num_cycles": recipe.num_cycles} if recipe.scheduler == "cosine_with_restarts" else {}
        ),
        warmup_steps=recipe.warmup_steps,
        seed=recipe.seed,
        data_seed=recipe.seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=device_type == "cpu",
        ddp_backend="gloo" if device_type == "cpu" and world_size > 1 else None,
        ddp_find_unused_parameters=False,
        torch_compile=recipe.compile,
        eval_strategy="steps" if evaluate else "no",
        eval_steps=recipe.eval_every if evaluate else None,
        save_strategy="steps" if recipe.save_every else "no",
        save_steps=recipe.save_every or 500,
        save_total_limit=None,  # MidilmTrainer prunes, after its atomic rename
        load_best_model_at_end=recipe.early_stopping_patience is not None,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        restore_callback_states_from_checkpoint=True,
        logging_strategy="steps",
        logging_steps=recipe.log_every,
        logging_nan_inf_filter=False,  # show a NaN loss, and no host sync per micro-batch
        report_to="none",  # TensorBoard is added by hand, to write into MODEL_DIR/logs
        disable_tqdm=True,
        dataloader_num_workers=recipe.num_workers,
        dataloader_pin_memory=device_type == "cuda",
        remove_unused_columns=False,
        label_names=["labels"],
        prediction_loss_only=False,
        batch_eval_metrics=True,  # metrics summed batch by batch: no split-sized buffers
    )


def _new_model(preset: ModelPreset, vocab_size: int, special: dict[str, Any], seed: int) -> Any:
    """A freshly initialized GPT-2 (the same weights for the same seed, in every process)."""
    import transformers

    transformers.set_seed(seed)
    config = preset.gpt2_config(
        vocab_size, pad_id=special.get("pad"), bos_id=special.get("bos"), eos_id=special.get("eos")
    )
    config.use_cache = False  # training needs no KV cache; switched back on before saving
    model = transformers.GPT2LMHeadModel(config)
    model.loss_type = "ForCausalLM"  # GPT-2's class name does not say it; silences a warning
    return model


def _trainer(
    model: Any,
    args: Any,
    train_set: Any,
    eval_set: Any,
    tokenizer: Tokenizer,
    recipe: TrainingRecipe,
    info: dict[str, Any],
    output_dir: Path,
    callbacks: Sequence[TrainerCallback],
    quiet: bool,
) -> Any:
    import torch
    from transformers import EarlyStoppingCallback
    from transformers.integrations import TensorBoardCallback
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from midilm.data.dataset import TokenCollator
    from midilm.training.callbacks import ConsoleProgress
    from midilm.training.metrics import StreamingMetrics, notes_per_token, sequence_nll_stats
    from midilm.training.trainer import MidilmTrainer

    notes = torch.as_tensor(notes_per_token(tokenizer))
    tensorboard = TensorBoardCallback()
    tensorboard.logging_dir = str(output_dir / LOGS_DIR)
    extra: list[Any] = [tensorboard]
    if not quiet:
        extra.append(ConsoleProgress())
    if recipe.early_stopping_patience is not None:
        extra.append(
            EarlyStoppingCallback(
                early_stopping_patience=recipe.early_stopping_patience,
                early_stopping_threshold=recipe.early_stopping_threshold,
            )
        )
    pad_id = model.config.pad_token_id
    trainer = MidilmTrainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        # Padding to a multiple of 64 bounds the distinct batch shapes (windows vary in
        # length): unbounded, CPU memory grew by gigabytes over a few hundred steps.
        data_collator=TokenCollator(0 if pad_id is None else pad_id, pad_to_multiple_of=64),
        compute_metrics=StreamingMetrics(),
        preprocess_logits_for_metrics=lambda logits, labels: sequence_nll_stats(
            logits, labels, notes
        ),
        callbacks=[*extra, *callbacks],
        run_info=info,
        keep_checkpoints=recipe.keep_checkpoints,
        global_batch=recipe.batch_size,
    )
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    return trainer


def _final_metrics(trainer: Any, has_eval: bool) -> dict[str, float]:
    """Valid metrics of the final weights: the last evaluation if it was of these weights,
    else a new one."""
    if not has_eval:
        return {}
    history = trainer.state.log_history
    last = next((h for h in reversed(history) if "eval_loss" in h), None)
    stale = last is None or last.get("step") != trainer.state.global_step
    if stale or trainer.args.load_best_model_at_end:
        last = trainer.evaluate()
    keys = ("loss", "perplexity", "bits_per_note", "bits_per_token")
    return {k: float(last[f"eval_{k}"]) for k in keys if f"eval_{k}" in last}


def _model_info(result: TrainResult, info: dict[str, Any]) -> dict[str, Any]:
    """The sections training adds to the model directory's ``midilm.json``."""
    return {
        "model": {"preset": result.preset.name, "preset_config": result.preset.to_dict()},
        "training": result.recipe.to_dict(),
        "training_run": {
            "steps": result.global_step,
            "precision": result.precision,
            "world_size": result.world_size,
            "micro_batch_size": result.micro_batch_size,
            "accumulation_steps": result.accumulation_steps,
            "stopped_early": result.stopped_early,
        },
        "dataset": info["dataset"],
        # midilm.json is strict JSON: a metric that is not finite is recorded as null.
        "metrics": {k: (v if math.isfinite(v) else None) for k, v in result.metrics.items()},
    }


def _install_model(
    output_dir: Path, model: Any, tokenizer: Tokenizer, info: dict[str, Any]
) -> None:
    """Write the model files into ``output_dir`` beside ``checkpoints/`` and ``logs/``.

    :func:`~midilm.model.directory.save_model` replaces a directory whole, which would take
    the run's checkpoints and logs with it; so the model is saved into ``.saving/`` first
    and its files are renamed into ``output_dir`` one by one, ``midilm.json`` and
    ``config.json`` last: until those two are in, the folder is not a loadable model (an
    interrupted install is finished by ``--resume``).
    """
    from midilm.model.directory import save_model

    staging = output_dir / SAVING_DIR
    shutil.rmtree(staging, ignore_errors=True)
    save_model(staging, model, tokenizer, info=info)
    last = ("midilm.json", "config.json")
    names = sorted(
        (p.name for p in staging.iterdir()), key=lambda n: last.index(n) + 1 if n in last else 0
    )
    for name in names:
        target = output_dir / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        (staging / name).replace(target)
    fsync_dir(output_dir)
    shutil.rmtree(staging, ignore_errors=True)
