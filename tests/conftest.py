"""Shared fixtures: real music from the music21 corpus, converted once per session.

Scores come from :func:`midilm.score.import_music21`, which caches converted works as MIDI
under ``$MIDILM_CACHE_DIR`` (default ``~/.cache/midilm``); that cache persists between
pytest runs, so a warm run loads each work in about a millisecond. A cold run (CI) parses
with music21 (≈0.1–0.3 s a work) and converts the missing works in parallel worker
processes. Set ``MIDILM_CACHE_DIR`` to keep the test cache somewhere else.

Fixtures (all session-scoped, in a fixed order):

- ``bach_scores``: ``[(spec, ScoreTick)]``, the first 120 works of ``music21:bach`` by spec;
- ``other_meter_scores``: ``[(spec, ScoreTick)]``, at least 40 pieces (50 today: 25 Bach
  chorales, 16 essen folk songs, 9 Ryan's Mammoth tunes) that are not in 4/4 or that
  change meter, chosen by reading
  the time signatures in the corpus files; every one has a valid bar grid
  (:func:`midilm.score.bar_grid` does not raise);
- ``midi_dir``: a folder of at least 60 ``.mid`` files (69 today: those pieces and the
  first 20 chorales, one copy of each), named after their specs (``bach_bwv11.6.mid``,
  ``essenFolksong_han1_74.mid``).
"""

from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path

import pytest
from symusic.core import ScoreTick

from midilm.errors import UnsupportedScoreError
from midilm.score import bar_grid, import_music21, music21_specs, save_midi
from midilm.score.music21_import import MUSIC21_PREFIX, cache_music21

BACH_COUNT = 120

_ABC_TUNE = re.compile(r"(?m)^(?=X:)")
_ABC_METER = re.compile(r"(?m)(?:^M:|\[M:)\s*([^\]\r\n]*)")
_XML_METER = re.compile(rb"<beats>(\d+)</beats>\s*<beat-type>(\d+)</beat-type>")


def _corpus_root() -> Path:
    from music21 import common

    return Path(common.getCorpusFilePath())


def _abc_meters(rel_file: str) -> list[tuple[int | None, list[str]]]:
    """(X number or None for a one-tune file, the M: fields) of each tune in an abc file."""
    text = (_corpus_root() / rel_file).read_text("latin-1")
    tunes = [t for t in _ABC_TUNE.split(text) if t.startswith("X:")]
    out = []
    for tune in tunes:
        number = int(re.match(r"X:\s*(\d+)", tune).group(1))
        meters = [m.strip().replace(" ", "") for m in _ABC_METER.findall(tune)]
        out.append((number if len(tunes) > 1 else None, meters))
    return out


def _mxl_meters(path: Path) -> set[tuple[int, int]]:
    with zipfile.ZipFile(path) as archive:
        name = next(
            n
            for n in archive.namelist()
            if not n.startswith("META") and n.endswith((".xml", ".musicxml"))
        )
        xml = archive.read(name)
    return {(int(a), int(b)) for a, b in _XML_METER.findall(xml)}


def _other_meter_specs() -> list[str]:
    """Specs of pieces not in 4/4 or with a meter change, read from the source files."""
    specs: list[str] = []
    # Bach chorales: every one that changes meter, then the first others not in 4/4.
    changing, odd = [], []
    for spec in music21_specs("music21:bach"):
        path = _corpus_root() / f"{spec[len(MUSIC21_PREFIX) :]}.mxl"
        if not path.is_file():
            continue
        meters = _mxl_meters(path)
        if len(meters) > 1:
            changing.append(spec)
        elif meters and meters != {(4, 4)}:
            odd.append(spec)
    specs += changing + odd[:20]
    # Essen folk songs (one opus file): by meter, the first few tunes of each.
    wanted = {"3/4": 8, "6/8": 1, "3/8": 6, "5/8": 1}
    for number, meters in _abc_meters("essenFolksong/han1.abc"):
        if len(meters) == 1 and wanted.get(meters[0], 0) > 0:
            wanted[meters[0]] -= 1
            specs.append(f"music21:essenFolksong/han1#{number}")
    # Ryan's Mammoth (one tune a file): the tune that changes meter, jigs and slip jigs.
    wanted = {"6/8": 4, "9/8": 3, "12/8": 1}
    for spec in music21_specs("music21:ryansMammoth"):
        ((_, meters),) = _abc_meters(f"{spec[len(MUSIC21_PREFIX) :]}.abc")
        if len(set(meters)) > 1:
            specs.append(spec)
        elif len(meters) == 1 and wanted.get(meters[0], 0) > 0:
            wanted[meters[0]] -= 1
            specs.append(spec)
    return specs


def _load_all(specs: list[str]) -> list[tuple[str, ScoreTick]]:
    """Convert the works missing from the cache in parallel, then load them all in order
    (a work that fails raises its InvalidMidiError here)."""
    cache_music21(specs, workers=min(os.cpu_count() or 1, 8))
    return [(spec, import_music21(spec)) for spec in specs]


@pytest.fixture(scope="session")
def bach_scores() -> list[tuple[str, ScoreTick]]:
    """The first 120 works of ``music21:bach`` (sorted by spec) as ``(spec, score)``."""
    return _load_all(music21_specs("music21:bach")[:BACH_COUNT])


@pytest.fixture(scope="session")
def other_meter_scores() -> list[tuple[str, ScoreTick]]:
    """Real pieces not in 4/4 or changing meter, as ``(spec, score)`` (at least 40)."""
    pieces = []
    for spec, score in _load_all(_other_meter_specs()):
        meters = {(ts.numerator, ts.denominator) for ts in score.time_signatures}
        assert meters and meters != {(4, 4)}, f"{spec} converted to {meters}"
        try:
            bar_grid(score)
        except UnsupportedScoreError:
            continue  # a bar whose length no meter spells
        pieces.append((spec, score))
    assert len(pieces) >= 40, len(pieces)
    return pieces


@pytest.fixture(scope="session")
def midi_dir(
    tmp_path_factory: pytest.TempPathFactory,
    other_meter_scores: list[tuple[str, ScoreTick]],
    bach_scores: list[tuple[str, ScoreTick]],
) -> Path:
    """A folder of real ``.mid`` files (at least 60): the other-meter pieces and 20 chorales."""
    folder = tmp_path_factory.mktemp("midi")
    for spec, score in dict([*other_meter_scores, *bach_scores[:20]]).items():
        stem = re.sub(r"[^A-Za-z0-9.]+", "_", spec[len(MUSIC21_PREFIX) :])
        save_midi(score, folder / f"{stem}.mid")
    return folder
