"""Separable MobileNet against its full-convolution variant on Fashion-MNIST: accuracy and
measured training time beside the mult-adds the cost model predicts.

Train the two runs first (they are long on a 2-core CPU; see docs/training.md for the exact
commands), then compare them:

    .venv/bin/python benchmarks/train_fashion_mnist.py RUN_DIR_SEPARABLE RUN_DIR_CONV [--plot curves.png]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mobilenet.arch import ArchConfig
from mobilenet.cost import network_cost
from mobilenet.train.runs import plot_curves, read_metrics


def summarize(run_dir: Path) -> dict:
    config = json.loads((run_dir / "config.json").read_text())
    arch = ArchConfig.from_dict(config["arch"])
    rows = read_metrics(run_dir)
    if not rows:
        raise SystemExit(f"{run_dir}: no finished epochs yet")
    total = network_cost(arch).total
    return {
        "run": run_dir.name, "variant": arch.variant, "mult_adds": total.mult_adds, "params": total.trainable_params,
        "epochs": len(rows), "best_top1": rows[-1]["best_metric"],  # what the run selected best.pt by
        "final_top1": rows[-1]["val_top1"], "final_ema_top1": rows[-1].get("ema_top1"),
        "time_s": sum(r["epoch_time_s"] for r in rows),
        "s_per_epoch": sum(r["epoch_time_s"] for r in rows) / len(rows),
        "images_per_s": sum(r["images_per_s"] for r in rows) / len(rows),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs=2, type=Path, help="the separable run directory, then the conv one")
    p.add_argument("--plot", type=Path, default=None)
    args = p.parse_args()
    sep, conv = (summarize(r) for r in args.runs)
    print(f"{'':22} {'mult-adds':>11} {'params':>9} {'epochs':>6} {'best top-1':>10} {'s/epoch':>8} {'img/s':>7}")
    for s in (sep, conv):
        print(f"{s['variant']:22} {s['mult_adds']:11,} {s['params']:9,} {s['epochs']:6} {100 * s['best_top1']:9.2f}% "
              f"{s['s_per_epoch']:8.0f} {s['images_per_s']:7.0f}")
    print(f"conv / separable: {conv['mult_adds'] / sep['mult_adds']:.2f}x the mult-adds, "
          f"{conv['s_per_epoch'] / sep['s_per_epoch']:.2f}x the training time per epoch, "
          f"{100 * (conv['best_top1'] - sep['best_top1']):+.2f} points top-1")
    if args.plot:
        plot_curves(list(args.runs), args.plot)
        print(f"learning curves: {args.plot}")


if __name__ == "__main__":
    main()
