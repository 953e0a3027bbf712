"""make_predictor: every runtime x precision it offers agrees with PyTorch on real photos, says
what really runs, refuses what this CPU cannot do natively, and ``auto`` measures.

Expectations come from ``mobilenet.cpu.cpu_info()`` (the CPU the tests run on), never from the CPU
they were written on; the decisions for other CPUs are checked on described CPUs (an AVX2-only
Zen 3, as seen on the project's machines).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from described_cpus import ZEN3
from mobilenet.cpu import cpu_info
from mobilenet.deploy import auto
from mobilenet.deploy.optional import MissingRuntimeError, available
from mobilenet.deploy.runtime import make_predictor, predictor_from_file
from mobilenet.deploy.verify import verify
from mobilenet.errors import InputError, command_line_spelling
from mobilenet.factory import mobilenet_v1
from mobilenet.optimized import FIXED_BATCH_BACKENDS
from mobilenet.predictor import PrecisionUnavailableError
from mobilenet.preprocess import sample_photos

NATIVE_BF16 = cpu_info().native_bf16


def _installed(runtime: str) -> None:
    if runtime != "torch" and not available(runtime):
        pytest.skip(f"{runtime} not installed")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("runtime", "precision"),
    [("torch", "fp32"), ("torch", "bf16"), ("onnxruntime", "fp32"), ("openvino", "fp32"), ("openvino", "bf16")],
)
def test_float_predictors_agree_with_pytorch_or_refuse(model, images, runtime, precision):
    _installed(runtime)
    if precision == "bf16" and not NATIVE_BF16:  # this CPU: the refusal is what to check
        with pytest.raises(PrecisionUnavailableError, match="no native bf16"):
            make_predictor(model, runtime, precision, threads=2)
        return
    predictor = make_predictor(model, runtime, precision, threads=2)
    assert (predictor.runtime, predictor.precision) == (runtime, precision)
    check = verify(model, predictor, images, precision=precision)
    if precision == "fp32":
        assert check.top1_agreement == 1.0
        assert check.max_abs_diff < 1e-4 * check.logit_spread
    else:  # bf16 really runs in bf16: not equal to fp32 (an unset OpenVINO hint would fail fp32 above)
        assert check.max_abs_diff > 1e-5 * check.logit_spread
    out = predictor(images.numpy())  # numpy input too
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.shape == (len(images), 1000)


@pytest.mark.compiled  # (the CPU's default backend: oneDNN Graph builds in a second, inductor compiles)
def test_the_torch_predictor_is_compiled_for_the_batch_it_will_be_called_with():
    """A batch of 3 runs as one call of a program compiled for 3, not as three calls of a batch-1
    program (as make_predictor built it before: bench's batch-32 torch cell timed 32 calls)."""
    model = mobilenet_v1(alpha=0.25, resolution=64, num_classes=10).eval()
    predictor = make_predictor(model, "torch", "fp32", threads=1, batch_size=3)
    fixed = 3 if predictor.module.backend in FIXED_BATCH_BACKENDS else None  # (TorchScript, no compiler: any batch)
    assert predictor.module.batch_size == fixed and predictor.fixed_batch == fixed
    assert "batch 1 " not in predictor.description
    x = torch.rand(3, 3, 64, 64)
    with torch.inference_mode():
        expected = model(x)
    assert torch.allclose(predictor(x), expected, atol=1e-4)
    assert torch.allclose(predictor(x[:1]), expected[:1], atol=1e-4)  # (a smaller batch: padded to it)


def _on_zen3(monkeypatch) -> None:
    """Every runtime's own native-precision rule sees the AVX2-only Zen 3."""
    for where in ("mobilenet.deploy.auto", "mobilenet.deploy.runtimes.pytorch", "mobilenet.deploy.runtimes.ov"):
        monkeypatch.setattr(f"{where}.cpu_info", lambda: ZEN3)


@pytest.mark.parametrize("runtime", ["torch", "openvino"])
def test_bf16_is_refused_on_a_cpu_without_it(model, monkeypatch, runtime):
    _on_zen3(monkeypatch)
    with pytest.raises(PrecisionUnavailableError, match="no native bf16") as refusal:
        make_predictor(model, runtime, "bf16")
    assert "fp32" in str(refusal.value)  # says what to use instead
    # ...and how to measure int8 against it, as its caller runs things: the library's call from
    # Python, the command on the command line
    assert "mobilenet.deploy.bench.bench(" in str(refusal.value) and "mobilenet bench" not in str(refusal.value)
    with command_line_spelling({"runtime": "--runtime"}), pytest.raises(PrecisionUnavailableError) as refusal:
        make_predictor(model, runtime, "bf16")
    assert "`mobilenet bench --precision fp32 int8`" in str(refusal.value)


def test_each_runtime_declares_its_precisions_and_the_choices_are_derived():
    from mobilenet.deploy import runtimes

    offered = {r: runtimes.offered_precisions(r) for r in runtimes.RUNTIME_MODULES}
    assert offered["torch"] == runtimes.runtime_module("torch").PRECISIONS
    # Every precision name is run by some runtime the command line offers, and no runtime runs another.
    assert {p for r in runtimes.RUNTIME_CHOICES if r != "auto" for p in offered[r]} == set(runtimes.PRECISIONS)
    assert all(set(precisions) <= set(runtimes.PRECISIONS) for precisions in offered.values())
    assert runtimes.runtimes_offering("int8") == ["onnxruntime", "openvino", "litert", "executorch"]
    # auto chooses only among runtimes that offer the precision.
    assert all(p in offered[r] for p, candidates in auto.CANDIDATES.items() for r in candidates)


def test_the_command_line_gets_its_choices_without_importing_a_runtime():
    import subprocess

    code = ("import sys; from mobilenet.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'numpy', 'onnxruntime', 'openvino') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.slow
def test_emulated_bf16_runs_only_when_asked_and_says_so(model, images, monkeypatch):
    monkeypatch.setattr("mobilenet.deploy.runtimes.pytorch.cpu_info", lambda: ZEN3)
    with pytest.warns(UserWarning, match="emulated"):
        predictor = make_predictor(model, "torch", "bf16", allow_emulation=True)
    assert "EMULATED" in predictor.description
    assert predictor(images).shape == (len(images), 1000)


@pytest.mark.slow
def test_openvino_reports_the_precision_its_convolutions_run(model):
    _installed("openvino")
    predictor = make_predictor(model, "openvino", "fp32")
    convs = sum(1 for _ in model.conv_layers())
    assert f"{convs} conv fp32" in predictor.description


@pytest.mark.slow
def test_auto_measures_once_then_uses_the_cached_decision(model, tmp_path, monkeypatch):
    monkeypatch.setenv("MOBILENET_CACHE", str(tmp_path))
    # Two candidates are enough to show the mechanism (each build is an export).
    monkeypatch.setitem(auto.CANDIDATES, "fp32", ("onnxruntime", "torch"))
    measured = []
    real = auto.time_interleaved
    monkeypatch.setattr(auto, "time_interleaved", lambda *a, **k: measured.append(1) or real(*a, **k))
    first = make_predictor(model, "auto", "fp32", threads=2)
    candidates = auto.candidates("fp32")
    assert "measured fastest here" in first.description
    assert all(f"{r} " in first.description for r in candidates)  # every candidate's time is given
    assert measured == [1] and (tmp_path / auto.CACHE_FILE).is_file()
    second = make_predictor(model, "auto", "fp32", threads=2)
    assert measured == [1], "a cached decision must not be measured again"
    assert second.runtime == first.runtime and "cached measurement" in second.description
    make_predictor(model, "auto", "fp32", threads=2, auto_mode="remeasure")
    assert measured == [1, 1]


def test_auto_fixed_order_is_reproducible_and_measures_nothing(model, monkeypatch):
    monkeypatch.setattr(auto, "time_interleaved", lambda *a, **k: pytest.fail("fixed mode measured"))
    predictor = make_predictor(model, "auto", "fp32", auto_mode="fixed")
    expected = next(r for r in auto.CANDIDATES["fp32"] if r in auto.candidates("fp32"))
    assert predictor.runtime == expected and "fixed order" in predictor.description


def test_auto_decisions_are_per_cpu(model, monkeypatch):
    here = auto.decision_key(model.arch_cfg, "fp32", 1, 2)
    _on_zen3(monkeypatch)
    assert auto.decision_key(model.arch_cfg, "fp32", 1, 2) != here
    assert auto.candidates("bf16") == []  # no native bf16 on the Zen 3: nothing to choose from
    with pytest.raises(ValueError, match="auto found no runtime for bf16: this CPU has no native bf16"):
        make_predictor(model, "auto", "bf16")


WRONG_SHAPES = Path(__file__).parent / "data" / "bad_inputs" / "auto_decisions_wrong_shape.json"


class _Timed:
    """A stand-in predictor for ``auto.choose``: what it measures, not what it runs."""

    def __init__(self, runtime: str) -> None:
        self.runtime, self.description = runtime, runtime

    def __call__(self, x):
        return x


@pytest.mark.parametrize("entry", [*json.loads(WRONG_SHAPES.read_text()).values(), {"runtime": "onnxruntime"},
                                   {"runtime": "onnxruntime", "median_ms": "fast", "measured": "today"}])
def test_a_wrong_shaped_cached_decision_is_measured_again(model, tmp_path, monkeypatch, entry):
    # Before, such an entry broke --runtime auto (AttributeError, KeyError) until the file was deleted.
    monkeypatch.setenv("MOBILENET_CACHE", str(tmp_path))
    monkeypatch.setattr(auto, "candidates", lambda precision: ["onnxruntime", "openvino"])
    monkeypatch.setattr(auto, "time_interleaved", lambda calls, **k: [[0.002] * 5, [0.001] * 5])
    key = auto.decision_key(model.arch_cfg, "fp32", 1, None)
    cache = json.loads(WRONG_SHAPES.read_text()) | {key: entry}
    (tmp_path / auto.CACHE_FILE).write_text(json.dumps(cache))
    predictor, reason = auto.choose(model.arch_cfg, "fp32", 1, None, _Timed, torch.zeros(1), log=lambda s: None)
    assert predictor.runtime == "openvino" and reason.startswith("measured fastest here")
    rewritten = json.loads((tmp_path / auto.CACHE_FILE).read_text())
    assert rewritten[key]["runtime"] == "openvino" and rewritten["other"] == [1, 2, 3]


@pytest.mark.parametrize(("fp32_seconds", "verdict"), [(0.0005, "slower"), (0.005, "faster")])
def test_auto_says_whether_int8_is_faster_than_fp32_here(model, tmp_path, monkeypatch, fp32_seconds, verdict):
    # int8 is not faster everywhere (slower at 0.25-224 in LiteRT and ExecuTorch on an AVX2 CPU):
    # auto times it beside fp32 and says which, measured and cached.
    monkeypatch.setenv("MOBILENET_CACHE", str(tmp_path))
    monkeypatch.setattr(auto, "candidates", lambda precision: ["openvino"])
    monkeypatch.setattr(auto, "time_interleaved", lambda calls, **k: [[0.001] * 5, [fp32_seconds] * 5])
    args = (model.arch_cfg, "int8", 1, None, _Timed, torch.zeros(1))
    _, reason = auto.choose(*args, log=lambda s: None, reference=lambda: _Timed("onnxruntime"))
    assert reason.endswith(f"; fp32 onnxruntime {fp32_seconds * 1e3:.3g} ms: int8 is {verdict} than fp32 here")
    _, cached = auto.choose(*args, log=lambda s: None, reference=lambda: pytest.fail("measured again"))
    assert cached.startswith("cached measurement") and f"int8 is {verdict} than fp32 here" in cached


def test_auto_skips_a_runtime_that_is_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail
    assert "onnxruntime" not in auto.candidates("fp32") and "torch" in auto.candidates("fp32")


@pytest.mark.parametrize(("module", "runtime", "extra"), [("onnxruntime", "onnxruntime", "onnx"),
                                                          ("openvino", "openvino", "openvino")])
def test_missing_runtime_names_the_pip_extra(model, monkeypatch, module, runtime, extra):
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(MissingRuntimeError, match=rf"pip install 'mobilenet\[{extra}\]'"):
        make_predictor(model, runtime, "fp32")


@pytest.mark.parametrize(
    ("runtime", "precision", "calibration", "message"),
    [
        ("onnxruntime", "int8", None, "int8 needs calibration images"),
        ("torch", "int8", ["x.jpg"],
         "torch does not offer int8; the runtimes that do: onnxruntime, openvino, litert, executorch$"),
        ("onnxruntime", "bf16", None, "onnxruntime does not offer bf16"),
        ("tensorrt", "fp32", None, "runtime must be one of"),
        ("torch", "fp64", None, "precision must be one of"),
    ],
)
def test_refusals_are_clear(model, runtime, precision, calibration, message):
    with pytest.raises(ValueError, match=message):
        make_predictor(model, runtime, precision, calibration_images=calibration)


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime", "openvino"])
def test_more_threads_than_this_process_may_use_are_refused_before_anything_is_built(model, runtime):
    """threads=100000 started that many threads in ONNX Runtime: a job that grew in memory and
    could not be stopped. The bound is the CPUs this process may run on."""
    _installed(runtime)
    cpus = len(os.sched_getaffinity(0))
    refused = rf"threads is {cpus + 1}, more than the {cpus} CPUs? this process may use: ask for at most {cpus}"
    with pytest.raises(InputError, match=refused):
        make_predictor(model, runtime, "fp32", threads=cpus + 1)
    from_the_command_line = rf"^--threads is 100000, more than the {cpus} CPUs? this process may use"
    with command_line_spelling({"threads": "--threads"}), pytest.raises(InputError, match=from_the_command_line):
        make_predictor(model, runtime, "fp32", threads=100_000)
    make_predictor(model, runtime, "fp32", threads=cpus)  # every CPU it may use is fine


def test_the_thread_bound_is_the_cpus_this_process_may_run_on(monkeypatch):
    from mobilenet.threads import check_threads, usable_cpus

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3}, raising=False)  # (as under taskset -c 3)
    assert usable_cpus() == 1
    check_threads(1)
    with pytest.raises(InputError, match="threads is 2, more than the 1 CPU this process may use: ask for at most 1"):
        check_threads(2)


def _distinct_batches(images: torch.Tensor, count: int) -> list[torch.Tensor]:
    """``count`` batches of the photos, each in another order or mirrored: every row of each a
    different image from the same row of the others."""
    return [images.roll(i % len(images), 0).flip(-1) if i >= len(images) else images.roll(i, 0)
            for i in range(count)]


@pytest.mark.parametrize("runtime", ["openvino", "onnxruntime", pytest.param("litert", marks=pytest.mark.slow),
                                     pytest.param("executorch", marks=pytest.mark.slow),
                                     pytest.param("torch", marks=pytest.mark.slow)])
def test_one_predictor_called_from_several_threads_gives_each_caller_its_own_logits(model, images, runtime):
    """The explorer keeps one predictor per weights and runtime and calls it from its thread pool.
    OpenVINO's one infer request, reused, refused a second caller ("Infer Request is busy") or
    handed it the other call's output; each caller must get its own images' logits."""
    _installed(runtime)
    predictor = make_predictor(model, runtime, "fp32", threads=1)
    batches = _distinct_batches(images, 8)
    expected = [predictor(batch) for batch in batches]
    assert all(not torch.allclose(expected[0], other, atol=1e-3) for other in expected[1:])  # a swap would show
    start = threading.Barrier(len(batches))

    def call(i: int) -> list[torch.Tensor]:
        start.wait()
        return [predictor(batches[i]) for _ in range(12)]

    with ThreadPoolExecutor(len(batches)) as pool:
        results = list(pool.map(call, range(len(batches))))
    for mine, outputs in zip(expected, results):
        for out in outputs:
            torch.testing.assert_close(out, mine, atol=1e-5, rtol=1e-5)


def test_sample_photos_are_real_files():
    photos = sample_photos()
    assert photos and all(p.stat().st_size > 10_000 for p in photos)


@pytest.mark.slow
def test_a_file_is_run_at_its_own_precision(model, images, tmp_path):
    _installed("onnxruntime")
    from mobilenet.deploy.export import export

    export(model, tmp_path / "m.onnx")
    predictor = predictor_from_file(tmp_path / "m.onnx")
    assert (predictor.runtime, predictor.precision) == ("onnxruntime", "fp32")
    torch.testing.assert_close(predictor(images), model(images).detach(), atol=1e-4, rtol=1e-4)
    with pytest.raises(PrecisionUnavailableError, match="the ONNX file is fp32"):
        predictor_from_file(tmp_path / "m.onnx", precision="int8")


@pytest.mark.slow
def test_micro_batches_give_the_same_result(model, images):
    _installed("onnxruntime")
    predictor = make_predictor(model, "onnxruntime", "fp32", threads=2)
    assert predictor.micro_batch is None  # whole batches by default
    batch = torch.cat([images] * 3)  # 12 images
    whole = predictor(batch)
    predictor.micro_batch = 5  # slices of 5, 5, 2
    torch.testing.assert_close(predictor(batch), whole, atol=1e-5, rtol=1e-5)


def test_a_files_own_input_is_made_once_passed_through_and_the_other_layout_refused():
    import numpy as np

    from mobilenet.deploy.runtimes.inputs import NativeInput
    from mobilenet.preprocess import Preprocess, load_image

    uint8 = NativeInput((1, 32, 32, 3), "nhwc", "uint8", scale=1 / 127.5, zero_point=128)
    standard = torch.rand(2, 3, 32, 32) * 2 - 1
    native = uint8.convert(standard)
    assert native.dtype == np.uint8 and native.shape == (2, 32, 32, 3)
    assert np.shares_memory(uint8.convert(native), native)  # passed through, not converted again
    with pytest.raises(ValueError, match=r"input of shape \(2, 32, 32, 3\) \(NHWC float32\) does not fit: this file "
                       r"takes NCHW float32 \(N, 3, 32, 32\), or its own uint8 NHWC \(N, 32, 32, 3\)"):
        uint8.convert(standard.permute(0, 2, 3, 1))
    nchw = NativeInput((1, 3, 32, 32), "nchw")
    with pytest.raises(ValueError, match=r"\(NHWC float32\) does not fit: this file takes NCHW float32 "
                       r"\(N, 3, 32, 32\)$"):
        nchw.convert(standard.permute(0, 2, 3, 1))
    # From preprocessing itself: a pixel-valued uint8 input is the resized, cropped pixels.
    preprocess = Preprocess(resolution=32, mean=(0.5,) * 3, std=(0.5,) * 3)
    image = load_image(sample_photos()[0])
    pixels = uint8.image_transform(preprocess)(image)
    assert pixels.dtype == np.uint8 and pixels.shape == (32, 32, 3)
    converted = uint8.convert(preprocess.eval_transform()(image)[None])[0]
    assert np.abs(pixels.astype(int) - converted.astype(int)).max() <= 1  # TF's half a level, at most


def test_a_fixed_batch_file_gets_its_batch_in_converted_slices_the_last_padded():
    """A batch larger than a file's fixed one runs as several calls: each slice converted as the
    whole batch would be, the last padded with zeros and its real images counted."""
    import numpy as np

    from mobilenet.deploy.runtimes.inputs import NativeInput

    file_input = NativeInput((2, 8, 8, 3), "nhwc", "uint8", scale=1 / 127.5, zero_point=128)
    standard = torch.rand(5, 3, 8, 8) * 2 - 1
    whole = file_input.convert(standard)
    slices = list(file_input.fixed_batches(standard))
    assert [count for _, count in slices] == [2, 2, 1]
    assert all(value.shape == (2, 8, 8, 3) and value.dtype == np.uint8 for value, _ in slices)
    np.testing.assert_array_equal(np.concatenate([value for value, _ in slices])[:5], whole)
    assert not slices[-1][0][1].any(), "the padding is zeros"
    assert [count for _, count in file_input.fixed_batches(whole)] == [2, 2, 1]  # a native batch, passed through


OFFLINE_PROBE = """
import os
forks = []
os.register_at_fork(before=lambda: forks.append(1))
from mobilenet.deploy.formats.openvino import openvino_model
from mobilenet.deploy.optional import require
from mobilenet.factory import mobilenet_v1
require("nncf")
openvino_model(mobilenet_v1(alpha=0.25, resolution=32).eval())
print(len(forks))
"""


@pytest.mark.skipif(not available("openvino") or not available("nncf"), reason="needs OpenVINO and NNCF")
def test_openvino_and_nncf_report_nothing_from_our_process(tmp_path):
    # Where no choice was made, OpenVINO's converter and NNCF send usage events to Google Analytics,
    # each from a forked child, and keep a client ID under the home directory: 13 forks and
    # ~/intel/openvino_ga_cid here without keep_openvino_offline. A fresh process, because NNCF
    # stubs its telemetry under pytest and the consent is decided once per process.
    env = {**os.environ, "HOME": str(tmp_path)}
    env.pop("CI", None)  # OpenVINO's tools stay quiet on CI machines anyway
    done = subprocess.run([sys.executable, "-c", OFFLINE_PROBE], env=env, capture_output=True, text=True,
                          timeout=300, check=True)
    assert done.stdout.split()[-1] == "0", done.stderr[-2000:]
    assert not (tmp_path / "intel").exists()


@pytest.mark.skipif(not available("openvino"), reason="needs OpenVINO")
def test_an_explicit_opt_in_to_openvino_telemetry_stands(tmp_path, monkeypatch):
    from openvino_telemetry.utils.opt_in_checker import ConsentCheckResult, OptInChecker

    from mobilenet.deploy.optional import keep_openvino_offline

    keep_openvino_offline()
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("CI", raising=False)
    assert OptInChecker().check(False) == ConsentCheckResult.DECLINED  # no choice made: declined
    (tmp_path / "intel").mkdir()
    (tmp_path / "intel" / "openvino_telemetry").write_text("1")
    assert OptInChecker().check(False) == ConsentCheckResult.ACCEPTED
