"""The latency model: settled-block timing, the roofline, calibration, its cache, ``choose``."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from mobilenet import cost
from mobilenet.arch import ArchConfig
from mobilenet.deploy.timing import time_interleaved
from mobilenet.latency import KERNELS, Calibration, CorruptCalibration, Roofline, predict_with
from mobilenet.latency.calibrate import Timed, fit
from mobilenet.latency.model import layer_work
from mobilenet.latency.probes import default_plan


def test_interleaved_timing_runs_each_candidate_in_settled_blocks_in_shuffled_rounds() -> None:
    """The mechanism that keeps one runtime's spinning pool off its neighbour's clock: after the
    warm-up, calls come in contiguous blocks per candidate (untimed settling calls, then the timed
    ones), every candidate once per round, in an order that changes between rounds. (A block of
    1e-6 s is one timed call whatever the machine's speed, so the pattern is exact.)"""
    calls: list[str] = []
    runs = [lambda name=name: calls.append(name) for name in "abc"]
    samples = time_interleaved(runs, seconds=0, min_runs=20, warmup=2, block_s=1e-6, settle_calls=3, settle_s=0,
                               seed=1)
    warmup = 3 * len(runs)  # 2 warm-up calls and 1 sizing call each, candidate after candidate
    assert calls[:warmup] == ["a"] * 3 + ["b"] * 3 + ["c"] * 3
    body = calls[warmup:]
    blocks = [body[i:i + 4] for i in range(0, len(body), 4)]  # 3 settling calls + 1 timed call
    assert all(len(set(block)) == 1 and len(block) == 4 for block in blocks), "contiguous settled blocks"
    rounds = [tuple(block[0] for block in blocks[i:i + 3]) for i in range(0, len(blocks), 3)]
    assert all(sorted(r) == ["a", "b", "c"] for r in rounds), "every candidate runs once per round"
    assert len(set(rounds)) > 1, "the order is shuffled between rounds"
    assert [len(s) for s in samples] == [len(rounds)] * 3 == [20] * 3, "one timed call per block"


# --- the pure model --------------------------------------------------------------------------

def fixed_calibration(runtime: str = "onnxruntime", precision: str = "fp32", **changes: object) -> Calibration:
    """Constants of an imaginary machine: every kernel at 100 G mult-adds/s and 20 GB/s (ridge
    point 5 mult-adds per byte), 2 µs per layer, 10 µs per call."""
    roof = Roofline(macs_per_s=100e9, bytes_per_s=20e9, overhead_s=2e-6)
    values: dict[str, object] = {
        "runtime": runtime, "precision": precision, "batch_size": 1, "threads": 2,
        "kernels": dict.fromkeys(KERNELS, roof), "call_s": 10e-6, "feed_bytes_per_s": math.inf,
    }
    values.update(changes)
    return Calibration(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(("layer", "mult_adds", "bytes_moved", "bound"), [
    # 3x3 depthwise on 32 channels at 112x112: 9 mult-adds per output, 4 bytes in and out per element.
    ("blocks.0.dw", 9 * 32 * 112 * 112, 2 * 32 * 112 * 112 * 4 + 9 * 32 * 4, "memory"),
    # The 64 -> 128 pointwise conv at 56x56: 64 mult-adds per output element.
    ("blocks.1.pw", 64 * 128 * 56 * 56, (64 + 128) * 56 * 56 * 4 + 64 * 128 * 4, "compute"),
    # The last pointwise conv, 1024 -> 1024 at 7x7: its 4 MiB of weights dominate the bytes.
    ("blocks.12.pw", 1024 * 1024 * 7 * 7, 2 * 1024 * 7 * 7 * 4 + 1024 * 1024 * 4, "compute"),
    # The classifier reads a million weights for a million mult-adds.
    ("classifier", 1024 * 1000, (1024 + 1000) * 4 + 1024 * 1000 * 4, "memory"),
])
def test_bound_follows_the_hand_computed_intensity_against_the_ridge_point(
    layer: str, mult_adds: int, bytes_moved: int, bound: str,
) -> None:
    prediction = predict_with(fixed_calibration(), ArchConfig(), 1)
    got = prediction.layer(layer)
    assert got.mult_adds == mult_adds and got.bytes == bytes_moved
    assert got.intensity == pytest.approx(mult_adds / bytes_moved)
    assert got.ridge == pytest.approx(5.0)
    assert got.bound == bound == ("compute" if mult_adds / bytes_moved >= 5 else "memory")
    roof = max(mult_adds / 100e9, bytes_moved / 20e9)
    assert got.predicted_ms == pytest.approx((2e-6 + roof) * 1e3)


def test_predictions_grow_with_alpha_and_resolution() -> None:
    calibration = fixed_calibration()
    by_alpha = [predict_with(calibration, ArchConfig(alpha=a)).total_ms for a in (0.25, 0.35, 0.5, 0.75, 1.0, 1.3)]
    by_size = [predict_with(calibration, ArchConfig(resolution=r)).total_ms for r in (96, 128, 160, 192, 224, 256)]
    assert by_alpha == sorted(by_alpha) and len(set(by_alpha)) == len(by_alpha)
    assert by_size == sorted(by_size) and len(set(by_size)) == len(by_size)


def test_a_prediction_adds_up_and_names_every_layer() -> None:
    prediction = predict_with(fixed_calibration(), ArchConfig(alpha=0.5, resolution=160), 1)
    assert [x.name for x in prediction.layers] == [x.name for x in cost.network_cost(prediction.arch_cfg).layers]
    assert prediction.total_ms == pytest.approx(prediction.call_ms + sum(x.predicted_ms for x in prediction.layers))
    assert sum(prediction.shares().values()) == pytest.approx(1.0)
    data = prediction.to_dict()
    assert data["predicted_ms"] == prediction.total_ms
    assert all({"predicted_ms", "bound"} <= set(x) for x in data["layers"])


def test_a_fixed_batch_runtime_runs_a_batch_as_single_image_calls() -> None:
    calibration = fixed_calibration("litert", fixed_batch=True)
    one, eight = (predict_with(calibration, ArchConfig(), b) for b in (1, 8))
    assert eight.total_ms == pytest.approx(8 * one.total_ms)


def test_lane_padding_charges_a_9_channel_layer_as_16() -> None:
    layer = cost.network_cost(ArchConfig(alpha=0.3)).layer("blocks.0.dw")  # 9 channels
    assert layer.in_shape[0] == 9
    assert layer_work(layer, 1, 4, lanes=16).mult_adds == pytest.approx(layer.mult_adds * 16 / 9)
    assert layer_work(layer, 1, 4, lanes=1).mult_adds == layer.mult_adds


def test_the_pure_model_imports_without_torch() -> None:
    code = ("import sys; sys.modules['torch'] = None\n"
            "import mobilenet.latency, mobilenet.latency.model as m\n"
            "from mobilenet.arch import ArchConfig\n"
            "roof = m.Roofline(1e11, 2e10, 1e-6)\n"
            "c = m.Calibration('onnxruntime', 'fp32', 1, None, dict.fromkeys(m.KERNELS, roof), 1e-5, float('inf'))\n"
            "print(round(m.predict_with(c, ArchConfig()).total_ms, 3))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert float(out.stdout) > 0


def test_a_calibration_round_trips_and_a_damaged_one_is_refused() -> None:
    calibration = fixed_calibration(kernels={**fixed_calibration().kernels, "fc": Roofline(5e9, math.inf, 0.0, 8)})
    assert Calibration.from_dict(json.loads(json.dumps(calibration.to_dict()))) == calibration
    for damage in ({}, [], {"model_version": 1}, {**calibration.to_dict(), "kernels": {"stem": {}}},
                   {**calibration.to_dict(), "call_s": "fast"}, {**calibration.to_dict(), "model_version": -1}):
        with pytest.raises(CorruptCalibration):
            Calibration.from_dict(damage)


# --- the fit ---------------------------------------------------------------------------------

def test_the_fit_recovers_the_constants_that_made_the_measurements() -> None:
    """Probe times made by known rooflines (the call's own cost added) are fitted back to them."""
    truth = {"depthwise": Roofline(20e9, 15e9, 3e-6, lanes=16), "pointwise": Roofline(150e9, 25e9, 1e-6),
             "stem": Roofline(40e9, 10e9, 2e-6), "conv": Roofline(120e9, 30e9, 1e-6, lanes=8),
             "pool": Roofline(math.inf, 12e9, 1e-6), "fc": Roofline(30e9, 40e9, 0.5e-6)}
    call_s = 8e-6
    timed = []
    for probe in default_plan():
        for size in probe.sizes:
            layers = probe.layers(size)
            if probe.kernel == "call":
                seconds = call_s
            else:
                roof = truth[probe.kernel]
                seconds = call_s + sum(roof.seconds(layer_work(x, 1, 4, roof.lanes)) for x in layers)
            timed.append(Timed(probe, size, seconds))
    fitted = fit("onnxruntime", "fp32", 1, 2, timed)
    assert fitted.call_s == pytest.approx(call_s)
    for kernel, roof in truth.items():
        got = fitted.kernels[kernel]
        assert got.lanes == roof.lanes, kernel
        assert fitted.fit["rmspe"][kernel] < 1e-6, kernel
        for probe in default_plan():
            if probe.kernel == kernel:  # the same times, whatever constants give them
                for size in probe.sizes:
                    work = layer_work(probe.layers(size)[0], 1, 4, roof.lanes)
                    assert got.seconds(work) == pytest.approx(roof.seconds(work), rel=1e-6)


def test_a_kernel_left_unmeasured_borrows_from_the_most_similar_one() -> None:
    timed = [Timed(p, s, 1e-4) for p in default_plan() if p.kernel in ("call", "pointwise") for s in p.sizes]
    fitted = fit("onnxruntime", "fp32", 1, None, timed)
    assert fitted.kernels["conv"] == fitted.kernels["pointwise"] == fitted.kernels["fc"]
