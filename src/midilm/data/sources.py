"""What ``midilm prepare SOURCE...`` reads: every SOURCE expanded into one sorted list of
items, each a file path or a ``music21:`` work spec.

A SOURCE is, checked in this order:

- a ``music21:`` spec: one work (``music21:bach/bwv66.6``) or a collection of the corpus
  that ships with music21 (``music21:bach``, ``music21:essenFolksong``), listed without
  parsing anything (:func:`midilm.score.music21_specs`);
- a directory: every ``.mid`` / ``.midi`` / ``.kar`` file under it, recursively (any case
  of the suffix; hidden files and folders, whose names start with a dot, are skipped);
- a file midilm reads as a score (``.mid .midi .kar .rmi .smf``, MusicXML, kern, abc): itself;
- any other existing file: a list, one path or ``music21:`` spec per line (blank lines and
  lines starting with ``#`` skipped); relative paths are relative to the list's folder;
- anything else: a glob pattern (``corpus/**/*.mid``; ``**`` crosses folders).

Items are normalized (``./a//b.mid`` → ``a/b.mid``; paths stay relative when given
relative) and sorted, with code-point order on the text of each item, so that the same
SOURCE arguments give the same list on every machine, whatever order the file system lists
files in and whatever order the arguments come in. A file reached twice (through a folder
and a glob) is one item. Nothing is read here, except list files.

A SOURCE that names nothing (a missing path, a glob without matches, an empty folder)
raises :class:`SourceError`: a typo must not silently prepare an empty dataset.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from midilm.errors import MidilmError
from midilm.score.music21_import import MUSIC21_PREFIX
from midilm.score.sources import SCORE_SUFFIXES

__all__ = ["DIRECTORY_SUFFIXES", "SourceError", "expand_sources", "is_music21"]

DIRECTORY_SUFFIXES = (".mid", ".midi", ".kar")
"""Suffixes collected from a directory SOURCE (compared without case)."""

_GLOB_CHARS = frozenset("*?[")


class SourceError(MidilmError, ValueError):
    """A SOURCE argument that names no music (missing path, empty folder, glob without
    matches, unreadable list file)."""


def is_music21(item: str) -> bool:
    return item.startswith(MUSIC21_PREFIX)


def expand_sources(sources: Sequence[str | os.PathLike[str]]) -> list[str]:
    """The sorted, de-duplicated items that ``sources`` name (see the module doc)."""
    if isinstance(sources, (str, os.PathLike)):
        raise TypeError("expand_sources takes a list of sources, not one string")
    if not sources:
        raise SourceError("no source given: name folders, files, globs or music21: collections")
    items: set[str] = set()
    for source in sources:
        found = list(_expand_one(os.fspath(source)))
        if not found:
            raise SourceError(f"{source}: names no music file")
        items.update(found)
    return sorted(items)


def _expand_one(source: str, *, base: Path | None = None, depth: int = 0) -> Iterable[str]:
    if is_music21(source):
        from midilm.errors import InvalidMidiError
        from midilm.score import music21_specs

        try:
            return music21_specs(source)
        except InvalidMidiError as err:
            raise SourceError(str(err)) from None
    path = Path(source) if base is None or Path(source).is_absolute() else base / source
    if path.is_dir():
        return _walk(path)
    if path.is_file():
        if path.suffix.lower() in SCORE_SUFFIXES:
            return [_normalized(path)]
        if depth > 0:
            raise SourceError(f"{path}: a list file may name scores, not other list files")
        return _read_list(path, depth)
    if base is None and _GLOB_CHARS & set(source):
        return _glob(source)
    if path.suffix.lower() in SCORE_SUFFIXES and base is not None:
        # A missing file named in a list is an item like any other: preparation rejects it
        # with reason "missing", so the list's count adds up.
        return [_normalized(path)]
    raise SourceError(f"{path}: no such file, folder or music21: collection")


def _walk(folder: Path) -> list[str]:
    found = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if not name.startswith(".") and Path(name).suffix.lower() in DIRECTORY_SUFFIXES:
                found.append(_normalized(Path(root) / name))
    return found


def _glob(pattern: str) -> list[str]:
    return [
        _normalized(Path(match))
        # glob.glob, not Path.glob: patterns may be absolute, and it skips hidden files.
        for match in glob.glob(pattern, recursive=True)  # noqa: PTH207
        if Path(match).is_file() and Path(match).suffix.lower() in SCORE_SUFFIXES
    ]


def _read_list(path: Path, depth: int) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        kind = " (it is a MIDI file without a MIDI suffix)" if _is_midi(path) else ""
        raise SourceError(
            f"{path}: neither a score nor a list of paths (not UTF-8 text{kind})"
        ) from None
    except OSError as err:
        raise SourceError(f"{path}: cannot read the list ({err.strerror})") from err
    items: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            found = list(_expand_one(line, base=path.parent, depth=depth + 1))
        except SourceError as err:
            raise SourceError(f"{path}, line {number}: {err}") from None
        items.extend(found)
    return items


def _is_midi(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(4) == b"MThd"


def _normalized(path: Path) -> str:
    return os.path.normpath(path).replace(os.sep, "/")
