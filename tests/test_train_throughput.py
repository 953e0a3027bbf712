"""``mobilenet bench --train`` (``mobilenet.train.throughput.bench_training``): the report's ratios
and targets, the compiled fp32 NCHW row, and ``--device cuda`` (refused in one line without a GPU;
the CUDA run itself is marked ``cuda`` and skips here). The command's four rows under a disabled
compiler are tests/test_train_fast.py's ``test_bench_train_measures_the_steps``. Nothing here
asserts a speed: the tests check what was run and what the report says about it."""

from __future__ import annotations

import os

import pytest
import torch
import torch._dynamo

from mobilenet.arch import ArchConfig
from mobilenet.cli import main
from mobilenet.errors import InputError
from mobilenet.train.throughput import (
    COMPILED_FP32,
    DEFAULT,
    EAGER_FP32,
    TIMM,
    ThroughputReport,
    ThroughputRow,
    bench_training,
)

TINY = ArchConfig(alpha=0.25, resolution=32, num_classes=10)
TINY_FLAGS = ["--alpha", "0.25", "--resolution", "32", "--classes", "10", "--batch-size", "2"]
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")


def _row(name: str, images_per_s: float, compiled: bool, first_step_s: float = 0.1) -> ThroughputRow:
    settings = {"compile": compiled, "amp": "fp32", "memory_format": "nchw", "device": "cpu"}
    return ThroughputRow(name, settings, images_per_s, 1e3 / images_per_s, 0.0, 0.0, 10, first_step_s)


def _report(rows: list[ThroughputRow]) -> ThroughputReport:
    return ThroughputReport(arch=TINY.to_dict(), batch_size=1, device="cpu", threads=2,
                            cpu={"model": "a described CPU", "isa_level": "avx2", "native_bf16": False},
                            torch=torch.__version__, method="settled blocks", rows=rows)


def test_the_report_gives_each_rows_ratio_to_timm_and_names_the_target_each_ratio_answers():
    report = _report([_row(DEFAULT, 60.0, True, 61.0), _row(COMPILED_FP32, 45.0, True, 42.0),
                      _row(EAGER_FP32, 35.0, False), _row(TIMM, 30.0, False)])
    text = report.format()
    rows = {name: next(line for line in text.splitlines() if line.startswith(f"  {name} "))
            for name in (DEFAULT, COMPILED_FP32, EAGER_FP32, TIMM)}
    assert "2.00x timm" in rows[DEFAULT] and "1.50x timm" in rows[COMPILED_FP32]
    assert "1.17x timm" in rows[EAGER_FP32] and "1.00x timm" in rows[TIMM]
    assert f"{DEFAULT} / timm = 2.00x, target 2x" in text
    assert f"{COMPILED_FP32} / timm = 1.50x, target 1.5x: identical precision and layout" in text
    # Each compiled row's first step is its compile, reported; an eager row has none.
    assert f"first step of {DEFAULT} (the compile): 61.0 s" in text
    assert f"first step of {COMPILED_FP32} (the compile): 42.0 s" in text
    assert "first step of ours, eager" not in text
    assert "ran eager" not in text
    # A row meant to compile that ran eager is not read as the compiled step.
    fell_back = _report([_row(COMPILED_FP32, 45.0, False), _row(TIMM, 30.0, False)]).format()
    assert f"{COMPILED_FP32} / timm = 1.50x, target 1.5x" in fell_back and "this row ran eager" in fell_back
    # Without timm there is nothing to hold a target against.
    assert "target" not in _report([_row(DEFAULT, 60.0, False), _row(EAGER_FP32, 35.0, False)]).format()
    # A machine whose pace moved while the steps were timed is said to have moved.
    assert "pace moved" not in text
    moving = _report([_row(DEFAULT, 60.0, True), _row(TIMM, 30.0, False)])
    moving.machine_drift = 1.4
    assert "warning: the machine's pace moved 1.40x while the steps were timed" in moving.format()


def test_cuda_is_refused_in_one_line_where_there_is_no_gpu(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    said = "--device cuda: no CUDA GPU is available to PyTorch here; use --device cpu"
    with pytest.raises(InputError) as refused:
        bench_training(TINY, batch_size=2, device="cuda", peers=False)
    assert str(refused.value) == "device='cuda': no CUDA GPU is available to PyTorch here; use device='cpu'"
    assert main(["bench", "--train", "--device", "cuda", *TINY_FLAGS]) == 2
    assert capsys.readouterr().err == f"mobilenet bench: error: {said}\n"
    # The inference bench on the GPU (bench --device cuda) is refused the same way, never run on the CPU.
    assert main(["bench", "--device", "cuda", *TINY_FLAGS]) == 2
    assert capsys.readouterr().err == f"mobilenet bench: error: {said}\n"


@pytest.mark.compiler
@pytest.mark.compiled
@pytest.mark.slow
def test_the_compiled_fp32_nchw_row_compiles_and_reports_its_compile():
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    threads = torch.get_num_threads()
    # compile=False keeps the default row eager, so that this test pays for one compile only.
    report = bench_training(TINY, batch_size=2, threads=1, seconds=0.01, min_runs=2, peers=False, compile=False)
    assert torch.get_num_threads() == threads  # the measurement's thread count is put back
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # inductor really compiled a graph
    rows = {row.name: row for row in report.rows}
    assert list(rows) == [DEFAULT, COMPILED_FP32, EAGER_FP32]
    compiled = rows[COMPILED_FP32].settings
    assert (compiled["compile"], compiled["amp"], compiled["memory_format"]) == (True, "fp32", "nchw")
    assert rows[DEFAULT].settings["compile"] is False and report.compile_seconds is None
    assert not any("ran eager" in note for note in report.notes), report.notes
    assert f"first step of {COMPILED_FP32} (the compile)" in report.format()
    assert report.omp_wait_policy == os.environ.get("OMP_WAIT_POLICY")  # recorded: it moves the figures
    assert report.machine_drift >= 1.0  # recorded: how steady the machine was


# --------------------------------------------------------------------------------------------
# CUDA: this test has not run on a GPU; `mobilenet bench --train --device cuda` itself ran on an H200
# (docs/training.md).


@pytest.mark.cuda
@pytest.mark.compiled
@pytest.mark.slow
@needs_cuda
def test_bench_training_runs_the_rows_on_cuda():
    from torch.utils._triton import has_triton

    pytest.importorskip("timm")
    benchmark = torch.backends.cudnn.benchmark
    report = bench_training(TINY, batch_size=2, device="cuda", seconds=0.05, min_runs=2)
    assert torch.backends.cudnn.benchmark == benchmark  # turned on for the measurement only
    assert report.device == "cuda" and report.gpu == torch.cuda.get_device_name(0)
    rows = {row.name: row.settings for row in report.rows}
    assert list(rows) == [DEFAULT, COMPILED_FP32, EAGER_FP32, TIMM]
    assert all(settings["device"].startswith("cuda") for settings in rows.values())
    native_bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
    assert rows[DEFAULT]["amp"] == ("bf16" if native_bf16 else "fp32")
    assert rows[DEFAULT]["memory_format"] == "channels_last"
    assert (rows[COMPILED_FP32]["amp"], rows[COMPILED_FP32]["memory_format"]) == ("fp32", "nchw")
    assert rows[DEFAULT]["compile"] == rows[COMPILED_FP32]["compile"] == has_triton()
    assert all(row.steps >= 2 for row in report.rows)
    assert "GPU: " in report.format()
