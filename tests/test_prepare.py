"""``midilm prepare`` on real chorales and planted bad files: what is accepted and rejected
and why, what the splits hold, what the fitted tokenizers are, and that the bytes do not
depend on workers, shards, kills or reruns (midilm.data.prepare and its helpers)."""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import symusic
from click.testing import CliRunner

from midilm.cli.main import cli
from midilm.data import TokenDataset, read_split
from midilm.data.augment import choose_infill_cells, transpose_piece, transpose_score
from midilm.data.prepare import (
    REJECTION_REASONS,
    PrepareConfig,
    merge,
    prepare,
    weighted_percentiles,
)
from midilm.data.shards import DatasetError
from midilm.data.split import note_hash, split_of
from midilm.errors import ConfigError
from midilm.score import load_midi, music21_specs, save_midi
from midilm.score.music21_import import MUSIC21_PREFIX
from midilm.tokenization.mmm import MMMTokenizer
from midilm.tokenization.mmm_vocab import Kind
from midilm.tokenization.remi import REMITokenizer

FAST = {"transpose": (-1, 1), "infill_share": 0.5}  # small, but every feature on


# ---------------------------------------------------------------------- helpers


def synthetic(bars: int, *, tracks: int = 1, pitch: int = 60, tpq: int = 480, numerator=4):
    """A score of ``bars`` bars, a quarter note on every beat in each of ``tracks`` tracks."""
    score = symusic.Score(tpq)
    score.time_signatures.append(symusic.TimeSignature(0, numerator, 4))
    score.tempos.append(symusic.Tempo(0, 100.0))
    for t in range(tracks):
        track = symusic.Track(name=f"t{t}", program=t, is_drum=False)
        for beat in range(bars * numerator):
            track.notes.append(symusic.Note(beat * tpq, tpq, pitch + t + beat % 5, 80))
        score.tracks.append(track)
    return score


def is_4_4(score) -> bool:
    return all((ts.numerator, ts.denominator) == (4, 4) for ts in score.time_signatures)


def file_name(spec: str) -> str:
    return spec[len(MUSIC21_PREFIX) :].replace("/", "_") + ".mid"


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under a folder (hidden ones too), by relative path."""
    return {
        p.relative_to(directory).as_posix(): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


PLANTED = {
    "bad_corrupt.mid": "corrupt",
    "bad_empty.mid": "empty",
    "bad_not_midi.mid": "not_midi",
    "bad_no_notes.mid": "no_notes",
    "bad_one_bar.mid": "too_short",
    "bad_long.mid": "too_long",
    "bad_many_tracks.mid": "too_many_tracks",
    "copy_of_first.mid": "duplicate",
    "copy_reencoded.mid": "duplicate",
}


@pytest.fixture(scope="module")
def chorales(bach_scores):
    """(spec, score): 16 chorales in 4/4 and 2 in other meters, from the fixture's 120."""
    four = [(s, sc) for s, sc in bach_scores if is_4_4(sc)][:16]
    odd = [(s, sc) for s, sc in bach_scores if not is_4_4(sc)][:2]
    return four, odd


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, chorales) -> Path:
    """A folder of real chorales (two in 3/4) and one planted file per rejection reason."""
    four, odd = chorales
    folder = tmp_path_factory.mktemp("corpus")
    for spec, score in four + odd:
        save_midi(score, folder / "chorales" / file_name(spec))
    first = folder / "chorales" / file_name(four[0][0])
    data = first.read_bytes()
    (folder / "bad_corrupt.mid").write_bytes(data[: len(data) // 2])
    (folder / "bad_empty.mid").write_bytes(b"")
    (folder / "bad_not_midi.mid").write_text("not a MIDI file", encoding="utf-8")
    empty = synthetic(2)
    empty.tracks[0].notes.clear()
    save_midi(empty, folder / "bad_no_notes.mid")
    save_midi(synthetic(1), folder / "bad_one_bar.mid")
    save_midi(synthetic(60), folder / "bad_long.mid")
    save_midi(synthetic(4, tracks=9), folder / "bad_many_tracks.mid")
    shutil.copy(first, folder / "copy_of_first.mid")
    # The same notes written differently: twice the resolution, other velocities, tracks
    # in reverse order, a leading bar of rest.
    copy = four[0][1].resample(960, min_dur=1)
    copy.tracks = symusic.core.TrackTickList(list(copy.tracks)[::-1])
    for track in copy.tracks:
        track.shift_velocity(-10, inplace=True)
    copy.shift_time(4 * 960, inplace=True)
    save_midi(copy, folder / "copy_reencoded.mid")
    return folder


SETTINGS = {**FAST, "max_bars": 50, "max_tracks": 8}


@pytest.fixture(scope="module")
def dataset(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("mmm") / "ds"
    result = prepare([str(corpus)], out, workers=1, **SETTINGS)
    return out, result


# ---------------------------------------------------------------------- pieces: hash, split


def test_the_note_hash_ignores_how_the_notes_are_written(bach_scores):
    score = bach_scores[0][1]
    same = score.resample(960, min_dur=1)
    same.tracks = symusic.core.TrackTickList(list(same.tracks)[::-1])
    same.shift_time(960 * 4, inplace=True)
    for track in same.tracks:
        track.shift_velocity(5, inplace=True)
    assert note_hash(same) == note_hash(score)
    other = score.copy()
    other.tracks[0].notes[0].pitch += 1
    assert note_hash(other) != note_hash(score)
    changed_program = score.copy()
    changed_program.tracks[0].program = 40
    assert note_hash(changed_program) != note_hash(score)


def test_the_split_depends_on_the_hash_alone_and_follows_the_ratios():
    hashes = [f"{i:064x}" for i in range(4000)]
    splits = [split_of(h, (0.8, 0.1, 0.1)) for h in hashes]
    shares = {s: splits.count(s) / len(splits) for s in ("train", "valid", "test")}
    assert abs(shares["train"] - 0.8) < 0.03 and abs(shares["valid"] - 0.1) < 0.02
    assert splits == [split_of(h, (0.8, 0.1, 0.1)) for h in hashes]
    assert {split_of(h, (1.0, 0.0, 0.0)) for h in hashes} == {"train"}
    assert {split_of(h, (0.5, 0.0, 0.5)) for h in hashes} == {"train", "test"}


def test_weighted_percentiles_are_numpy_percentiles_bit_for_bit():
    rng = np.random.default_rng(0)
    for size in (1, 2, 7, 100, 5000):
        counts = rng.integers(1, 60, size=size)
        values, weights = np.unique(counts, return_counts=True)
        percentiles = list(range(10, 100, 10))
        expected = np.percentile(counts, percentiles)
        assert weighted_percentiles(values, weights, percentiles) == tuple(expected.tolist())


# ---------------------------------------------------------------------- augmentation


def test_transposition_moves_pitched_notes_and_never_drums():
    score = synthetic(2, tracks=2)
    score.tracks[1].is_drum = True
    piece = MMMTokenizer().prepare(score)
    up = transpose_piece(piece, 3)
    assert (up.tracks[0].pitch == piece.tracks[0].pitch + 3).all()
    assert (up.tracks[1].pitch == piece.tracks[1].pitch).all()
    moved = transpose_score(score, -2)
    assert [n.pitch for n in moved.tracks[0].notes] == [n.pitch - 2 for n in score.tracks[0].notes]
    assert [n.pitch for n in moved.tracks[1].notes] == [n.pitch for n in score.tracks[1].notes]


def test_a_transposition_leaving_0_to_127_is_dropped_not_clipped():
    score = synthetic(2, pitch=120)  # pitches 120–124
    piece = MMMTokenizer().prepare(score)
    assert transpose_piece(piece, 3) is not None
    assert transpose_piece(piece, 4) is None
    assert transpose_score(score, 4) is None
    assert transpose_score(score, -120) is not None and transpose_score(score, -121) is None


def test_infill_cells_are_distinct_cells_of_written_tracks():
    rng = np.random.default_rng(1)
    for _ in range(200):
        cells = choose_infill_cells(rng, [0, 2], 4, 3)
        assert 1 <= len(cells) <= 3 and len(set(cells)) == len(cells)
        assert all(t in (0, 2) and 0 <= b < 4 for t, b in cells)
    assert choose_infill_cells(rng, [], 4, 2) == []


# ---------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"split_ratios": (0.5, 0.2, 0.2)}, "summing to 1"),
        ({"split_ratios": (0.0, 0.5, 0.5)}, "training share"),
        ({"transpose": (1, 3)}, "low ≤ 0 ≤ high"),
        ({"tokenizer_settings": {"density_edges": [1.0]}}, "fitted on the training split"),
        ({"tokenizer_settings": {"no_such": 1}}, "unknown setting"),
        ({"min_bars": 5, "max_bars": 4}, "max_bars"),
        ({"infill_share": 1.5}, "infill_share"),
        ({"tokenizer": "abc"}, "expected one of"),
    ],
    ids=lambda v: str(v)[:30],
)
def test_bad_settings_are_refused_with_the_value_received(settings, message):
    with pytest.raises(ConfigError, match=message):
        PrepareConfig.from_dict(settings)


def test_settings_fill_their_defaults_per_tokenizer_and_round_trip_through_json():
    mmm, remi = PrepareConfig(), PrepareConfig(tokenizer="remi")
    assert (mmm.transpose, mmm.max_seq_len) == ((-5, 6), 2048)
    assert (remi.transpose, remi.max_seq_len) == ((0, 0), 1024)
    assert mmm.tokenizer_settings["bars_per_window"] == 4
    assert "density_edges" not in mmm.tokenizer_settings
    for config in (mmm, remi, PrepareConfig(**SETTINGS)):
        assert PrepareConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert PrepareConfig(tokenizer_settings={"meter_tokens": True}).key() != mmm.key()


# ---------------------------------------------------------------------- MMM end to end


def test_every_file_is_accepted_or_rejected_with_its_reason(dataset, corpus, chorales):
    out, result = dataset
    four, odd = chorales
    manifest = result.manifest
    counts = manifest["counts"]
    files = sorted(p for p in corpus.rglob("*.mid"))
    assert counts["files_seen"] == len(files) == manifest["sources"]["items"]
    assert counts["accepted"] + counts["rejected"] + counts["duplicates"] == len(files)
    rejected = {Path(r["item"]).name: r for r in read_jsonl(out / "rejected.jsonl")}
    expected = dict(PLANTED)
    expected.update({file_name(spec): "meter" for spec, _ in odd})
    assert {name: r["reason"] for name, r in rejected.items()} == expected
    assert set(counts["rejected_by_reason"]) | {"duplicate"} <= set(REJECTION_REASONS)
    assert counts["duplicates"] == 2
    assert sum(counts["rejected_by_reason"].values()) == counts["rejected"] == len(expected) - 2
    original = str(corpus / "chorales" / file_name(four[0][0]))
    assert rejected["copy_reencoded.mid"]["duplicate_of"] == original
    assert "3/4" in rejected[file_name(odd[0][0])]["detail"]
    assert counts["accepted"] == len(four) == sum(s["pieces"] for s in manifest["splits"].values())


def test_the_splits_hold_whole_pieces_by_note_hash(dataset):
    out, result = dataset
    pieces = read_jsonl(out / "pieces.jsonl")
    assert len(pieces) == result.manifest["counts"]["accepted"]
    by_split: dict[str, list] = {"train": [], "valid": [], "test": []}
    for piece in pieces:
        assert piece["split"] == split_of(piece["hash"], (0.9, 0.05, 0.05))
        by_split[piece["split"]].append(piece)
    for split, entries in by_split.items():
        _, offsets = read_split(out, split)
        ranges = sorted(tuple(p["sequences"]) for p in entries)
        # Each piece's sequences are one contiguous block; the blocks tile the split.
        assert [r[0] for r in ranges] == ([0] + [r[1] for r in ranges[:-1]])[: len(ranges)]
        assert (ranges[-1][1] if ranges else 0) == len(offsets) - 1
        assert result.manifest["splits"][split]["sequences"] == len(offsets) - 1
    hashes = {s: {p["hash"] for p in e} for s, e in by_split.items()}
    assert not (hashes["train"] & hashes["valid"]) and not (hashes["train"] & hashes["test"])


def test_mmm_examples_are_well_formed_windows_with_fitted_densities(dataset, chorales):
    out, result = dataset
    manifest = result.manifest
    tok = MMMTokenizer.load(out)
    assert manifest["density_edges"] == list(tok.config.density_edges)
    assert manifest["special_ids"] == {"pad": tok.pad_id, "bos": None, "eos": None}
    assert manifest["vocab_size"] == tok.vocab_size and manifest["token_dtype"] == "uint16"
    # Density edges: the percentiles of the training pieces' windows, as fit_density has them.
    pieces = read_jsonl(out / "pieces.jsonl")
    train = [load_midi(p["item"]) for p in pieces if p["split"] == "train"]
    fitted = MMMTokenizer().fit_density(train, hop=2)
    assert tok.config.density_edges == fitted.config.density_edges
    tokens, offsets = read_split(out, "train")
    fill_start = tok.vocab.bare_id(Kind.FILL_START)
    infill = 0
    for i in range(len(offsets) - 1):
        ids = tokens[offsets[i] : offsets[i + 1]].tolist()
        assert tok.grammar(bars=4).check(ids) == [], i
        infill += fill_start in ids
    assert infill == manifest["splits"]["train"]["infill_sequences"] > 0
    # Three transpositions of every training piece (none leaves 0–127 for chorales).
    assert manifest["splits"]["train"]["variants"] == 3 * len(train)
    assert manifest["splits"]["valid"]["variants"] == manifest["splits"]["valid"]["pieces"]


def test_accepted_pieces_are_tokenized_intact(corpus, tmp_path):
    """Without shuffling, infilling or transposing, a piece's rows are exactly its windows."""
    out = tmp_path / "plain"
    settings = {"transpose": (0, 0), "infill_share": 0.0, "shuffle_tracks": False}
    prepare([str(corpus / "chorales")], out, workers=1, **settings)
    tok = MMMTokenizer.load(out)
    for piece in read_jsonl(out / "pieces.jsonl"):
        tokens, offsets = read_split(out, piece["split"])
        first, stop = piece["sequences"]
        rows = [tokens[offsets[i] : offsets[i + 1]].tolist() for i in range(first, stop)]
        windows = tok.windows(load_midi(piece["item"]), bars=4, hop=2)
        assert rows == [w.ids for w in windows], piece["item"]


def test_transposed_variants_out_of_range_are_dropped_and_counted(tmp_path):
    folder = tmp_path / "high"
    for i in range(6):
        save_midi(synthetic(4, pitch=118 + i), folder / f"high{i}.mid")  # up to pitch 122+i
    out = tmp_path / "ds"
    result = prepare([str(folder)], out, workers=1, transpose=(-1, 6), split_ratios=(1.0, 0.0, 0.0))
    # Piece i reaches 127 at +(5 - i): its i + 1 higher transpositions are dropped.
    assert result.manifest["counts"]["variants_dropped_out_of_range"] == sum(range(1, 7))
    tokens, _ = read_split(out, "train")
    tok = MMMTokenizer.load(out)
    ids = np.asarray(tokens)
    pitches = tok.vocab.values[ids][tok.vocab.kinds[ids] == Kind.NOTE_ON]
    assert pitches.max() == 127


def test_the_tokenizer_and_dataset_are_ready_for_training(dataset):
    out, _ = dataset
    data = TokenDataset(out, "train", seq_len=512)
    assert data.mode == "sequences" and len(data) > 0
    assert data[0]["input_ids"][0].item() == MMMTokenizer.load(out).vocab.bare_id(Kind.PIECE_START)


# ---------------------------------------------------------------------- byte identity


def test_workers_and_shards_do_not_change_a_byte(corpus, dataset, tmp_path):
    reference = snapshot(dataset[0])
    assert ".inputs.json" in reference and not any(k.startswith(".work") for k in reference)
    two = tmp_path / "two"
    prepare([str(corpus)], two, workers=2, **SETTINGS)
    assert snapshot(two) == reference
    parts = [tmp_path / f"part{k}" for k in (1, 2)]
    for k, part in enumerate(parts, start=1):
        info = prepare([str(corpus)], part, shard=(k, 2), workers=1, **SETTINGS).manifest
        assert info["shard"] == [k, 2] and info["complete"]
    merged = tmp_path / "merged"
    merge(parts[::-1], merged)
    assert snapshot(merged) == reference
    again = merge(parts, merged)
    assert again.up_to_date


def test_a_pooled_run_loads_what_assembly_needs_while_its_workers_work(corpus, tmp_path):
    from midilm.data.assemble import preload
    from midilm.data.workers import run_items

    files = sorted((corpus / "chorales").glob("*.mid"))[:3]
    config = PrepareConfig(**SETTINGS)
    records = {}
    for workers in (1, 2):
        tasks = [(str(f), str(tmp_path / str(workers) / f"{f.stem}.rec")) for f in files]
        calls, written = [], []
        run_items(tasks, config, workers, written.append, functools.partial(calls.append, 1))
        assert sum(written) == len(files)
        assert len(calls) == workers - 1  # once with a pool; nothing to overlap in-process
        records[workers] = [Path(path).read_bytes() for _, path in tasks]
    assert records[1] == records[2]
    for kind in ("mmm", "remi"):
        preload(kind)
    assert {"numpy.ma", "tokenizers", "midilm.tokenization.remi"} <= set(sys.modules)


def test_a_second_run_does_nothing(corpus, dataset):
    out, _ = dataset
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    result = prepare([str(corpus)], out, workers=1, **SETTINGS)
    assert result.up_to_date and result.processed == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before


def test_a_failure_while_writing_the_dataset_is_resumed_to_the_same_bytes(
    corpus, dataset, tmp_path, monkeypatch
):
    from midilm.data import shards

    out = tmp_path / "crash"
    calls = {"n": 0}
    original = shards.ShardWriter.append_many

    def failing(self, tokens, lengths):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt  # as good as a kill: nothing after it runs
        return original(self, tokens, lengths)

    monkeypatch.setattr(shards.ShardWriter, "append_many", failing)
    with pytest.raises(KeyboardInterrupt):
        prepare([str(corpus)], out, workers=1, **SETTINGS)
    monkeypatch.setattr(shards.ShardWriter, "append_many", original)
    assert not (out / "manifest.json").exists() and (out / ".work").is_dir()
    result = prepare([str(corpus)], out, workers=1, **SETTINGS)
    assert result.processed == 0  # every record was there
    assert snapshot(out) == snapshot(dataset[0])


@pytest.mark.slow
def test_a_killed_run_continues_to_the_same_bytes(bach_scores, tmp_path):
    folder = tmp_path / "corpus"
    for spec, score in bach_scores[:60]:
        save_midi(score, folder / file_name(spec))
    settings = ["--transpose", "-5:6", "--workers", "1", "--no-progress"]
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "midilm", "prepare", str(folder), "-o", str(out), *settings]
    process = subprocess.Popen(command, start_new_session=True)
    records = out / ".work" / "records"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        if records.is_dir() and sum(1 for _ in records.rglob("*.rec")) >= 5:
            break
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (out / "manifest.json").exists()
    done = sum(1 for _ in records.rglob("*.rec"))
    assert 5 <= done < 60

    rerun = CliRunner().invoke(cli, ["prepare", str(folder), "-o", str(out), *settings])
    assert rerun.exit_code == 0, rerun.output
    whole = tmp_path / "whole"
    result = prepare([str(folder)], whole, workers=2, transpose=(-5, 6))
    assert result.processed == 60
    assert snapshot(out) == snapshot(whole)


@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")
def test_a_file_that_kills_its_worker_is_rejected_and_the_rest_goes_on(
    corpus, dataset, tmp_path, monkeypatch
):
    import multiprocessing

    from midilm.data import examples, workers

    # Forked workers inherit the patched method (forkserver workers would not).
    monkeypatch.setattr(workers, "_mp_context", lambda kind: multiprocessing.get_context("fork"))
    process = examples.ItemProcessor.process

    def crash_on_one_file(self, item):
        if item.endswith("bad_long.mid"):
            os._exit(3)  # as a segfault in a C library would end the worker
        return process(self, item)

    monkeypatch.setattr(examples.ItemProcessor, "process", crash_on_one_file)
    out = tmp_path / "crash"
    result = prepare([str(corpus)], out, workers=2, **SETTINGS)
    rejected = {Path(r["item"]).name: r for r in read_jsonl(out / "rejected.jsonl")}
    assert rejected["bad_long.mid"]["reason"] == "failed"
    assert "died" in rejected["bad_long.mid"]["detail"]
    expected = dataset[1].manifest
    assert result.manifest["splits"] == expected["splits"]
    assert result.manifest["counts"]["rejected_by_reason"] == {
        **{k: v for k, v in expected["counts"]["rejected_by_reason"].items() if k != "too_long"},
        "failed": 1,
    }


def test_file_names_that_are_not_utf8_are_kept_exactly(bach_scores, tmp_path):
    folder = tmp_path / "names"
    folder.mkdir()
    names = [b"caf\xe9.mid", "Für Elise.mid".encode()]
    for raw, (_, score) in zip(names, bach_scores[:2], strict=True):
        fd = os.open(os.fsencode(folder) + b"/" + raw, os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(fd, bytes(score.dumps_midi()))
        os.close(fd)
    out = tmp_path / "ds"
    prepare([str(folder)], out, workers=1, split_ratios=(1.0, 0.0, 0.0), **FAST)
    items = [p["item"] for p in read_jsonl(out / "pieces.jsonl")]
    assert sorted(os.fsencode(Path(i).name) for i in items) == sorted(names)
    assert all(Path(i).is_file() for i in items)


# ---------------------------------------------------------------------- growth, conflicts


def test_a_piece_keeps_its_split_when_the_corpus_grows(corpus, tmp_path):
    chorales = sorted((corpus / "chorales").glob("*.mid"))
    small = tmp_path / "small.txt"
    small.write_text("\n".join(str(p) for p in chorales[::2]), encoding="utf-8")
    out = tmp_path / "ds"
    prepare([str(small)], out, workers=1, keep_work=True, **SETTINGS)
    before = {p["item"]: p["split"] for p in read_jsonl(out / "pieces.jsonl")}
    with pytest.raises(DatasetError, match=r"other source files.*--overwrite"):
        prepare([str(corpus / "chorales")], out, workers=1, **SETTINGS)
    grown = prepare([str(corpus / "chorales")], out, workers=1, overwrite=True, **SETTINGS)
    assert grown.processed == len(chorales) - len(chorales[::2])  # the records were kept
    after = {p["item"]: p["split"] for p in read_jsonl(out / "pieces.jsonl")}
    assert before.items() <= after.items()
    assert not (out / ".work").exists()


def test_an_output_folder_that_is_not_ours_or_holds_other_settings_is_left_alone(
    dataset, corpus, tmp_path
):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("…", encoding="utf-8")
    with pytest.raises(DatasetError, match="not a midilm dataset"):
        prepare([str(corpus)], foreign, workers=1)
    with pytest.raises(DatasetError, match=r"other settings.*--overwrite"):
        prepare([str(corpus)], dataset[0], workers=1, **{**SETTINGS, "seed": 1})
    part = tmp_path / "part"
    prepare([str(corpus / "chorales")], part, shard=(1, 3), workers=1, **SETTINGS)
    with pytest.raises(DatasetError, match="parts 1/3 … 3/3"):
        merge([part], tmp_path / "m")
    with pytest.raises(DatasetError, match="not a preparation part"):
        merge([corpus], tmp_path / "m")
    other = tmp_path / "other"
    prepare([str(corpus / "chorales")], other, shard=(2, 3), workers=1, seed=1, **FAST)
    with pytest.raises(DatasetError, match="another settings"):
        merge([part, other], tmp_path / "m")


def test_an_unfinished_part_cannot_be_merged(corpus, tmp_path):
    part = tmp_path / "part"
    prepare([str(corpus / "chorales")], part, shard=(1, 1), workers=1, **SETTINGS)
    info = json.loads((part / "part.json").read_text())
    (part / "part.json").write_text(json.dumps({**info, "complete": False}))
    with pytest.raises(DatasetError, match="unfinished"):
        merge([part], tmp_path / "m")


# ---------------------------------------------------------------------- REMI


def test_remi_learns_bpe_on_the_training_split_and_cuts_at_bars(corpus, tmp_path):
    out = tmp_path / "remi"
    result = prepare(
        [str(corpus / "chorales")],
        out,
        workers=1,
        tokenizer="remi",
        vocab_size=400,
        max_seq_len=96,
    )
    manifest = result.manifest
    tok = REMITokenizer.load(out)
    assert manifest["vocab_size"] == tok.vocab_size == 400
    assert manifest["special_ids"] == {"pad": tok.pad_id, "bos": tok.bos_id, "eos": tok.eos_id}
    assert manifest["density_edges"] is None
    pieces = read_jsonl(out / "pieces.jsonl")
    train = [load_midi(p["item"]) for p in pieces if p["split"] == "train"]
    alone = REMITokenizer.train(train, vocab_size=400)
    # BPE learned from the training pieces alone gives the same vocabulary, id for id.
    assert json.dumps(alone.miditok.to_dict()) == json.dumps(tok.miditok.to_dict())
    assert manifest["bpe"]["cut_inside_bar"] == 0
    for piece in pieces:
        tokens, offsets = read_split(out, piece["split"])
        first, stop = piece["sequences"]
        rows = [tokens[offsets[i] : offsets[i + 1]].tolist() for i in range(first, stop)]
        # Cut at bar lines, each sequence BPE-encoded on its own, together the whole piece.
        assert all(len(r) <= 94 and tok.expansion(r[0])[0] == "Bar_None" for r in rows)
        for row in rows:
            base_ids = [tok.token_to_id(t) for t in tok.base_tokens(row)]
            assert tok.encode_base_ids([base_ids])[0] == row
        base = [t for r in rows for t in tok.base_tokens(r)]
        assert base == tok.encode_tokens(load_midi(piece["item"]))
    assert manifest["counts"]["sequences_cut_at_bar_lines"] > 0
    data = TokenDataset(out, "train", seq_len=64)
    assert data.mode == "packed" and data[0]["input_ids"][0].item() == tok.bos_id


# ---------------------------------------------------------------------- command line


def test_the_command_line_prepares_and_summarizes(corpus, dataset, tmp_path):
    out = tmp_path / "cli"
    args = ["prepare", str(corpus), "-o", str(out), "--workers", "1", "--transpose", "-1:1"]
    args += ["--infill-share", "0.5", "--max-bars", "50", "--max-tracks", "8"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"prepared {out}: 16 of 27 files accepted")
    assert snapshot(out) == snapshot(dataset[0])
    again = CliRunner().invoke(cli, args)
    assert again.stdout.strip() == f"{out} is up to date (nothing to do)"
    info = CliRunner().invoke(cli, ["dataset-info", str(out), "--verify"])
    assert info.exit_code == 0, info.output
    assert "MMM text, 425 ids (uint16)" in info.stdout
    assert "27 seen: 16 accepted, 9 rejected, 2 duplicates" in info.stdout
    assert "       corrupt" in info.stdout.replace("     1 ", "       ")
    assert "verified" in info.stderr
    raw = CliRunner().invoke(cli, ["dataset-info", str(out), "--json"])
    assert json.loads(raw.stdout) == json.loads((out / "manifest.json").read_text())


def test_the_command_line_runs_shards_and_merges_them(corpus, dataset, tmp_path):
    common = ["--workers", "1", "--transpose", "-1:1", "--infill-share", "0.5"]
    common += ["--max-bars", "50", "--max-tracks", "8"]
    for k in (1, 2):
        part = tmp_path / f"p{k}"
        result = CliRunner().invoke(
            cli, ["prepare", str(corpus), "-o", str(part), "--shard", f"{k}/2", *common]
        )
        assert result.exit_code == 0, result.output
        assert result.stdout.startswith(f"part {k}/2 in {part}:")
    merged = tmp_path / "merged"
    result = CliRunner().invoke(
        cli, ["prepare", "--merge", str(tmp_path / "p1"), str(tmp_path / "p2"), "-o", str(merged)]
    )
    assert result.exit_code == 0, result.output
    assert snapshot(merged) == snapshot(dataset[0])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["prepare", "nowhere/", "-o", "x"], "nowhere: no such file, folder or music21"),
        (["prepare", "music21:bach", "-o", "x", "--shard", "3/2"], "need 1 ≤ K ≤ N"),
        (["prepare", "music21:bach", "-o", "x", "--transpose", "2:3"], "LOW ≤ 0 ≤ HIGH"),
        (["prepare", "music21:bach", "-o", "x", "--split", "0.5,0.5"], "three shares"),
        (["prepare", "music21:bach", "-o", "x", "--tokenizer", "remi", "--bars", "8"], "mmm only"),
        (["prepare", "p", "-o", "x", "--merge", "--shard", "1/2"], "do not go together"),
        (["prepare", "p", "-o", "x", "--merge", "--seed", "3"], "drop --seed"),
        (["dataset-info", "nowhere"], "no manifest"),
    ],
    ids=lambda v: v if isinstance(v, str) else " ".join(v[:1] + v[-2:]),
)
def test_command_line_errors_are_one_line(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines


def test_the_progress_bar_reports_files_per_second(corpus, tmp_path, capsys):
    prepare([str(corpus / "chorales")], tmp_path / "p", workers=1, progress=True, **FAST)
    err = capsys.readouterr().err
    assert "prepare" in err and "file/s" in err and "write" in err


# ---------------------------------------------------------------------- all chorales


@pytest.mark.slow
def test_all_bach_chorales_end_to_end(tmp_path):
    """Every chorale of music21:bach (each converted by music21 once, in the workers)."""
    specs = music21_specs("music21:bach")
    out = tmp_path / "bach"
    settings = {"transpose": (-2, 2), "infill_share": 0.25, "meter_tokens": True}
    tokenizer_settings = {"meter_tokens": settings.pop("meter_tokens")}
    result = prepare(
        ["music21:bach"], out, workers=2, keep_work=True,
        tokenizer_settings=tokenizer_settings, **settings,
    )  # fmt: skip
    manifest = result.manifest
    counts = manifest["counts"]
    assert counts["files_seen"] == len(specs) == manifest["sources"]["items"]
    assert counts["accepted"] + counts["rejected"] + counts["duplicates"] == len(specs)
    assert counts["accepted"] > 380
    rejected = read_jsonl(out / "rejected.jsonl")
    assert len(rejected) == counts["rejected"] + counts["duplicates"]
    pieces = read_jsonl(out / "pieces.jsonl")
    assert len(pieces) == counts["accepted"]
    assert {p["item"] for p in pieces}.isdisjoint(r["item"] for r in rejected)
    for split in ("train", "valid", "test"):
        tokens, offsets = read_split(out, split)
        stats = manifest["splits"][split]
        assert stats["sequences"] == len(offsets) - 1 and stats["tokens"] == len(tokens)
        assert stats["pieces"] == sum(p["split"] == split for p in pieces) > 0
    # No window crosses splits: every piece's rows lie in its own split, and no piece's
    # notes are in two splits.
    seen: dict[str, str] = {}
    for piece in pieces:
        assert seen.setdefault(piece["hash"], piece["split"]) == piece["split"]
    # Transposed variants stay in 0–127 and in the vocabulary's meters.
    tok = MMMTokenizer.load(out)
    tokens, _ = read_split(out, "train")
    kinds = tok.vocab.kinds[np.asarray(tokens)]
    pitches = tok.vocab.values[np.asarray(tokens)][kinds == Kind.NOTE_ON]
    assert pitches.min() >= 0 and pitches.max() <= 127
    assert manifest["splits"]["train"]["variants"] + counts["variants_dropped_out_of_range"] == (
        5 * manifest["splits"]["train"]["pieces"]
    )
    # The split is stable when pieces are added: a corpus of the first 300 chorales puts
    # each of them where the whole collection did (the work folder makes this quick).
    listing = tmp_path / "first300.txt"
    listing.write_text("\n".join(specs[:300]), encoding="utf-8")
    smaller = prepare(
        [str(listing)], out, workers=2, overwrite=True,
        tokenizer_settings=tokenizer_settings, **settings,
    )  # fmt: skip
    assert smaller.processed == 0
    split_of_item = {p["item"]: p["split"] for p in pieces}
    for piece in read_jsonl(out / "pieces.jsonl"):
        assert split_of_item[piece["item"]] == piece["split"]
