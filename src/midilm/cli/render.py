"""``midilm render FILE --audio OUT.wav --image OUT.png``: hear and see a score.

A thin layer over :func:`midilm.render.render_audio` and
:func:`midilm.render.render_pianoroll`; bars and tracks are numbered from 1 here, from 0 in
Python.
"""

from __future__ import annotations

import re

import click

_HIGHLIGHT_ITEM = re.compile(r"^(?:(\d+):)?(\d+)(?:-(\d+))?$")


def parse_highlight(text: str) -> list[int | tuple[int, int]]:
    """``"3-4"`` → bars ``[2, 3]``; ``"2:5"`` → ``[(1, 4)]`` (track 2, bar 5); items joined
    by commas. Input numbers count from 1, output indices from 0."""
    marks: list[int | tuple[int, int]] = []
    for raw in text.split(","):
        item = raw.strip().replace(" ", "")
        match = _HIGHLIGHT_ITEM.match(item)
        if not match:
            raise ValueError(
                f"{raw.strip()!r} is not a bar (5), a range (3-4) or a track's bars (2:3-4)"
            )
        track_text, first_text, last_text = match.groups()
        first = int(first_text)
        last = int(last_text) if last_text else first
        if first < 1 or last < first:
            raise ValueError(f"{item!r}: bars are numbered from 1, a range goes up (3-4)")
        if track_text is not None and int(track_text) < 1:
            raise ValueError(f"{item!r}: tracks are numbered from 1")
        for bar in range(first - 1, last):
            marks.append(bar if track_text is None else (int(track_text) - 1, bar))
    return marks


def _highlight_option(ctx: click.Context, param: click.Parameter, value: str | None) -> object:
    del ctx
    if value is None:
        return None
    try:
        return parse_highlight(value)
    except ValueError as err:
        raise click.BadParameter(str(err), param=param) from None


@click.command()
@click.argument("source", metavar="FILE")
@click.option(
    "--audio", "--wav", "audio_path", metavar="PATH",
    help="Write audio here: .wav, .flac, .ogg or .mp3 (by extension).",
)  # fmt: skip
@click.option(
    "--image", "--png", "image_path", metavar="PATH",
    help="Write a piano roll here: .png or .svg (by extension).",
)  # fmt: skip
@click.option(
    "--soundfont", metavar="PATH",
    help="General MIDI soundfont (.sf2/.sf3). Default: $MIDILM_SOUNDFONT, else a system "
    "one (FluidR3_GM…), else TimGM6mb from pretty_midi.",
)  # fmt: skip
@click.option(
    "--sample-rate", type=click.IntRange(8_000, 96_000), default=44_100, show_default=True,
    help="Audio sample rate in Hz.",
)  # fmt: skip
@click.option(
    "--synthesizer", type=click.Choice(["auto", "fluidsynth", "rustysynth", "symusic"]),
    default="auto", show_default=True, help="auto is FluidSynth when its library is "
    "installed, else rustysynth (installed with midilm, no system library); symusic's "
    "synthesizer ignores velocities.",
)  # fmt: skip
@click.option(
    "--highlight", metavar="BARS", callback=_highlight_option,
    help="Bars to highlight in the piano roll, from 1: '3-4', '2,5', or a track's bars "
    "'2:3-4' (track 2).",
)  # fmt: skip
@click.option("--width", type=click.IntRange(min=200), default=1600, show_default=True,
              help="Piano-roll width in pixels.")  # fmt: skip
@click.option("--height", type=click.IntRange(min=100), default=None,
              help="Piano-roll height in pixels (default: fits the pitch range).")  # fmt: skip
@click.option("--title", default=None, help="Title above the piano roll.")
def render(
    source: str,
    audio_path: str | None,
    image_path: str | None,
    soundfont: str | None,
    sample_rate: int,
    synthesizer: str,
    highlight: list[int | tuple[int, int]] | None,
    width: int,
    height: int | None,
    title: str | None,
) -> None:
    """Render a score to audio (through a General MIDI soundfont) and/or a piano roll.

    FILE is a MIDI file, a MusicXML, kern or abc file, or a music21 corpus work such as
    music21:bach/bwv66.6. Each file written is reported on one line.
    """
    if audio_path is None and image_path is None:
        raise click.UsageError("nothing to render: give --audio OUT.wav and/or --image OUT.png")
    from midilm.render import (
        audio_format,
        find_soundfont,
        fluidsynth_version,
        image_format,
        render_pianoroll,
        resolve_synthesizer,
        rustysynth_version,
        synthesize,
        write_audio,
    )
    from midilm.score import load_score

    # Everything that can be checked before the work is done is checked first.
    font = None
    engine = resolve_synthesizer(synthesizer)  # type: ignore[arg-type]
    if audio_path is not None:
        audio_format(audio_path)
        font = find_soundfont(soundfont, sf2_only=engine == "rustysynth")
    if image_path is not None:
        image_format(image_path)
    score = load_score(source)

    if image_path is not None:
        render_pianoroll(
            score, image_path, highlight=highlight, width_px=width, height_px=height, title=title
        )
        click.echo(f"wrote {image_path}")
    if audio_path is not None and font is not None:
        audio = synthesize(
            score,
            soundfont=font,
            sample_rate=sample_rate,
            synthesizer=engine,
        )
        write_audio(audio, sample_rate, audio_path)
        played_by = {
            "fluidsynth": f"FluidSynth {fluidsynth_version()}",
            "rustysynth": f"rustysynth (midirenderer {rustysynth_version()})",
            "symusic": "symusic",
        }[engine]
        seconds = len(audio) / sample_rate
        click.echo(f"wrote {audio_path} ({seconds:.1f} s, {played_by}, {font.name})")
