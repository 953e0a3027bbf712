"""``mobilenet choose``: the arguments parsed into ``mobilenet.latency.choose``, and what it returns
printed (a table, ``--json``, ``--plot``)."""

from __future__ import annotations

import argparse
import datetime
import json
import math
from typing import Any

from mobilenet.deploy.runtimes import PRECISIONS
from mobilenet.latency import MEASURE_SECONDS, RUNTIMES

SHOWN = 12  # candidates the table lists


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "choose", help="the most accurate published MobileNet that runs within a latency budget here",
        description="Predicts the latency of every published ImageNet MobileNet on this machine (a roofline "
        "per kind of layer, calibrated here in the runtime within a minute and cached), ranks those predicted "
        "to fit the budget by published top-1, then times the best few for real and prints the chosen one "
        "with its predicted and measured times.",
    )
    p.add_argument("--budget-ms", type=float, required=True, help="milliseconds per call (per batch)")
    p.add_argument("--runtime", choices=RUNTIMES, required=True)
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="default fp32; at int8 the candidates are TF's quantization-aware-trained models, "
                   "ranked by their own int8 top-1")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="default: the runtime's own")
    # (dest: the library's name, so that its refusal of a count below 0 names --measure)
    p.add_argument("--measure", type=int, default=3, metavar="N", dest="measure_best",
                   help="architectures timed for real per round, best first (default 3; 0: trust the predictions)")
    p.add_argument("--measure-seconds", type=float, default=MEASURE_SECONDS, metavar="S",
                   help=f"seconds to time each of them, interleaved (default {MEASURE_SECONDS:g}; longer settles a "
                   "model near the budget where the machine's speed moves)")
    p.add_argument("--recalibrate", action="store_true", dest="remeasure",
                   help="measure this machine's constants again")
    p.add_argument("--plot", metavar="F.png", help="draw top-1 against latency with the Pareto front")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run_choose)


def run_choose(args: argparse.Namespace) -> int:
    from mobilenet.latency import choose  # noqa: PLC0415 - needs torch and the runtime

    choice = choose(args.budget_ms, args.runtime, args.precision, args.batch_size, args.threads,
                    measure_best=args.measure_best, measure_seconds=args.measure_seconds, remeasure=args.remeasure)
    if args.plot:
        from mobilenet.latency.plot import plot_choice  # noqa: PLC0415

        plot_choice(choice, args.plot)
    if args.json:
        print(json.dumps(choice.to_dict(), indent=1))
        return 0
    print("\n".join(_table(choice)))
    if args.plot:
        print(f"plot: {args.plot}")
    return 0


def _table(choice: Any) -> list[str]:
    from mobilenet.latency.ranking import BORDERLINE, MARGIN  # noqa: PLC0415 - imported with choose

    c, best = choice.calibration, choice.chosen
    lines = [
        f"budget {choice.budget_ms:g} ms per call: {c.runtime} {c.precision}, batch {choice.batch_size}, "
        f"threads: {c.threads or 'the runtime default'}" + (f"; calibrated{_when(c)}" if c.measured_at else ""),
        f"chosen: {best.name} ({best.arch_cfg.name}), published top-1 {best.top1:.1f}%, predicted "
        f"{best.predicted_ms:.3g} ms, measured {_ms(best.measured_ms)}",
    ]
    if choice.borderline:
        safer = choice.with_headroom
        lines.append(
            f"note: measured within {BORDERLINE:.0%} of the budget, where a machine's own drift moves a time "
            f"across it; with {BORDERLINE:.0%} to spare: "
            + (f"{safer.name}, top-1 {safer.top1:.1f}%, measured {_ms(safer.measured_ms)}" if safer else
               "no model timed here (raise --measure to time more)"))
    if choice.off_calibration:
        ratio = choice.measured_over_predicted
        how = f"{1 / ratio:.2f}x faster" if ratio < 1 else f"{ratio:.2f}x slower"
        lines.append(f"note: the models timed ran {how} than predicted, beyond the {choice.margin:.0%} the "
                     "calibration allows: this machine runs at another speed than when it was calibrated. "
                     "The pick stands on the measured times; --recalibrate measures the constants again"
                     + (". Above one thread a virtual machine's times also move with where its host runs the "
                        "cores, for seconds at a time (docs/latency.md §5): --threads 1 gives times that do not"
                        if choice.timed_in_parallel else ""))
    lines += [
        f"timed for real: the best predicted to fit, and those predicted up to {choice.margin:.0%} over the budget "
        f"(twice the calibration's error on whole networks, at least {MARGIN:.0%})",
        "",
        f"{'model':<36} {'top-1':>6} {'predicted':>10} {'measured':>10}",
    ]
    timed_up_to = choice.budget_ms * (1 + choice.margin)
    near = [x for x in choice.candidates if x.predicted_ms <= timed_up_to or x.measured_ms is not None]
    for x in near[:SHOWN]:
        mark = "  <- chosen" if x.name == best.name else ""
        lines.append(f"{x.name:<36} {x.top1:>5.1f}% {x.predicted_ms:>8.3g}ms {_ms(x.measured_ms):>10}{mark}")
    over = len(choice.candidates) - len(near)
    if len(near) > SHOWN or over:
        lines.append(f"({max(len(near) - SHOWN, 0)} more near the budget not listed; {over} predicted over it)")
    return lines


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}ms"


def _when(calibration: Any, now: datetime.datetime | None = None) -> str:
    """' (2026-12-06 14:02 UTC, 3 h ago)', or '' where the calibration does not say when."""
    when = calibration.measured_when(now)
    return f" ({when})" if when else ""


# --- `cost --predict` and `compare --predict` (mobilenet.cli.costs adds these) -------------------

def add_predict_arguments(p: argparse.ArgumentParser) -> None:
    """--predict RUNTIME, --precision, --threads (the batch size is the command's own)."""
    g = p.add_argument_group("predicted time on this machine (mobilenet.latency: a roofline per kind of layer, "
                             "calibrated here within a minute the first time, then cached)")
    g.add_argument("--predict", choices=RUNTIMES, metavar="RUNTIME", default=None,
                   help=f"add predicted milliseconds in RUNTIME ({', '.join(RUNTIMES)})")
    g.add_argument("--precision", choices=PRECISIONS, default="fp32", help="with --predict (default fp32)")
    g.add_argument("--threads", type=int, default=None, help="with --predict (default: the runtime's own)")
    g.add_argument("--recalibrate", action="store_true", dest="remeasure",
                   help="with --predict: measure this machine's constants again")


def predicted(args: argparse.Namespace, arch_cfg: Any) -> Any:
    """The ``LatencyPrediction`` asked for with --predict, or None."""
    if not getattr(args, "predict", None):
        return None
    from mobilenet.latency import predict  # noqa: PLC0415 - calibrating needs torch and the runtime

    return predict(arch_cfg, args.predict, args.precision, args.batch_size, args.threads,
                   remeasure=args.remeasure)


def speedups(args: argparse.Namespace, arch_cfg: Any) -> Any:
    """The ``BlockSpeedup`` rows asked for with --predict, or None."""
    if not getattr(args, "predict", None):
        return None
    from mobilenet.latency import compare  # noqa: PLC0415

    return compare(arch_cfg, args.predict, args.precision, args.batch_size, args.threads,
                   remeasure=args.remeasure)


def with_prediction(cost_json: dict[str, Any], prediction: Any) -> dict[str, Any]:
    """``cost --json`` with ``predicted_ms`` and ``bound`` on every layer (and why: its
    ``intensity`` against the ``ridge`` of its kernel's ``roofline``, the rates it attains) and
    ``predicted_ms`` on the total, and the prediction's settings, per-type shares, the call's
    weights (those from memory apart), what the cache holds of a layer's activations (each
    layer's ``spilled_bytes`` beyond it) and the calibration's error on its own networks under
    ``latency``."""
    by_name = {x.name: x.to_dict() for x in prediction.layers}
    layers = [row | {"roofline": by_name[row["name"]]["kernel"]}
              | {k: v for k, v in by_name[row["name"]].items() if k not in ("name", "kind", "kernel")}
              for row in cost_json["layers"]]
    c = prediction.calibration
    latency = {"runtime": c.runtime, "precision": c.precision, "batch_size": prediction.batch_size,
               "threads": c.threads, "path": c.key.get("path"), "calibration_network_rmspe": c.network_error,
               "calibration_machine_drift": c.machine_drift, "calibrated_at": c.calibrated_at,
               "call_ms": prediction.call_ms,
               "time_shares": prediction.shares(), "weight_bytes": prediction.weight_bytes,
               "weight_bytes_from_memory": prediction.weight_bytes_from_memory,
               "layer_cache_bytes": c.layer_cache_bytes if math.isfinite(c.layer_cache_bytes) else None}
    return cost_json | {"layers": layers, "total": cost_json["total"] | {"predicted_ms": prediction.total_ms},
                        "latency": latency}


def prediction_lines(prediction: Any, net: Any) -> list[str]:
    """Per layer: predicted time, intensity against the ridge point, the roof that binds; per
    type: time share beside mult-add share (of ``net``, a ``cost.NetworkCost``); the total."""
    from mobilenet.latency.model import kernel_of, layer_type  # noqa: PLC0415

    mult_add_shares: dict[str, float] = {}
    for layer in net.layers:
        kind = layer_type(kernel_of(layer))
        mult_add_shares[kind] = mult_add_shares.get(kind, 0.0) + layer.mult_adds / net.total.mult_adds
    c = prediction.calibration
    spilling = [x for x in prediction.layers if x.spilled_bytes > 0]
    lines = ["", f"Predicted on this machine: {c.runtime} {c.precision}, batch {prediction.batch_size}, "
             f"threads: {c.threads or 'the runtime default'} (intensity and ridge in mult-adds per byte)",
             *([f"Probes ran: {c.key['path']}"] if c.key.get("path") else []),
             *([f"Calibration{_when(c)}: its own {c.fit['in_network'].get('networks', 'whole')} networks "
                f"predicted within {c.network_error:.1%} RMSPE when it measured them (--recalibrate to measure again)"]
               if c.network_error is not None else [f"Calibration{_when(c)}"] if c.measured_at else []),
             *([f"Weights: {prediction.weight_bytes / 2**20:.1f} MiB a call; the cache keeps {c.cache_bytes / 2**20:g} "
                f"MiB of them between calls, so {prediction.weight_bytes_from_memory / 2**20:.1f} MiB come from "
                "memory every call"] if prediction.weight_bytes_from_memory else []),
             *([f"Activations: the cache holds {c.layer_cache_bytes / 2**20:g} MiB of a layer's input and output; "
                f"{len(spilling)} layers move more, their excess from memory ({', '.join(x.name for x in spilling)})"]
               if spilling else []),
             f"{'layer':<14}{'kernel':<14}{'intensity':>10}{'ridge':>8}{'bound':>9}{'GMAC/s':>8}{'GB/s':>7}"
             f"{'ms':>10}{'share':>8}"]
    layers_ms = sum(x.predicted_ms for x in prediction.layers)
    for x in prediction.layers:
        ridge = f"{x.ridge:.3g}" if x.roofs_seen else "-"
        rate = f"{x.attained_macs_per_s / 1e9:.3g}" if x.mult_adds else "-"
        lines.append(f"{x.name:<14}{x.kernel:<14}{x.intensity:>10.3g}{ridge:>8}{x.bound:>9}{rate:>8}"
                     f"{x.attained_bytes_per_s / 1e9:>7.3g}{x.predicted_ms:>10.4f}{x.predicted_ms / layers_ms:>8.1%}")
    lines.append(f"{'call':<14}{'':<14}{'':>10}{'':>8}{'':>9}{'':>8}{'':>7}{prediction.call_ms:>10.4f}")
    lines += [f"{'total':<70}{prediction.total_ms:>10.4f} ms",
              "GMAC/s, GB/s: the layer's mult-adds and bytes over its predicted time. Ridge '-': the "
              "calibration saw only one roof of the kernel bind, the one 'bound' names.", "",
              f"  {'type':<18}{'time':>8}{'mult-adds':>11}"]
    for kind, share in prediction.shares().items():
        lines.append(f"  {kind:<18}{share:>8.1%}{mult_add_shares.get(kind, 0.0):>11.1%}")
    return lines


def with_speedups(compare_json: dict[str, Any], rows: Any) -> dict[str, Any]:
    """``compare --json`` with each block's predicted milliseconds, speed-up and its reason."""
    by_block = {r.block: r for r in rows}
    blocks = [b | {"predicted": {"standard_ms": by_block[b["block"]].standard.predicted_ms,
                                 "separable_ms": by_block[b["block"]].separable_ms,
                                 "speedup": by_block[b["block"]].speedup, "why": by_block[b["block"]].reason()}}
              for b in compare_json["blocks"]]
    return compare_json | {"blocks": blocks}


def speedup_lines(rows: Any) -> list[str]:
    """Each block's predicted speed-up beside its mult-add saving, and why the two differ."""
    lines = ["", "Predicted on this machine: separable against full convolution",
             f"{'block':<7}{'saving':>8}{'speed-up':>10}{'standard ms':>13}{'separable ms':>14}  why"]
    for r in rows:
        lines.append(f"{r.block:<7}{r.savings:>7.2f}×{r.speedup:>9.2f}×{r.standard.predicted_ms:>13.4f}"
                     f"{r.separable_ms:>14.4f}  {r.reason()}")
    return lines
