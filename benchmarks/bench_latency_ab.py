"""Does a change to the latency model's fit predict better? An A/B that the guest's drift cannot
decide.

On a machine whose speed drifts by tens of percent between minutes (docs/latency.md §0), two
calibrations measured one after the other differ by the drift, not by the model. So this
script measures once: one calibration's probe timings, fitted twice (as ``mobilenet.latency``
fits now, and with one rule undone), then the validation grid's 3 × 3 corner and the
calibration's own 15 networks timed once, interleaved, and both fits' predictions held against
the same measurements. It prints each fit's error per kernel and on the networks, the
held-out error raw and over the seen networks' mean error (the drift since the calibration taken
out), and Spearman's rank correlation; at fp32 and batch 1, where the runtime profiles, also
each fit's share and layer errors against one profile of each held-out network
(bench_latency_model's reading of it).
``--timings F.pkl`` keeps those measurements, so that another variant is fitted to the very same
timings later (the pickle is read where it exists; it holds the code's own objects, so read it
with the code that wrote it).

Variants (``--variant``), each "now" against "before":

* ``pixel-term``: the roofline's cost per output position (``Roofline.pixel_s``), or none;
* ``in-place-factors``: in-network factors kept at 1 for the groups whose rooflines were fitted
  to the networks' own profiled layers, or fitted for every group;
* ``in-place-profile``: rooflines fitted to the networks' layers as the runtime's profiler
  timed them (ONNX Runtime, OpenVINO, PyTorch's oneDNN Graph, ExecuTorch), or to the probes alone;
* ``lane-choice``: each kernel's lane width and cost per position chosen as the best fit among
  those making as many choices (``fit.simplest_good_fit``), or as the first of the fits tried in
  turn that beat the one kept so far by a tenth;
* ``pointwise-lanes``: a candidate, the other way round: the pointwise convs' lane width chosen
  from the probes (now), or fixed at the AVX-512 register's 16 floats (``fit_kernels``'
  ``lanes``), as a blocked layout pads channels;
* ``channel-blocks``: each conv kind split into its blocked and unblocked twins by the channel
  blocks the runtime's backend declares (``Backend.channel_blocks``), or one kernel per kind;
* ``handover``: the call's cost per byte of input and output handed over, from call probes at
  several sizes and taken off every probe and network (``Backend.handover_precisions``: ExecuTorch's fp32), or
  the call's fixed cost alone, in any runtime;
* ``cache``: the weights a call reads beyond what the last-level cache keeps between calls
  fetched from memory at a cost per byte (``fit.choose_cache``), or every weight kept;
* ``tail``: a depthwise conv's channels beyond its last whole lane run one at a time at a cost
  per output position (``Roofline.tail``), where that earns its place, or always padded;
* ``layer-cache``: a layer's input and output activations beyond what the cache holds of one
  layer fetched from memory at a cost per byte (``Roofline.spill_s``, the size chosen by
  ``fit.choose_cache`` among ``fit.LAYER_CACHE_SIZES``), or every activation held: a batch-8
  question (``--batch-size 8``; at batch 1 no calibration tries it);
* ``position-blocks``: a conv's output positions computed in the whole blocks its runtime
  declares (``Backend.position_blocks``: ONNX Runtime's NCHW convs at fp32, 16), or each
  position counted alone.

(A candidate not adopted runs from the commit that added it, docs/latency.md §4: ``memory-levels``,
a second level of memory, from cd23a74; ``channel-blocks`` with XNNPACK's blocks of 16 and probes
of 128 and 1024 channels, from 1224066.)

    .venv/bin/python benchmarks/bench_latency_ab.py litert int8 --variant pixel-term --json F.json
    .venv/bin/python benchmarks/bench_latency_ab.py openvino fp32 --batch-size 8 --variant layer-cache \
        --timings F.pkl --json F.json

``--whole-grid`` judges both on the validation grid's 25 networks instead of its corner.
``--batch-size`` times the grid and the seen networks at that batch, calibrated as
``mobilenet.latency`` calibrates it (at batch 1 where the runtime runs a batch as single calls:
LiteRT, ExecuTorch). Layer shares (ONNX Runtime, OpenVINO, ExecuTorch, PyTorch) come from
``bench_latency_model``'s profiles, at fp32 and batch 1, as there.

(Until 2026-12-03 this was bench_latency_pixel_term.py, with the pixel term its only variant.)
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import os
import pickle
import sys
import time
from collections.abc import Callable, Iterator

import numpy as np

VARIANTS = {
    "pixel-term": ("with the term", "without"),
    "in-place-factors": ("in-place groups at 1", "every group fitted"),
    "in-place-profile": ("layers profiled in the networks", "probes only"),
    "lane-choice": ("best of each level", "first to beat the last"),
    "pointwise-lanes": ("pointwise lanes chosen", "pointwise lanes 16"),
    "channel-blocks": ("blocked and unblocked convs", "one kernel per conv kind"),
    "handover": ("a cost per byte handed over", "a call's fixed cost only"),
    "cache": ("weights beyond the cache from memory", "every weight kept in the cache"),
    "tail": ("a depthwise conv's tail channels one at a time", "every channel padded to a whole lane"),
    "layer-cache": ("activations beyond the cache from memory", "every activation held"),
    "position-blocks": ("positions in the runtime's blocks", "every position alone"),
}


@contextlib.contextmanager
def rule_undone(variant: str) -> Iterator[None]:
    """The fit as it was before ``variant``'s rule, for the duration."""
    from mobilenet.latency import calibrate, fit

    if variant == "pixel-term":
        name, module, real = "fit_roofline", fit, fit.fit_roofline
        replacement = lambda works, layers, seconds, per_pixel=False, *rest: real(  # noqa: E731
            works, layers, seconds, False, *rest)
    elif variant == "in-place-factors":
        name, module, real = "fit_in_network", calibrate, calibrate.fit_in_network
        replacement = lambda measurements, in_place=(): real(measurements)  # noqa: E731
    elif variant == "lane-choice":
        name, module, real = "simplest_good_fit", fit, fit.simplest_good_fit

        def replacement(fits):  # (the rule until 2026-12-03)
            kept, kept_error = None, float("inf")
            for per_pixel, width in itertools.product((False, True), fit.LANES):
                roof, error = fits[per_pixel, False, width, False, False]
                if error < kept_error * fit.LANES_MARGIN and kept_error - error > fit.LANES_MIN_GAIN:
                    kept, kept_error = (roof, error), error
            return kept
    elif variant == "tail":
        name, module, real = "simplest_good_fit", fit, fit.simplest_good_fit
        replacement = lambda fits: real({key: value for key, value in fits.items() if not key[3]})  # noqa: E731
    elif variant == "pointwise-lanes":
        name, module, real = "fit_kernels", calibrate, calibrate.fit_kernels
        replacement = lambda measurements, batch_size, element_bytes: real(  # noqa: E731
            measurements, batch_size, element_bytes, lanes={"pointwise": 16, "pointwise_unblocked": 16})
    elif variant == "channel-blocks":
        name, module, real = "fit", calibrate, calibrate.fit
        replacement = lambda *args, **kwargs: real(*args, **(kwargs | {"channel_blocks": {}}))  # noqa: E731
    elif variant == "handover":
        name, module, real = "fit", calibrate, calibrate.fit
        replacement = lambda *args, **kwargs: real(*args, **(kwargs | {"handover": False}))  # noqa: E731
    elif variant == "cache":
        name, module, real = "CACHE_SIZES", calibrate, calibrate.CACHE_SIZES
        replacement = ()
    elif variant == "layer-cache":
        name, module, real = "LAYER_CACHE_SIZES", calibrate, calibrate.LAYER_CACHE_SIZES
        replacement = ()
    elif variant == "position-blocks":
        name, module, real = "fit", calibrate, calibrate.fit
        replacement = lambda *args, **kwargs: real(*args, **(kwargs | {"position_blocks": {}}))  # noqa: E731
    else:  # every network's layer profile left out: the rooflines from the probes alone
        name, module, real = "fit", calibrate, calibrate.fit
        replacement = lambda *args, **kwargs: real(  # noqa: E731
            *args[:4], [dataclasses.replace(t, layer_seconds=None) for t in args[4]], **kwargs)
    setattr(module, name, replacement)
    try:
        yield
    finally:
        setattr(module, name, real)


def measure(args: argparse.Namespace, grid: list, seen: list, log: Callable[[str], None]) -> dict:
    """One calibration's probe timings (as a calibration measures them; for ``in-place-profile``,
    which fits without the networks' profiles, every probe the budget reaches, ``every_probe``),
    then the held-out grid and the seen networks timed once,
    interleaved, and at fp32 and batch 1 each held-out network's layers profiled once where the
    runtime profiles."""
    import torch

    from bench_latency_model import Setting, layer_fractions  # (this folder is the script's path)
    from mobilenet.cpu import cpu_info
    from mobilenet.deploy.runtime import make_predictor
    from mobilenet.deploy.timing import Timing, time_interleaved
    from mobilenet.latency import calibrate
    from mobilenet.latency.probes import default_networks, default_plan
    from mobilenet.model import MobileNetV1
    from mobilenet.preprocess import sample_photos

    backend = calibrate.backend_for(args.runtime, args.precision, args.threads)
    found = backend.prepare(log)
    plan = calibrate.in_order(default_networks(), default_plan())  # the calibration's own order
    calibrated_batch = 1 if backend.fixed_batch else args.batch_size
    timed = calibrate._measure(backend, plan, calibrated_batch, time.monotonic() + calibrate.DEFAULT_BUDGET_S,
                               calibrate.SECONDS_PER_SHAPE, log, found,
                               every_probe=every_probe(args)).timed
    images = sample_photos() if args.precision == "int8" else None
    calls, models = [], []
    for cfg in grid + seen:
        torch.manual_seed(0)
        model = MobileNetV1(cfg).eval()
        predictor = make_predictor(model, args.runtime, args.precision, threads=args.threads,
                                   batch_size=args.batch_size, calibration_images=images)
        x = torch.rand(args.batch_size, 3, *cfg.resolution)
        calls.append(lambda predictor=predictor, x=x: predictor(x))
        models.append(model)
    samples = time_interleaved(calls, seconds=args.seconds, min_runs=10)
    measured = np.array([Timing.from_seconds(s).median_ms for s in samples])
    # Each held-out network's layers as fractions of its layers' time, profiled once for every fit.
    profiles = None
    if args.precision == "fp32" and args.batch_size == 1:
        setting = Setting(args.runtime, args.precision, args.threads, args.batch_size)
        fractions = [layer_fractions(model, setting, args.seconds) for model in models[:len(grid)]]
        profiles = None if None in fractions else fractions
    return {"setting": setting_of(args), "cpu": cpu_info().summary(), "timed": timed,
            "calibrated_batch": calibrated_batch, "fixed_batch": backend.fixed_batch,
            "channel_blocks": backend.channel_blocks, "position_blocks": backend.position_blocks,
            "measured_ms": measured, "profiles": profiles}


def every_probe(args: argparse.Namespace) -> bool:
    """Whether the probes of kernels that the networks' profiles time in place are measured too:
    only the variant that fits without those profiles reads them."""
    return args.variant == "in-place-profile"


def setting_of(args: argparse.Namespace) -> dict:
    """What a kept measurement was timed at: fitted to another runtime's fit, it would mislead."""
    return {"runtime": args.runtime, "precision": args.precision, "threads": args.threads,
            "batch_size": args.batch_size, "seconds": args.seconds, "every_probe": every_probe(args),
            "whole_grid": args.whole_grid}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runtime")
    p.add_argument("precision")
    p.add_argument("--variant", choices=VARIANTS, default="pixel-term")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=1, help="images per call of the grid and the seen networks")
    p.add_argument("--seconds", type=float, default=1.0, help="timed seconds per network")
    p.add_argument("--whole-grid", action="store_true", help="the validation grid's 25 networks, not its 3 x 3 corner")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--timings", help="keep the measurements (probes, networks, profiles) in this pickle: fitted "
                   "from it where it exists, else measured and written to it, so that another variant is judged "
                   "on the very same timings")
    args = p.parse_args()

    from bench_latency_model import ALPHAS, RESOLUTIONS, layer_errors, over_seen, spearman  # (this folder)
    from mobilenet.arch import ArchConfig
    from mobilenet.latency import calibrate
    from mobilenet.latency.backends import BACKENDS
    from mobilenet.latency.model import predict_with
    from mobilenet.latency.probes import default_networks

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    alphas, resolutions = (ALPHAS, RESOLUTIONS) if args.whole_grid else ((0.3, 0.6, 1.1), (112, 176, 240))
    grid = [ArchConfig(alpha=a, resolution=r) for a in alphas for r in resolutions]
    seen = [probe.arch_cfg(size) for probe in default_networks() for size in probe.sizes]
    if args.timings and os.path.exists(args.timings):
        with open(args.timings, "rb") as f:
            measurement = pickle.load(f)
        if measurement.get("setting") != setting_of(args):
            raise SystemExit(f"{args.timings} holds timings of {measurement.get('setting')}, not of "
                             f"{setting_of(args)}: name another file to measure these")
        log(f"fitting the timings kept in {args.timings} ({measurement['cpu']})")
    else:
        measurement = measure(args, grid, seen, log)
        if args.timings:
            from mobilenet.files import write_bytes

            write_bytes(args.timings, pickle.dumps(measurement))
    timed, measured, profiles = measurement["timed"], measurement["measured_ms"], measurement["profiles"]

    # The model's fit, as the runtime's backend asks for it; ``handover`` judges the term itself.
    hands_over = args.variant == "handover" or args.precision in BACKENDS[args.runtime].handover_precisions

    def fitted() -> calibrate.Calibration:
        return calibrate.fit(args.runtime, args.precision, measurement["calibrated_batch"], args.threads, timed,
                             fixed_batch=measurement["fixed_batch"], channel_blocks=measurement["channel_blocks"],
                             position_blocks=measurement.get("position_blocks"), handover=hands_over)

    now, before = VARIANTS[args.variant]
    fits = {now: fitted()}
    with rule_undone(args.variant):
        fits[before] = fitted()
    report = {"command": " ".join(["benchmarks/bench_latency_ab.py", *sys.argv[1:]]),
              "cpu": measurement["cpu"], "runtime": args.runtime, "precision": args.precision,
              "variant": args.variant, "threads": args.threads, "batch_size": args.batch_size,
              "grid": [c.name for c in grid],
              "seen": [c.name for c in seen], "measured_ms": measured.tolist(), "fits": {}}
    for name, calibration in fits.items():
        predictions = [predict_with(calibration, cfg, args.batch_size) for cfg in grid + seen]
        predicted = np.array([p.total_ms for p in predictions])
        error = predicted / measured - 1
        held_out, own = error[:len(grid)], error[len(grid):]
        adjusted = over_seen(held_out, own)
        drift = adjusted["seen_mean_error"]
        summary = {
            "probe_rmspe": calibration.fit["rmspe"], "networks": calibration.fit.get("in_network"),
            "in_network": dict(calibration.in_network),
            "pixel_s": {k: r.pixel_s for k, r in calibration.kernels.items() if r.pixel_s > 0},
            "far_s": {k: r.far_s for k, r in calibration.kernels.items() if r.far_s > 0},
            "cache_bytes": calibration.cache_bytes if calibration.cache_bytes < float("inf") else None,
            "spill_s": {k: r.spill_s for k, r in calibration.kernels.items() if r.spill_s > 0},
            "layer_cache_bytes": (calibration.layer_cache_bytes if calibration.layer_cache_bytes < float("inf")
                                  else None),
            "lanes": {k: r.lanes for k, r in calibration.kernels.items()},
            "held_out_rmspe": float(np.sqrt(np.mean(held_out**2))),
            "held_out_within_10": float(np.mean(abs(held_out) <= 0.1)),
            "seen_mean_error": drift, "seen_rmspe": float(np.sqrt(np.mean(own**2))),
            "held_out_over_seen_rmspe": adjusted["over_seen_rmspe"],
            "held_out_over_seen_within_10": adjusted["over_seen_within_10"],
            "held_out_spearman": spearman(predicted[:len(grid)], measured[:len(grid)]),
            "held_out_errors": dict(zip((c.name for c in grid), held_out.tolist())),
        }
        if profiles is not None:  # (every network holds as many conv layers: the mean is over all of them)
            layers = [layer_errors(prediction, ms, fractions)
                      for prediction, fractions, ms in zip(predictions, profiles, measured)]
            summary |= {"share_error_pp_max": max(x["share_error_pp"] for x in layers),
                        "conv_layers_within_25": float(np.mean([x["conv_layers_within_25"] for x in layers]))}
        report["fits"][name] = summary
        fit_errors = ", ".join(f"{k} {v:.0%}" for k, v in summary["probe_rmspe"].items())
        print(f"{name}: each kernel's fit error {fit_errors}")
        s = summary
        print(f"  held out: RMSPE {s['held_out_rmspe']:.1%}, within ±10% {s['held_out_within_10']:.0%}; "
              f"seen: mean {drift:+.1%}, RMSPE {s['seen_rmspe']:.1%}; held out over the seen mean: "
              f"RMSPE {s['held_out_over_seen_rmspe']:.1%}, within ±10% {s['held_out_over_seen_within_10']:.0%}; "
              f"Spearman {s['held_out_spearman']:.3f}")
        if profiles is not None:
            print(f"  layers: share error at most {s['share_error_pp_max']:.1f} pp, conv layers within ±25% "
                  f"{s['conv_layers_within_25']:.0%}")
        print("  " + " ".join(f"{c.alpha:g}-{c.resolution[0]} {e:+.0%}" for c, e in zip(grid, held_out)))
        mib = lambda size: "none" if size is None else f"{size / 2**20:g} MiB"  # noqa: E731
        own = f"{calibration.network_error:.1%}" if calibration.network_error is not None else "none timed"
        print(f"  own networks as fitted: RMSPE {own}; the cache keeps {mib(s['cache_bytes'])} of the weights, "
              f"holds {mib(s['layer_cache_bytes'])} of a layer's activations")
    if args.json:
        from mobilenet.files import write_text

        write_text(args.json, json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
