"""SOURCE arguments of ``midilm prepare`` → one sorted list of items (midilm.data.sources)."""

from __future__ import annotations

import os

import pytest

from midilm.data.sources import SourceError, expand_sources
from midilm.score import music21_specs


def touch(path, data=b"MThd"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "corpus"
    for name in ("b.mid", "a.MID", "sub/c.midi", "sub/deeper/d.kar", "e.txt", "f.wav"):
        touch(root / name)
    touch(root / ".hidden.mid")
    touch(root / ".git" / "x.mid")
    return root


def test_a_folder_is_walked_recursively_for_midi_suffixes(corpus):
    items = expand_sources([corpus])
    names = [os.path.relpath(i, corpus) for i in items]
    assert names == ["a.MID", "b.mid", "sub/c.midi", "sub/deeper/d.kar"]
    assert items == sorted(items)


def test_relative_sources_stay_relative_and_normalized(corpus, monkeypatch):
    monkeypatch.chdir(corpus.parent)
    assert expand_sources(["./corpus//sub/"]) == ["corpus/sub/c.midi", "corpus/sub/deeper/d.kar"]


def test_the_same_file_reached_twice_is_one_item_and_order_of_sources_does_not_matter(
    corpus, monkeypatch
):
    monkeypatch.chdir(corpus.parent)
    one = expand_sources(["corpus/sub", "corpus/**/*.kar", "corpus/b.mid"])
    two = expand_sources(["corpus/b.mid", "corpus/sub"])
    assert one == two == ["corpus/b.mid", "corpus/sub/c.midi", "corpus/sub/deeper/d.kar"]


def test_a_glob_matches_score_files(corpus, monkeypatch):
    monkeypatch.chdir(corpus.parent)
    assert expand_sources(["corpus/*.mid"]) == ["corpus/b.mid"]  # hidden files skipped
    assert expand_sources(["corpus/**/*.mid*"]) == ["corpus/b.mid", "corpus/sub/c.midi"]


def test_a_list_file_names_paths_relative_to_itself(corpus, tmp_path):
    listing = tmp_path / "lists" / "files.txt"
    listing.parent.mkdir()
    listing.write_text(
        "# my selection\n\n../corpus/b.mid\n"
        f"{corpus / 'sub'}\n"  # a folder in a list is walked
        "../corpus/missing.mid\n"  # kept: rejected later as "missing", so counts add up
        "music21:bach/bwv66.6\n",
        encoding="utf-8",
    )
    items = expand_sources([listing])
    assert items == sorted(
        [
            str(tmp_path / "corpus/b.mid"),
            str(tmp_path / "corpus/missing.mid"),
            str(corpus / "sub/c.midi"),
            str(corpus / "sub/deeper/d.kar"),
            "music21:bach/bwv66.6",
        ]
    )


def test_a_bad_line_in_a_list_names_the_list_and_the_line(tmp_path):
    listing = tmp_path / "files.txt"
    listing.write_text("a.mid\nnot-there/\n", encoding="utf-8")
    with pytest.raises(SourceError, match=r"files\.txt, line 2: .*not-there"):
        expand_sources([listing])


def test_a_binary_file_is_neither_a_score_nor_a_list(tmp_path):
    blob = touch(tmp_path / "song.bin", b"MThd\x00\x00\x00\x06\xff\xfe")
    with pytest.raises(SourceError, match="MIDI file without a MIDI suffix"):
        expand_sources([blob])


def test_music21_collections_are_listed_without_parsing():
    items = expand_sources(["music21:bach"])
    assert items == sorted(music21_specs("music21:bach"))
    assert len(items) > 400
    assert expand_sources(["music21:bach/bwv66.6"]) == ["music21:bach/bwv66.6"]


@pytest.mark.parametrize(
    "source", ["nowhere/", "nowhere/*.mid", "music21:no-such-collection"], ids=str
)
def test_a_source_naming_nothing_is_an_error(source, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SourceError, match=r"nowhere|no-such"):
        expand_sources([source])


def test_an_empty_folder_is_an_error(tmp_path):
    with pytest.raises(SourceError, match="names no music file"):
        expand_sources([tmp_path])


def test_no_source_at_all_is_an_error():
    with pytest.raises(SourceError, match="no source"):
        expand_sources([])
    with pytest.raises(TypeError):
        expand_sources("corpus")  # type: ignore[arg-type]
