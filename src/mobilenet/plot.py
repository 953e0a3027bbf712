"""Cost plots: per-layer mult-adds, parameters and activation memory, separable against standard."""

from __future__ import annotations

import os
from pathlib import Path

from mobilenet import cost
from mobilenet.errors import InputError
from mobilenet.files import atomic_write

SEPARABLE_DW = "#4c9be8"
SEPARABLE_PW = "#1f4e8c"
STANDARD = "#e8804c"
OTHER = "#8c8c8c"


def plot_costs(net: cost.NetworkCost, path: str | os.PathLike[str]) -> Path:
    """Three panels, one bar group per block: the standard 3×3 conv the block replaces beside its
    depthwise and pointwise layers. Mult-adds and weights on a log scale (they span 4 decades)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = png_path(path)
    comparisons = net.block_comparisons()
    stem, fc = net.layer("stem"), net.layer("classifier")
    labels = ["stem"] + [f"b{c.depthwise.block}\n{c.depthwise.in_shape[1]}²" for c in comparisons] + ["FC"]
    x = range(len(labels))
    width = 0.28
    inner = list(x[1:-1])
    metrics = (
        ("mult-adds (millions, log)", lambda c: c.mult_adds / 1e6),
        ("weights (thousands, log)", lambda c: c.weights / 1e3),
        (f"activation memory, in + out\n(MiB, {net.bytes_per_element} B/element)",
         lambda c: c.activation_bytes / 2**20),
    )
    fig, axes = plt.subplots(3, 1, figsize=(max(10, 0.7 * len(labels) + 3), 11), sharex=True)
    for ax, (title, value) in zip(axes, metrics):
        std = [value(c.standard) for c in comparisons]
        dw = [value(c.depthwise) for c in comparisons]
        pw = [value(c.pointwise) for c in comparisons]
        ax.bar([i - width for i in inner], std, width, color=STANDARD, label="standard 3×3 conv")
        if "memory" in title:
            # Memory is not additive across the pair: the block's peak is the larger of its two layers.
            sep_peak = [max(a, b) for a, b in zip(dw, pw)]
            ax.bar(inner, sep_peak, width, color=SEPARABLE_PW, label="separable block (peak of dw, pw)")
        else:
            ax.bar(inner, dw, width, color=SEPARABLE_DW, label="depthwise 3×3")
            ax.bar([i + width for i in inner], pw, width, color=SEPARABLE_PW, label="pointwise 1×1")
            ax.set_yscale("log")
        ax.bar([0, len(labels) - 1], [value(stem), value(fc)], width, color=OTHER, label="stem / FC (in both)")
        ax.set_ylabel(title)
        ax.grid(axis="y", which="major", alpha=0.3)
    handles, names = axes[0].get_legend_handles_labels()
    mem_handles, mem_names = axes[2].get_legend_handles_labels()
    fig.legend(handles + mem_handles[1:2], names + mem_names[1:2], loc="upper center", ncol=5, fontsize=9,
               bbox_to_anchor=(0.5, 0.955))
    t = net.total
    std_total = sum(c.standard.mult_adds for c in comparisons) + stem.mult_adds + fc.mult_adds
    fig.suptitle(
        f"{net.config.name}: separable {t.mult_adds / 1e6:.1f}M vs standard {std_total / 1e6:.1f}M mult-adds "
        f"({std_total / t.mult_adds:.2f}× fewer)"
    )
    axes[-1].set_xticks(list(x), labels, fontsize=8)
    axes[-1].set_xlabel("layer (block index and input size)")
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    return save_figure(fig, path)


def png_path(path: str | os.PathLike[str]) -> Path:
    """``path``, where a plot can go: the plots are PNG files, named so."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise InputError(f"a plot is written as PNG: give a file name ending in .png, got {str(path)!r}")
    return path


def save_figure(fig: object, path: str | os.PathLike[str], dpi: int = 110) -> Path:
    """Write a matplotlib figure as a PNG, atomically and with the mode any other file gets
    (mkstemp alone would leave it 0600), and close it whatever happens."""
    import matplotlib.pyplot as plt

    path = Path(path)
    try:
        with atomic_write(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format="png")  # type: ignore[attr-defined]
    finally:
        plt.close(fig)  # type: ignore[arg-type]
    return path
