"""Training-step throughput (``mobilenet bench --train``): images per second of one full step
(forward, loss, backward, optimizer step) for

* **ours, default**: the settings ``mobilenet train`` runs by default here (``plan_execution``:
  a compiled step, bf16 autocast where native, channels_last, fused or foreach optimizer);
* **ours, compiled fp32 NCHW**: the compiled step with autocast and channels_last off, the same
  precision and layout as the two eager rows, so that what the compile alone gains shows;
* **ours, eager fp32 NCHW**: the same network and optimizer with every fast setting off;
* **timm** ``mobilenetv1_100``, eager fp32 NCHW, with SGD (Nesterov momentum, timm's default
  optimizer): what a user of timm gets without tuning.

They run in one process on the same random batch, timed in settled blocks in a random order each
round (``mobilenet.deploy.timing.time_interleaved``), so their ratios survive a shared machine.
The first step of each is untimed and reported: for a compiled step it is the compile. Where
compiling is unavailable a compiled row runs eager, and the report says so in a note.

Time it under the OpenMP wait policy ``mobilenet train`` runs under (the environment's; unset,
OpenMP's default), which the report records. Every row runs on PyTorch's one OpenMP pool, so
there is no other runtime's pool for spinning threads to slow, and a passive policy, which
``mobilenet bench`` needs when it interleaves runtimes, puts a sleep and a wake-up at each
barrier: measured on a Zen 4 (0.25-32, batch 8), the compiled fp32 step took 26 ms a step under
OMP_WAIT_POLICY=PASSIVE and 9.3 ms under the default, timm's 59 and 32 ms.

On ``device="cuda"`` the same rows run on the GPU (autocast as ``plan_execution`` picks there,
cuDNN's autotuner on); each step is bracketed by ``torch.cuda.synchronize`` so the time is the
GPU's work, not its launch.

    report = bench_training(ArchConfig(), batch_size=32)
    print(report.format())
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from mobilenet.accuracy import check_device
from mobilenet.arch import ArchConfig
from mobilenet.cpu import cpu_info
from mobilenet.errors import InputError, option
from mobilenet.model import MobileNetV1
from mobilenet.train.config import TrainConfig
from mobilenet.train.optim import build_optimizer
from mobilenet.train.step import ExecutionPlan, build_step, plan_execution
from mobilenet.weights.timm import TIMM_MOBILENET_V1

TIMM_INSTALL = "pip install timm (or the project's test extra: pip install -e '.[test]')"
A_LONG_RUN = 10**6  # steps: the default settings of a real run, which compiles
DEFAULT = "ours, default"
COMPILED_FP32 = "ours, compiled fp32 NCHW"
EAGER_FP32 = "ours, eager fp32 NCHW"
TIMM = f"timm {TIMM_MOBILENET_V1}, eager fp32 NCHW, SGD"
# Issue 16's targets, each a row's throughput against timm's (at 1.0-224, batch 32, 2 threads).
TARGETS = {DEFAULT: (2.0, "our default settings against timm's"),
           COMPILED_FP32: (1.5, "identical precision and layout: whether the compiled step pays for itself")}


@dataclass
class ThroughputRow:
    name: str
    settings: dict[str, Any]
    images_per_s: float
    median_ms: float
    p10_ms: float
    p90_ms: float
    steps: int
    first_step_s: float  # untimed: the compile, for a compiled step


@dataclass
class ThroughputReport:
    arch: dict[str, Any]
    batch_size: int
    device: str
    threads: int
    cpu: dict[str, Any]
    torch: str
    method: str
    rows: list[ThroughputRow] = field(default_factory=list)
    compile_seconds: float | None = None  # the default row's compile (every row has its first_step_s)
    notes: list[str] = field(default_factory=list)
    gpu: str | None = None  # the CUDA device's name, when the steps ran on one
    omp_wait_policy: str | None = None  # OMP_WAIT_POLICY as measured; None: OpenMP's default
    # How far the machine's pace moved while the steps were timed, slowest span over quickest
    # (``deploy.timing.Rounds.drift``; 1.0: steady, or too short to tell).
    machine_drift: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def format(self) -> str:
        width = max(len(row.name) for row in self.rows)
        speed = {row.name: row.images_per_s for row in self.rows}
        eager = {row.name for row in self.rows if not row.settings["compile"]}
        base = speed.get(TIMM)
        lines = [f"training step, {self.arch['alpha']}-{self.arch['resolution'][0]}, batch {self.batch_size}, "
                 f"{self.device}, {self.threads} threads, {self.method}; torch {self.torch}; "
                 f"OMP_WAIT_POLICY {self.omp_wait_policy or 'unset (OpenMP default)'}",
                 f"CPU: {self.cpu['model']} (ISA {self.cpu['isa_level']}, native bf16: "
                 f"{'yes' if self.cpu['native_bf16'] else 'no'})"]
        if self.gpu:
            lines.append(f"GPU: {self.gpu}")
        from mobilenet.deploy.timing import DRIFTING  # noqa: PLC0415

        if self.machine_drift > DRIFTING:
            lines.append(f"warning: the machine's pace moved {self.machine_drift:.2f}x while the steps were timed "
                         "(slowest span over quickest): the rows' ratios, interleaved, hold better than their times")
        for row in self.rows:
            ratio = f"  {row.images_per_s / base:.2f}x timm" if base else ""
            lines.append(f"  {row.name:{width}}  {row.images_per_s:8.1f} img/s  {row.median_ms:9.1f} ms/step{ratio}")
            lines.append(f"  {'':{width}}  {_settings_text(row.settings)}")
        lines += [f"first step of {row.name} (the compile): {row.first_step_s:.1f} s"
                  for row in self.rows if row.settings["compile"]]
        if base:
            lines.append("targets (issue 16: 1.0-224, batch 32, 2 threads), each a ratio to timm:")
            lines += [f"  {name} / timm = {speed[name] / base:.2f}x, target {target:g}x: {meaning}"
                      + ("; this row ran eager (see the notes)" if name in eager else "")
                      for name, (target, meaning) in TARGETS.items() if name in speed]
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


def bench_training(
    arch: ArchConfig | None = None, *, batch_size: int = 32, device: str = "cpu", threads: int | None = None,
    seconds: float = 3.0, min_runs: int = 5, optimizer: str = "rmsprop", peers: bool = True,
    compile: bool | None = None, log: Callable[[str], None] | None = None,
) -> ThroughputReport:
    """Measure the training steps (the module docstring) on random ``batch_size`` images at
    ``arch`` (default 1.0-224, 1000 classes) on ``device`` (cpu, cuda or cuda:N; an InputError
    where there is no such device). ``optimizer``: ours (the recipe's RMSprop by default; timm
    always runs SGD). ``compile``: the default row's, None for what ``mobilenet train`` does on a
    long run, False to measure our default without compiling (the compiled fp32 NCHW row always
    compiles where it can). ``peers=False`` leaves timm's row out (as ``bench``'s ``peers``). The
    thread count and cuDNN's autotuner are set for the measurement and put back afterwards."""
    arch = arch or ArchConfig()
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"the batch size must be a whole number >= 1, got {batch_size!r}")
    dev = check_device(device)  # before anything is built: "no CUDA GPU here" in one line
    log = log or (lambda _line: None)
    before = torch.get_num_threads(), torch.backends.cudnn.benchmark
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        if dev.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed shapes: cuDNN times its algorithms once, as train does
        return _bench(arch, batch_size, dev, seconds, min_runs, optimizer, peers, compile, log)
    finally:
        torch.set_num_threads(before[0])
        torch.backends.cudnn.benchmark = before[1]


def _bench(arch: ArchConfig, batch_size: int, dev: torch.device, seconds: float, min_runs: int, optimizer: str,
           peers: bool, compile: bool | None, log: Callable[[str], None]) -> ThroughputReport:
    config = TrainConfig(arch=arch, batch_size=batch_size, optimizer=optimizer, compile=compile, device=str(dev))
    fp32_nchw = {"amp": "none", "channels_last": False}
    ours = {DEFAULT: config, COMPILED_FP32: dataclasses.replace(config, compile=True, **fp32_nchw),
            EAGER_FP32: dataclasses.replace(config, compile=False, **fp32_nchw)}
    plans = {name: plan_execution(row_config, dev, A_LONG_RUN) for name, row_config in ours.items()}
    for plan in plans.values():  # as mobilenet train applies it (timm's row runs in the same process)
        plan.apply_to_process()
    steps = [_our_step(arch, config, plan, batch_size) for plan in plans.values()]
    settings = [dict(plan.to_dict(), optimizer=optimizer) for plan in plans.values()]
    names = list(plans)
    if peers:
        steps.append(timm_step(arch, batch_size, dev))
        names.append(TIMM)
        settings.append({"compile": False, "amp": "fp32", "memory_format": "nchw", "device": str(dev),
                         "optimizer": "sgd (nesterov, momentum 0.9, weight decay 2e-5)"})
    report = _measure(names, settings, steps, arch, batch_size, dev, seconds, min_runs, log)
    # A row meant to compile that could not ran eager: said, so its time is not read as the compiled step's.
    report.notes += [f"{name} ran eager: {plan.compile_why}" for name, plan in plans.items()
                     if ours[name].compile is not False and not plan.compile]
    if peers and arch.alpha != 1.0:
        report.notes.append(f"timm's {TIMM_MOBILENET_V1} is width 1.0 and ours {arch.alpha}: "
                            f"compare timm at {option('alpha', 1.0)}")
    # PyTorch lets cuDNN run fp32 convolutions in TF32 on Ampere and later: "fp32" is then TF32, for every row alike.
    if dev.type == "cuda" and torch.backends.cudnn.allow_tf32 and torch.cuda.get_device_capability(dev)[0] >= 8:
        report.notes.append("fp32 convolutions run in TF32 on this GPU (torch.backends.cudnn.allow_tf32), "
                            "in every fp32 row alike")
    return report


def _measure(names: list[str], settings: list[dict[str, Any]], steps: list[Callable[[], None]], arch: ArchConfig,
             batch_size: int, device: torch.device, seconds: float, min_runs: int,
             log: Callable[[str], None]) -> ThroughputReport:
    from mobilenet.deploy.timing import METHOD, Timing, time_rounds  # noqa: PLC0415

    first = []
    for name, step in zip(names, steps):
        log(f"first step of {name} (untimed; a compiled step compiles here)")
        start = time.perf_counter()
        step()
        first.append(time.perf_counter() - start)
    log(f"timing {len(steps)} training steps in settled blocks, about {seconds:g} s each")
    rounds = time_rounds(steps, seconds=seconds, min_runs=min_runs, warmup=1)
    samples = rounds.samples
    report = ThroughputReport(arch=arch.to_dict(), batch_size=batch_size, device=str(device),
                              threads=torch.get_num_threads(), cpu=cpu_info().to_dict(), torch=torch.__version__,
                              method=METHOD, gpu=torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                              omp_wait_policy=os.environ.get("OMP_WAIT_POLICY"), machine_drift=rounds.drift())
    for name, setting, runs, first_s in zip(names, settings, samples, first):
        timing = Timing.from_seconds(runs)
        report.rows.append(ThroughputRow(name, setting, batch_size / (timing.median_ms / 1e3), timing.median_ms,
                                         timing.p10_ms, timing.p90_ms, timing.runs, first_s))
        if name == DEFAULT and setting["compile"]:
            report.compile_seconds = first_s
    return report


def _our_step(arch: ArchConfig, config: TrainConfig, plan: ExecutionPlan, batch: int) -> Callable[[], None]:
    torch.manual_seed(0)
    model = MobileNetV1(arch).to(plan.device, memory_format=plan.memory_format).train()
    optimizer = build_optimizer(model, config)
    step = build_step(model, nn.CrossEntropyLoss(), plan)
    images, labels = synthetic_batch(arch, batch, plan.device, plan.memory_format)
    return training_step(lambda: step(images, labels), optimizer, plan.device)


def timm_step(arch: ArchConfig, batch: int, device: torch.device) -> Callable[[], None]:
    """timm's row: ``mobilenetv1_100`` (``arch``'s classes and input channels), eager fp32 NCHW,
    SGD as timm's training script defaults, one step on a fixed random batch."""
    try:
        import timm  # noqa: PLC0415 - a test extra
    except ImportError as err:
        raise InputError(f"the timm comparison needs timm: {TIMM_INSTALL}; or leave it out ({option('peers', False)})"
                         ) from err
    torch.manual_seed(0)
    model = timm.create_model(TIMM_MOBILENET_V1, pretrained=False, num_classes=arch.num_classes,
                              in_chans=arch.in_channels).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=2e-5)
    images, labels = synthetic_batch(arch, batch, device, torch.contiguous_format)
    criterion = nn.CrossEntropyLoss()
    return training_step(lambda: criterion(model(images), labels), optimizer, device)


def synthetic_batch(arch: ArchConfig, batch: int, device: torch.device,
                    memory_format: torch.memory_format) -> tuple[torch.Tensor, torch.Tensor]:
    """Random images and labels for ``arch`` (seeded: every row and script times the same batch)."""
    g = torch.Generator().manual_seed(0)
    images = torch.randn(batch, arch.in_channels, *arch.resolution, generator=g)
    labels = torch.randint(0, arch.num_classes, (batch,), generator=g)
    return images.to(device, memory_format=memory_format), labels.to(device)


def training_step(loss_of_batch: Callable[[], torch.Tensor], optimizer: torch.optim.Optimizer,
                  device: torch.device) -> Callable[[], None]:
    """The step a benchmark times: the batch's loss, its backward, the optimizer's step and its
    gradients zeroed (on CUDA, synchronized at both ends)."""
    # CUDA launches work and returns: synchronizing before the step keeps earlier work (the
    # setup, another row's block) out of its time, and after it times the step to its end.
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)

    def step() -> None:
        sync()
        loss_of_batch().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync()

    return step


def _settings_text(settings: dict[str, Any]) -> str:
    shown = {k: v for k, v in settings.items() if not k.endswith("_why") and k != "device" and v is not None}
    return ", ".join(f"{k} {_setting_text(v)}" for k, v in shown.items())


def _setting_text(value: Any) -> str:
    """One setting as the report prints it: a dict of options as ``name=value`` pairs."""
    if isinstance(value, dict):
        return " ".join(f"{name}={option}" for name, option in value.items())
    return str(value)


def save(report: ThroughputReport, path: str | os.PathLike[str]) -> None:
    from mobilenet.files import write_text  # noqa: PLC0415

    write_text(path, report.to_json() + "\n")
