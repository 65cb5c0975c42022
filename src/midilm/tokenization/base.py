"""What every midilm tokenizer offers, and how a saved one is found again.

A tokenizer turns a ``symusic.Score`` into token ids and back, owns its vocabulary, and
provides the :mod:`~midilm.tokenization.grammar` that says which id may follow which. It
saves to a directory as ``tokenizer.json`` (the format its ecosystem reads: a Hugging Face
WordLevel file for MMM, MidiTok's file for REMI) plus ``midilm.json``, which names the kind
and the settings. It knows nothing about models or sampling.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from midilm.errors import TokenizerMismatchError
from midilm.io_utils import read_json_object

if TYPE_CHECKING:
    from collections.abc import Sequence

    from symusic import Score

    from midilm.tokenization.grammar import Grammar

__all__ = [
    "MIDILM_JSON",
    "TOKENIZER_JSON",
    "Tokenizer",
    "load_tokenizer",
    "read_midilm_json",
    "write_midilm_json",
]

TOKENIZER_JSON = "tokenizer.json"
MIDILM_JSON = "midilm.json"


@runtime_checkable
class Tokenizer(Protocol):
    kind: ClassVar[str]

    @property
    def vocab_size(self) -> int: ...

    def encode(self, score: Score) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> Score: ...

    def token_to_id(self, token: str) -> int: ...

    def id_to_token(self, token_id: int) -> str: ...

    def grammar(self) -> Grammar: ...

    def save(self, directory: str | Path) -> None: ...


def read_midilm_json(directory: str | Path) -> dict[str, Any]:
    """The ``midilm.json`` of a directory, or ``{}`` when there is none."""
    path = Path(directory) / MIDILM_JSON
    if not path.is_file():
        return {}
    return read_json_object(path, TokenizerMismatchError)


def write_midilm_json(directory: str | Path, updates: dict[str, Any]) -> None:
    """Merge ``updates`` into the directory's ``midilm.json`` (model and dataset directories
    add their own keys beside the tokenizer's)."""
    from midilm import __version__
    from midilm.io_utils import atomic_write_text

    directory = Path(directory)
    data = read_midilm_json(directory)
    data.update(updates)
    data.setdefault("midilm_version", __version__)
    atomic_write_text(directory / MIDILM_JSON, json.dumps(data, indent=2) + "\n")


def load_tokenizer(directory: str | Path) -> Tokenizer:
    """Load whichever tokenizer a directory holds.

    ``midilm.json`` names the kind; without it (a published checkpoint), the kind is read
    off ``tokenizer.json`` itself: a Hugging Face WordLevel file is MMM text, a MidiTok file
    is REMI. A MidiTok 2.x ``tokenizer.conf`` is converted (see :mod:`.remi`).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no such tokenizer directory")
    kind = read_midilm_json(directory).get("tokenizer", {}).get("kind")
    if kind is None:
        kind = _sniff_kind(directory)
    if kind == "mmm":
        from midilm.tokenization.mmm import MMMTokenizer

        return MMMTokenizer.load(directory)
    if kind == "remi":
        from midilm.tokenization.remi import REMITokenizer

        return REMITokenizer.load(directory)
    raise TokenizerMismatchError(
        f"{directory / MIDILM_JSON}: unknown tokenizer kind {kind!r} (expected 'mmm' or 'remi')"
    )


def _sniff_kind(directory: Path) -> str:
    path = directory / TOKENIZER_JSON
    if not path.is_file():
        if (directory / "tokenizer.conf").is_file():
            return "remi"
        raise FileNotFoundError(f"{path}: no tokenizer file in this directory")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise TokenizerMismatchError(f"{path}: not a readable JSON file ({err})") from err
    if isinstance(data, dict) and data.get("model", {}).get("type") == "WordLevel":
        return "mmm"
    if isinstance(data, dict) and "tokenization" in data:
        return "remi"
    raise TokenizerMismatchError(
        f"{path}: neither a Hugging Face WordLevel vocabulary (MMM) nor a MidiTok tokenizer (REMI)"
    )
