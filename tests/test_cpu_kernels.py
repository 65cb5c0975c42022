"""midilm's CPU kernels: where the machine allows they load, they compute what PyTorch
computes (the engine gives the same logits and caches either way), and wherever they cannot
run (switched off, no compiler, heads they do not take) sampling goes on through PyTorch."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel

from midilm.sampling import GPT2Engine, cpu_kernels

KERNELS = cpu_kernels.load()
needs_kernels = pytest.mark.skipif(
    KERNELS is None, reason=f"midilm's CPU kernels do not run here: {cpu_kernels._unsupported()}"
)


def gpt2(n_embd: int = 64, n_head: int = 4, n_layer: int = 2, seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=75, n_positions=96, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
        activation_function="gelu_new",
    )  # fmt: skip
    return GPT2LMHeadModel(config).eval()


def test_kernels_load_wherever_the_machine_allows_them():
    """A machine with what they need (x86-64 Linux, AVX-512, a C compiler, PyTorch on GNU
    OpenMP) builds them; anything else says why not."""
    reason = cpu_kernels._unsupported()
    if reason is None:
        assert KERNELS is not None, "the kernels failed to build or to match PyTorch"
        assert torch.float16 in KERNELS.dtypes
    else:
        assert KERNELS is None


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize(("rows", "width", "out", "gelu"), [
    (1, 512, 1536, False), (1, 70, 33, True), (5, 200, 64, True), (11, 64, 40, False),
])  # fmt: skip
def test_linear_kernel_matches_pytorch(dtype, rows, width, out, gelu):
    assert KERNELS is not None
    if dtype not in KERNELS.dtypes:
        pytest.skip("this CPU has no bf16 dot product")
    generator = torch.Generator().manual_seed(rows)
    weight = torch.randn(out, width, generator=generator).div(8).to(dtype)
    bias = torch.randn(out, generator=generator)
    x = torch.randn(rows, width, generator=generator)
    reference = x.to(dtype).float() if dtype == torch.bfloat16 else x  # what bf16 reads
    want = F.linear(reference, weight.float(), bias)
    if gelu:
        want = F.gelu(want, approximate="tanh")
    got = KERNELS.linear(weight, bias, gelu=gelu)(x)
    assert got.shape == want.shape and got.dtype == torch.float32
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4)


@needs_kernels
@pytest.mark.parametrize("batch", [1, 3, 8, 11])
def test_engine_on_the_kernels_equals_the_engine_on_pytorch(batch):
    """Same logits at every step, same keys and values in the cache: one row samples
    through the fp16 kernels, several through the bf16 ones (eight rows a pass)."""
    model = gpt2()
    native, plain = GPT2Engine(model), GPT2Engine(model, native=False)
    assert native.kernels is not None and plain.kernels is None
    ids = torch.randint(0, 75, (batch, 40), generator=torch.Generator().manual_seed(batch))
    caches = native.new_cache(batch, 64), plain.new_cache(batch, 64)
    native.forward(ids[:, :10], caches[0])
    plain.forward(ids[:, :10], caches[1])
    tolerance = 2e-3 if batch == 1 else 2e-2  # bf16 rounds the products' inputs too
    with torch.no_grad():
        reference = model(ids).logits
    for t in range(10, 40):
        got = native.forward(ids[:, t : t + 1], caches[0])
        want = plain.forward(ids[:, t : t + 1], caches[1])
        assert torch.allclose(got, want, atol=tolerance), t
        assert torch.allclose(got, reference[:, t], atol=tolerance), t
    assert caches[0].length == caches[1].length == 40
    assert caches[0].kv.dtype == torch.float16  # half the bytes attention reads
    assert torch.allclose(
        caches[0].kv[..., :40, :].float(), caches[1].kv[..., :40, :], atol=tolerance
    )


@needs_kernels
def test_a_cache_cut_to_some_rows_goes_on_through_the_kernels():
    model = gpt2()
    engine = GPT2Engine(model)
    ids = torch.randint(0, 75, (4, 20), generator=torch.Generator().manual_seed(5))
    cache = engine.new_cache(4, 32)
    engine.forward(ids[:, :12], cache)
    kept = cache.select(torch.tensor([2]))
    for t in range(12, 20):
        got = engine.forward(ids[2:3, t : t + 1], kept)
    with torch.no_grad():
        want = model(ids[2:3]).logits[:, -1]
    assert torch.allclose(got, want, atol=2e-3)


@needs_kernels
def test_threads_sampling_from_one_engine_at_once_get_what_each_would_alone():
    """The server's workers share a loaded model: each thread decodes its own rows."""
    engine = GPT2Engine(gpt2())
    prompts = [
        torch.randint(0, 75, (1, 30), generator=torch.Generator().manual_seed(s)) for s in range(4)
    ]

    def decode(ids: torch.Tensor) -> torch.Tensor:
        cache = engine.new_cache(1, 32)
        engine.forward(ids[:, :2], cache)
        return torch.stack([engine.forward(ids[:, t : t + 1], cache) for t in range(2, 30)])

    alone = [decode(ids) for ids in prompts]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(decode, prompts))
    for one, other in zip(alone, together, strict=True):
        assert torch.equal(one, other)


def test_heads_the_kernel_cannot_take_run_on_pytorch():
    """Heads of 8 floats are not whole vectors: the engine samples through PyTorch."""
    model = gpt2(n_embd=32, n_head=4)
    engine = GPT2Engine(model)
    assert engine.kernels is None
    ids = torch.randint(0, 75, (1, 12), generator=torch.Generator().manual_seed(6))
    cache = engine.new_cache(1, 16)
    engine.forward(ids[:, :11], cache)
    got = engine.forward(ids[:, 11:], cache)
    with torch.no_grad():
        want = model(ids).logits[:, -1]
    assert torch.allclose(got, want, atol=2e-3)


def _load_in_a_fresh_process(tmp_path, **env: str) -> str:
    """What ``load()`` gives in a new interpreter with ``env`` set, and the engine's logits
    of a tiny model there (sampling must work either way)."""
    script = (
        "import torch; from transformers import GPT2Config, GPT2LMHeadModel\n"
        "from midilm.sampling import GPT2Engine, cpu_kernels\n"
        "kernels = cpu_kernels.load()\n"
        "torch.manual_seed(0)\n"
        "config = GPT2Config(vocab_size=20, n_positions=16, n_embd=32, n_layer=1, n_head=2)\n"
        "engine = GPT2Engine(GPT2LMHeadModel(config).eval())\n"
        "cache = engine.new_cache(1)\n"
        "engine.forward(torch.tensor([[1, 2, 3]]), cache)\n"
        "logits = engine.forward(torch.tensor([[4]]), cache)\n"
        "print('kernels' if kernels else 'none', logits.shape[-1])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True,
        env={**os.environ, "MIDILM_CACHE_DIR": str(tmp_path), **env},
    )  # fmt: skip
    return result.stdout.strip()


@pytest.mark.parametrize("env", [{"MIDILM_CPU_KERNELS": "0"}, {"CC": "/bin/false"}], ids=str)
def test_switched_off_or_without_a_compiler_sampling_uses_pytorch(tmp_path, env):
    assert _load_in_a_fresh_process(tmp_path, **env) == "none 20"
    assert not list(tmp_path.rglob("*.so"))


@needs_kernels
def test_kernels_are_built_once_per_machine_and_reused(tmp_path):
    assert _load_in_a_fresh_process(tmp_path) == "kernels 20"
    (built,) = tmp_path.rglob("*.so")
    first = built.stat().st_mtime_ns
    assert _load_in_a_fresh_process(tmp_path) == "kernels 20"  # loads the same file
    assert built.stat().st_mtime_ns == first
    assert not [p for p in built.parent.iterdir() if p != built]  # no temporary left behind
