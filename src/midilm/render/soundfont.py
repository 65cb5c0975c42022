"""Which General MIDI soundfont to play a score with.

The first of these that exists wins:

1. the path passed in (``soundfont=`` / ``--soundfont``);
2. the environment variable ``MIDILM_SOUNDFONT``;
3. a system soundfont, in :data:`SYSTEM_SOUNDFONTS` order (Debian and Ubuntu's
   ``fluid-soundfont-gm`` first: FluidR3_GM, 141 MiB, the best of the free GM sets);
4. ``TimGM6mb.sf2`` (6 MiB), which ships inside the ``pretty_midi`` wheel, a dependency
   of midilm: so audio works after a plain ``pip install`` with no system package.

A path named in 1 or 2 that does not exist is an error, not a reason to fall through: the
user asked for that sound. Nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from midilm.render.errors import SoundfontNotFoundError

__all__ = [
    "PACKAGED_SOUNDFONT",
    "SOUNDFONT_ENV",
    "SYSTEM_SOUNDFONTS",
    "find_soundfont",
    "packaged_soundfont",
]

SOUNDFONT_ENV = "MIDILM_SOUNDFONT"

# Where distributions install GM soundfonts, best sounding first.
SYSTEM_SOUNDFONTS: tuple[Path, ...] = (
    Path("/usr/share/sounds/sf2/FluidR3_GM.sf2"),  # Debian, Ubuntu: fluid-soundfont-gm
    Path("/usr/share/soundfonts/FluidR3_GM.sf2"),  # Fedora: fluid-soundfont-gm
    Path("/usr/share/soundfonts/FluidR3_GM2-2.sf2"),  # Arch: soundfont-fluid
    Path("/usr/share/sounds/sf2/default-GM.sf2"),  # Debian's alternatives link
    Path("/usr/share/soundfonts/default.sf2"),  # Arch, Fedora: the chosen default
    Path("/usr/share/sounds/sf3/default-GM.sf3"),  # Debian: MuseScore_General.sf3
    Path("/usr/share/sounds/sf2/TimGM6mb.sf2"),  # Debian: timgm6mb-soundfont
    Path("/usr/local/share/soundfonts/default.sf2"),  # FreeBSD, hand installs
    Path("/opt/homebrew/share/soundfonts/default.sf2"),  # macOS (Homebrew, by hand)
    Path("/usr/local/share/fluidsynth/default.sf2"),
)

PACKAGED_SOUNDFONT = "TimGM6mb.sf2"  # inside the pretty_midi package

_INSTALL_HINT = (
    "install one (Debian/Ubuntu: apt-get install fluid-soundfont-gm; any system: "
    "pip install pretty_midi, which ships TimGM6mb.sf2), or pass --soundfont PATH "
    f"or set {SOUNDFONT_ENV} to a .sf2/.sf3 file"
)


def packaged_soundfont() -> Path | None:
    """The GM soundfont that ships inside the ``pretty_midi`` wheel, when installed.

    Found through the package's location without importing it (pretty_midi's import pulls
    in mido and reads nothing we need)."""
    spec = importlib.util.find_spec("pretty_midi")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / PACKAGED_SOUNDFONT
        if path.is_file():
            return path
    return None


def find_soundfont(
    soundfont: str | os.PathLike[str] | None = None, *, sf2_only: bool = False
) -> Path:
    """The soundfont to use: ``soundfont`` if given, else ``$MIDILM_SOUNDFONT``, else the
    first system soundfont found, else the one pretty_midi ships. ``sf2_only`` passes over
    the system ``.sf3`` files, for a synthesizer that cannot read them (rustysynth).

    Raises :class:`SoundfontNotFoundError` (a ``FileNotFoundError``) when the one named
    does not exist, or when none is found, saying how to install one.
    """
    if soundfont is not None:
        return _existing(Path(soundfont), "soundfont")
    from_env = os.environ.get(SOUNDFONT_ENV, "").strip()
    if from_env:
        return _existing(Path(from_env), f"soundfont from ${SOUNDFONT_ENV}")
    for path in SYSTEM_SOUNDFONTS:
        if path.is_file() and not (sf2_only and path.suffix.lower() == ".sf3"):
            return path
    packaged = packaged_soundfont()
    if packaged is not None:
        return packaged
    raise SoundfontNotFoundError(f"no General MIDI soundfont found: {_INSTALL_HINT}")


def _existing(path: Path, what: str) -> Path:
    path = path.expanduser()
    if path.is_file():
        return path
    reason = "is a folder, not a file" if path.is_dir() else "no such file"
    raise SoundfontNotFoundError(f"{what} {path}: {reason}")
