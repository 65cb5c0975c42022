"""Regenerate the golden MMM token files under tests/golden/.

Run on purpose, when the format changes (and say so in the commit):
    python scripts/regenerate_golden.py
"""

from __future__ import annotations

import sys
from pathlib import Path

from midilm.score import import_music21
from midilm.tokenization.mmm import MMMTokenizer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from test_mmm import GOLDEN  # noqa: E402


def main() -> None:
    tok = MMMTokenizer(meter_tokens=True)
    out = ROOT / "tests" / "golden"
    out.mkdir(exist_ok=True)
    for spec in GOLDEN:
        stem = spec.split(":")[1].replace("/", "_").replace("#", "_")
        text = tok.encode_text(import_music21(spec))
        (out / f"{stem}.txt").write_text(text + "\n")
        print(f"{stem}.txt: {len(text.split())} tokens")


if __name__ == "__main__":
    main()
