"""The four voices of chorale writing and their textbook ranges, shared by the sampler's
voice-leading guard and the evaluation that measures it (so the two cannot disagree)."""

from __future__ import annotations

__all__ = ["VOICES", "VOICE_RANGES"]

VOICES = ("soprano", "alto", "tenor", "bass")
VOICE_RANGES: dict[str, tuple[int, int]] = {
    "soprano": (60, 79),  # C4–G5
    "alto": (55, 74),  # G3–D5
    "tenor": (48, 67),  # C3–G4
    "bass": (40, 60),  # E2–C4
}
"""MIDI pitches, ends included (C4 = 60)."""
