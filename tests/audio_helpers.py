"""What the audio tests of every synthesizer measure: the same chorale, the same loudness
and brightness measures, the same short test score."""

from __future__ import annotations

import numpy as np
import pytest
from symusic import Note, Score, Track

from midilm.score import import_music21

CHORALE = "music21:bach/bwv66.6"
SR = 44_100
MAX_RELEASE_S = 2.0  # the longest a release may ring after the last note ends


@pytest.fixture(scope="module", name="chorale")
def chorale_fixture() -> Score:
    """Fixture ``chorale``: :data:`CHORALE` as a score (import it into a test module)."""
    return import_music21(CHORALE)


def rms(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))


def spectral_centroid_hz(audio: np.ndarray, sample_rate: int = SR) -> float:
    mono = audio.mean(axis=1)
    spectrum = np.abs(np.fft.rfft(mono))
    return float((spectrum * np.fft.rfftfreq(len(mono), 1 / sample_rate)).sum() / spectrum.sum())


def repeated(program: int, *, drum: bool = False, pitch: int = 60, velocity: int = 100) -> Score:
    """Eight eighth notes on one track, a quarter apart (120 qpm: the last ends at 3.75 s)."""
    score = Score(480)
    track = Track("t", program, drum)
    for i in range(8):
        track.notes.append(Note(i * 480, 240, pitch, velocity))
    score.tracks.append(track)
    return score
