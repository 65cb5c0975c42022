"""Small pure logit processors, composed by the sampler.

Each takes logits ``(B, V)`` (float32) and returns new logits; none keeps state. Grammar
masks arrive as boolean ``(B, V)`` tensors from the tokenizer's grammar states.
"""

from __future__ import annotations

import torch

__all__ = ["apply_mask", "sample_next", "temperature_scale", "top_k_filter", "top_p_filter"]

NEG_INF = float("-inf")


def temperature_scale(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 here (0 means argmax), received {temperature}")
    return logits / temperature


def top_k_filter(logits: torch.Tensor, k: int | None) -> torch.Tensor:
    """Keep the ``k`` largest logits of each row (``None`` or 0: keep all)."""
    if not k or k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[:, -1:]
    return logits.masked_fill(logits < kth, NEG_INF)


def top_p_filter(logits: torch.Tensor, p: float | None) -> torch.Tensor:
    """Keep the smallest set of tokens whose probability reaches ``p`` (nucleus sampling);
    the most likely token always stays."""
    if p is None or p >= 1.0:
        return logits
    if p <= 0:
        raise ValueError(f"top_p must be in (0, 1], received {p}")
    sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
    cumulative = sorted_logits.softmax(-1).cumsum(-1)
    drop_sorted = cumulative - sorted_logits.softmax(-1) >= p  # mass before this token already ≥ p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, NEG_INF)


def apply_mask(logits: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Forbid every id whose ``allowed`` entry is False."""
    return logits.masked_fill(~allowed, NEG_INF)


def sample_next(
    logits: torch.Tensor,
    generator: torch.Generator | None,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    allowed: torch.Tensor | None = None,
) -> torch.Tensor:
    """One id per row. The grammar mask comes first, so top-k/top-p choose among legal
    tokens only; ``temperature=0`` takes the most likely legal token."""
    if allowed is not None:
        logits = apply_mask(logits, allowed)
    if temperature == 0:
        return logits.argmax(-1)
    logits = top_p_filter(top_k_filter(temperature_scale(logits, temperature), top_k), top_p)
    probs = logits.softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
