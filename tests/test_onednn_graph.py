"""oneDNN Graph's programs (mobilenet.onednn_graph): what ``optimize`` runs first on AVX-512 CPUs,
and what the latency model's PyTorch probes time and profile there."""

from __future__ import annotations

import pytest
import torch

from mobilenet import arch, onednn_graph
from mobilenet.arch import ArchConfig
from mobilenet.cost import network_cost
from mobilenet.latency.backends import TorchBackend, probe_module
from mobilenet.latency.probes import NetworkProbe, default_plan
from mobilenet.model import MobileNetV1
from mobilenet.optimized import BACKEND_ENV
from mobilenet.prepare import InferenceAdapter, inference_copy

# Building needs this PyTorch's fuser, and is checked where optimize runs it (AVX-512 CPUs): on others
# oneDNN Graph has never been measured, and optimize does not take it.
builds = pytest.mark.skipif(onednn_graph.measured_faster() is not None,
                            reason=f"oneDNN Graph is not optimize's path here: {onednn_graph.measured_faster()}")


def _trained_looking(cfg: ArchConfig) -> MobileNetV1:
    torch.manual_seed(0)
    model = MobileNetV1(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.uniform_(-0.1, 0.1)
    return model


@builds
def test_a_network_profile_splits_into_the_cost_models_layers() -> None:
    """One time per layer, in ``cost``'s order: the input's conversion and the stem's pad in the
    stem, each partition a conv, the pool its own layer, the partition after it the classifier;
    and nothing of the profiler's own chatter on the process's stderr."""
    cfg = ArchConfig(alpha=0.25, resolution=96, padding="tf")
    model = _trained_looking(cfg)
    x = torch.rand(1, 3, 96, 96)
    program, partitions, _ = onednn_graph.build(InferenceAdapter(inference_copy(model), channels_last=True,
                                                                 dtype=torch.float32), x)
    layers = network_cost(cfg).layers
    assert partitions == len(layers) - 1, "every conv and the classifier fused, once each (the pool is not)"
    with torch.no_grad():
        torch.testing.assert_close(program(x), model(x), rtol=1e-4, atol=1e-4)
    run = onednn_graph.profiled_ops(program, x, 0.0, min_runs=3)
    names = [name for name, _ in run[0]]
    assert len(run) == 2, "the first run, warming up, is left out"
    assert names.count(onednn_graph.PARTITION) == len(layers) - 1
    assert names.index("aten::pad") < names.index(onednn_graph.PARTITION), "the stem's pad before its conv"
    seconds = onednn_graph.layer_seconds(program, x, 0.0)
    assert len(seconds) == len(layers) and all(s > 0 for s in seconds)


def test_ops_are_assigned_to_layers_as_the_program_runs_them() -> None:
    ops = [("aten::to", 1.0), ("aten::contiguous", 2.0), ("aten::pad", 4.0), ("LlgaPartition", 8.0),
           ("LlgaPartition", 16.0), ("aten::permute", 32.0), ("LlgaPartition", 64.0),
           ("aten::adaptive_avg_pool2d", 128.0), ("aten::flatten", 256.0), ("LlgaPartition", 512.0),
           ("aten::to", 1024.0)]
    assert onednn_graph._layers(ops) == [15.0, 48.0, 64.0, 384.0, 1536.0]


@builds
def test_the_profiler_leaves_stderr_alone(capfd: pytest.CaptureFixture[str]) -> None:
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU6()).eval()
    x = torch.rand(1, 3, 16, 16)
    program, _, _ = onednn_graph.build(net, x)
    capfd.readouterr()
    onednn_graph.profiled_ops(program, x, 0.0)
    assert capfd.readouterr().err == ""


@builds
def test_a_program_that_fuses_nothing_is_refused_unless_allowed() -> None:
    pool = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()).eval()
    x = torch.rand(1, 8, 7, 7)
    with pytest.raises(onednn_graph.Unavailable, match="fused nothing"):
        onednn_graph.build(pool, x)
    program, partitions, _ = onednn_graph.build(pool, x, must_fuse=False)
    assert partitions == 0 and program(x).shape == (1, 8)


@builds
def test_the_process_keeps_its_own_fusion_setting() -> None:
    before = torch._C._jit_llga_enabled()
    onednn_graph.build(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3)).eval(), torch.rand(1, 3, 8, 8))
    assert torch._C._jit_llga_enabled() == before


@builds
def test_every_probe_builds_as_a_program_of_its_layers_output(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BACKEND_ENV, "onednn-graph")
    backend = TorchBackend("fp32", 1)
    assert backend.program == "onednn-graph" and backend.fixed_pads
    for probe in (*default_plan(), NetworkProbe(0.35, (128,))):
        size = probe.sizes[0]
        module = probe_module(probe, size, fixed_pads=True)
        shape = probe.input_shape(size)
        x = torch.rand(shape)
        with torch.no_grad():
            expected = module(x)
        cell = backend.load(module, shape)(shape)
        got = cell.run()
        assert got.shape == expected.shape, probe.describe()
        if isinstance(probe, NetworkProbe):  # (a probe's own input is random, made by the cell)
            assert cell.profile is not None and len(cell.profile(0.0)) == len(probe.layers(size))


def test_its_probes_tell_channels_that_fill_vector_registers_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    from mobilenet.cpu import cpu_info

    monkeypatch.setenv(BACKEND_ENV, "onednn-graph")
    blocks = TorchBackend("fp32", 1).channel_blocks
    assert blocks["depthwise"] == blocks["pointwise"] == cpu_info().fp32_lanes
    monkeypatch.setenv(BACKEND_ENV, "torchscript")
    assert TorchBackend("fp32", 1).channel_blocks == {}


@builds
def test_bench_shares_come_from_its_profile_where_optimize_runs_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from mobilenet.deploy.bench import layers

    monkeypatch.delenv(BACKEND_ENV, raising=False)
    profiled: list[int] = []
    real = onednn_graph.layer_seconds
    monkeypatch.setattr(onednn_graph, "layer_seconds", lambda *a: profiled.append(1) or real(*a))
    monkeypatch.setattr(layers, "folded_copy", lambda model: pytest.fail("the eager hooks' model was built"))
    model = _trained_looking(ArchConfig(alpha=0.25, resolution=96))
    seconds = layers.network_layer_seconds(model, "torch", torch.rand(1, 3, 96, 96), 1, 0.05)
    assert profiled and len(seconds) == len(arch.layers(model.arch_cfg))
    assert all(s > 0 for s in seconds)
