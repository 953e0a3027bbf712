"""Training throughput (images/s) of our MobileNetV1 against timm's ``mobilenetv1_100``.

Both models are MobileNet v1 1.0 (timm: symmetric padding, BatchNorm eps 1e-5; ours: TF 'SAME'
padding), trained on random images of the same size with the same loss, batch, threads and
optimizer. Each setting is a combination of memory format (NCHW / channels_last), bf16 autocast
and the SGD implementation (foreach or fused). Settings are measured round-robin, several rounds
interleaved in one process, and the median per step is reported, because this 2-core machine is
shared and its speed drifts (see DESIGN.md, "Timing noise").

    GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=17179869184 \\
        .venv/bin/python benchmarks/train_throughput.py --resolution 128 --batch-size 32 --threads 2

(The malloc settings keep glibc from returning and re-faulting the large activation buffers on
every step, which otherwise costs PyTorch on CPU a large share of its time; DESIGN.md §6.)
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch
import torch.nn.functional as F

from mobilenet.model import MobileNetV1
from mobilenet.train.execution import autocast_dtype

SETTINGS = (
    # name, channels_last, bf16, fused optimizer
    ("fp32 NCHW", False, False, False),
    ("fp32 channels_last", True, False, False),
    ("bf16 NCHW", False, True, False),
    ("bf16 channels_last", True, True, False),
    ("bf16 channels_last fused-SGD", True, True, True),
)


def build(which: str, resolution: int) -> torch.nn.Module:
    if which == "ours":
        return MobileNetV1(alpha=1.0, resolution=resolution, num_classes=1000)
    import timm

    return timm.create_model("mobilenetv1_100", pretrained=False, num_classes=1000)


class Trainer:
    """One model under one setting, ready to take timed steps."""

    def __init__(self, which: str, setting: tuple, resolution: int, batch: int) -> None:
        _, channels_last, bf16, fused = setting
        self.fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.model = build(which, resolution).to(memory_format=self.fmt).train()
        self.bf16 = bf16
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9, nesterov=True,
                                         weight_decay=4e-5, **({"fused": True} if fused else {"foreach": True}))
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(batch, 3, resolution, resolution, generator=g).to(memory_format=self.fmt)
        self.y = torch.randint(0, 1000, (batch,), generator=g)

    def step(self) -> float:
        start = time.perf_counter()
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()
        with autocast:
            loss = F.cross_entropy(self.model(self.x), self.y)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--resolution", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    p.add_argument("--steps", type=int, default=3, help="timed steps per setting and round")
    p.add_argument("--warmup", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    # Training's own rule: bf16 only where this CPU computes it natively (oneDNN emulates it elsewhere).
    bf16_ok = autocast_dtype("auto", torch.device("cpu")) is not None
    settings = [s for s in SETTINGS if bf16_ok or not s[2]]
    trainers = {(which, s[0]): Trainer(which, s, args.resolution, args.batch_size)
                for s in settings for which in ("ours", "timm")}
    for t in trainers.values():
        for _ in range(args.warmup):
            t.step()
    times: dict[tuple[str, str], list[float]] = {k: [] for k in trainers}
    for _ in range(args.rounds):
        for key, t in trainers.items():
            times[key] += [t.step() for _ in range(args.steps)]
    print(f"MobileNet v1 1.0, {args.resolution}x{args.resolution}, batch {args.batch_size}, {args.threads} threads, "
          f"SGD-nesterov, median of {args.rounds}x{args.steps} interleaved steps; torch {torch.__version__}")
    print(f"{'setting':32} {'ours img/s':>10} {'timm img/s':>10} {'ours/timm':>9}")
    speed = {k: args.batch_size / statistics.median(v) for k, v in times.items()}
    for name, *_ in settings:
        ours, theirs = speed[("ours", name)], speed[("timm", name)]
        print(f"{name:32} {ours:10.1f} {theirs:10.1f} {ours / theirs:9.2f}")
    best = max((speed[("ours", s[0])], s[0]) for s in settings)
    base = speed[("timm", "fp32 NCHW")]
    print(f"ours at its best ({best[1]}) against timm at its default (fp32 NCHW): {best[0] / base:.2f}x")


if __name__ == "__main__":
    main()
