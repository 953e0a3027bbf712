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


# The fields every row carries (``mobilenet.train.loop.end_epoch`` writes them all, from the
# first version on) and that the readers use: epoch and the measures, as numbers. The EMA's are
# None on a run without EMA.
ROW_NUMBERS = ("train_loss", "val_loss", "val_top1", "val_top5", "best_metric", "epoch_time_s", "images_per_s")
ROW_OPTIONAL_NUMBERS = ("ema_top1", "ema_top5")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_metrics_row(row: Any) -> bool:
    """Whether ``row`` is a whole epoch row: a JSON object with an integer epoch and every field
    the readers use, of its type. Anything else is damage (a line cut short by a kill, a file
    edited by hand), and a reader that met it would fail on every run listed beside it."""
    return (isinstance(row, dict) and isinstance(row.get("epoch"), int) and not isinstance(row["epoch"], bool)
            and row["epoch"] >= 0
            and all(_is_number(row.get(name)) for name in ROW_NUMBERS)
            and all(row.get(name) is None or _is_number(row[name]) for name in ROW_OPTIONAL_NUMBERS))


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The run's epoch rows, by epoch; damaged lines (``is_metrics_row``) are left out."""
    return _read_rows(run_dir)[0]


def _read_rows(run_dir: Path) -> tuple[list[dict[str, Any]], int]:
    """(the epoch rows, by epoch; how many non-blank lines were damaged and left out)."""
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return [], 0
    rows, damaged = [], 0
    for line in path.read_text(errors="replace").splitlines():
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                row = None  # a damaged line (older runs appended; a kill could cut one short)
            if is_metrics_row(row):
                rows.append(row)
            else:
                damaged += 1
    # A resumed run may repeat an epoch that was logged before the interruption: keep the last one.
    by_epoch = {row["epoch"]: row for row in rows}
    return [by_epoch[e] for e in sorted(by_epoch)], damaged


def selected_top1(row: dict[str, Any]) -> float:
    """The top-1 a run selects ``best.pt`` by (``mobilenet.train.loop.end_epoch``): the EMA
    weights' where the run keeps an EMA, else the model's."""
    return row["ema_top1"] if row.get("ema_top1") is not None else row["val_top1"]


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
        if any(r.get("ema_top1") is not None for r in rows):
            ema = [100 * r["ema_top1"] if r.get("ema_top1") is not None else float("nan") for r in rows]
            ax_acc.plot(epochs, ema, marker=".", linestyle=":", label=f"{label} EMA")
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
    """One row of `mobilenet runs`: what was trained, how far, how well. Best and last top-1 are
    both the metric the run selects ``best.pt`` by (``top1_of``: "EMA" or "model"). A damaged file
    leaves its fields None and says so in ``status``, so one run never hides the others; what was
    wrong with each such file is in ``damaged`` (the command says it, and exits 2, after the table)."""
    notes, damaged_files = [], []
    try:
        config = _read_json_object(run_dir / CONFIG)
    except InputError as err:
        config = {}
        notes.append(f"{CONFIG} damaged")
        damaged_files.append(str(err))
    rows, damaged = _read_rows(run_dir)
    if damaged:
        notes.append(f"{damaged} damaged line{'s' if damaged > 1 else ''} of {METRICS} left out")
    summary_path = run_dir / SUMMARY
    status: str | None = "running or stopped"
    if summary_path.is_file():
        try:
            status = _read_json_object(summary_path).get("status")
            problem = None if isinstance(status, str) else f"{summary_path} holds no status"
        except InputError as err:
            problem = str(err)
        if problem is not None:
            status = None
            notes.append(f"{SUMMARY} damaged")
            damaged_files.append(problem)
    arch = config.get("arch") if isinstance(config.get("arch"), dict) else {}
    epochs = config.get("epochs")
    ema = bool(rows) and rows[-1].get("ema_top1") is not None
    return {
        "run": str(run_dir),
        "data": _text(config.get("data")),
        "model": f"{_text(arch.get('variant'), '?')} α{_text(arch.get('alpha'), '?')} {_size(arch.get('resolution'))}",
        "optimizer": _text(config.get("optimizer")),
        "epochs": f"{len(rows)}/{epochs if _is_number(epochs) else '?'}",
        "top1_of": ("EMA" if ema else "model") if rows else None,
        "best_top1": max(selected_top1(r) for r in rows) if rows else None,
        "last_top1": selected_top1(rows[-1]) if rows else None,
        "train_time_s": sum(r["epoch_time_s"] for r in rows),
        "images_per_s": rows[-1]["images_per_s"] if rows else None,
        "status": "; ".join([status, *notes] if status else notes),
        "damaged": damaged_files,
    }


def _text(value: Any, missing: str | None = None) -> str | None:
    """A config value shown as text; None (or ``missing``) where it is absent or not a scalar."""
    return str(value) if isinstance(value, (str, int, float)) and not isinstance(value, bool) else missing


def _size(resolution: Any) -> str:
    """``32px`` for a square input, ``32x48px`` (height x width) otherwise."""
    if isinstance(resolution, (int, float)) and not isinstance(resolution, bool):
        resolution = [resolution, resolution]
    if not (isinstance(resolution, list) and len(resolution) == 2 and all(_text(x) for x in resolution)):
        return "?px"
    height, width = resolution
    return f"{height}px" if height == width else f"{height}x{width}px"
