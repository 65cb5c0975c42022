"""Tiny models trained for a few seconds on real chorale windows: enough for it to write
bars of sensible length, so sampling tests run fast and still exercise a real model."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2LMHeadModel

from midilm.model import get_preset
from midilm.sampling import GPT2Engine
from midilm.tokenization.mmm import MMMTokenizer

_SHARED: dict[str, object] = {}
INFILL_TRAINED = {"dataset": {"settings": {"infill_share": 0.5}}}


def tiny_mmm(bach_scores) -> tuple[GPT2LMHeadModel, MMMTokenizer]:
    """The tiny MMM model (every meter) that sampling, CLI and server tests share: trained
    once per test session on 40 chorales."""
    if "mmm" not in _SHARED:
        tok = MMMTokenizer(meter_tokens=True)
        _SHARED["mmm"] = (train_tiny_mmm([s for _, s in bach_scores[:40]], tok), tok)
    return _SHARED["mmm"]  # type: ignore[return-value]


@pytest.fixture(scope="module", name="tok")
def tiny_tok_fixture(bach_scores) -> MMMTokenizer:
    """Fixture ``tok``: :func:`tiny_mmm`'s tokenizer (import it into a test module)."""
    return tiny_mmm(bach_scores)[1]


@pytest.fixture(scope="module", name="engine")
def tiny_engine_fixture(bach_scores) -> GPT2Engine:
    """Fixture ``engine``: :func:`tiny_mmm` as a float32 sampling engine, so that a seed
    gives the same music on every CPU (import it into a test module)."""
    return GPT2Engine(tiny_mmm(bach_scores)[0], dtype=torch.float32)


def tiny_mmm_dir(tmp_path_factory, bach_scores):
    """:func:`tiny_mmm` saved as a model directory, as if trained with infill examples."""
    if "mmm_dir" not in _SHARED:
        from midilm.model.directory import save_model

        model, tok = tiny_mmm(bach_scores)
        folder = tmp_path_factory.mktemp("models") / "tiny-mmm"
        _SHARED["mmm_dir"] = save_model(folder, model, tok, info=INFILL_TRAINED)
    return _SHARED["mmm_dir"]


def train_tiny_mmm(scores, tok: MMMTokenizer, steps: int = 150, seed: int = 0) -> GPT2LMHeadModel:
    windows = [w.ids for s in scores for w in tok.windows(s, bars=4, hop=2)]
    return train_tiny(windows, tok.vocab_size, tok.pad_id, steps=steps, seed=seed)


def train_tiny(
    sequences: list[list[int]], vocab_size: int, pad_id: int, steps: int = 150, seed: int = 0
) -> GPT2LMHeadModel:
    """A few hundred Adam steps of the ``tiny`` preset on the given sequences."""
    torch.manual_seed(seed)
    windows = sequences
    preset = get_preset("tiny", n_positions=1024)
    model = GPT2LMHeadModel(preset.gpt2_config(vocab_size, pad_id=pad_id))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        batch = [windows[i] for i in torch.randint(len(windows), (8,), generator=generator)]
        length = min(max(len(b) for b in batch), 1024)
        ids = torch.full((len(batch), length), pad_id)
        for row, b in enumerate(batch):
            ids[row, : min(len(b), length)] = torch.tensor(b[:length])
        labels = ids.masked_fill(ids == pad_id, -100)
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval()
