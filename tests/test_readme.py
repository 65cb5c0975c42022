"""The README holds: its command-line and Python examples run as written, and CI runs the
test command it shows."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.DOTALL)


def test_the_main_job_runs(tmp_path):
    """The first set-up command ends with the main job: compose with the bundled model."""
    main_job = _blocks("sh")[0].strip().split(" && ")[-1]
    args = shlex.split(main_job)
    assert args[:2] == ["midilm", "generate"], main_job
    midilm = Path(sys.executable).with_name("midilm")
    result = subprocess.run(
        [str(midilm), *args[1:]], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    from midilm.score import load_midi

    song = load_midi(tmp_path / "song.mid")
    assert len(song.tracks) == 4 and all(len(t.notes) for t in song.tracks)
    bar = 4 * song.ticks_per_quarter  # the default piece is in 4/4
    assert 6 * bar < max(n.end for t in song.tracks for n in t.notes) <= 8 * bar
    assert (tmp_path / "song.wav").stat().st_size > 44 and (tmp_path / "song.png").is_file()


@pytest.mark.slow
def test_cli_examples_run(tmp_path):
    (block,) = _blocks("bash")
    midilm = Path(sys.executable).with_name("midilm")
    for line in block.splitlines():
        command = line.split("#")[0].strip()
        if not command:
            continue
        args = shlex.split(command)
        assert args[0] == "midilm", command
        result = subprocess.run(
            [str(midilm), *args[1:]], cwd=tmp_path, capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, (command, result.stderr)
    assert (tmp_path / "bwv66.mid").is_file()
    assert (tmp_path / "bach-model" / "model.safetensors").is_file()
    assert (tmp_path / "bach-report" / "report.json").is_file()
    assert (tmp_path / "filled.mid").is_file() and (tmp_path / "quartet.mid").is_file()


@pytest.mark.slow
def test_python_example_runs(tmp_path, monkeypatch):
    (block,) = _blocks("python")
    monkeypatch.chdir(tmp_path)
    exec(compile(block, "README.md", "exec"), {})
    assert (tmp_path / "bwv66.mid").is_file()
    assert (tmp_path / "mmm-tokenizer" / "tokenizer.json").is_file()
    assert (tmp_path / "remi-model" / "config.json").is_file()


def test_ci_runs_the_readme_test_command():
    setup = _blocks("sh")
    assert len(setup) == 2, "two set-up commands: the main job, then the tests"
    test_command = setup[1].strip().split(" && ")[-2:]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert " && ".join(test_command) in ci
    assert "pip install --quiet torch==2.13.0" in ci or "pip install torch==2.13.0" in ci
