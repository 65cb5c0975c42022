"""A lean GPT-2 forward for sampling: a preallocated KV cache and nothing else.

Hugging Face ``generate`` spends as long on bookkeeping as on arithmetic for a model this
small; sampling music token by token (with a grammar mask between tokens) wants one call per
token that reads the weights once. :class:`GPT2Engine` takes the weights of a trained
``GPT2LMHeadModel`` and runs the same computation (pre-norm blocks, GELU-tanh, learned
positions, tied head) with ``scaled_dot_product_attention`` over a cache of fixed size.

Where the time goes on a CPU (measured on a 2-core AMD EPYC with AVX512-BF16; the choices
below follow from it):

- Sampling one token is a matrix-vector product per weight matrix, bound by the bytes of
  weights read, so the matrices are read in 16 bits: fp16 for one row, bf16 for several
  (candidates sampled together, a prompt's tokens).
- One new position of 1-8 rows (every sampled token) runs through midilm's CPU kernels
  (:mod:`midilm.sampling.cpu_kernels`) where the machine has them: the whole model in one
  call, reading each weight row once. On PyTorch's kernels the same token is ~150 small
  tensor operations, whose overhead weighs as much as the arithmetic; the forward is ~2.2×
  faster for one row and ~2.6× for eight (``benchmarks/generate.py`` prints both).
- Otherwise (a prompt's many tokens, a GPU, a CPU without the kernels):
  PyTorch. For one row its own fp16 matrix-vector kernel is its fastest (oneDNN's bf16 one
  takes ~1.35× as long); for several rows the matrices are bf16 prepacked once into
  oneDNN's blocked layout (``mkldnn._reorder_linear_weight``, the MLP's GELU fused).
- The residual stream, the layer norms and PyTorch's attention stay in float32: PyTorch's
  CPU attention kernel is 7-15× faster in fp32 than in fp16/bf16 for one query, and the
  logits match the fp32 model to about the rounding of the 16-bit matrices. The KV cache
  is fp16 where the kernels sample (with several rows its keys and values of a few hundred
  positions weigh as much as the weights; a prompt through PyTorch upcasts what it attends
  to), else float32. Each forward may pick its matrices' dtype by its row count.

It knows nothing about tokens, grammar or sampling: ids in, last-position logits out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache

import torch
import torch.nn.functional as F

from midilm.sampling import cpu_kernels

__all__ = ["GPT2Engine", "KVCache", "default_dtype"]

Linear = Callable[[torch.Tensor], torch.Tensor]


def default_dtype(device: torch.device, rows: int = 1) -> torch.dtype:
    """The dtype the weight matrices are read in: 16 bits, since sampling is bound by the
    bytes of weights read. GPUs: bf16 where supported, else fp16. CPUs: fp16 for one row
    (PyTorch's own fp16 matrix-vector kernel reads fastest); for several rows (a batch of
    candidates, or a prompt's tokens) bf16 through prepacked oneDNN where the CPU has
    native bf16 (AVX512-BF16 or AMX), else fp32 (PyTorch's fp16 and unpacked bf16 matrix
    products are several times slower for several rows)."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if rows == 1 or device.type != "cpu":
        return torch.float16
    if _cpu_has_native_bf16() and _packed_linear_works(torch.bfloat16):
        return torch.bfloat16
    return torch.float32


@dataclass
class KVCache:
    """Keys and values of every layer side by side, ``kv`` is ``(layers, batch, heads, 2,
    max_len, head_dim)`` (keys at 0, values at 1, so that one copy writes both); positions
    ``[0, length)`` are filled. fp16 where midilm's CPU kernels sample, else float32 on
    CPU (see the module docstring)."""

    kv: torch.Tensor
    length: int = 0
    _views: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = field(
        default_factory=list, repr=False, compare=False
    )

    def layer_views(self) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Per layer ``(kv, keys, values)`` views, ``(batch, heads, 2, max_len, head_dim)``
        and ``(batch, heads, max_len, head_dim)``, made once (``kv`` is never reassigned):
        a token's forward then slices only by position."""
        if not self._views:
            self._views = [(kv, kv.select(2, 0), kv.select(2, 1)) for kv in self.kv.unbind(0)]
        return self._views

    @property
    def keys(self) -> torch.Tensor:
        """``(layers, batch, heads, max_len, head_dim)``, a view."""
        return self.kv[:, :, :, 0]

    @property
    def values(self) -> torch.Tensor:
        """``(layers, batch, heads, max_len, head_dim)``, a view."""
        return self.kv[:, :, :, 1]

    @property
    def batch(self) -> int:
        return self.kv.shape[1]

    @property
    def capacity(self) -> int:
        return self.kv.shape[4]

    def tile(self, batch: int) -> KVCache:
        """A cache of ``batch`` rows that each hold this one-row cache's past (candidates
        that share a prompt: the prompt is fed once, not once per row)."""
        if self.batch != 1:
            raise ValueError(f"only a one-row cache can be tiled, this one has {self.batch}")
        shape = (self.kv.shape[0], batch, *self.kv.shape[2:])
        tiled = torch.empty(shape, dtype=self.kv.dtype, device=self.kv.device)
        tiled.narrow(4, 0, self.length).copy_(self.kv.narrow(4, 0, self.length))
        return KVCache(tiled, self.length)

    def select(self, rows: torch.Tensor) -> KVCache:
        """A cache holding only the given batch rows (candidates that go on)."""
        return KVCache(self.kv[:, rows].clone(), self.length)

    def truncate(self, length: int) -> None:
        """Forget everything after ``length`` tokens (to re-feed a shorter context)."""
        self.length = min(self.length, length)


class GPT2Engine:
    """Inference-only GPT-2 over the weights of a Hugging Face ``GPT2LMHeadModel``.

    ``dtype`` fixes the dtype of the weight matrices; by default each forward picks it by
    the number of rows it multiplies (batch × new tokens, :func:`default_dtype`): a prompt
    of many tokens runs in the dtype made for many rows even when one candidate is sampled.
    The residual stream is float32 on CPU and the cache one dtype, so calls may switch freely.
    ``native=False`` keeps to PyTorch's kernels (to compare with midilm's CPU kernels; the
    environment variable ``MIDILM_CPU_KERNELS=0`` does so for every engine)."""

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
        native: bool = True,
    ) -> None:
        config = model.config
        if getattr(config, "scale_attn_by_inverse_layer_idx", False) or getattr(
            config, "reorder_and_upcast_attn", False
        ):
            raise ValueError("GPT2Engine supports the standard GPT-2 attention only")
        activation = getattr(config, "activation_function", "gelu_new")
        if activation not in ("gelu_new", "gelu_pytorch_tanh"):
            raise ValueError(f"GPT2Engine supports GELU-tanh only, received {activation!r}")
        self.device = (
            torch.device(device) if device is not None else next(model.parameters()).device
        )
        self.n_layer = config.n_layer
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.head_dim = config.n_embd // config.n_head
        self.n_positions = config.n_positions
        self.vocab_size = config.vocab_size
        self.eps = config.layer_norm_epsilon
        self._fixed_dtype = dtype
        self.dtype = self.dtype_for(1)  # the dtype of one row
        self._state = {k: v.detach() for k, v in model.state_dict().items()}
        self._prefix = "transformer." if "transformer.wte.weight" in self._state else ""
        # Every sampled token (one new position per row): midilm's CPU kernels where they run.
        usable = native and self.device.type == "cpu" and cpu_kernels.fits(self.head_dim)
        self.kernels = cpu_kernels.load() if usable else None
        if self.kernels is not None and dtype is not None and dtype not in self.kernels.dtypes:
            self.kernels = None  # matrices fixed to a dtype the kernels do not read
        # The residual stream and PyTorch's attention: fp32 on CPU (its fp32 attention kernel
        # is the fast one); on a GPU the matrices' dtype (flash attention wants 16 bits). The
        # cache: fp16 where the kernels read it (PyTorch's prompts upcast what they attend to).
        self.stream_dtype = torch.float32 if self.device.type == "cpu" else self.dtype
        self.cache_dtype = torch.float16 if self.kernels is not None else self.stream_dtype
        self._weights: dict[torch.dtype, _Weights] = {}
        for rows in (1, 2):  # converted now, so that no forward pays for it
            self.weights(self.dtype_for(rows))

    def dtype_for(self, rows: int) -> torch.dtype:
        """The dtype of the weight matrices when a forward multiplies ``rows`` rows."""
        return self._fixed_dtype or default_dtype(self.device, rows)

    def weights(self, dtype: torch.dtype) -> _Weights:
        """The weights with matrices in ``dtype``, converted once (a model is small)."""
        if dtype not in self._weights:
            self._weights[dtype] = _Weights.convert(
                self._state, self._prefix, self.n_layer, self.device, dtype, self.stream_dtype,
                self.kernels,
            )  # fmt: skip
        return self._weights[dtype]

    def bytes_per_token(self, dtype: torch.dtype | None = None) -> int:
        """Bytes of weights read to produce one token with matrices in ``dtype`` (default:
        one row's): every matrix, bias and norm once, the head (the tied embedding) once,
        one row of the token and position embeddings."""
        return self.weights(dtype or self.dtype).bytes_per_token

    def new_cache(self, batch: int = 1, max_len: int | None = None) -> KVCache:
        """An empty cache for ``batch`` rows."""
        length = min(max_len or self.n_positions, self.n_positions)
        shape = (self.n_layer, batch, self.n_head, 2, length, self.head_dim)
        return KVCache(torch.empty(shape, dtype=self.cache_dtype, device=self.device))

    @torch.inference_mode()
    def forward(self, ids: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Feed ``ids`` (B, T) after what the cache holds; return the logits of the last
        position, ``(B, vocab)`` in float32. The cache grows by T."""
        batch, steps = ids.shape
        start = cache.length
        end = start + steps
        if end > cache.capacity:
            raise ValueError(
                f"context of {end} tokens exceeds the cache ({cache.capacity} positions)"
            )
        w = self.weights(self.dtype_for(batch * steps))
        dtype, C, H, D, eps = w.dtype, self.n_embd, self.n_head, self.head_dim, self.eps
        if batch != cache.batch:
            raise ValueError(f"{batch} rows of ids for a cache of {cache.batch} rows")
        if steps == 1 and w.native is not None:
            return self._forward_native(ids, cache, w)
        mask = None
        if steps == 1:
            x = F.embedding(ids, w.wte) + w.wpe[start]  # (B, 1, C) float32: the residual
        else:
            x = F.embedding(ids, w.wte) + w.wpe[start:end]
            if start > 0:
                # Each new position sees the whole past and the new positions up to itself.
                rows = torch.arange(steps, device=self.device)[:, None]
                cols = torch.arange(end, device=self.device)[None, :]
                mask = cols <= rows + start
        causal = steps > 1 and start == 0
        for block, (past, keys, values) in zip(w.blocks, cache.layer_views(), strict=True):
            h = torch.layer_norm(x, (C,), block.ln_1_w, block.ln_1_b, eps, False).to(dtype)
            qkv = block.qkv(h).view(batch, steps, 3, H, D).transpose(1, 3)  # (B, H, 3, T, D)
            past.narrow(3, start, steps).copy_(qkv.narrow(2, 1, 2))  # keys and values at once
            attn = F.scaled_dot_product_attention(
                qkv.select(2, 0).to(self.stream_dtype),
                keys.narrow(2, 0, end).to(self.stream_dtype),
                values.narrow(2, 0, end).to(self.stream_dtype),
                attn_mask=mask,
                is_causal=causal,
            )  # (B, H, T, D)
            x += block.proj(attn.transpose(1, 2).reshape(batch, steps, C).to(dtype))
            h = torch.layer_norm(x, (C,), block.ln_2_w, block.ln_2_b, eps, False).to(dtype)
            x += block.out(block.fc_gelu(h))
        cache.length = end
        last = torch.layer_norm(x[:, -1], (C,), w.ln_f_w, w.ln_f_b, eps, False).to(dtype)
        return w.lm_head(last).float()

    def _forward_native(self, ids: torch.Tensor, cache: KVCache, w: _Weights) -> torch.Tensor:
        """:meth:`forward` of one position per row through the CPU kernels: one call for
        the whole model, instead of ~150 tensor operations."""
        assert w.native is not None
        start = cache.length
        x = torch.add(F.embedding(ids[:, 0], w.wte), w.wpe[start])  # (B, C), the residual
        logits = w.native(x, cache.kv, start, self.eps)
        cache.length = start + 1
        return logits


@dataclass
class _Block:
    ln_1_w: torch.Tensor
    ln_1_b: torch.Tensor
    qkv: Linear
    proj: Linear
    ln_2_w: torch.Tensor
    ln_2_b: torch.Tensor
    fc_gelu: Linear  # the MLP's first matrix with its GELU-tanh
    out: Linear


@dataclass
class _Weights:
    """GPT-2's weights with the matrices in ``dtype`` (as callables, packed where the CPU
    allows), embeddings and norms in the residual stream's float32."""

    dtype: torch.dtype
    wte: torch.Tensor
    wpe: torch.Tensor
    blocks: list[_Block]
    ln_f_w: torch.Tensor
    ln_f_b: torch.Tensor
    lm_head: Linear
    bytes_per_token: int
    native: cpu_kernels.Decoder | None = None  # one position, few rows: the CPU kernels

    @classmethod
    def convert(
        cls, state: dict[str, torch.Tensor], prefix: str, n_layer: int, device: torch.device,
        dtype: torch.dtype, stream_dtype: torch.dtype, kernels: cpu_kernels.CpuKernels | None,
    ) -> _Weights:  # fmt: skip
        packed = device.type == "cpu" and _packed_linear_works(dtype)
        read = 0  # bytes read per token
        matrices: dict[str, torch.Tensor] = {}  # (out, in) in dtype: the CPU kernels share them

        def vector(name: str) -> torch.Tensor:
            nonlocal read
            tensor = state[prefix + name].to(device, stream_dtype).contiguous()
            read += tensor.numel() * tensor.element_size()
            return tensor

        def linear(name: str | None, weight: torch.Tensor, gelu: bool = False) -> Linear:
            nonlocal read
            # HF GPT-2 stores linear layers as Conv1D (in, out); linear kernels want (out, in).
            weight = matrices[name or "head"] = weight.to(device, dtype).contiguous()
            bias = None if name is None else state[prefix + name + ".bias"].to(device, dtype)
            read += sum(t.numel() * t.element_size() for t in (weight, bias) if t is not None)
            if packed:
                return _packed_linear(weight, bias, gelu)
            if gelu:
                return lambda x: F.gelu(F.linear(x, weight, bias), approximate="tanh")
            return lambda x: F.linear(x, weight, bias)

        def conv1d(name: str, gelu: bool = False) -> Linear:
            return linear(name, state[prefix + name + ".weight"].t(), gelu)

        blocks = [
            _Block(
                vector(f"h.{i}.ln_1.weight"), vector(f"h.{i}.ln_1.bias"),
                conv1d(f"h.{i}.attn.c_attn"), conv1d(f"h.{i}.attn.c_proj"),
                vector(f"h.{i}.ln_2.weight"), vector(f"h.{i}.ln_2.bias"),
                conv1d(f"h.{i}.mlp.c_fc", gelu=True), conv1d(f"h.{i}.mlp.c_proj"),
            )
            for i in range(n_layer)
        ]  # fmt: skip
        ln_f = vector("ln_f.weight"), vector("ln_f.bias")
        wte = state[prefix + "wte.weight"].to(device, stream_dtype).contiguous()
        wpe = state[prefix + "wpe.weight"].to(device, stream_dtype).contiguous()
        read += 2 * wte.shape[1] * wte.element_size()  # one row of each embedding
        head = state.get("lm_head.weight", state[prefix + "wte.weight"])
        weights = cls(dtype, wte, wpe, blocks, *ln_f, linear(None, head), read)
        if kernels is not None and dtype in kernels.dtypes:
            weights.native = _native_convert(state, prefix, n_layer, device, matrices, kernels)
        return weights


def _native_convert(
    state: dict[str, torch.Tensor], prefix: str, n_layer: int, device: torch.device,
    matrices: dict[str, torch.Tensor], kernels: cpu_kernels.CpuKernels,
) -> cpu_kernels.Decoder:  # fmt: skip
    """The decoder over PyTorch's own ``(out, in)`` matrices (fp16 ones shared, not
    copied), biases and norms in float32."""

    def vector(name: str) -> torch.Tensor:
        return state[prefix + name].to(device, torch.float32)

    norms = ("ln_1.weight", "ln_1.bias", "ln_2.weight", "ln_2.bias")
    layers = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
    blocks = [
        cpu_kernels.BlockParams(
            *(vector(f"h.{i}.{n}") for n in norms),
            *(matrices[f"h.{i}.{n}"] for n in layers),
            *(vector(f"h.{i}.{n}.bias") for n in layers),
        )
        for i in range(n_layer)
    ]
    head = matrices["head"]
    ln_f = vector("ln_f.weight"), vector("ln_f.bias")
    return kernels.decoder(blocks, ln_f, head, bf16=head.dtype == torch.bfloat16)


def _packed_linear(weight: torch.Tensor, bias: torch.Tensor | None, gelu: bool) -> Linear:
    """``F.linear`` (and GELU-tanh) through oneDNN with the weight prepacked once."""
    packed = torch.ops.mkldnn._reorder_linear_weight(weight, None)
    op = torch.ops.mkldnn._linear_pointwise.default  # the overload: less dispatch per call
    attr, algorithm = ("gelu", "tanh") if gelu else ("none", "")
    return lambda x: op(x, packed, bias, attr, [], algorithm)


@cache
def _cpu_has_native_bf16() -> bool:
    capabilities = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
    return bool(capabilities.get("avx512_bf16") or capabilities.get("amx_bf16"))


@cache
def _packed_linear_works(dtype: torch.dtype) -> bool:
    """Whether this PyTorch's oneDNN packs and runs linear layers in ``dtype`` on this CPU
    (the ops are internal to PyTorch; any failure means plain ``F.linear``)."""
    if dtype not in (torch.float32, torch.bfloat16) or not torch.backends.mkldnn.is_available():
        return False
    try:
        generator = torch.Generator().manual_seed(0)
        weight = torch.randn(24, 16, generator=generator).to(dtype)
        bias = torch.randn(24, generator=generator).to(dtype)
        x = torch.randn(3, 16, generator=generator).to(dtype)
        with torch.inference_mode():
            got = _packed_linear(weight, bias, gelu=True)(x).float()
        want = F.gelu(F.linear(x.float(), weight.float(), bias.float()), approximate="tanh")
    except (RuntimeError, AttributeError, NotImplementedError):
        return False
    return got.shape == want.shape and torch.allclose(got, want, atol=0.1, rtol=0.02)
