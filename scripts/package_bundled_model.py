"""Package a trained model directory as one of midilm's bundled models.

    python scripts/package_bundled_model.py MODEL_DIR NAME [--report REPORT_DIR]
        [--instruments violin,violin,viola,cello] [--bars 8] [--voice-leading] [--command "…"]
    python scripts/package_bundled_model.py --report-only NAME --report REPORT_DIR

Writes ``src/midilm/bundled/NAME``: the weights in fp16 safetensors (half the bytes, the
same music: the sampler computes in fp16/bf16 on CPU anyway), the tokenizer, generation
defaults (the instruments and bars ``midilm generate`` uses when not told, and whether it
samples under the voice-leading guard), a model card
with the data, the exact command that rebuilds it, the training curve and the evaluation
report, and ``evaluation.json`` beside it. Run by ``scripts/build_bundled_models.sh``.

``--report-only`` replaces the evaluation of a model already packaged (its card's
"Evaluation" section and ``evaluation.json``) and leaves everything else as it is: for a
model re-evaluated after a change to the sampler, without its training folder.
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

EVALUATION_NOTES = {
    "default": (
        "Measured with the shipped generation defaults (density steering and the "
        "voice-leading guard on) on the chorales' test split in their own keys (the "
        "evaluation dataset of `scripts/build_bundled_models.sh`: no transposition)."
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", type=Path, nargs="?")
    parser.add_argument("name")
    parser.add_argument("--report", type=Path, help="a `midilm evaluate` report directory")
    parser.add_argument("--instruments", help="default instruments, comma-separated")
    parser.add_argument("--bars", type=int, default=8, help="default bars to compose")
    parser.add_argument("--voice-leading", action="store_true",
                        help="sample under the voice-leading guard by default (four-part "
                        "models)")  # fmt: skip
    parser.add_argument("--command", default="bash scripts/build_bundled_models.sh")
    parser.add_argument("--report-only", action="store_true",
                        help="only replace the evaluation of the packaged model NAME")  # fmt: skip
    args = parser.parse_args()
    if args.report_only:
        if args.report is None:
            parser.error("--report-only needs --report")
        _replace_evaluation(BUNDLED / args.name, args.report)
        return
    if args.model_dir is None:
        parser.error("MODEL_DIR is required unless --report-only")

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
        extras += ["", "## Evaluation", "", _evaluation(target, args.report)]
    extras += ["", "## Reproduce", "", "From a clone of midilm:", "", "```sh", args.command,
               "```"]  # fmt: skip
    card = render_card(json.loads((target / "midilm.json").read_text()), name=f"midilm {args.name}")
    atomic_write_text(target / "README.md", card.rstrip("\n") + "\n" + "\n".join(extras) + "\n")
    size = sum(p.stat().st_size for p in target.iterdir()) / 1e6
    print(f"packaged {args.model_dir} as {target} ({size:.1f} MB)")


def _evaluation(target: Path, report_dir: Path) -> str:
    """Write the report's ``evaluation.json`` into ``target``; return the card section."""
    evaluation = json.loads((report_dir / "report.json").read_text(encoding="utf-8"))
    for section in ("model", "dataset"):  # no paths of the machine it was built on
        if (evaluation.get(section) or {}).get("path"):
            evaluation[section]["path"] = Path(evaluation[section]["path"]).name
    atomic_write_text(target / "evaluation.json", json.dumps(evaluation, indent=2) + "\n")
    report = _demote_headings((report_dir / "report.md").read_text(encoding="utf-8"))
    note = EVALUATION_NOTES.get(target.name)
    return f"{note}\n\n{report}" if note else report


def _replace_evaluation(target: Path, report_dir: Path) -> None:
    card_path = target / "README.md"
    card = card_path.read_text(encoding="utf-8")
    start, end = card.find("\n## Evaluation\n"), card.find("\n## Reproduce\n")
    if start < 0 or end < start:
        raise SystemExit(f"{card_path}: no Evaluation section before Reproduce to replace")
    section = "\n## Evaluation\n\n" + _evaluation(target, report_dir) + "\n"
    atomic_write_text(card_path, card[:start] + section + card[end:])
    print(f"replaced the evaluation of {target}")


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
