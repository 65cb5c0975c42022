"""``evaluate`` end to end with real (tiny, quickly trained) models on prepared chorale
datasets: every report field is there and in range, constrained samples have no syntax
error, the likelihood is the model's own loss, the same seed gives the same report, and
the CLI writes reports that ``compare`` puts side by side."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from midilm.cli.main import cli
from midilm.data import read_manifest, read_split
from midilm.data.prepare import prepare
from midilm.evaluation import FEATURES, Report, evaluate
from midilm.evaluation.likelihood import choose_split, split_likelihood
from midilm.evaluation.samples import Sampling, free_mmm
from midilm.evaluation.syntax import KINDS, count_violations
from midilm.model import load_model, save_model
from midilm.sampling import GPT2Engine
from midilm.tokenization.base import load_tokenizer
from sampling_helpers import train_tiny

pytestmark = pytest.mark.slow

SHORT_CONTEXT = 260  # positions: some four-voice 4-bar windows of the tiny model fit, most not


def _train(dataset, directory, steps):
    """A tiny GPT-2 trained on the dataset's training split, saved as a model directory
    that records the dataset's settings (so evaluate knows whether it saw infilling)."""
    tok = load_tokenizer(dataset)
    tokens, offsets = read_split(dataset, "train")
    sequences = [
        tokens[offsets[i] : offsets[i + 1]].astype(np.int64).tolist()
        for i in range(len(offsets) - 1)
    ]
    model = train_tiny(sequences, tok.vocab_size, tok.pad_id, steps=steps)
    manifest = read_manifest(dataset)
    info = {"dataset": {"digest": manifest["digest"], "settings": manifest["settings"]}}
    save_model(directory, model, tok, info=info)
    return directory


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, bach_scores):
    """30 chorales as MMM windows (a quarter of them infilling examples), untransposed."""
    directory = tmp_path_factory.mktemp("data") / "chorales"
    prepare(
        [spec for spec, _ in bach_scores[:30]],
        directory,
        workers=1,
        transpose=(0, 0),
        split_ratios=(0.8, 0.1, 0.1),
        tokenizer_settings={"meter_tokens": True},
        max_seq_len=512,
    )
    return directory


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, dataset):
    return _train(dataset, tmp_path_factory.mktemp("models") / "tiny-mmm", steps=100)


@pytest.fixture(scope="module")
def model(model_dir):
    return load_model(model_dir, device="cpu")


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory, model, dataset):
    out = tmp_path_factory.mktemp("reports") / "tiny"
    evaluate(model, dataset, output=out, samples=4, bars=4, max_reference=40, seed=0)
    return out


def _in_unit(value):
    return value is not None and 0.0 <= value <= 1.0


def test_every_report_field_is_present_and_in_range(report_dir):
    data = json.loads((report_dir / "report.json").read_text())
    report = Report.load(report_dir)
    assert report.to_dict() == data
    assert data["format"] == "midilm-evaluation"
    assert data["settings"]["voice_leading"] is False  # the model's default: no guard

    lik = data["likelihood"]
    assert lik["split"] == "test" and lik["sequences"] > 0 and lik["notes"] > 0
    assert lik["loss"] > 0 and lik["perplexity"] == pytest.approx(math.exp(lik["loss"]), 1e-4)
    assert lik["bits_per_note"] > lik["bits_per_token"] > 0

    for mode in ("unconstrained", "constrained"):
        syntax = data["syntax"][mode]
        assert syntax["sequences"] == 4 and syntax["tokens"] > 0
        assert _in_unit(syntax["error_rate"]) and _in_unit(syntax["sequences_with_errors"])
        assert set(syntax["rate_by_kind"]) == set(KINDS)
        assert all(_in_unit(r) for r in syntax["rate_by_kind"].values())
        assert sum(syntax["count_by_kind"].values()) == syntax["errors"]
    assert data["syntax"]["constrained"]["errors"] == 0

    controls = data["controls"]
    assert controls["tracks"] > 0 and controls["windows"] > 0
    assert _in_unit(controls["density_exact"]) and _in_unit(controls["instruments_present"])
    assert controls["density_exact"] <= controls["density_within_1"] <= 1
    assert np.asarray(controls["density_confusion"]).sum() == controls["windows"]

    stats = data["statistics"]
    assert set(stats["features"]) == set(FEATURES)
    for row in stats["features"].values():
        assert _in_unit(row["samples_vs_test"]) and _in_unit(row["test_vs_train"])
    assert _in_unit(stats["mean"]["samples_vs_test"]) and _in_unit(stats["mean"]["test_vs_train"])

    # Chorales: the samples ask for four voices, so voice leading is measured.
    for who in ("samples", "test"):
        vl = data["voice_leading"][who]
        assert vl["pieces"] > 0 and vl["motions"] > 0
        assert 0 <= vl["parallel_fifths_per_100_motions"] <= 100
        assert 0 <= vl["parallel_octaves_per_100_motions"] <= 100
        assert all(_in_unit(v) for v in vl["in_range"].values())

    infill = data["infill"]
    assert infill["cells"] > 0
    for key in ("infill_vs_original", "composed_vs_original"):  # and its same-shape baseline
        assert all(row[key] is None or _in_unit(row[key]) for row in infill["features"].values())
        assert _in_unit(infill["mean"][key])

    speed = data["speed"]
    assert speed["tokens"] > 0 and speed["tokens_per_s"] > 0
    assert speed["samples"] == 4 and speed["bars"] == 16 and speed["seconds_per_bar"] > 0

    markdown = (report_dir / "report.md").read_text()
    assert "## Voice leading" in markdown and "## Controls" in markdown
    for name in ("statistics.png", "syntax.png", "density.png", "infill.png"):
        assert (report_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert f"({name})" in markdown


def test_constrained_samples_have_no_syntax_errors(model, dataset):
    tok = model.tokenizer
    engine = GPT2Engine(model.model, dtype=torch.float32)
    grammar = tok.grammar(bars=tok.config.bars_per_window, allow_placeholders=False)
    for seed in range(2):
        free = free_mmm(
            engine,
            tok,
            [4, 2, 3],
            constrained=True,
            sampling=Sampling(temperature=1.5, top_p=None),
            seed=seed,
        )
        assert len(free.sequences) == 3
        counts = count_violations(grammar.start, free.sequences, truncated=free.truncated)
        assert counts.errors == 0 and counts.truncated == 0
        # Each ended on its own: exactly the requested number of tracks.
        ends = [tok.ids_to_text(s).split().count("TRACK_END") for s in free.sequences]
        assert ends == [4, 2, 3]


def test_likelihood_is_the_models_own_loss(model, dataset):
    tokens, offsets = read_split(dataset, "test")
    ids = torch.from_numpy(tokens[offsets[0] : offsets[1]].astype(np.int64))[None]
    with torch.no_grad():
        expected = model.model(input_ids=ids, labels=ids).loss.item()
    measured = split_likelihood(model, dataset, "test", max_sequences=1)
    assert measured.sequences == 1 and measured.tokens == ids.shape[1] - 1
    assert measured.loss == pytest.approx(expected, rel=1e-4)


def test_same_seed_same_report(model, dataset):
    def run(seed):
        report = evaluate(
            model, dataset, samples=2, bars=2, max_reference=8, seed=seed, max_sequences=4
        )
        data = report.to_dict()
        data.pop("speed")
        data["infill"].pop("seconds_per_cell")
        return data

    assert run(3) == run(3)


def test_empty_test_split_falls_back_to_valid(tmp_path, dataset):
    copy = tmp_path / "copy"
    shutil.copytree(dataset, copy)
    tokens, _ = read_split(dataset, "test")
    np.save(copy / "test.tokens.npy", np.zeros(0, dtype=tokens.dtype))
    np.save(copy / "test.offsets.npy", np.zeros(1, dtype=np.int64))
    split, note = choose_split(copy, "test")
    assert split == "valid" and "'test' split is empty" in note
    assert choose_split(dataset, "test") == ("test", None)


def test_cli_evaluate_then_compare(tmp_path, model_dir, dataset, report_dir):
    out = tmp_path / "small"
    args = [
        "evaluate",
        str(model_dir),
        str(dataset),
        "-o",
        str(out),
        "--samples",
        "2",
        "--bars",
        "2",
        "--max-reference",
        "8",
        "--no-plots",
        "--quiet",
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("# Evaluation of tiny-mmm")
    assert (out / "report.json").is_file() and not list(out.glob("*.png"))

    result = CliRunner().invoke(cli, ["compare", str(report_dir), str(out)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "| metric | tiny | small |"
    bits = [Report.load(d).likelihood["bits_per_note"] for d in (report_dir, out)]
    row = next(line for line in lines if line.startswith("| held-out bits per note"))
    assert all(f"{b:.4g}" in row for b in bits)


def test_cli_rejects_a_dataset_of_another_tokenizer(tmp_path, model_dir, bach_scores):
    other = tmp_path / "steps8"
    specs = [spec for spec, _ in bach_scores[:6]]
    prepare(specs, other, workers=1, transpose=(0, 0), tokenizer_settings={"steps_per_quarter": 8})
    result = CliRunner().invoke(
        cli, ["evaluate", str(model_dir), str(other), "-o", str(tmp_path / "r")]
    )
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert "is not the model's" in result.stderr


@pytest.fixture(scope="module")
def remi_model_dir(tmp_path_factory, bach_scores):
    dataset = tmp_path_factory.mktemp("data") / "remi"
    prepare(
        [spec for spec, _ in bach_scores[:30]],
        dataset,
        workers=1,
        tokenizer="remi",
        vocab_size=400,
        transpose=(0, 0),
        split_ratios=(0.8, 0.1, 0.1),
        max_seq_len=512,
    )
    return _train(dataset, tmp_path_factory.mktemp("models") / "tiny-remi", steps=60), dataset


def test_a_remi_model_reports_what_it_has_and_says_why_not_the_rest(remi_model_dir, tmp_path):
    model_dir, dataset = remi_model_dir
    report = evaluate(model_dir, dataset, output=tmp_path, samples=3, bars=2, max_reference=10)
    assert report.model["kind"] == "remi"
    assert report.likelihood["bits_per_note"] > 0
    assert report.syntax["constrained"]["errors"] == 0
    assert report.syntax["unconstrained"]["tokens"] > 0
    assert report.controls is None and report.voice_leading is None and report.infill is None
    assert len(report.notes) == 3
    assert all(_in_unit(r["samples_vs_test"]) for r in report.statistics["features"].values())
    assert report.speed["samples"] == 3 and report.speed["bars"] == 6
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["statistics.png", "syntax.png"]


# ---------------------------------------------------------------------- failed samples
def _short_context(model_dir, directory, positions):
    """The model cut to its first ``positions`` positions: pieces longer than that cannot
    be finished."""
    from transformers import GPT2LMHeadModel

    lm = load_model(model_dir, device="cpu")
    config = lm.model.config.__class__.from_dict({**lm.model.config.to_dict(),
                                                  "n_positions": positions})  # fmt: skip
    state = lm.model.state_dict()
    state["transformer.wpe.weight"] = state["transformer.wpe.weight"][:positions]
    short = GPT2LMHeadModel(config)
    short.load_state_dict(state)
    info = {"dataset": lm.info["dataset"]}  # what it was trained on: with infilling
    return save_model(directory, short, lm.tokenizer, info=info)


def test_pieces_the_model_cannot_finish_are_counted_not_fatal(tmp_path, model_dir, dataset):
    """A context shorter than some four-voice windows: those pieces fail and are counted,
    the others are measured as usual."""
    short = _short_context(model_dir, tmp_path / "short", SHORT_CONTEXT)
    report = evaluate(short, dataset, output=tmp_path / "r", samples=6, bars=4,
                      max_reference=8, infill_cells=2, plots=False)  # fmt: skip
    counts = report.failures["counts"]
    failed = counts["compose"]["failed"]
    assert counts["compose"]["of"] == 6 and 0 < failed < 6, counts
    assert report.statistics["samples"] == report.speed["samples"] == 6 - failed
    assert all("the context is full" in example for example in report.failures["examples"])
    assert "## Failed samples" in (tmp_path / "r" / "report.md").read_text()
    assert Report.load(tmp_path / "r").failures == report.failures


def test_a_model_that_finishes_no_piece_is_one_clear_error(tmp_path, model_dir, dataset):
    short = _short_context(model_dir, tmp_path / "tiny-context", 32)
    result = CliRunner().invoke(cli, ["evaluate", str(short), str(dataset), "--samples", "2",
                                      "--bars", "4", "--max-reference", "4", "--no-plots",
                                      "--quiet", "-o", str(tmp_path / "r")])  # fmt: skip
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert "finished none of its 2 compose samples (the context is full" in result.stderr
    assert not (tmp_path / "r" / "report.json").exists()
