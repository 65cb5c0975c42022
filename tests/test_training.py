"""Training (``midilm.training``, ``midilm train``) on a small real dataset: 40 Bach chorales
as MMM windows, a 2-layer GPT-2 (the ``tiny`` preset) in fp32 on the CPU.

One uninterrupted reference run (in this process) is the yardstick for the end-to-end
checks: the loss falls; the model directory loads with ``from_pretrained`` and gives the
recorded valid loss; a run killed with SIGKILL and resumed with ``--resume`` ends at the
same weights; so does a run whose checkpoint save was cut short; and so does
``torchrun --nproc_per_node=2`` with the same global batch. The run crosses epoch
boundaries, and the killed run resumes after the first one.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from midilm.cli.main import cli
from midilm.data.prepare import prepare
from midilm.errors import ConfigError
from midilm.training import TrainingRecipe, train
from midilm.training.checkpoints import is_complete, latest_checkpoint, list_checkpoints
from midilm.training.metrics import metrics_from_stats, notes_per_token, sequence_nll_stats
from midilm.training.precision import auto_precision, resolve_precision
from midilm.training.run import auto_micro_batch, resolve_settings
from midilm.training.trainer import EpochPermutation, MidilmTrainer

# The run every end-to-end test compares with: 60 steps of 8 sequences (1.7 epochs).
RUN = {
    "preset": "tiny",
    "max_steps": 60,
    "batch_size": 8,
    "seq_len": 256,
    "lr": 1e-3,
    "precision": "fp32",
    "eval_every": 20,
    "save_every": 5,
    "log_every": 10,
    "keep_checkpoints": 3,
    "deterministic": True,
}
CLI_RUN = [
    "--preset", "tiny", "--max-steps", "60", "--batch-size", "8", "--seq-len", "256",
    "--lr", "1e-3", "--precision", "fp32", "--eval-every", "20", "--save-every", "5",
    "--keep-checkpoints", "3", "--set", "log_every=10", "--set", "deterministic=true",
]  # fmt: skip


def midilm_command(*args: object) -> list[str]:
    return [sys.executable, "-m", "midilm", *(str(a) for a in args)]


def weights(directory: Path) -> dict[str, torch.Tensor]:
    return load_file(directory / "model.safetensors")


def assert_same_weights(a: Path, b: Path, atol: float) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    worst = max((wa[k] - wb[k]).abs().max().item() for k in wa)
    assert worst <= atol, f"largest weight difference {worst:.3g} > {atol:g}"


# ---------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def dataset(tmp_path_factory, bach_scores) -> Path:
    """40 chorales prepared by ``midilm prepare``'s library (MMM, no transposition): 289
    training windows, 36 steps an epoch at batch 8."""
    specs = [spec for spec, _ in bach_scores[:40]]  # the fixture has warmed the cache
    directory = tmp_path_factory.mktemp("data") / "chorales"
    prepare(
        specs, directory, workers=1, transpose=(0, 0), split_ratios=(0.8, 0.1, 0.1),
        tokenizer_settings={"meter_tokens": True}, max_seq_len=512,
    )  # fmt: skip
    return directory


@pytest.fixture(scope="module")
def reference(tmp_path_factory, dataset):
    """The uninterrupted run: ``(result, model_dir)``."""
    out = tmp_path_factory.mktemp("reference") / "model"
    result = train(dataset, out, quiet=True, **RUN)
    return result, out


# ---------------------------------------------------------------------- recipe
def test_recipe_defaults_are_the_seed_recipe():
    recipe = TrainingRecipe()
    assert (recipe.lr, recipe.betas, recipe.eps) == (1e-4, (0.9, 0.999), 1e-8)
    assert (recipe.batch_size, recipe.seed, recipe.max_steps) == (64, 444, 100_000)
    assert (recipe.scheduler, recipe.warmup_ratio) == ("cosine_with_restarts", 0.3)
    assert recipe.precision == "auto"
    assert recipe.warmup_steps == 30_000
    assert TrainingRecipe.from_dict(recipe.to_dict()) == recipe


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"lr": 0.0}, "TrainingRecipe.lr must be > 0, received 0.0"),
        ({"betas": (0.9, 1.0)}, "betas"),
        ({"batch_size": 64, "micro_batch_size": 5}, "a divisor of batch_size (64)"),
        ({"warmup_ratio": 1.0}, "warmup_ratio"),
        ({"precision": "int8"}, "expected one of 'auto'"),
        ({"early_stopping_patience": 2, "eval_every": 0}, "needs evaluations"),
        ({"early_stopping_patience": 2, "eval_every": 300, "save_every": 1000}, "multiple"),
    ],
)
def test_recipe_rejects_bad_values(changes, fragment):
    with pytest.raises(ConfigError) as err:
        TrainingRecipe(**changes)
    assert fragment in str(err.value)


def test_accumulation_keeps_the_effective_batch():
    recipe = TrainingRecipe(batch_size=64)
    assert recipe.accumulation_steps(8, world_size=1) == 8
    assert recipe.accumulation_steps(8, world_size=4) == 2
    assert recipe.accumulation_steps(16, world_size=4) == 1
    with pytest.raises(ConfigError, match="multiple of 48"):
        recipe.accumulation_steps(16, world_size=3)


def test_auto_micro_batch_fits_the_budget():
    from midilm.model.presets import get_preset

    preset = get_preset("mmm-gpt2")
    assert auto_micro_batch(64, preset, 500, 512, "bf16", 1 << 50) == 64
    small = auto_micro_batch(64, preset, 500, 2048, "fp32", 8 << 30)
    assert 1 <= small < 64 and 64 % small == 0
    assert auto_micro_batch(64, preset, 500, 2048, "fp32", 1) == 1


def test_settings_merge_overrides_and_guard_resumes():
    preset, recipe = resolve_settings("tiny", None, {"lr": 3e-4, "n_layer": 3}, None)
    assert (preset.name, preset.n_layer, recipe.lr) == ("tiny", 3, 3e-4)
    with pytest.raises(ConfigError, match="unknown setting"):
        resolve_settings(None, None, {"learning_rate": 1.0}, None)
    saved = {"preset": preset.to_dict(), "recipe": recipe.to_dict()}
    # Resuming: the checkpoint's settings are the defaults; bookkeeping may change.
    again, kept = resolve_settings(None, None, {"save_every": 7}, saved)
    assert again == preset and kept == recipe.replace(save_every=7)
    with pytest.raises(ConfigError, match="max_steps: checkpoint 100000, now 5"):
        resolve_settings(None, None, {"max_steps": 5}, saved)
    with pytest.raises(ConfigError, match="n_layer"):
        resolve_settings("tiny", None, {}, saved)


# ---------------------------------------------------------------------- precision
def test_auto_precision_on_cpu_follows_native_bf16(monkeypatch):
    import midilm.training.precision as precision

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert auto_precision("cpu") == "bf16"
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert auto_precision("cpu") == "fp32"
    assert resolve_precision("fp16", "cpu") == "fp16"
    assert resolve_precision("fp32", "mps") == "fp32"
    with pytest.raises(ConfigError, match="needs a CUDA GPU or a CPU"):
        resolve_precision("bf16", "mps")


def test_malloc_tuning_applies_on_glibc():
    """Run in a child process: the setting is process-wide (the CLI's own process)."""
    import platform

    code = "from midilm.training.allocator import keep_freed_memory as k; print(k())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    expected = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert done.stdout.strip() == str(expected), done.stderr


# ---------------------------------------------------------------------- metrics
def test_notes_per_token_counts_every_note(bach_scores):
    from midilm.tokenization.mmm import MMMTokenizer
    from midilm.tokenization.remi import REMITokenizer

    scores = [score for _, score in bach_scores[:6]]
    mmm = MMMTokenizer(meter_tokens=True)
    counts = notes_per_token(mmm)
    for score in scores[:3]:
        notes = sum(len(t.notes) for t in mmm.decode(mmm.encode(score)).tracks)
        assert counts[mmm.encode(score)].sum() == notes > 0

    remi = REMITokenizer.train(scores, vocab_size=300)
    counts = notes_per_token(remi)
    assert counts.max() > 1  # BPE tokens that hold several notes
    for score in scores[:3]:
        ids = remi.encode(score)
        notes = sum(len(t.notes) for t in remi.decode(ids).tracks)
        assert counts[ids].sum() == notes > 0


def test_bits_per_note_of_a_uniform_model():
    vocab, notes = 16, torch.zeros(16, dtype=torch.long)
    notes[3] = 1  # token 3 is a note; token 5 holds two notes (a BPE merge)
    notes[5] = 2
    labels = torch.tensor([[1, 3, 5, 3, -100, -100], [2, 2, 3, 4, 5, 1]])
    stats = sequence_nll_stats(torch.zeros(2, 6, vocab), labels, notes)
    # Predicted tokens: 3 + 5 = 8; notes among them: (1 + 2 + 1) + (1 + 2) = 7.
    assert stats[:, 1].tolist() == [3, 5] and stats[:, 2].tolist() == [4, 3]
    metrics = metrics_from_stats(stats.numpy())
    assert metrics["nll"] == pytest.approx(math.log(vocab))
    assert metrics["perplexity"] == pytest.approx(vocab)
    assert metrics["bits_per_token"] == pytest.approx(4.0)
    assert metrics["bits_per_note"] == pytest.approx(8 * 4.0 / 7)


# ---------------------------------------------------------------------- data order
def test_epoch_permutation_gives_the_same_global_batches_for_any_split():
    """What process p of w sees at micro-batch k (Accelerate hands out micro-batches round
    robin) covers, step by step, the same sequences as one process with accumulation."""
    sampler = EpochPermutation(num_items=37, global_batch=8, seed=444)
    order = list(sampler)
    assert len(order) == 32 and len(set(order)) == 32
    sampler.set_epoch(1)
    assert list(sampler) != order
    sampler.set_epoch(0)
    assert list(sampler) == order
    for world, micro in ((1, 8), (1, 2), (2, 4), (4, 1)):
        micro_batches = [order[i : i + micro] for i in range(0, len(order), micro)]
        per_step = 8 // micro  # micro-batches of all processes in one optimizer step
        for step in range(4):
            seen = [
                i for batch in micro_batches[step * per_step : (step + 1) * per_step] for i in batch
            ]
            assert sorted(seen) == sorted(order[step * 8 : (step + 1) * 8]), world


# ---------------------------------------------------------------------- checkpoints
def test_latest_checkpoint_skips_incomplete_ones(tmp_path):
    root = tmp_path / "checkpoints"
    for step in (5, 10, 15):
        folder = root / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        for name in ("model.safetensors", "config.json", "optimizer.pt", "scheduler.pt"):
            (folder / name).write_bytes(b"x")
        (folder / "rng_state.pth").write_bytes(b"x")
        (folder / "midilm_run.json").write_text("{}")
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    (root / "checkpoint-15" / "optimizer.pt").unlink()  # cut short
    (root / "checkpoint-10" / "trainer_state.json").write_text('{"global_st')
    (root / "not-a-checkpoint").mkdir()
    assert [p.name for p in list_checkpoints(root)] == [f"checkpoint-{s}" for s in (5, 10, 15)]
    assert latest_checkpoint(root) == root / "checkpoint-5"
    assert not is_complete(root / "checkpoint-15")


# ---------------------------------------------------------------------- the CLI
def invoke(*args: object):
    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_error(result, fragment: str) -> None:
    assert result.exit_code == 2, (result.output, result.exception)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert fragment in lines[0], lines[0]


def test_cli_reports_bad_input_in_one_line(tmp_path, dataset):
    out = tmp_path / "model"
    assert_error(invoke("train", tmp_path / "nope", "-o", out), "no such dataset directory")
    assert_error(invoke("train", tmp_path, "-o", out), "no manifest")
    assert_error(invoke("train", dataset, "-o", out, "--preset", "huge"), "unknown model preset")
    assert_error(invoke("train", dataset, "-o", out, "--set", "lr=-1"), "lr must be > 0")
    assert_error(invoke("train", dataset, "-o", out, "--set", "nope=1"), "unknown setting")
    assert_error(invoke("train", dataset, "-o", out, "--set", "lr"), "KEY=VALUE")
    assert_error(
        invoke("train", dataset, "-o", out, "--preset", "tiny", "--seq-len", "1024"),
        "exceeds the preset's context of 512",
    )
    assert_error(invoke("train", dataset, "-o", out, "--precision", "fp8"), "fp8")
    (out / "checkpoints" / "checkpoint-5").mkdir(parents=True)
    assert_error(invoke("train", dataset, "-o", out), "--resume")
    assert not (out / "logs").exists()


def test_cli_help_names_the_recipe():
    result = invoke("train", "--help")
    assert result.exit_code == 0
    for option in ("--resume", "--precision", "--batch-size", "--set", "torchrun"):
        assert option in result.output


# ---------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_loss_falls_and_metrics_are_recorded(reference, dataset):
    result, out = reference
    evals = [h for h in result.log_history if "eval_loss" in h]
    assert [h["step"] for h in evals] == [20, 40, 60]
    vocab = json.loads((dataset / "manifest.json").read_text())["vocab_size"]
    assert evals[0]["eval_loss"] < math.log(vocab)  # better than uniform already
    assert evals[-1]["eval_loss"] < evals[0]["eval_loss"] - 0.3
    assert result.metrics["loss"] == pytest.approx(evals[-1]["eval_loss"])
    assert result.metrics["perplexity"] == pytest.approx(math.exp(result.metrics["loss"]))
    assert result.metrics["bits_per_note"] > result.metrics["bits_per_token"] > 0
    assert result.global_step == 60 and not result.stopped_early
    assert (result.micro_batch_size, result.accumulation_steps) == (8, 1)
    assert result.tokens_per_second > 0
    assert list((out / "logs").glob("events.out.tfevents.*"))  # TensorBoard
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == [
        "checkpoint-50", "checkpoint-55", "checkpoint-60",
    ]  # fmt: skip
    info = json.loads((out / "midilm.json").read_text())
    assert info["training"] == result.recipe.to_dict()
    assert (
        info["dataset"]["digest"] == json.loads((dataset / "manifest.json").read_text())["digest"]
    )
    assert info["metrics"]["loss"] == pytest.approx(result.metrics["loss"])
    assert info["model"]["preset"] == "tiny"


@pytest.mark.slow
def test_model_directory_round_trips_through_from_pretrained(reference, dataset):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from midilm.data.dataset import TokenCollator, TokenDataset
    from midilm.model import load_model

    result, out = reference
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    assert model.config.n_layer == 2
    assert AutoTokenizer.from_pretrained(out)("PIECE_START TRACK_START")["input_ids"]
    # The loaded model reproduces the valid loss the run recorded.
    valid = TokenDataset(dataset, "valid", seq_len=256)
    notes = torch.as_tensor(notes_per_token(load_model(out).tokenizer))
    batch = TokenCollator(valid.pad_id)([valid[i] for i in range(len(valid))])
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    metrics = metrics_from_stats(sequence_nll_stats(logits, batch["labels"], notes).numpy())
    assert metrics["nll"] == pytest.approx(result.metrics["loss"], rel=1e-5)
    assert metrics["bits_per_note"] == pytest.approx(result.metrics["bits_per_note"], rel=1e-5)


@pytest.mark.slow
def test_resume_after_sigkill_ends_at_the_same_weights(reference, dataset, tmp_path):
    _, expected = reference
    out = tmp_path / "model"
    log = (tmp_path / "killed.log").open("w")
    process = subprocess.Popen(
        midilm_command("train", dataset, "-o", out, *CLI_RUN), stdout=log, stderr=log
    )
    # Kill it as soon as a checkpoint past the first epoch exists.
    deadline = time.monotonic() + 120
    while not (out / "checkpoints" / "checkpoint-40").is_dir():
        assert process.poll() is None, (tmp_path / "killed.log").read_text()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    log.close()
    assert not (out / "model.safetensors").exists()
    resumed_from = latest_checkpoint(out / "checkpoints")
    assert resumed_from is not None and 40 <= int(resumed_from.name.split("-")[1]) < 60

    # The same command with --resume (and no other option needed) finishes the run.
    done = subprocess.run(
        midilm_command("train", dataset, "-o", out, "--resume"),
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"resuming from {resumed_from}" in done.stderr
    assert "step 60" in done.stdout
    assert_same_weights(out, expected, atol=1e-6)


@pytest.mark.slow
def test_a_checkpoint_cut_short_is_never_used(reference, dataset, tmp_path, monkeypatch):
    """A save that dies halfway (here: an error after the weights and optimizer are written)
    leaves no ``checkpoint-N``; the resume starts from the one before."""
    _, expected = reference
    out = tmp_path / "model"
    save_rng = MidilmTrainer._save_rng_state

    def dying_save(self, output_dir):
        if self.state.global_step == 30:
            raise RuntimeError("simulated crash while saving")
        save_rng(self, output_dir)

    monkeypatch.setattr(MidilmTrainer, "_save_rng_state", dying_save)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(dataset, out, quiet=True, **RUN)
    monkeypatch.undo()
    assert not (out / "checkpoints" / "checkpoint-30").exists()
    partial = out / "checkpoints" / ".staging" / "checkpoint-30"
    assert (partial / "optimizer.pt").is_file() and not (partial / "rng_state.pth").exists()
    assert latest_checkpoint(out / "checkpoints") == out / "checkpoints" / "checkpoint-25"

    result = train(dataset, out, quiet=True, resume=True)
    assert result.resumed_from == out / "checkpoints" / "checkpoint-25"
    assert not (out / "checkpoints" / ".staging").exists()
    assert_same_weights(out, expected, atol=1e-6)


@pytest.mark.slow
def test_early_stopping_keeps_the_best_checkpoint(dataset, tmp_path):
    """Patience 1 with an improvement threshold no run meets: it stops at the second
    evaluation and the saved model is the best evaluated one."""
    out = tmp_path / "model"
    run = {**RUN, "eval_every": 5, "save_every": 5, "keep_checkpoints": 1}
    result = train(
        dataset, out, quiet=True, early_stopping_patience=1, early_stopping_threshold=10.0, **run
    )
    assert result.stopped_early and result.global_step == 10
    evals = {h["step"]: h["eval_loss"] for h in result.log_history if "eval_loss" in h}
    best = min(evals, key=evals.get)
    assert result.metrics["loss"] == pytest.approx(evals[best])
    assert_same_weights(out, out / "checkpoints" / f"checkpoint-{best}", atol=0.0)


@pytest.mark.slow
def test_torchrun_two_processes_match_one(reference, dataset, tmp_path):
    """Two CPU processes (gloo) with 4 sequences each = one process with 8."""
    result, expected = reference
    out = tmp_path / "model"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "midilm", "train", str(dataset), "-o", str(out), *CLI_RUN,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 process(es) × 4 × 1 accumulated" in done.stderr
    assert done.stdout.count("step 60") == 1  # one summary, from process 0
    assert_same_weights(out, expected, atol=1e-5)
    info = json.loads((out / "midilm.json").read_text())
    assert info["training_run"]["world_size"] == 2
    # Evaluation is sharded too, and counts every valid token once (no padding repeats).
    state = json.loads((out / "checkpoints" / "checkpoint-60" / "trainer_state.json").read_text())
    tokens = [(h["step"], h["eval_tokens"]) for h in state["log_history"] if "eval_tokens" in h]
    assert tokens == [
        (h["step"], h["eval_tokens"]) for h in result.log_history if "eval_tokens" in h
    ]
    assert info["metrics"]["loss"] == pytest.approx(result.metrics["loss"], abs=1e-4)
    assert np.isfinite(info["metrics"]["bits_per_note"])
