"""Converting a MidiTok 2.x ``tokenizer.conf`` (the seed model's tokenizer file).

The fixture in ``tests/fixtures/miditok2/`` was made by MidiTok 2.0.6 itself (see its
README.md): a BPE learned on 20 humanized chorales, and the base tokens and ids MidiTok 2.0.6
gave for four pieces. midilm must give the same, without MidiTok 2 installed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import miditok
import pytest

from midilm.errors import TokenizerMismatchError, UnknownTokenError
from midilm.score import load_midi
from midilm.tokenization import load_tokenizer
from midilm.tokenization.remi import REMIConfig, REMITokenizer

FIXTURE = Path(__file__).parent / "fixtures" / "miditok2"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())
PIECES = sorted(EXPECTED["pieces"])
# bwv26.6 plays a Pitch_36, which none of the 20 training pieces has: no id for it.
COVERED = [stem for stem in PIECES if stem != "bach_bwv26.6"]


@pytest.fixture(scope="module")
def converted() -> REMITokenizer:
    return REMITokenizer.load(FIXTURE)


def piece(stem: str):
    return load_midi(FIXTURE / "pieces" / f"{stem}.mid")


def test_settings_are_the_seeds(converted):
    assert converted.config == REMIConfig(preprocessing="miditok2")
    assert converted.is_trained
    assert converted.vocab_size == EXPECTED["vocab_size"] == 500
    assert converted.base_vocab_size == 162
    assert isinstance(load_tokenizer(FIXTURE), REMITokenizer)  # sniffed from tokenizer.conf


@pytest.mark.parametrize("stem", PIECES)
def test_base_tokens_equal_miditok2(converted, stem):
    """MidiTok 2's rounding of onsets, offsets, velocities and duplicates, reproduced."""
    assert converted.encode_tokens(piece(stem)) == EXPECTED["pieces"][stem]["tokens"]


@pytest.mark.parametrize("stem", COVERED)
def test_ids_equal_miditok2(converted, stem):
    ids = converted.encode(piece(stem))
    assert ids == EXPECTED["pieces"][stem]["ids"]
    assert converted.base_tokens(ids) == EXPECTED["pieces"][stem]["tokens"]
    assert converted.grammar().check(ids) == []


def test_held_out_piece_with_an_unseen_token(converted):
    expected = EXPECTED["pieces"]["bach_bwv26.6"]
    with pytest.raises(UnknownTokenError, match="no id for Pitch_36"):
        converted.encode(piece("bach_bwv26.6"))
    # What MidiTok 2 did instead: it dropped the token without a word.
    lost = list(expected["tokens"])
    lost.remove("Pitch_36")
    assert converted.base_tokens(expected["ids"]) == lost
    with pytest.raises(UnknownTokenError):
        converted.token_to_id("Pitch_36")


def test_miditok3_rounding_differs(converted):
    """Why the converted tokenizer rounds as MidiTok 2 did: MidiTok 3's rules give other
    tokens for the same (humanized) notes."""
    plain = REMITokenizer(converted.config.replace(preprocessing="miditok3"))
    stem = COVERED[0]
    assert plain.encode_tokens(piece(stem)) != EXPECTED["pieces"][stem]["tokens"]


def test_saved_conversion_keeps_ids(converted, tmp_path):
    converted.save(tmp_path)
    reloaded = REMITokenizer.load(tmp_path)
    assert reloaded.config.preprocessing == "miditok2"
    theirs = miditok.REMI(params=tmp_path / "tokenizer.json")
    assert len(theirs) == converted.vocab_size
    for stem in COVERED:
        ids = EXPECTED["pieces"][stem]["ids"]
        assert reloaded.encode(piece(stem)) == ids
        # MidiTok 3 reads the same BPE: the ids decode to the same base tokens.
        seq = miditok.TokSequence(ids=list(ids), are_ids_encoded=True)
        theirs.decode_token_ids(seq)
        assert list(seq.tokens) == EXPECTED["pieces"][stem]["tokens"]


def _conf(tmp_path, **changes) -> Path:
    data = json.loads((FIXTURE / "tokenizer.conf").read_text())
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    folder = tmp_path / "conf"
    folder.mkdir(exist_ok=True)
    (folder / "tokenizer.conf").write_text(json.dumps(data))
    return folder


def test_conf_without_bpe(tmp_path):
    folder = _conf(tmp_path, has_bpe=False, _bpe_model=None, _vocab_base=None)
    tok = REMITokenizer.load(folder)
    assert not tok.is_trained and tok.vocab_size == 162
    assert tok.encode_tokens(piece(COVERED[0])) == EXPECTED["pieces"][COVERED[0]]["tokens"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"tokenization": "TSD"}, "tokenization 'TSD', expected 'REMI'"),
        ({"additional_tokens": {"Chord": True, "Tempo": True}}, "uses Chord, Tempo tokens"),
        ({"config": {}}, "MidiTok 2.1 and later"),
        ({"pitch_range": [21]}, "ValueError"),
        ({"_nb_velocities": 32}, "base vocabulary differs"),
        ({"_bpe_model": None}, "slow method"),
        ({"_bpe_model": "{not json"}, "BPE model does not load"),
        ({"_vocab_base_byte_to_token": {"!": "Nope_1"}}, "names unknown tokens"),
    ],
)
def test_unconvertible_conf_names_the_file(tmp_path, changes, message):
    folder = _conf(tmp_path, **changes)
    with pytest.raises(TokenizerMismatchError, match=r"tokenizer\.conf: .*" + message):
        REMITokenizer.load(folder)


def test_conf_beside_other_kind_in_midilm_json(tmp_path):
    folder = tmp_path / "other"
    folder.mkdir()
    shutil.copy(FIXTURE / "tokenizer.conf", folder)
    (folder / "midilm.json").write_text(json.dumps({"tokenizer": {"kind": "mmm"}}))
    with pytest.raises(TokenizerMismatchError, match=r"midilm\.json: tokenizer kind 'mmm'"):
        REMITokenizer.load(folder)


def test_missing_conf(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"tokenizer\.conf"):
        REMITokenizer.from_miditok2(tmp_path / "tokenizer.conf")
