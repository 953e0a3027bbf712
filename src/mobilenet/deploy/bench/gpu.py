"""``mobilenet bench --device cuda``: PyTorch inference on a GPU, where the CPU runtimes of the
ordinary bench do not run. For each precision and batch size, in one process, on one batch of
real photos already on the device:

* **torch optimized**: ``mobilenet.optimize(model, precision, batch, device)``, what ``classify``
  and ``evaluate --device cuda`` run (BatchNorm folded, channels_last, compiled);
* **eager fp32 NCHW**: the model as built, moved to the device: what a user gets with no settings;
* **eager autocast channels_last** (fp16, bf16): the model as built under ``torch.autocast`` in
  channels_last, the usual hand-tuned eager path;
* **timm mobilenetv1_100** (``peers=True``), run as the eager row of its precision.

Each call ends with a synchronisation, so a time is the device's work and not its launch; the rows
run in settled blocks in random order (``mobilenet.deploy.timing.time_interleaved``). Each
optimized row records its compile (or cache load) time, and every row of ours its agreement with
eager fp32 on each photo: the share of equal top-1 classes and the largest logit difference.

    report = bench_gpu(mobilenet_v1(weights="tf_mobilenet_v1_1.0_224"), precisions=("bf16",))
    print(report.format())

The functions take any device PyTorch runs ``optimize`` on; the CPU is where the tests exercise them.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from mobilenet.accuracy import check_device
from mobilenet.cpu import cpu_info
from mobilenet.deploy.timing import time_interleaved
from mobilenet.deploy.verify import photo_batch
from mobilenet.errors import InputError, option
from mobilenet.limits import check_memory
from mobilenet.model import MobileNetV1
from mobilenet.optimized import cudnn_benchmark, optimize
from mobilenet.preprocess import repeat_to_batch
from mobilenet.weights.timm import TIMM_MOBILENET_V1

AUTOCAST = {"fp16": torch.float16, "bf16": torch.bfloat16}
OPTIMIZED, EAGER, AUTOCAST_ROW = "torch optimized", "eager fp32 NCHW", "eager autocast channels_last"
TIMM = f"timm {TIMM_MOBILENET_V1}"


@dataclass
class GpuRow:
    name: str
    precision: str
    batch_size: int
    median_ms: float
    images_per_s: float
    runs: int
    top1_agrees: float | None = None  # share of the photos whose top-1 class is eager fp32's
    max_abs_diff: float | None = None  # largest logit difference from eager fp32


@dataclass
class GpuBenchReport:
    device: str
    gpu: str | None
    torch: str
    cuda: str | None
    arch: str
    host_cpu: str
    method: str = "settled blocks in random order, each call synchronised"
    compile: list[dict[str, Any]] = field(default_factory=list)
    rows: list[GpuRow] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def format(self) -> str:
        lines = [f"inference, {self.arch}, {self.device} ({self.gpu or self.host_cpu}), {self.method}; "
                 f"torch {self.torch}" + (f", CUDA {self.cuda}" if self.cuda else "")]
        for c in self.compile:
            lines.append(f"  optimize {c['precision']} batch {c['batch_size']}: {c['backend']}, {c['seconds']:.1f} s "
                         f"to compile or load")
        width = max((len(r.name) for r in self.rows), default=0)
        for r in self.rows:
            agree = "" if r.top1_agrees is None else \
                f"  top-1 as eager fp32 {100 * r.top1_agrees:.0f}%, max |diff| {r.max_abs_diff:.3g}"
            lines.append(f"{r.precision:>5} b{r.batch_size:<4} {r.name:<{width}}  {r.median_ms:9.3f} ms  "
                         f"{r.images_per_s:10.0f} img/s{agree}")
        return "\n".join(lines)


def eager_runner(model: nn.Module, precision: str, channels_last: bool, device: torch.device) -> Callable:
    """``model`` as eager PyTorch runs it: under autocast at fp16/bf16, optionally channels_last
    (on a copy: ``Module.to`` converts in place, and the NCHW rows share the model), with cuDNN's
    algorithm search on as for the optimized row (and as timm's own benchmark and validate set it)."""
    model = copy.deepcopy(model).to(memory_format=torch.channels_last) if channels_last else model

    def run(x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
        cast = torch.autocast(device.type, AUTOCAST[precision]) if precision in AUTOCAST else contextlib.nullcontext()
        with torch.inference_mode(), cast, cudnn_benchmark(device):
            return model(x).float()

    return run


def bench_gpu(
    model: MobileNetV1,
    *,
    precisions: Sequence[str] = ("fp32", "bf16"),
    batch_sizes: Sequence[int] = (1, 256),
    device: str | torch.device = "cuda",
    seconds: float = 1.0,
    min_runs: int = 20,
    peers: bool = True,
    photos: torch.Tensor | None = None,
    log: Callable[[str], None] | None = None,
) -> GpuBenchReport:
    """The rows of the module docstring for every precision and batch size on ``device``.
    ``photos``: the preprocessed images to time and compare on (default: the sample photos)."""
    device = check_device(device)
    if not math.isfinite(seconds) or seconds <= 0 or min_runs < 1:
        raise InputError(f"{option('seconds')} must be a finite number > 0 and min_runs >= 1, got {seconds} and "
                         f"{min_runs}")
    for batch in batch_sizes:  # before anything is allocated or compiled
        if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
            raise InputError(f"batch sizes must be integers >= 1, got {list(batch_sizes)}")
        check_memory(model.arch_cfg, batch, mode="inference", device=str(device))
    say = log or (lambda line: None)
    peer = _timm_model(device) if peers else None
    model = model.eval().to(device)
    photos = (photo_batch(model) if photos is None else photos).to(device)
    on_gpu = device.type == "cuda"
    sync = (lambda: torch.cuda.synchronize(device)) if on_gpu else (lambda: None)
    report = GpuBenchReport(
        device=str(device), gpu=torch.cuda.get_device_name(device) if on_gpu else None, torch=torch.__version__,
        cuda=torch.version.cuda if on_gpu else None, arch=model.arch_cfg.name, host_cpu=cpu_info().model)
    eager = eager_runner(model, "fp32", False, device)
    reference = eager(photos)
    for precision in precisions:
        for batch in batch_sizes:
            start = time.perf_counter()
            fast = optimize(model, precision, batch, device, log=say)
            report.compile.append({"precision": precision, "batch_size": batch, "backend": fast.backend,
                                   "seconds": round(time.perf_counter() - start, 2), "description": fast.description})
            runs: dict[str, Callable] = {OPTIMIZED: fast, EAGER: eager}
            if precision != "fp32":
                runs[AUTOCAST_ROW] = eager_runner(model, precision, True, device)
            if peer is not None:
                runs[TIMM] = eager_runner(peer, precision, precision != "fp32", device)
            agreement = {name: _agreement(run, photos, reference, batch)
                         for name, run in runs.items() if name != TIMM}
            x = repeat_to_batch(photos, batch)
            calls = [(lambda run=run, x=x, sync=sync: (run(x), sync())) for run in runs.values()]
            say(f"timing {precision} batch {batch}: {', '.join(runs)}")
            samples = time_interleaved(calls, seconds=seconds, min_runs=min_runs)
            for name, times in zip(runs, samples):
                median = sorted(times)[len(times) // 2]
                report.rows.append(GpuRow(name, precision, batch, round(1e3 * median, 4), round(batch / median, 1),
                                          len(times), *agreement.get(name, (None, None))))
    return report


def _agreement(run: Callable, photos: torch.Tensor, reference: torch.Tensor, batch: int) -> tuple[float, float]:
    """Each photo run alone in a batch of ``batch`` copies of itself, against eager fp32."""
    logits = torch.cat([run(repeat_to_batch(photo, batch))[:1] for photo in photos.split(1)])
    same = (logits.argmax(1) == reference.argmax(1)).float().mean().item()
    return round(same, 4), round((logits - reference).abs().max().item(), 6)


def _timm_model(device: torch.device) -> nn.Module:
    try:
        import timm  # noqa: PLC0415
    except ImportError:
        raise InputError(f"the timm row needs timm (pip install timm); {option('peers', False)} leaves it "
                         "out") from None
    return timm.create_model(TIMM_MOBILENET_V1, pretrained=False).eval().to(device)


def save(report: GpuBenchReport, path: str | os.PathLike[str]) -> None:
    from mobilenet.files import write_text  # noqa: PLC0415

    write_text(path, report.to_json() + "\n")
