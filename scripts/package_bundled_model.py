"""Package a trained model directory as one of midilm's bundled models.

    python scripts/package_bundled_model.py MODEL_DIR NAME [--report REPORT_DIR]
        [--instruments violin,violin,viola,cello] [--bars 8] [--voice-leading] [--command "…"]

Writes ``src/midilm/bundled/NAME``: the weights in fp16 safetensors (half the bytes, the
same music: the sampler computes in fp16/bf16 on CPU anyway), the tokenizer, generation
defaults (the instruments and bars ``midilm generate`` uses when not told, and whether it
samples under the voice-leading guard), a model card
with the data, the exact command that rebuilds it, the training curve and the evaluation
report, and ``evaluation.json`` beside it. Run by ``scripts/build_bundled_models.sh``.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from midilm.io_utils import atomic_write_text
from midilm.model.card import render_card
from midilm.model.directory import save_model
from midilm.model.loading import load_model

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "src" / "midilm" / "bundled"

DESCRIPTIONS = {
    "default": (
        "midilm's default model: four-part writing learnt from the Bach chorales that ship "
        "with music21 (public domain), as MMM multi-track text in 4-bar windows, with "
        "12 transpositions, bar-infilling examples, and each voice re-orchestrated for choir, "
        "strings, organ, brass, woodwinds or piano so that any of those can be asked for."
    ),
    "remi": (
        "midilm's bundled REMI + BPE model: the Bach chorales and the string quartets that "
        "ship with music21 (public domain), merged into one piano stream, with a BPE "
        "vocabulary sized to that corpus. It continues a MIDI prompt, as the BPE paper's "
        "Maestro-REMI-bpe20k model does."
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("name")
    parser.add_argument("--report", type=Path, help="a `midilm evaluate` report directory")
    parser.add_argument("--instruments", help="default instruments, comma-separated")
    parser.add_argument("--bars", type=int, default=8, help="default bars to compose")
    parser.add_argument("--voice-leading", action="store_true",
                        help="sample under the voice-leading guard by default (four-part "
                        "models)")  # fmt: skip
    parser.add_argument("--command", default="bash scripts/build_bundled_models.sh")
    args = parser.parse_args()

    lm = load_model(args.model_dir)
    instruments = tuple(args.instruments.split(",")) if args.instruments else ()
    generation = lm.generation.replace(
        instruments=instruments, bars=args.bars, voice_leading=args.voice_leading
    )
    info = _info(lm.info, args.name)
    target = BUNDLED / args.name
    save_model(target, lm.model, lm.tokenizer, generation_defaults=generation, info=info,
               dtype="float16", card="pending")  # fmt: skip
    extras: list[str] = []
    curve = _training_curve(args.model_dir, target / "training-curve.png")
    if curve:
        extras += ["", "## Training curve", "", "![training curve](training-curve.png)"]
    if args.report is not None:
        evaluation = json.loads((args.report / "report.json").read_text(encoding="utf-8"))
        for section in ("model", "dataset"):  # no paths of the machine it was built on
            if (evaluation.get(section) or {}).get("path"):
                evaluation[section]["path"] = Path(evaluation[section]["path"]).name
        atomic_write_text(target / "evaluation.json", json.dumps(evaluation, indent=2) + "\n")
        report = (args.report / "report.md").read_text(encoding="utf-8")
        extras += ["", "## Evaluation", "", _demote_headings(report)]
    extras += ["", "## Reproduce", "", "From a clone of midilm:", "", "```sh", args.command,
               "```"]  # fmt: skip
    card = render_card(json.loads((target / "midilm.json").read_text()), name=f"midilm {args.name}")
    atomic_write_text(target / "README.md", card.rstrip("\n") + "\n" + "\n".join(extras) + "\n")
    size = sum(p.stat().st_size for p in target.iterdir()) / 1e6
    print(f"packaged {args.model_dir} as {target} ({size:.1f} MB)")


def _info(source: dict[str, Any], name: str) -> dict[str, Any]:
    """The sections worth shipping: no absolute paths of the machine it was built on."""
    keep = {k: v for k, v in source.items() if k in ("model", "training", "training_run",
                                                     "metrics")}  # fmt: skip
    dataset = dict(source.get("dataset") or {})
    dataset.pop("path", None)
    keep["dataset"] = dataset
    keep["description"] = DESCRIPTIONS.get(name, "")
    keep["license"] = "apache-2.0"
    return keep


def _training_curve(model_dir: Path, output: Path) -> bool:
    """Train and valid loss against steps, from the TensorBoard logs of the run."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logs = model_dir / "logs"
    if not logs.is_dir():
        return False
    series: dict[str, dict[int, float]] = {}
    for events in sorted(logs.glob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        for tag in ("train/loss", "eval/loss"):
            if tag in accumulator.Tags().get("scalars", []):
                for point in accumulator.Scalars(tag):
                    series.setdefault(tag, {})[point.step] = point.value
    if not series:
        return False
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 3.5), dpi=100)
    axes = figure.add_subplot()
    for tag, label in (("train/loss", "train"), ("eval/loss", "valid")):
        if tag in series:
            steps = sorted(series[tag])
            axes.plot(steps, [series[tag][s] for s in steps], label=label)
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("loss (nats per token)")
    axes.legend()
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(output)
    return True


def _demote_headings(markdown: str) -> str:
    """The report as a card section: headings one level down, without its plots (they stay
    in the report folder) and without the build machine's paths."""
    lines = []
    for line in markdown.splitlines():
        if line.startswith("![") or line.strip() == "## Plots":
            continue
        text = re.sub(r"`/[^`]*/([^/`]+)`", r"`\1`", line)
        lines.append("##" + text if text.startswith("#") else text)
    return "\n".join(lines).rstrip("\n")


if __name__ == "__main__":
    main()
