"""Sampling: a lean GPT-2 forward with a KV cache, small logit processors, and the
grammar-masked token loop that the tasks (compose, continue, infill, add a track) drive."""

from __future__ import annotations

from midilm.sampling.engine import GPT2Engine, KVCache, default_dtype
from midilm.sampling.loop import Candidate, SamplingError, TokenLoop
from midilm.sampling.processors import sample_next, top_k_filter, top_p_filter
from midilm.sampling.tasks import TASKS, GenerationEvent

__all__ = [
    "TASKS",
    "Candidate",
    "GPT2Engine",
    "GenerationEvent",
    "KVCache",
    "SamplingError",
    "TokenLoop",
    "default_dtype",
    "sample_next",
    "top_k_filter",
    "top_p_filter",
]
