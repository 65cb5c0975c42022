"""``midilm prepare``: a corpus of MIDI files (or music21 collections) → a training-ready
dataset, over :func:`midilm.data.prepare.prepare` and :func:`midilm.data.prepare.merge`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

__all__ = ["prepare"]


class _Shard(click.ParamType):
    name = "K/N"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, tuple):
            return value
        try:
            k, n = (int(x) for x in str(value).split("/"))
        except ValueError:
            self.fail(f"expected K/N such as 2/8, received {value!r}", param, ctx)
        if not 1 <= k <= n:
            self.fail(f"need 1 ≤ K ≤ N, received {value!r}", param, ctx)
        return k, n


class _Transpose(click.ParamType):
    name = "LOW:HIGH"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, tuple):
            return value
        text = str(value).strip()
        try:
            if ":" in text:
                low, high = (int(x) for x in text.split(":"))
            else:
                low = high = int(text)
                low, high = min(low, 0), max(high, 0)
        except ValueError:
            self.fail(f"expected semitones LOW:HIGH such as -5:6, received {value!r}", param, ctx)
        if low > 0 or high < 0:
            self.fail(f"need LOW ≤ 0 ≤ HIGH, received {value!r}", param, ctx)
        return low, high


class _Ratios(click.ParamType):
    name = "TRAIN,VALID,TEST"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, tuple):
            return value
        try:
            ratios = tuple(float(x) for x in str(value).split(","))
        except ValueError:
            ratios = ()
        if len(ratios) != 3:
            self.fail(
                f"expected three shares such as 0.9,0.05,0.05, received {value!r}", param, ctx
            )
        return ratios


def _setting(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise click.BadParameter(
            f"expected KEY=VALUE, received {text!r}", param_hint="'--tokenizer-setting'"
        )
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw  # a bare word: a string
    return key.strip(), value


@click.command()
@click.argument("sources", metavar="SOURCE...", nargs=-1, required=True)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The dataset folder (with --shard: the part folder).",
)
@click.option(
    "--tokenizer",
    type=click.Choice(["mmm", "remi"]),
    default="mmm",
    show_default=True,
    help="mmm: multi-track text windows; remi: REMI + BPE piano sequences.",
)
@click.option("--meter-tokens", is_flag=True, help="MMM: encode meters other than 4/4.")
@click.option("--bars", type=click.IntRange(min=1), help="MMM: bars per window.  [default: 4]")
@click.option(
    "--hop", type=click.IntRange(min=1), default=2, show_default=True, help="MMM: window hop."
)
@click.option(
    "--density-bins", type=click.IntRange(min=1), help="MMM: density bins.  [default: 10]"
)
@click.option(
    "--tokenizer-setting",
    "tokenizer_settings",
    multiple=True,
    metavar="KEY=VALUE",
    help="Any other tokenizer setting (MMMConfig / REMIConfig field; VALUE as JSON).",
)
@click.option(
    "--transpose",
    type=_Transpose(),
    help="Semitone range of the training pieces' transpositions, LOW:HIGH; 0 for none. "
    "[default: -5:6 for mmm, 0 for remi]",
)
@click.option("--no-shuffle-tracks", is_flag=True, help="MMM: keep the tracks' order.")
@click.option(
    "--infill-share",
    type=click.FloatRange(0, 1),
    default=0.25,
    show_default=True,
    help="MMM: share of windows made bar-infilling examples.",
)
@click.option(
    "--infill-bars",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="MMM: at most this many masked (track, bar) cells per infilling example.",
)
@click.option(
    "--instrument-augmentation",
    type=click.Choice(["none", "ensembles"]),
    default="none",
    show_default=True,
    is_flag=False,
    flag_value="ensembles",
    help="MMM: give training windows other GM programs that fit each track's pitch range: "
    "one family for all tracks (choir, strings, organ, brass, woodwinds, piano) or one per "
    "track. The flag alone means ensembles.",
)
@click.option(
    "--instrument-keep-share",
    type=click.FloatRange(0, 1),
    default=0.25,
    show_default=True,
    help="With --instrument-augmentation: share of windows keeping their programs.",
)
@click.option(
    "--instrument-mixed-share",
    type=click.FloatRange(0, 1),
    default=0.25,
    show_default=True,
    help="With --instrument-augmentation: share of the other windows with a family per "
    "track (the rest: one family for all tracks).",
)
@click.option(
    "--vocab-size",
    type=click.IntRange(min=1),
    default=20_000,
    show_default=True,
    help="REMI: BPE vocabulary size.",
)
@click.option(
    "--max-seq-len",
    type=click.IntRange(min=8),
    help="MMM: longer windows are dropped; REMI: pieces are cut at bar lines to fit "
    "(BOS and EOS included).  [default: 2048 for mmm, 1024 for remi]",
)
@click.option(
    "--split",
    "split_ratios",
    type=_Ratios(),
    default="0.9,0.05,0.05",
    show_default=True,
    help="Shares of train, valid and test.",
)
@click.option(
    "--min-bars",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Shorter pieces are rejected (too_short).",
)
@click.option(
    "--max-bars",
    type=click.IntRange(min=1),
    default=2000,
    show_default=True,
    help="Longer pieces are rejected (too_long).",
)
@click.option(
    "--min-notes",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="Pieces with fewer notes are rejected (too_short).",
)
@click.option(
    "--max-tracks",
    type=click.IntRange(min=1),
    default=32,
    show_default=True,
    help="Pieces with more tracks with notes are rejected (too_many_tracks).",
)
@click.option(
    "--seed",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Seeds the track order and infilling choices (with each piece's note hash).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    help="Worker processes.  [default: every core]",
)
@click.option(
    "--shard",
    type=_Shard(),
    help="Prepare part K of N into the folder -o (phase 1 only); join the parts with --merge.",
)
@click.option(
    "--merge",
    "merge_parts",
    is_flag=True,
    help="SOURCE... are part folders made with --shard: join them into the dataset -o.",
)
@click.option(
    "--keep-work", is_flag=True, help="Keep DATASET/.work (a grown corpus then redoes less)."
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace a dataset (or discard an unfinished one) made from other inputs.",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="A progress bar on stderr.  [default: when stderr is a terminal]",
)
@click.option("-q", "--quiet", is_flag=True, help="Print nothing when all went well.")
def prepare(
    *,
    sources: tuple[str, ...],
    output: Path,
    tokenizer: str,
    meter_tokens: bool,
    bars: int | None,
    hop: int,
    density_bins: int | None,
    tokenizer_settings: tuple[str, ...],
    transpose: tuple[int, int] | None,
    no_shuffle_tracks: bool,
    infill_share: float,
    infill_bars: int,
    instrument_augmentation: str,
    instrument_keep_share: float,
    instrument_mixed_share: float,
    vocab_size: int,
    max_seq_len: int | None,
    split_ratios: tuple[float, ...],
    min_bars: int,
    max_bars: int,
    min_notes: int,
    max_tracks: int,
    seed: int,
    workers: int | None,
    shard: tuple[int, int] | None,
    merge_parts: bool,
    keep_work: bool,
    overwrite: bool,
    progress: bool | None,
    quiet: bool,
) -> None:
    """Turn a corpus into a training-ready dataset.

    SOURCE is a folder (every .mid .midi .kar file under it), a glob such as
    'corpus/**/*.mid', a text file listing paths (one a line), a single score file, or a
    music21 corpus collection (music21:bach, music21:essenFolksong, …). Each file is loaded
    and checked; a file that cannot be used is left out with its reason (corrupt, empty,
    no_notes, too_short, too_long, meter, too_many_tracks, duplicate, …), counted in
    manifest.json and listed in DATASET/rejected.jsonl. Exact duplicates (the same notes)
    are kept once. Each piece goes to train, valid or test by a hash of its notes, so it
    keeps its split when the corpus grows, and all its examples stay in that split.

    MMM: windows of --bars bars every --hop bars, tracks in a seeded random order, a share
    of bar-infilling examples, training pieces transposed over --transpose (drums never);
    the density bins are fitted on the training split; --instrument-augmentation gives
    training windows other instruments that fit their ranges. REMI: BPE learned on the
    training split, pieces cut at bar lines to --max-seq-len.

    A killed run continues where it stopped when the same command is run again, and gives
    the same bytes; a second run with the same inputs does nothing. The result does not
    depend on --workers or --shard.

    Many machines: run 'midilm prepare SOURCE... --shard K/N -o PART_K' on each (the same
    SOURCE paths, K = 1…N), then 'midilm prepare --merge PART_1 … PART_N -o DATASET' on
    one. The parts hold every piece's tokens; the merge needs the part folders only, fits
    the density bins (or BPE) on the whole training split and writes the dataset, byte for
    byte what one machine would have written.
    """
    from midilm.data.workers import cpu_count, start_fork_server

    if not merge_parts and (workers or cpu_count()) > 1:
        # The workers' fork server loads numpy, symusic and the tokenizer on another core
        # while this process loads them too: the pool is ready when the work is.
        start_fork_server(tokenizer)

    from midilm.data.prepare import PrepareConfig
    from midilm.data.prepare import merge as merge_fn
    from midilm.data.prepare import prepare as prepare_fn

    show = progress if progress is not None else sys.stderr.isatty()
    if merge_parts:
        if shard is not None:
            raise click.UsageError("--merge and --shard do not go together")
        ctx = click.get_current_context()
        given = [
            param.opts[-1] if param.opts else param.name
            for param in ctx.command.params
            if param.name not in _MERGE_OPTIONS
            and ctx.get_parameter_source(param.name) == click.core.ParameterSource.COMMANDLINE
        ]
        if given:
            raise click.UsageError(
                f"with --merge the settings come from the parts; drop {', '.join(given)}"
            )
        result = merge_fn(list(sources), output, progress=show, overwrite=overwrite)
        if not quiet:
            click.echo(_summary(result))
        return

    settings: dict[str, Any] = dict(_setting(s) for s in tokenizer_settings)
    if tokenizer == "mmm":
        if meter_tokens:
            settings["meter_tokens"] = True
        if bars is not None:
            settings["bars_per_window"] = bars
        if density_bins is not None:
            settings["density_bins"] = density_bins
    else:
        for flag, given in (
            ("--meter-tokens", meter_tokens),
            ("--bars", bars is not None),
            ("--density-bins", density_bins is not None),
            ("--instrument-augmentation", instrument_augmentation != "none"),
        ):
            if given:
                raise click.BadParameter("applies to --tokenizer mmm only", param_hint=flag)
    config = PrepareConfig(
        tokenizer=tokenizer,  # type: ignore[arg-type]
        tokenizer_settings=settings,
        split_ratios=split_ratios,
        min_bars=min_bars,
        max_bars=max_bars,
        min_notes=min_notes,
        max_tracks=max_tracks,
        hop=hop,
        transpose=transpose,
        shuffle_tracks=not no_shuffle_tracks,
        infill_share=infill_share,
        infill_bars=infill_bars,
        instrument_augmentation=instrument_augmentation,  # type: ignore[arg-type]
        instrument_keep_share=instrument_keep_share,
        instrument_mixed_share=instrument_mixed_share,
        max_seq_len=max_seq_len,
        vocab_size=vocab_size,
        seed=seed,
    )
    result = prepare_fn(
        list(sources),
        output,
        config,
        shard=shard,
        workers=workers,
        progress=show,
        keep_work=keep_work,
        overwrite=overwrite,
    )
    if not quiet:
        click.echo(_summary(result))


_MERGE_OPTIONS = {"sources", "output", "merge_parts", "overwrite", "progress", "quiet"}


def _summary(result: Any) -> str:
    manifest = result.manifest
    if manifest.get("format") == "midilm-prepare-part":
        k, n = manifest["shard"]
        done = "up to date" if result.up_to_date else f"{result.processed} items processed"
        return (
            f"part {k}/{n} in {result.directory}: {done}; when every part is done, join "
            f"them with 'midilm prepare --merge PART... -o DATASET'"
        )
    if result.up_to_date:
        return f"{result.directory} is up to date (nothing to do)"
    from midilm.data.info import format_counts

    return f"prepared {result.directory}: " + format_counts(manifest)
