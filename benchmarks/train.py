"""Training throughput of ``midilm train`` beside a bare PyTorch loop, in one run.

    python benchmarks/train.py [--steps 4] [--warmup 2] [--rounds 2] [--pieces 120] [--batch 8]
                               [--default-malloc]

The model is the ``mmm-gpt2`` preset (6 layers, 8 heads, 512 dims) on MMM windows of Bach
chorales from the music21 corpus, packed into sequences of 512 tokens, batch 8. Three
measurements, each after ``--warmup`` steps that are not timed:

- ``midilm``: :func:`midilm.training.train` (the Hugging Face Trainer with midilm's
  callbacks, logging every 4 steps) at the automatic precision;
- ``bare``: the same model, data, batch, precision and optimizer (AdamW, fused as the
  Trainer's, gradient clipping at 1.0, the same LR schedule) in a plain loop;
- ``midilm`` in fp32, for the speed-up of the automatic precision.

A step's time is the wall time between two optimizer steps; the median over the timed steps
of all rounds counts. Each of ``--rounds`` rounds runs the three, in a rotating order, so
that other work on a shared machine slows them alike (the JSON records the load average).

Targets: midilm ≥ 0.95× the bare loop; the automatic precision ≥ 1.6× fp32 on a CPU with
native bf16. On a GPU it also reports model FLOPs utilization (target ≥ 40 % on an H100 in
bf16).

malloc is tuned as the ``midilm train`` command tunes it (:mod:`midilm.training.allocator`)
for all three runs, unless ``--default-malloc``. The last line is a JSON object with every
figure.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this folder comes first on sys.path, and its tokenize.py would shadow the
# standard library's tokenize for everything imported below.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402
import contextlib  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

from midilm.data.dataset import TokenCollator, TokenDataset  # noqa: E402
from midilm.data.shards import ShardWriter  # noqa: E402
from midilm.model.presets import ModelPreset, get_preset  # noqa: E402
from midilm.score import import_music21, music21_specs  # noqa: E402
from midilm.tokenization.mmm import MMMTokenizer  # noqa: E402
from midilm.training import train  # noqa: E402
from midilm.training.allocator import keep_freed_memory  # noqa: E402
from midilm.training.callbacks import StepTimer  # noqa: E402
from midilm.training.precision import autocast, resolve_precision  # noqa: E402

PRESET = "mmm-gpt2"
SEQ_LEN = 512
BATCH = 8  # the spec's batch; --batch explores others (a GPU wants more)
# Dense bf16 peak of the GPUs MFU is reported for (FLOP/s).
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}


def build_dataset(directory: Path, pieces: int) -> Path:
    """MMM windows of the first ``pieces`` chorales; every tenth piece goes to valid."""
    tok = MMMTokenizer(meter_tokens=True)
    writers = {split: ShardWriter(directory, split, tok.vocab_size) for split in ("train", "valid")}
    for index, spec in enumerate(music21_specs("music21:bach")[:pieces]):
        split = "valid" if index % 10 == 9 else "train"
        for window in tok.windows(import_music21(spec)):
            writers[split].append(window.ids)
    for writer in writers.values():
        writer.close()
    tok.save(directory)
    manifest = {
        "tokenizer": {"kind": "mmm"},
        "special_ids": {"pad": tok.pad_id, "bos": None, "eos": None},
        "vocab_size": tok.vocab_size,
        "digest": f"benchmark-{pieces}",
    }
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return directory


def median_step_s(marks: list[tuple[int, float]], warmup: int) -> list[float]:
    """Durations of the steps after ``warmup`` (from the end of one step to the next)."""
    times = [t for step, t in marks if step >= warmup]
    return [b - a for a, b in itertools.pairwise(times)]


def run_midilm(data: Path, precision: str, steps: int, warmup: int, batch: int) -> list[float]:
    timer = StepTimer()
    with tempfile.TemporaryDirectory() as out:
        train(
            data, Path(out) / "model", preset=PRESET, quiet=True, callbacks=[timer],
            max_steps=warmup + steps, batch_size=batch, micro_batch_size=batch,
            seq_len=SEQ_LEN, dataset_mode="packed", precision=precision,
            eval_every=0, save_every=0, log_every=4,
        )  # fmt: skip
    return median_step_s(timer.marks, warmup)


def run_bare(data: Path, precision: str, steps: int, warmup: int, batch: int) -> list[float]:
    """The loop a careful person writes by hand: same model, data, optimizer, schedule."""
    import transformers

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dataset = TokenDataset(data, "train", SEQ_LEN, "packed")
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch, shuffle=True, drop_last=True,
        collate_fn=TokenCollator(dataset.pad_id), generator=torch.Generator().manual_seed(444),
        pin_memory=device == "cuda",
    )  # fmt: skip
    transformers.set_seed(444)
    config = get_preset(PRESET).gpt2_config(dataset.manifest["vocab_size"], pad_id=dataset.pad_id)
    config.use_cache = False
    model = transformers.GPT2LMHeadModel(config).to(device).train()
    model.loss_type = "ForCausalLM"
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, fused=True
    )
    total = warmup + steps
    schedule = transformers.get_cosine_with_hard_restarts_schedule_with_warmup(
        optimizer, round(0.3 * total), total
    )
    marks: list[tuple[int, float]] = []
    step = 0
    while step < total:
        for cpu_batch in loader:
            batch = {k: v.to(device, non_blocking=True) for k, v in cpu_batch.items()}
            with autocast(precision, device):
                loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            if device == "cuda":
                torch.cuda.synchronize()
            step += 1
            marks.append((step, time.perf_counter()))
            if step == total:
                break
    return median_step_s(marks, warmup)


def flops_per_token(preset: ModelPreset, vocab_size: int) -> float:
    """Training FLOPs per token: 6 × matmul parameters (LM head included) plus attention
    (12 · layers · dims · sequence length), as in the PaLM paper's MFU."""
    d, inner = preset.n_embd, preset.n_inner or 4 * preset.n_embd
    matmul = preset.n_layer * (4 * d * d + 2 * d * inner) + vocab_size * d
    return 6 * matmul + 12 * preset.n_layer * d * SEQ_LEN


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=4, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per run")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the three runs")
    parser.add_argument("--pieces", type=int, default=120, help="chorales in the dataset")
    parser.add_argument("--batch", type=int, default=BATCH, help="sequences per step")
    parser.add_argument(
        "--default-malloc", action="store_true", help="leave glibc's malloc as it is"
    )
    args = parser.parse_args()

    tuned = not args.default_malloc and keep_freed_memory()  # as `midilm train` does
    device = "cuda" if torch.cuda.is_available() else "cpu"
    auto = resolve_precision("auto", device)
    load_before = os.getloadavg()[0]
    tokens_per_step = args.batch * SEQ_LEN
    with tempfile.TemporaryDirectory() as tmp:
        data = build_dataset(Path(tmp) / "data", args.pieces)
        vocab = json.loads((data / "manifest.json").read_text())["vocab_size"]
        durations: dict[str, list[float]] = {"midilm": [], "bare": [], "midilm_fp32": []}
        runs = {
            "midilm": lambda: run_midilm(data, auto, args.steps, args.warmup, args.batch),
            "bare": lambda: run_bare(data, auto, args.steps, args.warmup, args.batch),
            "midilm_fp32": lambda: run_midilm(data, "fp32", args.steps, args.warmup, args.batch),
        }
        if auto == "fp32":
            del runs["midilm_fp32"]
        for round_ in range(args.rounds):
            names = list(runs)[round_ % len(runs) :] + list(runs)[: round_ % len(runs)]
            for name in names:  # each round in another order: drift hits every run alike
                durations[name] += runs[name]()
                print(f"round {round_ + 1}: {name} done", flush=True)
        if auto == "fp32":
            durations["midilm_fp32"] = durations["midilm"]

    rate = {k: tokens_per_step / statistics.median(v) for k, v in durations.items()}
    result = {
        "benchmark": "train",
        "device": torch.cuda.get_device_name()
        if device == "cuda"
        else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "preset": PRESET,
        "seq_len": SEQ_LEN,
        "batch": args.batch,
        "auto_precision": auto,
        "malloc_tuned": tuned,
        "timed_steps": {k: len(v) for k, v in durations.items()},
        "step_s_min_median_max": {
            k: [round(min(v), 3), round(statistics.median(v), 3), round(max(v), 3)]
            for k, v in durations.items()
        },
        "load_average_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "tokens_per_s_midilm": round(rate["midilm"], 1),
        "tokens_per_s_bare_loop": round(rate["bare"], 1),
        "tokens_per_s_midilm_fp32": round(rate["midilm_fp32"], 1),
        "speedup_vs_bare_loop": round(rate["midilm"] / rate["bare"], 3),
        "auto_precision_speedup_vs_fp32": round(rate["midilm"] / rate["midilm_fp32"], 3),
    }
    if device == "cuda":
        name = torch.cuda.get_device_name()
        peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
        achieved = rate["midilm"] * flops_per_token(get_preset(PRESET), vocab)
        result["model_tflops"] = round(achieved / 1e12, 2)
        result["mfu"] = round(achieved / peak, 4) if peak and auto == "bf16" else None

    print(f"midilm train ({auto}):   {rate['midilm']:10,.0f} tokens/s")
    print(f"bare PyTorch loop ({auto}): {rate['bare']:8,.0f} tokens/s")
    print(f"midilm train (fp32):   {rate['midilm_fp32']:10,.0f} tokens/s")
    print(f"midilm / bare loop: {result['speedup_vs_bare_loop']:.3f}× (target ≥ 0.95)")
    print(
        f"{auto} / fp32: {result['auto_precision_speedup_vs_fp32']:.3f}× "
        "(target ≥ 1.6 on a CPU with native bf16)"
    )
    if "mfu" in result and result["mfu"] is not None:
        print(f"model FLOPs utilization: {100 * result['mfu']:.1f} % (target ≥ 40 % on an H100)")
    with contextlib.suppress(BrokenPipeError):
        print(json.dumps(result))


if __name__ == "__main__":
    main()
