"""REMI + BPE over MidiTok, on real Bach chorales: round trips, files MidiTok itself reads,
the seed's settings, and the grammar (checked against MidiTok's own TSE counter)."""

from __future__ import annotations

import json
import random
import shutil

import miditok
import numpy as np
import pytest
import symusic
from symusic.core import ScoreTick

from midilm.errors import (
    ConfigError,
    InvalidMidiError,
    TokenizerMismatchError,
    UnknownTokenError,
)
from midilm.tokenization import Tokenizer, ViolationKind, load_tokenizer
from midilm.tokenization.remi import REMIConfig, REMITokenizer

TRAIN_COUNT = 80  # chorales the BPE is learned on; the other 40 are held out
BPE_VOCAB = 800


# ---------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def train_scores(bach_scores):
    return bach_scores[:TRAIN_COUNT]


@pytest.fixture(scope="module")
def held_out(bach_scores):
    return bach_scores[TRAIN_COUNT:]


@pytest.fixture(scope="module")
def trained(train_scores) -> REMITokenizer:
    return REMITokenizer.train([s for _, s in train_scores], vocab_size=BPE_VOCAB)


@pytest.fixture(scope="module")
def base() -> REMITokenizer:
    return REMITokenizer()


def note_tuples(score: ScoreTick) -> list[tuple[int, int, int, int]]:
    """(onset, pitch, duration, velocity) of every note of every track, sorted, in ticks."""
    return sorted(
        (n.time, n.pitch, n.duration, n.velocity) for track in score.tracks for n in track.notes
    )


def piano_merge(score: ScoreTick) -> ScoreTick:
    """All non-drum notes in one program-0 track, built here with symusic alone."""
    merged = symusic.Score(score.ticks_per_quarter)
    track = symusic.Track(name="piano", program=0, is_drum=False)
    for source in score.tracks:
        if not source.is_drum:
            for note in source.notes:
                track.notes.append(note.copy())
    track.notes.sort()
    merged.tracks.append(track)
    return merged


def with_drums(score: ScoreTick) -> ScoreTick:
    """The score plus a drum track (a kick on every beat of the first 4 bars)."""
    out = score.copy()
    drums = symusic.Track(name="Drums", program=0, is_drum=True)
    tpq = score.ticks_per_quarter
    for beat in range(16):
        drums.notes.append(symusic.Note(beat * tpq, tpq // 2, 36, 100))
    out.tracks.append(drums)
    return out


# ---------------------------------------------------------------------- settings


def test_defaults_are_the_seed_settings(base):
    config = REMIConfig()
    assert (config.min_pitch, config.max_pitch) == (21, 108)
    assert config.beat_res == ((0, 1, 8), (1, 2, 4), (2, 4, 2), (4, 8, 1))
    assert config.num_velocities == 16
    assert config.special_tokens == ("PAD", "MASK", "BOS", "EOS", "SEP")
    assert config.multitrack is False

    mt = config.to_miditok()
    assert tuple(mt.pitch_range) == (21, 108)  # MidiTok 3 reads it inclusively
    assert mt.beat_res == {(0, 1): 8, (1, 2): 4, (2, 4): 2, (4, 8): 1}
    assert mt.special_tokens == ["PAD_None", "MASK_None", "BOS_None", "EOS_None", "SEP_None"]
    for feature in ("chords", "rests", "tempos", "programs", "time_signatures"):
        assert getattr(mt, f"use_{feature}") is False, feature

    names = [base.id_to_token(i) for i in range(base.vocab_size)]
    pitches = [int(n.split("_")[1]) for n in names if n.startswith("Pitch_")]
    assert pitches == list(range(21, 109))  # the 88 keys, 21..108
    assert sum(n.startswith("Velocity_") for n in names) == 16
    assert sum(n.startswith("Position_") for n in names) == 32  # 8 per beat, 4 beats
    assert {n.split("_")[0] for n in names} == {
        "PAD", "MASK", "BOS", "EOS", "SEP", "Bar", "Position", "Pitch", "Velocity", "Duration",
    }  # fmt: skip
    assert (base.pad_id, base.bos_id, base.eos_id) == (0, 2, 3)
    assert base.vocab_size == base.base_vocab_size == 162
    assert not base.is_trained
    assert isinstance(base, Tokenizer)


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"min_pitch": 60, "max_pitch": 60}, "received 60, 60"),
        ({"max_pitch": 128}, "received 21, 128"),
        ({"beat_res": ((0, 1, 8), (2, 4, 2))}, "without gaps"),
        ({"beat_res": ((0, 4, 8), (4, 8, 3))}, "divide"),
        ({"beat_res": ((0, 4),)}, "triples"),
        ({"num_velocities": 0}, "received 0"),
        ({"special_tokens": ("PAD", "EOS")}, "must include PAD, BOS, EOS"),
        ({"special_tokens": ("PAD", "BOS", "EOS", "PAD")}, "duplicated"),
        ({"special_tokens": ("PAD", "BOS", "EOS", "A_B")}, "'A_B'"),
    ],
)
def test_config_rejects_bad_values(changes, words):
    with pytest.raises(ConfigError, match="received") as info:
        REMIConfig().replace(**changes)
    assert words in str(info.value)


def test_config_round_trips_json_and_rejects_unknown_keys(tmp_path):
    config = REMIConfig(multitrack=True, num_velocities=32)
    config.to_json(tmp_path / "c.json")
    assert REMIConfig.from_json(tmp_path / "c.json") == config
    with pytest.raises(ConfigError, match="vocab_size"):
        REMIConfig.from_dict({"vocab_size": 20_000})


# ---------------------------------------------------------------------- encode / decode


def test_encode_decode_keeps_the_preprocessed_notes(trained, held_out):
    """decode(encode(s)) has exactly the notes of MidiTok's preprocessed, merged score:
    same (onset, pitch, duration, velocity) at 8 ticks per quarter. And that score is the
    original's non-drum notes with onsets rounded to 1/8 beat, one note per (onset, pitch),
    durations on MidiTok's grid, velocities on the 16 bins."""
    velocity_bins = set(np.linspace(0, 127, 17, dtype=np.intc)[1:].tolist())
    for spec, score in held_out:
        ids = trained.encode(score)
        back = trained.decode(ids)
        reference = trained.preprocess(score)
        assert back.ticks_per_quarter == reference.ticks_per_quarter == 8, spec
        assert note_tuples(back) == note_tuples(reference), spec

        tpq = score.ticks_per_quarter
        original = piano_merge(score).tracks[0].notes
        expected_keys = {(round(n.time * 8 / tpq), n.pitch) for n in original}
        decoded = note_tuples(back)
        assert {(t, p) for t, p, _, _ in decoded} == expected_keys, spec
        assert len(decoded) == len(expected_keys), spec  # unisons merged, nothing else lost
        durations_at = {}
        for n in original:
            key = (round(n.time * 8 / tpq), n.pitch)
            durations_at[key] = [*durations_at.get(key, []), n.duration * 8 / tpq]
        for onset, pitch, duration, velocity in decoded:
            step = 1 if duration <= 8 else 2 if duration <= 16 else 4 if duration <= 32 else 8
            wanted = [min(d, 64.0) for d in durations_at[onset, pitch]]
            assert min(abs(duration - d) for d in wanted) <= step / 2 + 1, (spec, onset, pitch)
            assert velocity in velocity_bins, spec


def test_bpe_ids_stand_for_the_base_tokens(trained, base, held_out):
    for spec, score in held_out[:10]:
        tokens = trained.encode_tokens(score)
        assert tokens[0] == "Bar_None", spec
        assert trained.base_tokens(trained.encode(score)) == tokens, spec
        assert [base.token_to_id(t) for t in tokens] == base.encode(score), spec
        assert base.encode_tokens(score) == tokens, spec
    ids = trained.encode(held_out[0][1])
    assert note_tuples(trained.decode(np.array(ids))) == note_tuples(trained.decode(ids))


def test_bpe_sequences_are_shorter(trained, held_out):
    bpe = sum(len(trained.encode(s)) for _, s in held_out)
    plain = sum(len(trained.encode_tokens(s)) for _, s in held_out)
    ratio = bpe / plain
    print(f"BPE-{trained.vocab_size} / base REMI length on held-out chorales: {ratio:.3f}")
    assert trained.vocab_size == BPE_VOCAB
    assert ratio < 0.6


def test_learned_token_names_round_trip(trained):
    for token_id in range(trained.base_vocab_size, trained.vocab_size):
        name = trained.id_to_token(token_id)
        assert "+" in name
        assert trained.token_to_id(name) == token_id
        assert name.split("+") == trained.base_tokens([token_id])


def test_unknown_tokens_and_ids(trained):
    for token in ("Pitch_109", "Pitch_20", "Tempo_120.0", "", "Bar_None+Bar_None+Pitch_60"):
        with pytest.raises(UnknownTokenError, match="unknown REMI token"):
            trained.token_to_id(token)
    for token_id in (trained.vocab_size, -1):
        with pytest.raises(UnknownTokenError, match="outside the vocabulary"):
            trained.id_to_token(token_id)
    with pytest.raises(UnknownTokenError):
        trained.decode([trained.bos_id, trained.vocab_size + 5])


def test_single_stream_drops_drums_and_merges_tracks(trained, held_out):
    spec, score = held_out[0]
    assert len(score.tracks) >= 4, spec
    assert trained.encode(with_drums(score)) == trained.encode(score)
    assert trained.encode(score) == trained.encode(piano_merge(score))
    back = trained.decode(trained.encode(score))
    assert [(t.program, t.is_drum) for t in back.tracks] == [(0, False)]


def test_notes_outside_the_pitch_range_are_dropped(base, held_out):
    _, score = held_out[1]
    high = score.copy()
    high.tracks[0].notes.append(symusic.Note(0, score.ticks_per_quarter, 110, 80))
    assert base.encode(high) == base.encode(score)
    silent = symusic.Score(480)
    track = symusic.Track(name="x", program=0, is_drum=False)
    track.notes.append(symusic.Note(0, 480, 10, 80))
    silent.tracks.append(track)
    assert base.encode(silent) == []
    assert base.encode(symusic.Score(480)) == []
    assert note_tuples(base.decode([])) == []


def test_score_in_quarters_is_accepted_and_other_types_are_not(base, held_out):
    _, score = held_out[2]
    assert base.encode(score.to("quarter")) == base.encode(score)
    with pytest.raises(TypeError, match=r"symusic\.Score"):
        base.encode("not a score")


def test_multitrack_keeps_programs_and_drums(held_out):
    tok = REMITokenizer(REMIConfig(multitrack=True))
    for spec, score in held_out[:10]:
        drummed = with_drums(score)
        tokens = tok.encode_tokens(drummed)
        assert any(t.startswith("Program_") for t in tokens), spec
        assert any(t.startswith("PitchDrum_") for t in tokens), spec
        back = tok.decode(tok.encode(drummed))
        reference = tok.preprocess(drummed)
        by_track = {
            (t.program, t.is_drum): sorted((n.time, n.pitch, n.duration) for n in t.notes)
            for t in back.tracks
        }
        expected = {
            (t.program, t.is_drum): sorted((n.time, n.pitch, n.duration) for n in t.notes)
            for t in reference.tracks
        }
        assert by_track == expected, spec
        assert (0, True) in by_track, spec
        assert tok.grammar().check(tok.encode(drummed)) == [], spec


# ---------------------------------------------------------------------- training


def test_train_rejects_a_vocabulary_not_above_the_base(train_scores):
    scores = [s for _, s in train_scores[:3]]
    for size in (162, 100):
        with pytest.raises(ConfigError, match="base vocabulary of 162 tokens"):
            REMITokenizer.train(scores, vocab_size=size)
    with pytest.raises(ConfigError, match="integer"):
        REMITokenizer.train(scores, vocab_size=500.0)
    with pytest.raises(ValueError, match="no sources"):
        REMITokenizer.train([], vocab_size=500)


def test_train_from_midi_files(midi_dir, tmp_path):
    paths = sorted(midi_dir.glob("*.mid"))
    assert len(paths) >= 60
    tok = REMITokenizer.train(paths, vocab_size=400)
    assert tok.is_trained and tok.vocab_size == 400
    assert tok.grammar().check(tok.encode(symusic.Score(paths[0]))) == []
    missing = tmp_path / "nope.mid"
    with pytest.raises(InvalidMidiError, match=r"nope\.mid"):
        REMITokenizer.train([*paths[:2], missing], vocab_size=400)


# ---------------------------------------------------------------------- files


def test_save_then_load_gives_identical_ids(trained, held_out, tmp_path):
    trained.save(tmp_path)
    meta = json.loads((tmp_path / "midilm.json").read_text())
    assert meta["tokenizer"] == {"kind": "remi", "config": trained.config.to_dict()}
    loaded = REMITokenizer.load(tmp_path)
    assert loaded.config == trained.config
    assert loaded.vocab_size == trained.vocab_size
    assert isinstance(load_tokenizer(tmp_path), REMITokenizer)
    for spec, score in held_out:
        assert loaded.encode(score) == trained.encode(score), spec
    # No temporary files left behind by the atomic writes.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["midilm.json", "tokenizer.json"]


def test_miditok_reads_the_saved_file(trained, held_out, tmp_path):
    """The seed's users build ``REMI(params=…)``; it must give our ids and our notes."""
    trained.save(tmp_path)
    theirs = miditok.REMI(params=tmp_path / "tokenizer.json")
    assert theirs.is_trained and len(theirs) == trained.vocab_size
    for spec, score in held_out:
        merged = piano_merge(score)
        (seq,) = theirs.encode(merged)
        ids = trained.encode(score)
        assert list(seq.ids) == ids, spec
        assert note_tuples(theirs.decode([seq])) == note_tuples(trained.decode(ids)), spec


def test_miditok_file_alone_loads_with_its_settings(trained, held_out, tmp_path):
    trained.save(tmp_path)
    (tmp_path / "midilm.json").unlink()
    loaded = load_tokenizer(tmp_path)  # the kind is read off tokenizer.json
    assert isinstance(loaded, REMITokenizer)
    assert loaded.config == trained.config
    assert loaded.encode(held_out[0][1]) == trained.encode(held_out[0][1])


def test_untrained_and_multitrack_tokenizers_save_and_load(held_out, tmp_path):
    for name, tok in (
        ("plain", REMITokenizer()),
        ("multi", REMITokenizer(REMIConfig(multitrack=True, num_velocities=32))),
    ):
        tok.save(tmp_path / name)
        loaded = REMITokenizer.load(tmp_path / name)
        assert loaded.config == tok.config and not loaded.is_trained
        for spec, score in held_out[:5]:
            assert loaded.encode(score) == tok.encode(score), (name, spec)


def test_load_errors_name_the_file(trained, tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        REMITokenizer.load(missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty[/\\]tokenizer\.json"):
        REMITokenizer.load(empty)

    good = tmp_path / "good"
    trained.save(good)

    garbled = tmp_path / "garbled"
    shutil.copytree(good, garbled)
    text = (garbled / "tokenizer.json").read_text()
    (garbled / "tokenizer.json").write_text(text[: len(text) // 2])
    with pytest.raises(TokenizerMismatchError, match=r"garbled[/\\]tokenizer\.json"):
        REMITokenizer.load(garbled)

    broken_model = tmp_path / "broken_model"
    shutil.copytree(good, broken_model)
    data = json.loads((broken_model / "tokenizer.json").read_text())
    data["_model"] = "{not a tokenizer"
    (broken_model / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(TokenizerMismatchError, match="not a loadable MidiTok REMI"):
        REMITokenizer.load(broken_model)

    other_kind = tmp_path / "other_kind"
    miditok.TSD().save(other_kind)
    with pytest.raises(TokenizerMismatchError, match="'TSD' tokenizer, expected 'REMI'"):
        REMITokenizer.load(other_kind)

    contradicting = tmp_path / "contradicting"
    shutil.copytree(good, contradicting)
    meta = json.loads((contradicting / "midilm.json").read_text())
    meta["tokenizer"]["config"]["multitrack"] = True
    (contradicting / "midilm.json").write_text(json.dumps(meta))
    with pytest.raises(TokenizerMismatchError, match=r"contradicts the settings in midilm\.json"):
        REMITokenizer.load(contradicting)

    no_config = tmp_path / "no_config"
    shutil.copytree(good, no_config)
    (no_config / "midilm.json").write_text(json.dumps({"tokenizer": {"kind": "remi"}}))
    with pytest.raises(TokenizerMismatchError, match=r"midilm\.json: the tokenizer entry has no"):
        REMITokenizer.load(no_config)

    old_format = tmp_path / "old_format"
    old_format.mkdir()
    (old_format / "tokenizer.conf").write_text("{}")
    with pytest.raises(TokenizerMismatchError, match=r"tokenizer\.conf: a MidiTok 2\.x"):
        REMITokenizer.load(old_format)

    mmm_meta = tmp_path / "mmm_meta"
    shutil.copytree(good, mmm_meta)
    meta["tokenizer"]["kind"] = "mmm"
    (mmm_meta / "midilm.json").write_text(json.dumps(meta))
    with pytest.raises(TokenizerMismatchError, match=r"midilm\.json: tokenizer kind 'mmm'"):
        REMITokenizer.load(mmm_meta)


# ---------------------------------------------------------------------- grammar


def test_real_pieces_have_no_violations(trained, base, bach_scores):
    for tok in (trained, base):
        grammar = tok.grammar()
        for spec, score in bach_scores:
            assert grammar.check(tok.encode(score)) == [], spec


def test_allowed_contains_every_real_next_id_and_is_never_empty(trained, held_out):
    grammar = trained.grammar()
    eos = trained.eos_id
    for spec, score in held_out:
        state = grammar.start()
        for index, token_id in enumerate([trained.bos_id, *trained.encode(score), eos]):
            mask = state.allowed()
            assert mask.shape == (trained.vocab_size,) and mask.dtype == np.bool_
            assert mask[token_id], (spec, index, trained.id_to_token(token_id))
            assert state.advance(token_id) is None, (spec, index)
        assert state.is_complete()
        assert np.flatnonzero(state.allowed()).tolist() == [trained.pad_id]


def test_allowed_agrees_with_advance(trained, held_out):
    """In states reached by real and by damaged sequences, an id is allowed exactly when
    advancing with it reports no violation."""
    grammar = trained.grammar()
    rng = random.Random(7)
    states = 0
    for _, score in held_out[:8]:
        ids = trained.encode(score)
        for _ in range(8):
            ids[rng.randrange(1, len(ids))] = rng.randrange(trained.vocab_size)
        state = grammar.start()
        for step, token_id in enumerate(ids):
            if step % 11 == 0:
                mask = state.allowed()
                assert mask.any()
                agrees = [(state.copy().advance(c) is None) == mask[c] for c in range(len(mask))]
                assert all(agrees), (step, state.last_type, agrees.index(False))
                states += 1
            state.advance(token_id)
    assert states > 50


def _base_ids(tok, tokens):
    return [tok.token_to_id(t) for t in tokens]


NOTE_60 = ["Pitch_60", "Velocity_95", "Duration_1.0.4"]
NOTE_64 = ["Pitch_64", "Velocity_95", "Duration_1.0.4"]


@pytest.mark.parametrize(
    ("tokens", "kind", "index"),
    [
        # A Position going back in the same bar.
        (["Bar_None", "Position_8", *NOTE_60, "Position_4", *NOTE_64], ViolationKind.TIME, 5),
        # A Position that stays.
        (["Bar_None", "Position_8", *NOTE_60, "Position_8", *NOTE_64], ViolationKind.TIME, 5),
        # Pitch followed by Pitch.
        (["Bar_None", "Position_0", "Pitch_60", *NOTE_64], ViolationKind.TYPE, 3),
        # The same pitch twice at one position (another duration: MidiTok ignores it).
        (
            ["Bar_None", "Position_0", *NOTE_60, "Pitch_60", "Velocity_95", "Duration_0.4.8"],
            ViolationKind.DUPLICATE_NOTE,
            5,
        ),
        # Position before any Bar, and a sequence that does not start with Bar or BOS.
        (["Position_0", *NOTE_60], ViolationKind.TYPE, 0),
        (["BOS_None", "Bar_None", "Position_0", "BOS_None", *NOTE_60], ViolationKind.TYPE, 3),
        (["Bar_None", "Position_0", "Pitch_60", "EOS_None"], ViolationKind.TYPE, 3),
        (["Bar_None", "Position_0", *NOTE_60, "PAD_None"], ViolationKind.TYPE, 5),
        (["Bar_None", "Position_0", *NOTE_60, "EOS_None", "Bar_None"], ViolationKind.TYPE, 6),
    ],
)
def test_broken_sequences_count_under_the_right_kind(trained, tokens, kind, index):
    violations = trained.grammar().check(_base_ids(trained, tokens))
    assert [(v.index, v.kind) for v in violations] == [(index, kind)], violations


def test_well_formed_specials(trained):
    tokens = ["BOS_None", "Bar_None", "Position_0", *NOTE_60, "Bar_None", "EOS_None", "PAD_None"]
    assert trained.grammar().check(_base_ids(trained, tokens)) == []
    assert trained.grammar().check([]) == []


def test_violations_are_counted_per_bpe_id(trained, held_out):
    """A duplicated learned token is flagged at its own index; the sequence recovers."""
    ids = trained.encode(held_out[3][1])
    grammar = trained.grammar()
    j = next(
        i
        for i in range(1, len(ids))
        if trained.expansion(ids[i])[0].startswith("Pitch_")
        and not any(t.startswith(("Position_", "Bar_")) for t in trained.expansion(ids[i]))
    )
    damaged = [*ids[: j + 1], ids[j], *ids[j + 1 :]]
    violations = grammar.check(damaged)
    assert [(v.index, v.kind) for v in violations] == [(j + 1, ViolationKind.DUPLICATE_NOTE)]
    assert violations[0].token == trained.id_to_token(ids[j])


def test_counts_equal_miditok_tse_on_damaged_sequences(base, held_out):
    """MidiTok's own counter (``_tokens_errors``, the paper's TSE) and the grammar agree
    token for token on base sequences damaged by substitutions, deletions, repeats, swaps."""
    miditok_tok = base.miditok
    grammar = base.grammar()
    names = [base.id_to_token(i) for i in range(base.vocab_size)]
    music = [i for i, name in enumerate(names) if name == "Bar_None" or not name.endswith("_None")]
    rng = random.Random(3)
    compared = total = 0
    for _, score in held_out[:20]:
        ids = base.encode(score)
        for _ in range(6):
            damaged = list(ids)
            for _ in range(rng.randint(1, 25)):
                j, k = rng.randrange(1, len(damaged)), rng.randrange(1, len(damaged))
                op = rng.random()
                if op < 0.3:
                    damaged[j] = rng.choice(music)
                elif op < 0.55:
                    del damaged[j]
                elif op < 0.8:
                    damaged.insert(j, damaged[k])
                else:
                    damaged[j], damaged[k] = damaged[k], damaged[j]
            ours = len(grammar.check(damaged))
            theirs = miditok_tok._tokens_errors([base.id_to_token(i) for i in damaged])
            assert ours == theirs
            compared += 1
            total += ours
    assert compared == 120 and total > 500
