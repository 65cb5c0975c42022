"""The evaluation's measuring instruments, without a model: the syntax counter files each
broken sequence under its own error kind, overlapping areas behave (1 for the same
distribution, 0 for disjoint ones), the voice-leading counter finds parallel fifths and
octaves and nothing in contrary motion, and reports render, reload and compare."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from midilm.cli.main import cli
from midilm.evaluation import (
    FEATURES,
    Report,
    compare_sets,
    compare_table,
    count_violations,
    overlap_area,
    piece_notes,
)
from midilm.evaluation.statistics import PieceNotes, TrackNotes, feature_values, histogram
from midilm.evaluation.syntax import KINDS
from midilm.evaluation.voice_leading import (
    VOICE_RANGES,
    count_parallels,
    four_voices,
    voice_leading_stats,
)
from midilm.tokenization.mmm import MMMTokenizer
from midilm.tokenization.remi import REMITokenizer


@pytest.fixture(scope="module")
def tok() -> MMMTokenizer:
    return MMMTokenizer(meter_tokens=True)


# ---------------------------------------------------------------------- controls
def test_density_is_measured_over_the_windows_the_sampler_wrote():
    """Whole windows from the first bar, the last one ending on the last bar: a 6-bar piece
    is measured over bars 1–4 and 3–6 (the windows a 4-bar model was asked to fill), not
    over a 2-bar tail whose count, doubled, lands in another bin."""
    from midilm.evaluation.controls import achieved_density
    from mmm_helpers import make_score

    tok = MMMTokenizer(density_edges=(9, 12, 14, 15, 16, 17, 18, 20, 22))
    per_bar = [4, 3, 4, 3, 4, 4]  # notes in each 4/4 bar of 16 steps
    notes = [(16 * bar + 4 * i, 2, 60) for bar, n in enumerate(per_bar) for i in range(n)]
    score = make_score([(0, False, notes)])
    assert achieved_density(tok, score, 0, 6) == [tok.density_bin(14), tok.density_bin(15)]
    assert tok.density_bin(8, 2) == tok.density_bin(15) + 1  # what the tail would have said
    assert achieved_density(tok, score, 0, 2) == [tok.density_bin(7, 2)]


# ---------------------------------------------------------------------- syntax
HEAD = "PIECE_START TIME_SIGNATURE=4/4 TRACK_START INST=0 DENSITY=2 BAR_START"
END = "BAR_END TRACK_END"
OFF_60 = "NOTE_OFF=60"


@pytest.mark.parametrize(
    ("kind", "text"),
    [
        # A density token inside a bar.
        ("type", f"{HEAD} DENSITY=3 NOTE_ON=60 TIME_DELTA=4 NOTE_OFF=60 {END}"),
        # 12 + 8 steps in a 16-step bar.
        ("time", f"{HEAD} NOTE_ON=60 TIME_DELTA=12 NOTE_OFF=60 TIME_DELTA=8 {END}"),
        ("duplicate_note", f"{HEAD} NOTE_ON=60 NOTE_ON=60 TIME_DELTA=4 {OFF_60} {OFF_60} {END}"),
        ("note_off_without_on", f"{HEAD} NOTE_ON=60 TIME_DELTA=4 NOTE_OFF=60 NOTE_OFF=62 {END}"),
        # The sequence ends with a note still sounding.
        ("unclosed_note", f"{HEAD} NOTE_ON=60 TIME_DELTA=4"),
    ],
)
def test_each_broken_mmm_sequence_counts_under_its_kind(tok, kind, text):
    ids = tok.text_to_ids(text)
    counts = count_violations(tok.grammar(bars=1, allow_placeholders=False).start, [ids])
    assert {k: n for k, n in counts.counts.items() if n} == {kind: 1}
    assert counts.sequences_with_errors == 1
    assert counts.to_dict()["rate_by_kind"][kind] == pytest.approx(1 / len(ids))
    assert counts.to_dict()["error_rate"] == pytest.approx(1 / len(ids))


NOTE_60 = ["Pitch_60", "Velocity_95", "Duration_1.0.4"]
NOTE_64 = ["Pitch_64", "Velocity_95", "Duration_1.0.4"]


@pytest.mark.parametrize(
    ("kind", "tokens"),
    [
        ("type", ["Bar_None", "Position_0", "Pitch_60", *NOTE_64]),
        ("time", ["Bar_None", "Position_8", *NOTE_60, "Position_4", *NOTE_64]),
        ("duplicate_note", ["Bar_None", "Position_0", *NOTE_60, *NOTE_60]),
    ],
)
def test_each_broken_remi_sequence_counts_under_its_kind(kind, tokens):
    remi = REMITokenizer()
    ids = [remi.token_to_id(t) for t in tokens]
    counts = count_violations(remi.grammar().start, [ids])
    assert {k: n for k, n in counts.counts.items() if n} == {kind: 1}


def test_prompt_and_cut_endings_are_not_counted(tok):
    grammar = tok.grammar(bars=1, allow_placeholders=False)
    good = tok.text_to_ids(f"{HEAD} NOTE_ON=60 TIME_DELTA=4 NOTE_OFF=60 BAR_END TRACK_END")
    # A stray density in the prompt: fed by the task, not sampled, so not counted.
    bad_prompt = tok.text_to_ids(f"{HEAD} DENSITY=3") + good[6:]
    counts = count_violations(grammar.start, [good, bad_prompt], prompt_lengths=[0, 7])
    assert count_violations(grammar.start, [bad_prompt]).errors == 1
    assert counts.errors == 0
    assert counts.tokens == len(good) + len(bad_prompt) - 7
    # A sequence stopped by the budget mid-bar: its open note is not an error.
    cut = tok.text_to_ids(f"{HEAD} NOTE_ON=60 TIME_DELTA=4")
    assert count_violations(grammar.start, [cut]).counts["unclosed_note"] == 1
    judged = count_violations(grammar.start, [cut], truncated=[True])
    assert judged.errors == 0 and judged.truncated == 1


# ---------------------------------------------------------------------- statistics
def test_overlap_of_a_distribution_with_itself_is_one_and_of_disjoint_ones_zero():
    rng = np.random.default_rng(0)
    p = rng.random(12)
    assert overlap_area(p, p) == pytest.approx(1.0)
    assert overlap_area(p, 3 * p) == pytest.approx(1.0)  # normalized first
    q = np.zeros(12)
    q[:6] = 1
    r = np.zeros(12)
    r[6:] = 1
    assert overlap_area(q, r) == 0.0
    assert overlap_area(q, q + r) == pytest.approx(0.5)
    assert np.isnan(overlap_area(q, np.zeros(12)))


def test_a_set_of_real_pieces_overlaps_itself_fully(bach_scores):
    values = feature_values([piece_notes(s) for _, s in bach_scores[:5]])
    assert all(len(values[name]) for name in FEATURES)
    assert set(compare_sets(values, values).values()) == {1.0}
    transposed = dict(values, pitch_class=(values["pitch_class"] + 6) % 12)
    shifted = compare_sets(values, transposed)
    assert 0 <= shifted["pitch_class"] < 1
    assert shifted["duration"] == 1.0


def test_features_of_a_hand_built_bar():
    # One 4/4 bar: C4 quarter, E4 quarter, G4 half; a second track holds C3 for the bar.
    melody = TrackNotes(0, False, np.array([0, 4, 8]), np.array([4, 8, 16]), np.array([60, 64, 67]))
    bass = TrackNotes(32, False, np.array([0]), np.array([16]), np.array([48]))
    drums = TrackNotes(0, True, np.array([0, 4]), np.array([1, 5]), np.array([36, 38]))
    piece = PieceNotes(np.array([0]), np.array([16]), [melody, bass, drums])
    v = feature_values([piece])
    assert sorted(v["pitch_class"].tolist()) == [0, 0, 4, 7]  # drums left out
    assert sorted(v["pitch_range"].tolist()) == [0, 7]
    assert v["interval"].tolist() == [4, 3]
    assert sorted(v["onset_position"].tolist()) == [0, 0, 4, 8]
    assert sorted(v["duration"].tolist()) == [4, 4, 8, 16]
    assert v["polyphony"].tolist() == [2, 2, 2]
    assert sorted(v["notes_per_bar"].tolist()) == [1, 3]
    assert histogram(np.array([100]), FEATURES["duration"])[-1] == 1.0  # clipped to the top bin


def test_piece_notes_keeps_silent_tracks_and_the_requested_bars(bach_scores):
    score = bach_scores[0][1].copy()
    score.tracks[1].notes.clear()
    notes = piece_notes(score, bars=3)
    assert len(notes.tracks) == len(score.tracks)
    assert len(notes.bar_starts) == 3 and len(notes.tracks[1].pitch) == 0
    cell = notes.cell(0, 1)
    assert len(cell.bar_starts) == 1
    assert (cell.tracks[0].onset >= 0).all() and (cell.tracks[0].onset < notes.bar_lengths[1]).all()


# ---------------------------------------------------------------------- voice leading
def _voice(pitches, step=4):
    onset = np.arange(len(pitches)) * step
    return TrackNotes(0, False, onset, onset + step, np.asarray(pitches))


def test_parallel_fifths_are_found_in_a_two_voice_example():
    # C4–G4, D4–A4, E4–B4: two motions, both parallel fifths.
    counts = count_parallels(_voice([67, 69, 71]), _voice([60, 62, 64]))
    assert (counts.motions, counts.fifths, counts.octaves) == (2, 2, 0)
    # Octaves (and a twelfth counts as a fifth): C5/C4 → D5/D4.
    assert count_parallels(_voice([72, 74]), _voice([60, 62])).octaves == 1
    assert count_parallels(_voice([79, 81]), _voice([60, 62])).fifths == 1


def test_contrary_and_oblique_motion_have_no_parallels():
    # G4 A4 B4 over C4 B3 A3: contrary motion from a fifth.
    contrary = count_parallels(_voice([67, 69, 71]), _voice([60, 59, 57]))
    assert (contrary.motions, contrary.fifths, contrary.octaves) == (2, 0, 0)
    # Held bass (oblique), a rest in one voice (no motion counted across it).
    oblique = count_parallels(_voice([67, 69]), _voice([60, 60]))
    assert (oblique.motions, oblique.fifths) == (1, 0)
    resting = TrackNotes(0, False, np.array([0, 8]), np.array([2, 12]), np.array([60, 62]))
    assert count_parallels(_voice([67, 68, 69]), resting).fifths == 0


def test_voice_leading_of_real_chorales(bach_scores):
    pieces = [piece_notes(s) for _, s in bach_scores[:6]]
    four = [p for p in pieces if four_voices(p) is not None]
    assert four
    stats = voice_leading_stats(pieces)
    assert stats is not None and stats["pieces"] == len(four) and stats["motions"] > 100
    # Bach avoids them: well under one parallel per 100 motions.
    assert stats["parallel_fifths_per_100_motions"] < 1
    assert stats["parallel_octaves_per_100_motions"] < 1
    assert set(stats["in_range"]) == set(VOICE_RANGES)
    assert all(share > 0.8 for share in stats["in_range"].values())
    two_voices = PieceNotes(np.array([0]), np.array([16]), [_voice([60]), _voice([48])])
    assert voice_leading_stats([two_voices]) is None


# ---------------------------------------------------------------------- reports
def _report(bits: float, exact: float) -> Report:
    return Report(
        model={"name": "m", "path": "/m", "kind": "mmm", "parameters": 10, "vocab_size": 5},
        dataset={"path": "/d", "digest": "abc", "split": "test"},
        settings={"samples": 2, "bars": 4, "seed": 0},
        likelihood={"split": "test", "loss": 1.5, "perplexity": 4.48, "bits_per_note": bits},
        syntax={
            mode: {"error_rate": rate, "rate_by_kind": dict.fromkeys(KINDS, rate)}
            for mode, rate in (("unconstrained", 0.25), ("constrained", 0.0))
        },
        controls={"density_exact": exact, "density_within_1": 0.9, "instruments_present": 1.0},
        statistics={
            "features": {n: {"samples_vs_test": 0.5, "test_vs_train": 0.9} for n in FEATURES},
            "mean": {"samples_vs_test": 0.5, "test_vs_train": 0.9},
        },
        voice_leading=None,
        infill=None,
        speed={"tokens_per_s": 100.0, "seconds_per_bar": 0.2},
        notes=["voice leading: omitted"],
    )


def test_report_round_trips_and_compare_prints_both(tmp_path):
    a, b = _report(3.25, 0.375), _report(2.875, 0.625)
    a.save(tmp_path / "a")
    b.save(tmp_path / "b")
    assert Report.load(tmp_path / "a") == a
    assert json.loads((tmp_path / "a" / "report.json").read_text())["format"] == (
        "midilm-evaluation"
    )
    assert "3.25" in (tmp_path / "a" / "report.md").read_text()
    table = compare_table([a, b], ["a", "b"])
    row = next(line for line in table.splitlines() if "bits per note" in line)
    assert "3.25" in row and "2.875" in row
    result = CliRunner().invoke(cli, ["compare", str(tmp_path / "a"), str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == "| metric | a | b |"
    density = next(line for line in result.stdout.splitlines() if "density bin exact" in line)
    assert "0.375" in density and "0.625" in density


def test_cli_errors_are_one_line(tmp_path):
    missing = tmp_path / "nowhere"
    result = CliRunner().invoke(cli, ["evaluate", "bundled:none", str(missing), "-o", "out"])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert "manifest" in result.stderr
    result = CliRunner().invoke(cli, ["compare", str(missing)])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and "no evaluation report" in result.stderr
    result = CliRunner().invoke(cli, ["evaluate", "m", str(tmp_path)])
    assert result.exit_code == 2 and "-o" in result.stderr
