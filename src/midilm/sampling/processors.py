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
    return torch.where(allowed, logits, NEG_INF)


# Nucleus sampling looks for the nucleus among this many most likely tokens first (it is
# almost always there), and sorts the whole vocabulary only when it is not.
_NUCLEUS_FIRST_LOOK = 64


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
    tokens only; ``temperature=0`` takes the most likely legal token.

    The same distribution as :func:`top_k_filter` then :func:`top_p_filter` then
    ``torch.multinomial`` (except that where values tie at the k-th, exactly ``k`` ids stay),
    computed on the few candidates only: it runs once per token, and a full-vocabulary sort
    and ``multinomial`` cost as much as a layer of a small model."""
    if allowed is not None:
        if not bool(allowed.any(-1).all()):
            raise ValueError("a row of the mask allows no id at all")
        logits = apply_mask(logits, allowed)
    if temperature == 0:
        return logits.argmax(-1)
    if temperature != 1:
        logits = temperature_scale(logits, temperature)
    if top_p is not None and top_p <= 0:
        raise ValueError(f"top_p must be in (0, 1], received {top_p}")
    nucleus = top_p is not None and top_p < 1.0
    vocab = logits.shape[-1]
    if top_k and top_k < vocab:
        values, ids = torch.topk(logits, top_k, dim=-1)  # sorted, most likely first
        probs = values.softmax(-1)  # the top-k distribution, as top_p_filter sees it
    elif nucleus:
        full = logits.softmax(-1)
        probs, ids = torch.topk(full, min(_NUCLEUS_FIRST_LOOK, vocab), dim=-1)
        if not bool((probs.cumsum(-1)[:, -1] >= top_p).all()):  # the nucleus reaches further
            probs, ids = torch.sort(full, dim=-1, descending=True)
    else:
        return _draw(logits.softmax(-1), generator).squeeze(-1)
    if nucleus:
        # The smallest set reaching top_p: drop an id once the mass before it is ≥ top_p.
        probs = probs.masked_fill(probs.cumsum(-1) - probs >= top_p, 0.0)
    return ids.gather(-1, _draw(probs, generator)).squeeze(-1)


def _draw(weights: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One index per row with probability proportional to ``weights`` (B, N) ≥ 0, as
    ``torch.multinomial(weights, 1)`` draws it (the exponential race: the argmax of
    weight / Exp(1)), without its input checks and overhead; ``(B, 1)``."""
    race = torch.empty_like(weights).exponential_(generator=generator)
    return weights.div(race.clamp_min_(torch.finfo(race.dtype).tiny)).argmax(-1, keepdim=True)
