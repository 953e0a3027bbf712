"""Training-step throughput (``mobilenet bench --train``): images per second of one full step
(forward, loss, backward, optimizer step) for

* **ours, default**: the settings ``mobilenet train`` runs by default here (``plan_execution``:
  a compiled step, bf16 autocast where native, channels_last, fused or foreach optimizer);
* **ours, eager fp32 NCHW**: the same network and optimizer with every fast setting off;
* **timm** ``mobilenetv1_100``, eager fp32 NCHW, with SGD (Nesterov momentum, timm's default
  optimizer): what a user of timm gets without tuning.

The three run in one process on the same random batch, timed in settled blocks in a random order
each round (``mobilenet.deploy.timing.time_interleaved``), so their ratios survive a shared machine.
The first step of each is untimed and reported: for the compiled one it is the compile.

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

from mobilenet.arch import ArchConfig
from mobilenet.cpu import cpu_info
from mobilenet.errors import InputError
from mobilenet.model import MobileNetV1
from mobilenet.train.config import TrainConfig
from mobilenet.train.optim import build_optimizer
from mobilenet.train.step import ExecutionPlan, build_step, plan_execution

TIMM_MODEL = "mobilenetv1_100"
TIMM_INSTALL = "pip install timm (or the project's test extra: pip install -e '.[test]')"
A_LONG_RUN = 10**6  # steps: the default settings of a real run, which compiles


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
    compile_seconds: float | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def format(self) -> str:
        width = max(len(row.name) for row in self.rows)
        base = next((r.images_per_s for r in self.rows if r.name.startswith("timm")), None)
        lines = [f"training step, {self.arch['alpha']}-{self.arch['resolution'][0]}, batch {self.batch_size}, "
                 f"{self.device}, {self.threads} threads, {self.method}; torch {self.torch}",
                 f"CPU: {self.cpu['model']} (ISA {self.cpu['isa_level']}, native bf16: "
                 f"{'yes' if self.cpu['native_bf16'] else 'no'})"]
        for row in self.rows:
            ratio = f"  {row.images_per_s / base:.2f}x timm" if base else ""
            lines.append(f"  {row.name:{width}}  {row.images_per_s:8.1f} img/s  {row.median_ms:9.1f} ms/step{ratio}")
            lines.append(f"  {'':{width}}  {_settings_text(row.settings)}")
        if self.compile_seconds is not None:
            lines.append(f"compile (the compiled step's first step): {self.compile_seconds:.1f} s")
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


def bench_training(
    arch: ArchConfig | None = None, *, batch_size: int = 32, device: str = "cpu", threads: int | None = None,
    seconds: float = 3.0, min_runs: int = 5, optimizer: str = "rmsprop", timm: bool = True,
    compile: bool | None = None, log: Callable[[str], None] | None = None,
) -> ThroughputReport:
    """Measure the three training steps (the module docstring) on random ``batch_size`` images at
    ``arch`` (default 1.0-224, 1000 classes). ``optimizer``: ours (the recipe's RMSprop by default;
    timm always runs SGD). ``compile``: None for what ``mobilenet train`` does on a long run, False
    to measure our default without compiling. ``timm=False`` leaves timm out."""
    arch = arch or ArchConfig()
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"the batch size must be a whole number >= 1, got {batch_size!r}")
    dev = torch.device(device)
    if threads is not None:
        torch.set_num_threads(threads)
    log = log or (lambda _line: None)
    config = TrainConfig(arch=arch, batch_size=batch_size, optimizer=optimizer, compile=compile, device=device)
    contenders = [
        ("ours, default", plan_execution(config, dev, A_LONG_RUN)),
        ("ours, eager fp32 NCHW", plan_execution(
            dataclasses.replace(config, compile=False, amp="none", channels_last=False), dev, A_LONG_RUN)),
    ]
    steps = [_our_step(arch, config, plan, batch_size) for _, plan in contenders]
    names = [name for name, _ in contenders]
    settings = [dict(plan.to_dict(), optimizer=optimizer) for _, plan in contenders]
    if timm:
        steps.append(_timm_step(arch, batch_size, dev))
        names.append(f"timm {TIMM_MODEL}, eager fp32 NCHW, SGD")
        settings.append({"compile": False, "amp": "fp32", "memory_format": "nchw", "device": str(dev),
                         "optimizer": "sgd (nesterov, momentum 0.9, weight decay 2e-5)"})
    report = _measure(names, settings, steps, arch, batch_size, dev, seconds, min_runs, log)
    if timm and arch.alpha != 1.0:
        report.notes.append(f"timm's {TIMM_MODEL} is width 1.0 and ours {arch.alpha}: compare timm at --alpha 1.0")
    return report


def _measure(names: list[str], settings: list[dict[str, Any]], steps: list[Callable[[], None]], arch: ArchConfig,
             batch_size: int, device: torch.device, seconds: float, min_runs: int,
             log: Callable[[str], None]) -> ThroughputReport:
    from mobilenet.deploy.timing import METHOD, Timing, time_interleaved  # noqa: PLC0415

    first = []
    for name, step in zip(names, steps):
        log(f"first step of {name} (untimed; a compiled step compiles here)")
        start = time.perf_counter()
        step()
        first.append(time.perf_counter() - start)
    log(f"timing {len(steps)} training steps in settled blocks, about {seconds:g} s each")
    samples = time_interleaved(steps, seconds=seconds, min_runs=min_runs, warmup=1)
    report = ThroughputReport(arch=arch.to_dict(), batch_size=batch_size, device=str(device),
                              threads=torch.get_num_threads(), cpu=cpu_info().to_dict(), torch=torch.__version__,
                              method=METHOD)
    for name, setting, runs, first_s in zip(names, settings, samples, first):
        timing = Timing.from_seconds(runs)
        report.rows.append(ThroughputRow(name, setting, batch_size / (timing.median_ms / 1e3), timing.median_ms,
                                         timing.p10_ms, timing.p90_ms, timing.runs, first_s))
        if setting["compile"]:
            report.compile_seconds = first_s
    if not any(s["compile"] for s in settings):
        report.notes.append(f"our default step ran eager: {settings[0].get('compile_why', '')}")
    return report


def _our_step(arch: ArchConfig, config: TrainConfig, plan: ExecutionPlan, batch: int) -> Callable[[], None]:
    torch.manual_seed(0)
    model = MobileNetV1(arch).to(plan.device, memory_format=plan.memory_format).train()
    optimizer = build_optimizer(model, config)
    step = build_step(model, nn.CrossEntropyLoss(), plan)
    images, labels = _batch(arch, batch, plan.device, plan.memory_format)
    return _training_step(lambda: step(images, labels), optimizer, plan.device)


def _timm_step(arch: ArchConfig, batch: int, device: torch.device) -> Callable[[], None]:
    try:
        import timm  # noqa: PLC0415 - a test extra
    except ImportError as err:
        raise InputError(f"the timm comparison needs timm: {TIMM_INSTALL}; or leave it out (timm=False)") from err
    torch.manual_seed(0)
    model = timm.create_model(TIMM_MODEL, pretrained=False, num_classes=arch.num_classes,
                              in_chans=arch.in_channels).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=2e-5)
    images, labels = _batch(arch, batch, device, torch.contiguous_format)
    criterion = nn.CrossEntropyLoss()
    return _training_step(lambda: criterion(model(images), labels), optimizer, device)


def _batch(arch: ArchConfig, batch: int, device: torch.device,
           memory_format: torch.memory_format) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    images = torch.randn(batch, arch.in_channels, *arch.resolution, generator=g)
    labels = torch.randint(0, arch.num_classes, (batch,), generator=g)
    return images.to(device, memory_format=memory_format), labels.to(device)


def _training_step(loss_of_batch: Callable[[], torch.Tensor], optimizer: torch.optim.Optimizer,
                   device: torch.device) -> Callable[[], None]:
    def step() -> None:
        loss_of_batch().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # the step is timed to its end, not to its launch

    return step


def _settings_text(settings: dict[str, Any]) -> str:
    shown = {k: v for k, v in settings.items() if not k.endswith("_why") and k != "device"}
    return ", ".join(f"{k} {v}" for k, v in shown.items())


def save(report: ThroughputReport, path: str | os.PathLike[str]) -> None:
    from mobilenet.files import write_text  # noqa: PLC0415

    write_text(path, report.to_json() + "\n")
