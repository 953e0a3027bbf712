"""Separable against full convolution: Table 4's network per runtime, and every separable block
against the full 3x3 convolution it replaces. Each row sets how many times faster the separable
one runs (``time_ratio``, full / separable time) beside how many times fewer mult-adds it needs
(``savings``, full / separable mult-adds: the paper's 8-9x)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from mobilenet.cost import network_cost
from mobilenet.deploy.bench.common import bound, build_predictor, input_batch, no_grad
from mobilenet.deploy.bench.report import BenchOptions
from mobilenet.deploy.timing import Timing, time_interleaved
from mobilenet.errors import InputError
from mobilenet.model import MobileNetV1
from mobilenet.prepare import folded_copy


def separable_vs_conv(model: MobileNetV1, options: BenchOptions, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Table 4's Conv MobileNet against the separable one at batch 1, fp32, per runtime: the
    measured time ratio beside the mult-add savings (what the paper's 8-9x becomes in wall time)."""
    cfg = model.arch_cfg
    if cfg.variant != "separable":
        return []
    conv_model = MobileNetV1(cfg.replace(variant="conv")).eval()
    savings = network_cost(conv_model.arch_cfg).total.mult_adds / network_cost(cfg).total.mult_adds
    x = input_batch(model, 1, options.preprocess)
    rows, timed = [], []
    for runtime in [r for r in options.runtimes if r != "auto"]:
        log(f"preparing the full-convolution network on {runtime}")
        try:
            pair = [build_predictor(m, runtime, "fp32", options) for m in (model, conv_model)]
        except InputError as err:
            rows.append({"runtime": runtime, "status": "skipped", "reason": str(err)})
            continue
        rows.append({"runtime": runtime, "status": "ok", "savings": savings})
        timed.append((rows[-1], pair))
    calls = [bound(p, x) for _, pair in timed for p in pair]
    if calls:
        log("timing separable against full convolution, interleaved")
        samples = time_interleaved(calls, seconds=options.seconds, min_runs=options.min_runs)
        for i, (row, _) in enumerate(timed):
            separable, conv = Timing.from_seconds(samples[2 * i]), Timing.from_seconds(samples[2 * i + 1])
            row.update(separable_ms=separable.median_ms, conv_ms=conv.median_ms,
                       time_ratio=conv.median_ms / separable.median_ms)
    return rows


def block_comparisons(model: MobileNetV1, options: BenchOptions, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Every separable block against the full 3x3 convolution it replaces (Table 3's layer is
    blocks 6-10 at 14x14x512), in PyTorch eager with folded weights and channels_last, batch 1:
    the layer-level version of the network comparison above. The full conv uses symmetric padding
    (one pad either side); the difference to TF 'SAME' costs no measurable time."""
    if model.arch_cfg.variant == "conv":
        return []
    log("timing each separable block against a full 3x3 convolution (PyTorch eager)")
    net = folded_copy(model).to(memory_format=torch.channels_last)
    rows, calls = [], []
    for comparison in network_cost(model.arch_cfg).block_comparisons():
        std = comparison.standard
        channels, height, width = std.in_shape
        x = torch.randn(1, channels, height, width).contiguous(memory_format=torch.channels_last)
        full = torch.nn.Sequential(
            torch.nn.Conv2d(channels, std.out_shape[0], std.kernel, std.stride, padding=std.kernel // 2),
            torch.nn.ReLU6(),
        ).eval().to(memory_format=torch.channels_last)
        separable = net.blocks[comparison.depthwise.block]
        rows.append({
            "block": comparison.depthwise.block, "in_shape": list(std.in_shape), "out_shape": list(std.out_shape),
            "stride": std.stride, "savings": comparison.savings,
        })
        calls += [lambda m=separable, x=x: no_grad(m, x), lambda m=full, x=x: no_grad(m, x)]
    with torch.inference_mode():
        samples = time_interleaved(calls, seconds=options.seconds / 4, min_runs=options.min_runs)
    for i, row in enumerate(rows):
        separable, full = Timing.from_seconds(samples[2 * i]), Timing.from_seconds(samples[2 * i + 1])
        row.update(separable_ms=separable.median_ms, conv_ms=full.median_ms,
                   time_ratio=full.median_ms / separable.median_ms)
    return rows

