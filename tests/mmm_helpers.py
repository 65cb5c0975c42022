"""Helpers shared by the MMM tests: notes as comparable tuples, scores built in the test,
and a reference decoder written plainly as the published decoders loop over tokens."""

from __future__ import annotations

from symusic import Note, Score, TimeSignature, Track

from midilm.score import quantize


def note_set(score, steps_per_quarter: int = 4) -> list[tuple]:
    """(program, is_drum, onset step, duration steps, pitch) of every note, on the grid,
    sorted: what a round trip must keep. ``INST=DRUMS`` carries no kit, so a drum track's
    program reads 0 (the GM standard kit)."""
    q = quantize(score, steps_per_quarter)
    out = []
    for track in q.tracks:
        for n in track.notes:
            program = 0 if track.is_drum else int(track.program)
            out.append((program, bool(track.is_drum), n.time, n.duration, n.pitch))
    return sorted(out)


def make_score(tracks, tpq: int = 4, meters=((0, 4, 4),)) -> Score:
    """``tracks``: [(program, is_drum, [(onset, duration, pitch), ...]), ...] in ticks."""
    score = Score(tpq)
    for tick, num, den in meters:
        score.time_signatures.append(TimeSignature(tick, num, den))
    for program, is_drum, notes in tracks:
        track = Track("t", program, is_drum)
        for onset, duration, pitch in notes:
            track.notes.append(Note(onset, duration, pitch, 90))
        score.tracks.append(track)
    return score


def reference_decode(text: str, bar_steps: int = 16, default_steps: int = 4) -> list[tuple]:
    """A plain token loop (one meter, no fills): (track, onset, end, pitch) of every note."""
    notes = []
    track = -1
    bar = -1
    time = 0
    open_notes: dict[int, list[int]] = {}
    track_end = 0

    def close_track() -> None:
        for stack in open_notes.values():
            for i in stack:
                t, onset, _, pitch = notes[i]
                notes[i] = (t, onset, min(onset + default_steps, max(track_end, onset + 1)), pitch)
        open_notes.clear()

    for token in text.split():
        name, _, value = token.partition("=")
        if name == "TRACK_START":
            track, bar, time = track + 1, -1, 0
            track_end = 0
        elif name == "BAR_START":
            bar += 1
            time = bar * bar_steps
            track_end = (bar + 1) * bar_steps
        elif name == "TIME_DELTA":
            time += int(float(value))
        elif name == "NOTE_ON":
            open_notes.setdefault(int(value), []).append(len(notes))
            notes.append((track, time, None, int(value)))
        elif name == "NOTE_OFF":
            stack = open_notes.get(int(value))
            if stack:
                i = stack.pop()
                t, onset, _, pitch = notes[i]
                notes[i] = (t, onset, time, pitch)
        elif name == "TRACK_END":
            close_track()
    close_track()
    return sorted(n for n in notes if n[2] > n[1])


def published_vocabulary(folder, texts: list[str]):
    """A vocabulary learned from data as the published trainer did (WordLevelTrainer: ids by
    frequency, only seen tokens), saved as ``folder/tokenizer.json`` without midilm.json."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    hf = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    hf.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = trainers.WordLevelTrainer(
        special_tokens=["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]
    )
    hf.train_from_iterator(texts, trainer)
    hf.save(str(folder / "tokenizer.json"))
    return hf
