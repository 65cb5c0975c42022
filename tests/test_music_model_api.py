"""The sampling API users call on a loaded model: ``generate`` (compose or continue),
``infill``, ``add_track``, ``regenerate_track``, ``stream`` — with a tiny model trained on
real chorales. Outputs are the user's own score with only the new notes added."""

from __future__ import annotations

import pytest

from midilm import MusicModel
from midilm.errors import GenerationRequestError, InvalidMidiError
from midilm.score import bar_grid, save_midi
from midilm.tokenization.mmm import MMMTokenizer
from midilm.tokenization.remi import REMITokenizer
from sampling_helpers import INFILL_TRAINED, tiny_mmm, train_tiny


@pytest.fixture(scope="module")
def tok(bach_scores) -> MMMTokenizer:
    return tiny_mmm(bach_scores)[1]


@pytest.fixture(scope="module")
def model(bach_scores) -> MusicModel:
    network, tok = tiny_mmm(bach_scores)
    return MusicModel(network, tok, info=INFILL_TRAINED)


@pytest.fixture(scope="module")
def chorale(bach_scores):
    return bach_scores[6][1]


def _notes(track) -> list[tuple[int, int, int, int]]:
    a = track.notes.numpy()
    return sorted(zip(*(a[k].tolist() for k in ("time", "duration", "pitch", "velocity")),
                      strict=True))  # fmt: skip


def _bar_of(score, bars, tick: int) -> int:
    return next(b.index for b in bars if b.start_ticks <= tick < b.end_ticks)


@pytest.mark.parametrize("seed", range(20))
def test_compose_is_well_formed_at_high_temperature(model, tok, seed):
    events = list(model.stream("generate", bars=4, instruments=["piano", "bass", "drums"],
                               density=["low", 3, "high"], temperature=2.0, seed=seed))  # fmt: skip
    done = events[-1]
    assert [e.kind for e in events] == ["bar"] * 4 + ["done"]
    assert [e.done for e in events[:-1]] == [1, 2, 3, 4]
    (score,) = done.result
    assert [(t.program, t.is_drum) for t in score.tracks] == [(0, False), (33, False), (0, True)]
    (text,) = done.tokens
    ids = tok.text_to_ids(text)
    assert tok.grammar(bars=4).check(ids) == []
    written = [int(t.split("=")[1]) for t in text.split() if t.startswith("DENSITY=")]
    bins = tok.config.density_bins
    assert written[0] < bins // 3 and written[1] == 3 and written[2] >= 2 * bins // 3
    bar_ticks = 4 * score.ticks_per_quarter
    assert max(n.end for t in score.tracks for n in t.notes) <= 4 * bar_ticks


def test_same_seed_same_music_and_samples_differ(model):
    first = model.generate(bars=2, instruments=[0, 40], seed=7, num_samples=2)
    again = model.generate(bars=2, instruments=[0, 40], seed=7, num_samples=2)
    assert isinstance(first, list) and len(first) == 2
    assert [_notes(t) for s in first for t in s.tracks] == [
        _notes(t) for s in again for t in s.tracks
    ]
    assert [_notes(t) for t in first[0].tracks] != [_notes(t) for t in first[1].tracks]


def test_thirty_two_bars_from_a_four_bar_model(model, tok):
    score = model.generate(bars=32, instruments=["piano"], seed=3)
    ends = [n.end for n in score.tracks[0].notes]
    bar_ticks = 4 * score.ticks_per_quarter
    assert max(ends) <= 32 * bar_ticks
    assert min(n.time for n in score.tracks[0].notes if n.time >= 24 * bar_ticks) >= 24 * bar_ticks


def test_continuation_keeps_the_prompt_and_adds_bars(model, chorale):
    out = model.generate(prompt=chorale, bars=3, seed=1)
    prompt_bars = bar_grid(chorale)
    end = prompt_bars[-1].end_ticks
    assert [(t.name, t.program) for t in out.tracks] == [
        (t.name, t.program) for t in chorale.tracks
    ]
    assert [(t.time, t.qpm) for t in out.tempos] == [(t.time, t.qpm) for t in chorale.tempos]
    assert [(t.time, t.numerator, t.denominator) for t in out.time_signatures] == [
        (t.time, t.numerator, t.denominator) for t in chorale.time_signatures
    ]
    added = 0
    for before, after in zip(chorale.tracks, out.tracks, strict=True):
        old = _notes(before)
        new = _notes(after)
        assert [n for n in new if n[0] < end] == old
        added += len(new) - len(old)
        bar = prompt_bars[-1].length_ticks
        assert all(end <= n[0] < end + 3 * bar for n in new if n[0] >= end)
    assert added > 0


def test_infill_leaves_every_other_note_identical(model, chorale, tok):
    bars = bar_grid(chorale)
    out = model.infill(chorale, track=[0, 2], bars=[1, 5], seed=2)
    for index, (before, after) in enumerate(zip(chorale.tracks, out.tracks, strict=True)):

        def outside(notes, index=index):
            if index not in (0, 2):
                return notes
            return [n for n in notes if _bar_of(chorale, bars, n[0]) not in (1, 5)]

        assert outside(_notes(after)) == outside(_notes(before))
    assert [t.name for t in out.tracks] == [t.name for t in chorale.tracks]


def test_add_track_keeps_the_original_tracks(model, chorale):
    out = model.add_track(chorale, instrument="acoustic_bass", density="medium", seed=4)
    assert len(out.tracks) == len(chorale.tracks) + 1
    for before, after in zip(chorale.tracks, out.tracks, strict=False):
        assert _notes(before) == _notes(after)
    assert out.tracks[-1].program == 32 and len(out.tracks[-1].notes) > 0


def test_regenerate_track_rewrites_one_part_only(model, chorale):
    out = model.regenerate_track(chorale, track=1, seed=5)
    for index, (before, after) in enumerate(zip(chorale.tracks, out.tracks, strict=True)):
        assert (before.name, before.program) == (after.name, after.program)
        if index != 1:
            assert _notes(before) == _notes(after)
    assert _notes(out.tracks[1]) != _notes(chorale.tracks[1])


def test_prompt_from_a_midi_file_and_bad_bytes(model, chorale, tmp_path):
    path = tmp_path / "prompt.mid"
    save_midi(chorale, path)
    out = model.generate(prompt=str(path), bars=1, seed=0)
    assert len(out.tracks) == len(chorale.tracks)
    with pytest.raises(InvalidMidiError):
        model.generate(prompt=b"not a midi file", bars=1)


def test_streaming_stops_when_the_consumer_stops(model):
    events = model.stream("generate", bars=16, instruments=["piano"], seed=0)
    first = next(events)
    assert first.kind == "bar" and first.total == 16 and first.result is not None
    events.close()  # no more windows are sampled
    assert list(events) == []


@pytest.mark.parametrize(
    ("call", "field", "words"),
    [
        (lambda m, s: m.generate(instruments=["pianoo"]), "instruments", "piano"),
        (lambda m, s: m.generate(bars=0), "bars", "1–"),
        (
            lambda m, s: m.generate(density=["high", "extreme"], instruments=[0, 1]),
            "density",
            "low",
        ),
        (lambda m, s: m.generate(density=99), "density", "0–"),
        (lambda m, s: m.generate(instruments=[0], density=[1, 2]), "density", "one per track"),
        (lambda m, s: m.generate(meter="15/16"), "meter", "4/4"),
        (lambda m, s: m.generate(temperature=-1), "temperature", "≥ 0"),
        (lambda m, s: m.generate(num_samples=0), "num_samples", "1–"),
        (lambda m, s: m.infill(s, track=9, bars=[0]), "track", "outside"),
        (lambda m, s: m.infill(s, track=0, bars=[400]), "bars", "outside"),
        (lambda m, s: m.add_track(s, instrument="kazoo"), "instrument", "kazoo"),
        (lambda m, s: m.stream("sing"), "task", "generate"),
    ],
)
def test_bad_arguments_are_clear_errors(model, chorale, call, field, words):
    with pytest.raises(GenerationRequestError) as caught:
        call(model, chorale)
    assert caught.value.field == field
    assert words in str(caught.value)


def test_infill_needs_a_model_trained_for_it(model, chorale):
    plain = MusicModel(
        model.model, model.tokenizer, info={"dataset": {"settings": {"infill_share": 0.0}}}
    )
    assert not plain.supports_infill and model.supports_infill
    with pytest.raises(GenerationRequestError, match="infill examples") as caught:
        plain.infill(chorale, track=0, bars=[1])
    assert caught.value.field == "model"
    assert "infill" not in plain.capabilities()["tasks"]


def test_capabilities_describe_the_model(model, tok):
    caps = model.capabilities()
    assert caps["kind"] == "mmm" and caps["infill"] is True
    assert caps["bars_per_window"] == tok.config.bars_per_window
    assert caps["density_bins"] == tok.config.density_bins
    names = {i["name"] for i in caps["instruments"]}
    assert {"acoustic_grand_piano", "drums"} <= names


@pytest.fixture(scope="module")
def remi_model(bach_scores) -> MusicModel:
    remi = REMITokenizer.train([s for _, s in bach_scores[:30]], vocab_size=300)
    sequences = []
    for _, score in bach_scores[:30]:
        ids = remi.encode(score)
        sequences += [[remi.bos_id, *ids[i : i + 200]] for i in range(0, len(ids), 150)]
    return MusicModel(train_tiny(sequences, remi.vocab_size, remi.pad_id), remi)


def test_remi_continues_a_prompt_and_composes(remi_model, chorale):
    out = remi_model.generate(prompt=chorale, bars=2, seed=0)
    assert sum(len(t.notes) for t in out.tracks) > sum(len(t.notes) for t in chorale.tracks)
    for before, after in zip(chorale.tracks, out.tracks, strict=True):
        old = _notes(before)
        assert [n for n in _notes(after) if n in old] == old
    new = remi_model.generate(bars=2, seed=1, tempo=90)
    assert len(new.tracks) == 1 and len(new.tracks[0].notes) > 0 and round(new.tempos[0].qpm) == 90
    with pytest.raises(GenerationRequestError) as caught:
        remi_model.generate(instruments=["bass"])
    assert caught.value.field == "instruments"
    with pytest.raises(GenerationRequestError):
        remi_model.add_track(chorale, instrument="bass")
