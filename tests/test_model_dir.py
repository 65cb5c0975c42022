"""Model directories: what save_model writes, what the seed's own snippets read from it, what
load_model reads back (ours and the two published layouts), and the errors for files that
are missing or do not belong together. Models are tiny and random; music is real."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import miditok
import numpy as np
import pytest
import symusic
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2LMHeadModel

import midilm
from midilm.errors import ConfigError, TokenizerMismatchError, UnknownTokenError
from midilm.model import (
    GenerationDefaults,
    MusicModel,
    get_preset,
    load_model,
    render_card,
    save_model,
)
from midilm.model import loading as loading_module
from midilm.score import load_midi, save_midi
from midilm.tokenization.mmm import MMMTokenizer
from midilm.tokenization.remi import REMITokenizer
from mmm_helpers import published_vocabulary

MIDITOK2 = Path(__file__).parent / "fixtures" / "miditok2"
MODEL_FILES = [
    "README.md",
    "config.json",
    "generation_config.json",
    "midilm.json",
    "model.safetensors",
    "tokenizer.json",
]
INFO = {
    "model": {"preset": "tiny"},
    "dataset": {"digest": "sha256:0123abcd", "pieces": 8},
    "training": {"learning_rate": 1e-4, "steps": 10},
    "metrics": {"valid_loss": 2.5, "valid_perplexity": 12.18},
    "license": "apache-2.0",
}


def tiny_model(vocab_size: int, seed: int = 0, **ids) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    return GPT2LMHeadModel(get_preset("tiny").gpt2_config(vocab_size, **ids)).eval()


def logits(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits.float()


def piano_merge(score) -> symusic.Score:
    """All non-drum notes in one program-0 track (what MidiTok alone should be given)."""
    merged = symusic.Score(score.ticks_per_quarter)
    track = symusic.Track(name="Piano", program=0)
    for source in score.tracks:
        if not source.is_drum:
            track.notes.extend(source.notes)
    track.notes.sort()
    merged.tracks.append(track)
    return merged


@pytest.fixture(scope="module")
def chorales(bach_scores):
    return [s for _, s in bach_scores[:12]]


@pytest.fixture(scope="module")
def mmm() -> MMMTokenizer:
    return MMMTokenizer()


@pytest.fixture(scope="module")
def mmm_model(mmm):
    return tiny_model(mmm.vocab_size, pad_id=mmm.pad_id)


@pytest.fixture(scope="module")
def mmm_dir(tmp_path_factory, mmm, mmm_model) -> Path:
    folder = tmp_path_factory.mktemp("models") / "chorale-mmm"
    generation = GenerationDefaults(temperature=0.9, top_k=40, top_p=None, max_new_tokens=24)
    return save_model(folder, mmm_model, mmm, generation_defaults=generation, info=INFO)


@pytest.fixture(scope="module")
def remi(chorales) -> REMITokenizer:
    return REMITokenizer.train(chorales[:8], vocab_size=300)


@pytest.fixture(scope="module")
def remi_model(remi):
    return tiny_model(remi.vocab_size, seed=1, pad_id=remi.pad_id)


@pytest.fixture(scope="module")
def remi_dir(tmp_path_factory, remi, remi_model) -> Path:
    folder = tmp_path_factory.mktemp("models") / "chorale-remi"
    generation = GenerationDefaults(max_new_tokens=24)
    return save_model(folder, remi_model, remi, generation_defaults=generation)


# ---------------------------------------------------------------------- saving


def test_saved_directory_has_every_file(mmm_dir, mmm):
    assert sorted(p.name for p in mmm_dir.iterdir()) == sorted(
        [*MODEL_FILES, "tokenizer_config.json"]
    )
    assert [p.name for p in mmm_dir.parent.iterdir()] == [mmm_dir.name]  # no temp folders
    meta = json.loads((mmm_dir / "midilm.json").read_text())
    assert meta["tokenizer"] == {"kind": "mmm", "config": mmm.config.to_dict()}
    assert meta["midilm_version"] == midilm.__version__
    assert meta["dataset"] == INFO["dataset"]
    assert meta["training"] == INFO["training"]
    assert meta["metrics"] == INFO["metrics"]
    assert meta["model"]["preset"] == "tiny"
    assert meta["model"]["n_layer"] == 2 and meta["model"]["vocab_size"] == mmm.vocab_size
    assert meta["model"]["dtype"] == "float32" and meta["model"]["parameters"] > 0
    assert meta["generation"] == {
        "temperature": 0.9,
        "top_k": 40,
        "top_p": None,
        "max_new_tokens": 24,
        "instruments": [],
        "bars": 8,
        "voice_leading": False,
    }
    start = mmm.token_to_id("PIECE_START")
    end = mmm.token_to_id("PIECE_END")
    assert meta["special_ids"] == {"pad": mmm.pad_id, "bos": start, "eos": end}
    hf_generation = json.loads((mmm_dir / "generation_config.json").read_text())
    assert hf_generation["do_sample"] is True
    assert hf_generation["temperature"] == 0.9 and hf_generation["top_k"] == 40
    assert hf_generation["top_p"] == 1.0 and hf_generation["max_new_tokens"] == 24
    assert hf_generation["pad_token_id"] == mmm.pad_id
    assert hf_generation["bos_token_id"] == start


def test_model_card(mmm_dir):
    card = (mmm_dir / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: transformers\n")
    assert "license: apache-2.0" in card
    assert "# chorale-mmm" in card
    for needle in ("sha256:0123abcd", "learning_rate", "| valid_loss | 2.5 |", "preset | tiny"):
        assert needle in card, needle
    assert "AutoTokenizer.from_pretrained(path)" in card
    assert "midilm.load_model" in card
    empty = render_card({"tokenizer": {"kind": "remi"}})
    assert 'REMI(params=path / "tokenizer.json")' in empty
    assert empty.count("Not recorded.") == 5  # model, data, recipe, metrics, generation


def test_from_pretrained_gives_the_same_logits(mmm_dir, mmm, mmm_model, chorales):
    ids = mmm.encode(chorales[0])[:200]
    theirs = AutoModelForCausalLM.from_pretrained(mmm_dir)
    assert torch.allclose(logits(theirs, ids), logits(mmm_model, ids), atol=1e-6)


def test_autotokenizer_reads_real_music_like_our_encoder(mmm_dir, mmm, chorales):
    """The seed's snippet: ``AutoTokenizer.from_pretrained(dir)`` maps MMM text to our ids."""
    theirs = AutoTokenizer.from_pretrained(mmm_dir)
    for score in chorales[:4]:
        text = mmm.encode_text(score)
        ids = theirs(text).input_ids
        assert ids == mmm.encode(score)
        assert theirs.decode(ids) == text


def test_remi_directory_reads_with_miditok(remi_dir, remi, remi_model, chorales):
    """The seed's snippet for REMI: ``REMI(params=dir / "tokenizer.json")``."""
    assert sorted(p.name for p in remi_dir.iterdir()) == MODEL_FILES
    theirs = miditok.REMI(params=remi_dir / "tokenizer.json")
    assert len(theirs) == remi.vocab_size
    for score in chorales[8:]:  # not trained on
        (seq,) = theirs.encode(piano_merge(score))
        assert list(seq.ids) == remi.encode(score)
    ids = remi.encode(chorales[8])[:100]
    hf = AutoModelForCausalLM.from_pretrained(remi_dir)
    assert torch.allclose(logits(hf, ids), logits(remi_model, ids), atol=1e-6)
    hf_generation = json.loads((remi_dir / "generation_config.json").read_text())
    assert (hf_generation["bos_token_id"], hf_generation["eos_token_id"]) == (
        remi.bos_id,
        remi.eos_id,
    )


@pytest.mark.parametrize("kind", ["mmm", "remi"])
def test_card_snippets_run(kind, mmm_dir, remi_dir, chorales, tmp_path, monkeypatch):
    """Every Python block of the card runs as written, against the saved directory."""
    folder = mmm_dir if kind == "mmm" else remi_dir
    save_midi(piano_merge(chorales[9]), tmp_path / "prompt.mid")
    monkeypatch.chdir(tmp_path)
    card = render_card(json.loads((folder / "midilm.json").read_text()), path=str(folder))
    blocks = re.findall(r"```python\n(.*?)```", card, flags=re.S)
    assert len(blocks) == 2
    for block in blocks:
        exec(compile(block, f"<card {kind}>", "exec"), {})
    written = "generated.mid" if kind == "mmm" else "continuation.mid"
    assert (tmp_path / written).is_file()


def test_fp16_weights(tmp_path, mmm, mmm_model, chorales):
    folder = save_model(tmp_path / "half", mmm_model, mmm, dtype="float16")
    with safe_open(str(folder / "model.safetensors"), "pt") as weights:
        assert {weights.get_tensor(k).dtype for k in weights.keys()} == {torch.float16}  # noqa: SIM118
    assert next(mmm_model.parameters()).dtype == torch.float32  # the model itself unchanged
    assert json.loads((folder / "midilm.json").read_text())["model"]["dtype"] == "float16"
    # Packaging a trained model: what training recorded stays, the stored dtype is the truth.
    packaged = save_model(tmp_path / "packaged", mmm_model, mmm, dtype="float16",
                          info={"model": {"preset": "tiny", "dtype": "float32"}})  # fmt: skip
    recorded = json.loads((packaged / "midilm.json").read_text())["model"]
    assert recorded["preset"] == "tiny" and recorded["dtype"] == "float16"
    assert "| weights | float16 |" in (packaged / "README.md").read_text()
    assert (folder / "model.safetensors").stat().st_size < 0.6 * (
        4 * sum(p.numel() for p in mmm_model.parameters())
    )
    ids = mmm.encode(chorales[0])[:64]
    as_stored = load_model(folder, dtype="auto")
    assert as_stored.dtype == torch.float16
    upcast = load_model(folder)  # float32 by default
    assert upcast.dtype == torch.float32
    assert torch.allclose(logits(upcast.model, ids), logits(mmm_model, ids), atol=2e-2)
    with pytest.raises(ConfigError, match="dtype"):
        save_model(tmp_path / "bad", mmm_model, mmm, dtype="int8")


def test_overwrite_replaces_the_whole_directory(tmp_path, mmm, mmm_model, monkeypatch):
    folder = save_model(tmp_path / "m", mmm_model, mmm, info={"metrics": {"loss": 1.0}})
    (folder / "stale.txt").write_text("from an older save")
    other = tiny_model(mmm.vocab_size, seed=7)
    save_model(folder, other, mmm, info={"metrics": {"loss": 0.5}})
    assert not (folder / "stale.txt").exists()
    assert json.loads((folder / "midilm.json").read_text())["metrics"] == {"loss": 0.5}

    # A save that fails half-way leaves the previous model as it was, and no temp folder.
    def broken_card(*args, **kwargs):
        raise RuntimeError("disk full")

    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    monkeypatch.setattr("midilm.model.directory.render_card", broken_card)
    with pytest.raises(RuntimeError, match="disk full"):
        save_model(folder, mmm_model, mmm)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


def test_save_refuses_what_it_must_not_replace(tmp_path, mmm, mmm_model):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a model directory"):
        save_model(notes, mmm_model, mmm)
    assert (notes / "todo.txt").read_text() == "keep me"
    a_file = tmp_path / "model"
    a_file.write_text("")
    with pytest.raises(FileExistsError, match="not a model directory"):
        save_model(a_file, mmm_model, mmm)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert save_model(empty, mmm_model, mmm) == empty  # an empty folder is fine
    with pytest.raises(ConfigError, match="tokenizer is written by save_model"):
        save_model(tmp_path / "x", mmm_model, mmm, info={"tokenizer": {}})
    with pytest.raises(ConfigError, match=r"info\['metrics'\]: not JSON"):
        save_model(tmp_path / "x", mmm_model, mmm, info={"metrics": {"loss": np.float32(1)}})
    with pytest.raises(TokenizerMismatchError, match="425 tokens but the model's embedding"):
        save_model(tmp_path / "x", tiny_model(100), mmm)
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------------- loading


def test_load_model_round_trip(mmm_dir, mmm, mmm_model, chorales):
    lm = midilm.load_model(mmm_dir)
    assert isinstance(lm, MusicModel) and lm.kind == "mmm"
    assert isinstance(lm.tokenizer, MMMTokenizer) and lm.tokenizer.config == mmm.config
    assert not lm.model.training
    assert lm.device.type == "cpu" and lm.dtype == torch.float32
    assert lm.directory == mmm_dir and lm.context_tokens == 512
    assert lm.info["metrics"] == INFO["metrics"]
    assert lm.generation == GenerationDefaults(
        temperature=0.9, top_k=40, top_p=None, max_new_tokens=24
    )
    ids = lm.tokenizer.encode(chorales[1])[:128]
    assert ids == mmm.encode(chorales[1])[:128]
    assert torch.allclose(logits(lm.model, ids), logits(mmm_model, ids), atol=1e-6)
    assert repr(lm).startswith("MusicModel(mmm, 'chorale-mmm', 2 layers × 32 dims")


def test_load_remi_model(remi_dir, remi, chorales):
    lm = load_model(str(remi_dir), device="cpu")
    assert lm.kind == "remi" and lm.tokenizer.config == remi.config
    assert lm.tokenizer.encode(chorales[10]) == remi.encode(chorales[10])
    assert lm.generation.max_new_tokens == 24


def test_bundled_models(tmp_path, monkeypatch, mmm, mmm_model):
    shipped = load_model()  # the default model ships inside the package
    assert shipped.kind == "mmm" and shipped.supports_infill
    assert shipped.directory == loading_module.bundled_model_dir()
    assert len(shipped.generation.instruments) == 4 and shipped.generation.bars == 8
    with pytest.raises(FileNotFoundError, match="no bundled model 'chorales'"):
        load_model("bundled:chorales")
    with pytest.raises(ValueError, match="bundled model names"):
        load_model("bundled:../etc")
    monkeypatch.setattr(loading_module, "_bundled_root", lambda: tmp_path)
    with pytest.raises(FileNotFoundError, match="no bundled model 'default' is installed"):
        load_model()
    save_model(tmp_path / "default", mmm_model, mmm)
    assert load_model().directory == tmp_path / "default"
    assert load_model("bundled:default").kind == "mmm"
    assert loading_module.bundled_models() == ["default"]


# ------------------------------------------------------------ published layouts


@pytest.mark.parametrize("weights", ["model.safetensors", "pytorch_model.bin"])
def test_gpt2_for_music_layout(tmp_path, chorales, weights):
    """config + weights + WordLevel tokenizer.json, no midilm.json: MMM, settings inferred."""
    four_four = [
        s for s in chorales if {(t.numerator, t.denominator) for t in s.time_signatures} == {(4, 4)}
    ]
    ours = MMMTokenizer(density_bins=5)
    # The published chorale files spell deltas as floats (TIME_DELTA=4.0).
    texts = [re.sub(r"(TIME_DELTA=\d+)", r"\1.0", ours.encode_text(s)) for s in four_four[:8]]
    folder = tmp_path / "gpt2-for-music"
    folder.mkdir()
    hf_tok = published_vocabulary(folder, texts)
    model = tiny_model(hf_tok.get_vocab_size(), seed=3)
    if weights == "model.safetensors":
        model.save_pretrained(folder)
    else:  # older checkpoints: a pickled state dict
        model.config.save_pretrained(folder)
        torch.save(model.state_dict(), folder / "pytorch_model.bin")
    (folder / "generation_config.json").unlink(missing_ok=True)
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted(["config.json", weights, "tokenizer.json"])

    lm = load_model(folder)
    assert lm.kind == "mmm" and lm.info == {}
    assert lm.generation == GenerationDefaults()
    assert lm.tokenizer.vocab_size == hf_tok.get_vocab_size()
    assert lm.tokenizer.config.float_deltas
    tok = MMMTokenizer.load(folder, density_bins=5)  # what the tokens cannot tell: the density bins
    ids = tok.encode(four_four[0])
    assert ids == hf_tok.encode(texts[0].split(), is_pretokenized=True).ids
    assert torch.allclose(logits(lm.model, ids[:100]), logits(model, ids[:100]), atol=1e-6)


def test_maestro_remi_layout(tmp_path):
    """config + weights + MidiTok 2's tokenizer.conf: converted, every id kept."""
    expected = json.loads((MIDITOK2 / "expected.json").read_text())
    folder = tmp_path / "maestro-remi"
    folder.mkdir()
    shutil.copy(MIDITOK2 / "tokenizer.conf", folder)
    model = tiny_model(expected["vocab_size"], seed=4)
    model.save_pretrained(folder)
    lm = load_model(folder)
    assert lm.kind == "remi" and lm.tokenizer.config.preprocessing == "miditok2"
    for stem in ("bach_bwv1.6", "bach_bwv13.6"):
        ids = lm.tokenizer.encode(load_midi(MIDITOK2 / "pieces" / f"{stem}.mid"))
        assert ids == expected["pieces"][stem]["ids"], stem
    with pytest.raises(UnknownTokenError, match="Pitch_36"):
        lm.tokenizer.encode(load_midi(MIDITOK2 / "pieces" / "bach_bwv26.6.mid"))

    # Saved again by midilm: a MidiTok 3 directory that keeps MidiTok 2's ids.
    ours = save_model(tmp_path / "converted", lm.model, lm.tokenizer)
    again = load_model(ours)
    piece = load_midi(MIDITOK2 / "pieces" / "bach_bwv11.6.mid")
    assert again.tokenizer.encode(piece) == expected["pieces"]["bach_bwv11.6"]["ids"]


# ---------------------------------------------------------------------- errors


@pytest.fixture
def copy_of(tmp_path, mmm_dir):
    def make(name: str) -> Path:
        return Path(shutil.copytree(mmm_dir, tmp_path / name))

    return make


def test_missing_files_are_named(copy_of, tmp_path):
    with pytest.raises(FileNotFoundError, match="never downloads"):
        load_model(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="never downloads"):
        load_model("gpt2")  # a Hub id is not a path: nothing is fetched
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError):
        load_model(tmp_path / "file")
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        folder = copy_of(f"no-{name}")
        (folder / name).unlink()
        with pytest.raises(FileNotFoundError, match=re.escape(str(folder / name))):
            load_model(folder)


def test_mismatched_files_are_named(copy_of, tmp_path):
    folder = copy_of("bigger")
    config = json.loads((folder / "config.json").read_text())
    config["vocab_size"] += 3
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(TokenizerMismatchError) as err:
        load_model(folder)
    message = str(err.value)
    assert str(folder / "tokenizer.json") in message and str(folder / "config.json") in message
    assert "425 tokens" in message and "428 embedding rows" in message

    unknown = copy_of("unknown")
    (unknown / "midilm.json").unlink()
    (unknown / "tokenizer.json").write_text(json.dumps({"model": {"type": "BPE"}}))
    with pytest.raises(TokenizerMismatchError, match=re.escape(str(unknown / "tokenizer.json"))):
        load_model(unknown)

    garbled = copy_of("garbled")
    (garbled / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match=re.escape(str(garbled / "config.json"))):
        load_model(garbled)

    with pytest.raises(ConfigError, match="dtype"):
        load_model(copy_of("dtype"), dtype="int8")


# ---------------------------------------------------------------------- generation


def test_generation_defaults():
    gen = GenerationDefaults(temperature=2.5, top_k=15, top_p=0.95, max_new_tokens=512)
    hf = gen.to_generation_config(pad_id=0, bos_id=2, eos_id=3)
    assert (hf.do_sample, hf.temperature, hf.top_k, hf.top_p) == (True, 2.5, 15, 0.95)
    assert GenerationDefaults.from_generation_config(hf.to_dict()) == gen
    greedy = GenerationDefaults(temperature=0).to_generation_config()
    assert greedy.do_sample is False
    assert GenerationDefaults.from_generation_config(greedy.to_dict()).temperature == 0
    # A published file that sets only the special ids: midilm's defaults for the rest.
    assert GenerationDefaults.from_generation_config({"bos_token_id": 1}) == GenerationDefaults()
    for bad in ({"temperature": -1}, {"top_k": 0}, {"top_p": 1.5}, {"max_new_tokens": 0}):
        with pytest.raises(ConfigError):
            GenerationDefaults(**bad)
