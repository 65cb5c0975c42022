"""General MIDI names and the instrument parser users type into (CLI, API, web studio)."""

from __future__ import annotations

import re

import pytest

from midilm.score import parse_instrument, program_name
from midilm.score.gm import GM_FAMILIES, GM_PROGRAM_NAMES, INSTRUMENT_ALIASES, family_name


def test_128_unique_snake_case_names_in_gm_order():
    assert len(GM_PROGRAM_NAMES) == 128
    assert len(set(GM_PROGRAM_NAMES)) == 128
    assert all(re.fullmatch(r"[a-z0-9]+(_[a-z0-9]+)*", n) for n in GM_PROGRAM_NAMES)
    assert GM_PROGRAM_NAMES[0] == "acoustic_grand_piano"
    assert GM_PROGRAM_NAMES[33] == "electric_bass_finger"
    assert GM_PROGRAM_NAMES[52] == "choir_aahs"
    assert GM_PROGRAM_NAMES[127] == "gunshot"


def test_sixteen_families_of_eight():
    assert len(GM_FAMILIES) == 16
    assert [family_name(p) for p in (0, 8, 33, 40, 48, 56, 73, 127)] == [
        "piano",
        "chromatic_percussion",
        "bass",
        "strings",
        "ensemble",
        "brass",
        "pipe",
        "sound_effects",
    ]
    assert family_name(5, is_drum=True) == "drums"


def test_program_name_and_drums():
    assert program_name(0) == "acoustic_grand_piano"
    assert program_name(40) == "violin"
    assert program_name(0, is_drum=True) == "drums"
    assert program_name(25, True) == "drums"


@pytest.mark.parametrize("bad", [-1, 128, 1000])
def test_program_out_of_range(bad):
    with pytest.raises(ValueError, match=f"0–127, received {bad}"):
        program_name(bad)
    with pytest.raises(ValueError, match=f"0–127, received {bad}"):
        parse_instrument(bad)


def test_every_gm_name_parses_back_to_its_program():
    for program, name in enumerate(GM_PROGRAM_NAMES):
        assert parse_instrument(name) == (program, False)
        assert parse_instrument(program) == (program, False)
        assert parse_instrument(str(program)) == (program, False)


@pytest.mark.parametrize(
    "text",
    [
        "Electric Bass (finger)",
        "electric-bass-finger",
        "ELECTRIC_BASS_FINGER",
        " electric bass finger ",
    ],
)
def test_names_ignore_case_spaces_and_punctuation(text):
    assert parse_instrument(text) == (33, False)


ALIASES = {
    "piano": 0,
    "bass": 33,
    "strings": 48,
    "guitar": 24,
    "organ": 19,
    "choir": 52,
    "violin": 40,
    "flute": 73,
    "sax": 65,
    "trumpet": 56,
    "synth": 80,
    "lead": 80,
    "pad": 88,
    "brass": 61,
    "Voice": 52,
    "electric piano": 4,
}


@pytest.mark.parametrize(("alias", "program"), ALIASES.items())
def test_common_aliases(alias, program):
    assert parse_instrument(alias) == (program, False)


@pytest.mark.parametrize("drums", ["drums", "Drums", "drum kit", "percussion"])
def test_drums_are_a_flag_not_a_program(drums):
    assert parse_instrument(drums) == (0, True)


def test_every_family_name_is_an_alias():
    for family in GM_FAMILIES:
        program, is_drum = parse_instrument(family)
        assert not is_drum
        # "strings" means a string section (string_ensemble_1), as people use the word
        assert family_name(program) == ("ensemble" if family == "strings" else family)
    assert all(0 <= p <= 127 for p in INSTRUMENT_ALIASES.values())


@pytest.mark.parametrize(
    ("typo", "suggestion"),
    [
        ("vilin", "violin"),
        ("pianno", "piano"),
        ("trumpett", "trumpet"),
        ("acoustic grand pian", "acoustic_grand_piano"),
    ],
)
def test_unknown_name_suggests_close_matches(typo, suggestion):
    with pytest.raises(ValueError, match="unknown instrument") as info:
        parse_instrument(typo)
    assert suggestion in str(info.value)
    assert repr(typo) in str(info.value)


def test_hopeless_name_explains_what_is_accepted():
    with pytest.raises(ValueError, match="program number 0–127 or a name"):
        parse_instrument("xyzzy")


@pytest.mark.parametrize("wrong", [True, 4.0, None, [1]])
def test_wrong_kind_is_a_type_error(wrong):
    with pytest.raises(TypeError):
        parse_instrument(wrong)
