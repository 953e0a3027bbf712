"""`mobilenet train` (one process, or many under torchrun) and `mobilenet runs`.

Every `train` flag defaults to None ("not given"), as the model flags do: the recipe's defaults are
``TrainConfig``'s own (the help texts quote them), the model's come from the data, the weights and
``ArchConfig``, and a flag given with ``--resume`` can be told from a default (``--resume RUN
--lr 0.1`` is refused, a flag repeating the run's value is harmless). ``mobilenet.train`` does the
work; this module parses, turns the library's errors into the flags' names, and prints.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from mobilenet.allocator import MEMORY_POLICIES
from mobilenet.cli.common import add_model_arguments, given_model_settings
from mobilenet.errors import InputError
from mobilenet.errors import option as flag_of
from mobilenet.files import refuse_overwrite
from mobilenet.train.config import (
    AMP_MODES,
    ARCH_FIELDS,
    BAD_FILE_POLICIES,
    OPTIMIZERS,
    RESUME_OVERRIDES,
    SCHEDULES,
    TrainConfig,
)

DEFAULTS = TrainConfig()  # the recipe's defaults, as the help texts quote them
TRAIN_FIELDS = frozenset(f.name for f in dataclasses.fields(TrainConfig))


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train or fine-tune on fashion-mnist, cifar10, an image folder or a CSV (torchrun for DDP)",
        description="Train MobileNet v1 with the paper's recipe (RMSprop, no weight decay on depthwise "
        "filters) or SGD/AdamW. Under `torchrun --nproc-per-node N -m mobilenet train ...` it runs "
        "DistributedDataParallel (gloo on CPU, nccl on GPU); --batch-size is the global batch either way.",
    )

    def option(group: Any, *names: str, **kwargs: Any) -> None:
        """A flag that defaults to None ("not given")."""
        group.add_argument(*names, default=None, **kwargs)

    d = p.add_argument_group("data")
    option(d, "--data", help="fashion-mnist (default), cifar10, a folder with train/ and val/ class folders, "
           "or a file,label CSV")
    option(d, "--val-data", help="validation data, a file,label CSV or a folder of class folders, for a "
           "training CSV or folder in --data (a folder with train/ still trains on its train/); not for "
           "fashion-mnist or cifar10, which have their own")
    option(d, "--data-root", help="where named datasets are read or downloaded")
    option(d, "--train-subset", type=int, help="use the first N training images")
    option(d, "--val-subset", type=int, help="use the first N validation images")
    option(d, "--bad-files", choices=BAD_FILE_POLICIES,
           help=f"an unreadable image: stop with its path, or skip it and report the count ({DEFAULTS.bad_files})")
    option(d, "--workers", type=int, dest="num_workers",
           help="data-loader processes that decode and augment (default: one per two cores, at most 4)")
    option(d, "--in-channels", type=int, choices=(1, 3),
           help="1: grayscale data fed natively; 3: grey replicated to RGB (default: 1 for fashion-mnist from "
           "scratch, else 3)")
    add_model_arguments(p, classes_default=0)
    option(p, "--dropout", type=float, help=f"dropout before the classifier (TF's {DEFAULTS.arch.dropout})")

    r = p.add_argument_group("recipe (defaults: the paper's, as TF-slim ran it)")
    option(r, "--epochs", type=int, help=f"epochs ({DEFAULTS.epochs})")
    option(r, "--batch-size", type=int, help=f"global batch per optimizer step ({DEFAULTS.batch_size})")
    option(r, "--micro-batch", type=int,
           help="per-process forward batch; smaller than batch-size/world-size accumulates gradients")
    option(r, "--opt", choices=OPTIMIZERS, dest="optimizer", help=f"({DEFAULTS.optimizer})")
    option(r, "--lr", type=float, help=f"peak learning rate ({DEFAULTS.lr})")
    option(r, "--momentum", type=float, help=f"({DEFAULTS.momentum})")
    option(r, "--weight-decay", type=float, help="L2 (AdamW: decoupled) decay; never on depthwise filters, "
           f"BatchNorm or biases ({DEFAULTS.weight_decay})")
    option(r, "--rmsprop-decay", type=float, help=f"({DEFAULTS.rmsprop_decay})")
    option(r, "--rmsprop-eps", type=float, help=f"({DEFAULTS.rmsprop_eps})")
    option(r, "--sched", choices=SCHEDULES, dest="schedule",
           help=f"exponential: TF's lr × decay-rate every decay-epochs; cosine; constant ({DEFAULTS.schedule})")
    option(r, "--warmup-epochs", type=float, help=f"({DEFAULTS.warmup_epochs})")
    option(r, "--decay-rate", type=float, help=f"({DEFAULTS.decay_rate})")
    option(r, "--decay-epochs", type=float, help=f"({DEFAULTS.decay_epochs})")
    option(r, "--min-lr-ratio", type=float, help=f"cosine ends at lr × this ({DEFAULTS.min_lr_ratio})")
    option(r, "--label-smoothing", type=float, help=f"({DEFAULTS.label_smoothing})")
    option(r, "--ema-decay", type=float, help=f"EMA of weights, e.g. 0.999 ({DEFAULTS.ema_decay}: off)")
    option(r, "--clip-grad", type=float, help=f"max gradient norm ({DEFAULTS.clip_grad}: off)")
    option(r, "--min-crop", type=float,
           help=f"smallest random-resized crop, fraction of area ({DEFAULTS.min_crop})")
    option(r, "--no-hflip", action="store_false", dest="hflip", help="no random horizontal flips")

    f = p.add_argument_group("fine-tuning")
    option(f, "--weights", help="start from pretrained weights: a registry NAME or a FILE")
    option(f, "--freeze-body", action="store_true", help="train only the classifier")

    e = p.add_argument_group("execution")
    option(e, "--amp", choices=AMP_MODES,
           help=f"autocast: auto is bf16 where the CPU or GPU computes it natively, else fp32; fp16 is for "
           f"GPUs, with a gradient scaler; none is fp32 ({DEFAULTS.amp})")
    option(e, "--channels-last", action=argparse.BooleanOptionalAction,
           help="NHWC memory format (default; --no-channels-last for NCHW)")
    option(e, "--compile", action=argparse.BooleanOptionalAction,
           help="torch.compile the training step (default: on runs long enough to pay the compile back, "
           "where a C++ compiler or Triton is found; --no-compile for eager)")
    option(e, "--memory", choices=MEMORY_POLICIES,
           help="on a CPU, keep: glibc keeps freed memory for the rest of the run (faster steps; the resident "
           f"size keeps its peak); default: glibc's own settings ({DEFAULTS.memory})")
    option(e, "--sync-bn", action="store_true", help="SyncBatchNorm under DDP (GPUs only)")
    option(e, "--device", help=f"auto, cpu, cuda ({DEFAULTS.device})")
    option(e, "--threads", type=int, help="torch intra-op threads per process")
    option(e, "--seed", type=int, help=f"({DEFAULTS.seed})")
    option(e, "--deterministic", action="store_true", help="deterministic kernels (bit-exact resumes)")
    option(e, "--output", help="run directory (default runs/<model>-<data>-<time>)")
    option(e, "--resume", metavar="RUN_DIR",
           help="continue RUN_DIR from its last.pt (mid-epoch too; RUN_DIR/best.pt: from its best epoch), under "
           "any number of processes; "
           "only --epochs, --micro-batch, --workers, --device, --compile, --memory and progress flags may change")
    option(e, "--no-progress", action="store_false", dest="progress", help="no progress bar")
    option(e, "--log-every", type=int, help=f"progress bar update, in steps ({DEFAULTS.log_every})")
    p.set_defaults(func=run_train)
    _register_runs(subparsers)


def _register_runs(subparsers: argparse._SubParsersAction) -> None:
    q = subparsers.add_parser("runs", help="list and compare training runs",
                              description="One line per run directory: data, model, epochs, best and last top-1 "
                              "(of the EMA weights where the run keeps an EMA, as best.pt is chosen).")
    q.add_argument("paths", nargs="*", default=["runs"], help="run directories or folders of them (default runs/)")
    q.add_argument("--plot", default=None, metavar="PNG", help="write their learning curves into one figure")
    q.add_argument("--json", action="store_true", help="print JSON instead of a table")
    q.set_defaults(func=run_runs)


def run_train(args: argparse.Namespace) -> int:
    from mobilenet.train import RecipeChange, config_for_resume, train

    given = given_settings(args)
    try:
        if args.resume:
            config, weights = config_for_resume(args.resume, **given), None
        else:
            config, weights = new_run(given, args.output)
    except RecipeChange as err:
        raise InputError(_refused_on_resume(args, err.changes)) from None
    result = train(config, weights=weights, resume=args.resume)
    return 0 if result.finished else 130


def given_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The ``TrainConfig`` and ``ArchConfig`` settings of the flags given (not None)."""
    settings = {name: value for name, value in vars(args).items()
                if value is not None and name in TRAIN_FIELDS | ARCH_FIELDS}
    return settings | given_model_settings(args)  # --resolution or --height/--width as (height, width)


def new_run(given: dict[str, Any], output: str | None) -> tuple[TrainConfig, Any]:
    """The configuration of a new run, and the pretrained weights it starts from (None: none)."""
    from mobilenet.train import model_to_train
    from mobilenet.train.runs import new_run_dir

    recipe = TrainConfig(**{k: v for k, v in given.items() if k not in ARCH_FIELDS})  # checked before any weights
    arch, weights = model_to_train(recipe.data, recipe.val_data, weights=recipe.weights,
                                   **{k: v for k, v in given.items() if k in ARCH_FIELDS})
    return dataclasses.replace(recipe, arch=arch, output=output or new_run_dir(arch, recipe.data)), weights


def _refused_on_resume(args: argparse.Namespace, changes: dict[str, tuple[Any, Any]]) -> str:
    from mobilenet.train.checkpoint import run_dir_of

    refused = ", ".join(f"{flag_of(name)} {_shown(given)} (the run has {_shown(ours)})"
                        for name, (given, ours) in changes.items())
    return (f"--resume {args.resume} continues the run's own recipe; not applied: {refused}. Only "
            f"{', '.join(flag_of(name) for name in RESUME_OVERRIDES)} may change; to train with other settings "
            f"start a new run (e.g. --weights {run_dir_of(args.resume) / 'best.pt'})")


def _shown(value: Any) -> str:
    return "×".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)


def run_runs(args: argparse.Namespace) -> int:
    from mobilenet.train import runs

    found = runs.find_runs([Path(p) for p in args.paths])
    if not found:
        raise InputError(f"no run directories (with config.json) in {' '.join(args.paths)}")
    rows = [runs.describe(r) for r in found]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        # Best and last top-1 are the metric each run selects best.pt by: its EMA weights' where
        # it keeps an EMA. The header names it when every run agrees; else each EMA value says so.
        kinds = {r["top1_of"] for r in rows if r["top1_of"]}
        of = "EMA " if kinds == {"EMA"} else ""
        tag = " EMA" if kinds == {"EMA", "model"} else ""
        header = ("run", "data", "model", "optimizer", "epochs", f"best {of}top-1", f"last {of}top-1", "train time",
                  "img/s", "status")
        table = [header] + [
            (r["run"], r["data"] or "-", r["model"], r["optimizer"] or "-", r["epochs"],
             _pct(r["best_top1"]) + (tag if r["top1_of"] == "EMA" else ""),
             _pct(r["last_top1"]) + (tag if r["top1_of"] == "EMA" else ""), f"{r['train_time_s'] / 60:.1f} min",
             f"{r['images_per_s']:.0f}" if r["images_per_s"] else "-", r["status"])
            for r in rows
        ]
        widths = [max(len(row[i]) for row in table) for i in range(len(header))]
        for row in table:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    if args.plot:
        # Never over a run's own files (`--plot runs/x/last.pt` would replace a checkpoint).
        refuse_overwrite(args.plot, [f for run in found for f in run.iterdir() if f.is_file()])
        runs.plot_curves(found, Path(args.plot))
        # Under --json, stdout is the JSON alone.
        print(f"learning curves: {args.plot}", file=sys.stderr if args.json else sys.stdout)
    # Every run is listed first; a damaged file is then said, and the exit status is 2, as for
    # any bad input (the damaged lines of metrics.jsonl are left out quietly, as cut-short ones).
    damaged = [message for row in rows for message in row["damaged"]]
    if damaged:
        more = f" (and {len(damaged) - 1} more damaged file(s), named in the status column)" if len(damaged) > 1 else ""
        raise InputError(damaged[0] + more)
    return 0


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"
