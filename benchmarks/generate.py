"""Sampling speed of midilm's token loop beside Hugging Face ``generate``, in one run.

    python benchmarks/generate.py [--tokens 256] [--repeats 3]

Model: the ``mmm-gpt2`` preset shape with random weights (speed does not depend on them),
on the MMM vocabulary. Figures (the last line is a JSON object with all of them):

- batch-1 tokens/s: midilm (grammar mask on, at its sampling dtype) vs ``model.generate``
  (``use_cache=True``, fp32, the same temperature / top-k) → ``speedup_vs_hf_generate``;
- the memory-bandwidth bound: this machine's measured read bandwidth ÷ the bytes of weights
  read per token at the dtype used → ``fraction_of_bandwidth_bound``;
- the grammar mask's cost: tokens/s lost with the mask on → ``grammar_cost``;
- batch 8 over batch 1, total tokens/s → ``batch8_over_batch1``;
- seconds to compose 8 bars × 4 tracks with the ``small`` preset, trained for a minute on
  chorales first so that its bars have realistic lengths → ``compose_8x4_seconds``.
"""

from __future__ import annotations

import sys
from pathlib import Path

# benchmarks/tokenize.py is named like the standard library's ``tokenize``: keep this
# folder off sys.path, or every import that needs the real one breaks.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers import GPT2LMHeadModel  # noqa: E402

from midilm.model import get_preset  # noqa: E402
from midilm.sampling import GPT2Engine, TokenLoop  # noqa: E402
from midilm.sampling.mmm_tasks import TrackRequest, compose  # noqa: E402
from midilm.tokenization.mmm import MMMTokenizer  # noqa: E402


def read_bandwidth_gbs() -> float:
    """Bytes per second of summing a 512 MiB buffer (reads only), best of five."""
    buffer = torch.ones(512 * 2**20 // 4, dtype=torch.float32)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        buffer.sum()
        best = min(best, time.perf_counter() - start)
    return buffer.numel() * 4 / best / 1e9


def midilm_tokens_per_s(
    engine, tok, tokens: int, batch: int, grammar: bool, seed: int = 0
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
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-seconds", type=float, default=60.0)
    args = parser.parse_args()

    tok = MMMTokenizer(meter_tokens=True)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(
        get_preset("mmm-gpt2").gpt2_config(tok.vocab_size, pad_id=tok.pad_id)
    ).eval()
    engine = GPT2Engine(model)
    params = sum(p.numel() for p in model.parameters())
    best = lambda f: max(f() for _ in range(args.repeats))  # noqa: E731

    ours = best(lambda: midilm_tokens_per_s(engine, tok, args.tokens, 1, True))
    hf = best(lambda: hf_tokens_per_s(model, tok, args.tokens))
    no_grammar = best(lambda: midilm_tokens_per_s(engine, tok, args.tokens, 1, False))
    batch8 = best(lambda: midilm_tokens_per_s(engine, tok, args.tokens, 8, True))
    bandwidth = read_bandwidth_gbs()
    bound = bandwidth * 1e9 / engine.bytes_per_token()

    small = trained_small(tok, args.train_seconds)
    small_loop = TokenLoop(GPT2Engine(small), generator=torch.Generator().manual_seed(0))
    requests = [TrackRequest(p) for p in (52, 52, 52, 52)]
    compose(small_loop, tok, requests, bars=4)  # warm-up
    start = time.perf_counter()
    compose(small_loop, tok, requests, bars=8)
    compose_seconds = time.perf_counter() - start

    print(f"model: mmm-gpt2 shape, {params / 1e6:.1f}M parameters, one row samples in "
          f"{engine.dtype_for(1)}, eight in {engine.dtype_for(8)}")  # fmt: skip
    print(f"batch 1, grammar on:   {ours:8.1f} tokens/s   (HF generate fp32: {hf:.1f})")
    print(f"batch 1, grammar off:  {no_grammar:8.1f} tokens/s")
    print(f"batch 8, grammar on:   {batch8:8.1f} tokens/s in all")
    print(f"memory read bandwidth: {bandwidth:8.1f} GB/s; weights per token "
          f"{engine.bytes_per_token() / 1e6:.1f} MB → bound {bound:.0f} tokens/s")  # fmt: skip
    print(f"compose 8 bars × 4 tracks (small preset): {compose_seconds:.2f} s")
    print(json.dumps({
        "tokens_per_s_batch1": round(ours, 1),
        "hf_generate_tokens_per_s": round(hf, 1),
        "speedup_vs_hf_generate": round(ours / hf, 2),
        "read_bandwidth_gbs": round(bandwidth, 1),
        "weight_bytes_per_token": engine.bytes_per_token(),
        "bandwidth_bound_tokens_per_s": round(bound, 1),
        "fraction_of_bandwidth_bound": round(ours / bound, 3),
        "grammar_cost": round(1 - ours / no_grammar, 3),
        "batch8_tokens_per_s": round(batch8, 1),
        "batch8_over_batch1": round(batch8 / ours, 2),
        "compose_8x4_seconds": round(compose_seconds, 2),
        "sampling_dtype_batch1": str(engine.dtype_for(1)).removeprefix("torch."),
        "sampling_dtype_batch8": str(engine.dtype_for(8)).removeprefix("torch."),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
