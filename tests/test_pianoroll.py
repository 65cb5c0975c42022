"""Piano-roll pictures of real scores: the image has the size asked for, each track is drawn
in its own colour (counted pixel by pixel: notes are drawn without anti-aliasing), drums sit
in their own lane below, highlighted bars are where they should be, meters come from the bar
grid, SVG is well-formed XML, and bad requests are clear errors."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image
from symusic import Note, Score, TimeSignature, Track

import midilm
from midilm.errors import ConfigError
from midilm.render import UnsupportedFormatError, pianoroll_bytes, render_pianoroll, track_color
from midilm.render.pianoroll import HIGHLIGHT_COLOR, TRACK_COLORS
from midilm.score import bar_grid, import_music21, program_name

CHORALE = "music21:bach/bwv66.6"
METER_CHANGES = "music21:bach/bwv171.6"  # 4/4, then 3/4, 2/4 and 4/4 again


@pytest.fixture(scope="module")
def chorale() -> Score:
    return import_music21(CHORALE)


def pixels(png: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    return np.asarray(image.convert("RGB"))


def rgb(hex_color: str) -> np.ndarray:
    return np.array([int(hex_color[i : i + 2], 16) for i in (1, 3, 5)], dtype=np.uint8)


def mask(image: np.ndarray, hex_color: str) -> np.ndarray:
    return np.all(image == rgb(hex_color), axis=2)


def with_drums(score: Score) -> Score:
    """The score plus a kick/snare/hat track over all its bars."""
    out = score.copy()
    drums = Track("Kit", 0, True)
    quarter = int(score.ticks_per_quarter)
    for i in range(int(score.end() // quarter)):
        drums.notes.append(Note(i * quarter, quarter // 2, (36, 42, 38, 42)[i % 4], 100))
    out.tracks.append(drums)
    return out


def test_png_has_the_size_asked_for(chorale):
    image = Image.open(io.BytesIO(pianoroll_bytes(chorale, width_px=900, height_px=420)))
    assert image.format == "PNG" and image.size == (900, 420)
    default = Image.open(io.BytesIO(pianoroll_bytes(chorale)))
    assert default.size[0] == 1600 and 250 <= default.size[1] <= 900


def test_each_track_has_its_own_colour(chorale):
    image = pixels(pianoroll_bytes(chorale, width_px=1200, height_px=500))
    plot = image[80:]  # below the legend
    counts = [int(mask(plot, track_color(i)).sum()) for i in range(len(chorale.tracks))]
    assert all(count > 500 for count in counts), counts  # every voice's notes are drawn
    assert len({track_color(i) for i in range(len(chorale.tracks))}) == len(chorale.tracks)
    unused = TRACK_COLORS[len(chorale.tracks) :]
    assert all(not mask(image, color).any() for color in unused)


def test_notes_sit_at_their_pitches(chorale):
    """The soprano is drawn above the bass."""
    image = pixels(pianoroll_bytes(chorale, width_px=1200, height_px=500))
    soprano_rows = np.nonzero(mask(image[80:], track_color(0)))[0]
    bass_rows = np.nonzero(mask(image[80:], track_color(3)))[0]
    assert np.median(soprano_rows) < np.median(bass_rows)


def test_drums_have_their_own_lane_below(chorale):
    band = with_drums(chorale)
    image = pixels(pianoroll_bytes(band, width_px=1200))[80:]
    drum_rows = np.nonzero(mask(image, track_color(4)))[0]
    melodic_rows = np.concatenate([np.nonzero(mask(image, track_color(i)))[0] for i in range(4)])
    assert len(drum_rows) > 200
    assert drum_rows.min() > melodic_rows.max()


def test_legend_names_instruments(chorale):
    svg = pianoroll_bytes(with_drums(chorale), "svg").decode()
    for track in chorale.tracks:
        assert program_name(track.program) in svg
    assert "drums" in svg and "Bass Drum" in svg and "Closed Hi-Hat" in svg


def test_highlight_marks_the_bars_asked_for(chorale):
    bars = bar_grid(chorale)
    plain = pixels(pianoroll_bytes(chorale, width_px=1200, height_px=400))
    assert not mask(plain, HIGHLIGHT_COLOR).any()

    def columns(marks: list) -> np.ndarray:
        image = pixels(pianoroll_bytes(chorale, width_px=1200, height_px=400, highlight=marks))
        return np.nonzero(mask(image, HIGHLIGHT_COLOR).any(axis=0))[0]

    second, sixth, both = columns([1]), columns([5]), columns([1, 5])
    bar_px = (sixth.min() - second.min()) / 4  # four bars later, all 4/4
    assert 0.85 * 1200 / len(bars) < bar_px < 1200 / len(bars)  # bars share the plot's width
    for span in (second, sixth):  # a bar wide, less the bar lines drawn over its edges
        assert bar_px - 4 <= span.max() - span.min() + 1 <= bar_px + 1
    assert len(both) == len(second) + len(sixth)
    # One track's bar: only that track's pitch band, not the whole column.
    image = pixels(pianoroll_bytes(chorale, width_px=1200, height_px=400, highlight=[(0, 2)]))
    rows = np.nonzero(mask(image, HIGHLIGHT_COLOR).any(axis=1))[0]
    whole_bar = pixels(pianoroll_bytes(chorale, width_px=1200, height_px=400, highlight=[2]))
    all_rows = np.nonzero(mask(whole_bar, HIGHLIGHT_COLOR).any(axis=1))[0]
    assert 0 < len(rows) < 0.7 * len(all_rows)


def test_bar_numbers_follow_the_meter():
    """A chorale that changes meter: bar lines and numbers from the bar grid."""
    score = import_music21(METER_CHANGES)
    bars = bar_grid(score)
    meters = {str(b.meter) for b in bars}
    assert len(meters) > 1
    root = ET.fromstring(pianoroll_bytes(score, "svg", width_px=4000))
    texts = {"".join(t.itertext()).strip() for t in root.iter("{http://www.w3.org/2000/svg}text")}
    assert meters <= texts  # each meter is written where it starts
    assert {str(i) for i in range(1, len(bars) + 1)} <= texts  # every bar numbered
    assert str(len(bars) + 1) not in texts


def test_svg_is_well_formed(chorale, tmp_path):
    path = render_pianoroll(chorale, tmp_path / "roll.svg", width_px=1000, height_px=300)
    root = ET.parse(path).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert root.get("width") == "720pt" and root.get("height") == "216pt"  # 1000×300 px at 100 dpi


def test_render_pianoroll_writes_atomically(chorale, tmp_path):
    path = tmp_path / "roll.png"
    assert midilm.render_pianoroll(chorale, path) == path
    with Image.open(path) as image:
        assert image.format == "PNG"
    path.write_bytes(b"old")
    with pytest.raises(ConfigError):
        render_pianoroll(chorale, path, highlight=[99])
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["roll.png"]


def test_scores_without_melody_or_notes():
    drums_only = with_drums(Score(480))
    drums_only.tracks[0].notes.extend([Note(i * 480, 240, 36, 100) for i in range(8)])
    image = pixels(pianoroll_bytes(drums_only, width_px=600))
    assert mask(image, track_color(0)).sum() > 50
    empty = Score(480)
    empty.time_signatures.append(TimeSignature(0, 3, 4))
    assert pixels(pianoroll_bytes(empty, width_px=600)).shape[1] == 600


def test_many_tracks_get_distinct_colours():
    colors = [track_color(i) for i in range(40)]
    assert len(set(colors)) == 40 and HIGHLIGHT_COLOR not in colors


def test_bad_requests(chorale, tmp_path):
    with pytest.raises(UnsupportedFormatError, match=r"\.png \.svg"):
        render_pianoroll(chorale, tmp_path / "roll.jpg")
    with pytest.raises(UnsupportedFormatError):
        pianoroll_bytes(chorale, "gif")
    n_bars = len(bar_grid(chorale))
    with pytest.raises(ConfigError, match=f"bar {n_bars + 1} counting from 1"):
        pianoroll_bytes(chorale, highlight=[n_bars])
    with pytest.raises(ConfigError, match="track 5 counting from 1"):
        pianoroll_bytes(chorale, highlight=[(4, 0)])
    with pytest.raises(ConfigError, match="bar numbers or"):
        pianoroll_bytes(chorale, highlight=["3"])
    with pytest.raises(ConfigError, match="width_px"):
        pianoroll_bytes(chorale, width_px=10)
    with pytest.raises(TypeError, match="symusic Score"):
        pianoroll_bytes(b"MThd")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []
