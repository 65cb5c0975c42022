"""The ``midilm`` command on real chorales: ``info``, ``tokenize`` and ``detokenize`` against
the library, and the error contract (one ``error: …`` line on stderr, exit code 2, no
traceback) through click's ``CliRunner`` and through the installed console script.

``CliRunner().invoke(cli, …)`` runs ``MidilmGroup.main`` in standalone mode, which is where
the error translation lives: the same code path as the console script, whose own runs by
subprocess below prove it.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import midilm
from midilm.cli.main import cli
from midilm.score import describe, format_info, load_midi, save_midi
from midilm.score.music21_import import MUSIC21_PREFIX
from midilm.tokenization.mmm import MMMTokenizer
from midilm.tokenization.remi import REMITokenizer

CHORALE = "music21:bach/bwv66.6"


# ---------------------------------------------------------------------- helpers


def invoke(*args: object, stdin: str | bytes | None = None) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], input=stdin)


def assert_ok(result: Result) -> None:
    assert result.exit_code == 0, (result.stderr, result.exception)


def assert_error(result: Result, *fragments: str) -> str:
    """Exit code 2, nothing on stdout, exactly one ``error: …`` line on stderr."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def tracks_notes(score) -> list[tuple[int, bool, list[tuple[int, int, int]]]]:
    """(program, is_drum, sorted (onset, duration, pitch)) of every track, in ticks."""
    return [
        (
            int(track.program),
            bool(track.is_drum),
            sorted((n.time, n.duration, n.pitch) for n in track.notes),
        )
        for track in score.tracks
    ]


def midi_name(spec: str) -> str:
    """The file name ``midi_dir`` gives a work (see conftest)."""
    return re.sub(r"[^A-Za-z0-9.]+", "_", spec[len(MUSIC21_PREFIX) :]) + ".mid"


def is_4_4(score) -> bool:
    return all((ts.numerator, ts.denominator) == (4, 4) for ts in score.time_signatures)


@pytest.fixture(scope="module")
def chorale_file(midi_dir, bach_scores) -> Path:
    """A real 4/4 chorale as a .mid file."""
    spec = next(spec for spec, score in bach_scores[:20] if is_4_4(score))
    return midi_dir / midi_name(spec)


@pytest.fixture(scope="module")
def triple_file(tmp_path_factory, other_meter_scores) -> Path:
    """A real piece in 3/4 from its first bar, as a .mid file."""
    for spec, score in other_meter_scores:
        first = min(score.time_signatures, key=lambda ts: ts.time)
        if (first.numerator, first.denominator) == (3, 4):
            path = tmp_path_factory.mktemp("triple") / midi_name(spec)
            save_midi(score, path)
            return path
    raise AssertionError("the corpus fixture should hold a piece in 3/4")


@pytest.fixture(scope="module")
def midilm_script() -> Path:
    """The installed console script (``pip install -e .`` puts it beside the interpreter)."""
    script = Path(sys.executable).parent / "midilm"
    if not script.is_file():
        found = shutil.which("midilm")
        assert found, "the midilm console script is not installed (pip install -e .)"
        script = Path(found)
    return script


def run_script(script: Path, *args: object, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(script), *map(str, args)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        **kwargs,
    )


# ---------------------------------------------------------------------- the group


def test_version():
    result = invoke("--version")
    assert_ok(result)
    assert result.stdout == f"midilm {midilm.__version__}\n"


def test_help_lists_the_commands_and_each_has_help():
    result = invoke("--help")
    assert_ok(result)
    for name in ("info", "tokenize", "detokenize"):
        assert name in result.stdout
        assert_ok(invoke(name, "--help"))
    assert "OUT_1.mid" in invoke("detokenize", "--help").stdout


def test_no_command_shows_the_help_as_a_usage_error():
    result = invoke()
    assert result.exit_code == 2
    assert "Commands:" in result.stderr
    assert result.stdout == ""


def test_importing_the_command_stays_light():
    code = (
        "import sys, midilm.cli.main\n"
        "heavy = {'symusic', 'miditok', 'music21', 'numpy', 'torch', 'transformers'}\n"
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------------- info


def test_info_on_a_music21_work():
    from midilm.score import load_score

    result = invoke("info", CHORALE)
    assert_ok(result)
    expected = describe(load_score(CHORALE))
    assert result.stdout == format_info(expected) + "\n"
    # Known facts about the chorale, read off the printed text.
    assert re.search(r"^length\s+10 bars, 163 notes,", result.stdout, re.M)
    assert re.search(r"^tracks\s+4$", result.stdout, re.M)
    assert re.search(r"^\s+1\s+Soprano\s+choir_aahs \(52\)\s+36 notes", result.stdout, re.M)
    assert (expected.bar_count, expected.note_count, len(expected.tracks)) == (10, 163, 4)


def test_info_on_a_midi_file(midi_dir):
    for path in sorted(midi_dir.glob("*.mid"))[:6]:
        result = invoke("info", path)
        assert_ok(result)
        expected = describe(load_midi(path))
        assert result.stdout == format_info(expected) + "\n"
        length = re.search(r"^length\s+(\d+) bars, (\d+) notes", result.stdout, re.M)
        assert (int(length[1]), int(length[2])) == (expected.bar_count, expected.note_count)
        assert re.search(rf"^tracks\s+{len(expected.tracks)}$", result.stdout, re.M)
        # Tracks are numbered from 1.
        numbers = re.findall(r"^\s+(\d+)\s{2}", result.stdout, re.M)
        assert numbers == [str(i) for i in range(1, len(expected.tracks) + 1)]


def test_info_json(chorale_file):
    result = invoke("info", "--json", chorale_file)
    assert_ok(result)
    data = json.loads(result.stdout)
    expected = describe(load_midi(chorale_file))
    assert data == json.loads(json.dumps(dataclasses.asdict(expected)))
    assert data["bar_count"] == expected.bar_count
    assert data["note_count"] == sum(t["note_count"] for t in data["tracks"])


# ---------------------------------------------------------------------- tokenize / detokenize


def test_tokenize_prints_the_mmm_text_on_one_line(chorale_file):
    result = invoke("tokenize", chorale_file)
    assert_ok(result)
    assert result.stdout == MMMTokenizer().encode_text(load_midi(chorale_file)) + "\n"
    assert result.stderr == ""


def test_tokenize_then_detokenize_keeps_the_notes(tmp_path, chorale_file):
    tokens = tmp_path / "tokens.txt"
    out = tmp_path / "out.mid"
    assert_ok(invoke("tokenize", chorale_file, "-o", tokens))
    assert_ok(result := invoke("detokenize", tokens, "-o", out))
    assert (result.stdout, result.stderr) == ("", "")  # quiet without -v
    text = tokens.read_text()
    assert text.count("\n") == 1
    written = load_midi(out)
    assert tracks_notes(written) == tracks_notes(MMMTokenizer().decode(text))
    original = describe(load_midi(chorale_file))
    assert describe(written).note_count == original.note_count
    assert len(written.tracks) == len(original.tracks)


def test_ids_round_trip_with_meter_tokens(tmp_path, triple_file):
    result = invoke("tokenize", "--meter-tokens", "--ids", triple_file)
    assert_ok(result)
    tok = MMMTokenizer(meter_tokens=True)
    ids = [int(x) for x in result.stdout.split()]
    assert ids == tok.encode(load_midi(triple_file))
    tokens = tmp_path / "ids.txt"
    tokens.write_text(result.stdout)
    out = tmp_path / "out.mid"
    assert_ok(invoke("detokenize", "--meter-tokens", tokens, "-o", out))
    written = load_midi(out)
    assert tracks_notes(written) == tracks_notes(tok.decode(ids))
    meters = {(ts.numerator, ts.denominator) for ts in written.time_signatures}
    assert (3, 4) in meters


def test_a_3_4_piece_needs_meter_tokens(triple_file):
    line = assert_error(invoke("tokenize", triple_file), "meter_tokens", "--meter-tokens")
    assert "3/4" in line
    assert triple_file.name in line


def test_remi_tokens_and_ids(tmp_path, chorale_file):
    score = load_midi(chorale_file)
    remi = REMITokenizer()
    result = invoke("tokenize", "--tokenizer", "remi", chorale_file)
    assert_ok(result)
    assert result.stdout.split() == remi.encode_tokens(score)
    ids_result = invoke("tokenize", "--tokenizer", "remi", "--ids", chorale_file)
    assert_ok(ids_result)
    ids = [int(x) for x in ids_result.stdout.split()]
    assert ids == remi.encode(score)
    # Both spellings decode to the same notes as the library.
    for name, text in (("names", result.stdout), ("ids", ids_result.stdout)):
        (tmp_path / f"{name}.txt").write_text(text)
        out = tmp_path / f"{name}.mid"
        assert_ok(invoke("detokenize", "--tokenizer", "remi", tmp_path / f"{name}.txt", "-o", out))
        # Byte for byte what the library writes: REMI merges voices into one track, where
        # two notes of one pitch may overlap and MIDI cannot say which note-off is whose.
        assert out.read_bytes() == bytes(remi.decode(ids).dumps_midi())


def test_saved_tokenizer_directories(tmp_path, bach_scores, triple_file):
    mmm_dir = tmp_path / "mmm"
    MMMTokenizer(meter_tokens=True).save(mmm_dir)
    result = invoke("tokenize", "--tokenizer", mmm_dir, triple_file)
    assert_ok(result)
    assert result.stdout.startswith("PIECE_START TIME_SIGNATURE=3/4 ")
    assert_error(
        invoke("tokenize", "--tokenizer", mmm_dir, "--meter-tokens", triple_file),
        "--meter-tokens",
    )

    # A trained REMI prints its learned tokens by name, and reads them back.
    scores = [score for _, score in bach_scores[:5]]
    trained = REMITokenizer.train(scores, vocab_size=REMITokenizer().base_vocab_size + 40)
    remi_dir = tmp_path / "remi"
    trained.save(remi_dir)
    path = tmp_path / "piece.mid"
    save_midi(scores[0], path)
    result = invoke("tokenize", "--tokenizer", remi_dir, path)
    assert_ok(result)
    ids = trained.encode(scores[0])
    assert result.stdout.split() == [trained.id_to_token(i) for i in ids]
    assert any("+" in name for name in result.stdout.split())
    tokens = tmp_path / "tokens.txt"
    tokens.write_text(result.stdout)
    out = tmp_path / "out.mid"
    assert_ok(invoke("detokenize", "--tokenizer", remi_dir, tokens, "-o", out))
    assert out.read_bytes() == bytes(trained.decode(ids).dumps_midi())


def test_several_lines_write_numbered_files(tmp_path, bach_scores):
    tok = MMMTokenizer()
    pieces = [score for _, score in bach_scores if is_4_4(score)][:3]
    lines = [tok.encode_text(pieces[0]), " ".join(map(str, tok.encode(pieces[1])))]
    lines.append(tok.encode_text(pieces[2]))
    tokens = tmp_path / "generated.txt"
    tokens.write_text(f"{lines[0]}\n\n{lines[1]}\n   \n{lines[2]}\n")
    out = tmp_path / "song.mid"
    result = invoke("detokenize", tokens, "-o", out, "-v")
    assert_ok(result)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.glob("*.mid")) == [
        "song_1.mid",
        "song_2.mid",
        "song_3.mid",
    ]
    expected = [tok.decode(lines[0]), tok.decode(tok.encode(pieces[1])), tok.decode(lines[2])]
    for number, score in enumerate(expected, start=1):
        assert tracks_notes(load_midi(tmp_path / f"song_{number}.mid")) == tracks_notes(score)
    assert [line.split()[1] for line in result.stderr.splitlines()] == [
        str(tmp_path / f"song_{i}.mid") for i in (1, 2, 3)
    ]
    assert result.stdout == ""


def test_a_bad_line_among_several_writes_nothing(tmp_path, chorale_file):
    text = MMMTokenizer().encode_text(load_midi(chorale_file))
    tokens = tmp_path / "tokens.txt"
    tokens.write_text(f"{text}\n{text} NOT_A_TOKEN\n")
    assert_error(invoke("detokenize", tokens, "-o", tmp_path / "out.mid"), "line 2", "NOT_A_TOKEN")
    assert list(tmp_path.glob("*.mid")) == []


def test_detokenize_reads_stdin(tmp_path, chorale_file):
    text = MMMTokenizer().encode_text(load_midi(chorale_file))
    out = tmp_path / "out.mid"
    assert_ok(invoke("detokenize", "-", "-o", out, stdin=text + "\n"))
    assert tracks_notes(load_midi(out)) == tracks_notes(MMMTokenizer().decode(text))


# ---------------------------------------------------------------------- errors


@pytest.fixture
def bad_files(tmp_path) -> Path:
    header = (
        b"MThd" + (6).to_bytes(4, "big") + (1).to_bytes(2, "big") * 2 + (480).to_bytes(2, "big")
    )
    (tmp_path / "truncated.mid").write_bytes(header + b"MTrk" + (100).to_bytes(4, "big") + b"\x00")
    (tmp_path / "short_header.mid").write_bytes(b"MThd\x00\x00")
    (tmp_path / "text.mid").write_text("this is not a MIDI file\n")
    (tmp_path / "empty.mid").write_bytes(b"")
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "blank.txt").write_text("\n   \n\t\n")
    (tmp_path / "unknown_token.txt").write_text("PIECE_START TRACK_START INST=0 BOGUS_TOKEN\n")
    (tmp_path / "unknown_remi.txt").write_text("Bar_None Position_0 Pitch_60 Nonsense_3\n")
    (tmp_path / "bad_id.txt").write_text("0 1 2 1000000\n")
    (tmp_path / "huge_id.txt").write_text("4 99999999999999999999999\n")
    (tmp_path / "negative_id.txt").write_text("4 -1\n")
    (tmp_path / "binary.txt").write_bytes(header + b"\xff\xfe\x00")
    (tmp_path / "folder").mkdir()
    return tmp_path


ERROR_CASES = [
    # (args, fragments the error line must hold); {d} is the folder of bad files
    (["info", "{d}/missing.mid"], ["missing.mid", "no such file"]),
    (["info", "{d}/truncated.mid"], ["truncated.mid", "truncated"]),
    (["info", "{d}/short_header.mid"], ["short_header.mid", "header"]),
    (["info", "{d}/text.mid"], ["text.mid", "not a MIDI file"]),
    (["info", "{d}/empty.mid"], ["empty.mid", "empty"]),
    (["info", "{d}/folder"], ["folder"]),
    (["info", "{d}/notes.pdf"], ["notes.pdf"]),
    (["info", "music21:bach/no_such_work"], ["no_such_work"]),
    (["tokenize", "{d}/missing.mid"], ["missing.mid", "no such file"]),
    (["tokenize", "{d}/truncated.mid"], ["truncated.mid"]),
    (["tokenize", "{d}/text.mid", "--tokenizer", "remi"], ["text.mid", "not a MIDI file"]),
    (["tokenize", "--tokenizer", "{d}/no_such_dir", "x.mid"], ["--tokenizer", "no_such_dir"]),
    (["tokenize", "--tokenizer", "{d}/folder", "x.mid"], ["folder"]),
    (["tokenize", "--tokenizer", "remi", "--meter-tokens", "x.mid"], ["--meter-tokens"]),
    (["tokenize", "--foo", "x.mid"], ["no such option", "--foo", "midilm tokenize --help"]),
    (["tokenize"], ["missing argument", "FILE", "midilm tokenize --help"]),
    (["tokenize", "x.mid", "-o", "{d}/folder"], ["--output", "directory"]),
    (["frobnicate"], ["no such command", "frobnicate", "midilm --help"]),
    (["--foo"], ["no such option", "--foo", "'midilm --help'"]),
    (["detokenize", "{d}/missing.txt", "-o", "{d}/o.mid"], ["missing.txt", "no such file"]),
    (["detokenize", "{d}/folder", "-o", "{d}/o.mid"], ["folder", "directory"]),
    (["detokenize", "{d}/empty.txt", "-o", "{d}/o.mid"], ["empty.txt", "no tokens"]),
    (["detokenize", "{d}/blank.txt", "-o", "{d}/o.mid"], ["blank.txt", "no tokens"]),
    (["detokenize", "{d}/unknown_token.txt", "-o", "{d}/o.mid"], ["BOGUS_TOKEN", "token 3"]),
    (
        ["detokenize", "{d}/unknown_remi.txt", "-o", "{d}/o.mid", "--tokenizer", "remi"],
        ["Nonsense_3", "token 3"],
    ),
    (["detokenize", "{d}/bad_id.txt", "-o", "{d}/o.mid"], ["1000000", "outside the vocabulary"]),
    (["detokenize", "{d}/huge_id.txt", "-o", "{d}/o.mid"], ["outside the vocabulary"]),
    (["detokenize", "{d}/negative_id.txt", "-o", "{d}/o.mid"], ["-1", "outside the vocabulary"]),
    (["detokenize", "{d}/binary.txt", "-o", "{d}/o.mid"], ["binary.txt", "not UTF-8"]),
    (["detokenize", "{d}/empty.txt"], ["missing option", "--output"]),
]


@pytest.mark.parametrize(
    ("args", "fragments"), ERROR_CASES, ids=[" ".join(a)[:60] for a, _ in ERROR_CASES]
)
def test_errors_are_one_line_and_exit_2(bad_files, args, fragments):
    result = invoke(*(a.format(d=bad_files) for a in args))
    assert_error(result, *fragments)
    assert not (bad_files / "o.mid").exists()


def test_ctrl_c_exits_130(monkeypatch):
    import midilm.score

    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(midilm.score, "load_score", interrupted)
    result = invoke("info", CHORALE)
    assert result.exit_code == 130
    assert result.stderr.strip() == "error: interrupted"


def test_a_bug_keeps_its_traceback(monkeypatch):
    import midilm.score

    def broken(*_args, **_kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(midilm.score, "load_score", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        CliRunner().invoke(cli, ["info", CHORALE], catch_exceptions=False)


# ---------------------------------------------------------------------- the console script


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["info", "missing.mid"], "missing.mid: no such file"),
        (["tokenize", "--foo", "x.mid"], "no such option"),
        (["detokenize", "corrupt.mid", "-o", "out.mid"], "not UTF-8"),
        (["info", "corrupt.mid"], "corrupt.mid"),
    ],
)
def test_console_script_errors(tmp_path, midilm_script, args, fragment):
    (tmp_path / "corrupt.mid").write_bytes(b"MThd\x00\x00\x00\x06\x00\x01\x00\x01\x01\xe0MTrk\xff")
    done = run_script(midilm_script, *args, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ")
    assert fragment in lines[0]


def test_console_script_round_trip(tmp_path, midilm_script, chorale_file):
    done = run_script(midilm_script, "--version")
    assert (done.returncode, done.stdout) == (0, f"midilm {midilm.__version__}\n")
    tokens = run_script(midilm_script, "tokenize", chorale_file)
    assert tokens.returncode == 0, tokens.stderr
    out = tmp_path / "out.mid"
    done = run_script(midilm_script, "detokenize", "-", "-o", out, "-v", input=tokens.stdout)
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith(f"wrote {out} (")
    written = load_midi(out)
    assert tracks_notes(written) == tracks_notes(MMMTokenizer().decode(tokens.stdout))
