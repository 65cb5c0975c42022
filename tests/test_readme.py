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
