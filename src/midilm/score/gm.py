"""General MIDI instruments: the 128 program names, their 16 families, and the parser that
turns what a user types (``"piano"``, ``"Electric Bass (finger)"``, ``33``, ``"drums"``)
into a ``(program, is_drum)`` pair.

Names are snake_case forms of the GM 1 sound set (``acoustic_grand_piano`` … ``gunshot``);
programs are numbered from 0, as symusic and the MIDI bytes number them (GM documents
number them from 1). Drums are not a program: in MIDI they are channel 10, so a drum track
is ``(0, True)`` here and its name is ``"drums"``.
"""

from __future__ import annotations

import difflib
import operator
import re

__all__ = [
    "DRUMS",
    "GM_FAMILIES",
    "GM_PROGRAM_NAMES",
    "INSTRUMENT_ALIASES",
    "family_name",
    "parse_instrument",
    "program_name",
]

DRUMS = "drums"

GM_PROGRAM_NAMES: tuple[str, ...] = (
    # piano
    "acoustic_grand_piano", "bright_acoustic_piano", "electric_grand_piano", "honky_tonk_piano",
    "electric_piano_1", "electric_piano_2", "harpsichord", "clavinet",
    # chromatic percussion
    "celesta", "glockenspiel", "music_box", "vibraphone",
    "marimba", "xylophone", "tubular_bells", "dulcimer",
    # organ
    "drawbar_organ", "percussive_organ", "rock_organ", "church_organ",
    "reed_organ", "accordion", "harmonica", "tango_accordion",
    # guitar
    "acoustic_guitar_nylon", "acoustic_guitar_steel", "electric_guitar_jazz",
    "electric_guitar_clean", "electric_guitar_muted", "overdriven_guitar",
    "distortion_guitar", "guitar_harmonics",
    # bass
    "acoustic_bass", "electric_bass_finger", "electric_bass_pick", "fretless_bass",
    "slap_bass_1", "slap_bass_2", "synth_bass_1", "synth_bass_2",
    # strings
    "violin", "viola", "cello", "contrabass",
    "tremolo_strings", "pizzicato_strings", "orchestral_harp", "timpani",
    # ensemble
    "string_ensemble_1", "string_ensemble_2", "synth_strings_1", "synth_strings_2",
    "choir_aahs", "voice_oohs", "synth_voice", "orchestra_hit",
    # brass
    "trumpet", "trombone", "tuba", "muted_trumpet",
    "french_horn", "brass_section", "synth_brass_1", "synth_brass_2",
    # reed
    "soprano_sax", "alto_sax", "tenor_sax", "baritone_sax",
    "oboe", "english_horn", "bassoon", "clarinet",
    # pipe
    "piccolo", "flute", "recorder", "pan_flute",
    "blown_bottle", "shakuhachi", "whistle", "ocarina",
    # synth lead
    "lead_1_square", "lead_2_sawtooth", "lead_3_calliope", "lead_4_chiff",
    "lead_5_charang", "lead_6_voice", "lead_7_fifths", "lead_8_bass_and_lead",
    # synth pad
    "pad_1_new_age", "pad_2_warm", "pad_3_polysynth", "pad_4_choir",
    "pad_5_bowed", "pad_6_metallic", "pad_7_halo", "pad_8_sweep",
    # synth effects
    "fx_1_rain", "fx_2_soundtrack", "fx_3_crystal", "fx_4_atmosphere",
    "fx_5_brightness", "fx_6_goblins", "fx_7_echoes", "fx_8_sci_fi",
    # ethnic
    "sitar", "banjo", "shamisen", "koto",
    "kalimba", "bagpipe", "fiddle", "shanai",
    # percussive
    "tinkle_bell", "agogo", "steel_drums", "woodblock",
    "taiko_drum", "melodic_tom", "synth_drum", "reverse_cymbal",
    # sound effects
    "guitar_fret_noise", "breath_noise", "seashore", "bird_tweet",
    "telephone_ring", "helicopter", "applause", "gunshot",
)  # fmt: skip

# Family k holds programs 8k … 8k + 7.
GM_FAMILIES: tuple[str, ...] = (
    "piano", "chromatic_percussion", "organ", "guitar", "bass", "strings", "ensemble",
    "brass", "reed", "pipe", "synth_lead", "synth_pad", "synth_effects", "ethnic",
    "percussive", "sound_effects",
)  # fmt: skip

# What people type for an instrument, beyond the exact GM names. Every family name is here,
# mapped to its most typical program (not always the first of the family).
INSTRUMENT_ALIASES: dict[str, int] = {
    # families
    "piano": 0,
    "chromatic_percussion": 11,
    "organ": 19,
    "guitar": 24,
    "bass": 33,
    "strings": 48,
    "ensemble": 48,
    "brass": 61,
    "reed": 65,
    "pipe": 73,
    "synth_lead": 80,
    "synth_pad": 88,
    "synth_effects": 96,
    "ethnic": 104,
    "percussive": 112,
    "sound_effects": 120,
    # common names
    "grand_piano": 0,
    "keys": 0,
    "keyboard": 0,
    "electric_piano": 4,
    "epiano": 4,
    "rhodes": 4,
    "clav": 7,
    "mallets": 12,
    "bells": 14,
    "vibes": 11,
    "harp": 46,
    "acoustic_guitar": 24,
    "nylon_guitar": 24,
    "steel_guitar": 25,
    "electric_guitar": 27,
    "distorted_guitar": 30,
    "electric_bass": 33,
    "bass_guitar": 33,
    "upright_bass": 32,
    "double_bass": 43,
    "synth_bass": 38,
    "violoncello": 42,
    "string_ensemble": 48,
    "string_section": 48,
    "synth_strings": 50,
    "choir": 52,
    "voice": 52,
    "vocals": 52,
    "vocal": 52,
    "horn": 60,
    "horns": 61,
    "brass_ensemble": 61,
    "synth_brass": 62,
    "sax": 65,
    "saxophone": 65,
    "cor_anglais": 69,
    "synth": 80,
    "lead": 80,
    "pad": 88,
    "fx": 96,
}

_DRUM_ALIASES = frozenset({"drums", "drum", "drum_kit", "drumkit", "kit", "percussion"})

_PROGRAM_BY_NAME: dict[str, int] = {name: i for i, name in enumerate(GM_PROGRAM_NAMES)}


def program_name(program: int, is_drum: bool = False) -> str:
    """The snake_case GM name of a program (``0`` → ``"acoustic_grand_piano"``), or
    ``"drums"`` for a drum track whatever its program."""
    if is_drum:
        return DRUMS
    return GM_PROGRAM_NAMES[_check_program(program)]


def family_name(program: int, is_drum: bool = False) -> str:
    """The GM family of a program (``33`` → ``"bass"``), or ``"drums"``."""
    if is_drum:
        return DRUMS
    return GM_FAMILIES[_check_program(program) // 8]


def parse_instrument(value: int | str) -> tuple[int, bool]:
    """``(program, is_drum)`` for a program number (0–127), a GM name or a common alias.

    Names ignore case, spaces, hyphens, underscores and brackets, so ``"Electric Bass
    (finger)"``, ``"electric-bass-finger"`` and ``"electric_bass_finger"`` all give 33.
    ``"drums"`` (or ``"drum kit"``, ``"percussion"``) gives ``(0, True)``. An unknown name
    raises ``ValueError`` listing the closest known names.
    """
    if not isinstance(value, str):
        return _check_program(value), False
    key = _normalize(value)
    if key.isdigit():
        return _check_program(int(key)), False
    if key in _DRUM_ALIASES:
        return 0, True
    if key in _PROGRAM_BY_NAME:
        return _PROGRAM_BY_NAME[key], False
    if key in INSTRUMENT_ALIASES:
        return INSTRUMENT_ALIASES[key], False
    known = [*GM_PROGRAM_NAMES, *INSTRUMENT_ALIASES, *sorted(_DRUM_ALIASES)]
    close = difflib.get_close_matches(key, known, n=4, cutoff=0.6)
    hint = (
        f"; did you mean {', '.join(close)}?"
        if close
        else ("; use a GM program number 0–127 or a name such as piano, bass, strings, drums")
    )
    raise ValueError(f"unknown instrument {value!r}{hint}")


def _normalize(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.strip().lower()).strip("_")


def _check_program(program: int) -> int:
    try:
        if isinstance(program, bool):
            raise TypeError
        program = operator.index(program)  # int, numpy integers
    except TypeError:
        raise TypeError(
            f"an instrument is a GM program number or a name, received {type(program).__name__}"
        ) from None
    if not 0 <= program <= 127:
        raise ValueError(f"a GM program is 0–127, received {program}")
    return program
