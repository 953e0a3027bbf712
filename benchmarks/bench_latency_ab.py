"""Does the roofline's cost per output position (``Roofline.pixel_s``) predict better? An A/B
that the guest's drift cannot decide.

On a machine whose speed drifts by tens of percent between minutes (docs/latency.md §0), two
calibrations measured one after the other differ by the drift, not by the model. So this
script measures once: one calibration's probe timings, fitted twice (with the per-position
term, as ``mobilenet.latency`` fits now, and without it, as before), then the validation grid's
3 × 3 corner and the calibration's own 15 networks timed once, interleaved, and both fits'
predictions held against the same measurements. It prints each fit's error on the probes and on
the networks, and the held-out error raw and over the seen networks' mean error (the drift since
the calibration taken out).

    .venv/bin/python benchmarks/bench_latency_pixel_term.py litert int8 --json F.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runtime")
    p.add_argument("precision")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seconds", type=float, default=1.0, help="timed seconds per network")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args()

    import torch

    from bench_latency_model import over_seen, spearman  # (this folder is the script's path)
    from mobilenet.arch import ArchConfig
    from mobilenet.cpu import cpu_info
    from mobilenet.deploy.runtime import make_predictor
    from mobilenet.deploy.timing import Timing, time_interleaved
    from mobilenet.latency import calibrate, fit
    from mobilenet.latency.model import predict_with
    from mobilenet.latency.probes import default_networks, default_plan
    from mobilenet.model import MobileNetV1
    from mobilenet.preprocess import sample_photos

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    backend = calibrate.backend_for(args.runtime, args.precision, args.threads)
    found = backend.prepare(log)
    plan = (*default_networks(), *default_plan())
    timed = calibrate._measure(backend, plan, 1, time.monotonic() + calibrate.DEFAULT_BUDGET_S,
                               calibrate.SECONDS_PER_SHAPE, log, found)

    def fitted(per_pixel: bool) -> calibrate.Calibration:
        with_term = fit.fit_roofline
        if not per_pixel:  # every kernel fitted as before the term: none per position
            fit.fit_roofline = lambda works, layers, seconds, per_pixel=False: with_term(works, layers, seconds, False)
        try:
            return calibrate.fit(args.runtime, args.precision, 1, args.threads, timed,
                                 fixed_batch=backend.fixed_batch, channel_blocks=backend.channel_blocks)
        finally:
            fit.fit_roofline = with_term

    fits = {"with the term": fitted(True), "without": fitted(False)}
    grid = [ArchConfig(alpha=a, resolution=r) for a in (0.3, 0.6, 1.1) for r in (112, 176, 240)]
    seen = [probe.arch_cfg(size) for probe in default_networks() for size in probe.sizes]
    images = sample_photos() if args.precision == "int8" else None
    calls = []
    for cfg in grid + seen:
        torch.manual_seed(0)
        predictor = make_predictor(MobileNetV1(cfg).eval(), args.runtime, args.precision, threads=args.threads,
                                   batch_size=1, calibration_images=images)
        x = torch.rand(1, 3, *cfg.resolution)
        calls.append(lambda predictor=predictor, x=x: predictor(x))
    samples = time_interleaved(calls, seconds=args.seconds, min_runs=10)
    measured = np.array([Timing.from_seconds(s).median_ms for s in samples])
    report = {"command": " ".join(["benchmarks/bench_latency_pixel_term.py", *sys.argv[1:]]),
              "cpu": cpu_info().summary(), "runtime": args.runtime, "precision": args.precision,
              "threads": args.threads, "grid": [c.name for c in grid], "seen": [c.name for c in seen],
              "measured_ms": measured.tolist(), "fits": {}}
    for name, calibration in fits.items():
        predicted = np.array([predict_with(calibration, cfg, 1).total_ms for cfg in grid + seen])
        error = predicted / measured - 1
        held_out, own = error[:len(grid)], error[len(grid):]
        adjusted = over_seen(held_out, own)
        drift = adjusted["seen_mean_error"]
        summary = {
            "probe_rmspe": calibration.fit["rmspe"], "networks": calibration.fit.get("in_network"),
            "pixel_s": {k: r.pixel_s for k, r in calibration.kernels.items() if r.pixel_s > 0},
            "held_out_rmspe": float(np.sqrt(np.mean(held_out**2))),
            "held_out_within_10": float(np.mean(abs(held_out) <= 0.1)),
            "seen_mean_error": drift, "seen_rmspe": float(np.sqrt(np.mean(own**2))),
            "held_out_over_seen_rmspe": adjusted["over_seen_rmspe"],
            "held_out_over_seen_within_10": adjusted["over_seen_within_10"],
            "held_out_spearman": spearman(predicted[:len(grid)], measured[:len(grid)]),
            "held_out_errors": dict(zip((c.name for c in grid), held_out.tolist())),
        }
        report["fits"][name] = summary
        print(f"{name}: probes " + ", ".join(f"{k} {v:.0%}" for k, v in summary["probe_rmspe"].items()))
        s = summary
        print(f"  held out: RMSPE {s['held_out_rmspe']:.1%}, within ±10% {s['held_out_within_10']:.0%}; "
              f"seen: mean {drift:+.1%}, RMSPE {s['seen_rmspe']:.1%}; held out over the seen mean: "
              f"RMSPE {s['held_out_over_seen_rmspe']:.1%}, within ±10% {s['held_out_over_seen_within_10']:.0%}; "
              f"Spearman {s['held_out_spearman']:.3f}")
        print("  " + " ".join(f"{c.alpha:g}-{c.resolution[0]} {e:+.0%}" for c, e in zip(grid, held_out)))
    if args.json:
        from mobilenet.files import write_text

        write_text(args.json, json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
