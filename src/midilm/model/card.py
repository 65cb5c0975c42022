"""The model card (``README.md``) of a model directory, rendered from its ``midilm.json``.

It says what the model is, what it was trained on and how, how well it did, and how to use
it: with midilm, and with the seed's own snippet (Transformers, plus MidiTok for REMI), so
that a user who never installed midilm can still run it. It is plain text from a dict: it
imports nothing heavy and knows nothing of torch.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["render_card"]

_KINDS = {
    "mmm": (
        "MMM-style multi-track text (`PIECE_START TRACK_START INST=… DENSITY=… BAR_START "
        "NOTE_ON=… TIME_DELTA=… NOTE_OFF=… BAR_END TRACK_END`), the token language of the "
        '"GPT-2 for Music" models'
    ),
    "remi": (
        "REMI tokens with byte-pair encoding (MidiTok), the token language of the "
        '"Maestro-REMI-bpe20k" model: every pitched track merged into one piano stream'
    ),
}

_VOICE_LEADING = (
    "midilm samples this model under its voice-leading guard (`voice_leading`): no "
    "parallel fifths or octaves between parts, and in a four-part piece each part in its "
    "soprano, alto, tenor or bass range. `voice_leading=False` (`--no-voice-leading`) "
    "hears the model alone."
)

_MODEL_ROWS = (
    ("preset", "preset"),
    ("n_layer", "layers"),
    ("n_head", "attention heads"),
    ("n_embd", "embedding size"),
    ("n_inner", "feed-forward size"),
    ("n_positions", "context (tokens)"),
    ("vocab_size", "vocabulary"),
    ("parameters", "parameters"),
    ("dtype", "weights"),
)

_MIDILM_MMM = """\
```python
import torch

import midilm

lm = midilm.load_model("{path}")  # GPT-2 in eval mode, its tokenizer, this card's settings
prompt = lm.tokenizer.text_to_ids("PIECE_START")  # or lm.tokenizer.encode(a_score)
out = lm.model.generate(torch.tensor([prompt], device=lm.device))  # generation_config.json
midilm.save_midi(lm.tokenizer.decode(out[0].tolist()), "generated.mid")
```"""

_HF_MMM = """\
```python
from transformers import AutoModelForCausalLM, AutoTokenizer

path = "{path}"
tokenizer = AutoTokenizer.from_pretrained(path)  # the MMM vocabulary (WordLevel)
model = AutoModelForCausalLM.from_pretrained(path)
prompt = tokenizer("PIECE_START", return_tensors="pt")
out = model.generate(**prompt)  # sampling settings from generation_config.json
text = tokenizer.decode(out[0])  # MMM text; midilm's MMMTokenizer.decode turns it into notes
```"""

_MIDILM_REMI = """\
```python
import torch

import midilm

lm = midilm.load_model("{path}")  # GPT-2 in eval mode, its tokenizer, this card's settings
prompt = lm.tokenizer.encode(midilm.load_midi("prompt.mid"))  # tracks merged: one piano
out = lm.model.generate(torch.tensor([prompt], device=lm.device))  # generation_config.json
midilm.save_midi(lm.tokenizer.decode(out[0].tolist()), "continuation.mid")
```"""

_HF_REMI = """\
```python
from pathlib import Path

import torch
from miditok import REMI
from transformers import AutoModelForCausalLM

path = Path("{path}")
tokenizer = REMI(params=path / "tokenizer.json")  # MidiTok 3
model = AutoModelForCausalLM.from_pretrained(path)
prompt = tokenizer.encode("prompt.mid")[0].ids  # MidiTok: one sequence per track
out = model.generate(torch.tensor([prompt]))  # sampling settings from generation_config.json
tokenizer.decode([out[0].tolist()]).dump_midi("continuation.mid")
```"""


def render_card(info: dict[str, Any], *, name: str = "midilm model", path: str = ".") -> str:
    """Markdown of a model card, from a model directory's ``midilm.json`` content.

    ``name`` titles it; ``path`` is the directory the usage snippets load (``"."`` by
    default: the folder the card is in). Sections with nothing recorded say so.
    """
    tokenizer = info.get("tokenizer") or {}
    kind = tokenizer.get("kind", "unknown")
    version = info.get("midilm_version", "")
    lines = ["---", "library_name: transformers", "tags:"]
    lines += [f"- {tag}" for tag in ("midilm", "music", "midi", "symbolic-music", "gpt2", kind)]
    if isinstance(info.get("license"), str):
        lines.append(f"license: {info['license']}")
    lines += ["---", "", f"# {name}", ""]
    lines.append(
        f"A GPT-2 language model of symbolic music, trained with "
        f"[midilm](https://github.com/midilm/midilm){' ' + version if version else ''}. "
        f"It reads and writes {_KINDS.get(kind, f'{kind} tokens')}."
    )
    if isinstance(info.get("description"), str):
        lines += ["", info["description"]]

    model = info.get("model") or {}
    lines += ["", "## Model", ""]
    rows = [(label, model[key]) for key, label in _MODEL_ROWS if model.get(key) is not None]
    lines += _table(("", ""), rows) if rows else ["Not recorded."]

    lines += ["", "## Tokenizer", "", f"Kind: `{kind}`."]
    settings = tokenizer.get("config") or {}
    if settings:
        lines += ["", *_bullets(settings)]

    lines += ["", "## Data", ""]
    lines += _bullets(info.get("dataset") or {}) or ["Not recorded."]
    lines += ["", "## Training recipe", ""]
    lines += _bullets(info.get("training") or {}) or ["Not recorded."]
    if info.get("training_run"):
        lines += ["", "The run:", "", *_bullets(info["training_run"])]
    lines += ["", "## Metrics", ""]
    metrics = _flatten(info.get("metrics") or {})
    lines += _table(("metric", "value"), list(metrics.items())) if metrics else ["Not recorded."]
    lines += ["", "## Generation defaults", ""]
    lines += _bullets(info.get("generation") or {}) or ["Not recorded."]
    if (info.get("generation") or {}).get("voice_leading"):
        lines += ["", _VOICE_LEADING]

    lines += ["", "## How to use it", "", "With midilm (`pip install midilm`):", ""]
    if kind == "remi":
        lines += [_MIDILM_REMI.format(path=path), "", "With Transformers and MidiTok:", ""]
        lines.append(_HF_REMI.format(path=path))
        lines += [
            "",
            "MidiTok alone tokenizes each track of a file separately; midilm merges every "
            "pitched track into one piano stream first, as the model was trained.",
        ]
    else:
        lines += [_MIDILM_MMM.format(path=path), "", "With Transformers alone:", ""]
        lines.append(_HF_MMM.format(path=path))
    lines += [
        "",
        "## Files",
        "",
        "- `config.json`, `model.safetensors`: the GPT-2 (Hugging Face layout)",
        "- `generation_config.json`: the sampling defaults above, for `model.generate`",
        "- `tokenizer.json`: the vocabulary"
        + (" (MidiTok 3)" if kind == "remi" else " (Hugging Face WordLevel)"),
        "- `midilm.json`: tokenizer settings, data digest, recipe, metrics, midilm version",
        "",
    ]
    return "\n".join(lines)


def _flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _format(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    if isinstance(value, (list, tuple)):
        if any(isinstance(v, (list, tuple, dict)) for v in value):
            return json.dumps(value)
        return ", ".join(_format(v) for v in value) if value else "none"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _bullets(mapping: dict[str, Any]) -> list[str]:
    return [f"- {key}: {_format(value)}" for key, value in _flatten(mapping).items()]


def _table(header: tuple[str, str], rows: list[tuple[str, Any]]) -> list[str]:
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    lines += [f"| {key} | {_format(value)} |" for key, value in rows]
    return lines
