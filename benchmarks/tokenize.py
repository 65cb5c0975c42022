"""MMM codec throughput beside MidiTok's REMI, on the same real pieces, in one run.

    python benchmarks/tokenize.py [--pieces 360] [--repeats 3]

Pieces: the music21 corpus (Bach chorales, then string quartets and folk songs), converted
once and cached by midilm. Each codec encodes every piece and decodes its own output; the
best of ``--repeats`` passes counts. MidiTok runs with the seed's REMI settings (no BPE),
the way its documentation tokenizes a score. Target: MMM ≥ 3× MidiTok in both directions.
The last line is a JSON object with every figure.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is named like the standard library's ``tokenize``; run as a script, its folder
# comes first on sys.path and would shadow that module for everything imported below.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

from midilm.errors import MidilmError  # noqa: E402
from midilm.score import import_music21, music21_specs  # noqa: E402
from midilm.tokenization.mmm import MMMTokenizer  # noqa: E402
from midilm.tokenization.remi import REMIConfig  # noqa: E402

COLLECTIONS = (
    "music21:bach",
    "music21:beethoven",
    "music21:haydn",
    "music21:mozart",
    "music21:essenFolksong",
)


def load_pieces(count: int) -> list:
    """The first ``count`` pieces of the collections that import and that both codecs take."""
    tok = MMMTokenizer(meter_tokens=True)
    scores = []
    for collection in COLLECTIONS:
        for spec in music21_specs(collection):
            try:
                score = import_music21(spec)
                tok.encode(score)
            except MidilmError:
                continue  # unreadable by music21, or a meter the vocabulary lacks
            scores.append(score)
            if len(scores) == count:
                return scores
    return scores


def timed(fn, items: list) -> tuple[float, list]:
    start = time.perf_counter()
    out = [fn(x) for x in items]
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pieces", type=int, default=360)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    scores = load_pieces(args.pieces)
    notes = sum(s.note_num() for s in scores)
    mmm = MMMTokenizer(meter_tokens=True)
    import miditok

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MidiTok warns about settings it adjusts itself
        remi = miditok.REMI(REMIConfig().to_miditok())

    # Passes alternate between the codecs, so a busy machine slows both alike; best of each.
    mmm_enc = mmm_dec = remi_enc = remi_dec = float("inf")
    for _ in range(args.repeats):
        seconds, mmm_ids = timed(mmm.encode, scores)
        mmm_enc = min(mmm_enc, seconds)
        seconds, remi_seqs = timed(remi.encode, scores)
        remi_enc = min(remi_enc, seconds)
        mmm_dec = min(mmm_dec, timed(mmm.decode, mmm_ids)[0])
        remi_dec = min(remi_dec, timed(remi.decode, remi_seqs)[0])

    n = len(scores)
    rows = [("MMM (midilm)", mmm_enc, mmm_dec), ("REMI (MidiTok)", remi_enc, remi_dec)]
    print(f"{n} pieces, {notes} notes")
    print(
        f"{'codec':<16}{'encode pieces/s':>16}{'notes/s':>12}{'decode pieces/s':>17}{'notes/s':>12}"
    )
    for name, enc, dec in rows:
        print(f"{name:<16}{n / enc:>16.0f}{notes / enc:>12.0f}{n / dec:>17.0f}{notes / dec:>12.0f}")
    result = {
        "pieces": n,
        "notes": notes,
        "mmm_encode_pieces_per_s": round(n / mmm_enc, 1),
        "mmm_decode_pieces_per_s": round(n / mmm_dec, 1),
        "miditok_remi_encode_pieces_per_s": round(n / remi_enc, 1),
        "miditok_remi_decode_pieces_per_s": round(n / remi_dec, 1),
        "mmm_encode_notes_per_s": round(notes / mmm_enc),
        "mmm_decode_notes_per_s": round(notes / mmm_dec),
        "encode_speedup_vs_miditok": round(remi_enc / mmm_enc, 2),
        "decode_speedup_vs_miditok": round(remi_dec / mmm_dec, 2),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
