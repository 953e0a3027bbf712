"""Run directories: metrics, learning curves, and listing runs side by side.

A run directory holds ``config.json``, ``metrics.jsonl`` (one JSON object per finished epoch),
``curves.png`` (loss and accuracy by epoch), ``last.pt``/``best.pt`` and, once finished or
interrupted, ``summary.json``; and ``.lock``, which its one writer holds while it runs
(``mobilenet.train.lock``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from mobilenet.arch import ArchConfig
from mobilenet.errors import InputError
from mobilenet.files import write_text
from mobilenet.plot import save_figure
from mobilenet.train import distributed

METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
CONFIG = "config.json"


def new_run_dir(arch: ArchConfig, data: str) -> str:
    """``runs/<model>-<data>-<time>``: where a new run goes when no directory is named. Under
    torchrun, the time is the launch's first process's, for every rank and every restart."""
    name = f"{arch.name}-{Path(data).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    return str(Path("runs") / distributed.one_per_launch("new_run_dir", name))


def append_metrics(run_dir: Path, row: dict[str, Any]) -> None:
    """Add one epoch's row (replacing an earlier row of that epoch, from a run resumed after a
    kill) by rewriting the whole file atomically: an append cut short by a kill would leave half a
    line that the next append continues, losing both rows."""
    rows = [r for r in read_metrics(run_dir) if r["epoch"] != row["epoch"]] + [row]
    rows.sort(key=lambda r: r["epoch"])
    write_text(Path(run_dir) / METRICS, "".join(json.dumps(r) + "\n" for r in rows))


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a damaged line (older runs appended; a kill could cut one short)
            if isinstance(row, dict) and isinstance(row.get("epoch"), int):
                rows.append(row)
    # A resumed run may repeat an epoch that was logged before the interruption: keep the last one.
    by_epoch = {row["epoch"]: row for row in rows}
    return [by_epoch[e] for e in sorted(by_epoch)]


def write_json(path: Path, obj: Any) -> None:
    """Atomically (a unique temporary beside it, so two writers never share one)."""
    write_text(path, json.dumps(obj, indent=2) + "\n")


def plot_curves(run_dirs: list[Path], out: Path) -> None:
    """Training/validation loss and validation top-1 by epoch, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for run_dir in run_dirs:
        rows = read_metrics(run_dir)
        if not rows:
            continue
        epochs = [r["epoch"] + 1 for r in rows]
        label = run_dir.name
        ax_loss.plot(epochs, [r["train_loss"] for r in rows], marker="o", label=f"{label} train")
        ax_loss.plot(epochs, [r["val_loss"] for r in rows], marker="o", linestyle="--", label=f"{label} val")
        ax_acc.plot(epochs, [100 * r["val_top1"] for r in rows], marker="o", label=f"{label} top-1")
        if rows[0].get("ema_top1") is not None:
            ax_acc.plot(epochs, [100 * r["ema_top1"] for r in rows], marker=".", linestyle=":", label=f"{label} EMA")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="validation top-1 (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, out, dpi=100)


def _read_json_object(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{path} is not readable JSON ({err}); is this a `mobilenet train` run directory?") from err
    if not isinstance(value, dict):
        raise InputError(f"{path} is not a `mobilenet train` file (a JSON object expected)")
    return value


def find_runs(paths: list[Path]) -> list[Path]:
    """Run directories among ``paths`` and their immediate subdirectories."""
    found: list[Path] = []
    for p in paths:
        if not p.exists():
            raise InputError(f"{p} does not exist")
        if (p / CONFIG).is_file():
            found.append(p)
        elif p.is_dir():
            found += sorted(d for d in p.iterdir() if (d / CONFIG).is_file())
    return found


def describe(run_dir: Path) -> dict[str, Any]:
    """One row of `mobilenet runs`: what was trained, how far, how well."""
    config = _read_json_object(run_dir / CONFIG)
    rows = read_metrics(run_dir)
    summary_path = run_dir / SUMMARY
    summary = _read_json_object(summary_path) if summary_path.is_file() else {}
    arch = config.get("arch", {})
    best = max(rows, key=lambda r: r.get("best_metric", r["val_top1"])) if rows else None
    return {
        "run": str(run_dir),
        "data": config.get("data"),
        "model": f"{arch.get('variant', '?')} α{arch.get('alpha', '?')} {arch.get('resolution', ['?'])[0]}px",
        "optimizer": config.get("optimizer"),
        "epochs": f"{len(rows)}/{config.get('epochs')}",
        "best_top1": best.get("best_metric", best["val_top1"]) if best else None,
        "last_top1": rows[-1]["val_top1"] if rows else None,
        "train_time_s": sum(r.get("epoch_time_s", 0.0) for r in rows),
        "images_per_s": rows[-1].get("images_per_s") if rows else None,
        "status": summary.get("status", "running or stopped"),
    }
