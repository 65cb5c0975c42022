"""``midilm generate | infill | add-track | regenerate-track``: sampling from the command line.

Thin layers over the :class:`~midilm.MusicModel` methods. On the command line bars and
tracks are numbered from 1 (as in a DAW and in ``midilm info``); the Python API counts from
0. Every command writes MIDI (``-o``; with ``--num N``, ``OUT-1.mid`` … ``OUT-N.mid``) and,
on request, the raw token text (``--save-tokens``), audio (``--wav``) and a piano roll
(``--png``, with the new bars highlighted).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from midilm.errors import GenerationRequestError

__all__ = ["add_track", "generate", "infill", "parse_numbers", "regenerate_track"]

_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")


def parse_numbers(text: str, what: str) -> list[int]:
    """``"3-4,7"`` → ``[2, 3, 6]``: 1-based numbers and ranges to 0-based indices."""
    out: list[int] = []
    for raw in text.split(","):
        match = _RANGE.match(raw.strip())
        if not match:
            raise click.BadParameter(f"{raw.strip()!r} is not a {what} number or range (3-4)")
        first = int(match.group(1))
        last = int(match.group(2) or first)
        if first < 1 or last < first:
            raise click.BadParameter(f"{raw.strip()!r}: {what}s are numbered from 1, and a "
                                     "range goes up (3-4)")  # fmt: skip
        out += range(first - 1, last)
    return sorted(set(out))


def _split(text: str | None) -> list[str] | None:
    if text is None:
        return None
    items = [item.strip() for item in text.split(",")]
    if not all(items):
        raise click.BadParameter(f"{text!r}: an empty item in the comma-separated list")
    return items


def _numbers_callback(what: str) -> Callable[[click.Context, click.Parameter, Any], Any]:
    def convert(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
        del ctx, param
        return None if value is None else parse_numbers(value, what)

    return convert


def _common(command: Callable[..., None]) -> Callable[..., None]:
    """The options every sampling command shares: model, output, sampling, rendering."""
    options = [
        click.option("--model", "model_path", metavar="DIR",
                     help="Model directory or bundled:NAME (default: the bundled model)."),
        click.option("-o", "--output", required=True, metavar="OUT.mid",
                     help="MIDI file to write (with --num N: OUT-1.mid … OUT-N.mid)."),
        click.option("--num", "num_samples", type=click.IntRange(1, 64), default=1,
                     show_default=True, help="Candidates to sample side by side."),
        click.option("--seed", type=click.IntRange(min=0), default=None,
                     help="Same seed, same music (default: random)."),
        click.option("--temperature", type=click.FloatRange(min=0), default=None,
                     help="Sampling temperature (default: the model's, usually 1.0)."),
        click.option("--top-k", type=click.IntRange(min=1), default=None,
                     help="Sample among the K likeliest tokens only."),
        click.option("--top-p", type=click.FloatRange(0, 1, min_open=True), default=None,
                     help="Sample among the likeliest tokens of total probability P."),
        click.option("--no-grammar", is_flag=True,
                     help="Sample without the grammar mask (research: raw syntax errors)."),
        click.option("--voice-leading/--no-voice-leading", default=None,
                     help="Keep four-part voice leading: no parallel fifths or octaves, "
                          "voices in range, no voice silent alone (default: the model's; on "
                          "for bundled:default)."),
        click.option("--save-tokens", metavar="OUT.txt",
                     help="Write the sampled token text, one model sequence per line."),
        click.option("--wav", "audio_path", metavar="OUT.wav",
                     help="Also render audio (.wav, .flac, .ogg, .mp3)."),
        click.option("--png", "image_path", metavar="OUT.png",
                     help="Also draw a piano roll (.png or .svg), new bars highlighted."),
        click.option("-q", "--quiet", is_flag=True, help="No progress bar."),
    ]  # fmt: skip
    for option in reversed(options):
        command = option(command)
    return command


def _run(
    task: str,
    arguments: dict[str, Any],
    *,
    model_path: str | None,
    output: str,
    num_samples: int,
    seed: int | None,
    temperature: float | None,
    top_k: int | None,
    top_p: float | None,
    no_grammar: bool,
    voice_leading: bool | None,
    save_tokens: str | None,
    audio_path: str | None,
    image_path: str | None,
    quiet: bool,
    highlight: Callable[[Any], Any] | None = None,
    score_arg: Any = None,
) -> None:
    from midilm.model.loading import load_model

    model = load_model(model_path)
    sampling = {
        "num_samples": num_samples, "seed": seed, "temperature": temperature,
        "top_k": top_k, "top_p": top_p, "constrained": not no_grammar,
    }  # fmt: skip
    if voice_leading is not None:
        sampling["voice_leading"] = voice_leading
    args = () if score_arg is None else (score_arg,)
    try:
        events = model.stream(task, *args, **arguments, **sampling)
    except GenerationRequestError as err:
        raise click.UsageError(_cli_words(str(err))) from None
    done = _with_progress(events, quiet)
    assert done.result is not None and done.tokens is not None
    _write_outputs(done.result, done.tokens, output, save_tokens, audio_path, image_path,
                   highlight)  # fmt: skip


def _with_progress(events: Iterator[Any], quiet: bool) -> Any:
    """Consume the events (a bar at a time) with a progress bar on stderr."""
    from tqdm import tqdm

    bar = None
    last = None
    for event in events:
        last = event
        if event.kind != "bar" or quiet:
            continue
        if bar is None:
            bar = tqdm(total=event.total, unit="bar", leave=False, dynamic_ncols=True,
                       desc="sampling", disable=None)  # fmt: skip
        bar.update(event.done - bar.n)
    if bar is not None:
        bar.close()
    return last


def _write_outputs(
    scores: list[Any],
    tokens: list[str],
    output: str,
    save_tokens: str | None,
    audio_path: str | None,
    image_path: str | None,
    highlight: Callable[[Any], Any] | None,
) -> None:
    from midilm.io_utils import atomic_write_text
    from midilm.score import save_midi

    def numbered(path: str, index: int) -> Path:
        p = Path(path)
        return p if len(scores) == 1 else p.with_name(f"{p.stem}-{index + 1}{p.suffix}")

    for index, score in enumerate(scores):
        target = numbered(output, index)
        save_midi(score, target)
        click.echo(f"wrote {target}")
        if audio_path:
            from midilm.render import render_audio

            render_audio(score, numbered(audio_path, index))
            click.echo(f"wrote {numbered(audio_path, index)}")
        if image_path:
            from midilm.render import render_pianoroll

            marks = highlight(score) if highlight is not None else None
            render_pianoroll(score, numbered(image_path, index), highlight=marks)
            click.echo(f"wrote {numbered(image_path, index)}")
    if save_tokens:
        atomic_write_text(Path(save_tokens), "\n".join(tokens) + "\n")
        click.echo(f"wrote {save_tokens}")


def _cli_words(message: str) -> str:
    """The API counts from 0; say so where a message quotes an index."""
    if "index" in message:
        return message + " (the command line numbers tracks and bars from 1)"
    return message


@click.command()
@click.option("--bars", type=click.IntRange(1, 1024), default=None,
              help="Bars to write (default: the model's, usually 8).")  # fmt: skip
@click.option("--instruments", metavar="LIST",
              help="GM names or numbers, comma-separated: piano,bass,drums.")  # fmt: skip
@click.option("--density", metavar="LIST",
              help="Per track (or one for all): low, medium, high or a bin number.")  # fmt: skip
@click.option("--prompt", "prompt", metavar="IN.mid", type=click.Path(dir_okay=False),
              help="Continue this MIDI file by --bars bars instead of composing.")  # fmt: skip
@click.option("--meter", metavar="N/D", help="Meter of a new piece (default: the model's first).")
@click.option("--tempo", type=click.FloatRange(10, 400), default=None,
              help="Tempo of a new piece in BPM (default 120).")  # fmt: skip
@_common
def generate(
    bars: int | None,
    instruments: str | None,
    density: str | None,
    prompt: str | None,
    meter: str | None,
    tempo: float | None,
    **options: Any,
) -> None:
    """Compose a new piece, or continue --prompt IN.mid.

    \b
    midilm generate -o song.mid --wav song.wav --png song.png
    midilm generate --bars 16 --instruments piano,bass,drums --density medium,low,high -o s.mid
    midilm generate --model bundled:remi --prompt in.mid --bars 4 -o out.mid
    """
    densities: Any = _split(density)
    if densities is not None and len(densities) == 1:
        densities = densities[0]

    def highlight(score: Any) -> list[int]:  # a continuation's new bars are its last ones
        total = _bars(score)
        return list(range(max(0, total - (bars or 0)), total)) if prompt else []

    _run("generate", {"bars": bars, "prompt": prompt, "instruments": _split(instruments),
                          "density": densities, "meter": meter, "tempo": tempo},
         highlight=highlight, **options)  # fmt: skip


@click.command()
@click.argument("source", metavar="IN.mid", type=click.Path(dir_okay=False))
@click.option("--track", "tracks", required=True, metavar="LIST",
              callback=_numbers_callback("track"),
              help="Track(s) to fill, from 1: 2 or 1,3 or 2-4.")  # fmt: skip
@click.option("--bars", "bars", required=True, metavar="LIST", callback=_numbers_callback("bar"),
              help="Bars to write anew, from 1: 3-4 or 2,5.")  # fmt: skip
@_common
def infill(source: str, tracks: list[int], bars: list[int], **options: Any) -> None:
    """Write chosen bars of chosen tracks anew; every other note stays as it is.

    \b
    midilm infill in.mid --track 2 --bars 3-4 -o out.mid
    """
    _run("infill", {"track": tracks, "bars": bars}, score_arg=source,
         highlight=lambda score: [(t, b) for t in tracks for b in bars], **options)  # fmt: skip


@click.command(name="add-track")
@click.argument("source", metavar="IN.mid", type=click.Path(dir_okay=False))
@click.option("--instrument", required=True, metavar="NAME",
              help="GM name or number of the new part: bass, strings, 33, drums…")  # fmt: skip
@click.option("--density", default=None, metavar="D",
              help="low, medium, high or a bin number (default: medium).")  # fmt: skip
@_common
def add_track(source: str, instrument: str, density: str | None, **options: Any) -> None:
    """Add a part that fits the existing ones.

    \b
    midilm add-track in.mid --instrument bass -o out.mid
    """
    value: int | str = int(instrument) if instrument.isdigit() else instrument
    _run("add_track", {"instrument": value, "density": density}, score_arg=source,
         highlight=lambda score: [(len(score.tracks) - 1, b) for b in range(_bars(score))],
         **options)  # fmt: skip


@click.command(name="regenerate-track")
@click.argument("source", metavar="IN.mid", type=click.Path(dir_okay=False))
@click.option(
    "--track", required=True, type=click.IntRange(min=1), help="Track to rewrite, from 1."
)
@click.option("--density", default=None, metavar="D",
              help="low, medium, high or a bin number (default: as busy as it was).")  # fmt: skip
@_common
def regenerate_track(source: str, track: int, density: str | None, **options: Any) -> None:
    """Write one part anew against the others (same instrument and name).

    \b
    midilm regenerate-track in.mid --track 2 -o out.mid
    """
    _run("regenerate_track", {"track": track - 1, "density": density}, score_arg=source,
         highlight=lambda score: [(track - 1, b) for b in range(_bars(score))],
         **options)  # fmt: skip


def _bars(score: Any) -> int:
    from midilm.score import bar_grid

    return len(bar_grid(score))
