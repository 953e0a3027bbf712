"""The training loop, one process or many under torchrun, read top to bottom.

``train(config)`` builds the model, data, optimizer, schedule and EMA from a ``TrainConfig``,
optionally restores a checkpoint, and runs epochs of: micro-batches (gradient accumulation up to
the global batch, DDP's all-reduce on the last one), an optimizer step, a schedule step, an EMA
update; then validation top-1/top-5, a metrics line, the learning-curve plot and the ``last``
and ``best`` checkpoints. SIGINT/SIGTERM finish the current step, save ``last.pt`` (mid-epoch)
and return; ``train(config_for_resume(run_dir), resume=run_dir)`` continues from there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Subset

from mobilenet.arch import ArchConfig
from mobilenet.cpu import cpu_info
from mobilenet.errors import InputError, MobileNetError
from mobilenet.files import remove_stale_temporaries
from mobilenet.limits import check_memory
from mobilenet.model import MobileNetV1
from mobilenet.train import checkpoint, distributed, runs
from mobilenet.train.config import TrainConfig
from mobilenet.train.data import GlobalBatchSampler, SeededSamples, shard
from mobilenet.train.files import build_splits
from mobilenet.train.optim import ModelEma, build_optimizer, build_scheduler

VAL_BATCH = 256  # validation images per forward pass (at least the micro-batch)


def config_for_resume(run_dir: str | Path, **overrides: Any) -> TrainConfig:
    """The configuration a run was started with (from its last checkpoint), with a few settings
    that do not change the optimisation overridden (epochs to extend a run, workers, progress).

    ``micro_batch`` may change too, when the recorded one does not fit the new number of
    processes: the optimizer still sees the same global batch, only BatchNorm sees other slices."""
    allowed = {"epochs", "num_workers", "progress", "log_every", "device", "micro_batch"}
    bad = set(overrides) - allowed
    if bad:
        raise InputError(f"a resumed run keeps its configuration; only {sorted(allowed)} may change, not {sorted(bad)}")
    ckpt = checkpoint.load(run_dir)
    values = ckpt["config"] | {k: v for k, v in overrides.items() if v is not None}
    values["output"] = str(Path(run_dir))
    return TrainConfig.from_dict(values)


def _resume_differences(ckpt: dict[str, Any], config: TrainConfig, ctx: distributed.Context,
                        amp: torch.dtype | None) -> list[str]:
    """The allowed changes on resume that still change the numbers (device, autocast, BatchNorm's
    micro-batch): said out loud rather than silently."""
    changes = []
    if ckpt.get("device", ctx.device.type) != ctx.device.type:
        changes.append(f"the run trained on {ckpt['device']}, it continues on {ctx.device.type}")
    if ckpt.get("amp", str(amp)) != str(amp):
        changes.append(f"autocast was {ckpt['amp']}, it is now {amp} (--amp {config.amp} on this machine)")
    saved_micro = ckpt.get("micro_batch", ckpt["config"].get("micro_batch"))
    if saved_micro is not None and saved_micro != config.micro_batch:
        changes.append(f"BatchNorm saw micro-batches of {saved_micro}, now {config.micro_batch}")
    return changes


class StopRequest:
    """SIGINT/SIGTERM set a flag; the loop saves and exits after the current step."""

    def __init__(self, announce: bool = True) -> None:
        self.announce = announce  # only rank 0 speaks
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:  # a second Ctrl-C: the user really wants out
            raise KeyboardInterrupt
        self.requested = True
        if self.announce:
            print(f"\n{signal.Signals(signum).name}: saving a checkpoint after this step", file=sys.stderr)

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def autocast_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    if mode == "none":
        return None
    if device.type == "cuda":
        supported = torch.cuda.is_bf16_supported()
    else:
        # oneDNN "supports" bf16 on any AVX-512 CPU by emulating it, many times slower than fp32:
        # only native bf16 arithmetic counts (mobilenet.cpu, the one place that asks the CPU).
        supported = torch.backends.mkldnn.is_available() and cpu_info().native_bf16
    if mode == "bf16" and not supported:
        raise InputError(f"bf16 autocast needs native bf16 on this {device.type} ({cpu_info().summary()}); "
                         "use --amp none or auto")
    return torch.bfloat16 if supported else None


def build_model(config: TrainConfig, arch: ArchConfig, resuming: bool) -> MobileNetV1:
    if config.weights and not resuming:
        from mobilenet.weights import FetchError, load_pretrained

        # The weights fix the layers (and in_channels: the data adapts to them); the classifier is
        # replaced when the class count differs; input size and dropout are ours to choose.
        try:
            model = load_pretrained(config.weights, num_classes=arch.num_classes, resolution=arch.resolution,
                                    dropout=arch.dropout)
        except FetchError as err:  # offline, no local copy: the user's to fix, in one message
            raise InputError(f"--weights {config.weights}: {err}") from err
        return model.train()
    return MobileNetV1(arch)


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, ctx: distributed.Context, amp: torch.dtype | None,
             channels_last: bool) -> dict[str, float]:
    """Loss, top-1 and top-5 over this process's shard, summed over all processes."""
    model.eval()
    loss_sum = top1 = top5 = count = 0.0
    for x, y in loader:
        if len(y) == 0:
            continue
        x = x.to(ctx.device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        y = y.to(ctx.device)
        with torch.autocast(ctx.device.type, dtype=amp, enabled=amp is not None):
            logits = model(x)
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        k = min(5, logits.shape[1])
        hits = logits.topk(k, dim=1).indices.eq(y[:, None])
        top1 += hits[:, 0].sum().item()
        top5 += hits.any(dim=1).sum().item()
        count += len(y)
    loss_sum, top1, top5, count = distributed.all_reduce_sum([loss_sum, top1, top5, count], ctx)
    if not count:  # (summed: every process sees it and stops together)
        raise InputError("none of the validation images could be read (each unreadable file is named above)")
    return {"loss": loss_sum / count, "top1": top1 / count, "top5": top5 / count}


def agreed_batches(loader: DataLoader, ctx: distributed.Context) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The loader's micro-batches, with the processes of a DDP run agreeing on each one first.

    Every process must join every gradient all-reduce, so one whose micro-batch is entirely
    unreadable (``--bad-files skip``), or whose loader raised on a bad file (``stop``), cannot just
    stop: the others would wait in the collective until its timeout (30 minutes). One small
    all-reduce per micro-batch lets all of them stop at once, each with a one-line error. In one
    process an empty micro-batch is simply skipped by the caller."""
    iterator = iter(loader)
    while True:
        error: MobileNetError | None = None
        try:
            x, y = next(iterator)
        except StopIteration:  # (every process has the same number of micro-batches)
            return
        except MobileNetError as err:
            err = _worker_error(err)
            if not ctx.distributed:
                raise err from None
            error, x, y = err, torch.empty(0), torch.empty(0)
        if ctx.distributed:
            mine = 2 if error is not None else int(len(y) == 0)
            if distributed.max_over_processes(mine, ctx):
                if error is not None:
                    raise error
                if mine:
                    raise InputError(
                        f"every image of a micro-batch of process {ctx.rank} was unreadable (--bad-files skip, "
                        "named above); under DDP each process needs data at every step: fix or remove the "
                        "files, or use a larger --micro-batch")
                raise InputError(f"process {ctx.rank} stops with the others: another process found unreadable "
                                 "training data (its message names the files)")
        yield x, y


def _worker_error(err: MobileNetError) -> MobileNetError:
    """A DataLoader worker's error comes back with the worker's whole traceback in its message;
    the user's error is its last line (``mobilenet.preprocess.ImageError: a.png: cannot decode``)."""
    text = str(err)
    if "Original Traceback" not in text:
        return err
    last = text.strip().splitlines()[-1]
    prefix = f"{type(err).__module__}.{type(err).__qualname__}: "
    return type(err)(last.removeprefix(prefix).removeprefix(f"{type(err).__qualname__}: "))


def train(config: TrainConfig, *, resume: str | Path | None = None,
          on_step: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Train (or continue) one run; returns its summary. ``on_step(step)`` is called after every
    optimizer step (for tests and tools); under torchrun every process runs this function."""
    # Settings the run changes for the whole process, put back afterwards: a library call (or the
    # next test in the same process) must not inherit this run's threads or deterministic mode.
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    benchmark = torch.backends.cudnn.benchmark
    ctx = distributed.setup(config.device)
    try:
        return _train(config, ctx, resume, on_step)
    finally:
        distributed.cleanup(ctx)
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
        torch.backends.cudnn.benchmark = benchmark


def _train(config: TrainConfig, ctx: distributed.Context, resume: str | Path | None,
           on_step: Callable[[int], None] | None) -> dict[str, Any]:
    main = ctx.is_main
    log = print if main else (lambda *a, **k: None)
    run_dir = Path(config.output)
    ckpt = checkpoint.load(resume) if resume is not None else None
    if ckpt is None and (run_dir / "last.pt").is_file():
        raise InputError(f"{run_dir} already holds a run (last.pt); continue it with --resume {run_dir}, "
                         "or give a new --output")

    # ---- reproducibility -------------------------------------------------------------------
    if config.threads:
        torch.set_num_threads(config.threads)
    # Recorded (config.json, checkpoints) as the count actually used, so a resume uses it again.
    config = dataclasses.replace(config, threads=torch.get_num_threads())
    torch.manual_seed(config.seed + ctx.rank)  # ranks differ only in dropout draws
    if config.deterministic:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False

    # ---- model -----------------------------------------------------------------------------
    arch = ArchConfig.from_dict(ckpt["arch"] if ckpt else config.arch)
    model = build_model(config, arch, resuming=ckpt is not None)
    arch = model.arch_cfg
    if ckpt:
        model.load_state_dict(ckpt["model"])
    if config.freeze_body:
        model.requires_grad_(False)
        model.classifier.requires_grad_(True)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    model.to(ctx.device, memory_format=memory_format)
    if config.sync_bn and ctx.distributed:
        if ctx.device.type == "cpu":
            raise InputError("--sync-bn needs GPUs (PyTorch's SyncBatchNorm does not run on CPU)")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    raw_model = model
    micro, accumulation = config.accumulation_steps(ctx.world_size)
    # Before any batch exists: what training this model at this micro-batch needs, from the cost model.
    check_memory(arch, micro, mode="training", optimizer=config.optimizer, ema=config.ema_decay > 0,
                 device=ctx.device.type)
    check_memory(arch, max(VAL_BATCH, micro), mode="inference", device=ctx.device.type)
    if ctx.distributed:
        model = DistributedDataParallel(model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)

    # ---- data ------------------------------------------------------------------------------
    splits = build_splits(config, arch.resolution, arch.in_channels)
    # Recorded, so a resume under another world size keeps the BatchNorm batch (and so the maths).
    config = dataclasses.replace(config, micro_batch=micro)
    sampler = GlobalBatchSampler(len(splits.train), config.batch_size, rank=ctx.rank, world_size=ctx.world_size,
                                 accumulation=accumulation, seed=config.seed)
    steps_per_epoch = sampler.steps_per_epoch
    workers = {"num_workers": config.num_workers, "pin_memory": ctx.device.type == "cuda", "collate_fn": splits.collate}
    # Its own generator, so creating an iterator (worker seeds) never draws from the global RNG.
    train_loader = DataLoader(SeededSamples(splits.train, config.seed), batch_sampler=sampler,
                              generator=torch.Generator().manual_seed(config.seed), **workers)
    val_set = Subset(splits.val, shard(len(splits.val), ctx.rank, ctx.world_size))
    val_loader = DataLoader(val_set, batch_size=max(VAL_BATCH, micro), **workers)

    # ---- optimisation ----------------------------------------------------------------------
    optimizer = build_optimizer(raw_model, config)
    scheduler = build_scheduler(optimizer, config, steps_per_epoch)
    ema = ModelEma(raw_model, config.ema_decay) if config.ema_decay > 0 else None
    amp = autocast_dtype(config.amp, ctx.device)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)

    epoch, step, step_in_epoch = 0, 0, 0
    best = {"top1": -1.0, "epoch": -1}
    epoch_loss, epoch_samples, epoch_time = 0.0, 0, 0.0
    if ckpt:
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if ema is not None and "ema" in ckpt:
            ema.load_state_dict(ckpt["ema"], int(ckpt.get("ema_updates", ckpt["step"])))
        epoch, step, step_in_epoch = int(ckpt["epoch"]), int(ckpt["step"]), int(ckpt.get("step_in_epoch", 0))
        best = dict(ckpt.get("metrics", best))
        # best.pt is written before last.pt: after a kill between the two it holds a better epoch
        # than last.pt records, and that epoch is the best one (its weights are on disk).
        on_disk = checkpoint.best_record(run_dir)
        if on_disk is not None and on_disk["top1"] > best["top1"]:
            best = on_disk
        if main:  # the sums over all processes of the interrupted epoch so far, counted once
            epoch_loss, epoch_samples = float(ckpt.get("epoch_loss", 0.0)), int(ckpt.get("epoch_samples", 0))
        epoch_time = float(ckpt.get("epoch_time", 0.0))
        if main and ckpt.get("rng"):
            checkpoint.set_rng_state(ckpt["rng"])
        else:  # a new rank (the world size may differ from the run that saved): a fresh stream
            torch.manual_seed(config.seed * 1_000_003 + ctx.rank * 7919 + step)
        log(f"resuming {run_dir} at epoch {epoch + 1}, step {step_in_epoch}/{steps_per_epoch} "
            f"(saved by {ckpt.get('world_size', 1)} process(es), now {ctx.world_size})")
        for change in _resume_differences(ckpt, config, ctx, amp):
            log(f"note: {change}; the resumed run will not reproduce an uninterrupted one exactly")

    def state(epoch: int, step_in_epoch: int) -> dict[str, Any]:
        s: dict[str, Any] = {
            "model": raw_model.state_dict(), "arch": arch.to_dict(),
            "preprocess": splits.eval_transform.preprocess_settings(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "epoch": epoch, "step": step, "step_in_epoch": step_in_epoch, "rng": checkpoint.rng_state(),
            "config": config.to_dict(), "metrics": best, "world_size": ctx.world_size,
            "epoch_loss": epoch_loss, "epoch_samples": epoch_samples, "epoch_time": epoch_time,
            "classes": list(splits.classes),
            # What "auto" and the world size resolved to: a resume compares them with its own.
            "device": ctx.device.type, "amp": str(amp), "micro_batch": micro,
        }
        if ema is not None:
            s["ema"], s["ema_updates"] = ema.state_dict(), ema.updates
        return s

    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        # A process killed mid-write left its temporaries; nothing else writes here yet.
        for stale in remove_stale_temporaries(run_dir):
            log(f"removed {stale.name}, left by a run killed while writing it")
        runs.write_json(run_dir / runs.CONFIG, config.to_dict())
        log(f"{arch.name}: {len(splits.train)} training / {len(splits.val)} validation images, "
            f"{ctx.world_size} process(es) on {ctx.device}, global batch {config.batch_size} = "
            f"{ctx.world_size} × {accumulation} × {micro}, {steps_per_epoch} steps per epoch -> {run_dir}")

    # ---- epochs ----------------------------------------------------------------------------
    status = "finished"
    with StopRequest(announce=main) as stop:
        while epoch < config.epochs:
            sampler.set_epoch(epoch, step_in_epoch)
            model.train()
            if config.freeze_body:  # the frozen body keeps its BatchNorm statistics too
                for m in raw_model.modules():
                    if isinstance(m, nn.modules.batchnorm._BatchNorm) and not m.weight.requires_grad:
                        m.eval()
            bar = _progress(config, main, epoch, steps_per_epoch, step_in_epoch)
            tick, window_loss, window_n = time.perf_counter(), 0.0, 0
            for i, (x, y) in enumerate(agreed_batches(train_loader, ctx)):
                x = x.to(ctx.device, non_blocking=True, memory_format=memory_format)
                y = y.to(ctx.device, non_blocking=True)
                last_micro = (i + 1) % accumulation == 0
                if len(y) > 0:  # (in one process, a micro-batch of only unreadable files adds nothing)
                    # Gradients are all-reduced only on the last micro-batch of a global batch.
                    sync = contextlib.nullcontext() if last_micro or not ctx.distributed else model.no_sync()
                    with sync:
                        with torch.autocast(ctx.device.type, dtype=amp, enabled=amp is not None):
                            loss = criterion(model(x), y)
                        (loss / accumulation).backward()
                    loss_value = loss.item()
                    if not math.isfinite(loss_value):
                        raise RuntimeError(
                            f"the loss became {loss_value} at step {step + 1}; lower --lr or add --clip-grad"
                        )
                    window_loss += loss_value * len(y)
                    window_n += len(y)
                if not last_micro:
                    continue
                if config.clip_grad > 0:
                    nn.utils.clip_grad_norm_(raw_model.parameters(), config.clip_grad)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
                if ema is not None:
                    ema.update(raw_model)
                step += 1
                step_in_epoch += 1
                if bar is not None:
                    bar.update(1)
                    if step_in_epoch % config.log_every == 0 or step_in_epoch == steps_per_epoch:
                        elapsed = time.perf_counter() - tick
                        bar.set_postfix(loss=f"{window_loss / max(window_n, 1):.3f}",
                                        lr=f"{scheduler.get_last_lr()[0]:.2e}",
                                        img_s=f"{window_n * ctx.world_size / max(elapsed, 1e-9):.0f}")
                if step_in_epoch % config.log_every == 0 or step_in_epoch == steps_per_epoch:
                    epoch_time += time.perf_counter() - tick
                    epoch_loss += window_loss
                    epoch_samples += window_n
                    tick, window_loss, window_n = time.perf_counter(), 0.0, 0
                if on_step is not None:
                    on_step(step)
                if distributed.any_process(stop.requested, ctx):
                    epoch_time += time.perf_counter() - tick
                    epoch_loss, epoch_samples = distributed.all_reduce_sum(
                        [epoch_loss + window_loss, float(epoch_samples + window_n)], ctx)
                    if main:
                        checkpoint.save_atomic(state(epoch, step_in_epoch), run_dir / "last.pt")
                    status = "interrupted"
                    break
            if bar is not None:
                bar.close()
            if status == "interrupted":
                break

            # ---- end of epoch: validate, log, checkpoint -------------------------------------
            train_loss, train_n = distributed.all_reduce_sum([epoch_loss, float(epoch_samples)], ctx)
            val = evaluate(raw_model, val_loader, ctx, amp, config.channels_last)
            ema_val = evaluate(ema.module, val_loader, ctx, amp, config.channels_last) if ema is not None else None
            metric = (ema_val or val)["top1"]
            improved = metric > best["top1"]
            if improved:
                best = {"top1": metric, "epoch": epoch}
            row = {
                "epoch": epoch, "step": step, "lr": scheduler.get_last_lr()[0],
                "train_loss": train_loss / max(train_n, 1), "val_loss": val["loss"],
                "val_top1": val["top1"], "val_top5": val["top5"],
                "ema_top1": ema_val["top1"] if ema_val else None, "ema_top5": ema_val["top5"] if ema_val else None,
                "best_metric": best["top1"], "epoch_time_s": epoch_time,
                "images_per_s": train_n / max(epoch_time, 1e-9), "world_size": ctx.world_size,
                # Images the sampler handed out but that could not be read (--bad-files skip).
                "skipped_images": steps_per_epoch * config.batch_size - round(train_n),
            }
            epoch += 1
            step_in_epoch, epoch_loss, epoch_samples, epoch_time = 0, 0.0, 0, 0.0
            if main:
                runs.append_metrics(run_dir, row)
                # best.pt first: once last.pt records a new best, its weights are already on disk.
                # A kill between the two leaves last.pt at the previous epoch, which the resume
                # repeats, and best.pt's own record (read on resume) names what it holds.
                if improved:
                    checkpoint.save_atomic(state(epoch, 0), run_dir / "best.pt")
                checkpoint.save_atomic(state(epoch, 0), run_dir / "last.pt")
                runs.plot_curves([run_dir], run_dir / "curves.png")
                ema_text = f", EMA top-1 {100 * ema_val['top1']:.2f}%" if ema_val else ""
                log(f"epoch {epoch}/{config.epochs}: train loss {row['train_loss']:.4f}, val loss {val['loss']:.4f}, "
                    f"top-1 {100 * val['top1']:.2f}%, top-5 {100 * val['top5']:.2f}%{ema_text}, "
                    f"{row['images_per_s']:.0f} img/s, {row['epoch_time_s']:.0f} s")

    rows = runs.read_metrics(run_dir) if main else []
    summary = {
        "status": status, "run_dir": str(run_dir), "epochs_done": epoch, "step": step,
        "best_top1": best["top1"], "best_epoch": best["epoch"] + 1,
        "final_top1": rows[-1]["val_top1"] if rows else None,
        "train_time_s": sum(r["epoch_time_s"] for r in rows), "world_size": ctx.world_size,
        "skipped_images": sum(r.get("skipped_images", 0) for r in rows),
    }
    if main:
        runs.write_json(run_dir / runs.SUMMARY, summary)
        if status == "interrupted":
            log(f"interrupted at epoch {epoch + 1}, step {step_in_epoch}/{steps_per_epoch}; "
                f"continue with: mobilenet train --resume {run_dir}")
        else:
            log(f"done: best top-1 {100 * best['top1']:.2f}% (epoch {best['epoch'] + 1}), "
                f"{summary['train_time_s']:.0f} s of training; checkpoints in {run_dir}")
    summary["model"] = raw_model
    return summary


def _progress(config: TrainConfig, main: bool, epoch: int, total: int, initial: int) -> Any:
    if not (main and config.progress):
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=f"epoch {epoch + 1}/{config.epochs}", unit="step",
                dynamic_ncols=True, mininterval=1.0, leave=True, file=sys.stderr)
