"""A lean GPT-2 forward for sampling: a preallocated KV cache and nothing else.

Hugging Face ``generate`` spends as long on bookkeeping as on arithmetic for a model this
small; sampling music token by token (with a grammar mask between tokens) wants one call per
token that reads the weights once. :class:`GPT2Engine` takes the weights of a trained
``GPT2LMHeadModel`` and runs the same computation (pre-norm blocks, GELU-tanh, learned
positions, tied head) with ``scaled_dot_product_attention`` over a cache of fixed size.

It knows nothing about tokens, grammar or sampling: ids in, last-position logits out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["GPT2Engine", "KVCache", "default_dtype"]


def default_dtype(device: torch.device) -> torch.dtype:
    """The dtype to sample in: bf16 on GPUs that have it, fp16 on other GPUs, and fp16 on
    CPU, where PyTorch's batch-1 fp16 matrix-vector products read half the bytes of fp32
    (sampling is bound by memory bandwidth, and the logits are taken in fp32)."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float16


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
        self.dtype = dtype or default_dtype(self.device)
        self.n_layer = config.n_layer
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.head_dim = config.n_embd // config.n_head
        self.n_positions = config.n_positions
        self.vocab_size = config.vocab_size
        self.eps = config.layer_norm_epsilon
        state = {k: v.detach() for k, v in model.state_dict().items()}
        prefix = "transformer." if "transformer.wte.weight" in state else ""

        def weight(name: str, transpose: bool = False) -> torch.Tensor:
            tensor = state[prefix + name]
            # HF GPT-2 stores linear layers as Conv1D (in, out); F.linear wants (out, in).
            tensor = tensor.t() if transpose else tensor
            return tensor.to(self.device, self.dtype).contiguous()

        self.wte = weight("wte.weight")
        self.wpe = weight("wpe.weight")
        self.blocks = [
            {
                "ln_1": (weight(f"h.{i}.ln_1.weight"), weight(f"h.{i}.ln_1.bias")),
                "qkv": (
                    weight(f"h.{i}.attn.c_attn.weight", True),
                    weight(f"h.{i}.attn.c_attn.bias"),
                ),
                "proj": (
                    weight(f"h.{i}.attn.c_proj.weight", True),
                    weight(f"h.{i}.attn.c_proj.bias"),
                ),
                "ln_2": (weight(f"h.{i}.ln_2.weight"), weight(f"h.{i}.ln_2.bias")),
                "fc": (weight(f"h.{i}.mlp.c_fc.weight", True), weight(f"h.{i}.mlp.c_fc.bias")),
                "out": (weight(f"h.{i}.mlp.c_proj.weight", True), weight(f"h.{i}.mlp.c_proj.bias")),
            }
            for i in range(self.n_layer)
        ]
        self.ln_f = (weight("ln_f.weight"), weight("ln_f.bias"))
        head = state.get("lm_head.weight")
        self.lm_head = self.wte if head is None else head.to(self.device, self.dtype).contiguous()
        self.scale = 1.0 / math.sqrt(self.head_dim)
        if getattr(config, "scale_attn_by_inverse_layer_idx", False) or getattr(
            config, "reorder_and_upcast_attn", False
        ):
            raise ValueError("GPT2Engine supports the standard GPT-2 attention only")

    @property
    def bytes_per_token(self) -> int:
        """Bytes of weights read to produce one token (the bandwidth bound's numerator)."""
        tensors = [self.lm_head, self.ln_f[0], self.ln_f[1]]
        for block in self.blocks:
            for pair in block.values():
                tensors.extend(pair)
        return (
            sum(t.numel() * t.element_size() for t in tensors)
            + self.n_embd * 2 * self.wte.element_size()
        )

    def new_cache(self, batch: int = 1, max_len: int | None = None) -> KVCache:
        length = min(max_len or self.n_positions, self.n_positions)
        shape = (self.n_layer, batch, self.n_head, length, self.head_dim)
        return KVCache(
            torch.empty(shape, dtype=self.dtype, device=self.device),
            torch.empty(shape, dtype=self.dtype, device=self.device),
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
        positions = torch.arange(start, start + steps, device=self.device)
        x = self.wte[ids] + self.wpe[positions]  # (B, T, C)
        mask = None
        if steps > 1 and start > 0:
            # Each new position sees the whole past and the new positions up to itself.
            rows = torch.arange(steps, device=self.device)[:, None]
            cols = torch.arange(start + steps, device=self.device)[None, :]
            mask = cols <= rows + start
        for layer, block in enumerate(self.blocks):
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
        last = F.layer_norm(x[:, -1], (self.n_embd,), *self.ln_f, self.eps)
        return F.linear(last, self.lm_head).float()
