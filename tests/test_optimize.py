"""mobilenet.optimize: the compiled module matches eager PyTorch, runs its convolutions fused with no
BatchNorm left in the graph it built (read from the graph itself, since PyTorch once dropped the
conv-BN fusion silently: pytorch#131693), is reused by a second process, refuses bf16 where the CPU
would emulate it, and falls back, saying so, where it cannot compile.

Compiling takes tens of seconds on two busy cores: those tests are marked slow. The CUDA tests are
marked cuda and skip without a GPU.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch._dynamo.config
import torch._inductor.config

from described_cpus import ZEN3
from mobilenet import optimized
from mobilenet.allocator import keep_freed_memory
from mobilenet.cpu import CpuInfo, cpu_info
from mobilenet.errors import InputError
from mobilenet.optimized import (
    FUSED_CONV,
    PLAIN_CONV,
    OptimizedModel,
    compiled_cache_dir,
    cudnn_benchmark,
    optimize,
)
from mobilenet.predictor import PrecisionUnavailableError

no_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")


def _convs(model) -> int:  # noqa: ANN001
    return sum(1 for _ in model.conv_layers())


def _close(got: torch.Tensor, expected: torch.Tensor, fraction: float) -> None:
    """Within ``fraction`` of the logits' spread (the deploy tests' measure)."""
    spread = (expected.max() - expected.min()).item()
    assert spread > 0.1  # the comparison is not between near-constant tensors
    assert (got - expected).abs().max().item() < fraction * spread


def _private_caches(monkeypatch: pytest.MonkeyPatch, folder) -> None:  # noqa: ANN001
    """Compiled packages and inductor's caches in ``folder``, for this test only (``optimize`` points
    inductor at the project cache by setting TORCHINDUCTOR_CACHE_DIR; the teardown restores it)."""
    monkeypatch.setenv("MOBILENET_CACHE", str(folder))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)


def _says_default_program(description: str, convs: int) -> bool:
    """Whether ``description`` names the program ``optimize`` runs by default on this CPU, every
    conv fused: oneDNN Graph's partitions on AVX-512 CPUs, else inductor's compiled one."""
    if optimized.onednn_graph.measured_faster() is None:
        found = re.search(r"oneDNN Graph, (\d+) fused partitions", description)
        return found is not None and int(found.group(1)) == convs + 1  # (and the classifier)
    return "AOTInductor" in description and f"{convs} of {convs} convs fused" in description


def _torchscript_kinds(module: OptimizedModel) -> set[str]:
    return {node.kind() for node in module.net.graph.nodes()}


# ------------------------------------------------------------------------------------ refusals, fast


def test_a_device_it_cannot_use_is_refused_as_every_entry_point_refuses_it(model):
    """``optimize`` checks its device with the one check ``classify``, ``evaluate`` and the
    benchmarks use: the parameter as the caller spells it, and a GPU that is not there (or a GPU
    index past the last) said so before anything is built."""
    from mobilenet.errors import command_line_spelling

    with pytest.raises(InputError, match=r"^device must be cpu, cuda or cuda:N, got 'mps'"):
        optimize(model, device="mps")
    missing = "cuda" if not torch.cuda.is_available() else f"cuda:{torch.cuda.device_count()}"
    said = "no CUDA GPU is available" if missing == "cuda" else "CUDA device"
    with pytest.raises(InputError, match=rf"^device='{missing}': .*{said}"):
        optimize(model, device=missing)
    with command_line_spelling({"device": "--device"}), pytest.raises(InputError, match=rf"^--device {missing}: "):
        optimize(model, device=missing)


def test_bf16_is_refused_on_a_cpu_without_it_and_says_what_to_use(model, monkeypatch):
    monkeypatch.setattr("mobilenet.optimized.cpu_info", lambda: ZEN3)
    with pytest.raises(PrecisionUnavailableError, match="no native bf16") as refusal:
        optimize(model, "bf16")
    assert "Use fp32" in str(refusal.value) and "allow_emulation" in str(refusal.value)
    with pytest.raises(PrecisionUnavailableError, match="no native bf16"):
        optimize(model, "bf16", cpu=ZEN3)  # the CPU passed in is the one decided for


def test_emulated_bf16_runs_only_when_asked_and_says_so(model, images):
    with pytest.warns(UserWarning, match="emulated"):
        emulated = optimize(model, "bf16", backend="eager", allow_emulation=True, cpu=ZEN3)
    assert "bf16 EMULATED" in emulated.description
    assert emulated(images).shape == (len(images), 1000)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"precision": "fp16"}, "PyTorch on cpu runs fp32 or bf16"),
        ({"precision": "int8"}, "for int8 use onnxruntime or openvino"),
        ({"batch_size": 0}, "batch_size must be an int >= 1"),
        ({"backend": "xla"}, "backend must be one of"),
        ({"device": "tpu"}, "device must be cpu, cuda or cuda:N"),
        ({"memory": "trim"}, "memory must be one of keep, default, got 'trim'"),
    ],
)
def test_bad_arguments_are_one_clear_line(model, kwargs, message):
    with pytest.raises(InputError, match=message):
        optimize(model, **kwargs)


def test_inputs_of_another_shape_are_refused_with_what_to_do(model, images):
    fast = optimize(model, backend="eager")
    with pytest.raises(InputError, match=r"takes \(N, 3, 128, 128\) batches.*resize"):
        fast(torch.zeros(1, 3, 224, 224))


# ------------------------------------------------------------------- the contract, without compiling


def test_a_compiled_batch_size_serves_every_batch_in_slices(model, images):
    """The graph always sees exactly its batch size: larger batches in slices, the last padded."""
    seen = []

    def net(x: torch.Tensor) -> torch.Tensor:
        seen.append(len(x))
        return x.flatten(1)[:, :10] * 2

    fast = OptimizedModel(net, backend="inductor", precision="fp32", device=torch.device("cpu"),
                          input_shape=tuple(images.shape[1:]), batch_size=4)
    batch = torch.cat([images, images, images[:2]])  # 10 images: slices of 4, 4 and 2 padded to 4
    out = fast(batch)
    assert seen == [4, 4, 4]
    torch.testing.assert_close(out, batch.flatten(1)[:, :10] * 2)
    assert not out.is_inference() and not out.requires_grad  # an ordinary tensor the caller may modify
    out += 1


def test_inductor_caches_go_under_the_project_cache_unless_the_user_chose(tmp_path, monkeypatch):
    monkeypatch.setenv("MOBILENET_CACHE", str(tmp_path))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    assert compiled_cache_dir() == tmp_path / "compiled"
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "inductor")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    compiled_cache_dir()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "mine")


def test_a_package_is_kept_per_thread_count(model):
    """Inductor writes its kernels for the thread count it compiles under (serial loops for one):
    a package compiled by a one-thread process must not serve a two-thread one."""
    net = optimized.InferenceAdapter(model, channels_last=True, dtype=torch.float32)
    example = torch.zeros(1, 3, 128, 128)
    before = torch.get_num_threads()
    try:
        keys = []
        for threads in (1, 2, 1):
            torch.set_num_threads(threads)
            keys.append(optimized._package_key(net, example, max_autotune=False))
    finally:
        torch.set_num_threads(before)
    assert keys[0] != keys[1] and keys[0] == keys[2]


def test_a_package_is_kept_per_inductor_setting_and_input_dtype(model):
    """A caller compiling under ``torch._inductor.config.patch`` must not load a package compiled
    without the patch (nor a bf16 input one compiled for fp32): the key tells them apart."""
    from torch._inductor import config

    net = optimized.InferenceAdapter(model, channels_last=True, dtype=torch.float32)
    example = torch.zeros(1, 3, 128, 128)
    plain = optimized._package_key(net, example, max_autotune=False)
    with config.patch({"cpp.simdlen": 256}):
        patched = optimized._package_key(net, example, max_autotune=False)
    assert patched != plain
    assert optimized._package_key(net, example, max_autotune=False) == plain  # the patch is gone again
    assert optimized._package_key(net, example.bfloat16(), max_autotune=False) != plain


def test_a_package_is_kept_per_version_of_the_projects_own_code(model, tmp_path, monkeypatch):
    """The compiled graph traces the project's own forwards (InferenceAdapter's, the pointwise
    matmuls'): an upgrade that changes one, or the version, must not load a package compiled from
    the old code. Unchanged code keeps its key (the cache still serves a second process)."""
    import mobilenet.prepare
    import mobilenet.version

    net = optimized.InferenceAdapter(model, channels_last=True, dtype=torch.float32)
    example = torch.zeros(1, 3, 128, 128)
    plain = optimized._package_key(net, example, max_autotune=False)
    assert optimized._package_key(net, example, max_autotune=False) == plain

    # prepare.py as an upgrade would leave it: one forward's source changed, nothing else
    source = Path(mobilenet.prepare.__file__).read_text(encoding="utf-8")
    changed = tmp_path / "prepare.py"
    changed.write_text(source.replace("def forward(self", "def forward(  self", 1), encoding="utf-8")
    monkeypatch.setattr(mobilenet.prepare, "__file__", str(changed))
    assert optimized._package_key(net, example, max_autotune=False) != plain
    monkeypatch.undo()
    assert optimized._package_key(net, example, max_autotune=False) == plain

    monkeypatch.setattr(mobilenet.version, "__version__", "99.0")
    assert optimized._package_key(net, example, max_autotune=False) != plain


def test_the_repr_says_what_runs(model):
    fast = optimize(model, backend="eager")
    assert fast.description and fast.description in repr(fast)


def test_glibc_is_asked_to_keep_freed_memory_and_the_description_says_so(model):
    kept = keep_freed_memory()
    assert kept == (sys.platform == "linux")  # glibc Linux here; elsewhere it is left alone
    described = optimize(model, backend="eager").description
    assert ("glibc keeps freed memory" in described) == kept
    assert "glibc" not in optimize(model, backend="eager", memory="default").description


# -------------------------------------------------------------- fallbacks where compiling is impossible


def test_onednn_graph_runs_where_named_fuses_every_partition_and_matches_eager(model, images):
    """The faster batch-1 path (docs/pytorch.md), taken only where named: fixed to its batch,
    BatchNorm gone from its frozen graph, its fused partitions said, eager's outputs, and the
    process's own TorchScript fusion setting as it was."""
    before = torch._C._jit_llga_enabled()
    try:
        fast = optimize(model, backend="onednn-graph", batch_size=3)
    except InputError as refusal:  # measured on AVX-512 CPUs only: elsewhere the refusal is the check
        if "avx512f" in cpu_info().flags or "cannot run here" not in str(refusal):
            raise
        pytest.skip(f"oneDNN Graph does not run on this CPU: {refusal}")
    assert fast.backend == "onednn-graph" and fast.batch_size == 3
    assert torch._C._jit_llga_enabled() == before
    partitions = optimized.onednn_graph.fused_partitions(fast.net, torch.zeros(3, *fast.input_shape))
    assert partitions == _convs(model) + 1, "every conv (or matrix product) and the classifier, once each"
    assert f"{partitions} fused partitions" in fast.description
    assert not any("batch_norm" in kind for kind in _torchscript_kinds(fast))
    with torch.no_grad():
        _close(fast(images), model(images), 1e-4)  # (4 images: slices of 3, the last padded)
    if cpu_info().native_bf16:
        bf16 = optimize(model, "bf16", backend="onednn-graph", batch_size=2)
        with torch.no_grad():
            expected = model(images)
        got = bf16(images)
        assert (got.argmax(1) == expected.argmax(1)).all()
        assert 0 < (got - expected).abs().max().item() < 0.05 * (expected.max() - expected.min()).item()


def test_onednn_graph_comes_first_only_on_cpus_where_it_was_measured_faster(model):
    """oneDNN Graph was measured faster than inductor's program on an AVX-512 CPU only: the
    default tries it first there (and runs it, every conv fused), never on an AVX2 one nor on CUDA."""
    avx512 = CpuInfo(model="AMD EPYC 9B45 (described)", machine="x86_64",
                     flags=frozenset({"avx2", "fma", "avx512f", "avx512_bf16"}), logical_cores=2)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert optimized.default_backends(cpu, ZEN3) == ("inductor", "torchscript", "eager")
    assert optimized.default_backends(cuda, avx512) == ("inductor", "eager")
    if optimized.onednn_graph.unavailable() is not None:  # this torch has no LLGA fuser
        assert "onednn-graph" not in optimized.default_backends(cpu, avx512)
        return
    assert optimized.default_backends(cpu, avx512)[0] == "onednn-graph"
    if "avx512f" in cpu_info().flags:
        said: list[str] = []
        fast = optimize(model, batch_size=2, log=said.append)
        assert fast.backend == "onednn-graph" and not fast.fallbacks
        assert [line for line in said if line.startswith("optimize: built oneDNN Graph's program for batch 2 in")]
        assert _says_default_program(fast.description, _convs(model)), fast.description


@pytest.mark.parametrize("how", ["no compiler", "compile disabled"])
def test_without_a_compiler_it_falls_back_to_frozen_torchscript_and_says_why(model, images, tmp_path,
                                                                            monkeypatch, how):
    _private_caches(monkeypatch, tmp_path)  # no compiled package to load either
    # torch's own config patches (pytest's monkeypatch of a config attribute corrupts torch's config).
    if how == "no compiler":
        unavailable, why = torch._inductor.config.patch({"cpp.cxx": ("/nonexistent/c++",)}), "no C++ compiler found"
    else:
        unavailable, why = torch._dynamo.config.patch(disable=True), "TORCH_COMPILE_DISABLE"
    said = []
    with unavailable:  # (on an AVX2 CPU, described: oneDNN Graph, which needs no compiler, is not tried there)
        fast = optimize(model, batch_size=4, log=said.append, cpu=ZEN3)
        with pytest.raises(InputError, match="backend 'inductor' cannot run here"):
            optimize(model, backend="inductor")
    assert fast.backend == "torchscript" and fast.batch_size is None
    assert any(why in line and "running torchscript" in line for line in said) and why in fast.fallbacks[0]
    assert "TorchScript" in fast.description
    with torch.no_grad():
        _close(fast(images), model(images), 1e-4)
    kinds = _torchscript_kinds(fast)
    assert not any("batch_norm" in kind for kind in kinds)  # folded before tracing: none in the frozen graph
    assert "prim::mkldnn_convolution" in kinds  # optimize_for_inference moved the convs to oneDNN


# ------------------------------------------------------------------------------- compiled, slow


@pytest.mark.compiler
@pytest.mark.slow
def test_compiled_matches_eager_with_every_conv_fused_and_no_batchnorm(model, images):
    fast = optimize(model, "fp32", batch_size=4, backend="inductor")
    assert fast.backend == "inductor" and fast.batch_size == 4, fast.fallbacks
    code = fast.generated_code
    assert code, "the package holds the generated C++"
    assert "batch_norm" not in code
    assert len(FUSED_CONV.findall(code)) == _convs(model) and not PLAIN_CONV.findall(code)
    assert f"{_convs(model)} of {_convs(model)} convs fused" in fast.description
    pads = set(re.findall(r"\bcpp_fused\w*constant_pad_nd\w*", code))
    assert len(pads) == 1, f"only the stem's TF pad is a copy, the depthwise convs' are in their kernels: {pads}"
    with torch.no_grad():
        expected = model(images)
    _close(fast(images), expected, 1e-4)
    _close(fast(images[:1]), expected[:1], 1e-4)  # one image, padded to the compiled batch of 4
    _close(fast(torch.cat([images, images[:2]])), torch.cat([expected, expected[:2]]), 1e-4)  # 6: two slices


@pytest.mark.compiler
@pytest.mark.slow
def test_a_second_process_loads_the_compiled_graph(model, tmp_path, monkeypatch):
    _private_caches(monkeypatch, tmp_path)
    said = []
    optimize(model, "fp32", batch_size=2, backend="inductor", log=said.append)
    assert any(line.startswith("optimize: compiled") for line in said)
    torch.save(model, tmp_path / "model.pt")
    code = ("import sys, torch; from mobilenet import optimize; "
            f"m = torch.load({str(tmp_path / 'model.pt')!r}, weights_only=False); "
            "optimize(m, 'fp32', batch_size=2, backend='inductor', log=lambda s: print(s, file=sys.stderr))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, check=True)
    assert "optimize: loaded the graph for batch 2" in done.stderr, done.stderr[-2000:]


@pytest.mark.compiler
@pytest.mark.slow
def test_bf16_agrees_with_fp32_on_real_photos_or_is_refused(model, images):
    if not cpu_info().native_bf16:  # this CPU: the refusal is what to check
        with pytest.raises(PrecisionUnavailableError, match="no native bf16"):
            optimize(model, "bf16")
        return
    fast = optimize(model, "bf16", batch_size=4, backend="inductor")
    assert fast.backend == "inductor" and fast.precision == "bf16"
    assert len(FUSED_CONV.findall(fast.generated_code or "")) == _convs(model)
    assert "batch_norm" not in fast.generated_code
    with torch.no_grad():
        expected = model(images)
    got = fast(images)
    assert got.dtype == torch.float32
    assert (got.argmax(1) == expected.argmax(1)).all()
    error = (got - expected).abs().max().item()
    assert 0 < error < 0.05 * (expected.max() - expected.min()).item()  # really bf16, and close


@pytest.mark.slow
def test_the_torch_predictor_runs_the_optimized_module(model, images):
    from mobilenet.deploy.runtime import make_predictor

    predictor = make_predictor(model, "torch", "fp32", threads=2)
    assert _says_default_program(predictor.description, _convs(model)), predictor.description
    with torch.no_grad():
        _close(predictor(images.numpy()), model(images), 1e-4)


@pytest.mark.compiler
@pytest.mark.slow
def test_the_in_process_compile_that_cuda_runs_works_here(model, images, tmp_path, monkeypatch):
    # On CUDA, optimize compiles with torch.compile in the process (AOTInductor's CUDA packages
    # crashed as they loaded): its mechanics (freezing, one compile serving the inference-mode
    # calls, the generated code read back) do not depend on the device, so they are checked on the
    # CPU wherever no GPU is.
    from torch._dynamo.utils import counters

    from mobilenet.prepare import InferenceAdapter, inference_copy

    _private_caches(monkeypatch, tmp_path)
    net = InferenceAdapter(inference_copy(model), channels_last=True, dtype=torch.float32)
    said = []
    graph, _, code, how = optimized._compile_in_process(net, images[:4], log=said.append, max_autotune=False)
    assert how.startswith("torch.compile (inductor, freezing") and "torch.compile" in said[0]
    assert code and "batch_norm" not in code
    fast = OptimizedModel(graph, backend="inductor", precision="fp32", device=torch.device("cpu"),
                          input_shape=tuple(images.shape[1:]), batch_size=4)
    graphs = counters["stats"]["unique_graphs"]
    with torch.no_grad():
        expected = model(images)
    _close(fast(images), expected, 1e-4)  # in slices of 4, the last one padded
    assert counters["stats"]["unique_graphs"] == graphs  # the calls ran the graph compiled above


# ------------------------------------------------------------------------------------------- CUDA


@pytest.mark.parametrize("benchmark", [False, True])
def test_cudnn_search_is_on_only_inside_the_optimized_calls(benchmark, monkeypatch):
    # optimize once turned cuDNN's algorithm search on for the whole process: a user's other
    # models (changing shapes, deterministic runs) inherited it. Only flags are touched, so the
    # context is checked here without a GPU.
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", benchmark)
    with cudnn_benchmark(torch.device("cuda")):
        assert torch.backends.cudnn.benchmark
    assert torch.backends.cudnn.benchmark == benchmark
    with pytest.raises(RuntimeError), cudnn_benchmark(torch.device("cuda")):
        raise RuntimeError("a failed call")
    assert torch.backends.cudnn.benchmark == benchmark
    with cudnn_benchmark(torch.device("cpu")):
        assert torch.backends.cudnn.benchmark == benchmark

# On an H200 (torch 2.11+cu130, 2026-12-04) the first of these crashed the test process: the
# AOTInductor package optimize then built for CUDA segfaulted as it loaded. optimize now compiles
# in the process on CUDA (the test above); these have not run on a GPU since.


@pytest.mark.cuda
@no_gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_cuda_matches_the_cpu_model(model, images, precision):
    pytest.importorskip("triton")
    benchmark = torch.backends.cudnn.benchmark
    fast = optimize(model, precision, batch_size=4, device="cuda")
    assert fast.backend == "inductor" and fast.device.type == "cuda"
    assert torch.backends.cudnn.benchmark == benchmark  # the process's setting is the user's
    assert fast.generated_code and "batch_norm" not in fast.generated_code
    with torch.no_grad():
        expected = model(images)
    got = fast(images.cuda()).cpu()
    assert (got.argmax(1) == expected.argmax(1)).all()
    # fp32 convolutions may run in TF32 on the GPU: a looser bound than on the CPU.
    _close(got, expected, 1e-2 if precision == "fp32" else 5e-2)


@pytest.mark.cuda
@no_gpu
def test_cuda_without_triton_runs_eager_and_says_so(model, images, tmp_path, monkeypatch):
    _private_caches(monkeypatch, tmp_path)
    monkeypatch.setattr("torch.utils._triton.has_triton", lambda: False)
    said = []
    fast = optimize(model, "fp16", device="cuda", log=said.append)
    assert fast.backend == "eager" and any("Triton is not installed" in line for line in said)
    assert fast(images).shape == (len(images), 1000)


@pytest.mark.slow
def test_classify_runs_the_compiled_path_and_agrees_with_eager(tmp_path, monkeypatch):
    # `mobilenet classify` (and evaluate, bench) run PyTorch through optimize: what the user gets
    # is what bench's torch cell times.
    import mobilenet
    from deploy_helpers import trained_looking_model
    from mobilenet.preprocess import sample_photos

    monkeypatch.setenv("MOBILENET_CACHE", str(tmp_path))
    model = trained_looking_model(resolution=64).eval()  # logits that differ between images and classes
    photos = sample_photos()[:2]
    fast = mobilenet.classify(photos, weights=model, top_k=3)
    assert _says_default_program(fast.description, 27), fast.description
    monkeypatch.setenv("MOBILENET_TORCH_BACKEND", "eager")
    eager = mobilenet.classify(photos, weights=model, top_k=3)
    assert "eager" in eager.description
    for a, b in zip(fast, eager):
        assert a.top[0].index == b.top[0].index
        assert [p.score for p in a.top] == pytest.approx([p.score for p in b.top], abs=1e-4)


def test_the_environment_insists_on_a_backend(monkeypatch):
    from mobilenet.arch import ArchConfig
    from mobilenet.model import MobileNetV1

    model = MobileNetV1(ArchConfig(alpha=0.25, resolution=32)).eval()
    monkeypatch.setenv("MOBILENET_TORCH_BACKEND", "eager")
    assert optimize(model).backend == "eager"
    monkeypatch.setenv("MOBILENET_TORCH_BACKEND", "tensorrt")
    with pytest.raises(InputError, match="MOBILENET_TORCH_BACKEND"):
        optimize(model)


def test_the_training_steps_first_compile_checks_only_the_best_isa_too() -> None:
    from torch._inductor import config  # noqa: PLC0415

    from mobilenet.train.step import CompileClock  # noqa: PLC0415

    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("inductor's ISA checks are x86's")
    with optimized.only_the_best_vector_isa_checked():
        if config.cpp.vec_isa_ok is not True:
            pytest.skip("the best vector ISA fails inductor's check here: inductor checks them all")
    clock = CompileClock(True, log=lambda line: None)
    with clock.first_step():
        assert config.cpp.vec_isa_ok is True, "the compiling step trusts the best ISA inductor's test passed"
    with clock.first_step():
        assert config.cpp.vec_isa_ok is None, "the steps after it patch nothing"
    assert clock.seconds is not None


@pytest.mark.compiler
def test_only_the_best_vector_isa_is_checked_before_compiling(monkeypatch: pytest.MonkeyPatch) -> None:
    from torch._inductor import config, cpu_vec_isa  # noqa: PLC0415

    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("inductor's ISA checks are x86's")
    with optimized.only_the_best_vector_isa_checked():
        assert config.cpp.vec_isa_ok is True, "the best ISA passed inductor's check: the others are not built"
    assert config.cpp.vec_isa_ok is None, "only for the compile"

    class FailingIsa:
        def __str__(self) -> str:
            return "avx2"

        def __bool__(self) -> bool:
            return False

    monkeypatch.setattr(cpu_vec_isa, "supported_vec_isa_list", [FailingIsa()])
    monkeypatch.setattr(cpu_vec_isa, "x86_isa_checker", lambda: ["avx2"])
    with optimized.only_the_best_vector_isa_checked():
        assert config.cpp.vec_isa_ok is None, "a best ISA that fails its check: inductor checks them all, as before"
