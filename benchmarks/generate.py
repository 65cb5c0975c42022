"""Sampling speed of midilm's token loop beside Hugging Face ``generate``, in one run.

    python benchmarks/generate.py [--tokens 256] [--repeats 5] [--threads N]

Model: the ``mmm-gpt2`` preset shape with random weights (speed does not depend on them),
on the MMM vocabulary, top-k 50, with PyTorch's default thread count unless ``--threads``
says otherwise. Figures (the last line is a JSON object with all of them):

- batch-1 tokens/s: midilm (grammar mask on, at its sampling dtype) vs ``model.generate``
  (``use_cache=True``, fp32, the same temperature / top-k) → ``speedup_vs_hf_generate``;
- the memory-bandwidth bound: this machine's read bandwidth (the best of several sums of a
  512 MiB fp32 buffer, far beyond the caches; fp32 because PyTorch's 16-bit sums are bound
  by conversion, not memory) ÷ the bytes of weights one token reads at the dtype used
  (every matrix, bias and norm once, the tied head once, an embedding row) →
  ``fraction_of_bandwidth_bound``; the engine's forward alone (batch 1 and 8, no sampling
  and no grammar) is shown beside it, to tell the model's time from the loop's, and the
  weight matrices alone (one token's matrix-vector products back to back, nothing else:
  the ceiling the kernel sets) as GB/s read → ``matrices_fraction_of_bandwidth``;
  the read bandwidth is noisy on a shared machine, so each round's figure over that
  round's bound is given too (``fraction_of_bandwidth_bound_per_round``, and likewise
  ``grammar_cost_per_round`` and ``batch8_over_batch1_per_round``);
- midilm's CPU kernels (``midilm.sampling.cpu_kernels``, where this machine runs them) against
  the same engine on PyTorch's kernels, forward alone → ``cpu_kernels_speedup`` (batch 1)
  and ``cpu_kernels_speedup_batch8``;
- the grammar mask's cost: tokens/s lost with the mask on → ``grammar_cost``;
- batch 8 over batch 1, total tokens/s → ``batch8_over_batch1``;
- seconds to compose 8 bars × 4 tracks with the ``small`` preset, trained for a minute on
  chorales first so that its bars have realistic lengths → ``compose_8x4_seconds``;
- the default piece as a newcomer meets it: ``midilm generate -o song.mid`` with the bundled
  model, the whole process from Python's start-up to the written file, best of three →
  ``default_piece_seconds`` (the target is 10 s).

Other work on the machine moves every figure: the runs are interleaved round by round, each
figure is the best round, and ``noise`` gives each one's spread, (best − worst) / best.
"""

from __future__ import annotations

import sys
from pathlib import Path

# benchmarks/tokenize.py is named like the standard library's ``tokenize``: keep this
# folder off sys.path, or every import that needs the real one breaks.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers import GPT2LMHeadModel  # noqa: E402

from midilm.model import get_preset  # noqa: E402
from midilm.sampling import GPT2Engine, TokenLoop  # noqa: E402
from midilm.sampling.mmm_tasks import TrackRequest, compose  # noqa: E402
from midilm.sampling.script import finish  # noqa: E402
from midilm.tokenization.mmm import MMMTokenizer  # noqa: E402


def read_bandwidth_gbs(buffer: torch.Tensor) -> float:
    """Bytes per second of summing a buffer far larger than the caches (reads only), best
    of five."""
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        buffer.sum()
        best = min(best, time.perf_counter() - start)
    return buffer.numel() * buffer.element_size() / best / 1e9


def forward_tokens_per_s(engine: GPT2Engine, tokens: int, batch: int = 1) -> float:
    """The engine's forward alone, each row fed its own argmax: the loop's floor."""
    cache = engine.new_cache(batch)
    last = torch.zeros(batch, 1, dtype=torch.long)
    start = time.perf_counter()
    for _ in range(tokens):
        last = engine.forward(last, cache).argmax(-1, keepdim=True)
    return batch * tokens / (time.perf_counter() - start)


def matrices_gbs(engine: GPT2Engine, tokens: int) -> float:
    """Bytes per second read by one token's weight matrices (every block's four, the head)
    called back to back on one row at the sampling dtype, through the kernel the engine
    samples with (midilm's CPU kernel where it runs, else PyTorch's): the matrix-vector
    kernel alone."""
    weights = engine.weights(engine.dtype_for(1))
    width = engine.n_embd
    if weights.native is not None:  # the same fp16 matrices and kernel the blocks run
        kernels = engine.kernels
        calls = [
            (
                kernels.linear(block[f"{name}_w"], block[f"{name}_b"], gelu=name == "fc"),
                4 * width if name == "out" else width,
            )
            for block in weights.native.blocks
            for name in ("qkv", "proj", "fc", "out")
        ]
        calls.append((kernels.linear(weights.native.head, None), width))
        dtype = torch.float32  # the kernel reads float32 rows
    else:
        calls = [
            (f, x)
            for block in weights.blocks
            for f, x in (
                (block.qkv, width),
                (block.proj, width),
                (block.fc_gelu, width),
                (block.out, 4 * width),
            )
        ] + [(weights.lm_head, width)]
        dtype = weights.dtype
    rows = [torch.randn(1, 1, width).to(dtype) for _, width in calls]
    with torch.inference_mode():
        start = time.perf_counter()
        for _ in range(tokens):
            for (linear, _), row in zip(calls, rows, strict=True):
                linear(row)
        seconds = (time.perf_counter() - start) / tokens
    return engine.bytes_per_token(weights.dtype) / seconds / 1e9


def midilm_tokens_per_s(
    engine: GPT2Engine, tok: MMMTokenizer, tokens: int, batch: int, grammar: bool, seed: int = 0
) -> float:
    """Free sampling inside one bar-less stream: the mask is the MMM grammar's."""
    loop = TokenLoop(
        engine, top_k=50, use_grammar=grammar, generator=torch.Generator().manual_seed(seed)
    )
    prompt = tok.text_to_ids(
        "PIECE_START TIME_SIGNATURE=4/4 TRACK_START INST=0 DENSITY=5 BAR_START"
    )
    states = [tok.grammar().start() for _ in range(batch)]
    cache, rows = loop.start(prompt, states)
    count = 0
    start = time.perf_counter()
    for _ in loop.steps(cache, rows, lambda row, c: len(c.ids) >= tokens):
        count += 1
    return count / (time.perf_counter() - start)


def hf_tokens_per_s(model, tok, tokens: int) -> float:
    prompt = torch.tensor(
        [tok.text_to_ids("PIECE_START TIME_SIGNATURE=4/4 TRACK_START INST=0 DENSITY=5 BAR_START")]
    )
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.generate(prompt, max_new_tokens=8, do_sample=True, pad_token_id=tok.pad_id)
        start = time.perf_counter()
        model.generate(
            prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=tokens,
            min_new_tokens=tokens, do_sample=True, top_k=50, use_cache=True,
            pad_token_id=tok.pad_id,
        )  # fmt: skip
    return tokens / (time.perf_counter() - start)


def default_piece_seconds(runs: int = 3) -> float:
    """``midilm generate -o song.mid`` in a fresh interpreter each time, best of ``runs``."""
    best = float("inf")
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(runs):
            start = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "midilm", "generate", "-q", "-o", f"{folder}/song.mid"],
                check=True, stdout=subprocess.DEVNULL,
            )  # fmt: skip
            best = min(best, time.perf_counter() - start)
    return best


def trained_small(tok: MMMTokenizer, seconds: float) -> GPT2LMHeadModel:
    from midilm.score import import_music21, music21_specs

    windows = []
    for spec in music21_specs("music21:bach")[:60]:
        try:
            windows += [w.ids for w in tok.windows(import_music21(spec))]
        except ValueError:
            continue
    torch.manual_seed(0)
    model = GPT2LMHeadModel(get_preset("small").gpt2_config(tok.vocab_size, pad_id=tok.pad_id))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        batch = [windows[i][:512] for i in rng.integers(len(windows), size=8)]
        ids = torch.full((8, max(map(len, batch))), tok.pad_id)
        for row, b in enumerate(batch):
            ids[row, : len(b)] = torch.tensor(b)
        model(input_ids=ids, labels=ids.masked_fill(ids == tok.pad_id, -100)).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--train-seconds", type=float, default=60.0)
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads (default: PyTorch's choice)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    tok = MMMTokenizer(meter_tokens=True)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(
        get_preset("mmm-gpt2").gpt2_config(tok.vocab_size, pad_id=tok.pad_id)
    ).eval()
    engine = GPT2Engine(model)
    pytorch_engine = GPT2Engine(model, native=False)  # the same model on PyTorch's kernels
    params = sum(p.numel() for p in model.parameters())
    buffer = torch.ones(512 * 2**20 // 4, dtype=torch.float32)
    runs = {
        "read_bandwidth_gbs": lambda: read_bandwidth_gbs(buffer),
        "tokens_per_s_batch1": lambda: midilm_tokens_per_s(engine, tok, args.tokens, 1, True),
        "hf_generate_tokens_per_s": lambda: hf_tokens_per_s(model, tok, args.tokens),
        "tokens_per_s_batch1_no_grammar": lambda: midilm_tokens_per_s(
            engine, tok, args.tokens, 1, False
        ),
        "batch8_tokens_per_s": lambda: midilm_tokens_per_s(engine, tok, args.tokens, 8, True),
        "forward_tokens_per_s": lambda: forward_tokens_per_s(engine, args.tokens),
        "forward_tokens_per_s_batch8": lambda: forward_tokens_per_s(engine, args.tokens, 8),
        "pytorch_forward_tokens_per_s": lambda: forward_tokens_per_s(pytorch_engine, args.tokens),
        "pytorch_forward_tokens_per_s_batch8": lambda: forward_tokens_per_s(
            pytorch_engine, args.tokens, 8
        ),
        "matrices_gbs": lambda: matrices_gbs(engine, args.tokens),
    }
    for run in runs.values():  # warm-up: first calls pay for allocation and kernel choice
        run()
    rounds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):  # interleaved, so that a busy spell hits every figure
        for name, run in runs.items():
            rounds[name].append(run())
    best = {name: max(values) for name, values in rounds.items()}
    noise = {name: round(1 - min(v) / max(v), 2) for name, v in rounds.items()}
    ours, hf, bandwidth = (
        best["tokens_per_s_batch1"], best["hf_generate_tokens_per_s"], best["read_bandwidth_gbs"]
    )  # fmt: skip
    no_grammar, batch8 = best["tokens_per_s_batch1_no_grammar"], best["batch8_tokens_per_s"]
    weight_bytes = engine.bytes_per_token(engine.dtype_for(1))
    bound = bandwidth * 1e9 / weight_bytes
    per_round = [
        round(t * weight_bytes / (b * 1e9), 3)
        for t, b in zip(rounds["tokens_per_s_batch1"], rounds["read_bandwidth_gbs"], strict=True)
    ]
    # The two ratios again round by round (each round runs both sides back to back).
    grammar_per_round = [
        round(1 - on / off, 3)
        for on, off in zip(
            rounds["tokens_per_s_batch1"], rounds["tokens_per_s_batch1_no_grammar"], strict=True
        )
    ]
    batch8_per_round = [
        round(b8 / b1, 2)
        for b8, b1 in zip(rounds["batch8_tokens_per_s"], rounds["tokens_per_s_batch1"], strict=True)
    ]

    small = trained_small(tok, args.train_seconds)
    small_loop = TokenLoop(GPT2Engine(small), generator=torch.Generator().manual_seed(0))
    requests = [TrackRequest(p) for p in (52, 52, 52, 52)]
    finish(compose(small_loop, tok, requests, bars=4))  # warm-up
    start = time.perf_counter()
    (piece,) = finish(compose(small_loop, tok, requests, bars=8))
    compose_seconds = time.perf_counter() - start

    default_piece = default_piece_seconds()

    capabilities = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
    flags = [f for f in ("avx512_bf16", "avx512_fp16", "amx_bf16") if capabilities.get(f)]
    cpu = f"{capabilities.get('cpu_name', '?')} ({', '.join(flags) or 'no bf16/fp16'})"
    print(f"model: mmm-gpt2 shape, {params / 1e6:.1f}M parameters; one row samples in "
          f"{engine.dtype_for(1)}, eight in {engine.dtype_for(8)}; {torch.get_num_threads()} "
          f"threads; CPU {cpu}")  # fmt: skip
    print(f"batch 1, grammar on:   {ours:8.1f} tokens/s   (HF generate fp32: {hf:.1f})")
    print(f"batch 1, grammar off:  {no_grammar:8.1f} tokens/s")
    print(f"forward alone:         {best['forward_tokens_per_s']:8.1f} tokens/s, batch 8 "
          f"{best['forward_tokens_per_s_batch8']:.1f} in all")  # fmt: skip
    print(f"  on PyTorch's kernels: {best['pytorch_forward_tokens_per_s']:8.1f} tokens/s, batch 8 "
          f"{best['pytorch_forward_tokens_per_s_batch8']:.1f} in all "
          f"(midilm's CPU kernels {'on' if engine.kernels else 'unavailable here'})")  # fmt: skip
    print(f"batch 8, grammar on:   {batch8:8.1f} tokens/s in all")
    print(f"memory read bandwidth: {bandwidth:8.1f} GB/s; weights per token "
          f"{weight_bytes / 1e6:.1f} MB → bound {bound:.0f} tokens/s")  # fmt: skip
    print(
        f"weight matrices alone: {best['matrices_gbs']:8.1f} GB/s read "
        f"({best['matrices_gbs'] / bandwidth:.2f} of the bandwidth)"
    )
    print(f"batch 1 over the bound of its own round: {per_round}")
    print(f"grammar cost, round by round: {grammar_per_round}")
    print(f"batch 8 over batch 1, round by round: {batch8_per_round}")
    notes = sum(len(track.pitch) for track in piece.tracks)
    print(f"compose 8 bars × 4 tracks (small preset): {compose_seconds:.2f} s, {notes} notes")
    print(f"midilm generate -o song.mid (bundled model, whole process): {default_piece:.2f} s")
    print(f"noise over {args.repeats} rounds, (best − worst) / best: {noise}")
    print(json.dumps({
        "tokens_per_s_batch1": round(ours, 1),
        "hf_generate_tokens_per_s": round(hf, 1),
        "speedup_vs_hf_generate": round(ours / hf, 2),
        "read_bandwidth_gbs": round(bandwidth, 1),
        "weight_bytes_per_token": weight_bytes,
        "bandwidth_bound_tokens_per_s": round(bound, 1),
        "fraction_of_bandwidth_bound": round(ours / bound, 3),
        "forward_tokens_per_s": round(best["forward_tokens_per_s"], 1),
        "forward_fraction_of_bandwidth_bound": round(best["forward_tokens_per_s"] / bound, 3),
        "fraction_of_bandwidth_bound_per_round": per_round,
        "matrices_gbs": round(best["matrices_gbs"], 1),
        "matrices_fraction_of_bandwidth": round(best["matrices_gbs"] / bandwidth, 3),
        "forward_tokens_per_s_batch8": round(best["forward_tokens_per_s_batch8"], 1),
        "cpu_kernels": engine.kernels is not None,
        "pytorch_forward_tokens_per_s": round(best["pytorch_forward_tokens_per_s"], 1),
        "pytorch_forward_tokens_per_s_batch8": round(
            best["pytorch_forward_tokens_per_s_batch8"], 1
        ),
        "cpu_kernels_speedup": round(
            best["forward_tokens_per_s"] / best["pytorch_forward_tokens_per_s"], 2
        ),
        "cpu_kernels_speedup_batch8": round(
            best["forward_tokens_per_s_batch8"] / best["pytorch_forward_tokens_per_s_batch8"], 2
        ),
        "tokens_per_s_batch1_no_grammar": round(no_grammar, 1),
        "grammar_cost": round(1 - ours / no_grammar, 3),
        "grammar_cost_per_round": grammar_per_round,
        "batch8_tokens_per_s": round(batch8, 1),
        "batch8_over_batch1": round(batch8 / ours, 2),
        "batch8_over_batch1_per_round": batch8_per_round,
        "compose_8x4_seconds": round(compose_seconds, 2),
        "compose_8x4_notes": notes,
        "default_piece_seconds": round(default_piece, 2),
        "sampling_dtype_batch1": str(engine.dtype_for(1)).removeprefix("torch."),
        "sampling_dtype_batch8": str(engine.dtype_for(8)).removeprefix("torch."),
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "noise": noise,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
