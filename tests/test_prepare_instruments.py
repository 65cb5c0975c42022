"""Instrument augmentation (``instrument_augmentation="ensembles"``): the programs a training
window gets are General MIDI programs of the allowed families whose ranges hold the notes
the track plays, drums keep theirs, valid and test keep theirs, and the choice is the same
for any number of workers (midilm.data.augment and midilm.data.prepare)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import symusic
from click.testing import CliRunner

from midilm.cli.main import cli
from midilm.data import read_split
from midilm.data.augment import INSTRUMENT_FAMILIES, choose_programs, fitting_programs
from midilm.data.prepare import PrepareConfig, prepare
from midilm.errors import ConfigError
from midilm.tokenization.mmm import MMMTokenizer
from midilm.tokenization.mmm_vocab import DRUMS, Kind

RANGE = {program: (low, high) for f in INSTRUMENT_FAMILIES.values() for program, low, high in f}
FAMILY = {program: name for name, f in INSTRUMENT_FAMILIES.items() for program, _, _ in f}
ORIGINAL = 30  # distortion guitar: in no family, so a changed program always shows
VOICES = ((60, 79), (55, 72), (48, 67), (36, 60))  # soprano, alto, tenor, bass
ENSEMBLES = {"instrument_augmentation": "ensembles", "instrument_keep_share": 0.0}
SETTINGS = {"transpose": (-2, 2), "infill_share": 0.3, "split_ratios": (1.0, 0.0, 0.0)}


def four_voices(variant: int, bars: int = 8) -> symusic.Score:
    """Four voices in their own ranges (program 30) and a drum track; ``variant`` makes
    the notes of each piece different."""
    rng = np.random.default_rng(variant)
    score = symusic.Score(480)
    score.time_signatures.append(symusic.TimeSignature(0, 4, 4))
    for low, high in VOICES:
        track = symusic.Track(name=f"voice {low}", program=ORIGINAL, is_drum=False)
        pitches = rng.integers(low, high + 1, size=bars * 4)
        pitches[0], pitches[-1] = low, high  # the whole range, at both ends of the piece
        for beat, pitch in enumerate(pitches.tolist()):
            track.notes.append(symusic.Note(beat * 480, 480, pitch, 80))
        score.tracks.append(track)
    drums = symusic.Track(name="drums", program=0, is_drum=True)
    for beat in range(bars * 4):
        drums.notes.append(symusic.Note(beat * 480, 240, 36 + 2 * (beat % 2), 90))
    score.tracks.append(drums)
    return score


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("voices")
    for i in range(6):
        four_voices(i).dump_midi(folder / f"piece{i}.mid")
    return folder


def windows(directory: Path, split: str = "train") -> list[list[tuple[int, list[int]]]]:
    """Each sequence of a split as its tracks: ``(program, pitches of its written notes)``
    (notes of masked bars, answered after the tracks, left out)."""
    tok = MMMTokenizer.load(directory)
    tokens, offsets = read_split(directory, split)
    kinds, values = tok.vocab.kinds, tok.vocab.values
    out = []
    for lo, hi in itertools.pairwise(offsets.tolist()):
        tracks: list[tuple[int, list[int]]] = []
        for token in np.asarray(tokens[lo:hi]).tolist():
            kind = kinds[token]
            if kind == Kind.INST:
                tracks.append((int(values[token]), []))
            elif kind == Kind.NOTE_ON and tracks:
                tracks[-1][1].append(int(values[token]))
            elif kind == Kind.FILL_START:
                break
        out.append(tracks)
    return out


# ---------------------------------------------------------------------- the choice itself


def test_a_program_fits_a_voice_only_when_its_range_holds_every_note():
    bass = fitting_programs(40, 62)  # E2–D4
    assert 40 not in bass.get("strings", [])  # no violin below G3
    assert {42, 43} <= set(bass["strings"]) and 58 in bass["brass"]
    soprano = fitting_programs(62, 79)  # D4–G5
    assert 58 not in soprano.get("brass", [])  # no tuba for a soprano
    assert 40 in soprano["strings"] and 73 in soprano["woodwinds"] and 56 in soprano["brass"]
    assert fitting_programs(10, 20) == {}  # below every instrument
    for (low, high), fit in (((40, 62), bass), ((62, 79), soprano)):
        for family, programs in fit.items():
            assert programs == [
                p for p, lo, hi in INSTRUMENT_FAMILIES[family] if lo <= low and high <= hi
            ]


def test_the_modes_keep_mix_or_share_one_family_and_leave_drums_alone():
    ranges = [(62, 79), (57, 74), (50, 67), (40, 62), None]  # a chorale and a drum track
    seen = set()
    for seed in range(300):
        rng = np.random.default_rng(seed)
        mode, programs = choose_programs(rng, ranges, keep_share=0.25, mixed_share=0.25)
        seen.add(mode)
        assert programs[-1] is None  # drums
        if mode == "original":
            assert programs == [None] * 5
            continue
        for program, (low, high) in zip(programs, ranges[:-1], strict=False):
            assert program is not None and RANGE[program][0] <= low and high <= RANGE[program][1]
        if mode == "ensemble":
            assert len({FAMILY[p] for p in programs[:-1]}) == 1
    assert seen == {"original", "ensemble", "mixed"}
    only_drums = choose_programs(np.random.default_rng(0), [None], keep_share=0, mixed_share=0)
    assert only_drums == ("original", [None])


def test_settings_are_checked():
    with pytest.raises(ConfigError, match="applies to MMM"):
        PrepareConfig(tokenizer="remi", instrument_augmentation="ensembles")
    with pytest.raises(ConfigError, match=r"in 0–1, received 1\.5"):
        PrepareConfig(instrument_mixed_share=1.5)
    with pytest.raises(ConfigError, match="expected one of"):
        PrepareConfig.from_dict({"instrument_augmentation": "orchestra"})


# ---------------------------------------------------------------------- in a dataset


@pytest.fixture(scope="module")
def ensembles(corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ens") / "ds"
    prepare([str(corpus)], out, workers=1, **SETTINGS, **ENSEMBLES, instrument_mixed_share=0.0)
    return out


def test_every_window_is_one_family_that_fits_its_voices_and_drums_are_untouched(ensembles):
    manifest = json.loads((ensembles / "manifest.json").read_text())
    assert manifest["settings"]["instrument_augmentation"] == "ensembles"
    train = manifest["splits"]["train"]
    assert train["reinstrumented_sequences"] == train["sequences"] > 0
    families = set()
    for tracks in windows(ensembles):
        pitched = [(p, notes) for p, notes in tracks if p != DRUMS]
        assert len(pitched) == 4 and [p for p, _ in tracks].count(DRUMS) == 1
        for program, notes in pitched:
            assert program in RANGE, program
            low, high = RANGE[program]
            assert low <= min(notes) and max(notes) <= high, (program, notes)
        window_families = {FAMILY[p] for p, _ in pitched}
        assert len(window_families) == 1
        families |= window_families
        drums = next(notes for p, notes in tracks if p == DRUMS)
        assert set(drums) <= {36, 38}  # never transposed, never given a program
    assert families >= {"strings", "organ", "piano", "brass", "woodwinds"}


def test_original_programs_stay_among_the_windows_and_mixed_ones_fit(corpus, tmp_path):
    out = tmp_path / "mixed"
    prepare([str(corpus)], out, workers=1, **SETTINGS, instrument_augmentation="ensembles")
    manifest = json.loads((out / "manifest.json").read_text())
    train = manifest["splits"]["train"]
    assert 0 < train["reinstrumented_sequences"] < train["sequences"]
    kept = 0
    for tracks in windows(out):
        pitched = [(p, notes) for p, notes in tracks if p != DRUMS]
        if {p for p, _ in pitched} == {ORIGINAL}:
            kept += 1
            continue
        for program, notes in pitched:
            low, high = RANGE[program]
            assert low <= min(notes) and max(notes) <= high
    assert 0.1 < kept / train["sequences"] < 0.4  # instrument_keep_share = 0.25


def test_the_choices_change_neither_track_order_nor_notes(corpus, ensembles, tmp_path):
    """All windows kept: the very dataset of no augmentation. And with new programs, the
    same windows in the same order with the same notes."""
    kept = tmp_path / "kept"
    prepare([str(corpus)], kept, workers=1, **SETTINGS, instrument_augmentation="ensembles",
            instrument_keep_share=1.0)  # fmt: skip
    plain = tmp_path / "plain"
    prepare([str(corpus)], plain, workers=1, **SETTINGS)
    for name in ("train.tokens.npy", "train.offsets.npy"):
        assert (kept / name).read_bytes() == (plain / name).read_bytes()
    assert [[notes for _, notes in w] for w in windows(ensembles)] == [
        [notes for _, notes in w] for w in windows(plain)
    ]


def test_workers_do_not_change_a_byte(corpus, ensembles, tmp_path):
    two = tmp_path / "two"
    prepare([str(corpus)], two, workers=2, **SETTINGS, **ENSEMBLES, instrument_mixed_share=0.0)
    for path in sorted(ensembles.iterdir()):
        assert (two / path.name).read_bytes() == path.read_bytes(), path.name


def test_valid_and_test_pieces_keep_their_programs(corpus, tmp_path):
    out = tmp_path / "eval"
    settings = {**SETTINGS, "split_ratios": (0.4, 0.3, 0.3)}
    prepare([str(corpus)], out, workers=1, **settings, **ENSEMBLES)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["splits"]["valid"]["pieces"] + manifest["splits"]["test"]["pieces"] > 0
    for split in ("valid", "test"):
        assert manifest["splits"][split]["reinstrumented_sequences"] == 0
        for tracks in windows(out, split):
            assert {p for p, _ in tracks} <= {ORIGINAL, DRUMS}


def test_real_chorales_get_plausible_instruments(bach_scores, tmp_path):
    from midilm.score import save_midi

    folder = tmp_path / "chorales"
    four_part = [(s, sc) for s, sc in bach_scores if len(sc.tracks) == 4][:6]
    for i, (_, score) in enumerate(four_part):
        save_midi(score, folder / f"c{i}.mid")
    out = tmp_path / "ds"
    prepare([str(folder)], out, workers=1, **SETTINGS, **ENSEMBLES, instrument_mixed_share=0.0,
            tokenizer_settings={"meter_tokens": True})  # fmt: skip
    violins_on_bass = 0
    for tracks in windows(out):
        for program, notes in tracks:
            low, high = RANGE[program]
            assert low <= min(notes) and max(notes) <= high
            violins_on_bass += program == 40 and min(notes) < 55
    assert violins_on_bass == 0


def test_the_command_line_flag(corpus, ensembles, tmp_path):
    out = tmp_path / "cli"
    args = ["prepare", str(corpus), "-o", str(out), "--workers", "1", "--transpose", "-2:2"]
    args += ["--infill-share", "0.3", "--split", "1,0,0", "--instrument-augmentation"]
    args += ["--instrument-keep-share", "0", "--instrument-mixed-share", "0"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    for name in ("manifest.json", "train.tokens.npy"):
        assert (out / name).read_bytes() == (ensembles / name).read_bytes()
    remi = CliRunner().invoke(
        cli, ["prepare", str(corpus), "-o", str(tmp_path / "r"), "--tokenizer", "remi",
              "--instrument-augmentation"],
    )  # fmt: skip
    assert remi.exit_code == 2 and "mmm only" in remi.stderr
