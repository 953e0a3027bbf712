"""The paper's Figure 4 in milliseconds of this machine: published top-1 against latency, the
Pareto front marked, the budget and the chosen model (``mobilenet choose --plot``)."""

from __future__ import annotations

import os
from pathlib import Path

from mobilenet.latency.model import pareto_front
from mobilenet.latency.ranking import Choice
from mobilenet.plot import png_path, save_figure

# Drawn in this order: TF's own last, on top of the copies that share its points.
FAMILY_COLOURS = {"keras": "#8c8c8c", "hf": "#5aa469", "timm": "#e8804c", "tf-quant": "#4c9be8", "tf": "#1f4e8c"}


def plot_choice(choice: Choice, path: str | os.PathLike[str]) -> Path:
    """Every candidate at its predicted latency (hollow) and, where timed, its measured one
    (filled); the Pareto front of the predictions; the budget; the chosen model."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    path = png_path(path)
    c = choice.calibration
    fig, ax = plt.subplots(figsize=(9, 6))
    for family, colour in FAMILY_COLOURS.items():
        mine = [x for x in choice.candidates if x.family == family]
        if not mine:
            continue
        ax.scatter([x.predicted_ms for x in mine], [x.top1 for x in mine], facecolors="none", edgecolors=colour,
                   label=f"{family} (predicted)")
        timed = [x for x in mine if x.measured_ms is not None]
        ax.scatter([x.measured_ms for x in timed], [x.top1 for x in timed], color=colour, marker="s", s=22,
                   label=f"{family} (measured)" if timed else None)
    front = pareto_front((x.predicted_ms, x.top1) for x in choice.candidates)
    ax.plot([p[0] for p in front], [p[1] for p in front], color="black", lw=1, drawstyle="steps-post",
            label="Pareto front (predicted)")
    ax.axvline(choice.budget_ms, color="#c0392b", ls="--", lw=1, label=f"budget {choice.budget_ms:g} ms")
    chosen = choice.chosen
    at = (chosen.measured_ms or chosen.predicted_ms, chosen.top1)
    ax.scatter(*at, marker="*", s=160, color="#c0392b", zorder=3, label="chosen")
    ax.annotate(chosen.name, at, textcoords="offset points", xytext=(8, -14), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel(f"latency per call, ms (log): {c.runtime} {c.precision}, batch {choice.batch_size}, "
                  f"threads: {c.threads or 'the runtime default'}")
    ax.set_ylabel("published ImageNet top-1, %")
    ax.set_title("Top-1 against latency on this machine (the paper's Figure 4, in milliseconds)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return save_figure(fig, path)
