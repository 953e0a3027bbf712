"""``bench``: the report holds every requested cell (measured, or with the reason it was not),
``auto`` decides per batch size, the side studies are filled in; ``mobilenet bench`` and
``mobilenet export`` from the command line: parsing, what they print and write, exit statuses.
Timings are never asserted (they live in docs/performance.md)."""

from __future__ import annotations

import json
import shutil

import pytest

from mobilenet.cli import main
from mobilenet.cost import network_cost
from mobilenet.deploy import bench
from mobilenet.deploy.bench import BenchOptions, run
from mobilenet.deploy.optional import available
from mobilenet.predictor import Predictor
from mobilenet.preprocess import sample_photos

TINY = ["--alpha", "0.25", "--resolution", "64"]
QUICK = ["--seconds", "0.05", "--threads", "1"]  # one thread: no OpenMP barriers to stall on a loaded machine


def bench_json(capsys, *args: str) -> dict:
    assert main(["bench", *TINY, *QUICK, "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def calibration_images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("calibration")
    for i, photo in enumerate(sample_photos() * 2):
        shutil.copy(photo, folder / f"{i}{photo.suffix}")
    return sorted(folder.iterdir())


ONLY_CELLS = {"peers": False, "compare_conv": False, "layers": False, "memory": False}


@pytest.mark.slow
def test_the_report_has_every_requested_cell(tiny_model, calibration_images):
    options = BenchOptions(
        runtimes=("torch", "onnxruntime", "openvino"), precisions=("fp32", "int8"), batch_sizes=(1, 3), threads=1,
        seconds=0.05, calibration_images=calibration_images, **ONLY_CELLS,
    )
    report = json.loads(bench.bench(tiny_model, options).to_json())
    cells = {(c["runtime"], c["precision"], c["batch_size"]): c for c in report["cells"]}
    for runtime in ("torch", "onnxruntime", "openvino"):
        for precision in ("fp32", "int8"):
            for batch in (1, 3):
                cell = cells[(runtime, precision, batch)]
                installed = runtime == "torch" or available(runtime)
                if runtime == "torch" and precision == "int8":
                    assert cell["status"] == "skipped" and "does not offer int8" in cell["reason"]
                elif not installed:
                    assert cell["status"] == "skipped" and "pip install" in cell["reason"]
                else:
                    assert cell["status"] == "ok", cell
                    assert 0 < cell["p10_ms"] <= cell["median_ms"] <= cell["p90_ms"]
                    assert cell["runs"] >= 10
                    assert cell["images_per_s"] == pytest.approx(batch / cell["median_ms"] * 1e3)
                    assert cell["gflops"] == pytest.approx(report["gflop_per_image"] * cell["images_per_s"])
    assert report["mult_adds"] > 0 and report["sgemm_peak_gflops"] > 0
    assert report["sgemm_library"] in ("MKL", "oneDNN")
    assert report["machine_drift"] >= 1.0, "how steady the machine was is recorded"
    assert report["machine"]["threads"] == 1
    # Every report names the CPU it measured on, as mobilenet.cpu describes it.
    from mobilenet.cpu import cpu_info

    assert report["machine"]["isa"] == cpu_info().isa_level
    assert report["machine"]["int8_dot"] == cpu_info().int8_dot


class _Echo(Predictor):
    """A predictor that costs nothing, named after how it was built."""

    def __init__(self, runtime: str, batch_size: int) -> None:
        self.description = f"{runtime} decided at batch {batch_size}"

    def _run(self, x):
        return x


def test_auto_and_torch_are_built_for_each_batch_size(tiny_model, monkeypatch):
    # Before, one auto decision (made at the largest batch) was timed at every batch size, and
    # PyTorch's program, compiled for one batch size, ran the others in slices of it.
    built = []

    def build(model, runtime, precision, options, batch_size=1):
        built.append((runtime, batch_size))
        return _Echo(runtime, batch_size)

    monkeypatch.setattr(run, "build_predictor", build)
    options = BenchOptions(runtimes=("auto", "torch", "onnxruntime"), batch_sizes=(1, 3), seconds=0.01, min_runs=1,
                           **ONLY_CELLS)
    report = bench.bench(tiny_model, options)
    assert built == [("auto", 1), ("auto", 3), ("torch", 1), ("torch", 3), ("onnxruntime", 3)]
    described = {(c.runtime, c.batch_size): c.description for c in report.cells}
    assert described[("auto", 1)] == "auto decided at batch 1" and described[("auto", 3)] == "auto decided at batch 3"
    assert described[("torch", 3)] == "torch decided at batch 3"
    assert described[("onnxruntime", 1)] == described[("onnxruntime", 3)]  # one predictor serves every batch


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"batch_sizes": (0,)}, "batch_sizes must be integers >= 1"),
        ({"threads": 0}, "threads must be an integer >= 1"),
        ({"seconds": 0}, "seconds must be a finite number of seconds > 0"),
        ({"seconds": float("nan")}, "seconds must be a finite number of seconds > 0, got nan"),
        ({"seconds": float("inf")}, "seconds must be a finite number of seconds > 0, got inf"),
        ({"runtimes": ("tensorrt",)}, "runtimes must be some of auto, torch"),
        ({"precisions": ("fp64",)}, "precisions must be some of fp32"),
    ],
)
def test_bad_options_are_refused_when_made(settings, message):
    with pytest.raises(ValueError, match=message):
        BenchOptions(**settings)


def test_the_report_says_where_int8_is_slower_than_fp32():
    from mobilenet.deploy.bench import BenchReport, Cell, format_report

    report = BenchReport(model="0.25-224", config={}, machine={"cpu": "?", "threads": 2, "malloc_tunables": False,
                                                               "omp_wait_policy": None},
                         mult_adds=41_000_000, gflop_per_image=0.082, sgemm_peak_gflops=100.0)
    for runtime, precision, ms in [("litert", "fp32", 0.66), ("litert", "int8", 0.9), ("onnxruntime", "fp32", 1.0),
                                   ("onnxruntime", "int8", 0.5), ("tflite", "fp32", 0.6), ("tflite", "uint8", 0.7)]:
        report.cells.append(Cell(f"{runtime} {precision}", runtime, precision, 1, median_ms=ms, p10_ms=ms,
                                 p90_ms=ms, runs=10, images_per_s=1e3 / ms, gflops=1.0, peer=runtime == "tflite"))
    slower = report.compare_int8_with_fp32()
    assert [(r["runtime"], r["precision"]) for r in slower] == [("litert", "int8"), ("tflite", "uint8")]
    text = format_report(report)
    assert "int8 is not faster everywhere" in text and "litert" in text.split("not faster everywhere")[1]
    assert json.loads(report.to_json())["int8_slower_than_fp32"][0]["fp32_ms"] == 0.66


def test_the_report_warns_when_the_machine_moved_while_it_timed():
    from mobilenet.deploy.bench import BenchReport, format_report
    from mobilenet.deploy.timing import DRIFTING

    def report(drift: float) -> BenchReport:
        machine = {"cpu": "?", "threads": 2, "malloc_tunables": False, "omp_wait_policy": None}
        return BenchReport(model="0.25-224", config={}, machine=machine, mult_adds=41_000_000, gflop_per_image=0.082,
                           sgemm_peak_gflops=100.0, machine_drift=drift)

    assert "pace moved 1.40x" in format_report(report(1.4))
    assert json.loads(report(1.4).to_json())["machine_drift"] == 1.4
    assert "pace moved" not in format_report(report(DRIFTING)) and "pace moved" not in format_report(report(1.0))


def test_repeated_requests_are_measured_once():
    options = BenchOptions(runtimes=["torch", "torch"], precisions=["fp32"], batch_sizes=[1, 1, 2])
    assert (options.runtimes, options.batch_sizes) == (("torch",), (1, 2))


@pytest.fixture(scope="module")
def tiny_model():
    from mobilenet.model import MobileNetV1

    return MobileNetV1(alpha=0.25, resolution=64).eval()


def quick_options(*runtimes: str) -> BenchOptions:
    return BenchOptions(runtimes=runtimes, batch_sizes=(2,), threads=1, seconds=0.05)


@pytest.mark.slow
def test_separable_vs_conv_sets_time_beside_mult_adds(tiny_model):
    (row,) = bench.separable_vs_conv(tiny_model, quick_options("torch"), print)
    assert row["status"] == "ok" and row["conv_ms"] > 0 and row["separable_ms"] > 0
    assert row["time_ratio"] == pytest.approx(row["conv_ms"] / row["separable_ms"])
    # The savings are the cost model's, not a measurement: the full-conv network needs ~7x the mult-adds at 0.25.
    assert 5 < row["savings"] < 9


@pytest.mark.slow
def test_memory_is_measured_in_a_fresh_process(tiny_model):
    (row,) = bench.memory_rows(tiny_model, quick_options("torch"), print)
    assert row["status"] == "ok" and row["batch_size"] == 2
    assert row["rss_before_bytes"] > 0 and row["measured_increase_bytes"] >= 0
    assert row["images_per_call"] == 2  # PyTorch runs a batch whole
    predicted = network_cost(tiny_model.arch_cfg, batch_size=2).total.peak_activation_bytes
    assert row["predicted_peak_activation_bytes"] == predicted


@pytest.mark.slow
def test_json_on_stdout_is_the_whole_report(capsys):
    report = bench_json(capsys, "--runtime", "torch", "--batch-size", "2", "--no-peers", "--no-conv", "--no-layers",
                        "--no-memory")
    assert [(c["name"], c["batch_size"], c["status"]) for c in report["cells"]] == [("torch fp32", 2, "ok")]


@pytest.mark.slow
def test_text_report_and_plot(capsys, tmp_path):
    plot, saved = tmp_path / "bench.png", tmp_path / "bench.json"
    args = ["bench", *TINY, *QUICK, "--runtime", "torch", "--batch-size", "1", "2", "--plot", str(plot),
            "--save", str(saved),
            "--no-peers", "--no-conv", "--no-layers", "--no-memory"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "GFLOP per image (FLOPs = 2 x mult-adds" in out and "torch fp32" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [c["batch_size"] for c in json.loads(saved.read_text())["cells"]] == [1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.json", "bench.png"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--batch-size", "0"], "--batch-size must be integers >= 1, got [0]"),
        (["--threads", "0"], "--threads must be an integer >= 1, got 0"),
        (["--threads", "-1"], "--threads must be an integer >= 1, got -1"),
        (["--seconds", "nan"], "--seconds must be a finite number of seconds > 0, got nan"),
        (["--seconds", "inf"], "--seconds must be a finite number of seconds > 0, got inf"),
        (["--batch-size", "1", "100000000"], "--batch-size 100000000 does not fit in memory"),
        (["--plot", "chart.txt"], "a plot is written as .png"),
        (["--calibration", "/nonexistent/folder"], "no such folder"),
        (["--device", "tpu"], "device must be cpu, cuda or cuda:N"),
    ],
)
def test_bench_usage_errors_are_one_line(capsys, args, message):
    assert main(["bench", *TINY, *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
@pytest.mark.skipif(not available("onnxruntime"), reason="onnxruntime not installed")
def test_export_command_writes_a_verified_file(capsys, tmp_path):
    out = tmp_path / "m.onnx"
    assert main(["export", str(out), *TINY, "--random-init"]) == 0
    printed = capsys.readouterr().out
    assert out.is_file() and "max |logit difference|" in printed and "dynamic batch" in printed


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["model.jpg"], "cannot tell the format"),
        (["model.onnx", "--random-init", "--weights", "x.safetensors"], "contradict each other"),
        (["model.xml", "--fixed-batch", "1"], "fixed_batch applies to onnx exports, not openvino"),
        (["model.onnx", "--layout", "nhwc"], "layout applies to tflite and executorch and coreml exports, not onnx"),
        (["model.onnx", "--precision", "int8"], "int8 export needs calibration images"),
        (["model.onnx", "--precision", "fp16"], "onnx export offers fp32, int8, not fp16"),
    ],
)
def test_export_usage_errors_are_one_line(capsys, tmp_path, args, message):
    args = [str(tmp_path / args[0]), *args[1:]]
    assert main(["export", *args, *TINY]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_every_block_is_compared_with_the_conv_it_replaces(tiny_model):
    rows = bench.block_comparisons(tiny_model, quick_options("torch"), print)
    comparisons = network_cost(tiny_model.arch_cfg).block_comparisons()
    assert [row["block"] for row in rows] == list(range(13))
    for row, comparison in zip(rows, comparisons):
        assert row["savings"] == pytest.approx(comparison.standard.mult_adds / comparison.separable_mult_adds)
        assert row["conv_ms"] > 0 and row["time_ratio"] == pytest.approx(row["conv_ms"] / row["separable_ms"])


@pytest.mark.slow
@pytest.mark.compiled  # the CPU's default program, as bench runs it (oneDNN Graph on AVX-512, else inductor's)
def test_the_memory_a_call_needs_is_not_hidden_by_calls_made_while_building(monkeypatch):
    # PyTorch's oneDNN Graph program runs the network three times as it is built, and under the
    # allocator settings bench runs with, the freed buffers stay resident: the probe measured 0 MB
    # for 1.0-224 at batch 32 until it handed them back before the call. 1.0-224 at batch 8: 38.5 MB
    # of live activations at the peak.
    from mobilenet.allocator import GLIBC_TUNABLES_KEEP
    from mobilenet.model import MobileNetV1

    monkeypatch.setenv("GLIBC_TUNABLES", GLIBC_TUNABLES_KEEP)  # as bench restarts itself (the probe inherits it)

    options = BenchOptions(runtimes=("torch",), batch_sizes=(8,), threads=1, seconds=0.05)
    (row,) = bench.memory_rows(MobileNetV1().eval(), options, print)
    assert row["status"] == "ok", row
    assert row["predicted_peak_activation_bytes"] > 30e6
    assert row["measured_increase_bytes"] >= 0.5 * row["predicted_peak_activation_bytes"]


@pytest.mark.slow
def test_memory_probe_takes_models_loaded_folded(tiny_model):
    from mobilenet.prepare import folded_copy

    (row,) = bench.memory_rows(folded_copy(tiny_model), quick_options("torch"), print)
    assert row["status"] == "ok", row


@pytest.fixture
def small_weights(tmp_path):
    from mobilenet.model import MobileNetV1
    from mobilenet.preprocess import Preprocess
    from mobilenet.weights import PretrainedCfg, save_safetensors, weights_of

    model = MobileNetV1(alpha=0.25, resolution=64, num_classes=10).eval()
    cfg = PretrainedCfg(name="small", arch_cfg=model.arch_cfg, preprocess=Preprocess(resolution=64),
                        label_set="custom")
    return save_safetensors(weights_of(model, cfg), tmp_path / "small.safetensors")


@pytest.mark.parametrize("command", ["export", "bench"])
def test_flags_that_contradict_the_weights_are_an_error(capsys, tmp_path, small_weights, command):
    # Before, --weights silently won: the file's alpha 0.25 model was exported as "0.5".
    target = [str(tmp_path / "m.onnx")] if command == "export" else []
    assert main([command, *target, "--weights", str(small_weights), "--alpha", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "--alpha 0.5 contradicts --weights" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("classes", ["5", "1001"])  # the weights have 10
def test_a_new_classifier_on_trained_weights_needs_random_init(capsys, tmp_path, small_weights, classes):
    # Before, the weights' trained head was replaced by a random one and exported as if trained.
    out = tmp_path / "m.onnx"
    assert main(["export", str(out), "--weights", str(small_weights), "--classes", classes]) == 2
    err = capsys.readouterr().err
    assert f"--classes {classes} would export an untrained" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_the_library_refuses_a_batch_that_cannot_fit(tiny_model, monkeypatch):
    from mobilenet.errors import ResourceError

    monkeypatch.setenv("MOBILENET_MEMORY_LIMIT", "64M")
    with pytest.raises(ResourceError, match="batch 4096"):
        bench.bench(tiny_model, BenchOptions(runtimes=("torch",), batch_sizes=(1, 4096), **ONLY_CELLS))


@pytest.mark.slow
@pytest.mark.skipif(not available("onnxruntime"), reason="onnxruntime not installed")
def test_default_settings_peers_are_measured_beside_ours(tiny_model):
    from mobilenet.deploy.bench.common import input_batch
    from mobilenet.deploy.bench.peers import peer_cells

    options = quick_options("onnxruntime", "openvino")
    inputs = {2: input_batch(tiny_model, 2, None)}
    cells = {cell.name: (cell, fn) for cell, fn in peer_cells(tiny_model, options, inputs, print)}
    cell, fn = cells["onnxruntime defaults"]
    assert cell.peer and fn is not None and fn()[0].shape == (2, 1000)
    if available("openvino"):
        # OpenVINO's own default precision is named, whatever this CPU makes it.
        (name,) = [n for n in cells if n.startswith("openvino defaults")]
        assert name.endswith(f"({cells[name][0].precision})")


# ------------------------------------------------------------------------------ bench --device cuda


def test_the_gpu_bench_rows_run_on_any_device():
    # bench_gpu is device-agnostic; here, without a GPU, its rows run on the CPU (optimize eager, as
    # conftest insists), which checks what it times and compares, not a GPU's speed.
    from deploy_helpers import trained_looking_model
    from mobilenet.cpu import cpu_info
    from mobilenet.deploy.bench import gpu

    model = trained_looking_model(resolution=64).eval()  # logits that differ: the agreement means something
    precisions = ("fp32", "bf16") if cpu_info().native_bf16 else ("fp32",)  # the CPU refuses emulated bf16
    report = gpu.bench_gpu(model, precisions=precisions, batch_sizes=(2,), device="cpu", seconds=0.05,
                           min_runs=2, peers=False)
    rows = {(r.precision, r.name): r for r in report.rows}
    expected = {("fp32", gpu.OPTIMIZED), ("fp32", gpu.EAGER)}
    if "bf16" in precisions:
        expected |= {("bf16", gpu.OPTIMIZED), ("bf16", gpu.EAGER), ("bf16", gpu.AUTOCAST_ROW)}
        assert rows["bf16", gpu.AUTOCAST_ROW].max_abs_diff > 0  # really ran in bf16
    assert set(rows) == expected
    assert all(r.runs >= 2 and r.median_ms > 0 and r.batch_size == 2 for r in report.rows)
    assert rows["fp32", gpu.EAGER].top1_agrees == 1.0 and rows["fp32", gpu.EAGER].max_abs_diff < 1e-4
    assert rows["fp32", gpu.OPTIMIZED].top1_agrees is not None
    assert [c["precision"] for c in report.compile] == list(precisions)
    assert json.loads(report.to_json())["rows"][0]["name"] == gpu.OPTIMIZED
    assert "fp32 b2" in report.format() and report.gpu is None


def test_the_gpu_bench_refuses_cpu_flags_and_a_missing_gpu(capsys, monkeypatch):
    import torch

    # Described either way, so that a machine with a GPU checks the same refusals.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # refused before the GPU is used
    assert main(["bench", *TINY, "--device", "cuda", "--runtime", "onnxruntime", "--threads", "2"]) == 2
    assert "--runtime, --threads apply to the CPU bench" in capsys.readouterr().err
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["bench", *TINY, "--device", "cuda"]) == 2
    assert capsys.readouterr().err == ("mobilenet bench: error: --device cuda: no CUDA GPU is available to PyTorch "
                                       "here; use --device cpu\n")


def test_the_sgemm_roof_is_the_faster_gemm_library_and_computes_the_product(monkeypatch):
    """bench's roof runs MKL's or oneDNN's GEMM, whichever is faster here (MKL runs AMD CPUs at
    half oneDNN's rate), and either multiplies; without oneDNN it is MKL's."""
    import torch

    from mobilenet.deploy import timing

    a, b = torch.randn(48, 32), torch.randn(32, 40)
    onednn = timing._onednn_matmul(a, b)
    if torch.backends.mkldnn.is_available():
        assert onednn is not None
        assert torch.allclose(onednn().to_dense(), a @ b, atol=1e-4)
    roof = timing.Sgemm(64)
    assert roof.library in roof.libraries
    assert roof.libraries == (("MKL", "oneDNN") if torch.backends.mkldnn.is_available() else ("MKL",))
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    assert timing._onednn_matmul(a, b) is None
    roof = timing.Sgemm(64)
    assert roof.library == "MKL" and roof.libraries == ("MKL",)
    roof()
