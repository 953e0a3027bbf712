"""``mobilenet cost``, ``mobilenet compare`` and ``mobilenet paper``: the cost model on the terminal."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mobilenet import cost, paper
from mobilenet.cli import latency as timed
from mobilenet.cli.common import add_model_arguments, arch_config_from_args
from mobilenet.cost import CONVENTION
from mobilenet.errors import InputError
from mobilenet.plot import png_path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "cost", help="per-layer mult-adds, parameters and activation memory",
        description="Exact cost of every layer, the totals, and the paper's Table 2. " + CONVENTION,
    )
    _add_cost_arguments(p)
    p.set_defaults(func=run_cost)

    p = subparsers.add_parser("compare", help="each separable block against the full convolution it replaces",
                              description="Depthwise separable blocks against the standard 3×3 convolutions they "
                              "replace, block by block and for the whole network. " + CONVENTION)
    _add_cost_arguments(p)
    p.set_defaults(func=run_compare)

    p = subparsers.add_parser("layer", help="one K×K×M×N convolution: standard against depthwise separable",
                              description="One arbitrary layer, standard convolution against its depthwise "
                              "separable replacement. " + CONVENTION)
    p.add_argument("--kernel", "-k", type=int, default=3, help="kernel size K (default 3)")
    p.add_argument("--in-channels", "-m", type=int, required=True, help="input channels M")
    p.add_argument("--out-channels", "-n", type=int, required=True, help="output channels N")
    p.add_argument("--size", type=int, required=True, help="input height = width")
    p.add_argument("--stride", type=int, default=1)
    p.add_argument("--padding", choices=("tf", "symmetric"), default="tf",
                   help="tf: TensorFlow SAME (default); symmetric: PyTorch padding=(K-1)/2")
    p.add_argument("--depth-multiplier", type=int, default=1)
    p.add_argument("--bytes-per-element", type=int, default=4, help="activation size: fp32 4, fp16 2, int8 1")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_layer)

    p = subparsers.add_parser("paper", help="the paper's Tables 1-9 recomputed beside the published figures",
                              description="Tables 1-9 of Howard et al. 2017 recomputed; differences flagged with "
                              "their reason.")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--no-peers", action="store_true",
                   help="skip counting VGG16/GoogLeNet/SqueezeNet/AlexNet from torchvision (Tables 8-9)")
    p.set_defaults(func=run_paper)


def _add_cost_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    p.add_argument("--bytes-per-element", type=int, default=4, help="activation size: fp32 4, fp16 2, int8 1")
    p.add_argument("--batch-size", type=int, default=1, help="images per batch (scales activation memory)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.add_argument("--plot", type=_png_path, metavar="FILE.png",
                   help="also draw per-layer mult-adds, parameters and memory, separable against standard")
    timed.add_predict_arguments(p)


def _png_path(value: str) -> Path:
    try:
        return png_path(value)
    except InputError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _network(args: argparse.Namespace) -> cost.NetworkCost:
    return cost.network_cost(arch_config_from_args(args), args.bytes_per_element, args.batch_size)


def _maybe_plot(args: argparse.Namespace, net: cost.NetworkCost) -> None:
    if args.plot is not None:
        from mobilenet.plot import plot_costs

        plot_costs(net, args.plot)
        if not args.json:
            print(f"\nplot written to {args.plot}")


# --- cost -------------------------------------------------------------------------------------

def run_cost(args: argparse.Namespace) -> int:
    net = _network(args)
    prediction = timed.predicted(args, net.config)
    if args.json:
        print(json.dumps(timed.with_prediction(net.to_dict(), prediction) if prediction else net.to_dict(), indent=2))
    else:
        print("\n".join([format_cost(net), *(timed.prediction_lines(prediction, net) if prediction else [])]))
    _maybe_plot(args, net)
    return 0


def format_cost(net: cost.NetworkCost) -> str:
    cfg, t = net.config, net.total
    unit = _bytes_unit(net)
    lines = [
        f"{cfg.name}: α={cfg.alpha:g}, input {cfg.height}×{cfg.width}×{cfg.in_channels}, variant {cfg.variant}, "
        f"depth multiplier {cfg.depth_multiplier}, {cfg.num_classes} classes, padding {cfg.padding}",
        f"Units: {CONVENTION}. Memory at {net.bytes_per_element} B/element, batch {net.batch_size}.",
        "",
        f"{'layer':<14}{'type / stride':<15}{'filter shape':<17}{'input':>15}{'output':>15}"
        f"{'mult-adds':>15}{'weights':>12}{'params':>12}{'memory ' + unit:>14}",
    ]
    for x in net.layers:
        lines.append(
            f"{x.name:<14}{_type_stride(x):<15}{_filter_shape(x):<17}{_shape(x.in_shape):>15}{_shape(x.out_shape):>15}"
            f"{x.mult_adds:>15,}{x.weights:>12,}{x.trainable_params:>12,}{_scaled(x.activation_bytes, unit):>14}"
        )
    lines += [
        "",
        f"Mult-adds        {t.mult_adds:>15,}  ({t.mult_adds / 1e6:.1f}M; FLOPs {t.flops:,})",
        f"  conv           {t.conv_mult_adds:>15,}",
        f"  fully connected{t.fc_mult_adds:>15,}",
        f"Weights (paper)  {t.weights:>15,}  (conv {t.conv_weights:,} + FC {t.fc_weights:,}; the paper's 'parameters')",
        f"Trainable params {t.trainable_params:>15,}  (+ FC bias {t.biases:,} + BatchNorm γ/β {t.bn_params:,}; "
        "what PyTorch counts)",
        f"All params       {t.all_params:>15,}  (+ BatchNorm running mean/var {t.bn_stats:,}; "
        "what Keras' count_params prints)",
        f"Peak activations {t.peak_activation_bytes:>15,} B  ({_scaled(t.peak_activation_bytes, 'MiB')} MiB, at "
        f"{t.peak_layer}: input + output when layers run one after another)",
        "",
        "Share by layer type (the paper's Table 2)",
        f"  {'type':<18}{'mult-adds':>12}{'parameters':>12}",
    ]
    for s in net.shares():
        lines.append(f"  {s.label:<18}{100 * s.mult_adds_fraction:>11.2f}%{100 * s.weights_fraction:>11.2f}%")
    return "\n".join(lines)


# --- compare ----------------------------------------------------------------------------------

def run_compare(args: argparse.Namespace) -> int:
    comparison = cost.compare(arch_config_from_args(args), args.bytes_per_element, args.batch_size)
    rows = timed.speedups(args, comparison.network.config)
    if args.json:
        print(json.dumps(timed.with_speedups(comparison.to_dict(), rows) if rows else comparison.to_dict(), indent=2))
    else:
        print("\n".join([format_compare(comparison), *(timed.speedup_lines(rows) if rows else [])]))
    _maybe_plot(args, comparison.network)
    return 0


def format_compare(comparison: cost.NetworkComparison) -> str:
    net, separable, standard = comparison.network, comparison.separable, comparison.standard
    lines = [
        f"{net.config.name}: every depthwise separable block against the full 3×3 convolution it replaces",
        f"Units: {CONVENTION}. Ratio = separable / standard; formula = 1/N + 1/K² "
        f"(× depth multiplier {net.config.depth_multiplier}).",
        "",
        f"{'block':<7}{'input':>14}{'s':>3}{'output':>14}{'standard':>15}{'separable':>14}{'ratio':>8}"
        f"{'1/N+1/K²':>10}{'saving':>8}{'std weights':>13}{'sep weights':>13}",
    ]
    for c in comparison.blocks:
        lines.append(
            f"{c.depthwise.block:<7}{_shape(c.depthwise.in_shape):>14}{c.depthwise.stride:>3}"
            f"{_shape(c.pointwise.out_shape):>14}{c.standard.mult_adds:>15,}{c.separable_mult_adds:>14,}"
            f"{c.mult_adds_ratio:>8.4f}{c.formula_ratio:>10.4f}{c.savings:>7.2f}×"
            f"{c.standard.weights:>13,}{c.separable_weights:>13,}"
        )
    rows = (
        ("mult-adds", separable.mult_adds, standard.mult_adds),
        ("weights (conv + FC)", separable.weights, standard.weights),
        ("trainable params", separable.trainable_params, standard.trainable_params),
        (f"peak activations (B, {net.bytes_per_element} B/el.)", separable.peak_activation_bytes,
         standard.peak_activation_bytes),
    )
    lines += ["", f"{'whole network':<34}{'separable':>15}{'standard':>16}{'ratio':>8}{'saving':>9}"]
    for label, sep, std in rows:
        lines.append(f"{label:<34}{sep:>15,}{std:>16,}{sep / std:>8.4f}{std / sep:>8.2f}×")
    lines.append("")
    lines.append("Activation memory barely changes: a separable block adds a depthwise output the size of its "
                 "input, and the peak is set by the largest maps, which both networks share.")
    return "\n".join(lines)


# --- layer ----------------------------------------------------------------------------------

def run_layer(args: argparse.Namespace) -> int:
    c = cost.layer_comparison(args.kernel, args.in_channels, args.out_channels, args.size, args.stride,
                              args.padding, args.depth_multiplier, args.bytes_per_element)
    if args.json:
        print(json.dumps(c.to_dict(), indent=2))
        return 0
    rows = {name: c.to_dict()[name] for name in ("standard", "depthwise", "pointwise", "separable")}
    k, m, n = args.kernel, args.in_channels, args.out_channels
    print(f"{k}×{k}×{m}×{n} convolution, stride {args.stride}, on {_shape(c.standard.in_shape)} → "
          f"{_shape(c.standard.out_shape)}")
    print(f"Units: {CONVENTION}.\n")
    print(f"{'':<22}{'mult-adds':>16}{'weights':>14}{'peak memory (B)':>18}")
    for name, row in rows.items():
        peak = f"{row['peak_activation_bytes']:,}" if "peak_activation_bytes" in row else ""
        print(f"{name:<22}{row['mult_adds']:>16,}{row['weights']:>14,}{peak:>18}")
    print(f"\nseparable / standard = {c.mult_adds_ratio:.4f} (1/N + 1/K² = {c.formula_ratio:.4f}): "
          f"{c.savings:.2f}× fewer mult-adds, {1 / c.weights_ratio:.2f}× fewer weights")
    return 0


# --- paper ------------------------------------------------------------------------------------

def run_paper(args: argparse.Namespace) -> int:
    tables = paper.all_tables(count_peers=not args.no_peers)
    if args.json:
        print(json.dumps([_table_json(t) for t in tables], indent=2))
        return 0
    for table in tables:
        print(f"Table {table.number}. {table.title}")
        for line in table.lines:
            print(f"  {line}")
        if table.rows:
            print(f"  {'':<66}{'computed':>10}{'published':>11}  check")
        for row in table.rows:
            # One decimal more than the paper printed, so rounding differences show.
            digits = paper.printed_decimals(row.published) + 1 if row.published is not None else 2
            computed = "—" if row.computed is None else f"{row.computed:.{digits}f}"
            print(f"  {row.label + ' (' + row.unit + ')':<66}{computed:>10}{row.published:>11g}  {row.flag}")
        for note in table.notes:
            print(f"  note: {note}")
        print()
    print("'computed' is counted from the architecture; accuracies ('—') need ImageNet training and are quoted.")
    return 0


def _table_json(table: paper.Table) -> dict[str, Any]:
    return {
        "table": table.number,
        "title": table.title,
        "lines": table.lines,
        "rows": [asdict(r) | {"agrees": r.agrees, "flag": r.flag} for r in table.rows],
        "notes": table.notes,
    }


# --- formatting -------------------------------------------------------------------------------

def _shape(chw: tuple[int, int, int]) -> str:
    c, h, w = chw
    return f"{h}×{w}×{c}"


def _type_stride(x: cost.LayerCost) -> str:
    names = {"conv": "Conv", "depthwise": "Conv dw", "pointwise": "Conv", "pool": "Avg Pool", "fc": "FC"}
    return f"{names[x.kind]} / s{x.stride}"


def _filter_shape(x: cost.LayerCost) -> str:
    if x.kind == "pool":
        return f"Pool {x.in_shape[1]}×{x.in_shape[2]}"
    if x.kind == "fc":
        return f"{x.in_shape[0]}×{x.out_shape[0]}"
    if x.kind == "depthwise":
        mult = x.out_shape[0] // x.in_shape[0]
        return f"3×3×{x.in_shape[0]} dw" + (f" ×{mult}" if mult > 1 else "")
    return f"{x.kernel}×{x.kernel}×{x.in_shape[0]}×{x.out_shape[0]}"


def _bytes_unit(net: cost.NetworkCost) -> str:
    return "MiB" if net.total.peak_activation_bytes >= 2**20 else "KiB"


def _scaled(n_bytes: int, unit: str) -> str:
    return f"{n_bytes / (2**20 if unit == 'MiB' else 2**10):.2f}"
