"""`mobilenet train` (one process, or many under torchrun) and `mobilenet runs`."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from mobilenet.cli.common import add_model_arguments, arch_config_from_args, model_from_args
from mobilenet.errors import InputError
from mobilenet.files import refuse_overwrite

# What a resumed run may change; every other flag comes from its checkpoint.
RESUME_OVERRIDES = ("epochs", "num_workers", "progress", "log_every", "device", "micro_batch")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train or fine-tune on fashion-mnist, cifar10, an image folder or a CSV (torchrun for DDP)",
        description="Train MobileNet v1 with the paper's recipe (RMSprop, no weight decay on depthwise "
        "filters) or SGD/AdamW. Under `torchrun --nproc-per-node N -m mobilenet train ...` it runs "
        "DistributedDataParallel (gloo on CPU, nccl on GPU); --batch-size is the global batch either way.",
    )
    d = p.add_argument_group("data")
    d.add_argument("--data", default="fashion-mnist",
                   help="fashion-mnist, cifar10, a folder with train/ and val/ class folders, or a file,label CSV")
    d.add_argument("--val-data", default=None, help="validation CSV (with a training CSV in --data)")
    d.add_argument("--data-root", default=None, help="where named datasets are read or downloaded")
    d.add_argument("--train-subset", type=int, default=None, help="use the first N training images")
    d.add_argument("--val-subset", type=int, default=None, help="use the first N validation images")
    d.add_argument("--bad-files", choices=("skip", "stop"), default="stop",
                   help="an unreadable image: stop with its path (default) or skip it and report the count")
    d.add_argument("--workers", type=int, default=None, dest="num_workers", help="data loader processes (0)")
    d.add_argument("--in-channels", type=int, choices=(1, 3), default=None,
                   help="1: grayscale data fed natively; 3: grey replicated to RGB (default: 1 for "
                   "fashion-mnist from scratch, else 3)")
    add_model_arguments(p, classes_default=0)
    p.set_defaults(num_classes=None)
    _set_help(p, "num_classes", "number of classes (default: the dataset's)")
    p.add_argument("--dropout", type=float, default=0.001, help="dropout before the classifier (TF's 0.001)")

    r = p.add_argument_group("recipe (defaults: the paper's, as TF-slim ran it)")
    r.add_argument("--epochs", type=int, default=None, help="epochs (default 10)")
    r.add_argument("--batch-size", type=int, default=96, help="global batch per optimizer step (96)")
    r.add_argument("--micro-batch", type=int, default=None,
                   help="per-process forward batch; smaller than batch-size/world-size accumulates gradients")
    r.add_argument("--opt", choices=("rmsprop", "sgd", "adamw"), default="rmsprop", dest="optimizer")
    r.add_argument("--lr", type=float, default=0.045, help="peak learning rate (0.045)")
    r.add_argument("--momentum", type=float, default=0.9)
    r.add_argument("--weight-decay", type=float, default=4e-5,
                   help="L2 (AdamW: decoupled) decay; never on depthwise filters, BatchNorm or biases (4e-5)")
    r.add_argument("--rmsprop-decay", type=float, default=0.9)
    r.add_argument("--rmsprop-eps", type=float, default=1.0)
    r.add_argument("--sched", choices=("exponential", "cosine", "constant"), default="exponential", dest="schedule",
                   help="exponential: TF's lr × decay-rate every decay-epochs (default); cosine; constant")
    r.add_argument("--warmup-epochs", type=float, default=0.0)
    r.add_argument("--decay-rate", type=float, default=0.94)
    r.add_argument("--decay-epochs", type=float, default=2.5)
    r.add_argument("--min-lr-ratio", type=float, default=0.0, help="cosine ends at lr × this")
    r.add_argument("--label-smoothing", type=float, default=0.0)
    r.add_argument("--ema-decay", type=float, default=0.0, help="EMA of weights, e.g. 0.999 (0: off)")
    r.add_argument("--clip-grad", type=float, default=0.0, help="max gradient norm (0: off)")
    r.add_argument("--min-crop", type=float, default=0.35, help="smallest random-resized crop, fraction of area")
    r.add_argument("--no-hflip", action="store_false", dest="hflip", help="no random horizontal flips")

    f = p.add_argument_group("fine-tuning")
    f.add_argument("--weights", default=None, help="start from pretrained weights: a registry NAME or a FILE")
    f.add_argument("--freeze-body", action="store_true", help="train only the classifier")

    e = p.add_argument_group("execution")
    e.add_argument("--amp", choices=("none", "bf16", "auto"), default="none", help="bf16 autocast (CPU or GPU)")
    e.add_argument("--channels-last", action="store_true", help="NHWC memory format")
    e.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm under DDP (GPUs only)")
    e.add_argument("--device", default=None, help="auto (default), cpu, cuda")
    e.add_argument("--threads", type=int, default=None, help="torch intra-op threads per process")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--deterministic", action="store_true", help="deterministic kernels (bit-exact resumes)")
    e.add_argument("--output", default=None, help="run directory (default runs/<model>-<data>-<time>)")
    e.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="continue RUN_DIR from its last.pt (mid-epoch too), under any number of processes; "
                   "only --epochs, --micro-batch, --workers, --device and progress flags may change")
    e.add_argument("--no-progress", action="store_false", dest="progress", default=None, help="no progress bar")
    e.add_argument("--log-every", type=int, default=None, help="progress bar update, in steps (20)")
    p.set_defaults(func=run_train)

    q = subparsers.add_parser("runs", help="list and compare training runs",
                              description="One line per run directory: data, model, epochs, best and last top-1.")
    q.add_argument("paths", nargs="*", default=["runs"], help="run directories or folders of them (default runs/)")
    q.add_argument("--plot", default=None, metavar="PNG", help="write their learning curves into one figure")
    q.add_argument("--json", action="store_true", help="print JSON instead of a table")
    q.set_defaults(func=run_runs)


def _set_help(parser: argparse.ArgumentParser, dest: str, text: str) -> None:
    for action in parser._actions:
        if action.dest == dest:
            action.help = text


def _dataset_classes(data: str) -> int | None:
    return {"fashion-mnist": 10, "cifar10": 10}.get(data.lower())


def run_train(args: argparse.Namespace) -> int:
    from mobilenet.train import TrainConfig, config_for_resume, train

    if args.resume:
        overrides = {k: getattr(args, k) for k in RESUME_OVERRIDES}
        config = config_for_resume(args.resume, **overrides)
        _refuse_recipe_changes(args, config)
        summary = train(config, resume=args.resume)
        return 0 if summary["status"] == "finished" else 130

    num_classes = args.num_classes or _dataset_classes(args.data)
    if num_classes is None:
        num_classes = _count_classes(args.data)
    if args.weights:
        # Fine-tuning: the model flags given must agree with the weights (one line naming the flag
        # otherwise, instead of being ignored), and the weights decide the rest of the architecture.
        model, _ = model_from_args(args, num_classes=num_classes, in_channels=args.in_channels, dropout=args.dropout)
        arch = model.arch_cfg
        del model
    else:
        channels = args.in_channels or (1 if args.data.lower() == "fashion-mnist" else 3)
        arch = arch_config_from_args(args, num_classes=num_classes, in_channels=channels, dropout=args.dropout)
    output = args.output or str(Path("runs") / f"{arch.name}-{Path(args.data).stem}-{time.strftime('%Y%m%d-%H%M%S')}")
    given = {k: getattr(args, k) for k in ("epochs", "num_workers", "progress", "log_every", "device")}
    config = TrainConfig(
        data=args.data, val_data=args.val_data, data_root=args.data_root, train_subset=args.train_subset,
        val_subset=args.val_subset, bad_files=args.bad_files, arch=arch.to_dict(), weights=args.weights,
        freeze_body=args.freeze_body, batch_size=args.batch_size, micro_batch=args.micro_batch,
        optimizer=args.optimizer, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay,
        rmsprop_decay=args.rmsprop_decay, rmsprop_eps=args.rmsprop_eps, schedule=args.schedule,
        warmup_epochs=args.warmup_epochs, decay_rate=args.decay_rate, decay_epochs=args.decay_epochs,
        min_lr_ratio=args.min_lr_ratio, label_smoothing=args.label_smoothing, ema_decay=args.ema_decay,
        clip_grad=args.clip_grad, min_crop=args.min_crop, hflip=args.hflip, amp=args.amp,
        channels_last=args.channels_last, sync_bn=args.sync_bn, seed=args.seed, deterministic=args.deterministic,
        threads=args.threads, output=output, **{k: v for k, v in given.items() if v is not None},
    )
    if args.weights is None and args.freeze_body:
        raise InputError("--freeze-body needs --weights (a body trained from scratch cannot stay frozen)")
    summary = train(config)
    return 0 if summary["status"] == "finished" else 130


# Flags whose value lives in the checkpoint's architecture rather than in its TrainConfig.
ARCH_FLAGS = ("alpha", "variant", "num_classes", "depth_multiplier", "activation", "padding", "rounding",
              "in_channels", "dropout")


def _refuse_recipe_changes(args: argparse.Namespace, config: Any) -> None:
    """A resumed run continues its own recipe; a flag given with --resume that would change it
    (``--resume RUN --lr 0.1``) is refused, not silently ignored. Flags repeating the recorded value
    are harmless; --epochs, --micro-batch, --workers, --device and the progress flags apply."""
    flags = _given_flags(args)
    given = set(flags) - {"resume", "func", *RESUME_OVERRIDES}
    recorded = config.to_dict()
    arch = recorded["arch"]
    refused = []
    for dest in sorted(given):
        value = getattr(args, dest)
        if dest in ARCH_FLAGS:
            same = arch.get(dest) == value
        elif dest == "resolution":
            same = list(arch["resolution"]) == [value, value]
        elif dest in ("height", "width"):
            same = arch["resolution"][0 if dest == "height" else 1] == value
        elif dest == "output":
            same = Path(value).resolve() == Path(args.resume).resolve()
        elif dest in recorded:
            same = recorded[dest] == value
        else:
            same = False
        if not same:
            refused.append(f"{flags[dest]} {value} (the run has {_recorded(dest, recorded)})")
    if refused:
        raise InputError(
            f"--resume {args.resume} continues the run's own recipe; not applied: {', '.join(refused)}. "
            "Only --epochs, --micro-batch, --workers, --device and the progress flags may change; to train "
            f"with other settings start a new run (e.g. --weights {Path(args.resume) / 'best.pt'})"
        )


def _recorded(dest: str, recorded: dict[str, Any]) -> Any:
    arch = recorded["arch"]
    if dest in ("resolution", "height", "width"):
        return "resolution " + "×".join(str(v) for v in arch["resolution"])
    if dest in ARCH_FLAGS:
        return arch.get(dest)
    return recorded.get(dest, "no such setting")


def _given_flags(args: argparse.Namespace) -> dict[str, str]:
    """{destination: option} of the flags written on the command line (not argparse's defaults):
    the train parser parsed again with every default suppressed."""
    argv = list(getattr(args, "argv", None) or [])
    if not argv or argv[0] != "train":
        return {}
    parser = argparse.ArgumentParser(add_help=False)
    register(parser.add_subparsers())
    train_parser = parser._subparsers._group_actions[0].choices["train"]  # type: ignore[union-attr]
    for action in train_parser._actions:
        action.default = argparse.SUPPRESS
    train_parser._defaults.clear()
    given, _ = train_parser.parse_known_args(argv[1:])
    options = {a.dest: max(a.option_strings, key=len) for a in train_parser._actions if a.option_strings}
    return {dest: options.get(dest, dest) for dest in vars(given)}


def _count_classes(data: str) -> int:
    """Class count of a folder tree or CSV, read by the dataset module without loading images."""
    from mobilenet.train import files

    return files.count_classes(data)


def run_runs(args: argparse.Namespace) -> int:
    from mobilenet.train import runs

    found = runs.find_runs([Path(p) for p in args.paths])
    if not found:
        raise InputError(f"no run directories (with config.json) in {' '.join(args.paths)}")
    rows = [runs.describe(r) for r in found]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        header = ("run", "data", "model", "optimizer", "epochs", "best top-1", "last top-1", "train time", "img/s",
                  "status")
        table = [header] + [
            (r["run"], str(r["data"]), r["model"], str(r["optimizer"]), r["epochs"], _pct(r["best_top1"]),
             _pct(r["last_top1"]), f"{r['train_time_s'] / 60:.1f} min",
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
    return 0


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"
