"""REMI continuation, the seed system's use: tokenize a prompt, generate, decode — with a
grammar mask, any length, and the prompt kept as it was."""

from __future__ import annotations

import pytest
import torch

from midilm.sampling import GPT2Engine, TokenLoop
from midilm.sampling.remi_tasks import continue_remi
from midilm.sampling.script import finish
from midilm.tokenization.remi import REMITokenizer
from sampling_helpers import train_tiny


@pytest.fixture(scope="module")
def remi(bach_scores) -> REMITokenizer:
    return REMITokenizer.train([s for _, s in bach_scores[:30]], vocab_size=300)


@pytest.fixture(scope="module")
def engine(bach_scores, remi) -> GPT2Engine:
    sequences = []
    for _, score in bach_scores[:30]:
        ids = remi.encode(score)
        sequences += [[remi.bos_id, *ids[i : i + 200]] for i in range(0, len(ids), 150)]
    return GPT2Engine(train_tiny(sequences, remi.vocab_size, remi.pad_id), dtype=torch.float32)


def _loop(engine, remi, seed):
    return TokenLoop(
        engine, generator=torch.Generator().manual_seed(seed), banned=[remi.eos_id, remi.pad_id]
    )


def _notes(score):
    return sorted((t.name, n.time, n.duration, n.pitch) for t in score.tracks for n in t.notes)


@pytest.mark.parametrize("seed", range(3))
def test_continuation_adds_bars_and_keeps_the_prompt(engine, remi, bach_scores, seed):
    prompt = bach_scores[40][1]
    out = finish(continue_remi(_loop(engine, remi, seed), remi, prompt, bars=4, n_positions=1024))
    assert out.ticks_per_quarter == prompt.ticks_per_quarter
    assert [t.name for t in out.tracks] == [t.name for t in prompt.tracks]
    assert list(out.tempos) == list(prompt.tempos) and list(out.time_signatures) == list(
        prompt.time_signatures
    )
    before = _notes(prompt)
    after = _notes(out)
    assert set(before) <= set(after)
    new = sorted(set(after) - set(before))
    assert new, "the continuation holds notes"
    bar = 4 * prompt.ticks_per_quarter
    prompt_bars = sum(remi.expansion(i).count("Bar_None") for i in remi.encode(prompt))
    assert all(prompt_bars * bar <= t < (prompt_bars + 4) * bar for _, t, _, _ in new)


def test_long_continuation_slides_past_the_context(engine, remi, bach_scores):
    prompt = bach_scores[41][1]
    out = finish(continue_remi(_loop(engine, remi, 1), remi, prompt, bars=24, n_positions=256))
    bar = 4 * prompt.ticks_per_quarter
    prompt_bars = sum(remi.expansion(i).count("Bar_None") for i in remi.encode(prompt))
    last = max(n.time for t in out.tracks for n in t.notes)
    assert last >= (prompt_bars + 12) * bar
