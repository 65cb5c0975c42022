"""The sampling core: the lean forward equals Hugging Face's, the processors keep what they
promise, and grammar-masked sampling from an untrained model is always well-formed music."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2LMHeadModel

from midilm.model import get_preset
from midilm.sampling import GPT2Engine, SamplingError, TokenLoop, top_k_filter, top_p_filter
from midilm.sampling.processors import sample_next
from midilm.tokenization.mmm import MMMTokenizer


@pytest.fixture(scope="module")
def tok() -> MMMTokenizer:
    return MMMTokenizer()


@pytest.fixture(scope="module")
def model(tok) -> GPT2LMHeadModel:
    torch.manual_seed(0)
    # A long context: an untrained model at high temperature writes very busy bars.
    preset = get_preset("tiny", n_positions=4096)
    return GPT2LMHeadModel(preset.gpt2_config(tok.vocab_size, pad_id=tok.pad_id)).eval()


# Tolerances: fp32 is the same arithmetic; fp16/bf16 round the matrices and their inputs.
DTYPE_TOLERANCE = {torch.float32: 1e-4, torch.float16: 2e-3, torch.bfloat16: 1e-2}


@pytest.mark.parametrize("dtype", list(DTYPE_TOLERANCE), ids=str)
def test_engine_matches_hugging_face_with_a_cache(model, dtype):
    ids = torch.randint(
        0, model.config.vocab_size, (2, 30), generator=torch.Generator().manual_seed(1)
    )
    with torch.no_grad():
        reference = model(ids).logits
    engine = GPT2Engine(model, dtype=dtype)
    cache = engine.new_cache(batch=2, max_len=64)
    tolerance = DTYPE_TOLERANCE[dtype]
    got = engine.forward(ids[:, :20], cache)  # prefill
    assert torch.allclose(got, reference[:, 19], atol=tolerance)
    got = engine.forward(ids[:, 20:25], cache)  # several new tokens after a past
    assert torch.allclose(got, reference[:, 24], atol=tolerance)
    for t in range(25, 30):  # one at a time
        got = engine.forward(ids[:, t : t + 1], cache)
        assert torch.allclose(got, reference[:, t], atol=tolerance)
    assert cache.length == 30


@pytest.mark.parametrize("batch", [1, 3])
def test_default_dtypes_match_hugging_face_for_one_row_and_several(model, batch):
    """One row and several run in different dtypes and kernels by default; both must give
    the model's logits, and a cache cut down to some rows must go on with them."""
    ids = torch.randint(
        0, model.config.vocab_size, (batch, 12), generator=torch.Generator().manual_seed(2)
    )
    with torch.no_grad():
        reference = model(ids).logits
    engine = GPT2Engine(model)
    cache = engine.new_cache(batch=batch, max_len=32)
    engine.forward(ids[:, :8], cache)  # the prompt: several rows, in their dtype
    tolerance = max(DTYPE_TOLERANCE[engine.dtype_for(rows)] for rows in (batch, 8 * batch))
    for t in range(8, 12):
        got = engine.forward(ids[:, t : t + 1], cache)
        assert torch.allclose(got, reference[:, t], atol=tolerance)
    kept = cache.select(torch.tensor([batch - 1]))
    assert kept.length == 12 and kept.batch == 1
    assert torch.equal(kept.keys[:, 0, :, :12], cache.keys[:, batch - 1, :, :12])


def test_a_prompt_fed_once_and_tiled_equals_feeding_every_row(model):
    engine = GPT2Engine(model, dtype=torch.float32)
    prompt = torch.randint(
        0, model.config.vocab_size, (1, 9), generator=torch.Generator().manual_seed(3)
    )
    single = engine.new_cache(1, max_len=16)
    engine.forward(prompt, single)
    tiled = single.tile(3)
    every_row = engine.new_cache(3, max_len=16)
    engine.forward(prompt.expand(3, -1), every_row)
    next_ids = torch.tensor([[1], [2], [3]])
    got, want = engine.forward(next_ids, tiled), engine.forward(next_ids, every_row)
    assert tiled.length == every_row.length == 10
    assert torch.allclose(got, want, atol=1e-5)


def test_top_k_and_top_p_keep_what_they_promise():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isfinite(top_k_filter(logits, 2)).sum() == 2
    kept = torch.isfinite(top_p_filter(logits, 0.7))
    assert kept.tolist() == [[True, True, False, False]]
    assert torch.isfinite(top_p_filter(logits, 0.01)).sum() == 1  # the best token always stays


@pytest.mark.parametrize(
    ("top_k", "top_p"), [(None, None), (3, None), (None, 0.8), (4, 0.7)], ids=str
)
def test_sampling_draws_from_the_filtered_distribution(top_k, top_p):
    """sample_next computes on the few candidates only; it must draw from exactly the
    distribution that the pure filters describe (checked on 40,000 draws at once)."""
    logits = torch.log(torch.tensor([0.3, 0.25, 0.2, 0.1, 0.08, 0.04, 0.02, 0.01]))
    want = top_p_filter(top_k_filter(logits[None], top_k), top_p).softmax(-1)[0]
    draws = sample_next(
        logits.expand(40_000, -1), torch.Generator().manual_seed(0), top_k=top_k, top_p=top_p
    )
    got = torch.bincount(draws, minlength=len(logits)) / len(draws)
    assert torch.allclose(got, want, atol=0.01)
    assert (got[want == 0] == 0).all()


def test_nucleus_beyond_the_first_candidates_and_inside_the_mask():
    """A flat distribution's nucleus holds most of a large vocabulary: it is still drawn
    whole, never outside the mask, never past the nucleus."""
    vocab = 1000
    logits = torch.linspace(0, -1, vocab)[None].expand(20_000, -1)
    allowed = torch.zeros(vocab, dtype=torch.bool)
    allowed[::2] = True  # only even ids are legal
    draws = sample_next(
        logits, torch.Generator().manual_seed(0), top_p=0.9, allowed=allowed.expand(20_000, -1)
    )
    legal = logits[0][allowed].softmax(-1)
    nucleus = int((legal.cumsum(-1) - legal < 0.9).sum())  # legal ids in the nucleus
    assert (draws % 2 == 0).all()
    assert draws.max() == 2 * (nucleus - 1)  # the nucleus's last id is reached, none beyond


def test_a_mask_that_allows_nothing_is_an_error_not_a_silent_id():
    allowed = torch.tensor([[True, False], [False, False]])
    with pytest.raises(ValueError, match="allows no id"):
        sample_next(torch.zeros(2, 2), None, allowed=allowed)


def test_mask_and_argmax():
    logits = torch.tensor([[5.0, 1.0, 0.0]])
    allowed = torch.tensor([[False, True, True]])
    assert sample_next(logits, None, temperature=0, allowed=allowed).item() == 1


@pytest.mark.parametrize("seed", range(5))
def test_masked_sampling_is_well_formed_at_high_temperature(tok, model, seed):
    """An untrained model at temperature 2 still writes valid MMM: the mask guarantees it."""
    bars, tracks = 2, 2
    grammar = tok.grammar(bars=bars, allow_placeholders=False)
    loop = TokenLoop(
        GPT2Engine(model, dtype=torch.float32),
        temperature=2.0,
        generator=torch.Generator().manual_seed(seed),
    )
    track_end = tok.token_to_id("TRACK_END")
    prompt = tok.text_to_ids("PIECE_START")
    cache, rows = loop.start(prompt, [grammar.start() for _ in range(2)])
    # Structure forced where a composer decides it: tracks, instruments, densities.
    plan = iter(range(10**6))

    def force(row, candidate):
        ids = candidate.ids
        if not ids or (ids[-1] == track_end and ids.count(track_end) < tracks):
            return tok.token_to_id("TRACK_START")
        if ids[-1] == tok.token_to_id("TRACK_START"):
            return tok.token_to_id(f"INST={(next(plan) * 7) % 128}")
        return None

    def stop(row, candidate):
        return candidate.ids.count(track_end) == tracks

    for _ in loop.steps(cache, rows, stop, force):
        pass
    for candidate in rows:
        ids = prompt + candidate.ids
        assert grammar.check(ids) == []
        text = tok.ids_to_text(ids)
        assert all(t.count("BAR_START") == bars for t in text.split("TRACK_START")[1:])
        assert len(tok.decode(ids).tracks) == tracks


def test_same_seed_same_music(tok, model):
    def run(seed):
        loop = TokenLoop(
            GPT2Engine(model, dtype=torch.float32), generator=torch.Generator().manual_seed(seed)
        )
        cache, rows = loop.start(
            tok.text_to_ids("PIECE_START TRACK_START INST=0"), [tok.grammar(bars=2).start()]
        )
        end = tok.token_to_id("TRACK_END")
        return [
            i for _, i in loop.steps(cache, rows, lambda r, c: bool(c.ids) and c.ids[-1] == end)
        ]

    assert run(3) == run(3)
    assert run(3) != run(4)


def test_prompt_that_breaks_the_grammar_is_refused(tok, model):
    loop = TokenLoop(GPT2Engine(model))
    with pytest.raises(SamplingError, match="prompt breaks the grammar"):
        loop.start(tok.text_to_ids("PIECE_START BAR_END"), [tok.grammar().start()])
