"""Import scores through music21: the works of its bundled corpus (``music21:bach/bwv66.6``)
and local MusicXML / kern / abc files.

The conversion is music21's own MIDI writer (``music21ObjectToMidiFile``) read back by
symusic, then tidied so that the result is a score midilm can use directly:

- one track per part, named after the part; tracks without notes are dropped;
- a General MIDI program per part: the part's instrument ``midiProgram`` when music21 knows
  one, else a guess from the part or instrument name (voices → Choir Aahs, violin → 40, …).
  A generic sound on a part whose own name is more precise ("Violin 1", "Violoncello")
  yields to the name: the piano (program 0) that notation programs give a part by default
  (haydn/opus74no1/movement1 has it on all four string parts) and music21's family
  classes such as ``StringInstrument`` (haydn/opus1no1 asks for "String Ensemble 1");
- grace notes are dropped: they take no time in the score, and music21 writes them as
  zero-length MIDI notes whose note-off precedes their note-on, which left the note-on
  open and paired every later note of that pitch with the wrong note-off (bars-long notes
  in the string quartets);
- a pickup (anacrusis) is shifted right so that downbeats fall on the bar grid that starts
  at tick 0 (:func:`midilm.score.meter.bar_grid`); the opening tempo, meter and key stay
  at tick 0;
- repeated tempo, meter and key events (music21 writes one per part and per expanded
  repeat) are merged into one.

music21 expands repeats when it writes MIDI, so a piece with repeat signs is longer than
its printed bar count; a piece whose repeat signs music21 cannot play out (badly formed,
as in bach/bwv277.krn) is written once through, as printed.

music21 parsing is slow (≈0.1 s a chorale), so converted corpus works are cached as MIDI
under ``$MIDILM_CACHE_DIR/music21/<music21 version>-r<CONVERSION_REVISION>/`` (default
``~/.cache/midilm``); a cache hit is a plain MIDI load.

Corpus specs: ``music21:<path>`` names a work (a path inside the corpus without its
extension, as ``music21.corpus.parse`` takes it) or a collection (a folder such as
``music21:bach``). An abc file holding many tunes (``essenFolksong``) is an opus; its
tunes are named by their ``X:`` number: ``music21:essenFolksong/han1#3``.

music21 is imported inside the functions, so that ``import midilm.score`` stays fast.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import symusic
from symusic.core import ScoreTick

from midilm.errors import InvalidMidiError
from midilm.io_utils import atomic_write_bytes

__all__ = [
    "CONVERSION_REVISION",
    "MUSIC21_PREFIX",
    "MUSIC21_SUFFIXES",
    "cache_dir",
    "cache_music21",
    "import_music21",
    "iter_music21",
    "music21_specs",
    "parse_score_file",
    "stream_to_score",
]

MUSIC21_PREFIX = "music21:"
# File kinds music21 reads that midilm accepts, most preferred first: when the corpus holds
# one work in two encodings (bach/bwv277.mxl and bach/bwv277.krn) the spec without an
# extension names the first.
MUSIC21_SUFFIXES = (".mxl", ".musicxml", ".xml", ".krn", ".abc")

# Bump when the conversion changes what it writes, so that no cache serves old results.
CONVERSION_REVISION = 3

_X_FIELD = re.compile(rb"^X:\s*(\d+)", re.MULTILINE)

# Program guesses by part or instrument name, checked in order (the first match wins), so
# "contrabass" is tested before the voice "bass" and "violoncello" before "violin".
_PROGRAM_BY_NAME: tuple[tuple[tuple[str, ...], int], ...] = (
    (("contrabass", "double bass", "contrebasse", "kontrabass"), 43),
    (("violoncello", "cello"), 42),
    (("viola",), 41),
    (("violin", "violino"), 40),
    (("piano", "pianoforte", "klavier"), 0),
    (("harpsichord", "cembalo"), 6),
    (("organ", "orgel"), 19),
    (("flute", "flauto", "flöte"), 73),
    (("oboe",), 68),
    (("clarinet",), 71),
    (("bassoon", "fagott"), 70),
    (("horn", "corno"), 60),
    (("trumpet", "tromba"), 56),
    (("trombone",), 57),
    (("guitar", "lute"), 24),
    (("timpani", "pauken"), 47),
    (("sax",), 65),
    (
        (
            "soprano",
            "alto",
            "tenor",
            "bass",
            "voice",
            "choir",
            "chorus",
            "canto",
            "cantus",
            "quinto",
            "quintus",
            "sextus",
            "discantus",
            "vox",
        ),
        52,
    ),
)


def cache_dir() -> Path:
    """The midilm cache folder: ``$MIDILM_CACHE_DIR``, else ``~/.cache/midilm``."""
    env = os.environ.get("MIDILM_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "midilm"


# --------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class _Work:
    spec: str  # "music21:bach/bwv66.6" or "music21:essenFolksong/han1#3"
    path: Path  # the corpus file
    number: int | None  # the abc X: number of one tune of an opus
    cache_key: str  # "bach/bwv66.6" or "essenFolksong/han1#3"


def _corpus_root() -> Path:
    from music21 import common

    return Path(common.getCorpusFilePath())


def _split_spec(spec: str) -> tuple[str, int | None]:
    if not isinstance(spec, str) or not spec.startswith(MUSIC21_PREFIX):
        raise InvalidMidiError(
            str(spec),
            "unsupported",
            f"expected a spec such as 'music21:bach/bwv66.6', received {spec!r}",
        )
    rel = spec[len(MUSIC21_PREFIX) :].strip().strip("/")
    number: int | None = None
    if "#" in rel:
        rel, _, tail = rel.partition("#")
        if not tail.isdigit():
            raise InvalidMidiError(
                spec,
                "unsupported",
                f"the tune number after '#' must be a number, received {tail!r}",
            )
        number = int(tail)
    if not rel or ".." in Path(rel).parts or Path(rel).is_absolute():
        raise InvalidMidiError(
            spec, "unsupported", f"{spec!r} does not name a path inside the music21 corpus"
        )
    return rel, number


def _resolve_file(root: Path, rel: str) -> Path | None:
    for suffix in MUSIC21_SUFFIXES:
        candidate = root / f"{rel}{suffix}"
        if candidate.is_file():
            return candidate
    candidate = root / rel
    if candidate.is_file() and candidate.suffix.lower() in MUSIC21_SUFFIXES:
        return candidate
    return None


def _abc_tune_numbers(path: Path) -> list[int]:
    """The ``X:`` numbers of the tunes in an abc file, in file order (read, not parsed)."""
    return [int(m) for m in _X_FIELD.findall(path.read_bytes())]


def _works_in_file(path: Path, rel: str) -> list[_Work]:
    if path.suffix.lower() == ".abc":
        numbers = _abc_tune_numbers(path)
        if len(numbers) > 1:
            return [_Work(f"{MUSIC21_PREFIX}{rel}#{n}", path, n, f"{rel}#{n}") for n in numbers]
    return [_Work(f"{MUSIC21_PREFIX}{rel}", path, None, rel)]


def _works(spec: str) -> list[_Work]:
    """The works a spec names: one work, the tunes of an opus file, or a whole folder."""
    rel, number = _split_spec(spec)
    root = _corpus_root()
    path = _resolve_file(root, rel)
    if path is not None:
        if number is not None:
            numbers = _abc_tune_numbers(path) if path.suffix.lower() == ".abc" else []
            if number not in numbers:
                raise InvalidMidiError(spec, "missing", f"{path.name} has no tune number {number}")
            return [_Work(f"{MUSIC21_PREFIX}{rel}#{number}", path, number, f"{rel}#{number}")]
        return _works_in_file(path, rel)
    folder = root / rel
    if number is None and folder.is_dir():
        works: list[_Work] = []
        seen: set[str] = set()
        files = sorted(
            (p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in MUSIC21_SUFFIXES),
            key=lambda p: (MUSIC21_SUFFIXES.index(p.suffix.lower()), p.as_posix()),
        )
        for file in files:  # preferred encodings first, so duplicates keep that one
            work_rel = file.relative_to(root).with_suffix("").as_posix()
            if work_rel in seen:
                continue
            seen.add(work_rel)
            works.extend(_works_in_file(file, work_rel))
        return sorted(works, key=lambda w: (w.cache_key.partition("#")[0], w.number or 0))
    raise InvalidMidiError(spec, "missing", f"the music21 corpus has no work or folder {rel!r}")


def music21_specs(spec: str) -> list[str]:
    """The work specs a collection holds, without parsing any of them: sorted by path,
    the tunes of an opus by their number.

    ``music21_specs("music21:bach")`` lists each chorale once (a work stored in two
    encodings is listed once); ``music21_specs("music21:essenFolksong/han1")`` lists the
    tunes of that opus as ``music21:essenFolksong/han1#<X number>``. A single work lists
    itself.
    """
    return [work.spec for work in _works(spec)]


# --------------------------------------------------------------------------- import


def import_music21(spec: str) -> ScoreTick:
    """One work of the music21 corpus as a score (see the module doc for the conversion).

    Raises :class:`InvalidMidiError` with reason ``"missing"`` for a spec naming no work,
    ``"unsupported"`` for an opus file named without its tune number, ``"unreadable"``
    when music21 cannot parse the work and ``"no_notes"`` when it holds no notes.
    """
    works = _works(spec)
    if len(works) != 1 or works[0].spec != _canonical(spec):
        rel, _ = _split_spec(spec)
        if (_corpus_root() / rel).is_dir():
            raise InvalidMidiError(
                spec,
                "unsupported",
                f"a collection of {len(works)} works; use iter_music21",
            )
        raise InvalidMidiError(
            spec,
            "unsupported",
            f"this file holds {len(works)} tunes; name one, e.g. {works[0].spec}, "
            "or use iter_music21",
        )
    return _load_work(works[0])


def iter_music21(spec: str) -> Iterator[tuple[str, ScoreTick]]:
    """Yield ``(work spec, score)`` for every work of a collection (or the one work named),
    in the order of :func:`music21_specs`. A work that cannot be converted raises, as in
    :func:`import_music21`; callers that prefer to skip it catch ``InvalidMidiError``."""
    for work in _works(spec):
        yield work.spec, _load_work(work)


def cache_music21(specs: Iterable[str], *, workers: int | None = None) -> dict[str, str]:
    """Convert the works of ``specs`` that are not cached yet, in ``workers`` processes
    (default: one per CPU), so that later imports are plain MIDI loads.

    Returns ``{spec: error message}`` for the works that could not be converted; the
    others are in the cache. Each spec names one work (see :func:`music21_specs`).
    """
    missing = [spec for spec in specs if not _cache_file(_works(spec)[0]).is_file()]
    workers = workers or os.cpu_count() or 1
    if workers <= 1 or len(missing) < 2:
        results = [_convert_to_cache(spec) for spec in missing]
    else:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=min(workers, len(missing))) as pool:
            results = list(pool.map(_convert_to_cache, missing, chunksize=4))
    return {spec: error for spec, error in zip(missing, results, strict=True) if error}


def _convert_to_cache(spec: str) -> str | None:
    # Errors travel back as text: exceptions with required arguments do not unpickle.
    try:
        import_music21(spec)
    except InvalidMidiError as err:
        return str(err)
    return None


def _canonical(spec: str) -> str:
    rel, number = _split_spec(spec)
    return f"{MUSIC21_PREFIX}{rel}" + (f"#{number}" if number is not None else "")


def _cache_file(work: _Work) -> Path:
    import music21

    version = f"{music21.__version__}-r{CONVERSION_REVISION}"
    return cache_dir() / "music21" / version / f"{work.cache_key}.mid"


def _load_work(work: _Work) -> ScoreTick:
    from midilm.score.midi_io import load_midi

    cached = _cache_file(work)
    if cached.is_file():
        try:
            return load_midi(cached, name=work.spec)
        except InvalidMidiError:
            pass  # a damaged cache entry (written by other means): convert again
    stream = _parse_work(work)
    score = stream_to_score(stream, work.spec)
    with contextlib.suppress(OSError):  # a read-only cache only costs time
        atomic_write_bytes(cached, bytes(score.dumps_midi()))
    return score


def _parse_work(work: _Work) -> Any:
    from music21 import converter, stream

    try:
        if work.number is not None:
            parsed = converter.parse(work.path, number=work.number)
        else:
            parsed = converter.parse(work.path)
    except Exception as err:
        raise InvalidMidiError(work.spec, "unreadable", f"music21 cannot read it: {err}") from err
    if isinstance(parsed, stream.Opus):
        scores = list(parsed.scores)
        if len(scores) != 1:
            raise InvalidMidiError(
                work.spec, "unsupported", f"this file holds {len(scores)} tunes; name one"
            )
        parsed = scores[0]
    return parsed


def parse_score_file(path: str | Path, *, name: str | None = None) -> ScoreTick:
    """A MusicXML, kern or abc file read by music21 and converted as the corpus works are.

    An abc file holding several tunes raises ``InvalidMidiError`` (reason
    ``"unsupported"``): midilm does not silently pick one.
    """
    from music21 import converter, stream

    path = Path(path)
    source = name or str(path)
    if not path.is_file():
        raise InvalidMidiError(source, "missing", f"no such file: {path}")
    try:
        parsed = converter.parse(path)
    except Exception as err:
        raise InvalidMidiError(
            source, "unreadable", f"music21 cannot read {path.name}: {err}"
        ) from err
    if isinstance(parsed, stream.Opus):
        scores = list(parsed.scores)
        if len(scores) != 1:
            raise InvalidMidiError(
                source, "unsupported", f"{path.name} holds {len(scores)} tunes; save one per file"
            )
        parsed = scores[0]
    return stream_to_score(parsed, source)


# --------------------------------------------------------------------------- conversion


def stream_to_score(m21_stream: Any, source: str) -> ScoreTick:
    """Convert a parsed music21 stream (a Score, a Part, …) to a symusic score.

    The stream is changed in place (grace notes removed, shared meter / key / tempo objects
    copied, unplayable repeat marks removed): pass a copy to keep the original."""
    from music21 import midi as m21midi
    from music21 import repeat
    from music21.midi.translate import music21ObjectToMidiFile

    parts = _parts_of(m21_stream)
    try:
        _drop_grace_notes(m21_stream)
        _unshare_conductor_objects(m21_stream)
        try:
            midi_file = music21ObjectToMidiFile(m21_stream)
        except repeat.ExpanderException:  # repeat signs music21 cannot play out
            _remove_repeat_marks(m21_stream)
            midi_file = music21ObjectToMidiFile(m21_stream)
        tags = _tag_tracks(midi_file, m21midi)
        data = midi_file.writestr()
        score = symusic.Score.from_midi(bytes(data))
    except Exception as err:
        raise InvalidMidiError(
            source, "unreadable", f"music21 cannot convert it to MIDI: {err}"
        ) from err
    # Track 0 is music21's conductor track; the part tracks follow in part order.
    part_by_tag = (
        {tags[k]: parts[k - 1] for k in range(1, len(tags))} if len(tags) == len(parts) + 1 else {}
    )

    kept = []
    for track in score.tracks:
        if not len(track.notes):
            continue
        part = part_by_tag.get(track.name)
        index = parts.index(part) if part is not None else len(kept)
        name, program, is_drum = _part_identity(part, index, fallback_name="")
        track.name = name
        track.program = program
        track.is_drum = is_drum
        kept.append(track)
    if not kept:
        raise InvalidMidiError(source, "no_notes", "no notes")
    score.tracks = kept

    tpq = int(score.ticks_per_quarter)
    layout = _measure_layout(m21_stream)
    if layout is not None:
        shift_quarters, meters = layout
        shift_ticks = shift_quarters * tpq
        if shift_ticks.denominator != 1:
            raise InvalidMidiError(
                source, "unsupported", "the pickup is not a whole number of ticks"
            )
        if shift_ticks:
            _shift_keeping_opening(score, int(shift_ticks))
        _set_meters(score, meters, tpq)
    _merge_repeated_conductor_events(score)
    return score


def _remove_repeat_marks(m21_stream: Any) -> None:
    """Turn repeat barlines, endings and D.C./segno marks into plain notation, so that the
    piece is written once through, as printed."""
    from music21 import bar, repeat, spanner, stream

    for measure in m21_stream.recurse().getElementsByClass(stream.Measure):
        if isinstance(measure.leftBarline, bar.Repeat):
            measure.leftBarline = None
        if isinstance(measure.rightBarline, bar.Repeat):
            measure.rightBarline = bar.Barline("regular")
    for mark in list(m21_stream.recurse().getElementsByClass(repeat.RepeatExpression)):
        mark.activeSite.remove(mark)
    for bracket in list(m21_stream.recurse().getElementsByClass(spanner.RepeatBracket)):
        bracket.activeSite.remove(bracket)


def _drop_grace_notes(m21_stream: Any) -> None:
    """Remove grace notes (and grace chords) from the stream.

    They have no duration, so music21's MIDI writer puts their note-on and note-off at the
    same tick and sorts the note-off first; a MIDI reader then pairs the dangling note-on
    with the next note-off of that pitch, and every later note of that pitch with the
    wrong note-off. Their time would have to be taken from a neighbour, which the score
    does not say how, so midilm leaves them out.
    """
    from music21 import note

    graces = [
        (container, element)
        for container in m21_stream.recurse(streamsOnly=True, includeSelf=True)
        for element in container.getElementsByClass(note.GeneralNote)
        if element.duration.isGrace
    ]
    for container, element in graces:
        container.remove(element)


def _unshare_conductor_objects(m21_stream: Any) -> None:
    """Give every measure its own time-signature / key / tempo object.

    music21's abc reader reuses one ``TimeSignature`` object when a tune returns to an
    earlier meter (essenFolksong/han1#48: 3/4 → 6/4 → 3/4), and its MIDI writer then fails
    ("the object … is already found in this Stream"). A copy per measure avoids that.
    """
    import copy

    from music21 import key, meter, tempo

    seen: set[int] = set()
    shared = []
    for element in m21_stream.recurse().getElementsByClass(
        (meter.TimeSignature, key.KeySignature, tempo.MetronomeMark)
    ):
        if id(element) in seen:
            shared.append((element.activeSite, element))
        seen.add(id(element))
    for container, element in shared:
        container.replace(element, copy.deepcopy(element))


def _parts_of(m21_stream: Any) -> list[Any]:
    """The streams music21 writes as MIDI tracks, in the order it writes them."""
    from music21 import stream

    if m21_stream.hasPartLikeStreams():
        return list(m21_stream.getElementsByClass(stream.Stream))
    return [m21_stream]


def _tag_tracks(midi_file: Any, m21midi: Any) -> list[str]:
    """Give each MIDI track a unique name (``midilm-track-<k>``) so that its symusic track
    can be matched with its part afterwards, even when symusic splits a track by channel."""
    tags = []
    for k, track in enumerate(midi_file.tracks):
        tag = f"midilm-track-{k}"
        tags.append(tag)
        for event in track.events:
            if event.type == m21midi.MetaEvents.SEQUENCE_TRACK_NAME:
                event.data = tag.encode()
                break
        else:
            event = m21midi.MidiEvent(track, type=m21midi.MetaEvents.SEQUENCE_TRACK_NAME)
            event.data = tag.encode()
            track.events[0:0] = [m21midi.DeltaTime(track, time=0), event]
    return tags


def _part_identity(part: Any, index: int, fallback_name: str) -> tuple[str, int, bool]:
    """(track name, GM program, is_drum) of a music21 part."""
    from music21 import instrument as m21instrument

    names: list[str] = []
    inst = None
    if part is not None:
        names.append(part.partName or "")
        inst = part.getInstrument(returnDefault=False)
        if inst is not None:
            names += [inst.partName or "", inst.instrumentName or ""]
    names = [" ".join(n.split()) for n in names]  # MusicXML names may hold line breaks
    name = next((n for n in names if n and not re.fullmatch(r"Instrument \d+", n)), "")
    name = name or fallback_name or f"Part {index + 1}"
    is_drum = isinstance(inst, m21instrument.UnpitchedPercussion)
    program = inst.midiProgram if inst is not None else None
    if program is None or not 0 <= int(program) <= 127:
        program = _program_for_names(names) or 0
    elif int(program) == 0 or type(inst) in _generic_instruments():
        # A part named "Violin 1" that sounds as a piano (the default of notation programs)
        # or as a "String Ensemble" was most likely never given a sound of its own: the
        # part's names (not the instrument's, "Acoustic Grand Piano") are the better guide.
        program = _program_for_names(names[:2]) or program
    return name, int(program), is_drum


def _generic_instruments() -> tuple[type, ...]:
    from music21 import instrument

    return (
        instrument.Instrument,
        instrument.StringInstrument,
        instrument.WoodwindInstrument,
        instrument.BrassInstrument,
        instrument.KeyboardInstrument,
    )


def _program_for_names(names: list[str]) -> int | None:
    """The GM program the first matching name key gives, or None when no key matches."""
    text = " ".join(names).lower()
    for keys, program in _PROGRAM_BY_NAME:
        if any(key in text for key in keys):
            return program
    return None


def _measure_layout(
    m21_stream: Any,
) -> tuple[Fraction, list[tuple[Fraction, int, int]]] | None:
    """Where the bars of the MIDI music21 writes start, and their meters.

    Returns the pickup shift (the missing part of a short first bar, in quarters) and one
    ``(start in quarters after the shift, numerator, denominator)`` per measure of the first
    part that has measures, read after expanding repeats as music21's MIDI writer does.
    Two short measures that make one bar (a repeat's first ending and the pickup after
    it) are one bar. Any other measure shorter (or longer) than its time signature, such
    as the pickup into a new section, gets a meter of its own length (a 1-quarter bar is
    1/4), so that every later bar line stays on the bar grid. None for a stream without
    measures.
    """
    from music21 import meter, repeat, stream

    part = next((p for p in _parts_of(m21_stream) if p.getElementsByClass(stream.Measure)), None)
    if part is None:
        return None
    if part.recurse().getElementsByClass(repeat.RepeatMark):
        part = part.expandRepeats()
    measures = list(part.getElementsByClass(stream.Measure))
    offsets = [Fraction(part.elementOffset(m)) for m in measures]
    first_length = Fraction(measures[0].duration.quarterLength)
    first_bar = Fraction(measures[0].barDuration.quarterLength)
    shift = first_bar - first_length if 0 < first_length < first_bar else Fraction(0)

    meters: list[tuple[Fraction, int, int]] = []
    ts = measures[0].getContextByClass(meter.TimeSignature)
    i = 0
    while i < len(measures):
        ts = measures[i].timeSignature or ts
        nominal = (int(ts.numerator), int(ts.denominator)) if ts is not None else (4, 4)
        bar = Fraction(4 * nominal[0], nominal[1])
        start = offsets[i] + shift if i else Fraction(0)
        if i == 0 or i == len(measures) - 1:
            meters.append((start, *nominal))  # the pickup is filled; the last bar may be short
            i += 1
            continue
        span = offsets[i + 1] - offsets[i]
        if span < bar and _split_bar_end(measures, offsets, i + 1) == offsets[i] + bar:
            # one bar written as two measures: a repeat's ending and the pickup after it
            ts = measures[i + 1].timeSignature or ts
            meters.append((start, *nominal))
            i += 2
            continue
        if span != bar:
            own = _meter_of_length(span)
            if own is None:  # a tuplet-length bar: no meter expresses it
                i += 1
                continue
            nominal = own
        meters.append((start, *nominal))
        i += 1
    return shift, meters


def _split_bar_end(measures: list[Any], offsets: list[Fraction], j: int) -> Fraction:
    """Where measure ``j`` ends."""
    if j + 1 < len(offsets):
        return offsets[j + 1]
    return offsets[j] + Fraction(measures[j].duration.quarterLength)


def _meter_of_length(quarters: Fraction) -> tuple[int, int] | None:
    """The meter of a bar ``quarters`` long with the smallest denominator ≥ 4 (1 → 1/4,
    1.5 → 3/8), or None when no power-of-two denominator up to 64 expresses it."""
    for denominator in (4, 8, 16, 32, 64):
        numerator = quarters * denominator / 4
        if numerator.denominator == 1 and numerator > 0:
            return int(numerator), denominator
    return None


def _set_meters(score: ScoreTick, meters: list[tuple[Fraction, int, int]], tpq: int) -> None:
    events = []
    for start, numerator, denominator in meters:
        tick = start * tpq
        if tick.denominator == 1:
            events.append(symusic.TimeSignature(int(tick), numerator, denominator))
    score.time_signatures.clear()
    score.time_signatures.extend(events)


def _shift_keeping_opening(score: ScoreTick, ticks: int) -> None:
    """Shift every event right by ``ticks``; the tempo, meter and key at tick 0 stay there."""
    conductor = [
        [e.copy() for e in events]
        for events in (score.tempos, score.time_signatures, score.key_signatures)
    ]
    score.shift_time(ticks, inplace=True)
    for events, originals in zip(
        (score.tempos, score.time_signatures, score.key_signatures), conductor, strict=True
    ):
        for event in originals:
            if event.time:
                event.time += ticks
        events.clear()
        events.extend(originals)


def _same(a: Any, b: Any) -> bool:
    return _conductor_value(a) == _conductor_value(b)


def _conductor_value(event: Any) -> tuple[int, ...]:
    if isinstance(event, symusic.core.TempoTick):
        return (int(event.mspq),)
    if isinstance(event, symusic.core.TimeSignatureTick):
        return (int(event.numerator), int(event.denominator))
    return (int(event.key), int(event.tonality))


def _merge_repeated_conductor_events(score: ScoreTick) -> None:
    """Keep one tempo / meter / key event per change: at a tick the last one wins, and an
    event equal to the one already in force is dropped."""
    for events in (score.tempos, score.time_signatures, score.key_signatures):
        by_tick: dict[int, Any] = {}
        for event in sorted(events, key=lambda e: e.time):
            by_tick[int(event.time)] = event.copy()
        kept: list[Any] = []
        for event in by_tick.values():
            if kept and _same(kept[-1], event):
                continue
            kept.append(event)
        events.clear()
        events.extend(kept)
