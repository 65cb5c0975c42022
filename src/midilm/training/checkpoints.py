"""Training checkpoints on disk: where they live, which are complete, which one to resume.

A run's checkpoints sit in ``MODEL_DIR/checkpoints/checkpoint-<step>/`` in the Hugging Face
Trainer layout (``model.safetensors``, ``config.json``, ``optimizer.pt``, ``scheduler.pt``,
``rng_state*.pth``, ``trainer_state.json``, ``training_args.bin``) plus ``midilm_run.json``
(the recipe, the preset and the dataset digest of the run).

Writes are atomic: every process writes into ``checkpoints/.staging/checkpoint-<step>/``,
and once all have finished, process 0 flushes the files to disk and renames the folder into
place (see :class:`midilm.training.trainer.MidilmTrainer`). A kill at any moment leaves
either the complete checkpoint or none; ``.staging`` holds only debris, removed at the next
start. :func:`latest_checkpoint` still checks every file, so a folder damaged by hand is
skipped rather than loaded.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

__all__ = [
    "CHECKPOINTS_DIR",
    "RUN_INFO",
    "STAGING_DIR",
    "checkpoint_step",
    "is_complete",
    "latest_checkpoint",
    "list_checkpoints",
    "prune_checkpoints",
    "read_run_info",
]

CHECKPOINTS_DIR = "checkpoints"
STAGING_DIR = ".staging"
RUN_INFO = "midilm_run.json"
_NAME = re.compile(r"^checkpoint-(\d+)$")
_REQUIRED = (
    "trainer_state.json",
    "model.safetensors",
    "config.json",
    "optimizer.pt",
    "scheduler.pt",
    RUN_INFO,
)


def checkpoint_step(path: Path) -> int | None:
    """The step of a ``checkpoint-<step>`` folder, or None for any other name."""
    match = _NAME.match(path.name)
    return int(match.group(1)) if match else None


def list_checkpoints(root: Path) -> list[Path]:
    """``checkpoint-<step>`` folders under ``root``, oldest step first (complete or not)."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and checkpoint_step(p) is not None]
    return sorted(found, key=lambda p: checkpoint_step(p) or 0)


def is_complete(path: Path) -> bool:
    """Every file a resume reads is there, and the trainer state parses and names its step."""
    if not all((path / name).is_file() for name in _REQUIRED):
        return False
    if not any(path.glob("rng_state*.pth")):
        return False
    try:
        state = json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
        json.loads((path / RUN_INFO).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return isinstance(state, dict) and state.get("global_step") == checkpoint_step(path)


def latest_checkpoint(root: Path) -> Path | None:
    """The complete checkpoint of the highest step under ``root``, or None."""
    for path in reversed(list_checkpoints(root)):
        if is_complete(path):
            return path
    return None


def prune_checkpoints(root: Path, keep: int, protect: Path | None = None) -> list[Path]:
    """Delete all but the ``keep`` newest checkpoints (by step), never ``protect`` (the best
    one, when the best weights are reloaded at the end); return what was deleted."""
    import shutil

    checkpoints = list_checkpoints(root)
    newest = checkpoints[-keep:] if keep > 0 else checkpoints
    doomed = [
        p for p in checkpoints if p not in newest and (protect is None or p.name != protect.name)
    ]
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return doomed


def read_run_info(checkpoint: Path) -> dict[str, Any]:
    """What ``midilm_run.json`` of a checkpoint says about its run."""
    return json.loads((checkpoint / RUN_INFO).read_text(encoding="utf-8"))
