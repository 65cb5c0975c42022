"""``midilm evaluate MODEL DATASET -o REPORT_DIR`` and ``midilm compare REPORT_DIR…``:
measure a model (:func:`midilm.evaluation.evaluate`) and put reports side by side."""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["compare", "evaluate"]


@click.command()
@click.argument("model", metavar="MODEL")
@click.argument("dataset", metavar="DATASET", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    "output",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    metavar="REPORT_DIR",
    help="Folder for report.json, report.md and the plots (created if needed).",
)
@click.option(
    "--samples",
    type=click.IntRange(min=1),
    default=16,
    show_default=True,
    help="Pieces to compose (and free sequences per syntax check, and bars to infill).",
)
@click.option(
    "--bars", type=click.IntRange(min=1), default=8, show_default=True, help="Bars per piece."
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds every draw.")
@click.option(
    "--split",
    type=click.Choice(["test", "valid"]),
    default="test",
    show_default=True,
    help="Held-out split (an empty test split falls back to valid, with a note).",
)
@click.option(
    "--max-reference",
    type=click.IntRange(min=1),
    default=200,
    show_default=True,
    help="Sequences of the held-out and of the train split decoded for the statistics.",
)
@click.option(
    "--max-sequences",
    type=click.IntRange(min=1),
    default=None,
    help="Score at most this many held-out sequences for the likelihood (default: all).",
)
@click.option(
    "--temperature",
    type=click.FloatRange(min=0),
    default=None,
    help="Sampling temperature (default: the model's).",
)
@click.option(
    "--top-k",
    type=click.IntRange(min=0),
    default=None,
    help="Top-k filter, 0 for none (default: the model's).",
)
@click.option(
    "--top-p",
    type=click.FloatRange(min=0, max=1, min_open=True),
    default=None,
    help="Nucleus filter, 1 for none (default: the model's).",
)
@click.option(
    "--voice-leading/--no-voice-leading",
    default=None,
    help="Compose and infill under the voice-leading guard (default: the model's).",
)
@click.option("--no-plots", is_flag=True, help="Write report.json and report.md only.")
@click.option("--quiet", is_flag=True, help="No progress lines on stderr.")
def evaluate(
    model: str,
    dataset: Path,
    output: Path,
    samples: int,
    bars: int,
    seed: int,
    split: str,
    max_reference: int,
    max_sequences: int | None,
    temperature: float | None,
    top_k: int | None,
    top_p: float | None,
    voice_leading: bool | None,
    no_plots: bool,
    quiet: bool,
) -> None:
    """Evaluate MODEL (a model directory or bundled:NAME) on DATASET (a folder made by
    'midilm prepare'): held-out loss, perplexity and bits per note; syntax errors of samples
    drawn with and without the grammar; control accuracy (MMM); music statistics of
    composed samples against the held-out split (overlapping area, with test vs train as
    the ceiling); four-part voice leading (music21); infilling; speed.

    Prints report.md; REPORT_DIR/report.json holds every number.
    """
    from midilm.data.shards import read_manifest
    from midilm.evaluation.run import evaluate as run_evaluation

    read_manifest(dataset)  # a missing or foreign folder fails before the model loads

    def say(message: str) -> None:
        if not quiet:
            click.echo(f"evaluate: {message}", err=True)

    report = run_evaluation(
        model,
        dataset,
        output=output,
        samples=samples,
        bars=bars,
        seed=seed,
        split=split,
        max_reference=max_reference,
        max_sequences=max_sequences,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        voice_leading=voice_leading,
        plots=not no_plots,
        progress=say,
    )
    click.echo(report.to_markdown())
    say(f"wrote {output / 'report.json'}")


@click.command()
@click.argument(
    "reports",
    metavar="REPORT_DIR...",
    nargs=-1,
    required=True,
    type=click.Path(path_type=Path),
)
def compare(reports: tuple[Path, ...]) -> None:
    """Print evaluation reports side by side, one column per REPORT_DIR (a Markdown
    table; ↑ marks numbers where higher is better, ↓ lower)."""
    from midilm.evaluation.report import Report, compare_table

    loaded = [Report.load(path) for path in reports]
    click.echo(compare_table(loaded, _column_names(reports)))


def _column_names(paths: tuple[Path, ...]) -> list[str]:
    """Each report's folder name, or as much of its path as tells it apart."""
    names = [p.resolve().name or str(p) for p in paths]
    if len(set(names)) == len(names):
        return names
    return [str(p) for p in paths]
