"""``midilm info FILE``: what a score holds (tracks, instruments, tempos, meters, bars,
notes), as :func:`midilm.score.format_info` prints it."""

from __future__ import annotations

import click


@click.command()
@click.argument("source", metavar="FILE")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def info(source: str, as_json: bool) -> None:
    """Summarize a score: tracks, programs, drums, tempos, meters, bars and notes.

    FILE is a MIDI file (.mid .midi .kar .rmi .smf), a MusicXML, kern or abc file, or a
    music21 corpus work such as music21:bach/bwv66.6.

    With --json the same summary is printed as a JSON object; there bars are numbered
    from 1 and track "index" from 0, as in the Python API.
    """
    from midilm.score import describe, format_info, load_score

    summary = describe(load_score(source))
    if as_json:
        import dataclasses
        import json

        click.echo(json.dumps(dataclasses.asdict(summary), indent=2, ensure_ascii=False))
    else:
        click.echo(format_info(summary))
