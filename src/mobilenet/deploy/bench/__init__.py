"""The benchmark behind ``mobilenet bench``: what the cost model predicts, measured.

``bench(model, BenchOptions(...))`` returns a ``BenchReport``; ``format_report`` prints it as
tables, ``report.to_json()`` as JSON, ``plot`` draws it.

Timing discipline (2 shared cores make single numbers meaningless):

* every cell (runtime x precision x batch size, peers included) is built first, warmed up, then
  timed **interleaved**: round after round, each cell runs for a slice of ~100 ms, so a burst of
  load from elsewhere hits all cells alike and their ratios survive;
* each call is timed on its own; we report the median, p10 and p90 of the per-call latency, and
  throughput as batch size / median;
* FLOPs are 2 x the cost model's mult-adds (conv and FC weights only, the paper's convention), so
  "achieved GFLOP/s" is comparable with an fp32 1024^3 sgemm timed as one more interleaved cell
  (median rate, same threads, same load).

Beside the cells: the full-convolution MobileNet (Table 4) against the separable one per runtime,
how many times faster next to how many times fewer mult-adds (``savings``); per-layer time shares
(stem, depthwise, pointwise, FC) next to their mult-add shares (Table 2); and the memory an
inference adds to the process, next to the cost model's peak activation memory.
"""

from mobilenet.deploy.bench.conv import block_comparisons, separable_vs_conv
from mobilenet.deploy.bench.layers import layer_profiles, layer_shares, network_layer_seconds
from mobilenet.deploy.bench.memory import memory_probe, memory_rows
from mobilenet.deploy.bench.report import (
    MALLOC_TUNABLES,
    BenchOptions,
    BenchReport,
    Cell,
    OptionError,
    check_plot_path,
    format_report,
    plot,
)
from mobilenet.deploy.bench.run import bench
from mobilenet.deploy.timing import Sgemm, Timing, time_interleaved

__all__ = [
    "MALLOC_TUNABLES", "BenchOptions", "BenchReport", "Cell", "OptionError", "Sgemm", "Timing", "bench",
    "block_comparisons", "check_plot_path", "format_report", "layer_profiles", "layer_shares", "memory_probe",
    "memory_rows", "network_layer_seconds", "plot", "separable_vs_conv", "time_interleaved",
]
