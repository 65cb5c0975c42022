"""A lean GPT-2 forward for sampling: a preallocated KV cache and nothing else.

Hugging Face ``generate`` spends as long on bookkeeping as on arithmetic for a model this
small; sampling music token by token (with a grammar mask between tokens) wants one call per
token that reads the weights once. :class:`GPT2Engine` takes the weights of a trained
``GPT2LMHeadModel`` and runs the same computation (pre-norm blocks, GELU-tanh, learned
positions, tied head) with ``scaled_dot_product_attention`` over a cache of fixed size.

It knows nothing about tokens, grammar or sampling: ids in, last-position logits out.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["GPT2Engine", "KVCache", "default_dtype"]


def default_dtype(device: torch.device, batch: int = 1) -> torch.dtype:
    """The dtype to sample in: bf16 on GPUs that have it, fp16 on other GPUs. On CPU,
    fp16 for one row (PyTorch's fp16 matrix-vector product reads half the bytes of fp32,
    and sampling is bound by memory bandwidth) and bf16 for several (its fp16 matrix
    product is slow; measured by ``benchmarks/generate.py``). Logits are taken in fp32."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float16 if batch == 1 else torch.bfloat16


@dataclass
class KVCache:
    """Keys and values of every layer, ``(layers, batch, heads, max_len, head_dim)``;
    positions ``[0, length)`` are filled."""

    keys: torch.Tensor
    values: torch.Tensor
    length: int = 0

    @property
    def capacity(self) -> int:
        return self.keys.shape[3]

    def select(self, rows: torch.Tensor) -> KVCache:
        """A cache holding only the given batch rows (candidates that go on)."""
        return KVCache(self.keys[:, rows].clone(), self.values[:, rows].clone(), self.length)

    def truncate(self, length: int) -> None:
        """Forget everything after ``length`` tokens (to re-feed a shorter context)."""
        self.length = min(self.length, length)


class GPT2Engine:
    """Inference-only GPT-2 over the weights of a Hugging Face ``GPT2LMHeadModel``."""

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        config = model.config
        self.device = (
            torch.device(device) if device is not None else next(model.parameters()).device
        )
        self.dtype = dtype or default_dtype(self.device)  # the dtype of one row
        self.n_layer = config.n_layer
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.head_dim = config.n_embd // config.n_head
        self.n_positions = config.n_positions
        self.vocab_size = config.vocab_size
        self.eps = config.layer_norm_epsilon
        self._state = {k: v.detach() for k, v in model.state_dict().items()}
        self._prefix = "transformer." if "transformer.wte.weight" in self._state else ""
        self._weights: dict[torch.dtype, _Weights] = {}
        if getattr(config, "scale_attn_by_inverse_layer_idx", False) or getattr(
            config, "reorder_and_upcast_attn", False
        ):
            raise ValueError("GPT2Engine supports the standard GPT-2 attention only")
        self._fixed_dtype = dtype
        self.weights(self.dtype)

    def dtype_for(self, batch: int) -> torch.dtype:
        return self._fixed_dtype or default_dtype(self.device, batch)

    def weights(self, dtype: torch.dtype) -> _Weights:
        """The weights in ``dtype``, converted once (a model is small; both CPU dtypes fit)."""
        if dtype not in self._weights:
            self._weights[dtype] = _Weights.convert(self._state, self._prefix, self.n_layer,
                                                    self.device, dtype)  # fmt: skip
        return self._weights[dtype]

    def bytes_per_token(self, dtype: torch.dtype | None = None) -> int:
        """Bytes of weights read to produce one token at ``dtype`` (default: one row's)."""
        w = self.weights(dtype or self.dtype)
        tensors = [w.lm_head, *w.ln_f]
        for block in w.blocks:
            for pair in block.values():
                tensors.extend(pair)
        embeddings = 2 * self.n_embd * w.wte.element_size()  # one row of wte and of wpe
        return sum(t.numel() * t.element_size() for t in tensors) + embeddings

    def new_cache(self, batch: int = 1, max_len: int | None = None) -> KVCache:
        """An empty cache for ``batch`` rows, in the dtype sampling ``batch`` rows runs in."""
        length = min(max_len or self.n_positions, self.n_positions)
        shape = (self.n_layer, batch, self.n_head, length, self.head_dim)
        dtype = self.dtype_for(batch)
        return KVCache(
            torch.empty(shape, dtype=dtype, device=self.device),
            torch.empty(shape, dtype=dtype, device=self.device),
        )

    @torch.inference_mode()
    def forward(self, ids: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Feed ``ids`` (B, T) after what the cache holds; return the logits of the last
        position, ``(B, vocab)`` in float32. The cache grows by T."""
        batch, steps = ids.shape
        start = cache.length
        if start + steps > cache.capacity:
            raise ValueError(
                f"context of {start + steps} tokens exceeds the cache ({cache.capacity} positions)"
            )
        w = self.weights(cache.keys.dtype)
        positions = torch.arange(start, start + steps, device=self.device)
        x = w.wte[ids] + w.wpe[positions]  # (B, T, C)
        mask = None
        if steps > 1 and start > 0:
            # Each new position sees the whole past and the new positions up to itself.
            rows = torch.arange(steps, device=self.device)[:, None]
            cols = torch.arange(start + steps, device=self.device)[None, :]
            mask = cols <= rows + start
        for layer, block in enumerate(w.blocks):
            h = F.layer_norm(x, (self.n_embd,), *block["ln_1"], self.eps)
            qkv = F.linear(h, *block["qkv"])  # (B, T, 3C)
            q, k, v = qkv.view(batch, steps, 3, self.n_head, self.head_dim).permute(2, 0, 3, 1, 4)
            cache.keys[layer, :batch, :, start : start + steps] = k
            cache.values[layer, :batch, :, start : start + steps] = v
            keys = cache.keys[layer, :batch, :, : start + steps]
            values = cache.values[layer, :batch, :, : start + steps]
            attn = F.scaled_dot_product_attention(
                q, keys, values, attn_mask=mask, is_causal=steps > 1 and start == 0
            )  # (B, H, T, D)
            attn = attn.transpose(1, 2).reshape(batch, steps, self.n_embd)
            x = x + F.linear(attn, *block["proj"])
            h = F.layer_norm(x, (self.n_embd,), *block["ln_2"], self.eps)
            x = x + F.linear(F.gelu(F.linear(h, *block["fc"]), approximate="tanh"), *block["out"])
        cache.length = start + steps
        last = F.layer_norm(x[:, -1], (self.n_embd,), *w.ln_f, self.eps)
        return F.linear(last, w.lm_head).float()


@dataclass
class _Weights:
    """GPT-2's weights in one dtype, laid out for ``F.linear`` (out, in)."""

    wte: torch.Tensor
    wpe: torch.Tensor
    blocks: list[dict[str, tuple[torch.Tensor, torch.Tensor]]]
    ln_f: tuple[torch.Tensor, torch.Tensor]
    lm_head: torch.Tensor

    @classmethod
    def convert(
        cls, state: dict[str, torch.Tensor], prefix: str, n_layer: int, device: torch.device,
        dtype: torch.dtype,
    ) -> _Weights:  # fmt: skip
        def weight(name: str, transpose: bool = False) -> torch.Tensor:
            tensor = state[prefix + name]
            # HF GPT-2 stores linear layers as Conv1D (in, out); F.linear wants (out, in).
            tensor = tensor.t() if transpose else tensor
            return tensor.to(device, dtype).contiguous()

        def pair(name: str, transpose: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
            return weight(f"{name}.weight", transpose), weight(f"{name}.bias")

        blocks = [
            {
                "ln_1": pair(f"h.{i}.ln_1"),
                "qkv": pair(f"h.{i}.attn.c_attn", True),
                "proj": pair(f"h.{i}.attn.c_proj", True),
                "ln_2": pair(f"h.{i}.ln_2"),
                "fc": pair(f"h.{i}.mlp.c_fc", True),
                "out": pair(f"h.{i}.mlp.c_proj", True),
            }
            for i in range(n_layer)
        ]
        wte = weight("wte.weight")
        head = state.get("lm_head.weight")
        lm_head = wte if head is None else head.to(device, dtype).contiguous()
        return cls(wte, weight("wpe.weight"), blocks, pair("ln_f"), lm_head)
