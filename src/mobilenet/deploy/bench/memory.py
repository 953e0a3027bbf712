"""Memory: what one inference adds to a fresh process, against the cost model's peak activations.
Run as ``python -m mobilenet.deploy.bench.memory WEIGHTS RUNTIME BATCH THREADS`` in that fresh
process."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from mobilenet.allocator import release_freed_memory
from mobilenet.arch import ArchConfig
from mobilenet.cost import network_cost
from mobilenet.deploy.bench.report import BenchOptions
from mobilenet.deploy.optional import available
from mobilenet.deploy.runtime import make_predictor
from mobilenet.errors import MobileNetError
from mobilenet.model import MobileNetV1
from mobilenet.prepare import folded_copy


class BenchError(MobileNetError):
    """A measurement that could not be taken."""


def memory_rows(model: MobileNetV1, options: BenchOptions, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Each runtime in a fresh process (this one's allocator already holds everything): the rise of
    the resident-set high-water mark during the first inference at the largest batch size. The
    prediction is for the images one runtime call really gets (ONNX Runtime and OpenVINO run large
    batches in cache-sized slices)."""
    batch = max(options.batch_sizes)
    rows = []
    for runtime in [r for r in options.runtimes if r != "auto"]:
        if runtime != "torch" and not available(runtime):
            continue
        log(f"measuring memory of {runtime} at batch {batch} in a fresh process")
        row: dict[str, Any] = {"runtime": runtime, "precision": "fp32", "batch_size": batch}
        try:
            row.update(memory_probe_subprocess(model, runtime, batch, options.threads))
        except MobileNetError as err:
            row.update(status="failed", reason=str(err), images_per_call=batch)
        predicted = network_cost(model.arch_cfg, bytes_per_element=4, batch_size=row["images_per_call"]).total
        row.update(predicted_peak_activation_bytes=predicted.peak_activation_bytes,
                   predicted_peak_layer=predicted.peak_layer)
        rows.append(row)
    return rows


def memory_probe_subprocess(model: MobileNetV1, runtime: str, batch_size: int, threads: int | None) -> dict[str, Any]:
    """Run ``memory_probe`` in a fresh Python process on ``model``'s weights."""

    with tempfile.TemporaryDirectory(prefix="mobilenet-memory-") as tmp:
        weights = Path(tmp) / "model.pt"
        # Folded weights, so models loaded folded (TFLite) and unfolded ones travel the same way.
        torch.save({"config": model.arch_cfg.to_dict(), "state_dict": folded_copy(model).state_dict()}, weights)
        command = [sys.executable, "-m", "mobilenet.deploy.bench.memory", str(weights), runtime, str(batch_size),
                   str(threads or 0)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise BenchError(f"memory probe failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def memory_probe(model: MobileNetV1, runtime: str, batch_size: int, threads: int | None) -> dict[str, Any]:
    """In this process: build the predictor, reset the resident-set high-water mark, run one
    inference at ``batch_size``, and report how far the high-water mark rose above the resident
    set before the call. That covers activations, workspaces and one-time buffers the runtime
    allocates on its first run; weights are already resident and not counted. A build that runs
    the network itself (PyTorch's oneDNN Graph program is traced and called three times as it is
    built) leaves those calls' buffers resident in malloc's free lists, kept there by
    ``optimize``: they are handed back first, or the call would seem to need nothing."""
    predictor = make_predictor(model, runtime, "fp32", threads=threads or None, batch_size=batch_size)
    x = torch.zeros(batch_size, model.arch_cfg.in_channels, *model.arch_cfg.resolution)
    release_freed_memory()
    Path("/proc/self/clear_refs").write_text("5")  # Linux: reset VmHWM to the current VmRSS
    before = _read_status_kib("VmRSS")
    predictor(x)
    peak = _read_status_kib("VmHWM")
    return {"status": "ok", "rss_before_bytes": before * 1024, "measured_increase_bytes": (peak - before) * 1024,
            "images_per_call": min(batch_size, predictor.fixed_batch or predictor.micro_batch or batch_size)}


def _read_status_kib(field_name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise BenchError(f"{field_name} not in /proc/self/status (memory is measured on Linux only)")


if __name__ == "__main__":  # the fresh process of memory_probe_subprocess
    _weights, _runtime, _batch, _threads = sys.argv[1:5]
    _saved = torch.load(_weights, weights_only=True)
    _model = MobileNetV1(ArchConfig.from_dict(_saved["config"])).eval().fold_batchnorm()
    _model.load_state_dict(_saved["state_dict"])
    print(json.dumps(memory_probe(_model.eval(), _runtime, int(_batch), int(_threads))))

