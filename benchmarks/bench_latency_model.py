"""How well the latency model predicts networks its calibration never saw (issue 15, item 4).

For every installed runtime, precision, thread count and batch size: calibrate (or take the cached
calibration), then build every network of the held-out grid (α x resolution; the probes share
none of their shapes), time them all interleaved in settled blocks, and compare with the
prediction:

* whole network: the fraction within ±10% of the measured median, RMSPE, Spearman's rank
  correlation;
* layer types: predicted against measured time shares (each network profiled as ``mobilenet
  bench`` profiles it: ONNX Runtime's profiler, OpenVINO's performance counters, XNNPACK's
  operator timings in ExecuTorch, PyTorch's oneDNN Graph or compiled program; read as the
  calibration reads a profile; fp32), the largest difference in percentage points;
* layers: the fraction of conv layers within ±25% (the same profiles, fp32: their split of the
  network's interleaved time, so that the drift while profiling does not count).

Each network is profiled in ``--profile-passes`` passes over the whole grid (default 2), each
layer's share the median of its passes: one profile is one spell of the guest's speed, and a
spell that slowed some layers more than others decided a network's shares alone (PyTorch's
0.85-240, docs/latency.md §4, 2026-12-05). With ``--seen`` the calibration's own networks are
timed and profiled beside the grid: their errors are the floor under the held-out ones. For the
totals, the drift since the calibration; for the shares, the guest's memory-side spells, which
slow the memory-bound layers more than the rest (docs/latency.md §4, 2026-12-05, late morning).

With ``--joint`` the grid is timed in the calibration's own rounds instead, interleaved with its
probes (a calibration made anew, not cached; not for ONNX Runtime above one thread, which
calibrates in a process of its own): the calibration and the grid then measure one machine,
however its speed moves, and the errors are the model's alone. It is not the issue's protocol (a
calibration first, the grid after, as a user meets it), which stays the default; on a guest whose
speed moves by tens of percent between minutes it tells the model's misses from the machine's.

The full grid (5 α x 5 resolutions, batch 1 and 8, 1 and 2 threads, every installed runtime)
takes a long while, mostly building the networks in LiteRT and ExecuTorch; run it on a quiet
machine and record what it prints with the CPU and the command (docs/latency.md)::

    .venv/bin/python benchmarks/bench_latency_model.py [--runtimes onnxruntime ...] [--json F]
    .venv/bin/python benchmarks/bench_latency_model.py --tiny     # a 2 x 2 grid: does it work?
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mobilenet import arch
from mobilenet.arch import ArchConfig
from mobilenet.cpu import cpu_info
from mobilenet.deploy.optional import available
from mobilenet.deploy.timing import time_rounds
from mobilenet.files import write_text
from mobilenet.latency import RUNTIMES, LatencyPrediction, calibrated, own_process, predict_with
from mobilenet.latency.backends import BACKENDS
from mobilenet.latency.calibrate import calibrate_beside
from mobilenet.latency.model import CONV_KINDS, layer_type
from mobilenet.latency.probes import default_networks

ALPHAS = (0.3, 0.45, 0.6, 0.85, 1.1)
RESOLUTIONS = (112, 144, 176, 208, 240)


@dataclass
class Setting:
    runtime: str
    precision: str
    threads: int
    batch_size: int
    calibration_s: float = 0.0
    # The machine's pace, slowest second over quickest (``timing.Rounds.drift``): while it
    # calibrated (None: a calibration cached before that was recorded) and while the grid ran.
    calibration_drift: float | None = None
    grid_drift: float = 1.0
    # Each network's time: the median of its blocks, each read at the rounds' typical pace
    # (``timing.Rounds.paced_medians``; until 2026-12-07, the plain median of its calls).
    measured: str = "paced median"
    # Whether the grid was timed in the calibration's own rounds (``--joint``): its errors then
    # hold none of the machine's drift between a calibration and a later timing.
    joint: bool = False
    rows: list[dict[str, Any]] = field(default_factory=list)  # one per network of the grid
    seen: list[dict[str, Any]] = field(default_factory=list)  # the calibration's networks, timed again
    summary: dict[str, Any] = field(default_factory=dict)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    print(f"CPU: {cpu_info().summary()}")
    print(f"command: {' '.join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])])}")
    grid = [ArchConfig(alpha=a, resolution=r) for a in args.alphas for r in args.resolutions]
    one_pool = ("onnxruntime" in args.runtimes and len(args.threads) == 1
                and BACKENDS["onnxruntime"].pools_of_their_own(args.threads[0]))
    if one_pool:
        # As the calibration's own process does: the grid's sessions, each with a pool of its own,
        # would slow each other in whole blocks at more than one thread (docs/latency.md §0),
        # where a user's lone session does not. (One thread count per process, then.)
        shared = BACKENDS["onnxruntime"].share_one_pool(args.threads[0])
        print(f"ONNX Runtime's sessions on one pool of {args.threads[0]} threads" if shared
              else "ONNX Runtime offers no shared pool here: a pool per session")
    settings = []
    for runtime in args.runtimes:
        backend = BACKENDS[runtime]
        if not all(available(module) for module in backend.needs):
            print(f"{runtime}: not installed, left out")
            continue
        for precision in (p for p in args.precisions if p in backend.calibrates):
            for threads in args.threads:
                if args.joint and own_process.needed(runtime, threads):
                    print(f"{runtime} {precision}, {threads} threads: left out of --joint (it calibrates in a "
                          "process of its own, where the grid's calls cannot follow: time one thread count "
                          "per run, which puts this process's sessions on one pool)")
                    continue
                for batch in args.batch_sizes:
                    setting = Setting(runtime, precision, threads, batch)
                    measure_setting(setting, grid, args)
                    print_setting(setting)
                    settings.append(setting)
                    if args.json:  # after every setting: a crash in the next one keeps those measured
                        write_text(args.json, json.dumps([asdict(s) for s in settings], indent=1) + "\n")
    if args.json:
        print(f"written: {args.json}")
    return 0


def measure_setting(setting: Setting, grid: list[ArchConfig], args: argparse.Namespace) -> None:
    from mobilenet.deploy.runtime import make_predictor  # noqa: PLC0415
    from mobilenet.model import MobileNetV1  # noqa: PLC0415
    from mobilenet.preprocess import sample_photos  # noqa: PLC0415

    models, calls = [], []
    images = sample_photos() if setting.precision == "int8" else None
    # The calibration's own networks, timed beside the held-out ones: their error now is the
    # machine's drift since the calibration, a floor under the held-out error.
    seen = [probe.arch_cfg(size) for probe in default_networks() for size in probe.sizes] if args.seen else []
    for cfg in grid + seen:
        torch.manual_seed(0)  # the same weights every run: PyTorch's compiled packages are found in the cache
        model = MobileNetV1(cfg).eval()
        predictor = make_predictor(model, setting.runtime, setting.precision, threads=setting.threads,
                                   batch_size=setting.batch_size, calibration_images=images)
        x = torch.rand(setting.batch_size, 3, *cfg.resolution)
        models.append(model)
        calls.append(lambda p=predictor, x=x: p(x))
    if args.joint:
        # The grid timed in the calibration's own rounds (never cached): one machine for both.
        constants, medians = calibrate_beside(setting.runtime, setting.precision, calls,
                                              batch_size=setting.batch_size, threads=setting.threads)
        setting.calibration_drift = setting.grid_drift = constants.machine_drift or 1.0
    else:
        constants = calibrated(setting.runtime, setting.precision, setting.batch_size, setting.threads,
                               remeasure=args.recalibrate)
        setting.calibration_drift = constants.machine_drift
        rounds = time_rounds(calls, seconds=args.seconds, min_runs=10)
        # (read at the rounds' typical pace, as the calibration reads its probes)
        medians, setting.grid_drift = rounds.paced_medians(), rounds.drift()
    setting.calibration_s = float(constants.fit.get("seconds", 0.0))  # when it was made, if cached
    setting.joint = args.joint
    for cfg, seconds in zip(seen, medians[len(grid):]):
        measured = seconds * 1e3
        predicted = predict_with(constants, cfg, setting.batch_size).total_ms
        setting.seen.append({"model": cfg.name, "predicted_ms": predicted, "measured_ms": measured,
                             "error": predicted / measured - 1})
    for cfg, seconds in zip(grid, medians):
        prediction = predict_with(constants, cfg, setting.batch_size)
        measured = seconds * 1e3
        row = {"model": cfg.name, "predicted_ms": prediction.total_ms, "measured_ms": measured,
               "error": prediction.total_ms / measured - 1}
        setting.rows.append(row)
    if setting.precision == "fp32" and setting.batch_size == 1:
        # Pass after pass over the grid, so that one network's profiles are minutes apart. The
        # calibration's own networks are profiled among them: their share errors are the floor
        # under the held-out ones, as their timing is under the totals (the guest's memory-side
        # spells move the shares between the calibration and now, docs/latency.md §4).
        passes = [[layer_fractions(model, setting, args.seconds) for model in models]
                  for _ in range(args.profile_passes)]
        for i, (cfg, row) in enumerate(zip(grid + seen, setting.rows + setting.seen, strict=True)):
            profiles = [p[i] for p in passes if p[i] is not None]
            fractions = list(np.median(profiles, axis=0)) if profiles else None
            row |= layer_errors(predict_with(constants, cfg, setting.batch_size), row["measured_ms"], fractions)
    setting.summary = summarize(setting.rows, setting.seen)


def layer_errors(prediction: LatencyPrediction, measured_ms: float,
                 fractions: Sequence[float] | None) -> dict[str, Any]:
    """Per-type share error and per-layer error, from each layer's share of the profiled time
    (``layer_fractions``) scaled to the network's interleaved median less the call, as the
    calibration scales its own profiles (the profile runs apart, in whatever spell the guest is
    in by then, docs/latency.md §0, and profiling slows every node). (Until 2026-12-05 OpenVINO's
    shares were read with its reorders left out, where the calibration gives each to the conv it
    feeds: the stem's share, with the input's reorder, was predicted at 10-17% where they showed
    5-10%. Since 2026-12-06 ``mobilenet bench`` reads every profile as the calibration does, and
    this benchmark takes its profiles from there.)"""
    out: dict[str, Any] = {}
    if fractions is None:
        return out
    layers_ms = measured_ms - prediction.call_ms
    layer_ms = [f * layers_ms / sum(fractions) for f in fractions]
    per_type: dict[str, float] = {}
    for layer, ms in zip(prediction.layers, layer_ms, strict=True):
        per_type[layer_type(layer.kernel)] = per_type.get(layer_type(layer.kernel), 0.0) + ms
    shares = {kind: ms / sum(layer_ms) for kind, ms in per_type.items()}
    errors = [x.predicted_ms / ms - 1 for x, ms in zip(prediction.layers, layer_ms) if x.kind in CONV_KINDS]
    out["conv_layers_within_25"] = float(np.mean(np.abs(errors) <= 0.25))
    out["layer_errors"] = [x.predicted_ms / ms - 1 for x, ms in zip(prediction.layers, layer_ms)]
    predicted = prediction.shares()
    out["share_error_pp"] = max(abs(predicted.get(k, 0.0) - v) for k, v in shares.items()) * 100
    out["measured_shares"], out["predicted_shares"] = shares, predicted
    return out


def layer_fractions(model: Any, setting: Setting, seconds: float) -> list[float] | None:
    """Each layer's share of the network's time by one profile of the network as ``mobilenet
    bench`` runs and profiles it (``deploy.bench.network_layer_seconds``: ONNX Runtime's
    profiler, OpenVINO's performance counters, XNNPACK's operator timings in ExecuTorch,
    PyTorch's oneDNN Graph or compiled program, or eager hooks where its cell is TorchScript),
    read as the calibration reads a profile; None where the runtime has no profiler here
    (LiteRT) or the profile does not split into the network's layers."""
    from mobilenet.deploy.bench import network_layer_seconds  # noqa: PLC0415
    from mobilenet.deploy.bench.layers import PROFILED  # noqa: PLC0415

    if setting.runtime not in PROFILED:
        return None
    x = torch.rand(1, 3, *model.arch_cfg.resolution)
    profiled = network_layer_seconds(model, setting.runtime, x, setting.threads, seconds)
    if len(profiled) != len(arch.layers(model.arch_cfg)) or sum(profiled) <= 0:
        return None
    return [s / sum(profiled) for s in profiled]


def summarize(rows: list[dict[str, Any]], seen: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    errors = np.array([r["error"] for r in rows])
    predicted, measured = (np.array([r[k] for r in rows]) for k in ("predicted_ms", "measured_ms"))
    summary = {"within_10": float(np.mean(np.abs(errors) <= 0.10)), "rmspe": float(np.sqrt(np.mean(errors**2))),
               "spearman": spearman(predicted, measured)}
    if seen:
        summary |= over_seen(errors, np.array([r["error"] for r in seen]))
    shares = [r["share_error_pp"] for r in rows if "share_error_pp" in r]
    layers = [r["conv_layers_within_25"] for r in rows if "conv_layers_within_25" in r]
    if shares:
        summary["share_error_pp_max"] = float(np.max(shares))
    seen_shares = [r["share_error_pp"] for r in seen if "share_error_pp" in r]
    if seen_shares:
        summary["seen_share_error_pp_max"] = float(np.max(seen_shares))
    if layers:
        summary["conv_layers_within_25"] = float(np.mean(layers))
    return summary


def over_seen(held_out: np.ndarray, seen: np.ndarray) -> dict[str, float]:
    """The held-out errors with the drift since the calibration taken out: each measured time
    scaled by how far the calibration's own networks, timed in the same interleaved pass, moved
    on average. On a guest whose speed moves by tens of percent between minutes (docs/latency.md
    §0) the raw errors are mostly that move; these are what is left. Both are reported, as the
    correction assumes the move scales every network alike."""
    drift = float(np.mean(seen))
    adjusted = (1 + held_out) / (1 + drift) - 1
    return {"seen_mean_error": drift, "over_seen_within_10": float(np.mean(np.abs(adjusted) <= 0.10)),
            "over_seen_rmspe": float(np.sqrt(np.mean(adjusted**2)))}


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation (average ranks for ties)."""
    if len(a) < 2:
        return float("nan")
    ranks = [_ranks(v) for v in (a, b)]
    return float(np.corrcoef(*ranks)[0, 1])


def _ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values))
    for v in np.unique(values):  # ties share their average rank
        tied = values == v
        ranks[tied] = ranks[tied].mean()
    return ranks


def print_setting(s: Setting) -> None:
    m = s.summary
    shown = ("within_10", "rmspe", "spearman", "seen_mean_error", "over_seen_within_10", "over_seen_rmspe",
             "seen_share_error_pp_max")
    extra = "".join(f", {k} {v:.3g}" for k, v in m.items() if k not in shown)
    print(f"\n{s.runtime} {s.precision}, {s.threads} thread(s), batch {s.batch_size} (calibrated in "
          f"{s.calibration_s:g} s): within ±10% {m['within_10']:.0%}, RMSPE {m['rmspe']:.1%}, "
          f"Spearman {m['spearman']:.3f}{extra}")
    calibrating = "not recorded" if s.calibration_drift is None else f"{s.calibration_drift:.2f}x"
    if s.joint:
        print(f"  the grid timed in the calibration's own rounds; the machine's pace, slowest second over "
              f"quickest: {s.grid_drift:.2f}x")
    else:
        print(f"  the machine's pace, slowest second over quickest: {calibrating} while calibrating, "
              f"{s.grid_drift:.2f}x while the grid ran")
    for r in s.rows:
        print(f"  {r['model']:<26} predicted {r['predicted_ms']:8.3f} ms  measured {r['measured_ms']:8.3f} ms  "
              f"{r['error']:+7.1%}")
    if s.seen:
        errors = np.array([r["error"] for r in s.seen])
        since = "the fit's own error" if s.joint else "the drift since"
        print(f"  the calibration's own {len(errors)} networks, timed again beside them ({since}): "
              f"RMSPE {np.sqrt(np.mean(errors**2)):.1%}, mean error {np.mean(errors):+.1%}")
        print(f"  held out over that mean error (the drift taken out): within ±10% {m['over_seen_within_10']:.0%}, "
              f"RMSPE {m['over_seen_rmspe']:.1%}")
        if "seen_share_error_pp_max" in m:
            held_out = m.get("share_error_pp_max", float("nan"))
            print(f"  their shares, profiled beside the held-out networks: largest error "
                  f"{m['seen_share_error_pp_max']:.1f} points (held out: {held_out:.1f})")


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runtimes", nargs="+", choices=RUNTIMES, default=list(RUNTIMES))
    p.add_argument("--precisions", nargs="+", default=["fp32", "int8"])
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8])
    p.add_argument("--alphas", nargs="+", type=float, default=list(ALPHAS))
    p.add_argument("--resolutions", nargs="+", type=int, default=list(RESOLUTIONS))
    p.add_argument("--seconds", type=float, default=1.0, help="timed seconds per network, interleaved")
    p.add_argument("--recalibrate", action="store_true", help="calibrate again instead of using the cache")
    p.add_argument("--seen", action="store_true",
                   help="also time the calibration's own networks beside the grid: the machine's drift since")
    p.add_argument("--joint", action="store_true",
                   help="time the grid in the calibration's own rounds, interleaved with its probes (calibrated "
                        "anew, never cached): both measure one machine however its speed moves, and the errors are "
                        "the model's alone. Not the issue's protocol, which calibrates first, then times the grid")
    p.add_argument("--profile-passes", type=int, default=2,
                   help="profiles of each network (fp32, batch 1), each layer's share their median")
    p.add_argument("--tiny", action="store_true", help="a 2 x 2 grid, ONNX Runtime fp32, 1 thread, batch 1")
    p.add_argument("--json", metavar="FILE", help="also write every figure as JSON")
    args = p.parse_args(argv)
    if args.profile_passes < 1:
        p.error(f"--profile-passes must be at least 1 (profiles of each network), got {args.profile_passes}")
    if args.tiny:
        args.alphas, args.resolutions = [0.45, 0.85], [144, 208]
        args.runtimes, args.precisions, args.threads, args.batch_sizes = ["onnxruntime"], ["fp32"], [1], [1]
        args.seconds = min(args.seconds, 0.3)
    return args


if __name__ == "__main__":
    sys.exit(main())
