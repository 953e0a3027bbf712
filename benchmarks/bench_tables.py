"""Markdown tables for docs/performance.md from the JSON reports of `mobilenet bench --save`.

    .venv/bin/python benchmarks/bench_tables.py docs/bench/mobilenet_1.0_224.json [...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _savings(row: dict) -> float:
    """Full / separable mult-adds; reports saved before the rename call it mult_add_ratio."""
    return row["savings"] if "savings" in row else row["mult_add_ratio"]


def tables(report: dict) -> str:
    m = report["machine"]
    load = ", ".join(f"{x:.1f}" for x in m["load_average"])
    peak = report["sgemm_peak_gflops"]
    out = [
        f"### {report['model']}: {report['mult_adds'] / 1e6:.1f}M mult-adds, "
        f"{report['gflop_per_image']:.3f} GFLOP per image",
        "",
        f"{m['cpu']}, {m['threads']} threads, load average {load} (1, 5, 15 min) at the start; "
        f"interleaved fp32 1024³ sgemm: {peak:.0f} GFLOP/s (quiet machine: about 200).",
        "",
        "| backend | batch | median ms | p10–p90 ms | images/s | GFLOP/s | of sgemm |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for c in report["cells"]:
        name = c["name"] + (" (peer)" if c["peer"] else "")
        if c["status"] != "ok":
            out.append(f"| {name} | {c['batch_size']} | {c['status']}: {c['reason']} | | | | |")
            continue
        out.append(
            f"| {name} | {c['batch_size']} | {c['median_ms']:.2f} | {c['p10_ms']:.2f}–{c['p90_ms']:.2f} | "
            f"{c['images_per_s']:.0f} | {c['gflops']:.0f} | {c['gflops'] / peak:.0%} |"
        )
    if report["separable_vs_conv"]:
        out += ["", "| runtime (batch 1, fp32) | separable ms | full conv ms | faster | fewer mult-adds |",
                "| --- | ---: | ---: | ---: | ---: |"]
        for r in report["separable_vs_conv"]:
            if r["status"] == "ok":
                out.append(f"| {r['runtime']} | {r['separable_ms']:.2f} | {r['conv_ms']:.2f} | "
                           f"{r['time_ratio']:.2f}× | {_savings(r):.2f}× |")
    if report.get("blocks_vs_conv"):
        out += ["", "| block | input C×H×W | stride | separable ms | full 3×3 conv ms | faster | fewer mult-adds |",
                "| ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
        for r in report["blocks_vs_conv"]:
            shape = "×".join(map(str, r["in_shape"]))
            out.append(f"| {r['block']} | {shape} | {r['stride']} | {r['separable_ms']:.3f} | "
                       f"{r['conv_ms']:.3f} | {r['time_ratio']:.2f}× | {_savings(r):.2f}× |")
    if report["layer_shares"]:
        runtimes = list(dict.fromkeys(r["runtime"] for r in report["layer_shares"]))
        labels = list(dict.fromkeys(r["label"] for r in report["layer_shares"]))
        share = {(r["runtime"], r["label"]): r for r in report["layer_shares"]}
        out += ["", "| layers | mult-adds | " + " | ".join(f"time, {r}" for r in runtimes) + " |",
                "| --- | ---: | " + " | ".join("---:" for _ in runtimes) + " |"]
        for label in labels:
            mult = next(r["mult_add_share"] for r in report["layer_shares"] if r["label"] == label)
            cells = [f"{share[(r, label)]['time_share']:.1%}" if (r, label) in share else "–" for r in runtimes]
            out.append(f"| {label} | {mult:.1%} | " + " | ".join(cells) + " |")
    if report["memory"]:
        out += ["", "| runtime (fp32) | batch | images per runtime call | measured MB | "
                "cost model's peak activations MB | at layer |",
                "| --- | ---: | ---: | ---: | ---: | --- |"]
        for r in report["memory"]:
            measured = f"{r['measured_increase_bytes'] / 1e6:.0f}" if r.get("status") == "ok" else r.get("reason", "?")
            per_call = r.get("images_per_call", r["batch_size"])
            out.append(f"| {r['runtime']} | {r['batch_size']} | {per_call} | {measured} | "
                       f"{r['predicted_peak_activation_bytes'] / 1e6:.0f} | {r['predicted_peak_layer']} |")
    return "\n".join(out)


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print(tables(json.loads(Path(arg).read_text())))
        print()
