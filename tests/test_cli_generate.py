"""``midilm generate | infill | add-track | regenerate-track`` on a tiny model directory:
files written, numbering from 1 on the command line, one-line errors for bad arguments."""

from __future__ import annotations

import pytest

from midilm.score import bar_grid, load_midi, save_midi
from sampling_helpers import tiny_mmm_dir
from test_cli import assert_error, assert_ok, invoke


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, bach_scores):
    return tiny_mmm_dir(tmp_path_factory, bach_scores)


@pytest.fixture(scope="module")
def chorale_file(tmp_path_factory, bach_scores):
    path = tmp_path_factory.mktemp("cli-generate") / "chorale.mid"
    save_midi(bach_scores[3][1], path)
    return path


def _notes(track):
    return sorted((n.time, n.duration, n.pitch) for n in track.notes)


def test_generate_writes_midi_and_tokens(model_dir, tmp_path):
    out, tokens = tmp_path / "song.mid", tmp_path / "song.txt"
    result = invoke("generate", "--model", model_dir, "--bars", 3, "--instruments",
                    "piano,bass", "--density", "low", "--seed", 1, "-o", out,
                    "--save-tokens", tokens, "-q")  # fmt: skip
    assert_ok(result)
    score = load_midi(out)
    assert [t.program for t in score.tracks] == [0, 33]
    assert max(n.end for t in score.tracks for n in t.notes) <= 3 * 4 * score.ticks_per_quarter
    (line,) = tokens.read_text().splitlines()
    assert line.startswith("PIECE_START") and line.count("TRACK_START") == 2
    assert line.count("BAR_START") == 2 * 3


def test_several_candidates_are_numbered(model_dir, tmp_path):
    result = invoke("generate", "--model", model_dir, "--bars", 2, "--num", 2, "--seed", 3,
                    "-o", tmp_path / "take.mid", "-q")  # fmt: skip
    assert_ok(result)
    assert (tmp_path / "take-1.mid").is_file() and (tmp_path / "take-2.mid").is_file()
    assert not (tmp_path / "take.mid").exists()


def test_infill_counts_tracks_and_bars_from_one(model_dir, chorale_file, tmp_path):
    out = tmp_path / "filled.mid"
    result = invoke("infill", chorale_file, "--model", model_dir, "--track", 2, "--bars", "2-3",
                    "--seed", 0, "-o", out, "-q")  # fmt: skip
    assert_ok(result)
    before, after = load_midi(chorale_file), load_midi(out)
    grid = bar_grid(before)
    inside = range(grid[1].start_ticks, grid[2].end_ticks)
    for index, (old, new) in enumerate(zip(before.tracks, after.tracks, strict=True)):
        if index == 1:  # track 2 on the command line
            assert [n for n in _notes(new) if n[0] not in inside] == [
                n for n in _notes(old) if n[0] not in inside
            ]
        else:
            assert _notes(new) == _notes(old)


def test_add_track_and_regenerate_track(model_dir, chorale_file, tmp_path):
    added = tmp_path / "added.mid"
    assert_ok(invoke("add-track", chorale_file, "--model", model_dir, "--instrument", "bass",
                     "--seed", 2, "-o", added, "-q"))  # fmt: skip
    before, after = load_midi(chorale_file), load_midi(added)
    assert len(after.tracks) == len(before.tracks) + 1 and after.tracks[-1].program == 33
    redone = tmp_path / "redone.mid"
    assert_ok(invoke("regenerate-track", chorale_file, "--model", model_dir, "--track", 1,
                     "--seed", 2, "-o", redone, "-q"))  # fmt: skip
    again = load_midi(redone)
    assert [_notes(t) for t in again.tracks[1:]] == [_notes(t) for t in before.tracks[1:]]


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["generate", "--instruments", "pianoo"], ["instruments", "piano"]),
        (["generate", "--bars", "0"], ["--bars"]),
        (["generate", "--density", "loud"], ["density", "low, medium, high"]),
        (["generate", "--density", "42"], ["density", "0–"]),
        (["infill", "CHORALE", "--track", "9", "--bars", "1"], ["track", "from 1"]),
        (["infill", "CHORALE", "--track", "0", "--bars", "1"], ["from 1"]),
        (["infill", "CHORALE", "--track", "1", "--bars", "3-2"], ["range goes up"]),
        (["add-track", "CHORALE", "--instrument", "kazoo"], ["kazoo"]),
    ],
)
def test_bad_arguments_are_one_line_errors(model_dir, chorale_file, tmp_path, args, fragments):
    args = [str(chorale_file) if a == "CHORALE" else a for a in args]
    result = invoke(*args, "--model", model_dir, "-o", tmp_path / "x.mid", "-q")
    assert_error(result, *fragments)
    assert not (tmp_path / "x.mid").exists()


def test_missing_model_and_corrupt_prompt(model_dir, tmp_path):
    assert_error(invoke("generate", "--model", tmp_path / "nope", "-o", tmp_path / "x.mid"),
                 "no such model directory")  # fmt: skip
    bad = tmp_path / "bad.mid"
    bad.write_bytes(b"MThd garbage")
    assert_error(invoke("generate", "--model", model_dir, "--prompt", bad, "-o",
                        tmp_path / "x.mid"), "bad.mid")  # fmt: skip


def test_bundled_remi_model_continues_a_prompt(tmp_path, bach_scores):
    """The seed's own use, out of the box: the bundled REMI + BPE model continues a MIDI
    prompt by the bars asked for, and the prompt's notes come back unchanged."""
    chorale = bach_scores[5][1]
    bars = bar_grid(chorale)
    prompt_score = chorale.clip(0, bars[4].start_ticks, clip_end=True)
    prompt, out = tmp_path / "in.mid", tmp_path / "out.mid"
    save_midi(prompt_score, prompt)
    result = invoke("generate", "--model", "bundled:remi", "--prompt", prompt, "--bars", 4,
                    "--seed", 2, "-o", out, "-q")  # fmt: skip
    assert_ok(result)
    given, continued = load_midi(prompt), load_midi(out)
    scale = continued.ticks_per_quarter / given.ticks_per_quarter
    end = bar_grid(given)[-1].end_ticks * scale
    old = sorted(
        (round(n.time / scale), n.pitch)
        for t in continued.tracks for n in t.notes if n.time < end
    )  # fmt: skip
    assert old == sorted((n.time, n.pitch) for t in given.tracks for n in t.notes)
    new = [n for t in continued.tracks for n in t.notes if n.time >= end]
    assert new, "the continuation wrote no notes"
    bar = 4 * continued.ticks_per_quarter  # the chorale is in 4/4
    assert max(n.time for n in new) < end + 4 * bar
