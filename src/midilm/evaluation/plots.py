"""The report's pictures (PNG, drawn by matplotlib without a display).

- ``statistics.png``: per feature, the distributions of samples, test and train;
- ``infill.png``: the same for infilled bars and the bars they replaced;
- ``syntax.png``: syntax-error rate by kind, with and without the grammar mask;
- ``density.png`` (MMM): requested vs achieved density bins.

matplotlib is imported when a plot is drawn, with the non-interactive Agg backend.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from midilm.evaluation.statistics import FEATURES, histogram
from midilm.io_utils import atomic_path

__all__ = ["draw_plots"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")


def draw_plots(
    directory: Path,
    values: Mapping[str, Mapping[str, np.ndarray]],
    syntax: Mapping[str, Any],
    controls: Mapping[str, Any] | None,
) -> list[str]:
    """Draw every plot into ``directory``; returns their file names. ``values`` maps a set
    name (``"samples"``, ``"test"``, ``"train"``; ``"infill"`` and ``"original"`` for the
    infilled bars and those they replaced, drawn apart) to its feature values."""
    plt = _pyplot()
    written = []
    main = {k: v for k, v in values.items() if k not in ("infill", "original")}
    _feature_figure(plt, main, directory / "statistics.png")
    written.append("statistics.png")
    if "infill" in values and "original" in values:
        infill = {"infilled bars": values["infill"], "original bars": values["original"]}
        _feature_figure(plt, infill, directory / "infill.png")
        written.append("infill.png")

    modes = [m for m in ("unconstrained", "constrained") if syntax.get(m)]
    if modes:
        kinds = list(syntax[modes[0]]["rate_by_kind"])
        fig, ax = plt.subplots(figsize=(7, 3.5))
        width = 0.8 / len(modes)
        for i, mode in enumerate(modes):
            rates = [syntax[mode]["rate_by_kind"][k] for k in kinds]
            ax.bar(np.arange(len(kinds)) + i * width, rates, width, label=mode)
        ax.set_xticks(np.arange(len(kinds)) + width * (len(modes) - 1) / 2)
        ax.set_xticklabels([k.replace("_", " ") for k in kinds], fontsize=8)
        ax.set_ylabel("errors per sampled token")
        ax.legend()
        fig.tight_layout()
        _save(fig, directory / "syntax.png")
        plt.close(fig)
        written.append("syntax.png")

    if controls is not None and controls.get("windows"):
        confusion = np.asarray(controls["density_confusion"], dtype=np.float64)
        fig, ax = plt.subplots(figsize=(4.5, 4))
        shown = ax.imshow(confusion, cmap="Blues", origin="lower")
        ax.set_xlabel("achieved density bin")
        ax.set_ylabel("requested density bin")
        fig.colorbar(shown, ax=ax, label="track windows")
        fig.tight_layout()
        _save(fig, directory / "density.png")
        plt.close(fig)
        written.append("density.png")
    return written


def _feature_figure(plt: Any, values: Mapping[str, Mapping[str, np.ndarray]], path: Path) -> None:
    """One panel per feature, one line per set."""
    names = list(FEATURES)
    columns = 4
    rows = -(-len(names) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3 * rows))
    for ax, name in zip(axes.flat, names, strict=False):
        feature = FEATURES[name]
        x = np.arange(feature.lo, feature.hi + 1)
        for label, per_feature in values.items():
            if len(per_feature[name]):
                ax.step(x, histogram(per_feature[name], feature), where="mid", label=label)
        ax.set_title(name.replace("_", " "))
        ax.set_xlabel(feature.unit, fontsize=7)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
