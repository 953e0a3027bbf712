"""Each layer's time from a runtime's own profiler (``deploy.runtimes.chain`` and each runtime's
``profile_layers``): the ops given to the layers they belong to, and one profile per runtime
behind both what ``mobilenet bench`` shows and what the latency model is checked against."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from mobilenet import arch
from mobilenet.arch import ArchConfig
from mobilenet.deploy import bench
from mobilenet.deploy.bench import BenchOptions
from mobilenet.deploy.optional import available
from mobilenet.model import MobileNetV1
from test_latency import fixed_calibration


def test_onnx_runtime_profile_nodes_are_given_to_the_layers_they_belong_to() -> None:
    """A pad or a reorder into the blocked layout is the next conv's; a reorder out of it the
    previous one's; the pool and the classifier are the last two layers."""
    from mobilenet.deploy.runtimes.chain import chain_layer_seconds
    from mobilenet.deploy.runtimes.ort import ORT_OPS

    nodes = [("ReorderInput", 1.0), ("Conv", 10.0), ("Pad", 2.0), ("FusedConv", 20.0), ("ReorderOutput", 3.0),
             ("NchwcConv", 30.0), ("GlobalAveragePool", 4.0), ("Flatten", 0.5), ("Gemm", 5.0)]
    assert chain_layer_seconds(nodes, ORT_OPS) == [11.0, 25.0, 30.0, 4.5, 5.0]


def test_executorch_profile_operators_are_given_to_their_layers() -> None:
    """XNNPACK's operators as an int8 network's ETDump names them: the stem's transposes, pad and
    conversion are the stem's, a strided conv's pad with its conversions that conv's, a pointwise
    conv's fully connected GEMM a conv layer, the one after the pool the classifier, and
    ExecuTorch's own copy (the flatten) the pool's; the events spanning others count for nothing,
    and each XNNPACK operator gets back the half microsecond its whole-microsecond count cuts."""
    from mobilenet.deploy.runtimes.chain import chain_layer_seconds
    from mobilenet.deploy.runtimes.executorch import ET_OPS, XNNPACK_TICK_S, run_operators

    def event(name: str | None, microseconds: float, xnnpack: str | None = None) -> SimpleNamespace:
        timed = SimpleNamespace(name=name, delegate_debug_id_str=xnnpack, start_time=0,
                                end_time=int(microseconds * 1000))
        return SimpleNamespace(profile_event=timed)

    operators = [("Transpose (ND, X32) #1", 1), ("Constant Pad (ND, X32) #1", 2), ("Convert (NC) #1", 4),
                 ("Convolution (NHWC, QC8) IGEMM #1", 10), ("Convolution (NHWC, QC8) DWConv #1", 20),
                 ("Fully Connected (NC, QS8, QC8W) GEMM #1", 30), ("Convert (NC) #2", 1),
                 ("Constant Pad (ND, X32) #2", 2), ("Convert (NC) #3", 4), ("Convolution (NHWC, QC8) DWConv #2", 40),
                 ("Mean (ND) Reduce2 #1", 5)]
    run = SimpleNamespace(events=[
        *(event(None, us, name) for name, us in operators), event("DELEGATE_CALL", 130.0),
        SimpleNamespace(profile_event=None), event("native_call_as_strided_copy.out", 0.5),
        event(None, 0, "Static Reshape (NC) #1"), event(None, 6, "Fully Connected (NC, QS8, QC8W) GEMM #2"),
        event("DELEGATE_CALL", 6.0), event("Method::execute", 140.0)])
    half = XNNPACK_TICK_S / 2 * 1e6  # (in microseconds, as the layers below)
    layers = [seconds * 1e6 for seconds in chain_layer_seconds(run_operators(run), ET_OPS)]
    assert layers == pytest.approx([17 + 4 * half, 20 + half, 30 + half, 47 + 4 * half, 5.5 + 2 * half, 6 + half])


def test_an_openvino_layer_faster_than_its_counters_resolution_still_counts() -> None:
    """OpenVINO reports a conv that ran in under a microsecond as NOT_RUN (seen on a Zen 5 in one
    run of four of 0.25-96); a fused-away node has no kernel and stays out, as do reorders not run."""
    from mobilenet.deploy.runtimes.ov import ran

    assert ran("NOT_RUN", "GroupConvolution", "jit_avx512_dw_f32")
    assert ran("EXECUTED", "Reorder", "reorder_f32")
    assert not ran("NOT_RUN", "Clamp", "undef") and not ran("NOT_RUN", "Convolution", "undef")
    assert not ran("NOT_RUN", "Reorder", "reorder_f32")


def test_chain_layer_seconds_gives_openvino_nodes_to_their_layers() -> None:
    """A reorder (or bf16 conversion) before a conv is that conv's; one after the pool is the
    classifier's; one left at the end is the last layer's."""
    from mobilenet.deploy.runtimes.chain import chain_layer_seconds
    from mobilenet.deploy.runtimes.ov import OV_OPS

    nodes = [("Reorder", 1.0), ("Convolution", 10.0), ("GroupConvolution", 20.0), ("Convolution", 30.0),
             ("ReduceMean", 4.0), ("Reorder", 0.5), ("FullyConnected", 5.0), ("Reorder", 0.25)]
    assert chain_layer_seconds(nodes, OV_OPS) == [11.0, 20.0, 30.0, 4.0, 5.75]


def test_bench_profiles_each_runtime_once_for_its_shares_and_its_predicted_layers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``bench --predict`` shows each layer type's share and each layer beside its prediction:
    both from one real profile of ONNX Runtime (it profiled every runtime twice, once for each,
    read two ways: the shares left the reorders out, as an "other" row, where the layers gave
    each to the conv it feeds). The shares are the layers' profile summed by type."""
    from mobilenet.deploy.runtimes import ort as ort_runtime
    from mobilenet.latency import predict_with, versus

    cfg = ArchConfig(alpha=0.25, resolution=64)
    model = MobileNetV1(cfg).eval()
    prediction = predict_with(fixed_calibration(threads=1), cfg, 1)
    monkeypatch.setattr(versus, "predict", lambda *args, **kwargs: prediction)
    profiled = []
    real = ort_runtime.profile_layers
    monkeypatch.setattr(ort_runtime, "profile_layers", lambda *args: profiled.append(args) or real(*args))
    options = BenchOptions(runtimes=("onnxruntime",), batch_sizes=(1,), threads=1, seconds=0.1, peers=False,
                           compare_conv=False, memory=False)
    report = bench.bench(model, options, annotate=versus.annotate(cfg, 1, print))

    assert len(profiled) == 1, "one profile serves the shares and the layers"
    (seconds,) = report.layer_seconds.values()
    assert len(seconds) == len(prediction.layers) and all(s > 0 for s in seconds)
    shares = {row["kind"]: row["time_share"] for row in report.layer_shares}
    assert set(shares) == {"conv", "depthwise", "pointwise", "pool", "fc"}, "no time left outside the layers"
    layers = {row["layer"]: row for row in report.layer_predictions}
    assert list(layers) == [x.name for x in prediction.layers]
    for kind, share in shares.items():
        assert share == pytest.approx(sum(row["measured_share"] for row in layers.values() if row["kind"] == kind))
    (cell,) = report.cells
    assert sum(row["measured_ms"] for row in layers.values()) == pytest.approx(cell.median_ms - prediction.call_ms)
    assert "other" not in bench.format_report(report)


@pytest.mark.slow
def test_every_profiled_runtime_splits_the_network_bench_runs_into_its_layers() -> None:
    """PyTorch's, ONNX Runtime's, OpenVINO's and ExecuTorch's profiles of a real network give
    every layer of the architecture some time, in its order: the depthwise conv on the largest
    map (8 times the outputs) takes longer than the one on the smallest, whatever the runtime;
    and the shares by layer type add up, beside the mult-add shares of Table 2."""
    runtimes = ("torch", *(r for r in ("onnxruntime", "openvino", "executorch") if available(r)))
    cfg = ArchConfig(alpha=0.5, resolution=128)
    options = BenchOptions(runtimes=runtimes, batch_sizes=(1,), threads=1, seconds=0.3)
    profiles = bench.layer_profiles(MobileNetV1(cfg).eval(), options, print)
    assert set(profiles) == set(runtimes)
    names = [layer.name for layer in arch.layers(cfg)]
    for runtime, seconds in profiles.items():
        assert len(seconds) == len(names) and all(s > 0 for s in seconds), runtime
        by_name = dict(zip(names, seconds, strict=True))
        assert by_name["blocks.0.dw"] > by_name["blocks.12.dw"], runtime
    for runtime in runtimes:
        shares = {row["kind"]: row for row in bench.layer_shares(cfg, profiles) if row["runtime"] == runtime}
        assert set(shares) == {"conv", "depthwise", "pointwise", "pool", "fc"}
        assert sum(row["time_share"] for row in shares.values()) == pytest.approx(1.0)
        assert sum(row["mult_add_share"] for row in shares.values()) == pytest.approx(1.0)
        assert shares["pointwise"]["mult_add_share"] > 0.75  # Table 2: 1x1 convs dominate the arithmetic


def test_pytorchs_layers_are_profiled_at_the_threads_asked_and_the_process_count_put_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """PyTorch has one thread count for the whole process: the profile runs at the count it is
    given (as the other runtimes' sessions do), and leaves the caller's as it was."""
    from mobilenet.deploy.bench import layers

    seen: list[int] = []
    real = layers._torch_program_layer_seconds
    monkeypatch.setattr(layers, "_torch_program_layer_seconds",
                        lambda *args: seen.append(torch.get_num_threads()) or real(*args))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        model = MobileNetV1(ArchConfig(alpha=0.25, resolution=64)).eval()
        seconds = bench.network_layer_seconds(model, "torch", torch.rand(1, 3, 64, 64), 1, 0.05)
        assert seen == [1] and torch.get_num_threads() == 2
        assert len(seconds) == len(arch.layers(model.arch_cfg))
    finally:
        torch.set_num_threads(before)
