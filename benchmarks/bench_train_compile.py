"""How long the training step's first compile takes in a process with an empty inductor cache (a
machine's first compiled run), with inductor checking every vector ISA against only the best one
(``optimize.only_the_best_vector_isa_checked``, what ``CompileClock`` wraps the first step in).

    .venv/bin/python benchmarks/bench_train_compile.py [--rounds 2] [--json FILE]

Each measurement is a fresh process with its own empty ``TORCHINDUCTOR_CACHE_DIR``; the two
settings alternate. The step is the default one on this CPU (bf16 autocast where native,
channels_last), 1.0-224 at batch 32, SGD; the time is the first step's: forward and backward
graphs traced, lowered and compiled, and run once.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence

CHILD = r"""
import contextlib, sys, time
import torch
from mobilenet.arch import ArchConfig
from mobilenet.cpu import cpu_info
from mobilenet.model import MobileNetV1
from mobilenet.optimized import only_the_best_vector_isa_checked
from mobilenet.train.step import ExecutionPlan, build_step

torch.manual_seed(0)
bf16 = cpu_info().native_bf16
plan = ExecutionPlan(torch.device("cpu"), torch.bfloat16 if bf16 else None, "", True, True, "")
model = MobileNetV1(ArchConfig()).to(memory_format=torch.channels_last).train()
step = build_step(model, torch.nn.CrossEntropyLoss(), plan)
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
images = torch.rand(32, 3, 224, 224).contiguous(memory_format=torch.channels_last)
labels = torch.randint(0, 1000, (32,))
context = only_the_best_vector_isa_checked() if sys.argv[1] == "best" else contextlib.nullcontext()
start = time.perf_counter()
with context:
    step(images, labels).backward()
    optimizer.step()
print(time.perf_counter() - start)
"""


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args(argv)
    from mobilenet.cpu import cpu_info  # noqa: PLC0415

    results: dict[str, list[float]] = {"every ISA checked": [], "best ISA only": []}
    for _ in range(args.rounds):
        for label, mode in (("every ISA checked", "all"), ("best ISA only", "best")):
            with tempfile.TemporaryDirectory(prefix="inductor-cold-") as cache:
                env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache, "OMP_NUM_THREADS": "2"}
                out = subprocess.run([sys.executable, "-c", CHILD, mode], env=env, capture_output=True, text=True,
                                     check=True)
                seconds = float(out.stdout.strip().splitlines()[-1])
            results[label].append(round(seconds, 1))
            print(f"{label}: first compiled step {seconds:.1f} s", flush=True)
    record = {"cpu": cpu_info().model, "flags": cpu_info().notable_flags(), "first_step_s": results}
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(record, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
