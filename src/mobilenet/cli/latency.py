"""``mobilenet choose``: the arguments parsed into ``mobilenet.latency.choose``, and what it returns
printed (a table, ``--json``, ``--plot``)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from mobilenet.deploy.runtimes import PRECISIONS
from mobilenet.latency import RUNTIMES

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
    p.add_argument("--measure", type=int, default=3, metavar="N",
                   help="architectures timed for real per round, best first (default 3; 0: trust the predictions)")
    p.add_argument("--recalibrate", action="store_true", help="measure this machine's constants again")
    p.add_argument("--plot", metavar="F.png", help="draw top-1 against latency with the Pareto front")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run_choose)


def run_choose(args: argparse.Namespace) -> int:
    from mobilenet.latency import choose  # noqa: PLC0415 - needs torch and the runtime

    choice = choose(args.budget_ms, args.runtime, args.precision, args.batch_size, args.threads,
                    measure_best=args.measure, remeasure=args.recalibrate)
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
    c, best = choice.calibration, choice.chosen
    lines = [
        f"budget {choice.budget_ms:g} ms per call: {c.runtime} {c.precision}, batch {choice.batch_size}, "
        f"{c.threads or 'default'} threads",
        f"chosen: {best.name} ({best.arch_cfg.name}), published top-1 {best.top1:g}%, predicted "
        f"{best.predicted_ms:.3g} ms, measured {_ms(best.measured_ms)}",
        "",
        f"{'model':<36} {'top-1':>6} {'predicted':>10} {'measured':>10}",
    ]
    near = [x for x in choice.candidates if x.predicted_ms <= choice.budget_ms * 1.1 or x.measured_ms is not None]
    for x in near[:SHOWN]:
        mark = "  <- chosen" if x is best or x.name == best.name else ""
        lines.append(f"{x.name:<36} {x.top1:>5g}% {x.predicted_ms:>8.3g}ms {_ms(x.measured_ms):>10}{mark}")
    over = len(choice.candidates) - len(near)
    if len(near) > SHOWN or over:
        lines.append(f"({max(len(near) - SHOWN, 0)} more near the budget not listed; {over} predicted over it)")
    return lines


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}ms"
