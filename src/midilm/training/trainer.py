"""The Hugging Face ``Trainer``, with the three things midilm needs that it lacks.

1. **Atomic checkpoints.** transformers 5.x writes ``checkpoint-N/`` file by file, in place:
   a kill during a save leaves a folder that looks like a checkpoint and is not one (its
   ``trainer_state.json`` or ``optimizer.pt`` missing or cut short), and
   ``get_last_checkpoint`` would pick it. Here every process writes into
   ``.staging/checkpoint-N/``; after a barrier, process 0 flushes it to disk and renames it
   into place, then prunes old checkpoints down to ``keep_checkpoints``.
2. **Token-weighted evaluation.** The Trainer's ``eval_loss`` averages per-batch means, which
   overweights short, padded batches; ``eval_loss`` here is the mean NLL over every predicted
   token of the split, beside perplexity and bits per note (:mod:`.metrics`).
3. **Throughput in the logs.** Each training log carries ``tokens_per_second``: non-padding
   tokens of all processes per second of training, eval and checkpoint time left out.
   Tokens are counted on the device and read once per log, so counting costs no sync.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer

from midilm.io_utils import fsync_dir, fsync_tree
from midilm.model.directory import quiet_transformers
from midilm.training.checkpoints import RUN_INFO, STAGING_DIR, prune_checkpoints

__all__ = ["EpochPermutation", "MidilmTrainer"]


class EpochPermutation(torch.utils.data.Sampler[int]):
    """A seeded shuffle per epoch, cut to a whole number of global batches.

    Every optimizer step sees exactly ``global_batch`` sequences, the last step of an epoch
    included, and the order depends only on ``(seed, epoch)``: the same on every process
    (Accelerate hands process ``i`` every ``i``-th micro-batch), the same for any split of the
    global batch into processes × micro-batches × accumulation, and the same after a resume
    (the Trainer calls :meth:`set_epoch`). The sequences cut off differ from epoch to epoch.
    """

    def __init__(self, num_items: int, global_batch: int, seed: int) -> None:
        if num_items < global_batch:
            raise ValueError(
                f"the training split has {num_items} sequences, fewer than one batch "
                f"({global_batch}); lower batch_size"
            )
        self.num_items = num_items
        self.global_batch = global_batch
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_items // self.global_batch * self.global_batch

    def __iter__(self) -> Any:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.num_items, generator=generator)[: len(self)]
        return iter(order.tolist())


class MidilmTrainer(Trainer):
    """``Trainer`` with atomic checkpoints, token-weighted eval loss and tokens/s.

    With ``global_batch``, training batches come from :class:`EpochPermutation`.
    ``run_info`` (JSON-ready) is written into each checkpoint as ``midilm_run.json``;
    ``keep_checkpoints`` is how many complete checkpoints stay on disk.
    """

    def __init__(
        self,
        *args: Any,
        run_info: dict[str, Any] | None = None,
        keep_checkpoints: int | None = None,
        global_batch: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.run_info = run_info or {}
        self.keep_checkpoints = keep_checkpoints
        self.global_batch = global_batch
        self._staging_root: str | None = None
        self._tokens_local: torch.Tensor | None = None
        self._tokens_at_last_log = 0
        self._time_at_last_log: float | None = None
        self._paused_s = 0.0  # eval and checkpoint time since the last log
        self.tokens_seen = 0  # all processes, this session, up to the last log
        self.training_seconds = 0.0  # this session, eval and checkpoints left out

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if self.global_batch is None:
            return super()._get_train_sampler(train_dataset)
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        return EpochPermutation(len(dataset), self.global_batch, seed)

    # ------------------------------------------------------------------ throughput
    def training_step(self, model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        mask = inputs.get("attention_mask")
        count = mask.sum() if mask is not None else torch.tensor(inputs["input_ids"].numel())
        if self._tokens_local is None:
            self._tokens_local = torch.zeros((), dtype=torch.int64, device=count.device)
            self._time_at_last_log = time.perf_counter()
        self._tokens_local += count  # stays on the device: no sync per micro-batch
        return super().training_step(model, inputs, *args, **kwargs)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._tokens_local is not None and self._time_at_last_log:
            now = time.perf_counter()
            tokens = int(self._tokens_local.item()) * self.args.world_size
            seconds = max(now - self._time_at_last_log - self._paused_s, 1e-9)
            logs["tokens_per_second"] = (tokens - self._tokens_at_last_log) / seconds
            self.tokens_seen = tokens
            self.training_seconds += seconds
            self._tokens_at_last_log = tokens
            self._time_at_last_log = now
            self._paused_s = 0.0
        super().log(logs, start_time)

    def flush_throughput(self) -> None:
        """Account for the steps since the last log (call once training has ended)."""
        if self._tokens_local is not None and self._time_at_last_log:
            now = time.perf_counter()
            tokens = int(self._tokens_local.item()) * self.args.world_size
            self.training_seconds += max(now - self._time_at_last_log - self._paused_s, 0.0)
            self.tokens_seen = tokens
            self._tokens_at_last_log = tokens
            self._time_at_last_log = now
            self._paused_s = 0.0

    def evaluate(self, *args: Any, **kwargs: Any) -> dict[str, float]:
        started = time.perf_counter()
        try:
            return super().evaluate(*args, **kwargs)
        finally:
            self._paused_s += time.perf_counter() - started

    # ------------------------------------------------------------------ evaluation
    def evaluation_loop(self, *args: Any, **kwargs: Any) -> Any:
        output = super().evaluation_loop(*args, **kwargs)
        metrics = output.metrics or {}
        for key in [k for k in metrics if k.endswith("_nll")]:
            # The token-weighted mean replaces the Trainer's mean of batch means.
            metrics[key.removesuffix("_nll") + "_loss"] = metrics.pop(key)
        return output

    # ------------------------------------------------------------------ checkpoints
    def _issue_warnings_after_load(self, load_result: Any) -> None:
        # GPT-2's output layer shares the input embedding: a checkpoint stores it once, and
        # loading one (the best model, after early stopping) reports it "missing". It is not.
        shared = _tied_parameter_names(self.model)
        missing = [k for k in load_result.missing_keys if k not in shared]
        if len(missing) < len(load_result.missing_keys):
            self.model.tie_weights()
        super()._issue_warnings_after_load(load_result._replace(missing_keys=missing))

    def _get_output_dir(self, trial: Any) -> str:
        if self._staging_root is not None:
            return self._staging_root
        return super()._get_output_dir(trial)

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        started = time.perf_counter()
        root = Path(self.args.output_dir)
        staging_root = root / STAGING_DIR
        name = f"checkpoint-{self.state.global_step}"
        staged, final = staging_root / name, root / name
        if self.args.should_save:
            shutil.rmtree(staged, ignore_errors=True)
            staged.mkdir(parents=True)
        self.accelerator.wait_for_everyone()
        self._staging_root = str(staging_root)
        try:
            with quiet_transformers():
                super()._save_checkpoint(model, trial)
        finally:
            self._staging_root = None
        best = self.state.best_model_checkpoint
        if best is not None and Path(best).parent == staging_root:
            self.state.best_model_checkpoint = str(root / Path(best).name)
        self.accelerator.wait_for_everyone()  # every process's rng_state is in
        if self.args.should_save:
            self.state.save_to_json(str(staged / "trainer_state.json"))
            (staged / RUN_INFO).write_text(
                json.dumps(self.run_info, indent=2) + "\n", encoding="utf-8"
            )
            fsync_tree(staged)
            if final.exists():  # a checkpoint of this step from an abandoned run
                trash = staging_root / f"{name}.old"
                shutil.rmtree(trash, ignore_errors=True)
                final.replace(trash)
                shutil.rmtree(trash, ignore_errors=True)
            staged.replace(final)
            fsync_dir(root)
            with contextlib.suppress(OSError):
                staging_root.rmdir()  # only if empty
            if self.keep_checkpoints:
                best = self.state.best_model_checkpoint
                prune_checkpoints(root, self.keep_checkpoints, Path(best) if best else None)
        self.accelerator.wait_for_everyone()
        self._paused_s += time.perf_counter() - started


def _tied_parameter_names(model: torch.nn.Module) -> set[str]:
    """Names of parameters that are another parameter under a second name (tied weights)."""
    by_storage: dict[int, list[str]] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        by_storage.setdefault(parameter.data_ptr(), []).append(name)
    return {name for names in by_storage.values() for name in names[1:]}
