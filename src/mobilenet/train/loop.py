"""The training loop, one process or many under torchrun, read top to bottom.

``train(config)`` takes the run directory's lock (rank 0, the one writer), sets up this process
(``Setup``: the data, the model as the steps call it, autocast), starts a ``RunState`` or restores
it from a checkpoint (the model, optimizer, schedule, EMA, every process's random state and the
position in the run; a group torchrun restarted finds its own), and runs epochs.
``train_one_epoch`` accumulates micro-batches up to the global batch (DDP's all-reduce on the last
one), then takes an optimizer step, a schedule step and an EMA update; ``end_epoch`` then
``validate``s, logs a metrics row, draws the learning curves and writes ``best.pt`` (when it
improved) before ``last.pt``. SIGINT/SIGTERM finish the current step, save ``last.pt``
(mid-epoch) and return; ``train(config_for_resume(run_dir), resume=run_dir)`` continues from there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from mobilenet.accuracy import accuracy
from mobilenet.datasets import collate_skipping_bad
from mobilenet.errors import InputError, option
from mobilenet.files import remove_stale_temporaries
from mobilenet.train import checkpoint, distributed, runs
from mobilenet.train.checkpoint import RunState
from mobilenet.train.config import TrainConfig
from mobilenet.train.data import GlobalBatchSampler, SeededSamples, Splits, default_workers
from mobilenet.train.execution import StopRequest, non_finite_loss
from mobilenet.train.files import build_splits
from mobilenet.train.lock import RunLock, describe_previous
from mobilenet.train.network import build_model, pretrained_for, train_mode
from mobilenet.train.progress import LossWindow, ProgressBar
from mobilenet.train.step import CompileClock, ExecutionPlan, build_step, plan_execution, restore_pads

if TYPE_CHECKING:
    from mobilenet.weights import LoadedWeights

VAL_BATCH = 256  # validation images per forward pass (at least the micro-batch)


def val_batch(config: TrainConfig) -> int:
    return max(VAL_BATCH, config.micro_batch or 1)


@dataclass
class TrainResult:
    """How a run ended; everything but the model is also its ``summary.json``."""

    status: str  # "finished", or "interrupted" by a signal (last.pt holds the position)
    run_dir: str
    epochs_done: int
    step: int
    best_top1: float  # fractions of the validation images, as in metrics.jsonl
    best_epoch: int  # counted from 1
    final_top1: float | None  # (the processes other than rank 0 read no metrics: None, 0)
    train_time_s: float
    world_size: int
    skipped_images: int
    model: nn.Module = field(repr=False)  # the trained model (unwrapped), in this process

    @property
    def finished(self) -> bool:
        return self.status == "finished"

    def summary(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "model"}


@dataclass(frozen=True)
class Setup:
    """What this process trains with, fixed for the whole run."""

    config: TrainConfig
    ctx: distributed.Context
    # What a micro-batch calls, step(images, labels) -> loss: the model and the loss under autocast,
    # compiled or not (``plan``), in DDP's wrapper under torchrun. It shares the model's parameters.
    step: nn.Module
    plan: ExecutionPlan
    clock: CompileClock
    splits: Splits
    sampler: GlobalBatchSampler
    train_loader: DataLoader
    accumulation: int  # micro-batches per optimizer step, in this process
    on_step: Callable[[int], None] | None

    @property
    def run_dir(self) -> Path:
        return Path(self.config.output)

    @property
    def amp(self) -> torch.dtype | None:
        return self.plan.amp

    @property
    def memory_format(self) -> torch.memory_format:
        return self.plan.memory_format

    @property
    def steps_per_epoch(self) -> int:
        return self.sampler.steps_per_epoch

    def log(self, message: str) -> None:
        if self.ctx.is_main:  # only rank 0 speaks
            print(message)


def train(config: TrainConfig, *, weights: LoadedWeights | None = None, resume: str | Path | None = None,
          on_step: Callable[[int], None] | None = None) -> TrainResult:
    """Train (or continue) one run. ``weights`` are the pretrained weights of a fine-tune, already
    loaded (``model_to_train``; loaded here from ``config.weights`` otherwise); ``resume`` a run
    directory (or checkpoint) to continue. ``on_step(step)`` is called after every optimizer step
    (for tests and tools). Under torchrun every process runs this function. On a CPU, glibc is
    asked to keep freed memory for the rest of the process (``ExecutionPlan.apply_to_process``)."""
    # Settings the run changes for the whole process, put back afterwards: a library call (or the
    # next test in the same process) must not inherit this run's threads or deterministic mode.
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    benchmark = torch.backends.cudnn.benchmark
    ctx = distributed.setup(config.device)
    try:
        with _sole_writer(Path(config.output), ctx):
            return _train(config, ctx, weights, resume, on_step)
    finally:
        distributed.cleanup(ctx)
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
        torch.backends.cudnn.benchmark = benchmark


@contextlib.contextmanager
def _sole_writer(run_dir: Path, ctx: distributed.Context) -> Iterator[None]:
    """Rank 0, the one process that writes, holds the run directory's lock for the whole run;
    when another process holds it, every process of this run stops before anything is written."""
    lock, refused = RunLock(run_dir), None
    if ctx.is_main:
        try:
            lock.acquire()
        except InputError as err:
            refused = err
    if distributed.max_over_processes(int(refused is not None), ctx):
        raise refused or InputError(f"process {ctx.rank} stops with process 0, which found {run_dir} in use by "
                                    "another process (its message names it)")
    try:
        if lock.previous is not None:
            print(f"note: {describe_previous(lock.previous)}", file=sys.stderr)
        yield
    finally:
        lock.release()


def _train(config: TrainConfig, ctx: distributed.Context, weights: LoadedWeights | None, resume: str | Path | None,
           on_step: Callable[[int], None] | None) -> TrainResult:
    source, ckpt, config = _run_to_continue(config, resume, ctx)
    config = _make_reproducible(config, ctx)
    micro, accumulation = config.accumulation_steps(ctx.world_size)
    # Recorded, so a resume under another world size keeps the BatchNorm batch (and so the maths).
    config = dataclasses.replace(config, micro_batch=micro)
    if ckpt is None and weights is None:
        weights = pretrained_for(config)
    model = build_model(config, None if ckpt else weights, ctx.device, micro_batch=micro,
                        val_batch=val_batch(config), sync_bn=config.sync_bn and ctx.distributed)
    setup = _setup(config, ctx, model, accumulation, on_step)
    facts = {"preprocess": setup.splits.preprocess.to_dict(), "classes": list(setup.splits.classes),
             "world_size": ctx.world_size, "device": ctx.device.type, "amp": str(setup.amp),
             "compiled": setup.plan.compile,
             "train_samples": len(setup.splits.train), "launch": distributed.launch()}
    if ckpt is None:
        state = RunState.start(config, model, setup.steps_per_epoch, facts, scaler=setup.plan.needs_scaler)
    else:
        state = RunState.from_checkpoint(ckpt, config, model, setup.steps_per_epoch, facts, rank=ctx.rank,
                                         scaler=setup.plan.needs_scaler)
        setup.log(f"resuming {config.output} from {source.name} at epoch {state.epoch + 1}, step "
                  f"{state.step_in_epoch}/{setup.steps_per_epoch} (saved by {ckpt.get('world_size', 1)} "
                  f"process(es), now {ctx.world_size})")
        for note in checkpoint.resume_notes(ckpt, config, facts) if ctx.is_main else []:
            print(f"note: {note}; the resumed run will not reproduce an uninterrupted one exactly", file=sys.stderr)
    if ctx.is_main:
        _open_run_dir(setup)

    status = "finished"
    with StopRequest(announce=ctx.is_main) as stop:
        while state.epoch < config.epochs:
            if not train_one_epoch(state, setup, stop):
                status = "interrupted"
                break
            end_epoch(state, setup)
    return _finish(state, setup, status)


def _run_to_continue(config: TrainConfig, resume: str | Path | None,
                     ctx: distributed.Context) -> tuple[Path | None, dict[str, Any] | None, TrainConfig]:
    """The checkpoint this run continues, its contents (None, None: a new run), and the
    configuration it continues with. ``resume`` names it. A worker group that torchrun restarted
    (``--max-restarts``) runs its command again: it continues the run its own launch saved.
    Otherwise a new run never writes over another run's checkpoints."""
    if resume is not None:
        ckpt = checkpoint.load(resume)  # (which names a missing checkpoint)
        return checkpoint.find(resume), ckpt, config
    found = checkpoint.find(config.output)
    restarted = found is not None and distributed.restart_count() > 0
    ckpt = checkpoint.load(found) if restarted and ctx.is_main else None
    own = ckpt is not None and ckpt.get("launch") is not None and ckpt["launch"] == distributed.launch()
    # Rank 0 decides (the launch is named by its own agent), the others follow.
    if distributed.max_over_processes(int(own), ctx):
        ckpt = ckpt or checkpoint.load(found or config.output)
        return found, ckpt, dataclasses.replace(checkpoint.read_config(ckpt), output=config.output)
    if found is None:
        return None, None, config
    raise InputError(f"{config.output} already holds a run ({found.name}); continue it with "
                     f"{option('resume', config.output)}, or give a new {option('output')}")


def _make_reproducible(config: TrainConfig, ctx: distributed.Context) -> TrainConfig:
    """Threads, seeds and deterministic kernels. The thread count used (the machine's default
    when not given) is recorded in the returned config: it changes how sums are split, and a
    resume sets it again."""
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed + ctx.rank)  # ranks differ only in dropout draws
    if config.deterministic:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    # The loader processes "auto" chose are recorded too (a resume may change them: --workers).
    workers = config.num_workers if config.num_workers is not None else default_workers()
    return dataclasses.replace(config, threads=torch.get_num_threads(), num_workers=workers)


def _setup(config: TrainConfig, ctx: distributed.Context, model: nn.Module, accumulation: int,
           on_step: Callable[[int], None] | None) -> Setup:
    splits = build_splits(config)
    sampler = GlobalBatchSampler(len(splits.train), config.batch_size, rank=ctx.rank, world_size=ctx.world_size,
                                 accumulation=accumulation, seed=config.seed)
    plan = plan_execution(config, ctx.device, sampler.steps_per_epoch * config.epochs)
    if ctx.is_main:
        print(plan.describe(), file=sys.stderr, flush=True)
    plan.apply_to_process()  # before the loader's workers start (forked ones inherit it)
    if ctx.device.type == "cuda":
        torch.backends.cudnn.benchmark = not config.deterministic  # fixed shapes: cuDNN times its algorithms once
    # Decoding and augmentation in worker processes that live for the whole run; pinned batches
    # copy to a GPU asynchronously. Its own generator, so creating an iterator (worker seeds)
    # never draws from the global RNG.
    train_loader = DataLoader(SeededSamples(splits.train, config.seed), batch_sampler=sampler,
                              num_workers=config.num_workers, persistent_workers=config.num_workers > 0,
                              pin_memory=ctx.device.type == "cuda",
                              collate_fn=collate_skipping_bad, generator=torch.Generator().manual_seed(config.seed))
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    step = build_step(model, criterion, plan)
    if ctx.distributed:
        step = DistributedDataParallel(step, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
    clock = CompileClock(plan.compile, log=None if ctx.is_main else (lambda _line: None))
    return Setup(config, ctx, step, plan, clock, splits, sampler, train_loader, accumulation, on_step)


def _open_run_dir(setup: Setup) -> None:
    config, ctx = setup.config, setup.ctx
    setup.run_dir.mkdir(parents=True, exist_ok=True)
    # A process killed mid-write left its temporaries; nothing else writes here yet.
    for stale in remove_stale_temporaries(setup.run_dir):
        setup.log(f"removed {stale.name}, left by a run killed while writing it")
    runs.write_json(setup.run_dir / runs.CONFIG, config.to_dict())
    setup.log(f"{config.arch.name}: {len(setup.splits.train)} training / {len(setup.splits.val)} validation images, "
              f"{ctx.world_size} process(es) on {ctx.device}, global batch {config.batch_size} = "
              f"{ctx.world_size} × {setup.accumulation} × {config.micro_batch}, {setup.steps_per_epoch} steps "
              f"per epoch -> {setup.run_dir}")


# --------------------------------------------------------------------------------------------
# One epoch


def train_one_epoch(state: RunState, setup: Setup, stop: StopRequest) -> bool:
    """Train the rest of epoch ``state.epoch``: micro-batches accumulate gradients up to the
    global batch, then one optimizer step. False when a signal stopped it (``last.pt`` then holds
    the position inside the epoch)."""
    config, ctx = setup.config, setup.ctx
    setup.sampler.set_epoch(state.epoch, state.step_in_epoch)
    train_mode(setup.step, config.freeze_body)
    window = LossWindow()
    with ProgressBar(state, steps=setup.steps_per_epoch, epochs=setup.config.epochs, world_size=setup.ctx.world_size,
                     show=setup.ctx.is_main and setup.config.progress) as bar:
        for i, (x, y) in enumerate(distributed.agreed_batches(setup.train_loader, ctx)):
            last_micro = (i + 1) % setup.accumulation == 0
            window.add(*_forward_backward(setup, state, x, y, last_micro))
            if not last_micro:
                continue
            _optimizer_step(state, config.clip_grad)
            log_point = state.step_in_epoch % config.log_every == 0 or state.step_in_epoch == setup.steps_per_epoch
            bar.step(state, window, log_point)
            if log_point:
                window.fold_into(state)
            if setup.on_step is not None:
                setup.on_step(state.step)
            if distributed.any_process(stop.requested, ctx):
                window.fold_into(state)
                state.epoch_loss, state.epoch_samples = distributed.all_reduce_sum(
                    [state.epoch_loss, float(state.epoch_samples)], ctx)
                rng = distributed.gather_to_main(checkpoint.rng_state(), ctx)
                if ctx.is_main:
                    checkpoint.save_atomic(state.to_checkpoint(rng), setup.run_dir / "last.pt")
                return False
    return True


def _forward_backward(setup: Setup, state: RunState, x: torch.Tensor, y: torch.Tensor,
                      last_micro: bool) -> tuple[float, int]:
    """One micro-batch's forward and backward pass; (the loss summed over its images, images)."""
    ctx = setup.ctx
    if len(y) == 0:  # (in one process, a micro-batch of only unreadable files adds nothing)
        return 0.0, 0
    x = x.to(ctx.device, non_blocking=True, memory_format=setup.memory_format)
    y = y.to(ctx.device, non_blocking=True)
    # Gradients are all-reduced only on the last micro-batch of a global batch.
    sync = contextlib.nullcontext() if last_micro or not ctx.distributed else setup.step.no_sync()
    with sync, setup.clock.first_step():
        loss = setup.step(x, y)
        scaled = loss / setup.accumulation
        (state.scaler.scale(scaled) if state.scaler is not None else scaled).backward()
    value = loss.item()
    if not math.isfinite(value):
        raise non_finite_loss(value, state.step, state.model, x, setup.config,
                              lr=state.scheduler.get_last_lr()[0], autocast=setup.amp is not None)
    return value * len(y), len(y)


def _optimizer_step(state: RunState, clip_grad: float) -> None:
    scaler = state.scaler  # fp16: the gradients are scaled up, and a step that overflowed is skipped
    if clip_grad > 0:
        if scaler is not None:
            scaler.unscale_(state.optimizer)
        nn.utils.clip_grad_norm_(state.model.parameters(), clip_grad)
    if scaler is not None:
        scaler.step(state.optimizer)
        scaler.update()
    else:
        state.optimizer.step()
    state.optimizer.zero_grad(set_to_none=True)
    state.scheduler.step()
    if state.ema is not None:
        state.ema.update(state.model)
    state.step += 1
    state.step_in_epoch += 1


# --------------------------------------------------------------------------------------------
# The end of an epoch


def validate(model: nn.Module, setup: Setup) -> dict[str, float]:
    """Loss, top-1 and top-5 (fractions) of ``model`` on the validation data, by
    ``mobilenet.accuracy``, the project's one evaluation: under torchrun each process takes its
    shard and the counts are summed. In fp32 whatever the steps autocast to, eager: the top-1 a
    run logs is what ``mobilenet evaluate`` reports on its checkpoint."""
    model.eval()
    ctx = setup.ctx

    def predict(images: torch.Tensor) -> torch.Tensor:
        images = images.to(ctx.device, memory_format=setup.memory_format)
        with torch.no_grad():
            return model(images).float().cpu()

    result = accuracy(predict, setup.splits.val, batch_size=val_batch(setup.config),
                      num_workers=setup.config.num_workers, progress=False, device=str(ctx.device), loss=True)
    return {"loss": result["loss"], "top1": result["top1"] / 100, "top5": result["top5"] / 100}


def end_epoch(state: RunState, setup: Setup) -> None:
    """Validate (the EMA weights too), log the epoch's metrics, and move to the next epoch; rank
    0 writes its row, ``best.pt`` when it improved, then ``last.pt``, and the learning curves."""
    config, ctx = setup.config, setup.ctx
    train_loss, train_n = distributed.all_reduce_sum([state.epoch_loss, float(state.epoch_samples)], ctx)
    val = validate(state.model, setup)
    ema_val = validate(state.ema.module, setup) if state.ema is not None else None
    metric = (ema_val or val)["top1"]
    improved = metric > state.best["top1"]
    if improved:
        state.best = {"top1": metric, "epoch": state.epoch}
    row = {
        "epoch": state.epoch, "step": state.step, "lr": state.scheduler.get_last_lr()[0],
        "train_loss": train_loss / max(train_n, 1), "val_loss": val["loss"],
        "val_top1": val["top1"], "val_top5": val["top5"],
        "ema_top1": ema_val["top1"] if ema_val else None, "ema_top5": ema_val["top5"] if ema_val else None,
        "best_metric": state.best["top1"], "epoch_time_s": state.epoch_time,
        "images_per_s": train_n / max(state.epoch_time, 1e-9), "world_size": ctx.world_size,
        # Images the sampler handed out but that could not be read (--bad-files skip).
        "skipped_images": setup.steps_per_epoch * config.batch_size - round(train_n),
    }
    state.next_epoch()
    rng = distributed.gather_to_main(checkpoint.rng_state(), ctx)  # every process's stream, for rank 0 to save
    if not ctx.is_main:
        return
    runs.append_metrics(setup.run_dir, row)
    # best.pt first: once last.pt records a new best, its weights are already on disk. A kill
    # between the two leaves last.pt at the previous epoch, which the resume repeats, and
    # best.pt's own record (read on resume) names what it holds.
    if improved:
        checkpoint.save_atomic(state.to_checkpoint(rng), setup.run_dir / "best.pt")
    checkpoint.save_atomic(state.to_checkpoint(rng), setup.run_dir / "last.pt")
    runs.plot_curves([setup.run_dir], setup.run_dir / "curves.png")
    ema_text = f", EMA top-1 {100 * row['ema_top1']:.2f}%" if ema_val else ""
    setup.log(f"epoch {state.epoch}/{config.epochs}: train loss {row['train_loss']:.4f}, val loss {val['loss']:.4f}, "
              f"top-1 {100 * val['top1']:.2f}%, top-5 {100 * val['top5']:.2f}%{ema_text}, "
              f"{row['images_per_s']:.0f} img/s, {row['epoch_time_s']:.0f} s")


def _finish(state: RunState, setup: Setup, status: str) -> TrainResult:
    ctx, run_dir = setup.ctx, setup.run_dir
    restore_pads(state.model)  # the model handed back computes TF's pads for any input size again
    rows = runs.read_metrics(run_dir) if ctx.is_main else []
    result = TrainResult(
        status=status, run_dir=str(run_dir), epochs_done=state.epoch, step=state.step,
        best_top1=state.best["top1"], best_epoch=state.best["epoch"] + 1,
        final_top1=rows[-1]["val_top1"] if rows else None,
        train_time_s=sum(r["epoch_time_s"] for r in rows), world_size=ctx.world_size,
        skipped_images=sum(r.get("skipped_images", 0) for r in rows), model=state.model,
    )
    if ctx.is_main:
        runs.write_json(run_dir / runs.SUMMARY, result.summary())
    if status == "interrupted":
        setup.log(f"interrupted at epoch {state.epoch + 1}, step {state.step_in_epoch}/{setup.steps_per_epoch}; "
                  f"continue it with {option('resume', str(run_dir))}")
    else:
        setup.log(f"done: best top-1 {100 * result.best_top1:.2f}% (epoch {result.best_epoch}), "
                  f"{result.train_time_s:.0f} s of training; checkpoints in {run_dir}")
    return result
