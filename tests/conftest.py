"""Shared fixtures: real music from the music21 corpus, converted once per session.

Scores come from :func:`midilm.score.import_music21`, which caches converted works as MIDI
under ``$MIDILM_CACHE_DIR`` (default ``~/.cache/midilm``); that cache persists between
pytest runs, so a warm run loads each work in about a millisecond. A cold run (CI) parses
with music21 (≈0.1–0.3 s a work) and converts the missing works in parallel worker
processes. Set ``MIDILM_CACHE_DIR`` to keep the test cache somewhere else.

Fixtures (all session-scoped, in a fixed order):

- ``bach_scores``: ``[(spec, ScoreTick)]``, the first 120 works of ``music21:bach`` by spec;
- ``other_meter_scores``: ``[(spec, ScoreTick)]``, 45 pieces that are not in 4/4 or that
  change meter (Bach chorales, essen folk songs, Ryan's Mammoth tunes), chosen by reading
  the time signatures in the corpus files; every one has a valid bar grid
  (:func:`midilm.score.bar_grid` does not raise);
- ``midi_dir``: a folder of 64 ``.mid`` files (those pieces and the first 20 chorales,
  two of which are among them), named after their specs (``bach_bwv11.6.mid``,
  ``essenFolksong_han1_74.mid``).
"""

from __future__ import annotations

import contextlib
import os
import re
import zipfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
from symusic.core import ScoreTick

from midilm.errors import InvalidMidiError, UnsupportedScoreError
from midilm.score import bar_grid, import_music21, music21_specs, save_midi
from midilm.score.music21_import import MUSIC21_PREFIX

BACH_COUNT = 120
_COLD_PARALLEL_MIN = 8  # convert in worker processes when at least this many are missing

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
    """Convert the works missing from the cache in parallel, then load them all in order."""
    from midilm.score.music21_import import _cache_file, _works

    missing = [s for s in specs if not _cache_file(_works(s)[0]).is_file()]
    workers = min(os.cpu_count() or 1, 8)
    if len(missing) >= _COLD_PARALLEL_MIN and workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            list(pool.map(_convert_only, missing, chunksize=4))
    return [(spec, import_music21(spec)) for spec in specs]


def _convert_only(spec: str) -> None:
    """Fill the cache. A failure is raised again, readably, when the parent loads the spec
    (InvalidMidiError does not pickle across processes)."""
    with contextlib.suppress(InvalidMidiError):
        import_music21(spec)


@pytest.fixture(scope="session")
def bach_scores() -> list[tuple[str, ScoreTick]]:
    """The first 120 works of ``music21:bach`` (sorted by spec) as ``(spec, score)``."""
    return _load_all(music21_specs("music21:bach")[:BACH_COUNT])


@pytest.fixture(scope="session")
def other_meter_scores() -> list[tuple[str, ScoreTick]]:
    """45 real pieces not in 4/4 or changing meter, as ``(spec, score)``."""
    pieces = []
    for spec, score in _load_all(_other_meter_specs()):
        meters = {(ts.numerator, ts.denominator) for ts in score.time_signatures}
        assert meters and meters != {(4, 4)}, f"{spec} converted to {meters}"
        try:
            bar_grid(score)
        except UnsupportedScoreError:
            continue  # a meter change inside a bar (an incomplete bar before it)
        pieces.append((spec, score))
    assert len(pieces) >= 40, len(pieces)
    return pieces


@pytest.fixture(scope="session")
def midi_dir(
    tmp_path_factory: pytest.TempPathFactory,
    other_meter_scores: list[tuple[str, ScoreTick]],
    bach_scores: list[tuple[str, ScoreTick]],
) -> Path:
    """A folder of 64 real ``.mid`` files: the other-meter pieces and 20 chorales."""
    folder = tmp_path_factory.mktemp("midi")
    for spec, score in dict([*other_meter_scores, *bach_scores[:20]]).items():
        stem = re.sub(r"[^A-Za-z0-9.]+", "_", spec[len(MUSIC21_PREFIX) :])
        save_midi(score, folder / f"{stem}.mid")
    return folder
