"""What a person watching a training run sees: one line per log, one per evaluation.

```
step   200/10000   2% | loss 3.4121 | lr 6.7e-06 | 1,234 tok/s | 0:02:41 | ETA 2:11:30
eval   200/10000      | loss 3.2012 | ppl 24.56 | 4.218 bits/note | 4.62 bits/token
```

Lines go to stderr (stdout stays for results), from process 0 only. The ETA extrapolates
this session's pace, evaluations and checkpoints included.
"""

from __future__ import annotations

import math
import sys
import time
from datetime import timedelta
from typing import Any, TextIO

from transformers import TrainerCallback

__all__ = ["ConsoleProgress", "StepTimer"]


def _clock(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    return str(timedelta(seconds=round(max(seconds, 0.0))))


class ConsoleProgress(TrainerCallback):
    """Prints a progress line at each training log and a metrics line at each evaluation."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream
        self._t0: float | None = None
        self._step0 = 0

    def _write(self, line: str) -> None:
        stream = self.stream if self.stream is not None else sys.stderr
        stream.write(line + "\n")
        stream.flush()

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._t0 = time.perf_counter()
        self._step0 = state.global_step  # after a resume: the checkpoint's step

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        if not state.is_world_process_zero or not logs:
            return
        step, total = state.global_step, state.max_steps
        width = len(str(total))
        if "loss" in logs:
            elapsed = time.perf_counter() - (self._t0 or time.perf_counter())
            done = step - self._step0
            eta = elapsed / done * (total - step) if done > 0 else math.inf
            parts = [
                f"step {step:>{width}}/{total} {100 * step / max(total, 1):3.0f}%",
                f"loss {logs['loss']:.4f}",
                f"lr {logs.get('learning_rate', 0.0):.1e}",
            ]
            if "tokens_per_second" in logs:
                parts.append(f"{logs['tokens_per_second']:,.0f} tok/s")
            parts += [_clock(elapsed), f"ETA {_clock(eta)}"]
            self._write(" | ".join(parts))
        elif "eval_loss" in logs:
            parts = [f"eval {step:>{width}}/{total}     ", f"loss {logs['eval_loss']:.4f}"]
            if "eval_perplexity" in logs:
                parts.append(f"ppl {logs['eval_perplexity']:.2f}")
            if "eval_bits_per_note" in logs:
                parts.append(f"{logs['eval_bits_per_note']:.3f} bits/note")
            if "eval_bits_per_token" in logs:
                parts.append(f"{logs['eval_bits_per_token']:.3f} bits/token")
            self._write(" | ".join(parts))


class StepTimer(TrainerCallback):
    """Records ``(global_step, perf_counter())`` at the end of every optimizer step (what
    the training benchmark times). On a GPU it waits for the step's kernels first, so each
    mark is when the step really ended (a sync per step: for measuring, not for training)."""

    def __init__(self) -> None:
        self.marks: list[tuple[int, float]] = []

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.marks.append((state.global_step, time.perf_counter()))
