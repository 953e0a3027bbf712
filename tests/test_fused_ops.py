"""The compiled program's calls made from Python (mobilenet.fused_ops): PyTorch's latency probes and layer profile."""

from __future__ import annotations

import pytest
import torch

from mobilenet.arch import ArchConfig
from mobilenet.arch import layers as arch_layers
from mobilenet.deploy.timing import time_interleaved
from mobilenet.errors import InputError
from mobilenet.fused_ops import REFERENCES, Gap, compiled_references, fused_ops, reference_network
from mobilenet.latency import cache
from mobilenet.latency.backends import TorchBackend, probe_module
from mobilenet.latency.probes import NetworkProbe, default_plan
from mobilenet.model import MobileNetV1
from mobilenet.optimized import BACKEND_ENV
from mobilenet.prepare import fixed_padding_copy, folded_copy

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(),
                                reason="this PyTorch has no oneDNN: the compiled program's calls do not exist")


def _weights_like_trained(model: MobileNetV1) -> MobileNetV1:
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.uniform_(-0.1, 0.1)
    return model.eval()


@pytest.mark.parametrize("cfg", [
    ArchConfig(alpha=0.25, resolution=128),  # TF 'SAME': five constant pads
    ArchConfig(alpha=0.5, resolution=(96, 128), padding="keras", activation="relu"),
    ArchConfig(alpha=0.25, resolution=64, variant="conv", padding="symmetric"),
], ids=["tf", "keras-relu", "full-conv"])
def test_fused_ops_compute_what_the_network_computes(cfg: ArchConfig) -> None:
    model = fixed_padding_copy(_weights_like_trained(MobileNetV1(cfg)))
    x = torch.rand(2, 3, *cfg.resolution)
    program = fused_ops(model, tuple(x.shape))
    with torch.no_grad():
        expected = model(x)
    torch.testing.assert_close(program(x), expected, rtol=1e-4, atol=1e-5)
    pads = sum(1 for layer in model.conv_layers() if isinstance(layer[1].pad, torch.nn.ZeroPad2d))
    assert len(program.ops) == len(list(model.conv_layers())) + pads + 2, "one call per conv and pad, pool, classifier"


def test_fused_ops_follow_the_pads_into_the_depthwise_kernels() -> None:
    """As ``optimize`` compiles it: one call fewer per strided depthwise conv, the same result."""
    from mobilenet.prepare import inference_copy

    cfg = ArchConfig(alpha=0.25, resolution=128)
    trained = _weights_like_trained(MobileNetV1(cfg))
    x = torch.rand(2, 3, 128, 128)
    padded = fused_ops(fixed_padding_copy(trained), tuple(x.shape))
    folded = fused_ops(inference_copy(trained), tuple(x.shape))
    strided = sum(1 for layer in arch_layers(cfg) if layer.kind == "depthwise" and layer.stride > 1)
    assert strided == 4 and len(padded.ops) - len(folded.ops) == strided
    torch.testing.assert_close(folded(x), padded(x), rtol=1e-4, atol=1e-5)


def test_fused_ops_in_bf16_agree_with_fp32() -> None:
    model = fixed_padding_copy(reference_network(REFERENCES[0]))
    x = torch.rand(4, 3, 128, 128)
    with torch.no_grad():
        expected = model(x)
    got = fused_ops(model, tuple(x.shape), torch.bfloat16)(x)
    assert got.dtype == torch.float32
    assert (got - expected).abs().max() <= 0.05 * expected.abs().max()


def test_fused_ops_refuse_what_the_compiled_program_never_sees() -> None:
    model = MobileNetV1(ArchConfig(alpha=0.25, resolution=96)).eval()
    with pytest.raises(InputError, match="BatchNorm folded"):
        fused_ops(model, (1, 3, 96, 96))
    with pytest.raises(InputError, match="constant pads"):
        fused_ops(folded_copy(model), (1, 3, 96, 96))  # TF 'SAME' pads computed from the input


def test_every_probe_runs_as_fused_ops() -> None:
    for probe in (*default_plan(), NetworkProbe(0.35, (128,))):
        size = probe.sizes[0]
        module = probe_module(probe, size, fixed_pads=True)
        shape = probe.input_shape(size, 2)
        x = torch.rand(shape)
        with torch.no_grad():
            expected = module(x)
        got = fused_ops(module, shape)(x)
        assert got.shape == expected.shape, probe.describe()
        assert (got - expected).abs().max() <= 1e-4 * expected.abs().max() + 1e-6, probe.describe()


def _inductor_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """``optimize``'s default as on a CPU where oneDNN Graph is not tried, and a compiler is found."""
    from mobilenet import onednn_graph, optimized  # noqa: PLC0415

    monkeypatch.setattr(onednn_graph, "measured_faster", lambda cpu=None: "not measured faster here (described)")
    monkeypatch.setattr(optimized, "compile_unavailable", lambda device: None)
    monkeypatch.delenv(BACKEND_ENV, raising=False)


def test_torch_probes_follow_what_optimize_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    from mobilenet import onednn_graph, optimized  # noqa: PLC0415

    _inductor_first(monkeypatch)
    compiled = TorchBackend("fp32", 1)
    assert compiled.compiled and compiled.fixed_pads and compiled.path == TorchBackend.PATHS["inductor"]
    inductor_key = cache.calibration_key("torch", "fp32", 1, 1)
    monkeypatch.setattr(optimized, "compile_unavailable", lambda device: "no C++ compiler found")
    fallback = TorchBackend("fp32", 1)
    assert not fallback.compiled and fallback.path == TorchBackend.PATHS["torchscript"]
    torchscript_key = cache.calibration_key("torch", "fp32", 1, 1)
    assert torchscript_key != inductor_key, "a change of path measures again"
    monkeypatch.setattr(optimized, "compile_unavailable", lambda device: None)
    monkeypatch.setenv(BACKEND_ENV, "torchscript")
    assert not TorchBackend("fp32", 1).compiled, "a user insisting on TorchScript is predicted as TorchScript"
    monkeypatch.delenv(BACKEND_ENV)
    monkeypatch.setattr(onednn_graph, "measured_faster", lambda cpu=None: None)
    partitioned = TorchBackend("fp32", 1)
    assert partitioned.program == "onednn-graph" and not partitioned.compiled
    assert partitioned.path == TorchBackend.PATHS["onednn-graph"]
    assert cache.calibration_key("torch", "fp32", 1, 1) not in (inductor_key, torchscript_key)


def test_a_fused_probe_is_taken_to_the_compiled_program(monkeypatch: pytest.MonkeyPatch) -> None:
    _inductor_first(monkeypatch)
    backend = TorchBackend("fp32", 1)
    backend.gap = Gap(per_op_s=1e-5, fraction=0.1, compiled_s=(), fused_s=(), ops=(), compile_s=0.0)
    probe = NetworkProbe(0.25, (96,))
    shaped = backend.load(probe_module(probe, 96, fixed_pads=True), probe.input_shape(96))
    cell = shaped(probe.input_shape(96))
    assert cell.to_path is not None
    assert cell.to_path(0.01) == pytest.approx(0.01 * 0.9 - 30 * 1e-5), "27 convs, the stem's pad, pool, classifier"
    assert cell.run().shape == (1, 1000)
    assert len(cell.profile(0.05)) == len(probe.layers(96)), "one time per layer of the cost model, in its order"


@pytest.mark.compiler
@pytest.mark.slow
@pytest.mark.compiled
def test_the_gap_is_measured_against_compiled_programs() -> None:
    lines: list[str] = []
    references = compiled_references("fp32", lines.append)  # also checks that both compute the same
    samples = time_interleaved(list(references.calls), seconds=0.5, min_runs=5)
    gap = references.gap([float(sorted(s)[len(s) // 2]) for s in samples])
    assert gap.ops == (30, 30) and min(gap.compiled_s) > 0 and min(gap.fused_s) > 0
    assert gap.per_op_s >= 0 and 0 <= gap.fraction <= 0.5
    assert gap.fused_s[1] > gap.fused_s[0], "the larger reference takes longer"
    assert sum("optimize:" in line for line in lines) == 2, "each compile (or load from the cache) is said"


def test_layer_seconds_name_every_layer_of_the_cost_model() -> None:
    from mobilenet.cost import network_cost  # noqa: PLC0415

    cfg = ArchConfig(alpha=0.25, resolution=96)
    program = fused_ops(fixed_padding_copy(MobileNetV1(cfg).eval()), (1, 3, 96, 96))
    seconds = program.layer_seconds(torch.rand(1, 3, 96, 96), 0.05)
    assert list(seconds) == [layer.name for layer in network_cost(cfg).layers], "pads counted in their conv's layer"
    assert all(s > 0 for s in seconds.values())


def test_bench_shares_time_the_compiled_calls_where_optimize_compiles(monkeypatch: pytest.MonkeyPatch) -> None:
    from mobilenet.deploy.bench import layers  # noqa: PLC0415

    _inductor_first(monkeypatch)
    fused: list[int] = []
    real_fused = layers.fused_ops.fused_ops
    monkeypatch.setattr(layers.fused_ops, "fused_ops", lambda *a: fused.append(1) or real_fused(*a))
    used: list[int] = []
    real = layers.__dict__.get("folded_copy")
    monkeypatch.setattr(layers, "folded_copy", lambda model: used.append(1) or real(model))  # the eager hooks' model
    model = MobileNetV1(ArchConfig(alpha=0.25, resolution=96)).eval()
    seconds = layers.network_layer_seconds(model, "torch", torch.rand(1, 3, 96, 96), 1, 0.05)
    assert len(seconds) == len(arch_layers(model.arch_cfg)) and all(s > 0 for s in seconds)
    assert not used, "no eager hooks"
    assert fused, "the compiled program's calls, timed one by one"
