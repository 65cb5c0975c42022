"""An evaluation report: one JSON file for programs, one Markdown page for people, and the
side-by-side table of several reports (``midilm compare``).

``REPORT_DIR/report.json`` holds every number (the schema below); ``report.md`` renders it;
plots sit beside them as PNG files. A section a model cannot have (controls for REMI, voice
leading for music that is not in four parts) is ``null``, with the reason in ``notes``.

Sections of ``report.json``: ``model``, ``dataset``, ``settings``; ``likelihood`` (split,
loss, perplexity, bits per token and per note); ``syntax`` (``unconstrained`` and
``constrained``: error rate per sampled token, by kind); ``controls`` (density exact and
within one bin, instruments present); ``statistics`` (per feature, the overlapping area of
samples vs test and of test vs train, the ceiling); ``voice_leading`` (samples and test:
parallels per 100 motions, share of notes in range); ``infill`` (per feature, infilled bars
vs the bars they replaced, and as many bars of one track of the composed pieces vs the same
bars: the baseline of the same shape); ``speed`` (tokens per second and seconds per bar of the
composing runs, one piece at a time through the public API); ``notes``; ``failures``
(``null`` when every task finished: else, by task, how many of how many the model could not
finish, its context full before the music was complete, with the first reasons).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from midilm.errors import MidilmError
from midilm.io_utils import atomic_write_text, read_json_object

__all__ = ["REPORT_JSON", "REPORT_MD", "Report", "ReportError", "compare_table"]

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
FORMAT = "midilm-evaluation"
FORMAT_VERSION = 1


class ReportError(MidilmError, ValueError):
    """A folder that holds no readable evaluation report."""


@dataclass
class Report:
    """Everything one evaluation measured (see the module docstring for each section)."""

    model: dict[str, Any]
    dataset: dict[str, Any]
    settings: dict[str, Any]
    likelihood: dict[str, Any]
    syntax: dict[str, Any]
    controls: dict[str, Any] | None
    statistics: dict[str, Any]
    voice_leading: dict[str, Any] | None
    infill: dict[str, Any] | None
    speed: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    failures: dict[str, Any] | None = None

    # ------------------------------------------------------------------ files
    def to_dict(self) -> dict[str, Any]:
        from midilm import __version__

        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "midilm_version": __version__,
            "model": self.model,
            "dataset": self.dataset,
            "settings": self.settings,
            "likelihood": self.likelihood,
            "syntax": self.syntax,
            "controls": self.controls,
            "statistics": self.statistics,
            "voice_leading": self.voice_leading,
            "infill": self.infill,
            "speed": self.speed,
            "notes": self.notes,
            "failures": self.failures,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        if data.get("format") != FORMAT:
            raise ReportError("not a midilm evaluation report (no 'format': 'midilm-evaluation')")
        try:
            optional = ("notes", "failures")
            return cls(
                **{name: data[name] for name in cls.__dataclass_fields__ if name not in optional},
                notes=list(data.get("notes", [])),
                failures=data.get("failures"),
            )
        except KeyError as err:
            raise ReportError(f"the report lacks its {err.args[0]!r} section") from None

    def save(self, directory: str | Path) -> Path:
        """Write ``report.json`` and ``report.md`` into ``directory`` (created if needed)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.to_dict(), indent=2, ensure_ascii=False, allow_nan=False)
        atomic_write_text(directory / REPORT_JSON, text + "\n")
        atomic_write_text(directory / REPORT_MD, self.to_markdown())
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> Report:
        """The report in ``directory`` (or the ``report.json`` path itself)."""
        path = Path(directory)
        if path.is_dir():
            path = path / REPORT_JSON
        if not path.is_file():
            raise ReportError(f"{path}: no evaluation report here (run 'midilm evaluate')")
        return cls.from_dict(read_json_object(path, ReportError))

    # ------------------------------------------------------------------ reading
    def headline(self) -> dict[str, float | None]:
        """The numbers ``midilm compare`` puts side by side, by label, in order (the
        held-out split is test, or valid where test was empty: see ``likelihood.split``)."""
        out: dict[str, float | None] = {}
        lik = self.likelihood or {}
        out["held-out bits per note ↓"] = lik.get("bits_per_note")
        out["held-out perplexity ↓"] = lik.get("perplexity")
        out["held-out loss (nats/token) ↓"] = lik.get("loss")
        for mode in ("unconstrained", "constrained"):
            counts = (self.syntax or {}).get(mode) or {}
            out[f"syntax errors/token, {mode} ↓"] = counts.get("error_rate")
        free = (self.syntax or {}).get("unconstrained") or {}
        for kind, rate in (free.get("rate_by_kind") or {}).items():
            out[f"  {kind.replace('_', ' ')} (unconstrained) ↓"] = rate
        controls = self.controls or {}
        out["density bin exact ↑"] = controls.get("density_exact")
        out["density bin within ±1 ↑"] = controls.get("density_within_1")
        out["instruments present ↑"] = controls.get("instruments_present")
        stats = self.statistics or {}
        for name, row in (stats.get("features") or {}).items():
            out[f"overlap {name.replace('_', ' ')} ↑"] = row.get("samples_vs_test")
        out["overlap mean ↑"] = (stats.get("mean") or {}).get("samples_vs_test")
        out["overlap mean, test vs train (ceiling)"] = (stats.get("mean") or {}).get(
            "test_vs_train"
        )
        vl = self.voice_leading or {}
        for who in ("samples", "test"):
            part = vl.get(who) or {}
            out[f"parallel 5ths/100 motions, {who}"] = part.get("parallel_fifths_per_100_motions")
            out[f"parallel 8ves/100 motions, {who}"] = part.get("parallel_octaves_per_100_motions")
            ranges = [v for v in (part.get("in_range") or {}).values() if v is not None]
            out[f"notes in SATB range, {who}"] = (
                round(sum(ranges) / len(ranges), 4) if ranges else None
            )
        out["infill overlap mean ↑"] = ((self.infill or {}).get("mean") or {}).get(
            "infill_vs_original"
        )
        out["tokens/s ↑"] = (self.speed or {}).get("tokens_per_s")
        out["seconds/bar ↓"] = (self.speed or {}).get("seconds_per_bar")
        return out

    def to_markdown(self) -> str:
        """The report as a page: headline, then one table per section."""
        m, d, s = self.model, self.dataset, self.settings
        lines = [
            f"# Evaluation of {m.get('name', 'model')}",
            "",
            f"- model: `{m.get('path')}` ({m.get('kind')}, {_num(m.get('parameters'))} "
            f"parameters, {m.get('vocab_size')} tokens)",
            f"- dataset: `{d.get('path')}` (split {d.get('split')!r}, digest "
            f"`{str(d.get('digest'))[:12]}`)",
            f"- samples: {s.get('samples')} × {s.get('bars')} bars, seed {s.get('seed')}, "
            f"temperature {s.get('temperature')}, top-k {s.get('top_k')}, "
            f"top-p {s.get('top_p')}"
            + (", voice-leading guard on" if s.get("voice_leading") else ""),
            "",
            "## Likelihood",
            "",
            _table(
                ["split", "sequences", "tokens", "notes", "loss", "perplexity", *_BITS],
                [_pick(self.likelihood, _LIKELIHOOD_KEYS)],
            ),
            "",
            "## Syntax errors (per sampled token)",
            "",
        ]
        kinds = list(((self.syntax.get("unconstrained") or {}).get("rate_by_kind") or {}).keys())
        rows = []
        for mode in ("unconstrained", "constrained"):
            c = self.syntax.get(mode) or {}
            by_kind = c.get("rate_by_kind") or {}
            keys = ("sequences", "tokens", "truncated", "error_rate")
            rows.append([mode, *_pick(c, keys), *_pick(by_kind, kinds)])
        lines += [
            _table(["sampling", "sequences", "tokens", "truncated", "all", *kinds], rows),
            "",
        ]
        examples = (self.syntax.get("unconstrained") or {}).get("examples") or []
        if examples:
            lines += ["First errors without the grammar mask:", ""]
            lines += [f"- `{e}`" for e in examples]
            lines.append("")
        if self.controls is not None:
            c = self.controls
            lines += [
                "## Controls",
                "",
                _table(
                    ["tracks", "windows", "density exact", "density ±1", "instruments present"],
                    [_pick(c, _CONTROL_KEYS)],
                ),
                "",
            ]
        stats = self.statistics or {}
        infill = (self.infill or {}).get("features") or {}
        lines += [
            "## Music statistics (overlapping area, 1 = same distribution)",
            "",
            f"Samples: {stats.get('samples')}; {stats.get('reference_split')} sequences: "
            f"{stats.get('test_sequences')}; train sequences: {stats.get('train_sequences')}.",
            "",
        ]
        header = ["feature", "samples vs test", "test vs train (ceiling)"]
        if infill:
            header += ["infill vs original", "composed bar vs original"]
        rows = []
        for name, row in (stats.get("features") or {}).items():
            cells = [name, row.get("samples_vs_test"), row.get("test_vs_train")]
            if infill:
                feature = infill.get(name) or {}
                cells += [feature.get("infill_vs_original"), feature.get("composed_vs_original")]
            rows.append(cells)
        mean = stats.get("mean") or {}
        last = ["**mean**", mean.get("samples_vs_test"), mean.get("test_vs_train")]
        if infill:
            infill_mean = (self.infill or {}).get("mean") or {}
            last += [infill_mean.get("infill_vs_original"), infill_mean.get("composed_vs_original")]
        rows.append(last)
        lines += [_table(header, rows), ""]
        if self.voice_leading is not None:
            lines += ["## Voice leading (four voices, music21)", ""]
            voices = ("soprano", "alto", "tenor", "bass")
            rows = []
            for who in ("samples", "test"):
                p = self.voice_leading.get(who) or {}
                ranges = p.get("in_range") or {}
                rows.append([who, *_pick(p, _VOICE_KEYS), *_pick(ranges, voices)])
            lines += [
                _table(
                    [
                        "set",
                        "pieces",
                        "motions",
                        "parallel 5ths/100",
                        "parallel 8ves/100",
                        *(f"{v} in range" for v in voices),
                    ],
                    rows,
                ),
                "",
                "Ranges: soprano C4–G5, alto G3–D5, tenor C3–G4, bass E2–C4.",
                "",
            ]
        sp = self.speed or {}
        lines += [
            "## Speed",
            "",
            _table(
                ["device", "samples", "tokens", "seconds", "tokens/s", "bars", "seconds/bar"],
                [_pick(sp, _SPEED_KEYS)],
            ),
            "",
        ]
        if self.failures:
            counts = self.failures.get("counts", {})
            rows = [[task, c.get("failed"), c.get("of")] for task, c in counts.items()]
            examples = [f"- `{example}`" for example in self.failures.get("examples", [])]
            lines += [
                "## Failed samples",
                "",
                "Tasks the model could not finish (left out of every measure above):",
                "",
                _table(["task", "failed", "of"], rows),
                "",
                *examples,
                "",
            ]
        if self.notes:
            lines += ["## Notes", ""] + [f"- {n}" for n in self.notes] + [""]
        plots = self.settings.get("plots") or []
        if plots:
            lines += ["## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in plots] + [""]
        return "\n".join(lines)


def compare_table(reports: Sequence[Report], names: Sequence[str]) -> str:
    """A Markdown table: one row per headline number, one column per report."""
    if len(reports) != len(names):
        raise ValueError("one name per report")
    headlines = [r.headline() for r in reports]
    labels: list[str] = []
    for h in headlines:
        labels += [label for label in h if label not in labels]
    rows = [[label, *[h.get(label) for h in headlines]] for label in labels]
    return _table(["metric", *names], rows)


# ---------------------------------------------------------------------- formatting
_LIKELIHOOD_KEYS = ("split", "sequences", "tokens", "notes", "loss", "perplexity")
_LIKELIHOOD_KEYS += ("bits_per_token", "bits_per_note")
_CONTROL_KEYS = ("tracks", "windows", "density_exact", "density_within_1", "instruments_present")
_VOICE_KEYS = ("pieces", "motions", "parallel_fifths_per_100_motions")
_VOICE_KEYS += ("parallel_octaves_per_100_motions",)
_BITS = ("bits/token", "bits/note")
_SPEED_KEYS = ("device", "samples", "tokens", "seconds", "tokens_per_s", "bars", "seconds_per_bar")


def _pick(mapping: Any, keys: Sequence[str]) -> list[Any]:
    mapping = mapping or {}
    return [mapping.get(k) for k in keys]


def _num(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "—"
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.3g}"
        return f"{value:.4g}"
    return str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[_num(c) for c in row] for row in rows]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)
