"""``midilm tokenize`` (score → one line of tokens or ids) and ``midilm detokenize`` (lines
of tokens or ids → MIDI files), over :mod:`midilm.tokenization`.

The tokenizer is named the same way in both: ``mmm`` (the published MMM text format, 4/4
only unless ``--meter-tokens``), ``remi`` (the untrained REMI base vocabulary) or the folder
of any saved tokenizer (MMM or REMI, trained or not), which keeps its own settings.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from symusic.core import ScoreTick

    from midilm.tokenization.base import Tokenizer

__all__ = ["detokenize", "load_cli_tokenizer", "tokenize", "tokenizer_options"]

BUILTIN_TOKENIZERS = ("mmm", "remi")
_INTEGER = re.compile(r"[+-]?\d+")

F = TypeVar("F", bound=Callable[..., Any])


class TokenizerSpec(click.ParamType):
    """``mmm``, ``remi`` or an existing folder; checked when the command line is read,
    loaded only when the command runs (:func:`load_cli_tokenizer`)."""

    name = "tokenizer"

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "mmm|remi|DIR"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        value = str(value)
        if value in BUILTIN_TOKENIZERS or Path(value).is_dir():
            return value
        self.fail(
            f"expected mmm, remi or the folder of a saved tokenizer, received {value!r} "
            "(no such folder)",
            param,
            ctx,
        )
        return value  # not reached: fail() raises


def tokenizer_options(command: F) -> F:
    """The ``--tokenizer`` and ``--meter-tokens`` options, for every command that reads or
    writes tokens."""
    command = click.option(
        "--meter-tokens",
        is_flag=True,
        help="With --tokenizer mmm: add TIME_SIGNATURE tokens, so that pieces in meters "
        "other than 4/4 (or changing meter) can be encoded.",
    )(command)
    return click.option(
        "--tokenizer",
        "tokenizer_spec",
        type=TokenizerSpec(),
        default="mmm",
        show_default=True,
        help="mmm: the published multi-track text format; remi: the REMI base vocabulary "
        "(no BPE); DIR: a saved tokenizer folder (MMM or REMI, with its own settings).",
    )(command)


def load_cli_tokenizer(spec: str, meter_tokens: bool = False) -> Tokenizer:
    """The tokenizer a ``--tokenizer`` value names (see :class:`TokenizerSpec`)."""
    if spec == "mmm":
        from midilm.tokenization.mmm import MMMTokenizer

        return MMMTokenizer(meter_tokens=meter_tokens)
    if meter_tokens:
        raise click.BadParameter(
            f"applies to --tokenizer mmm only (received --tokenizer {spec}; "
            "a saved tokenizer keeps its own settings)",
            param_hint="'--meter-tokens'",
        )
    if spec == "remi":
        from midilm.tokenization.remi import REMITokenizer

        return REMITokenizer()
    from midilm.tokenization.base import load_tokenizer

    return load_tokenizer(spec)


@click.command()
@click.argument("source", metavar="FILE")
@tokenizer_options
@click.option("--ids", "as_ids", is_flag=True, help="Print token ids instead of token names.")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write the tokens to this file (atomically) instead of stdout.",
)
@click.option("-v", "--verbose", is_flag=True, help="Say on stderr what was written.")
def tokenize(
    *,
    source: str,
    tokenizer_spec: str,
    meter_tokens: bool,
    as_ids: bool,
    output: Path | None,
    verbose: bool,
) -> None:
    """Print the tokens of a score on one line.

    FILE is a MIDI file, a MusicXML, kern or abc file, or a music21 corpus work such as
    music21:bach/bwv66.6. The whole piece is encoded (all bars, all tracks the tokenizer
    keeps). Names are printed separated by spaces (MMM text; REMI base tokens, or learned
    BPE tokens as their base tokens joined with '+'), or with --ids the ids.
    `midilm detokenize` reads both back.
    """
    from midilm.errors import UnsupportedScoreError
    from midilm.score import load_score

    tokenizer = load_cli_tokenizer(tokenizer_spec, meter_tokens)
    score = load_score(source)
    try:
        ids = tokenizer.encode(score)
    except UnsupportedScoreError as err:
        if err.reason == "meter" and tokenizer_spec == "mmm" and not meter_tokens:
            raise UnsupportedScoreError(
                err.reason, f"{source}: {err.detail} (on the command line: --meter-tokens)"
            ) from err
        raise UnsupportedScoreError(err.reason, f"{source}: {err.detail}") from err
    if not ids:
        why = " (REMI drops drum tracks and pitches outside its range)"
        raise UnsupportedScoreError(
            "no_notes",
            f"{source}: the {tokenizer.kind} tokenizer keeps none of its notes"
            + (why if tokenizer.kind == "remi" else ""),
        )
    if as_ids:
        line = " ".join(str(i) for i in ids)
    else:
        line = " ".join(tokenizer.id_to_token(i) for i in ids)

    if output is None:
        click.echo(line)
        return
    from midilm.io_utils import atomic_write_text

    atomic_write_text(output, line + "\n")
    if verbose:
        click.echo(f"wrote {len(ids)} tokens to {output}", err=True)


@click.command()
@click.argument("tokens_file", metavar="TOKENS_FILE")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="The MIDI file to write (OUT.mid; OUT_1.mid, OUT_2.mid, … for several sequences).",
)
@tokenizer_options
@click.option("-v", "--verbose", is_flag=True, help="Say on stderr which files were written.")
def detokenize(
    *,
    tokens_file: str,
    output: Path,
    tokenizer_spec: str,
    meter_tokens: bool,
    verbose: bool,
) -> None:
    """Turn tokens back into MIDI.

    TOKENS_FILE ('-' for stdin) holds token names or ids separated by spaces, as
    `midilm tokenize` prints them; a line of integers is read as ids. Each non-empty line
    is one sequence: one line is written to OUT.mid, several lines to OUT_1.mid, OUT_2.mid,
    … (numbered from 1, in the order of the lines). Nothing is written unless every line
    decodes. Use the tokenizer (and --meter-tokens) the tokens were made with.
    """
    from midilm.score import save_midi

    name = "<stdin>" if tokens_file == "-" else tokens_file
    lines = [line for line in _read_text(tokens_file, name).splitlines() if line.strip()]
    if not lines:
        raise click.ClickException(f"{name}: no tokens (the file is empty)")
    tokenizer = load_cli_tokenizer(tokenizer_spec, meter_tokens)
    scores = []
    for number, line in enumerate(lines, start=1):
        where = f"{name}, line {number}" if len(lines) > 1 else name
        scores.append(_decode_line(tokenizer, line, where))

    if len(scores) == 1:
        paths = [output]
    else:
        paths = [
            output.with_name(f"{output.stem}_{i}{output.suffix}") for i in range(1, len(scores) + 1)
        ]
    for path, score in zip(paths, scores, strict=True):
        save_midi(score, path)
        if verbose:
            notes = sum(len(track.notes) for track in score.tracks)
            click.echo(f"wrote {path} ({len(score.tracks)} tracks, {notes} notes)", err=True)


def _read_text(source: str, name: str) -> str:
    data = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        kind = " (it is a MIDI file)" if data[:4] == b"MThd" else ""
        raise click.ClickException(f"{name}: not a tokens file: not UTF-8 text{kind}") from None


def _decode_line(tokenizer: Tokenizer, line: str, where: str) -> ScoreTick:
    """One sequence of names or ids → a score; errors say where the bad token is."""
    from midilm.errors import UnknownTokenError
    from midilm.tokenization.mmm import MMMTokenizer

    items = line.split()
    try:
        if all(_INTEGER.fullmatch(item) for item in items):
            ids = [int(item) for item in items]
            _check_ids(ids, tokenizer.vocab_size)
        elif isinstance(tokenizer, MMMTokenizer):
            return tokenizer.decode(line)  # the codec's own text reader
        else:
            ids = _names_to_ids(tokenizer, items)
        return tokenizer.decode(ids)
    except UnknownTokenError as err:
        raise UnknownTokenError(f"{where}: {err}") from err


def _check_ids(ids: Sequence[int], vocab_size: int) -> None:
    from midilm.errors import UnknownTokenError

    for position, token_id in enumerate(ids):
        if not 0 <= token_id < vocab_size:
            raise UnknownTokenError(
                f"token {position}: id {token_id} is outside the vocabulary (0–{vocab_size - 1})"
            )


def _names_to_ids(tokenizer: Tokenizer, names: Sequence[str]) -> list[int]:
    from midilm.errors import UnknownTokenError

    ids = []
    for position, name in enumerate(names):
        try:
            ids.append(tokenizer.token_to_id(name))
        except UnknownTokenError as err:
            raise UnknownTokenError(f"token {position}: {err}") from None
    return ids
