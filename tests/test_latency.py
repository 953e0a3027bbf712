"""The latency model: settled-block timing, the roofline, calibration, its cache, ``choose``."""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import os
import pickle
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from described_cpus import ZEN3
from mobilenet import cost, latency
from mobilenet.arch import ArchConfig
from mobilenet.cli import main
from mobilenet.deploy.optional import MissingRuntimeError
from mobilenet.deploy.timing import Block, Rounds, time_interleaved, time_rounds
from mobilenet.errors import InputError, MobileNetError, command_line_spelling
from mobilenet.latency import KERNELS, Calibration, CorruptCalibration, Roofline, cache, choose, predict_with
from mobilenet.latency.backends import BACKENDS
from mobilenet.latency.calibrate import (
    DRIFTING,
    NOISY_FIT,
    Timed,
    calibrate,
    calibrate_beside,
    drifting_machine_warning,
    fit,
    noisy_fit_warning,
)
from mobilenet.latency.model import MODEL_VERSION, block_speedups, layer_work
from mobilenet.latency.probes import default_plan, quick_networks, quick_plan
from mobilenet.latency.ranking import (
    MARGIN,
    MAX_MARGIN,
    Candidate,
    candidates,
    choose_from,
    margin_for,
    measure_architectures,
)
from mobilenet.weights import REGISTRY
from mobilenet.weights.fetch import CACHE_ENV
from test_allocator import assert_faulted_before_and_not_after, only_glibc, page_faults_around


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


def test_the_machines_pace_is_read_second_by_second_whatever_each_call_costs() -> None:
    """Two calls, one five times the other, sharing every second; in the third second both run
    1.5x slower. Each block is read against its own call's median, so the pace is 1.0 in every
    second but that one, whichever call's blocks a second happens to hold; a second of fewer
    than five blocks is not read."""
    def block(second: float, call: int, slower: float = 1.0) -> Block:
        return Block(second, call, (1e-3, 5e-3)[call] * slower)

    steady = [block(t + i / 10, i % 2) for t in range(6) for i in range(6)]
    assert Rounds([], steady).paces() == [1.0] * 6 and Rounds([], steady).drift() == 1.0
    spell = [block(t + i / 10, i % 2, 1.5 if t == 2 else 1.0) for t in range(6) for i in range(6)]
    assert Rounds([], spell).paces() == [1.0, 1.0, 1.5, 1.0, 1.0, 1.0]
    assert Rounds([], spell).drift() == pytest.approx(1.5)
    lopsided = [block(t + i / 10, int(t < 3 and i < 5), 1.0) for t in range(6) for i in range(6)]
    assert Rounds([], lopsided).drift() == 1.0, "seconds holding mostly the dearer call are not slower"
    sparse = [*steady, block(9.0, 0, 3.0), block(9.5, 1, 3.0)]
    assert Rounds([], sparse).drift() == 1.0, "two blocks are no reading"
    # Blocks of a few seconds each (training steps): the span read grows to hold five of them.
    long_blocks = [block(3.0 * i, i % 2, 1.5 if 30 <= 3.0 * i < 45 else 1.0) for i in range(40)]
    assert Rounds([], long_blocks).window_s() == pytest.approx(15.0)
    assert Rounds([], long_blocks).drift() == pytest.approx(1.5), "seconds would hold one block each: no reading"


def test_a_call_that_met_more_of_a_slow_spell_is_read_at_the_typical_pace() -> None:
    """Three calls (1, 2 and 4 ms) share eight seconds, three blocks each a second; in seconds 2
    and 3 everything runs 1.6x slower, and the 2 ms call happens to run five blocks only, three of
    them in those seconds, so its plain median is a slow one. Read at the typical
    pace, each call's median is its own time; a block in a second too sparse to read counts as
    typical."""
    typical = (1e-3, 2e-3, 4e-3)

    def block(t: float, call: int) -> Block:
        return Block(t, call, typical[call] * (1.6 if 2 <= t < 4 else 1.0))

    blocks = [block(second + i / 10, call) for second in range(8) for call in (0, 2) for i in range(3)]
    blocks += [block(t, 1) for t in (1.5, 2.5, 2.8, 3.5, 5.5)]
    blocks.sort(key=lambda b: b.start_s)
    rounds = Rounds([[], [], []], blocks)
    plain = [float(np.median([b.median_s for b in blocks if b.call == call])) for call in range(3)]
    assert plain[1] == pytest.approx(1.6 * typical[1]), "the lopsided call's plain median is a slow one"
    assert rounds.paced_medians() == pytest.approx(list(typical))
    # A fourth call, timed once after the rest, alone in its second: that block is read as is.
    sparse = Rounds([[], [], [], []], [*blocks, Block(8.5, 3, 5e-3)])
    assert sparse.paced_medians() == pytest.approx([*typical, 5e-3])


def test_timed_rounds_see_a_slow_spell_of_the_machine() -> None:
    """Real interleaved timing of two calls that spin 0.5 and 1 ms, each twice as long between
    0.3 and 0.5 s after the start: the paces, read over 0.1 s, show the spell and nothing
    else."""
    began = time.perf_counter()

    def spin(ms: float) -> Callable[[], None]:
        def call() -> None:
            slower = 2.0 if 0.3 <= time.perf_counter() - began < 0.5 else 1.0
            end = time.perf_counter() + ms * slower / 1e3
            while time.perf_counter() < end:
                pass
        return call

    rounds = time_rounds([spin(0.5), spin(1.0)], seconds=0.45, min_runs=5, warmup=1, block_s=0.005,
                         settle_calls=1, settle_s=0)
    paces = rounds.paces(window_s=0.1)
    assert rounds.drift(window_s=0.1) > 1.6, paces
    assert min(paces) == pytest.approx(1.0, abs=0.2) and float(np.median(paces)) == pytest.approx(1.0, abs=0.2), paces
    assert sum(b.call == 0 for b in rounds.blocks) == sum(b.call == 1 for b in rounds.blocks), "a block each a round"
    assert all(b.start_s <= later.start_s for b, later in zip(rounds.blocks, rounds.blocks[1:])), "in the order run"


def test_a_calibration_on_a_moving_machine_says_so_when_measured_and_at_every_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
) -> None:
    def paced(drift: float | None) -> Calibration:
        return fixed_calibration(threads=1, fit={} if drift is None else {"machine_drift": drift})

    warning = drifting_machine_warning(paced(1.4))
    assert warning and "1.40x" in warning and "remeasure=True" in warning
    with command_line_spelling({"remeasure": "--recalibrate"}):
        assert "--recalibrate" in (drifting_machine_warning(paced(1.4)) or "")
    assert drifting_machine_warning(paced(DRIFTING)) is None and drifting_machine_warning(paced(1.05)) is None
    assert drifting_machine_warning(paced(None)) is None, "cached before the pace was recorded: nothing to judge"

    monkeypatch.setenv("MOBILENET_CACHE", str(tmp_path))

    def moving(runtime: str, precision: str, *, batch_size: int, threads: int | None, log: object) -> Calibration:
        return paced(1.4)

    cache.calibrated("onnxruntime", threads=1, measure=moving, log=print)
    monkeypatch.setattr(cache, "_WARNED", set())  # a new process
    lines: list[str] = []
    found = cache.calibrated("onnxruntime", threads=1, measure=moving, log=lines.append)
    assert found.machine_drift == 1.4 and len(lines) == 1 and "pace moved 1.40x" in lines[0]
    monkeypatch.setattr(cache, "_WARNED", set())
    assert main(["cost", "--predict", "onnxruntime", "--threads", "1", "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["latency"]["calibration_machine_drift"] == 1.4
    assert "pace moved 1.40x" in err and "--recalibrate" in err, "named as the command's user types it"


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
    # The rates it attains: just under the roof that binds it (the 2 µs overhead), under the other.
    binding, other = ((got.attained_macs_per_s / 100e9, got.attained_bytes_per_s / 20e9) if bound == "compute"
                      else (got.attained_bytes_per_s / 20e9, got.attained_macs_per_s / 100e9))
    assert 0.5 < binding < 1 and other < binding
    assert got.to_dict()["ridge"] == pytest.approx(5.0)


def test_a_kernel_seen_bound_by_one_roof_names_it_and_has_no_ridge_to_print(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
) -> None:
    """Every stride-1 depthwise probe moves about 8 bytes for 9 mult-adds, so a calibration may
    find only one roof: the ridge is then no number (not the 0 that rate / inf gives), and the
    reason a block falls short of its savings is the rate its depthwise conv attains."""
    kernels = dict(fixed_calibration().kernels)
    kernels["depthwise"] = Roofline(macs_per_s=25e9, bytes_per_s=math.inf, overhead_s=2e-6)
    kernels["pointwise"] = Roofline(macs_per_s=100e9, bytes_per_s=math.inf, overhead_s=2e-6)
    constants = fixed_calibration(kernels=kernels)
    dw = predict_with(constants, ArchConfig()).layer("blocks.2.dw")
    assert dw.bound == "compute" and not dw.roofs_seen and dw.to_dict()["ridge"] is None
    assert 20e9 < dw.attained_macs_per_s < 25e9
    row = block_speedups(constants)[2]
    assert row.speedup < row.savings
    assert "it computes at 2" in row.reason() and "the pointwise conv at 9" in row.reason()
    monkeypatch.setattr(latency, "calibrated", lambda *args, **kwargs: constants)
    assert main(["cost", "--predict", "onnxruntime"]) == 0
    prediction_table = capsys.readouterr().out.split("Predicted on this machine")[1]
    line = next(x for x in prediction_table.splitlines() if x.startswith("blocks.2.dw "))
    assert line.split()[2:6] == ["1.12", "-", "compute", f"{dw.attained_macs_per_s / 1e9:.3g}"]


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


def test_a_fixed_batch_runtimes_batch_keeps_every_field_of_its_layers() -> None:
    """LiteRT's batch of 8 is 8 calls of one image: each layer's work, bytes, time and the bytes its
    activations spill beyond the cache are 8 of one call's (the spill was dropped, 0 at batch 8),
    and what is per call (intensity, ridge, bound) stays as it is."""
    calibration = fixed_calibration("litert", fixed_batch=True, layer_cache_bytes=1e5)
    cfg = ArchConfig(alpha=0.25, resolution=128)
    one, eight = (predict_with(calibration, cfg, b) for b in (1, 8))
    scaled = {"mult_adds", "bytes", "predicted_ms", "spilled_bytes"}
    assert any(x.spilled_bytes > 0 for x in one.layers), "(the cache is small enough to spill)"
    for a, b in zip(one.layers, eight.layers, strict=True):
        for f in dataclasses.fields(a):
            want = getattr(a, f.name) * 8 if f.name in scaled else getattr(a, f.name)
            assert getattr(b, f.name) == pytest.approx(want), (a.name, f.name)


def test_compare_predicts_a_fixed_batch_runtimes_batch_as_predict_does(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
) -> None:
    """``compare --predict litert --batch-size 8`` printed one image's milliseconds where ``cost
    --predict`` gave the batch's: both now go through one computation of a batch."""
    calibration = fixed_calibration("litert", fixed_batch=True, layer_cache_bytes=1e5)
    cfg = ArchConfig(alpha=0.25, resolution=128)
    for batch in (1, 8):
        layers = {x.name: x for x in predict_with(calibration, cfg, batch).layers}
        for row in block_speedups(calibration, cfg, batch):
            for x in (row.depthwise, row.pointwise):
                assert x == layers[x.name], (batch, x.name)
    monkeypatch.setattr(latency, "calibrated", lambda *args, **kwargs: calibration)
    separable = {}
    for batch in (1, 8):
        assert main(["compare", "--alpha", "0.25", "--resolution", "128", "--predict", "litert",
                     "--batch-size", str(batch), "--json"]) == 0
        separable[batch] = [b["predicted"]["separable_ms"] for b in json.loads(capsys.readouterr().out)["blocks"]]
    assert separable[8] == pytest.approx([8 * ms for ms in separable[1]])


def test_lane_padding_charges_a_9_channel_layer_as_16() -> None:
    layer = cost.network_cost(ArchConfig(alpha=0.3)).layer("blocks.0.dw")  # 9 channels
    assert layer.in_shape[0] == 9
    assert layer_work(layer, 1, 4, lanes=16).mult_adds == pytest.approx(layer.mult_adds * 16 / 9)
    assert layer_work(layer, 1, 4, lanes=1).mult_adds == layer.mult_adds


def test_positions_in_blocks_charge_a_7x7_map_as_64_positions_per_image() -> None:
    """ONNX Runtime's NCHW conv (a dense conv off the NCHWc block) is a matrix product over each
    image's output positions, computed in whole blocks of 16: a 7x7 map costs as 64 positions, an
    8x8 one as it is, a batch of two as two padded images (not 98 positions padded once)."""
    network = cost.network_cost(ArchConfig(alpha=1.1, resolution=112))
    at_7, at_4 = network.layer("blocks.7.pw"), network.layer("blocks.12.pw")
    assert at_7.out_shape[1:] == (7, 7) and at_4.out_shape[1:] == (4, 4)
    assert layer_work(at_7, 1, 4, position_block=16).mult_adds == pytest.approx(at_7.mult_adds * 64 / 49)
    assert layer_work(at_4, 1, 4, position_block=16).mult_adds == at_4.mult_adds
    batch = cost.network_cost(ArchConfig(alpha=1.1, resolution=112), batch_size=2).layer("blocks.7.pw")
    assert layer_work(batch, 2, 4, position_block=16).mult_adds == pytest.approx(2 * batch.mult_adds * 64 / 49)
    both = layer_work(at_7, 1, 4, lanes=16, position_block=16).mult_adds  # 563 channels in and out
    assert both == pytest.approx(at_7.mult_adds * 64 / 49 * (576 / 563) ** 2)
    pool = network.layer("pool")
    assert layer_work(pool, 1, 4, position_block=16).mult_adds == pool.mult_adds, "no positions of its own"


def test_the_fit_learns_a_position_block_only_where_the_runtime_declares_it() -> None:
    """Probes timed as 16-position blocks (as MLAS's NCHW conv runs) fit to the same rate at every
    map once the runtime's block is declared, and the 7x7 layer of a network the probes never
    saw is predicted as it ran; without the block, the fit misses the odd maps. ONNX Runtime
    declares it at fp32, for its dense kernels off the NCHWc block alone."""
    from mobilenet.latency.backends.ort import OnnxRuntimeBackend
    from mobilenet.latency.fit import Measurement, fit_kernels

    truth = Roofline(40e9, math.inf, 1e-6, position_block=16)
    kernel = "pointwise_unblocked"
    measurements = []
    for resolution in (128, 160, 224):  # maps 4 to 14 at strides 16 and 32: 4, 5, 7, 8, 10, 14
        network = cost.network_cost(ArchConfig(alpha=0.7, resolution=resolution))
        for name in ("blocks.6.pw", "blocks.12.pw"):
            layer = network.layer(name)
            measurements.append(Measurement(kernel, (layer,), truth.seconds(layer_work(layer, 1, 4,
                                                                                         position_block=16))))
    declared = fit_kernels(measurements, 1, 4, position_blocks={kernel: 16})
    undeclared = fit_kernels(measurements, 1, 4)
    assert declared.kernels[kernel].position_block == 16 and declared.rmspe[kernel] < 1e-6
    assert undeclared.kernels[kernel].position_block == 1 and undeclared.rmspe[kernel] > 0.05
    assert declared.kernels["conv_unblocked"].position_block == 1, "a stand-in keeps the runtime's own block"
    held_out = cost.network_cost(ArchConfig(alpha=1.1, resolution=112)).layer("blocks.7.pw")  # 7x7, 563 channels
    ran = truth.seconds(layer_work(held_out, 1, 4, position_block=16))
    assert declared.kernels[kernel].seconds(layer_work(held_out, 1, 4, position_block=16)) == pytest.approx(ran)

    assert OnnxRuntimeBackend("fp32", 1).position_blocks == dict.fromkeys(
        ("pointwise_unblocked", "conv_unblocked", "stem_unblocked"), 16)
    assert OnnxRuntimeBackend("int8", 1).position_blocks == {}


def test_a_kernels_lane_is_the_best_of_its_rivals_not_the_first_tried() -> None:
    """Lane widths are rival guesses of one fact: a lane 8 that beats lane 1 by 20% wins over a
    lane 4 that beat it by 15%, in whatever order they come; a wider lane that gains less than a
    tenth over lane 1 is not taken, and the cost per position comes only on top of a clear gain."""
    from mobilenet.latency.fit import simplest_good_fit

    def fits(errors: dict[tuple[bool, int], float]) -> dict[tuple[bool, bool, int, bool, bool], tuple[Roofline, float]]:
        every = {(p, w): 0.5 for p in (False, True) for w in (1, 4, 8, 16)} | errors
        return {(p, False, w, False, False): (Roofline(1e11, 1e10, 0.0, w), e) for (p, w), e in every.items()}

    chosen = simplest_good_fit(fits({(False, 1): 0.10, (False, 4): 0.085, (False, 8): 0.08}))
    assert (chosen[0].lanes, chosen[1]) == (8, 0.08)
    reordered = fits({(False, 1): 0.10, (False, 4): 0.085, (False, 8): 0.08})
    assert simplest_good_fit(dict(reversed(reordered.items())))[0].lanes == 8
    assert simplest_good_fit(fits({(False, 1): 0.10, (False, 8): 0.095}))[0].lanes == 1  # not a tenth better
    with_pixel = fits({(False, 1): 0.10, (False, 8): 0.05, (True, 8): 0.04, (True, 1): 0.06})
    assert simplest_good_fit(with_pixel)[1] == 0.04  # 0.05 -> 0.04 is a fifth better
    nearly = (Roofline(1e11, 1e10, 0.0, 8), 0.048)
    assert simplest_good_fit(with_pixel | {(True, False, 8, False, False): nearly})[1] == 0.05
    decided = {key: value for key, value in fits({(False, 16): 0.2, (True, 16): 0.1}).items() if key[2] == 16}
    assert simplest_good_fit(decided)[0].lanes == 16 and simplest_good_fit(decided)[1] == 0.1, "a decided lane"


def test_a_lane_decided_beforehand_is_kept_and_the_other_kernels_still_choose() -> None:
    from mobilenet.latency.fit import Measurement, fit_kernels

    network = cost.network_cost(ArchConfig(alpha=0.3))  # widths 9, 19, 38, 76: far from whole 16s
    # Probes that took exactly their mult-adds on 1 lane at 10 GMAC/s, plus a fixed 1 µs.
    measurements = [Measurement(kind, (layer,) * n, 1e-6 + n * layer.mult_adds / 1e10)
                    for kind, short in (("pointwise", "pw"), ("depthwise", "dw")) for block in (0, 1, 2, 4)
                    for layer in [network.layer(f"blocks.{block}.{short}")] for n in (1, 2)]
    chosen = fit_kernels(measurements, 1, 4)
    assert chosen.kernels["pointwise"].lanes == 1 and chosen.kernels["depthwise"].lanes == 1
    decided = fit_kernels(measurements, 1, 4, lanes={"pointwise": 16})
    assert decided.kernels["pointwise"].lanes == 16
    assert decided.kernels["depthwise"] == chosen.kernels["depthwise"]


def test_the_fits_least_squares_keeps_every_unknown_non_negative_at_the_best_such_error() -> None:
    """The oracle: every set of free unknowns solved without constraint, the best feasible one."""
    import itertools

    from mobilenet.latency.fit import _nonnegative_least_squares

    rng = np.random.default_rng(0)
    design = rng.uniform(0.1, 1.0, size=(12, 4))
    design[:, 3] = design[:, 0] + 0.05 * rng.standard_normal(12)  # nearly collinear: LS would go negative
    t = design @ np.array([1.0, 0.0, 2.0, 0.5]) * rng.uniform(0.9, 1.1, 12)
    theta = _nonnegative_least_squares(design, t)
    assert (theta >= 0).all()

    def error(x: np.ndarray) -> float:
        return float(np.sum(((design @ x - t) / t) ** 2))

    unconstrained, *_ = np.linalg.lstsq(design / t[:, None], np.ones(12), rcond=None)
    assert (unconstrained < 0).any()  # the constraint binds here
    best = math.inf
    for size in range(1, 5):
        for free in itertools.combinations(range(4), size):
            x, *_ = np.linalg.lstsq(design[:, free] / t[:, None], np.ones(12), rcond=None)
            if (x >= 0).all():
                full = np.zeros(4)
                full[list(free)] = x
                best = min(best, error(full))
    assert error(theta) == pytest.approx(best, rel=1e-9)


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
    calibration = fixed_calibration(kernels={**fixed_calibration().kernels, "fc": Roofline(5e9, math.inf, 0.0, 8),
                                             "pointwise": Roofline(2e11, 8e9, 1e-6, pixel_s=3e-8)},
                                    channel_blocks={"pointwise": 16, "depthwise": 4},
                                    in_network={"depthwise": 1.3, "pointwise": 0.9})
    assert Calibration.from_dict(json.loads(json.dumps(calibration.to_dict()))) == calibration
    for damage in ({}, [], {"model_version": 1}, {**calibration.to_dict(), "kernels": {"stem": {}}},
                   {**calibration.to_dict(), "call_s": "fast"}, {**calibration.to_dict(), "model_version": -1},
                   {**calibration.to_dict(), "in_network": {"depthwise": 0.0}},
                   {**calibration.to_dict(), "in_network": {"no such kernel": 1.0}},
                   {**calibration.to_dict(), "channel_blocks": {"pointwise": 0}},
                   {**calibration.to_dict(), "channel_blocks": {"pool": 4}},
                   {**calibration.to_dict(), "kernels": {**calibration.to_dict()["kernels"],
                                                         "pointwise": {**Roofline(1e9, 1e9, 0.0).to_dict(),
                                                                       "pixel_s": -1e-9}}}):
        with pytest.raises(CorruptCalibration):
            Calibration.from_dict(damage)


def test_a_calibration_whose_fit_or_key_is_not_a_mapping_is_refused_and_measured_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An entry whose ``fit["in_network"]`` is a number read back, then ``network_error`` raised
    AttributeError at its first use: the cache promises a damaged entry is measured again, never
    an error. A list of pairs (which dict() would take) is no mapping either."""
    good = fixed_calibration(fit={"in_network": {"rmspe_after": 0.05}}).to_dict()
    for damage in ({"fit": {"in_network": 0.05}}, {"fit": {"in_network": [1]}},
                   {"fit": [["in_network", {"rmspe_after": 0.05}]]}, {"key": [["runtime", "onnxruntime"]]}):
        with pytest.raises(CorruptCalibration):
            Calibration.from_dict({**good, **damage})
    monkeypatch.setenv("MOBILENET_CACHE", str(tmp_path))
    calls: list[tuple[str, str, int, int | None]] = []
    cache.calibrated("onnxruntime", measure=fake_measure(calls), log=print)
    path = tmp_path / cache.CACHE_FILE
    stored = json.loads(path.read_text())
    (key,) = stored
    stored[key]["fit"] = {"in_network": 0.05}
    path.write_text(json.dumps(stored))
    lines: list[str] = []
    again = cache.calibrated("onnxruntime", measure=fake_measure(calls), log=lines.append)
    assert len(calls) == 2 and len(lines) == 1 and "damaged" in lines[0] and "measuring again" in lines[0]
    assert again.network_error is None


# --- the fit ---------------------------------------------------------------------------------

def test_the_fit_recovers_the_constants_that_made_the_measurements() -> None:
    """Probe times made by known rooflines (the call's own cost added) are fitted back to them."""
    truth = {"depthwise": Roofline(20e9, 15e9, 3e-6, lanes=16), "depthwise_s2": Roofline(15e9, 12e9, 9e-6),
             "pointwise": Roofline(150e9, 25e9, 1e-6),
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


def test_a_networks_call_is_timed_with_its_inputs_conversion_and_fitted_so() -> None:
    """LiteRT's predictor converts the image in Python before each call (2 GB/s here), and the
    calibration times a network's call with that conversion, as the predictor makes it: the fit
    takes the conversion off the networks as it adds it to a prediction, so the networks' factors
    stay at 1 and an α it never saw is predicted as the machine runs it. Left in the networks'
    time, the conversion would be taken for slower layers."""
    from mobilenet.latency.backends.base import Cell
    from mobilenet.latency.calibrate import as_called
    from mobilenet.latency.model import input_bytes
    from mobilenet.latency.probes import default_networks

    truth = fixed_calibration("litert", fixed_batch=True, feed_bytes_per_s=2e9)
    roof = truth.kernels["pointwise"]
    timed = []
    for probe in default_plan():
        for size in probe.sizes:
            layers = probe.layers(size)
            work = 0.0 if probe.kernel == "call" else sum(roof.seconds(layer_work(x, 1, 4)) for x in layers)
            fed = input_bytes(layers, 4) / 2e9 if probe.kernel == "stem" else None
            timed.append(Timed(probe, size, truth.call_s + work, fed))
    timed += [Timed(p, size, predict_with(truth, p.arch_cfg(size)).total_ms / 1e3)
              for p in default_networks() for size in p.sizes]
    fitted = fit("litert", "fp32", 1, 1, timed, fixed_batch=True)
    assert fitted.feed_bytes_per_s == pytest.approx(2e9, rel=1e-3)
    assert list(fitted.in_network.values()) == pytest.approx([1.0] * len(fitted.in_network), abs=1e-3)
    unseen = ArchConfig(alpha=1.1, resolution=240)
    assert predict_with(fitted, unseen).total_ms == pytest.approx(predict_with(truth, unseen).total_ms, rel=1e-3)

    order: list[str] = []
    called = as_called(Cell(lambda: order.append("run"), lambda: order.append("feed")))
    called()
    assert order == ["feed", "run"]


def test_a_calls_cost_per_byte_handed_over_is_fitted_from_the_call_probes_and_taken_off_every_probe() -> None:
    """Probe times made by known rooflines plus a call that costs 8 µs and 1 s per 5 GB of input
    and output handed over (ExecuTorch's order, docs/latency.md): the call probes at several
    sizes give both back, the rooflines come back exactly, and a network's call pays for its
    image; fitted as a fixed cost alone, the probes' handover lands in the rooflines. ExecuTorch's
    backend asks for it at fp32, the others' do not."""
    from mobilenet.latency.backends import BACKENDS
    from mobilenet.latency.model import handed_bytes

    truth = {"depthwise": Roofline(20e9, 15e9, 3e-6), "depthwise_s2": Roofline(15e9, 12e9, 9e-6),
             "pointwise": Roofline(150e9, 25e9, 1e-6), "stem": Roofline(40e9, 10e9, 2e-6),
             "conv": Roofline(120e9, 30e9, 1e-6), "pool": Roofline(math.inf, 12e9, 1e-6),
             "fc": Roofline(30e9, 40e9, 0.5e-6)}
    call_s, handover = 8e-6, 5e9
    timed = []
    for probe in default_plan():
        for size in probe.sizes:
            layers = probe.layers(size)
            seconds = call_s + handed_bytes(layers, 4) / handover
            if probe.kernel != "call":
                seconds += sum(truth[probe.kernel].seconds(layer_work(x, 1, 4)) for x in layers)
            timed.append(Timed(probe, size, seconds))
    assert len({t.size for t in timed if t.probe.kernel == "call"}) > 1, "the call probe runs at several sizes"
    fitted = fit("executorch", "fp32", 1, 1, timed, handover=True)
    assert fitted.call_s == pytest.approx(call_s, rel=1e-3)
    assert fitted.handover_bytes_per_s == pytest.approx(handover, rel=1e-3)
    assert max(fitted.fit["rmspe"].values()) < 1e-3
    image = cost.network_cost(ArchConfig()).layers
    assert predict_with(fitted, ArchConfig()).call_ms == pytest.approx(
        (call_s + handed_bytes(image, 4) / handover) * 1e3, rel=1e-3)
    fixed_only = fit("executorch", "fp32", 1, 1, timed)  # (as every other backend asks)
    assert fixed_only.handover_bytes_per_s == math.inf
    assert max(fixed_only.fit["rmspe"].values()) > 0.01  # the handover bent the rooflines
    stored = Calibration.from_dict(json.loads(json.dumps(fitted.to_dict())))
    assert stored.handover_bytes_per_s == fitted.handover_bytes_per_s
    assert {name: b.handover_precisions for name, b in BACKENDS.items() if b.handover_precisions} == \
        {"executorch": ("fp32",)}


def test_convs_whose_channels_are_not_whole_blocks_run_as_their_own_kernels() -> None:
    """With ONNX Runtime's blocks on AVX-512 (4 channels for a depthwise conv, 16 for a dense
    one), 0.35's depthwise convs on 11, 22, 89 channels are off their block and on 44 on it; its
    pointwise convs are all off theirs; 0.5's 16, 32, 64... are on every block;
    the stem reads RGB as it is; without blocks there are no unblocked kernels. Each variant takes
    its own roofline."""
    from mobilenet.latency.model import kernel_of

    blocks = {"depthwise": 4, "depthwise_s2": 4, "pointwise": 16, "conv": 16, "stem": 16}

    def kernel(alpha: float, name: str, channel_blocks: dict[str, int] | None = blocks) -> str:
        layers = {x.name: x for x in cost.network_cost(ArchConfig(alpha=alpha)).layers}
        return kernel_of(layers[name], channel_blocks)

    assert kernel(0.35, "blocks.0.dw") == "depthwise_unblocked"  # 11 channels
    assert kernel(0.35, "blocks.2.dw") == "depthwise"  # 44
    assert kernel(0.35, "blocks.1.dw") == "depthwise_s2_unblocked"  # 22
    assert kernel(0.35, "blocks.2.pw") == "pointwise_unblocked" and kernel(0.35, "stem") == "stem_unblocked"
    assert {kernel(0.5, x.name) for x in cost.network_cost(ArchConfig(alpha=0.5)).layers} == \
        {kernel(0.35, x.name, None) for x in cost.network_cost(ArchConfig(alpha=0.35)).layers} == \
        {"stem", "depthwise", "depthwise_s2", "pointwise", "pool", "fc"}
    slow = Roofline(10e9, 5e9, 2e-6)
    calibration = fixed_calibration(channel_blocks=blocks, kernels={**fixed_calibration().kernels,
                                                                    **{k: slow for k in KERNELS if "unblocked" in k}})
    blocked, unblocked = (predict_with(calibration, ArchConfig(alpha=a)).layer("blocks.3.pw") for a in (0.5, 0.35))
    assert unblocked.kernel == "pointwise_unblocked" and blocked.kernel == "pointwise"
    # 0.35's layer does half 0.5's mult-adds, on a roofline ten times slower.
    assert unblocked.predicted_ms > 3 * blocked.predicted_ms


@pytest.mark.parametrize(("flags", "machine", "fp32_pointwise"), [
    ({"avx2", "avx512f"}, "x86_64", "pointwise_unblocked"),  # a block of 16
    ({"avx2"}, "x86_64", "pointwise_unblocked"),  # of 8
    ({"asimd"}, "aarch64", "pointwise"),  # no blocks assumed
])
def test_onnx_runtime_int8_convs_are_blocked_as_its_int8_kernels_are(
    flags: set[str], machine: str, fp32_pointwise: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ONNX Runtime's int8 convs (QLinearConv on NHWC) want other blocks than its fp32 ones
    (NCHWc): α 0.875's first layers, 28 channels into 56, fill fp32's depthwise block of 4 and
    not its dense one of 16 (8 on AVX2); at int8 a pointwise conv wants multiples of 4 and a
    depthwise one of 16 (docs/latency.md §4, 2026-12-05), so there it is the other way round,
    on any CPU (described here, as the CPU tests describe them)."""
    from mobilenet import cpu
    from mobilenet.latency.backends.ort import OnnxRuntimeBackend
    from mobilenet.latency.model import kernel_of

    monkeypatch.setattr(cpu, "cpu_info", lambda: cpu.CpuInfo("described", machine, frozenset(flags), 2))
    layers = {x.name: x for x in cost.network_cost(ArchConfig(alpha=0.875)).layers}
    fp32, int8 = OnnxRuntimeBackend("fp32", 1).channel_blocks, OnnxRuntimeBackend("int8", 1).channel_blocks
    assert (kernel_of(layers["blocks.0.dw"], fp32), kernel_of(layers["blocks.0.pw"], fp32)) == \
        ("depthwise", fp32_pointwise)
    assert (kernel_of(layers["blocks.0.dw"], int8), kernel_of(layers["blocks.0.pw"], int8)) == \
        ("depthwise_unblocked", "pointwise")


@pytest.mark.parametrize(("flags", "machine", "block"), [
    ({"avx2", "avx512f"}, "x86_64", 32),  # two AVX-512 registers of floats
    ({"avx2"}, "x86_64", 16),
    ({"asimd"}, "aarch64", None),  # no vector width known: no blocks assumed
])
def test_xnnpack_fp32_pointwise_convs_are_blocked_and_the_plan_probes_both_twins(
    flags: set[str], machine: str, block: int | None, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """XNNPACK's fp32 1x1 convs (LiteRT's, ExecuTorch's) run a mult-add 1.2x as long onto
    channels off whole pairs of vector registers (Zen 5, docs/latency.md §4, 2026-12-05): α 1.0's
    last pointwise layer (1024 channels) fills the block, α 0.7's (716) does not. The full plan
    probes both twins at several widths, so neither borrows another kernel's roofline."""
    from mobilenet import cpu
    from mobilenet.latency.backends.base import xnnpack_channel_blocks
    from mobilenet.latency.model import kernel_of

    monkeypatch.setattr(cpu, "cpu_info", lambda: cpu.CpuInfo("described", machine, frozenset(flags), 2))
    blocks = xnnpack_channel_blocks()
    if block is None:
        assert blocks == xnnpack_channel_blocks(depthwise=True) == {}
        return
    assert blocks == {"pointwise": block}
    assert xnnpack_channel_blocks(depthwise=True) == {"pointwise": block, "depthwise": block // 2,
                                                       "depthwise_s2": block // 2}
    assert kernel_of(cost.network_cost(ArchConfig(alpha=0.7)).layer("blocks.4.dw"),  # (179 channels)
                     xnnpack_channel_blocks(depthwise=True)) == "depthwise_unblocked"

    def last_pointwise(alpha: float) -> str:
        return kernel_of(cost.network_cost(ArchConfig(alpha=alpha)).layer("blocks.12.pw"), blocks)

    assert (last_pointwise(1.0), last_pointwise(0.7)) == ("pointwise", "pointwise_unblocked")
    probed: dict[str, set[int]] = {}
    for probe in default_plan():
        if probe.kernel == "pointwise":
            probed.setdefault(kernel_of(probe.layers(probe.sizes[0])[0], blocks), set()).add(probe.channels)
    assert len(probed["pointwise_unblocked"]) >= 3 and len(probed["pointwise"]) >= 3
    assert max(probed["pointwise"]) >= 1024, "a blocked probe as wide as a network's widest layer"


def test_the_xnnpack_runtimes_block_their_float_kernels_only() -> None:
    """The blocks were measured on XNNPACK's fp32 kernels (LiteRT's fp16 files run them too);
    its int8 kernels keep none."""
    for needed in ("litert_torch", "ai_edge_litert.interpreter", "executorch.runtime"):
        pytest.importorskip(needed)
    from mobilenet.latency.backends.base import xnnpack_channel_blocks
    from mobilenet.latency.backends.executorch import ExecuTorchBackend
    from mobilenet.latency.backends.litert import LiteRtBackend

    fp32 = xnnpack_channel_blocks()
    assert LiteRtBackend("fp32", 1).channel_blocks == LiteRtBackend("fp16", 1).channel_blocks == fp32
    # ExecuTorch profiles its networks' layers, which fit the depthwise twins too.
    assert ExecuTorchBackend("fp32", 1).channel_blocks == xnnpack_channel_blocks(depthwise=True)
    if fp32:
        assert xnnpack_channel_blocks(depthwise=True) == {**fp32, "depthwise": fp32["pointwise"] // 2,
                                                           "depthwise_s2": fp32["pointwise"] // 2}
    assert LiteRtBackend("int8", 1).channel_blocks == ExecuTorchBackend("int8", 1).channel_blocks == {}


def test_a_per_group_overhead_is_fitted_back() -> None:
    """A depthwise conv that loops over its channels pays per channel: probes made with such a
    cost are fitted back to it."""
    truth = Roofline(30e9, 15e9, 2e-6, group_s=0.2e-6)
    timed = [Timed(p, size, 8e-6 + sum(truth.seconds(layer_work(x, 1, 4)) for x in p.layers(size)))
             for p in default_plan() if p.kernel in ("call", "depthwise") for size in p.sizes]
    fitted = fit("onnxruntime", "fp32", 1, None, timed)
    assert fitted.kernels["depthwise"].group_s == pytest.approx(truth.group_s, rel=0.05)
    assert fitted.fit["rmspe"]["depthwise"] < 0.01


def test_a_depthwise_convs_tail_channels_run_one_at_a_time_and_are_fitted_back() -> None:
    """ONNX Runtime's int8 depthwise conv runs whole lanes of 8 channels and the rest one at a
    time, at several times a lane channel's cost: 39 channels take longer than 40. Probes made
    so are fitted back to the lane, the tail and its cost, and a kernel that pads its channels
    keeps no tail."""
    truth = Roofline(30e9, 15e9, 2e-6, lanes=8, tail=True, tail_s=5e-9)
    padded_truth = Roofline(30e9, 15e9, 2e-6, lanes=8)

    def fitted(roof: Roofline) -> Roofline:
        timed = [Timed(p, size, 8e-6 + sum(roof.seconds(layer_work(x, 1, 1, roof.lanes, tail=roof.tail))
                                           for x in p.layers(size, 1, 1)))
                 for p in default_plan() if p.kernel in ("call", "depthwise") for size in p.sizes]
        return fit("onnxruntime", "int8", 1, 1, timed).kernels["depthwise"]

    got = fitted(truth)
    assert (got.lanes, got.tail) == (8, True) and got.tail_s == pytest.approx(5e-9, rel=0.02)
    def first_depthwise(alpha: float) -> cost.LayerCost:
        return next(x for x in cost.network_cost(ArchConfig(alpha=alpha), 1, 1).layers if x.groups > 1)

    thin, whole = first_depthwise(1.22), first_depthwise(1.25)
    assert (thin.out_shape[0], whole.out_shape[0]) == (39, 40)
    assert got.seconds(layer_work(thin, 1, 1, 8, tail=True)) > got.seconds(layer_work(whole, 1, 1, 8, tail=True))
    assert fitted(padded_truth).tail is False
    stored = Roofline.from_dict(json.loads(json.dumps(got.to_dict())))
    assert (stored.tail, stored.tail_s) == (True, got.tail_s)


def test_a_cost_per_output_position_is_fitted_back_and_only_where_it_earns_its_place() -> None:
    """LiteRT's int8 convs pay about 30 ns an output pixel whatever their channels: pointwise
    probes made with such a cost are fitted back to it (a roofline without it missed them by
    tens of percent), and probes made without it keep none."""
    from mobilenet.latency.fit import fit_roofline

    call_s = 8e-6
    pointwise = [(p, size) for p in default_plan() if p.kernel == "pointwise" for size in p.sizes]
    works = [layer_work(p.layers(size, 1, 1)[0], 1, 1) for p, size in pointwise]  # int8: 1 byte an element
    assert all(w.pixels == p.layers(size)[0].out_shape[1] * p.layers(size)[0].out_shape[2]
               for (p, size), w in zip(pointwise, works))

    def timed_by(truth: Roofline) -> list[Timed]:
        call = [Timed(p, size, call_s) for p in default_plan() if p.kernel == "call" for size in p.sizes]
        return call + [Timed(p, size, call_s + p.repeats * truth.seconds(w)) for (p, size), w in zip(pointwise, works)]

    per_pixel = Roofline(200e9, 8e9, 1e-6, pixel_s=30e-9)
    fitted = fit("litert", "int8", 1, 1, timed_by(per_pixel))
    got = fitted.kernels["pointwise"]
    assert got.pixel_s == pytest.approx(per_pixel.pixel_s, rel=0.05) and fitted.fit["rmspe"]["pointwise"] < 0.01
    repeats = [p.repeats for p, _ in pointwise]
    _, without = fit_roofline(works, repeats, [n * per_pixel.seconds(w) for n, w in zip(repeats, works)])
    assert without > 0.1  # what the term buys on these probes
    assert fit("litert", "int8", 1, 1, timed_by(Roofline(200e9, 8e9, 1e-6))).kernels["pointwise"].pixel_s == 0


def test_the_weights_a_call_misses_are_those_beyond_the_cache_and_cost_once_a_call() -> None:
    """A call reads every weight once: of 19 MiB of weights (α 1.1 at fp32) a cache keeping 8 MiB
    misses 11 MiB, every call, however large its batch; at int8 the same weights fit."""
    from mobilenet.latency.model import call_weight_bytes, missed_fraction

    mib = 2**20
    assert missed_fraction(16 * mib, 8 * mib) == 0.5
    assert missed_fraction(4 * mib, 8 * mib) == 0.0 == missed_fraction(16 * mib, math.inf) == missed_fraction(0, 1)
    wide = ArchConfig(alpha=1.1, resolution=112)
    fp32, int8 = (call_weight_bytes(cost.network_cost(wide, size).layers, size) for size in (4, 1))
    assert fp32 == 4 * int8 == 4 * sum(x.weights for x in cost.network_cost(wide).layers)

    far = {k: dataclasses.replace(r, far_s=1 / 20e9) for k, r in fixed_calibration().kernels.items()}
    kept, missed = fixed_calibration(kernels=far), fixed_calibration(kernels=far, cache_bytes=8 * mib)
    for batch in (1, 8):
        extra = predict_with(missed, wide, batch).total_ms - predict_with(kept, wide, batch).total_ms
        assert extra == pytest.approx((fp32 - 8 * mib) / 20e9 * 1e3), "the misses' cost, once a call"
    assert predict_with(missed, wide).weight_bytes_from_memory == fp32 - 8 * mib
    assert predict_with(kept, wide).weight_bytes_from_memory == 0
    last = "blocks.12.pw"  # (1126 x 1126 weights: 5.1 MB at fp32, 58% of them missed)
    assert predict_with(missed, wide).layer(last).predicted_ms > predict_with(kept, wide).layer(last).predicted_ms
    small = ArchConfig(alpha=0.5, resolution=112)  # 5.3 MB of weights: they fit
    assert predict_with(missed, small).total_ms == predict_with(kept, small).total_ms
    int8_kept, int8_missed = (dataclasses.replace(c, precision="int8") for c in (kept, missed))
    assert predict_with(int8_missed, wide).total_ms == predict_with(int8_kept, wide).total_ms
    # Waiting on memory makes a layer memory-bound: at 100 GB/s (ridge 1 mult-add a byte) that
    # pointwise conv computes, unless most of its weights come from memory at 5 GB/s.
    fast = {k: dataclasses.replace(r, bytes_per_s=100e9) for k, r in far.items()}
    assert predict_with(fixed_calibration(kernels=fast), wide).layer(last).bound == "compute"
    slow = {k: dataclasses.replace(r, far_s=1 / 5e9) for k, r in fast.items()}
    assert predict_with(fixed_calibration(kernels=slow, cache_bytes=8 * mib), wide).layer(last).bound == "memory"


def profiled_networks(truth: Calibration, batch_size: int = 1) -> list[Timed]:
    """The calibration's networks, each timed and profiled layer by layer as ``truth`` predicts."""
    from mobilenet.latency.probes import default_networks

    timed = [Timed(p, size, truth.call_s) for p in default_plan() if p.kernel == "call" for size in p.sizes]
    for probe in default_networks():
        for size in probe.sizes:
            prediction = predict_with(truth, probe.arch_cfg(size), batch_size)
            layers = tuple(x.predicted_ms / 1e3 for x in prediction.layers)
            timed.append(Timed(probe, size, truth.call_s + sum(layers), layer_seconds=layers))
    return timed


def test_the_cache_and_the_cost_of_its_misses_are_fitted_back_and_only_where_they_earn_their_place(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Networks profiled on a machine whose cache keeps 8 MiB of weights, each byte beyond it
    costing its pointwise convs and classifier 50 ps more: the fit finds the 8 MiB and the cost
    again, and predicts a wider network than it saw (α 1.1) as that machine runs it. Networks
    timed on a machine that keeps every weight give no cache."""
    mib = 2**20
    base = fixed_calibration(call_s=5e-6)
    far = {k: dataclasses.replace(r, far_s=50e-12) if k in ("pointwise", "fc") else r for k, r in base.kernels.items()}
    truth = dataclasses.replace(base, kernels=far, cache_bytes=8 * mib)
    fitted = fit("onnxruntime", "fp32", 1, 1, profiled_networks(truth))
    assert fitted.cache_bytes == 8 * mib
    assert fitted.kernels["pointwise"].far_s == pytest.approx(50e-12, rel=0.02)
    assert fitted.kernels["depthwise"].far_s == 0.0, "the depthwise layers' time did not depend on it"
    wide = ArchConfig(alpha=1.1, resolution=112)
    assert predict_with(fitted, wide).total_ms == pytest.approx(predict_with(truth, wide).total_ms, rel=0.01)
    assert fit("onnxruntime", "fp32", 1, 1, profiled_networks(base)).cache_bytes == math.inf
    monkeypatch.setattr("mobilenet.latency.calibrate.CACHE_SIZES", ())  # what the cache buys: a cache keeping all
    blind = fit("onnxruntime", "fp32", 1, 1, profiled_networks(truth))
    assert predict_with(blind, wide).total_ms < 0.95 * predict_with(truth, wide).total_ms


def test_a_layers_activations_beyond_the_cache_are_fitted_back_at_batch_8_and_never_tried_at_batch_1(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Networks profiled at batch 8 on a machine that holds 8 MiB of a layer's activations, each
    byte beyond costing the convs 60 ps more (OpenVINO's first layers in wide networks on large
    images, docs/latency.md §4): the fit finds the 8 MiB and the cost again, and predicts a wider,
    larger network than it saw (α 1.1 at 240 px) as that machine runs it, which a fit without the
    term under-predicts. At batch 1 no calibration network's layer spills a quarter of its
    activations from 4 MiB: nothing is tried, and the fit is the one without the term."""
    from mobilenet.latency.model import spilled_bytes

    mib = 2**20
    first_pw = cost.network_cost(ArchConfig(), 4).layers[2]  # 1.0-224's blocks.0.pw, 32 -> 64 at 112 x 112
    assert first_pw.name == "blocks.0.pw" and first_pw.in_bytes + first_pw.out_bytes == (32 + 64) * 112 * 112 * 4
    assert spilled_bytes(first_pw, 4 * mib) == (32 + 64) * 112 * 112 * 4 - 4 * mib
    assert spilled_bytes(first_pw, 8 * mib) == 0.0 == spilled_bytes(first_pw, math.inf)
    base = fixed_calibration(call_s=5e-6, batch_size=8)
    convs = ("stem", "depthwise", "depthwise_s2", "pointwise")
    spill = {k: dataclasses.replace(r, spill_s=60e-12) if k in convs else r for k, r in base.kernels.items()}
    truth = dataclasses.replace(base, kernels=spill, layer_cache_bytes=8 * mib)
    fitted = fit("openvino", "fp32", 8, 1, profiled_networks(truth, 8))
    assert fitted.layer_cache_bytes == 8 * mib
    assert fitted.kernels["pointwise"].spill_s == pytest.approx(60e-12, rel=0.02)
    assert fitted.kernels["fc"].spill_s == 0.0, "the classifier's time did not depend on it"
    large = ArchConfig(alpha=1.1, resolution=240)
    assert predict_with(fitted, large, 8).total_ms == pytest.approx(predict_with(truth, large, 8).total_ms, rel=0.01)
    at_batch_1 = fit("openvino", "fp32", 1, 1, profiled_networks(truth))
    monkeypatch.setattr("mobilenet.latency.calibrate.LAYER_CACHE_SIZES", ())
    assert at_batch_1.layer_cache_bytes == math.inf
    assert at_batch_1 == fit("openvino", "fp32", 1, 1, profiled_networks(truth)), "batch 1: nothing was tried"
    blind = fit("openvino", "fp32", 8, 1, profiled_networks(truth, 8))
    assert predict_with(blind, large, 8).total_ms < 0.95 * predict_with(truth, large, 8).total_ms


def networks_off_their_rooflines(truth: dict[str, float]) -> list[object]:
    """Six networks whose kernels take ``truth[kernel]`` times their rooflines (1 where not
    named), plus 20 µs a call."""
    from mobilenet.latency.fit import NetworkMeasurement

    calibration = fixed_calibration()
    networks = []
    for alpha, size in ((0.25, 128), (0.5, 160), (0.75, 192), (1.0, 224), (0.35, 224), (1.0, 128)):
        per_kernel: dict[str, float] = {}
        for x in predict_with(calibration, ArchConfig(alpha=alpha, resolution=size)).layers:
            per_kernel[x.kernel] = per_kernel.get(x.kernel, 0.0) + x.predicted_ms / 1e3
        seconds = 20e-6 + sum(truth.get(k, 1.0) * v for k, v in per_kernel.items())
        networks.append(NetworkMeasurement(per_kernel, seconds))
    return networks


def test_the_in_network_factors_are_fitted_back_from_whole_networks() -> None:
    """Networks whose depthwise layers take 1.5x their roofline, dense ones 0.8x and the rest
    1x, plus 20 µs a call: the factors and the extra cost come back from their totals alone."""
    from mobilenet.latency.fit import fit_in_network

    truth = {"depthwise": 1.5, "depthwise_s2": 1.5, "pointwise": 0.8}
    fitted = fit_in_network(networks_off_their_rooflines(truth))  # type: ignore[arg-type]
    assert fitted.rmspe_after < 1e-6 < fitted.rmspe_before
    for kernel in ("depthwise", "depthwise_s2", "pointwise", "stem", "fc"):
        assert fitted.factors[kernel] == pytest.approx(truth.get(kernel, 1.0), rel=1e-4), kernel
    assert fitted.extra_call_s == pytest.approx(20e-6, rel=1e-3)


def test_a_group_fitted_to_the_networks_own_layers_keeps_the_factor_one() -> None:
    """Where a runtime's profiler gave the depthwise rooflines from these networks' own layers,
    their group keeps 1 whatever the totals would like; the groups fitted to probes are still
    fitted; with every kernel in place, every factor is 1."""
    from mobilenet.latency.fit import IN_NETWORK_GROUPS, fit_in_network

    networks = networks_off_their_rooflines({"depthwise": 1.5, "depthwise_s2": 1.5, "pointwise": 0.8})
    fitted = fit_in_network(networks, in_place=IN_NETWORK_GROUPS["depthwise"])  # type: ignore[arg-type]
    assert fitted.factors["depthwise"] == fitted.factors["depthwise_s2"] == 1.0
    assert fitted.factors["pointwise"] != 1.0, "the probed groups are fitted as before"
    every = [k for kernels in IN_NETWORK_GROUPS.values() for k in kernels]
    assert set(fit_in_network(networks, in_place=every).factors.values()) == {1.0}  # type: ignore[arg-type]


def test_factors_the_networks_cannot_tell_apart_are_not_kept() -> None:
    """Networks of one width run at their rooflines, off by 3% either way: their groups of layers
    grow together with the resolution, so factors far from 1 fit the totals hardly better, and
    every factor stays 1 (the layers keep the times their rooflines say)."""
    from mobilenet.latency.fit import NetworkMeasurement, fit_in_network

    calibration = fixed_calibration()
    networks = []
    for i, (alpha, size) in enumerate((0.5, size) for size in (128, 144, 160, 176, 192, 208, 224)):
        per_kernel: dict[str, float] = {}
        for x in predict_with(calibration, ArchConfig(alpha=alpha, resolution=size)).layers:
            per_kernel[x.kernel] = per_kernel.get(x.kernel, 0.0) + x.predicted_ms / 1e3
        noise = 1 + 0.03 * (-1) ** i  # measured 3% over or under, alternately
        networks.append(NetworkMeasurement(per_kernel, noise * sum(per_kernel.values())))
    fitted = fit_in_network(networks)
    assert set(fitted.factors.values()) == {1.0}
    assert fitted.rmspe_after <= fitted.rmspe_before  # never worse than the rooflines alone


def built_by_a_calibration(monkeypatch: pytest.MonkeyPatch, *, feeds: bool = False, splits: bool = True,
                           every_probe: bool = False, rounds: list[float] | None = None) -> set[tuple[object, int]]:
    """The (probe, size) pairs that ``calibrate._measure`` builds and times for a runtime whose
    calls do nothing: one that profiles its networks layer by layer (``splits``: into as many
    times as ``cost`` counts layers) and converts its input where ``feeds``. ``rounds`` gets how
    long the timing's rounds were to last (seconds per call times calls)."""
    from mobilenet.latency import calibrate as calibrating
    from mobilenet.latency.backends.base import Backend, Cell
    from mobilenet.latency.probes import NetworkProbe, default_networks

    class Profiling(Backend):
        runtime = "profiling"

        def load(self, module, shape, largest_side=None):  # noqa: ANN001, ANN202
            probe = module  # (``probe_module`` below hands the probe itself over)

            def shaped(at: tuple[int, ...]) -> Cell:
                layers = len(probe.layers(at[-1])) + (0 if splits else 1)
                profile = (lambda seconds: [1e-4] * layers) if isinstance(probe, NetworkProbe) else None
                return Cell(lambda: None, (lambda: None) if feeds else None, profile)
            return shaped

    monkeypatch.setattr(calibrating, "probe_module", lambda probe, size, fixed_pads=False: probe)
    real_timing = calibrating.time_rounds

    def timing(runs, *, seconds, **kwargs):  # noqa: ANN001, ANN202
        (rounds if rounds is not None else []).append(seconds * len(runs))
        return real_timing(runs, seconds=seconds, **kwargs)

    monkeypatch.setattr(calibrating, "time_rounds", timing)
    plan = (*default_networks(), *default_plan())
    measured = calibrating._measure(Profiling("fp32", 1), plan, 1, time.monotonic() + 60, 0.002, lambda line: None,
                                    {}, every_probe=every_probe)
    return {(t.probe, t.size) for t in measured.timed}


def test_a_calibration_builds_no_probe_that_its_networks_profiles_leave_unused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where the networks' profiles time every kernel of the network in place, the fit reads no
    probe of those kernels, so the calibration builds only the call's and the full convs' (which
    no network holds; at batch 8 OpenVINO's networks used to take the budget before them), and the
    stem's where the input is converted (their feeds give the conversion's bandwidth). The fit of
    what it builds is the fit of every probe. The rounds of timing last as long as with every
    probe: the unbuilt probes' share goes to the rest, so that a spell of a few seconds does not
    fall on all of a network's samples."""
    from mobilenet.latency.probes import NetworkProbe, default_networks

    every = {(p, size) for p in (*default_networks(), *default_plan()) for size in p.sizes}
    kinds = lambda built: {p.kernel for p, _ in built}  # noqa: E731
    rounds: list[float] = []
    built = built_by_a_calibration(monkeypatch, rounds=rounds)
    assert kinds(built) == {"network", "call", "conv"}
    assert rounds == [pytest.approx(0.002 * len(every))], "the unbuilt probes' rounds go to the rest"
    assert kinds(built_by_a_calibration(monkeypatch, feeds=True)) == {"network", "call", "conv", "stem"}
    assert built_by_a_calibration(monkeypatch, splits=False) == every, "a profile that does not split informs nothing"
    assert built_by_a_calibration(monkeypatch, every_probe=True) == every

    truth = fixed_calibration(call_s=5e-6)
    networks = [t for t in profiled_networks(truth) if isinstance(t.probe, NetworkProbe)]
    # (every probe slower than the call's: the call's cost is held to the quickest probe)
    probes = [Timed(p, size, (1e-5 if p.kernel == "call" else 3e-5) + 1e-8 * size) for p in default_plan()
              for size in p.sizes]
    of_every_probe = fit("onnxruntime", "fp32", 1, 1, networks + probes)
    of_the_built = fit("onnxruntime", "fp32", 1, 1, networks + [t for t in probes if (t.probe, t.size) in built])
    assert of_the_built.kernels == of_every_probe.kernels and of_the_built.call_s == of_every_probe.call_s
    assert of_the_built.in_network == of_every_probe.in_network


def test_a_kernel_left_unmeasured_borrows_from_the_most_similar_one() -> None:
    timed = [Timed(p, s, 1e-4) for p in default_plan() if p.kernel in ("call", "pointwise") for s in p.sizes]
    fitted = fit("onnxruntime", "fp32", 1, None, timed)
    assert fitted.kernels["conv"] == fitted.kernels["pointwise"] == fitted.kernels["fc"]


# --- calibration and its cache ---------------------------------------------------------------

def test_a_few_second_calibration_predicts_an_alpha_it_never_saw_within_a_loose_bound() -> None:
    """ONNX Runtime, the quick plan, one thread: the whole network at α 0.6, 160x160 (no probe
    has its shapes), as ``make_predictor`` builds it, is predicted within a factor of 3 of its
    quickest call. Loose on purpose, on one thread and against the quickest call, because the
    default suite runs on shared machines, where other sessions' load decides the median and
    even the 10th percentile; docs/latency.md has the held-out figures measured on a quiet one."""
    pytest.importorskip("onnxruntime")
    from mobilenet.deploy.runtime import make_predictor
    from mobilenet.model import MobileNetV1

    lines: list[str] = []
    calibration = calibrate("onnxruntime", threads=1, plan=quick_plan(), networks=quick_networks(),
                            seconds_per_shape=0.05, log=lines.append)
    assert lines[0].startswith("latency: calibrating onnxruntime fp32")
    assert any(line.startswith("latency: calibrated in") for line in lines), "(warnings may follow it)"
    assert calibration.machine_drift is not None and calibration.machine_drift >= 1.0, "the pace is recorded"
    cfg = ArchConfig(alpha=0.6, resolution=160)
    predictor = make_predictor(MobileNetV1(cfg).eval(), "onnxruntime", threads=1)
    x = torch.rand(1, 3, 160, 160)
    measured = min(time_interleaved([lambda: predictor(x)], seconds=0.5, min_runs=5)[0]) * 1e3
    predicted = predict_with(calibration, cfg).total_ms
    assert measured / 3 < predicted < measured * 3, (predicted, measured)


def test_the_call_probe_is_timed_before_the_networks_and_a_budget_that_cannot_hold_the_fit_says_to_raise_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The networks went first, and a budget that ran out among them (batch 8, a slow machine)
    never reached the call probe: the fit then failed with a TypeError. The call probe now goes
    first, and a budget too short for what the fit needs is refused in one line that says to
    raise it; the fit given no call probe says what it lacks."""
    pytest.importorskip("onnxruntime")
    from mobilenet.latency.probes import NetworkProbe

    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    lines: list[str] = []
    with pytest.raises(InputError, match=r"0\.5 s ran out with \d+ probes left out; raise budget_s") as refused:
        calibrate("onnxruntime", threads=1, budget_s=0.5, networks=(NetworkProbe(0.25, (64,)),),
                  seconds_per_shape=0.05, log=lines.append)
    assert "\n" not in str(refused.value)
    built = [line for line in lines if "building" in line]
    assert built and "a call" in built[0], "the call probe is built before any network"
    networks_only = [t for t in profiled_networks(fixed_calibration()) if isinstance(t.probe, NetworkProbe)]
    with pytest.raises(InputError, match="needs its call probe timed"):
        fit("onnxruntime", "fp32", 1, 1, networks_only)
    # The call probe and one profiled network are all that the fit needs.
    lines.clear()
    calibration = calibrate("onnxruntime", threads=1, budget_s=30, plan=quick_plan()[:1],
                            networks=quick_networks()[:1], seconds_per_shape=0.02, log=lines.append)
    assert calibration.call_s > 0 and calibration.fit["in_network"]["networks"] == 1
    built = [line for line in lines if "building" in line]
    assert "a call" in built[0] and "network" in built[1]


def test_calls_timed_beside_a_calibration_come_back_in_their_order() -> None:
    """``calibrate_beside`` times its calls in the calibration's own rounds (how the latency
    benchmark's ``--joint`` separates the model's error from the machine's drift): each call's
    median comes back in the order of the calls, apart from the probes' and the references'.
    Where the calibration would run in a process of its own, the calls cannot follow: refused
    before anything is measured."""
    pytest.importorskip("onnxruntime")
    lines: list[str] = []
    slow = lambda: time.sleep(0.004)  # noqa: E731
    calibration, medians = calibrate_beside("onnxruntime", "fp32", [slow, lambda: None], threads=1,
                                            plan=quick_plan()[:3], networks=(), seconds_per_shape=0.02,
                                            log=lines.append)
    assert len(medians) == 2
    assert medians[0] > 0.002 > medians[1], "each call's own median, in order"
    assert calibration.fit["timed_beside"] == 2 and calibration.kernels
    assert any("and 2 calls beside them" in line for line in lines)
    with pytest.raises(InputError, match="process of its own"):
        calibrate_beside("onnxruntime", "fp32", [slow], threads=2, plan=quick_plan()[:3], networks=(),
                         log=lines.append)


def test_measuring_pytorch_leaves_the_processs_thread_count_as_it_was() -> None:
    """PyTorch's thread count is the process's, and its probes and predictors set it: a library
    call that measures (a calibration, choose's timings) puts it back for the caller's models."""
    threads = torch.get_num_threads()
    other = 1 if threads != 1 else 2
    calibrate("torch", threads=other, plan=quick_plan()[:2], networks=(), seconds_per_shape=0.02,
              log=lambda line: None)
    assert torch.get_num_threads() == threads
    timer = measure_architectures("torch", "fp32", 1, other, seconds=0.02)
    assert len(timer([ArchConfig(alpha=0.25, resolution=96)])) == 1
    assert torch.get_num_threads() == threads


def test_choose_s_timer_builds_each_architecture_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """choose times a model near the budget again, and more models in later rounds: each
    architecture is built once per timer, not once per timing."""
    from mobilenet.latency import backends

    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    built: list[ArchConfig] = []
    real = backends.kept_predictor

    def counting(arch_cfg: ArchConfig, *args: object, **kwargs: object) -> object:
        built.append(arch_cfg)
        return real(arch_cfg, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(backends, "kept_predictor", counting)
    small, smaller = ArchConfig(alpha=0.25, resolution=96), ArchConfig(alpha=0.25, resolution=64)
    timer = measure_architectures("onnxruntime", "fp32", 1, 1, seconds=0.02)
    first = timer([small, smaller])
    again = timer([small])
    assert built == [small, smaller]
    assert len(first) == 2 and len(again) == 1 and all(t > 0 for t in [*first, *again])


def test_the_networks_choose_times_are_kept_and_a_damaged_one_is_built_again(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    """Exporting is most of a choose call: a second call loads the kept file (the same random
    weights, so the very same logits), and a damaged file, or one written by code since changed,
    is exported again, never loaded."""
    from mobilenet.deploy.formats import onnx as onnx_format
    from mobilenet.latency.backends import kept_predictor

    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    writes = []
    real_write = onnx_format.write
    monkeypatch.setattr(onnx_format, "write", lambda *a, **k: writes.append(1) or real_write(*a, **k))
    cfg, x = ArchConfig(alpha=0.25, resolution=64), torch.rand(1, 3, 64, 64)

    def kept() -> object:
        return kept_predictor(cfg, "onnxruntime", "fp32", threads=1, distributions=("onnxruntime", "torch"))

    first = kept()(x)  # type: ignore[operator]
    assert torch.equal(kept()(x), first) and len(writes) == 1  # type: ignore[operator]
    # Keras' port of a TF checkpoint differs only in BatchNorm's epsilon: the same work, one file.
    keras_copy = kept_predictor(cfg.replace(bn_eps=1e-5, dropout=0.2), "onnxruntime", "fp32", threads=1,
                                distributions=("onnxruntime", "torch"))
    assert torch.equal(keras_copy(x), first) and len(writes) == 1  # type: ignore[operator]
    [kept_file] = (tmp_path / "choose-networks").glob("*/model.onnx")
    data = bytearray(kept_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    kept_file.write_bytes(bytes(data))
    rebuilt = kept()(x)  # type: ignore[operator]
    assert len(writes) == 2 and not torch.equal(rebuilt, first)  # new random weights: a new file
    assert [p.name for p in (tmp_path / "choose-networks").iterdir()] == [kept_file.parent.name]  # nothing half-built
    from mobilenet.latency.backends import base

    monkeypatch.setattr(base, "writers_digest", lambda *_: "an exporter changed since")
    kept()
    assert len(writes) == 3, "a change to the project's code that writes the file exports it again"


def test_the_kept_networks_stay_within_their_budget_the_least_recently_used_going_first(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    from mobilenet.latency.backends import base

    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    first, second, third = (ArchConfig(alpha=0.25, resolution=r) for r in (64, 96, 128))

    def kept(cfg: ArchConfig) -> object:
        return base.kept_predictor(cfg, "onnxruntime", "fp32", threads=1, distributions=("onnxruntime", "torch"))

    root = tmp_path / base.KEPT_NETWORK_FOLDER
    kept(first)
    [first_folder] = root.iterdir()
    kept(second)
    second_folder = next(f for f in root.iterdir() if f != first_folder)
    sizes = {f: sum(p.stat().st_size for p in f.iterdir()) for f in (first_folder, second_folder)}
    os.utime(first_folder, (1, 1))
    os.utime(second_folder, (2, 2))
    kept(first)  # used again: now the most recent of the two
    # Room for two (the three are one size: resolution changes no weight): a third evicts the
    # least recently used, the second.
    monkeypatch.setattr(base, "KEPT_NETWORK_BYTES", sum(sizes.values()) + 4096)
    kept(third)
    assert first_folder.exists() and not second_folder.exists()
    assert len(list(root.iterdir())) == 2


def test_a_cache_that_cannot_be_written_still_times_the_network(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    """Keeping is a saving, not a need: where the cache cannot hold the file, it is built for the call."""
    from mobilenet.latency.backends import kept_predictor

    blocked = tmp_path / "a file"
    blocked.write_text("not a folder")
    monkeypatch.setenv(CACHE_ENV, str(blocked / "cache"))
    predictor = kept_predictor(ArchConfig(alpha=0.25, resolution=64), "onnxruntime", "fp32", threads=1,
                               distributions=("onnxruntime", "torch"))
    assert predictor(torch.rand(1, 3, 64, 64)).shape == (1, 1000)  # type: ignore[operator]


def fake_measure(calls: list[tuple[str, str, int, int | None]]) -> Callable[..., Calibration]:
    def measure(runtime: str, precision: str, *, batch_size: int, threads: int | None, log: object) -> Calibration:
        calls.append((runtime, precision, batch_size, threads))
        return fixed_calibration(runtime, precision, threads=threads)

    return measure


def test_calibrations_are_cached_by_key_and_measured_again_when_a_runtime_version_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MOBILENET_CACHE", str(tmp_path))
    calls: list[tuple[str, str, int, int | None]] = []
    measure = fake_measure(calls)
    first = cache.calibrated("onnxruntime", threads=2, measure=measure, log=print)
    assert cache.calibrated("onnxruntime", threads=2, measure=measure, log=print) == first
    assert len(calls) == 1
    stored = json.loads((tmp_path / cache.CACHE_FILE).read_text())
    (key,) = stored
    assert {"cpu", "flags", "versions", "runtime", "precision", "threads", "batch_size"} <= set(json.loads(key))
    assert json.loads(key)["versions"]["onnxruntime"] is not None
    assert json.loads(key)["path"] == BACKENDS["onnxruntime"].path, "what the probes ran is part of the key"

    real_version = cache.package_version
    monkeypatch.setattr(cache, "package_version", lambda name: "99.0" if name == "onnxruntime" else real_version(name))
    cache.calibrated("onnxruntime", threads=2, measure=measure, log=print)
    assert len(calls) == 2, "an upgraded runtime is measured again"
    cache.calibrated("onnxruntime", threads=1, measure=measure, log=print)
    cache.calibrated("onnxruntime", "int8", threads=2, measure=measure, log=print)
    assert len(calls) == 4, "other threads, another precision: other keys"
    cache.calibrated("litert", threads=2, measure=measure, log=print)
    cache.calibrated("litert", batch_size=8, threads=2, measure=measure, log=print)
    assert len(calls) == 5, "LiteRT runs a batch image by image: one calibration for every batch size"
    monkeypatch.setattr(BACKENDS["onnxruntime"], "path", "another path through the runtime")
    cache.calibrated("onnxruntime", threads=2, measure=measure, log=print)
    assert len(calls) == 6, "probes that run another path are measured again"


def test_caching_drops_the_calibrations_of_an_older_model_and_keeps_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MOBILENET_CACHE", str(tmp_path))
    calls: list[tuple[str, str, int, int | None]] = []
    cache.calibrated("onnxruntime", threads=1, measure=fake_measure(calls), log=print)
    path = tmp_path / cache.CACHE_FILE
    [(current_key, entry)] = json.loads(path.read_text()).items()
    aged = {version: json.dumps(json.loads(current_key) | {"model_version": version}, sort_keys=True)
            for version in (MODEL_VERSION - 1, MODEL_VERSION + 1)}
    path.write_text(json.dumps({current_key: entry} | {key: entry for key in aged.values()}))
    cache.calibrated("onnxruntime", threads=2, measure=fake_measure(calls), log=print)
    kept = json.loads(path.read_text())
    assert current_key in kept and aged[MODEL_VERSION + 1] in kept, "only what this version can never read goes"
    assert aged[MODEL_VERSION - 1] not in kept and len(kept) == 3


def test_the_cached_calibration_is_read_without_ever_measuring(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOBILENET_CACHE", str(tmp_path))
    assert latency.cached_calibration("onnxruntime", threads=2, log=print) is None
    assert not (tmp_path / cache.CACHE_FILE).exists(), "a look-up writes nothing"
    calls: list[tuple[str, str, int, int | None]] = []
    measured = cache.calibrated("onnxruntime", threads=2, measure=fake_measure(calls), log=print)
    assert latency.cached_calibration("onnxruntime", threads=2, log=print) == measured
    assert latency.cached_calibration("onnxruntime", threads=1, log=print) is None, "another key"
    (tmp_path / cache.CACHE_FILE).write_text("{not json")
    lines: list[str] = []
    assert latency.cached_calibration("onnxruntime", threads=2, log=lines.append) is None
    assert len(calls) == 1 and len(lines) == 1 and "damaged" in lines[0]


@pytest.mark.parametrize("damage", ["{not json", "[1, 2]", "entry"])
def test_a_damaged_cache_is_measured_again_never_trusted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str,
) -> None:
    monkeypatch.setenv("MOBILENET_CACHE", str(tmp_path))
    calls: list[tuple[str, str, int, int | None]] = []
    path = tmp_path / cache.CACHE_FILE
    if damage == "entry":
        cache.calibrated("onnxruntime", measure=fake_measure(calls), log=print)
        stored = json.loads(path.read_text())
        (key,) = stored
        stored[key]["kernels"]["depthwise"]["bytes_per_s"] = -1.0
        path.write_text(json.dumps(stored))
    else:
        path.write_text(damage)
    lines: list[str] = []
    cache.calibrated("onnxruntime", measure=fake_measure(calls), log=lines.append)
    assert calls[-1] == ("onnxruntime", "fp32", 1, None)
    assert len(lines) == 1 and "damaged" in lines[0] and "measuring again" in lines[0]
    assert Calibration.from_dict(next(iter(json.loads(path.read_text()).values())))  # sound again


def test_a_converted_probe_is_kept_and_a_damaged_one_is_built_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from torch import nn

    from mobilenet.latency.backends import PROBE_FOLDER, LiteRtBackend, base

    monkeypatch.setenv("MOBILENET_CACHE", str(tmp_path))
    backend = LiteRtBackend.__new__(LiteRtBackend)  # (no converter needed to keep its bytes)
    backend.converting_s = 0.0
    built: list[int] = []

    def build(channels: int) -> Callable[[], bytes]:
        return lambda: built.append(channels) or b"probe file %d" % channels

    chain = nn.Sequential(nn.Conv2d(8, 8, 1))
    assert backend.kept("litert-fp32", chain, (1, 8, 4, 4), ("torch",), build(8)) == b"probe file 8"
    assert backend.kept("litert-fp32", chain, (1, 8, 4, 4), ("torch",), build(8)) == b"probe file 8"
    assert built == [8] and backend.converting_s > 0, "converted once, the time said"
    converted = backend.converting_s
    backend.kept("litert-fp32", nn.Sequential(nn.Conv2d(16, 16, 1)), (1, 16, 4, 4), ("torch",), build(16))
    backend.kept("litert-fp32", chain, (1, 8, 8, 8), ("torch",), build(8))
    assert built == [8, 16, 8] and backend.converting_s > converted, "another structure or shape: another file"

    for kept in (tmp_path / PROBE_FOLDER).iterdir():
        kept.write_bytes(kept.read_bytes()[:-3])  # truncated
    assert backend.kept("litert-fp32", chain, (1, 8, 4, 4), ("torch",), build(8)) == b"probe file 8"
    assert built == [8, 16, 8, 8], "a damaged file is built again, never loaded"
    monkeypatch.setattr(base, "writers_digest", lambda *_: "an exporter changed since")
    backend.kept("litert-fp32", chain, (1, 8, 4, 4), ("torch",), build(8))
    assert built == [8, 16, 8, 8, 8], "a change to the project's code that writes the file builds it again"


def test_a_probe_file_is_keyed_by_its_own_backends_code_not_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A change to one backend's module converts its probes again, not another backend's; a change
    to the code they share (the lowering in base.py, the exporters) converts every backend's."""
    import shutil

    from mobilenet.latency.backends import ExecuTorchBackend, OpenVinoBackend, base

    sources = tmp_path / base.PACKAGE.name  # the package's sources, copied to be changed
    shutil.copytree(base.PACKAGE, sources, ignore=lambda folder, names: [
        name for name in names if not name.endswith(".py") and not (Path(folder) / name).is_dir()])
    monkeypatch.setattr(base, "PACKAGE", sources)
    backends = (ExecuTorchBackend, OpenVinoBackend)
    assert [base.probe_writers(b)[-1] for b in backends] == ["latency/backends/executorch.py", "latency/backends/ov.py"]

    def digests() -> list[str]:
        base.writers_digest.cache_clear()
        return [base.writers_digest(*base.probe_writers(b)) for b in backends]

    def change(name: str) -> None:
        path = sources / name
        path.write_text(path.read_text() + "\n# changed\n")

    try:
        first = digests()
        change("latency/backends/ov.py")
        second = digests()
        assert second[0] == first[0] and second[1] != first[1]
        for shared in ("latency/backends/base.py", "deploy/export.py", "model.py"):
            before = digests()
            change(shared)
            after = digests()
            assert after[0] != before[0] and after[1] != before[1], shared
    finally:
        base.writers_digest.cache_clear()  # the real sources' digests next


@pytest.mark.slow
def test_litert_int8_probes_run_the_int8_kernels_with_the_networks_interface(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A chain takes int8 from its neighbours; a whole network takes uint8 pixels and gives float
    logits, as the .tflite writer's int8 files do; both resize."""
    pytest.importorskip("litert_torch")
    pytest.importorskip("ai_edge_quantizer")
    import numpy as np

    from mobilenet.latency.backends import LiteRtBackend, probe_module
    from mobilenet.latency.probes import NetworkProbe, Probe

    monkeypatch.setenv("MOBILENET_CACHE", str(tmp_path))
    backend = LiteRtBackend("int8", 1)
    for probe, size, dtypes in ((Probe("pointwise", 16, (8, 16)), 8, (np.int8, np.int8)),
                                (NetworkProbe(0.25, (32, 64)), 32, (np.uint8, np.float32))):
        shaped = backend.load(probe_module(probe, size, fixed_pads=True), probe.input_shape(size))
        for at in probe.sizes:
            cell = shaped(probe.input_shape(at))
            interpreter = cell.run.__self__  # (the cell runs the interpreter's invoke)
            cell.run()
            (given,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
            assert (given["dtype"], out["dtype"]) == dtypes
            assert list(given["shape"][1:3]) == [at, at]
            ops = {op["op_name"] for op in interpreter._get_ops_details()}
            assert "CONV_2D" in ops or "DELEGATE" in ops
    assert backend.converting_s > 0 and len(list((tmp_path / "latency-probes").iterdir())) == 2


@pytest.mark.slow
def test_executorch_int8_probes_build_once_and_run_at_every_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A strided conv's int8 probe exports with a dynamic (even) side, and each size's cell runs
    after the function that made them is gone (a cell once kept only its method, which points
    into a program it does not hold)."""
    import gc

    pytest.importorskip("executorch.runtime")
    pytest.importorskip("torchao")
    from mobilenet.latency.backends import ExecuTorchBackend, probe_module
    from mobilenet.latency.probes import Probe

    monkeypatch.setenv("MOBILENET_CACHE", str(tmp_path))
    backend = ExecuTorchBackend("int8", 1)
    for probe in (Probe("depthwise_s2", 16, (8, 16)),):
        shaped = backend.load(probe_module(probe, probe.sizes[0], fixed_pads=True), probe.input_shape(probe.sizes[0]),
                              largest_side=max(probe.sizes))
        cells = [(at, shaped(probe.input_shape(at))) for at in probe.sizes]
        del shaped
        gc.collect()
        for at, cell in cells:
            (out,) = cell.run()
            assert tuple(out.shape) == (1, *probe.layers(at)[-1].out_shape)  # NHWC in, the module's NCHW out
    kept = sorted(p.name for p in (tmp_path / "latency-probes").iterdir())
    assert len(kept) == 1 and kept[0].startswith("executorch-int8-")


def test_openvino_probes_compile_with_the_predictors_own_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("openvino")
    from mobilenet.deploy.runtimes import ov
    from mobilenet.latency.backends import OpenVinoBackend, probe_module
    from mobilenet.latency.probes import Probe

    configs: list[dict[str, object]] = []
    real = ov.compile_config
    monkeypatch.setattr(ov, "compile_config", lambda *args: configs.append(real(*args)) or configs[-1])
    probe = Probe("pointwise", 16, (8,))
    shaped = OpenVinoBackend("fp32", 1).load(probe_module(probe, 8), probe.input_shape(8))
    shaped(probe.input_shape(8)).run()
    assert configs == [real("fp32", 1)]
    assert configs[0]["INFERENCE_PRECISION_HINT"] == "f32" and configs[0]["INFERENCE_NUM_THREADS"] == 1


def test_openvino_int8_probes_are_timed_at_any_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """NNCF feeds its calibration one image at a time: a probe quantized at the batch it is timed
    at (8 in a batch-8 calibration) stopped the calibration with a shape error. Quantized once at
    batch 1 and kept, the probe runs at every batch."""
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    from mobilenet.latency.backends import OpenVinoBackend, probe_module
    from mobilenet.latency.probes import Probe

    monkeypatch.setenv("MOBILENET_CACHE", str(tmp_path))
    probe = Probe("pointwise", 16, (8,))
    for batch in (2, 1):
        backend = OpenVinoBackend("int8", 1)
        shaped = backend.load(probe_module(probe, 8), probe.input_shape(8, batch))
        out = shaped(probe.input_shape(8, batch)).run()
        assert tuple(out.shape) == (batch, *probe.layers(8)[-1].out_shape)
    # The second batch size found the first one's quantized model: nothing was converted again.
    assert backend.converting_s == 0 and len(list((tmp_path / "latency-probes").iterdir())) == 1


@pytest.mark.parametrize(("runtime", "precision", "needs"), [
    ("openvino", "fp32", ("openvino",)), ("openvino", "int8", ("openvino", "nncf")),
    ("executorch", "fp32", ("executorch.runtime",)),
    pytest.param("executorch", "int8", ("executorch.runtime", "torchao"), marks=pytest.mark.slow),
])
def test_a_runtime_profiles_a_network_layer_by_layer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, runtime: str, precision: str, needs: tuple[str, ...],
) -> None:
    """OpenVINO's counters, and XNNPACK's operator timings in ExecuTorch's ETDump, split a
    network's call into exactly its layers (stem, the 26 convs of the blocks, pool, classifier),
    each timed: what the calibration fits the rooflines to."""
    for module in needs:
        pytest.importorskip(module)
    from mobilenet.latency.backends import probe_module
    from mobilenet.latency.probes import NetworkProbe

    monkeypatch.setenv("MOBILENET_CACHE", str(tmp_path))
    probe = NetworkProbe(0.25, (96,))
    cell = BACKENDS[runtime](precision, 1).load(probe_module(probe, 96, fixed_pads=True), probe.input_shape(96))(
        probe.input_shape(96))
    assert cell.profile is not None
    layers = cell.profile(0.05)
    assert len(layers) == len(probe.layers(96, 1, 4)) == 29
    # Both count whole microseconds: a layer on a 3x3 map can read 0 on a fast CPU (Zen 5).
    assert all(seconds >= 0 for seconds in layers) and all(seconds > 0 for seconds in layers[:10])


def test_an_onnx_runtime_int8_probe_has_its_pads_folded_into_its_convs_as_the_writers_files() -> None:
    """A stride-2 depthwise conv pads as TF does ('SAME': one row and column more at the end),
    which TorchScript's exporter computes in ops of their own. Quantized as exported, the pad
    stayed a float Pad between a DequantizeLinear and a QuantizeLinear (10-18% of an int8
    network's time); the writer's files fold it into the conv, and so must the probe."""
    pytest.importorskip("onnxruntime.quantization")
    import onnx

    from mobilenet.latency.backends import probe_module
    from mobilenet.latency.backends.base import onnx_bytes
    from mobilenet.latency.backends.ort import OnnxRuntimeBackend
    from mobilenet.latency.probes import Probe

    probe = Probe("depthwise_s2", 16, (8,))
    shape = probe.input_shape(8)
    exported = onnx_bytes(probe_module(probe, 8, fixed_pads=True), shape)
    assert "Pad" in {n.op_type for n in onnx.load_from_string(exported).graph.node}, "the case this guards"
    quantized = onnx.load_from_string(OnnxRuntimeBackend._quantized(exported, shape))
    ops = [n.op_type for n in quantized.graph.node]
    assert "Pad" not in ops and ops.count("Conv") == 1
    conv = next(n for n in quantized.graph.node if n.op_type == "Conv")
    assert next(a.ints for a in conv.attribute if a.name == "pads") == [0, 0, 1, 1]


def test_an_openvino_int8_probe_is_quantized_once_and_kept_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """NNCF's quantization of a probe is kept as LiteRT's conversion is: the second load reads
    the kept model (no time spent converting), which still holds NNCF's int8 quantizers, at
    every size."""
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    from mobilenet.deploy import quantize
    from mobilenet.latency.backends import OpenVinoBackend, probe_module
    from mobilenet.latency.backends import ov as ov_backend
    from mobilenet.latency.probes import Probe

    monkeypatch.setenv("MOBILENET_CACHE", str(tmp_path))
    quantized: list[object] = []
    real = quantize.quantize_openvino
    monkeypatch.setattr(quantize, "quantize_openvino", lambda *a, **k: quantized.append(real(*a, **k)) or quantized[-1])
    probe = Probe("pointwise", 16, (8, 16))
    module = probe_module(probe, 8)
    first, second = OpenVinoBackend("int8", 1), OpenVinoBackend("int8", 1)
    first.load(module, probe.input_shape(8))
    assert len(quantized) == 1 and first.converting_s > 0
    shaped = second.load(module, probe.input_shape(8))
    assert len(quantized) == 1 and second.converting_s == 0, "the kept model is read, not quantized again"
    for at in probe.sizes:
        assert tuple(shaped(probe.input_shape(at)).run().shape) == (1, *probe.layers(at)[-1].out_shape)
    (kept,) = (tmp_path / "latency-probes").iterdir()
    xml, weights = ov_backend.unpack(kept.read_bytes()[:-32])
    assert b"FakeQuantize" in xml and len(weights) > 0, "NNCF's int8 model, not the fp32 one"
    assert ov_backend.unpack(ov_backend.pack(b"<net/>", b"\x00\x01")) == (b"<net/>", b"\x00\x01")


def test_bench_predict_puts_each_prediction_beside_its_measurement(monkeypatch: pytest.MonkeyPatch) -> None:
    from mobilenet.deploy.bench import BenchReport, Cell, format_report
    from mobilenet.latency import versus

    def fixed_predict(arch_cfg: ArchConfig, runtime: str, precision: str, batch_size: int, threads: int | None,
                      **kwargs: object) -> object:
        if precision == "int8":
            raise InputError("the latency model cannot calibrate torch at int8")
        return predict_with(fixed_calibration(runtime, precision), arch_cfg, batch_size)

    monkeypatch.setattr(versus, "predict", fixed_predict)
    cfg = ArchConfig(alpha=0.5, resolution=160)
    expected = fixed_predict(cfg, "onnxruntime", "fp32", 1, None)
    cells = [Cell("onnxruntime fp32", "onnxruntime", "fp32", 1, median_ms=expected.total_ms * 2),  # type: ignore[attr-defined]
             Cell("torch int8", "torch", "int8", 1, median_ms=1.0), Cell("timm eager fp32", "timm", "fp32", 1,
             median_ms=1.0, peer=True), Cell("openvino fp32", "openvino", "fp32", 1, status="skipped")]
    rows = versus.predicted_cells(cfg, cells, None, print)
    assert [r["name"] for r in rows] == ["onnxruntime fp32", "torch int8"], "peers and unmeasured cells left out"
    assert rows[0]["predicted_ms"] == pytest.approx(expected.total_ms) and rows[0]["error"] == pytest.approx(-0.5)
    assert rows[1]["predicted_ms"] is None and "int8" in rows[1]["reason"]
    measured = [{"runtime": "onnxruntime", "kind": k, "label": k, "time_share": 0.2, "mult_add_share": 0.2}
                for k in ("conv", "depthwise", "pointwise", "pool", "fc", "other")]
    shares = versus.with_predicted_shares(cfg, measured, None, print)
    predicted = expected.shares()  # type: ignore[attr-defined]
    assert shares[0]["predicted_share"] == pytest.approx(predicted["stem"]), "bench's conv is the stem"
    assert shares[1]["predicted_share"] == pytest.approx(predicted["depthwise"])
    assert shares[-1]["predicted_share"] is None, "the model has no 'other' kernels"
    report = BenchReport(model=cfg.name, config={}, machine={"cpu": "?", "threads": 1, "malloc_tunables": False,
                         "omp_wait_policy": None}, mult_adds=1, gflop_per_image=1.0, sgemm_peak_gflops=1.0,
                         layer_shares=shares, predicted=rows)
    text = format_report(report)
    assert "-50.0%" in text and "not predicted" in text
    header = next(line for line in text.splitlines() if line.startswith("runtime ") and "mult-adds" in line)
    assert header.split()[-1] == "predicted"


def test_bench_predict_puts_each_layers_prediction_beside_its_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    """Per layer, ONNX Runtime's real profile (bench's, read as its calibration reads it) scaled
    to the measured call less the predicted call overhead, beside the prediction; without a
    batch-1 fp32 cell to scale it to, the shares."""
    from mobilenet.deploy.bench import BenchReport, Cell, format_report, network_layer_seconds
    from mobilenet.latency import versus
    from mobilenet.model import MobileNetV1

    cfg = ArchConfig(alpha=0.25, resolution=96)
    expected = predict_with(fixed_calibration(), cfg, 1)
    monkeypatch.setattr(versus, "predict", lambda *args, **kwargs: expected)
    model = MobileNetV1(cfg).eval()
    median = 2.0
    cells = [Cell("onnxruntime fp32", "onnxruntime", "fp32", 1, median_ms=median),  # type: ignore[attr-defined]
             Cell("onnxruntime fp32", "onnxruntime", "fp32", 8, median_ms=9.0)]  # type: ignore[attr-defined]
    profiles = {"onnxruntime": network_layer_seconds(model, "onnxruntime", torch.rand(1, 3, 96, 96), 1, 0.3)}
    rows = versus.predicted_layers(cfg, cells, profiles, 1, print)
    assert [r["layer"] for r in rows] == [x.name for x in expected.layers]
    assert [r["predicted_ms"] for r in rows] == [x.predicted_ms for x in expected.layers]
    assert all(r["measured_ms"] > 0 for r in rows), "every layer of the chain got a share of the profile"
    assert sum(r["measured_ms"] for r in rows) == pytest.approx(median - expected.call_ms)
    assert all(r["error"] == pytest.approx(r["predicted_ms"] / r["measured_ms"] - 1) for r in rows)
    dw = [r["measured_ms"] for r in rows if r["kind"] == "depthwise"]
    assert dw[0] > dw[-1], "a 48x48 map's depthwise conv takes longer than a 3x3 map's"
    report = BenchReport(model=cfg.name, config={}, machine={"cpu": "?", "threads": 1, "malloc_tunables": False,
                         "omp_wait_policy": None}, mult_adds=1, gflop_per_image=1.0, sgemm_peak_gflops=1.0,
                         layer_predictions=rows)
    line = next(x for x in format_report(report).splitlines() if x.startswith("blocks.0.dw "))
    assert line.split() == ["blocks.0.dw", f"{rows[1]['measured_ms']:.4f}", f"{rows[1]['predicted_ms']:.4f}",
                            f"{rows[1]['error']:+.0%}"]
    unscaled = versus.predicted_layers(cfg, cells[1:], profiles, 1, print)
    assert all(r["measured_ms"] is None and r["error"] is None for r in unscaled)
    assert sum(r["measured_share"] for r in unscaled) == pytest.approx(1.0)
    assert sum(r["predicted_share"] for r in unscaled) == pytest.approx(1.0)
    # A profile that does not split into the network's layers is left out, as the calibration leaves it.
    short = {"onnxruntime": [1e-3] * (len(expected.layers) - 1)}
    assert versus.predicted_layers(cfg, cells, short, 1, print) == []


def test_bench_predict_leaves_out_the_conversion_that_bench_does_not_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """bench feeds a LiteRT file its own NHWC input, converted once; the model predicts a
    predictor's call, which converts the image first (here at 1 GB/s: 0.3 ms for 224 px). The
    prediction beside bench's figure is the call without that conversion; a prediction carries it."""
    from mobilenet.deploy.bench import Cell
    from mobilenet.latency import versus

    calibration = fixed_calibration("litert", fixed_batch=True, feed_bytes_per_s=1e9)
    cfg = ArchConfig()
    prediction = predict_with(calibration, cfg, 1)
    assert prediction.conversion_ms == pytest.approx(3 * 224 * 224 * 4 / 1e9 * 1e3)
    assert prediction.to_dict()["conversion_ms"] == prediction.conversion_ms
    monkeypatch.setattr(versus, "predict", lambda *args, **kwargs: prediction)
    (row,) = versus.predicted_cells(cfg, [Cell("litert fp32", "litert", "fp32", 1, median_ms=1.0)], None, print)
    assert row["predicted_ms"] == pytest.approx(prediction.total_ms - prediction.conversion_ms)
    assert predict_with(fixed_calibration(), cfg, 1).conversion_ms == 0.0, "ONNX Runtime takes the batch as it is"


# --- choose ----------------------------------------------------------------------------------

def entry(family: str, alpha: float, size: int, top1: float, padding: str = "tf") -> SimpleNamespace:
    arch_cfg = ArchConfig(alpha=alpha, resolution=size, padding=padding)  # type: ignore[arg-type]
    return SimpleNamespace(family=family, arch_cfg=arch_cfg, published={"top1": top1})


SYNTHETIC_REGISTRY = {
    "tf_1.0_224": entry("tf", 1.0, 224, 70.9), "tf_0.75_192": entry("tf", 0.75, 192, 67.2),
    "keras_0.75_192": entry("keras", 0.75, 192, 67.2, "keras"), "tf_0.5_160": entry("tf", 0.5, 160, 59.1),
    "tf_0.25_128": entry("tf", 0.25, 128, 41.5), "quant_0.75_192": entry("tf-quant", 0.75, 192, 66.1),
    "quant_0.5_160": entry("tf-quant", 0.5, 160, 57.7), "unpublished": SimpleNamespace(family="tf", published={}),
}


def predicted_ms(alpha: float, size: int) -> float:
    return predict_with(fixed_calibration(), ArchConfig(alpha=alpha, resolution=size)).total_ms


def test_choose_picks_the_most_accurate_model_predicted_to_fit() -> None:
    budget = predicted_ms(0.75, 192) * 1.02  # 0.75-192 fits, 1.0-224 does not
    choice = choose(budget, "onnxruntime", measure_best=0, registry=SYNTHETIC_REGISTRY,
                    calibration=fixed_calibration())
    assert choice.chosen.name == "tf_0.75_192", "the tie on top-1 with Keras' copy goes to TF's own, the faster"
    assert [c.name for c in choice.candidates][:2] == ["tf_1.0_224", "tf_0.75_192"]
    assert not any(c.family == "tf-quant" for c in choice.candidates), "float precision: float models"
    int8 = choose(budget, "onnxruntime", "int8", measure_best=0, registry=SYNTHETIC_REGISTRY,
                  calibration=fixed_calibration(precision="int8"))
    assert {c.family for c in int8.candidates} == {"tf-quant"}


def test_choose_trusts_the_measured_times_over_the_predicted_ones() -> None:
    budget = predicted_ms(0.75, 192) * 1.02
    timed: list[list[str]] = []

    def slow_075(configs: Sequence[ArchConfig]) -> list[float]:  # 0.75 runs 30% slower than predicted
        timed.append([c.name for c in configs])
        return [predicted_ms(c.alpha, c.height) * (1.3 if c.alpha == 0.75 else 1.0) for c in configs]

    found = candidates(SYNTHETIC_REGISTRY, fixed_calibration(), 1)
    chosen, judged = choose_from(found, budget, timer=slow_075, measure_best=2, log=lambda line: None)
    assert chosen.name == "tf_0.5_160"
    assert chosen.measured_ms == pytest.approx(predicted_ms(0.5, 160))
    assert timed[0] == ["mobilenet_v1_0.75_192", "mobilenet_v1_0.75_192"], "TF's and Keras' padding: both timed"
    assert any(c.measured_ms is None for c in judged), "the slowest were never built"


def test_choose_times_models_out_of_the_predictions_reach_when_the_machine_runs_faster() -> None:
    """The machine runs 30% faster than when it was calibrated (seen within minutes on one guest):
    0.75-192, predicted 1.3x over the budget and beyond the margin, is timed once the first models
    timed say so, and fits. Before, choose stopped at 0.5-160, which fitted by its prediction."""
    budget = predicted_ms(0.75, 192) / 1.3
    faster = lambda cfgs: [predicted_ms(c.alpha, c.height) * 0.7 for c in cfgs]  # noqa: E731
    said: list[str] = []
    found = candidates(SYNTHETIC_REGISTRY, fixed_calibration(), 1)
    chosen, _ = choose_from(found, budget, timer=faster, measure_best=1, log=said.append)
    assert chosen.arch_cfg.alpha == 0.75 and chosen.measured_ms == pytest.approx(budget * 0.91)
    assert any("1.43x faster than predicted" in line for line in said)
    # Never the other way: TF's 0.75-192 runs 30% slow, which says nothing of Keras' copy.
    tf_slow = lambda cfgs: [predicted_ms(c.alpha, c.height) * (1.3 if c.padding == "tf" else 0.9)  # noqa: E731
                            for c in cfgs]
    chosen, _ = choose_from(found, predicted_ms(0.75, 192) / 1.05, timer=tf_slow, measure_best=1, log=said.append)
    assert chosen.name == "keras_0.75_192", "a model that only looks slow is timed, not dropped"


def test_choose_times_a_model_measured_near_the_budget_again_before_trusting_it() -> None:
    """One brief timing 2% under the budget, two more 8% over: the model does not fit."""
    budget = predicted_ms(0.75, 192) * 1.02
    calls: list[list[str]] = []

    def lucky_once(configs: Sequence[ArchConfig]) -> list[float]:
        calls.append([c.name for c in configs])
        lucky = len(calls) == 1
        return [budget * (0.98 if lucky else 1.08) if c.alpha == 0.75 else predicted_ms(c.alpha, c.height)
                for c in configs]

    found = candidates(SYNTHETIC_REGISTRY, fixed_calibration(), 1)
    chosen, judged = choose_from(found, budget, timer=lucky_once, measure_best=1, log=lambda line: None)
    assert calls[:3] == [["mobilenet_v1_0.75_192"]] * 3, "timed, then twice again"
    assert next(c for c in judged if c.name == "tf_0.75_192").measured_ms == pytest.approx(budget * 1.08)
    assert chosen.arch_cfg.alpha < 0.75
    clear, _ = choose_from(found, budget, timer=lambda cfgs: [budget * 0.8] * len(cfgs), measure_best=1,
                           log=lambda line: None)
    assert clear.name == "tf_0.75_192", "a clear fit is trusted at once"


def test_a_pick_measured_near_the_budget_says_so_and_names_one_with_room_to_spare() -> None:
    """Every budget bench_choose saw choose lose was a model within 5% of it: a pick that close is
    flagged, with the most accurate model timed that has 5% to spare; a clear pick is not."""
    from mobilenet.cli.latency import _table
    from mobilenet.latency.ranking import Choice

    budget = predicted_ms(0.75, 192) * 1.02

    def near(configs: Sequence[ArchConfig]) -> list[float]:  # 0.75-192 fits by 3%
        return [budget * 0.97 if c.alpha == 0.75 else predicted_ms(c.alpha, c.height) for c in configs]

    found = candidates(SYNTHETIC_REGISTRY, fixed_calibration(), 1)
    chosen, judged = choose_from(found, budget, timer=near, measure_best=3, log=lambda line: None)
    choice = Choice(budget, fixed_calibration(), 1, chosen, tuple(judged))
    assert chosen.arch_cfg.alpha == 0.75 and choice.borderline
    safer = choice.with_headroom
    assert safer is not None and safer.name == "tf_0.5_160"
    assert safer.measured_ms is not None and safer.measured_ms <= budget * 0.95
    assert choice.to_dict()["borderline"] and choice.to_dict()["with_headroom"]["name"] == "tf_0.5_160"
    text = "\n".join(_table(choice))
    assert "within 5% of the budget" in text and "tf_0.5_160" in text.split("note:")[1].splitlines()[0]
    clear = dataclasses.replace(choice, chosen=dataclasses.replace(chosen, measured_ms=budget * 0.9))
    assert not clear.borderline and clear.with_headroom is None and "note:" not in "\n".join(_table(clear))
    alone = dataclasses.replace(choice, candidates=(chosen,))  # nothing else was timed
    assert alone.borderline and alone.with_headroom is None
    assert "no model timed here" in "\n".join(_table(alone))


def test_a_choice_whose_models_ran_far_from_their_predictions_says_the_calibration_is_off() -> None:
    """A calibration cached in a slow spell predicted the models choose picked a median 29% over
    what they measured: the pick stands on the times, but the user learns that the predictions are
    off and how to mend it."""
    from mobilenet.cli.latency import _table
    from mobilenet.latency.ranking import Choice

    budget = predicted_ms(0.75, 192) * 1.02
    found = candidates(SYNTHETIC_REGISTRY, fixed_calibration(), 1)

    def choice_at(speed: float) -> Choice:
        timer = lambda cfgs: [predicted_ms(c.alpha, c.height) * speed for c in cfgs]  # noqa: E731
        chosen, judged = choose_from(found, budget, timer=timer, measure_best=3, log=lambda line: None)
        return Choice(budget, fixed_calibration(), 1, chosen, tuple(judged))

    fast = choice_at(1 / 1.29)
    assert fast.measured_over_predicted == pytest.approx(1 / 1.29) and fast.off_calibration
    assert fast.to_dict()["off_calibration"]
    text = "\n".join(_table(fast))
    assert "1.29x faster than predicted" in text and "--recalibrate" in text
    assert "1.29x slower" in "\n".join(_table(choice_at(1.29)))
    # At 2 threads (the imaginary machine's) the note names the other cause of a move, and the
    # setting that escapes it; at 1 thread, where nothing crosses between cores, it does not.
    assert fast.timed_in_parallel and "--threads 1 gives times that do not" in text
    one_thread = dataclasses.replace(fast, calibration=fixed_calibration(threads=1))
    assert not one_thread.timed_in_parallel and "--threads" not in "\n".join(_table(one_thread))
    steady = choice_at(1.05)
    assert not steady.off_calibration and "--recalibrate" not in "\n".join(_table(steady))
    untimed = choose(budget, "onnxruntime", measure_best=0, registry=SYNTHETIC_REGISTRY,
                     calibration=fixed_calibration())
    assert untimed.measured_over_predicted is None and not untimed.off_calibration


def test_choose_within_the_margin_measures_before_refusing() -> None:
    """A model predicted just over the budget may fit when measured: it is timed, not dropped."""
    budget = predicted_ms(0.25, 128) * 0.95
    found = candidates(SYNTHETIC_REGISTRY, fixed_calibration(), 1)
    chosen, _ = choose_from(found, budget, timer=lambda cfgs: [budget * 0.9] * len(cfgs), log=lambda line: None)
    assert chosen.name == "tf_0.25_128"


def test_the_margin_grows_with_the_calibrations_own_error_on_whole_networks() -> None:
    """A calibration whose fit missed whole networks by 12% has a prediction 16% over the budget
    timed (a fixed 10% left out the very models the fit said it could be that far off on)."""
    calibration = fixed_calibration()
    assert margin_for(calibration) == MARGIN, "no networks fitted: the floor"
    sloppy = dataclasses.replace(calibration, fit={"in_network": {"rmspe_after": 0.12}})
    assert margin_for(sloppy) == pytest.approx(0.24)
    assert margin_for(dataclasses.replace(calibration, fit={"in_network": {"rmspe_after": 0.9}})) == MAX_MARGIN
    budget = predicted_ms(0.5, 160) / 1.16  # 0.25-128 fits by its prediction
    found = candidates(SYNTHETIC_REGISTRY, calibration, 1)
    fits_when_timed = lambda cfgs: [budget * 0.9] * len(cfgs)  # noqa: E731
    chosen, _ = choose_from(found, budget, timer=fits_when_timed, margin=margin_for(calibration),
                            log=lambda line: None)
    assert chosen.name == "tf_0.25_128", "0.5-160 predicted 16% over: beyond a 10% margin, never timed"
    chosen, _ = choose_from(found, budget, timer=fits_when_timed, margin=margin_for(sloppy), log=lambda line: None)
    assert chosen.name == "tf_0.5_160"
    choice = choose(budget * 1.2, "onnxruntime", measure_best=0, registry=SYNTHETIC_REGISTRY, calibration=sloppy)
    assert choice.to_dict()["margin"] == pytest.approx(0.24)


def test_nothing_fits_says_how_fast_the_fastest_is_predicted_to_run() -> None:
    fastest = predicted_ms(0.25, 128)
    with pytest.raises(InputError, match=rf"tf_0.25_128, is predicted to take {fastest:.3g} ms"):
        choose(fastest / 2, "onnxruntime", measure_best=0, registry=SYNTHETIC_REGISTRY,
               calibration=fixed_calibration())


def test_a_budget_under_every_prediction_times_the_fastest_model_before_refusing() -> None:
    """The machine runs faster than when it was calibrated: the fastest model, predicted 1.5x the
    budget, fits when timed. Where it does not, the refusal says what it measured."""
    fastest = predicted_ms(0.25, 128)
    found = candidates(SYNTHETIC_REGISTRY, fixed_calibration(), 1)
    timed: list[list[float]] = []

    def faster(cfgs: Sequence[ArchConfig]) -> list[float]:
        timed.append([c.alpha for c in cfgs])
        return [predicted_ms(c.alpha, c.height) * 0.6 for c in cfgs]

    chosen, _ = choose_from(found, fastest / 1.5, timer=faster, log=lambda line: None)
    assert chosen.name == "tf_0.25_128" and timed[0] == [0.25]
    with pytest.raises(InputError, match=rf"measured here \(the fastest predicted; 1 timed in all\), the quickest, "
                                         rf"tf_0.25_128, takes {fastest * 0.6:.3g} ms"):
        choose_from(found, fastest / 2, timer=faster, log=lambda line: None)


def test_choose_on_a_machine_slower_than_its_calibration_times_on_until_a_model_fits() -> None:
    """The machine runs 1.3x slower than calibrated: the models predicted just under the budget all
    measure over it, and the rounds ended there with "nothing fits", though 0.5-224, predicted far
    inside the budget, was never timed. The rest predicted to fit are now timed, those that fit at
    the pace measured first, each once, until one fits; a refusal then says truly what was timed."""
    specs = [(1.0, 224, 70.9, 1.05), (1.0, 192, 70.0, 0.95), (0.75, 224, 68.4, 0.98), (1.0, 160, 68.0, 0.90),
             (0.75, 192, 67.2, 0.80), (1.0, 128, 65.2, 0.78), (0.5, 224, 63.3, 0.40), (0.25, 128, 41.5, 0.20)]
    found = [Candidate(f"m{a}_{r}", "tf", ArchConfig(alpha=a, resolution=r), t, ms) for a, r, t, ms in specs]
    predicted = {c.shape: c.predicted_ms for c in found}

    def slower(times: float, timed: list[ArchConfig]) -> Callable[[Sequence[ArchConfig]], list[float]]:
        def timer(cfgs: Sequence[ArchConfig]) -> list[float]:
            timed.extend(c.workload() for c in cfgs)
            return [predicted[c.workload()] * times for c in cfgs]
        return timer

    for measure_best in (1, 2, 3):
        timed: list[ArchConfig] = []
        said: list[str] = []
        chosen, judged = choose_from(found, 1.0, timer=slower(1.3, timed), measure_best=measure_best, margin=0.1,
                                     log=said.append)
        fitting = [c for c in judged if c.measured_ms is not None and c.measured_ms <= 1.0]
        assert chosen.measured_ms is not None and chosen.measured_ms <= 1.0
        assert chosen.top1 == max(c.top1 for c in fitting) and chosen.name == "m0.5_224"
        # (once each, or thrice where measured within 5% of the budget; none after a round where one fits)
        assert all(timed.count(shape) in (1, 3) for shape in timed)
        if measure_best == 1:
            assert ArchConfig(alpha=0.25, resolution=128).workload() not in timed
        if measure_best < 3:  # (at 3 a round, the rounds themselves reach 0.5-224)
            assert any("more predicted to fit" in line and "1.30x slower" in line for line in said)
    # Slower still, nothing fits: every model predicted to fit has been timed, and the refusal says so.
    timed = []
    with pytest.raises(InputError, match=r"measured here \(the 7 architectures predicted to fit and the fastest "
                                         r"predicted; 8 timed in all\), the quickest, m0.25_128, takes 1.2 ms"):
        choose_from(found, 1.0, timer=slower(6.0, timed), measure_best=1, margin=0.1, log=lambda line: None)
    assert set(timed) == set(predicted)
    # The published registry under a synthetic calibration, at budgets 0.5-5 ms on a machine 1.5x
    # slower: wherever some model measures within the budget, one that does is chosen.
    registry_found = candidates(REGISTRY, fixed_calibration(), 1)
    shape_ms = {c.shape: c.predicted_ms for c in registry_found}
    slow = lambda cfgs: [shape_ms[c.workload()] * 1.5 for c in cfgs]  # noqa: E731
    for budget in np.geomspace(min(shape_ms.values()), max(shape_ms.values()), 25):
        if min(shape_ms.values()) * 1.5 > budget:
            continue
        chosen, judged = choose_from(registry_found, float(budget), timer=slow, measure_best=1, log=lambda line: None)
        fits = [c for c in judged if c.measured_ms is not None and c.measured_ms <= budget]
        assert chosen.measured_ms is not None and chosen.measured_ms <= budget
        assert chosen.top1 == max(c.top1 for c in fits)


# --- bad input -------------------------------------------------------------------------------

@pytest.mark.parametrize("budget", [0, -1.0, math.nan, math.inf, True, "3"])
def test_a_budget_must_be_a_positive_number_of_milliseconds(budget: object) -> None:
    with pytest.raises(InputError, match="budget must be a number of milliseconds > 0"):
        choose(budget, "onnxruntime", calibration=fixed_calibration(), registry=SYNTHETIC_REGISTRY)  # type: ignore[arg-type]


def test_requests_the_model_cannot_serve_are_refused_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InputError, match="onnxruntime does not offer bf16"):
        calibrate("onnxruntime", "bf16")
    with pytest.raises(InputError, match="auto picks a runtime by measuring"):
        calibrate("auto")
    with pytest.raises(InputError, match="threads must be an int >= 1"):
        calibrate("torch", threads=0)

    real_import = importlib.import_module

    def without_litert(name: str, *args: object) -> object:
        if name.startswith(("litert_torch", "ai_edge_litert")):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args)

    monkeypatch.setattr(importlib, "import_module", without_litert)
    with pytest.raises(MissingRuntimeError, match=r"pip install 'mobilenet\[litert\]'"):
        calibrate("litert")


def test_choose_refuses_an_unknown_runtime_and_constants_of_another_request_in_one_line() -> None:
    """Given constants, choose checked neither the runtime (a KeyError deep in the timer) nor that
    the constants were of the request (ranked by fp32's predictions, timed at int8)."""
    given = fixed_calibration(threads=1)
    refusals = {
        "the latency model predicts": dict(runtime="onnxrt"),
        "the calibration given is onnxruntime fp32 at batch 1, not the onnxruntime int8": dict(precision="int8"),
        "the calibration given is onnxruntime fp32 at batch 1, not the onnxruntime fp32 at batch 8":
            dict(batch_size=8),
        "the calibration given is onnxruntime fp32 at batch 1, not the torch fp32": dict(runtime="torch"),
    }
    for message, asked in refusals.items():
        for measure_best in (0, 1):
            request = {"runtime": "onnxruntime", "precision": "fp32", "threads": 1, **asked}
            with pytest.raises(InputError, match=message) as refused:
                choose(5.0, **request, measure_best=measure_best, registry=SYNTHETIC_REGISTRY,  # type: ignore[arg-type]
                       calibration=given, log=lambda line: None)
            assert "\n" not in str(refused.value)
    litert = fixed_calibration("litert", fixed_batch=True)  # (a fixed-batch runtime is calibrated at batch 1)
    assert choose(1000.0, "litert", batch_size=8, measure_best=0, registry=SYNTHETIC_REGISTRY, calibration=litert)


def test_a_negative_count_of_models_to_time_is_refused(capsys: pytest.CaptureFixture,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """--measure -1 was taken as 0 (nothing timed); it is refused before anything is calibrated."""
    from mobilenet.latency import own_process

    def started(*args: object, **kwargs: object) -> None:
        raise AssertionError("a calibration or a process was started for a request that cannot run")

    monkeypatch.setattr(own_process, "call_apart", started)
    monkeypatch.setattr(latency, "calibrated", started)
    assert main(["choose", "--budget-ms", "3", "--runtime", "onnxruntime", "--measure", "-1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--measure must be an int >= 0" in err
    with pytest.raises(InputError, match="measure_best must be an int >= 0"):
        choose(3.0, "onnxruntime", measure_best=-1, calibration=fixed_calibration(), registry=SYNTHETIC_REGISTRY)


@pytest.mark.parametrize("budget", ["0", "-2", "nan", "inf"])
def test_choose_command_refuses_a_bad_budget_with_exit_status_2(budget: str, capsys: pytest.CaptureFixture) -> None:
    assert main(["choose", "--budget-ms", budget, "--runtime", "onnxruntime"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "budget must be a number of milliseconds > 0" in err


def test_choose_command_refuses_a_bad_thread_count_before_starting_a_process_for_it(
    capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ONNX Runtime's candidates are timed in a process of their own: the count was refused only
    there, after a line saying the child had started, and in the library's keyword spelling."""
    from mobilenet.latency import own_process

    def started(*args: object, **kwargs: object) -> None:
        raise AssertionError("a process was started for a request that cannot run")

    monkeypatch.setattr(own_process, "call_apart", started)
    assert main(["choose", "--budget-ms", "3", "--runtime", "onnxruntime", "--threads", "0"]) == 2
    assert capsys.readouterr().err == ("mobilenet choose: error: --threads must be an int >= 1 (or None: the "
                                       "runtime's default), got 0\n")


def test_more_threads_than_this_process_may_use_are_refused_before_a_process_or_probe_starts(
    capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """--threads 100000 was passed on to ONNX Runtime, which started that many threads."""
    from mobilenet.latency import own_process

    def started(*args: object, **kwargs: object) -> None:
        raise AssertionError("a process was started for a request that cannot run")

    monkeypatch.setattr(own_process, "call_apart", started)
    cpus = len(os.sched_getaffinity(0))
    refused = f"more than the {cpus} CPU{'s' if cpus > 1 else ''} this process may use: ask for at most {cpus}"
    assert main(["choose", "--budget-ms", "3", "--runtime", "onnxruntime", "--threads", "100000"]) == 2
    assert capsys.readouterr().err == f"mobilenet choose: error: --threads is 100000, {refused}, or leave it out " \
                                      "for the runtime's default\n"
    with pytest.raises(InputError, match=f"threads is {cpus + 1}, {refused}"):
        calibrate("torch", threads=cpus + 1)


@pytest.mark.parametrize("seconds", ["0", "-1", "nan", "inf", "61"])
def test_choose_command_refuses_bad_timing_seconds_with_exit_status_2(seconds: str,
                                                                       capsys: pytest.CaptureFixture) -> None:
    assert main(["choose", "--budget-ms", "3", "--runtime", "onnxruntime", "--measure-seconds", seconds]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "seconds to time each architecture must be a number in (0, 60]" in err


def test_choose_times_each_architecture_as_long_as_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    from mobilenet.latency import ranking

    asked: list[float] = []

    def timer_for(runtime: str, precision: str, batch_size: int, threads: int | None,
                  seconds: float = latency.MEASURE_SECONDS) -> Callable[[Sequence[ArchConfig]], list[float]]:
        asked.append(seconds)
        return lambda cfgs: [0.01] * len(cfgs)

    monkeypatch.setattr(ranking, "measure_architectures", timer_for)
    for seconds in (None, 2.5):
        extra = {} if seconds is None else {"measure_seconds": seconds}
        # (1 thread: in this process, where the timer is replaced; above it, a process of its own)
        choose(predicted_ms(0.75, 192), "onnxruntime", threads=1, registry=SYNTHETIC_REGISTRY,
               calibration=fixed_calibration(threads=1), log=lambda line: None, **extra)
    assert asked == [latency.MEASURE_SECONDS, 2.5]


def test_choose_on_given_constants_is_not_judged_by_this_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Constants from another machine (``calibration=``) rank its models here without timing
    anything: a CPU without native bf16 does not refuse a bf16 calibration it only reads."""
    monkeypatch.setattr("mobilenet.deploy.runtimes.pytorch.cpu_info", lambda: ZEN3)
    choice = choose(1000.0, "torch", "bf16", measure_best=0, registry=SYNTHETIC_REGISTRY,
                    calibration=fixed_calibration("torch", "bf16"))
    assert choice.chosen.top1 == max(c.top1 for c in choice.candidates)


def test_onnx_runtime_above_one_thread_is_calibrated_in_a_process_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its sessions' pools slow each other in one process (docs/latency.md §0), so the probes run
    in a child on one pool; its progress reaches the caller's log and its errors are raised here."""
    monkeypatch.setenv("MOBILENET_CACHE", str(tmp_path))
    lines: list[str] = []
    calibration = calibrate("onnxruntime", threads=2, plan=quick_plan()[:3], networks=quick_networks()[:1],
                            seconds_per_shape=0.02, log=lines.append)
    assert calibration.threads == 2 and calibration.fit["process"] == "its own, one thread pool"
    timing = {n: cache.calibration_key("onnxruntime", "fp32", threads=n)["timing"] for n in (1, 2, None)}
    assert timing[2] == timing[None] != timing[1], "one measured beside its neighbours' pools is measured again"
    assert "in a process of its own" in lines[0] and any("building" in line for line in lines[1:])
    assert "process" not in calibrate("onnxruntime", threads=1, plan=quick_plan()[:3], networks=(),
                                      seconds_per_shape=0.02, log=print).fit, "one thread: no pool to share"
    from mobilenet.latency import own_process

    again = ("from mobilenet.deploy.runtimes.ort import share_one_pool as s; print(s(2), s(2), s(1), s(None))")
    out = subprocess.run([sys.executable, "-c", again], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["True", "True", "False", "False"], "no second pool: said, not raised"
    request = {"runtime": "onnxruntime", "threads": 2}
    with pytest.raises(MobileNetError, match="calibrating onnxruntime: ValueError"):
        own_process.call_apart("calibrate", {**request, "budget_s": "soon"}, runtime="onnxruntime", threads=2,
                               doing="calibrating onnxruntime", log=print)
    with pytest.raises(MobileNetError, match="no 'bench' to run here; one of calibrate, choose"):
        own_process.call_apart("bench", {}, runtime="onnxruntime", threads=2, doing="benching", log=print)
    # What the child prints on stdout (itself, or a library in it) would land in the caller's own
    # output, such as `mobilenet choose --json`: it goes to stderr, which the caller passes on.
    printed = "from mobilenet.latency.own_process_main import main; main(); print('printed')"
    request = pickle.dumps({"function": "bench", "kwargs": {}, "runtime": "onnxruntime", "threads": 2,
                            "result": str(tmp_path / "outcome.pickle")})
    child = subprocess.run([sys.executable, "-c", printed], input=request, capture_output=True, timeout=120,
                           env=os.environ | {own_process.CHILD_ENV: "1"}, check=True)
    assert child.stdout == b"" and b"printed" in child.stderr
    monkeypatch.setattr(sys, "executable", "/bin/false")
    with pytest.raises(MobileNetError, match="ended \\(status 1\\) without a result"):
        own_process.call_apart("calibrate", request, runtime="onnxruntime", threads=2, doing="calibrating", log=print)


SHARED_POOL_CALIBRATION = """
from mobilenet.latency import own_process
from mobilenet.latency.backends import BACKENDS
from mobilenet.latency.calibrate import calibrate_beside
from mobilenet.latency.probes import quick_networks, quick_plan
assert own_process.needed("onnxruntime", 2)
assert BACKENDS["onnxruntime"].share_one_pool(2)
print(own_process.needed("onnxruntime", 2), own_process.needed("onnxruntime", 4))
calls = []
calibration, beside = calibrate_beside("onnxruntime", "fp32", [lambda: calls.append(1)], threads=2,
                                       plan=quick_plan()[:3], networks=quick_networks()[:1],
                                       seconds_per_shape=0.02, log=lambda line: None)
print(calibration.fit["process"], calibration.fit["timed_beside"], len(beside), bool(calls))
"""


def test_a_process_on_one_pool_calibrates_there_with_calls_timed_beside(tmp_path: Path) -> None:
    """A process that has put its ONNX Runtime sessions on one pool of the calibration's size is
    what a process of its own would be: the calibration runs in it, and so can calls timed in its
    rounds (``bench_latency_model.py --joint`` at 2 threads, which was refused). A pool of another
    size still sends it apart. (A child: the pool is the whole process's, for good.)"""
    out = subprocess.run([sys.executable, "-c", SHARED_POOL_CALIBRATION], capture_output=True, text=True,
                         timeout=300, env=os.environ | {CACHE_ENV: str(tmp_path)})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines() == ["False True", "this one, one thread pool 1 1 True"]


def test_choose_times_onnx_runtime_above_one_thread_in_a_process_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its candidates, each a session with a pool of its own, ran whole blocks at up to 2.3x their
    time in one process (1.0-224: 3.4, 3.2 and 6.7 ms against 2.8 on one pool, docs/latency.md §0),
    so they are timed in a child on one pool; its progress reaches the caller's log and a refusal
    made there is raised here as the same one-line ``InputError``."""
    monkeypatch.setenv("MOBILENET_CACHE", str(tmp_path))
    lines: list[str] = []
    choice = choose(1000.0, "onnxruntime", threads=2, measure_best=1, measure_seconds=0.05,
                    calibration=fixed_calibration(threads=2), log=lines.append)
    assert "in a process of its own" in lines[0] and any("for real" in line for line in lines[1:])
    assert choice.chosen.measured_ms is not None and 0 < choice.chosen.measured_ms < 1000.0
    assert choice.chosen.top1 == max(c.top1 for c in choice.candidates), "with room for all: the most accurate"
    with pytest.raises(InputError, match=r"nothing fits 0\.001 ms: measured here.*; raise budget_ms$"):
        choose(0.001, "onnxruntime", threads=2, measure_best=1, measure_seconds=0.05,
               calibration=fixed_calibration(threads=2), log=lines.append)
    # The child speaks as its caller does: to `mobilenet choose`'s user, the flag.
    with pytest.raises(InputError, match=r"; raise --budget-ms$"), command_line_spelling({"budget_ms": "--budget-ms"}):
        choose(0.001, "onnxruntime", threads=2, measure_best=1, measure_seconds=0.05,
               calibration=fixed_calibration(threads=2), log=lines.append)
    with pytest.raises(InputError, match=r"cannot be sent there .*; give plain data, or threads=1"):
        choose(1000.0, "onnxruntime", threads=2, registry={"mine": SimpleNamespace(made=lambda: None)},
               calibration=fixed_calibration(threads=2), log=lines.append)


def test_a_calibration_that_misses_its_own_networks_says_so_and_why() -> None:
    def fitted(threads: int | None, error: float | None) -> Calibration:
        fit_info = {} if error is None else {"in_network": {"rmspe_after": error}}
        return dataclasses.replace(fixed_calibration(), threads=threads, fit=fit_info)

    warning = noisy_fit_warning(fitted(2, 0.29), logical_cores=2)
    assert warning and "29%" in warning and "2 logical cores" in warning and "remeasure=True" in warning
    with command_line_spelling({"remeasure": "--recalibrate"}):  # (the flag of cost, bench and choose)
        assert "--recalibrate" in (noisy_fit_warning(fitted(2, 0.29), logical_cores=2) or "")
    assert "logical cores" in (noisy_fit_warning(fitted(None, 0.29), logical_cores=2) or ""), "default: every core"
    one_thread = noisy_fit_warning(fitted(1, 0.29), logical_cores=2)
    assert one_thread and "logical cores" not in one_thread, "a spare core is not the reason"
    assert noisy_fit_warning(fitted(2, NOISY_FIT / 2), logical_cores=2) is None
    assert noisy_fit_warning(fitted(2, None), logical_cores=2) is None, "no networks fitted: nothing to judge"


def test_a_cached_calibration_that_missed_its_networks_says_so_at_every_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
) -> None:
    """It warned once, when it measured; a user reading predictions from it the next day heard
    nothing. Now every use says so, and cost --predict prints the error above its table."""
    monkeypatch.setenv("MOBILENET_CACHE", str(tmp_path))

    def noisy(runtime: str, precision: str, *, batch_size: int, threads: int | None, log: object) -> Calibration:
        return fixed_calibration(runtime, precision, threads=threads,
                                 fit={"in_network": {"rmspe_after": 0.187, "networks": 15}})

    cache.calibrated("onnxruntime", threads=1, measure=noisy, log=print)  # (calibrate() warns as it measures)
    monkeypatch.setattr(cache, "_WARNED", set())  # the next day: a new process
    lines: list[str] = []
    found = cache.calibrated("onnxruntime", threads=1, measure=noisy, log=lines.append)
    assert found.network_error == pytest.approx(0.187)
    assert len(lines) == 1 and "misses its own networks by 19%" in lines[0] and "remeasure=True" in lines[0]
    cache.calibrated("onnxruntime", threads=1, measure=noisy, log=lines.append)
    assert len(lines) == 1, "once a process: bench asks for it per cell"
    monkeypatch.setattr(cache, "_WARNED", set())  # a new process
    assert main(["cost", "--predict", "onnxruntime", "--threads", "1"]) == 0
    out, err = capsys.readouterr()
    assert "its own 15 networks predicted within 18.7% RMSPE" in out and "misses its own networks" in err
    assert "(calibrate again on a quiet machine: --recalibrate)" in err, "named as the command's user types it"
    assert main(["cost", "--predict", "onnxruntime", "--threads", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["latency"]["calibration_network_rmspe"] == pytest.approx(0.187)
    quiet = dataclasses.replace(found, fit={"in_network": {"rmspe_after": 0.05}})
    assert noisy_fit_warning(quiet, logical_cores=2) is None


def test_a_calibration_says_when_it_was_measured_and_predictions_and_choices_carry_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
) -> None:
    """The machine's speed moves between spells and a cached calibration keeps its own: the
    calibration records when it was measured (UTC), the record survives the cache, and ``cost
    --predict``, ``choose``'s header and both JSONs say it. One cached before it was recorded, or
    with a damaged time, says nothing rather than fail."""
    import datetime

    from mobilenet.cli.latency import _table, _when
    from mobilenet.latency.ranking import Choice

    pytest.importorskip("onnxruntime")
    before = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    fresh = calibrate("onnxruntime", threads=1, plan=quick_plan()[:2], networks=(), seconds_per_shape=0.02,
                      log=lambda line: None)
    assert fresh.measured_at is not None and before <= fresh.measured_at <= datetime.datetime.now(datetime.timezone.utc)
    at = datetime.datetime(2026, 12, 6, 14, 2, tzinfo=datetime.timezone.utc)
    constants = fixed_calibration(fit={"measured_at": at.isoformat(), "in_network": {"rmspe_after": 0.03,
                                                                                      "networks": 15}})
    assert Calibration.from_dict(constants.to_dict()).measured_at == at
    assert _when(constants, now=at + datetime.timedelta(hours=3)) == " (2026-12-06 14:02 UTC, 3 h ago)"
    assert _when(constants, now=at + datetime.timedelta(days=4)).endswith(", 4 days ago)")
    for record in ({}, {"measured_at": "yesterday"}, {"measured_at": 5}):
        assert fixed_calibration(fit=record).measured_at is None and _when(fixed_calibration(fit=record)) == ""

    monkeypatch.setattr(latency, "calibrated", lambda *args, **kwargs: constants)
    assert main(["cost", "--predict", "onnxruntime"]) == 0
    assert "Calibration (2026-12-06 14:02 UTC, " in capsys.readouterr().out
    assert main(["cost", "--predict", "onnxruntime", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["latency"]["calibrated_at"] == "2026-12-06T14:02:00+00:00"
    found = candidates(SYNTHETIC_REGISTRY, constants, 1)
    budget = predicted_ms(0.75, 192) * 1.02
    timer = lambda cfgs: [predicted_ms(c.alpha, c.height) * 1.29 for c in cfgs]  # noqa: E731
    chosen, judged = choose_from(found, budget, timer=timer, measure_best=3, log=lambda line: None)
    slow = Choice(budget, constants, 1, chosen, tuple(judged))
    assert "; calibrated (2026-12-06 14:02 UTC, " in _table(slow)[0] and slow.off_calibration
    assert slow.to_dict()["calibrated_at"] == "2026-12-06T14:02:00+00:00"


@pytest.mark.parametrize("command", ["cost", "compare"])
def test_predict_recalibrates_when_asked(command: str, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture) -> None:
    asked: list[bool] = []

    def calibrated(*args: object, remeasure: bool = False, **kwargs: object) -> Calibration:
        asked.append(remeasure)
        return fixed_calibration()

    monkeypatch.setattr(latency, "calibrated", calibrated)
    assert main([command, "--predict", "onnxruntime", "--json"]) == 0
    assert main([command, "--predict", "onnxruntime", "--recalibrate", "--json"]) == 0
    capsys.readouterr()
    assert asked == [False, True]


def test_cost_and_compare_add_predicted_time_with_predict(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
) -> None:
    path = "frozen TorchScript (what these probes ran)"
    mib = 2**20
    constants = dataclasses.replace(fixed_calibration(), key={"path": path}, cache_bytes=4 * mib)
    monkeypatch.setattr(latency, "calibrated", lambda *args, **kwargs: constants)
    assert main(["cost", "--alpha", "0.5", "--predict", "onnxruntime", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["latency"]["path"] == path
    expected = predict_with(constants, ArchConfig(alpha=0.5))
    weights = sum(x.weights for x in cost.network_cost(ArchConfig(alpha=0.5)).layers) * 4  # (5.1 MiB at fp32)
    assert data["latency"]["weight_bytes"] == weights
    assert data["latency"]["weight_bytes_from_memory"] == pytest.approx(weights - 4 * mib)
    assert [x["predicted_ms"] for x in data["layers"]] == [x.predicted_ms for x in expected.layers]
    assert all(x["bound"] in ("compute", "memory") for x in data["layers"])
    assert [(x["roofline"], x["intensity"], x["ridge"], x["attained_macs_per_s"]) for x in data["layers"]] == [
        (x.kernel, x.to_dict()["intensity"], x.to_dict()["ridge"], x.attained_macs_per_s) for x in expected.layers]
    assert data["total"]["predicted_ms"] == pytest.approx(expected.total_ms)
    assert data["latency"]["runtime"] == "onnxruntime"
    assert main(["cost", "--predict", "onnxruntime"]) == 0
    out = capsys.readouterr().out
    assert "Predicted on this machine" in out and f"Probes ran: {path}" in out
    assert "the cache keeps 4 MiB of them between calls, so 12.1 MiB come from memory every call" in out
    assert "Activations:" not in out and data["latency"]["layer_cache_bytes"] is None
    # At batch 8, a cache holding 4 MiB of a layer's activations: the first layers spill (1.0-224's
    # first pointwise conv moves (32 + 64) x 112 x 112 x 4 bytes an image), and say so.
    spilling = dataclasses.replace(constants, layer_cache_bytes=4 * mib)
    monkeypatch.setattr(latency, "calibrated", lambda *args, **kwargs: spilling)
    assert main(["cost", "--predict", "onnxruntime", "--batch-size", "8", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["latency"]["layer_cache_bytes"] == 4 * mib
    by_name = {x["name"]: x["spilled_bytes"] for x in data["layers"]}
    assert by_name["blocks.0.pw"] == 8 * (32 + 64) * 112 * 112 * 4 - 4 * mib and by_name["blocks.12.pw"] == 0
    assert main(["cost", "--predict", "onnxruntime", "--batch-size", "8"]) == 0
    assert "Activations: the cache holds 4 MiB of a layer's input and output" in capsys.readouterr().out
    assert main(["compare", "--predict", "onnxruntime", "--json"]) == 0
    blocks = json.loads(capsys.readouterr().out)["blocks"]
    assert all(b["predicted"]["speedup"] > 1 and b["predicted"]["why"] for b in blocks)
    assert main(["compare", "--predict", "onnxruntime"]) == 0
    assert "speed-up" in capsys.readouterr().out


def test_choose_takes_the_faster_measured_of_equally_accurate_models() -> None:
    """TF's 0.75-192 and Keras' port of it share a top-1; Keras' is predicted no faster but runs
    faster here, so it is chosen (the rule bench_choose.py judges by too)."""
    budget = predicted_ms(0.75, 192) * 1.5
    timed: list[str] = []

    def keras_faster(configs: Sequence[ArchConfig]) -> list[float]:
        timed.extend(c.padding for c in configs)
        return [budget * (0.7 if c.padding == "keras" else 0.9) if c.alpha == 0.75 else budget * 2 for c in configs]

    found = candidates(SYNTHETIC_REGISTRY, fixed_calibration(), 1)
    chosen, _ = choose_from(found, budget, timer=keras_faster, measure_best=1, log=lambda line: None)
    assert chosen.name == "keras_0.75_192" and chosen.measured_ms == pytest.approx(budget * 0.7)
    assert timed.count("keras") == 1, "timed although one as accurate already fitted"


def _bench_choose():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_choose.py"
    spec = importlib.util.spec_from_file_location("bench_choose", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_choose_keeps_each_budget_apart_from_every_models_time() -> None:
    """The judge of choose's target: a budget on a model's time asks whether that model measures a
    hair faster or slower, a coin toss for the exhaustive answer too. Each budget stays in its
    cell, at its middle where no model is near, else at the nearest point far enough from all."""
    bench = _bench_choose()
    apart = bench.APART
    # Ten cells of ratio 2 over [1, 1024]: their middles are 2 ** (i + 0.5).
    times = [1.0, 1024.0, 2 ** 2.5, 2 ** 4.5 * 1.01, 2 ** 7.5 * 0.99, 3.0, 100.0]
    middles = bench.spread_budgets(times, 10, "cells")
    assert bench.nearest_model(middles[2], times) == 0.0, "the old placement sits on the model"
    budgets = bench.spread_budgets(times, 10)
    for i, (budget, middle) in enumerate(zip(budgets, middles, strict=True)):
        assert 2 ** (i + 0.1) < budget < 2 ** (i + 0.9), f"budget {i} left the middle 80% of its cell"
        assert bench.nearest_model(budget, times) >= apart * (1 - 1e-9)
        if bench.nearest_model(middle, times) >= apart:
            assert budget == middle, "a budget with no model near stays in its cell's middle"
    for i, model in ((2, 2 ** 2.5), (4, 2 ** 4.5 * 1.01), (7, 2 ** 7.5 * 0.99)):
        assert abs(math.log(budgets[i] / model)) == pytest.approx(apart), "moved no further than needed"
    assert budgets[4] < 2 ** 4.5 and budgets[7] > 2 ** 7.5, "moved to the nearer side"
    # A cell crowded with models 1% apart has no point 3% from all: the farthest is taken.
    crowded = [1.0, 1024.0, *(2 ** 5 * 1.01 ** k for k in range(-100, 101))]
    budget = bench.spread_budgets(crowded, 10)[5]
    assert 2 ** 5.1 < budget < 2 ** 5.9
    assert bench.nearest_model(budget, crowded) == pytest.approx(math.log(1.01) / 2, rel=1e-6)


@only_glibc
def test_pytorch_probes_are_timed_with_freed_memory_kept_as_the_predictor_runs():
    """TorchPredictor's optimize keeps freed memory; probes timed without it would fault their
    buffers above 32 MiB in again on every call (batch 8 of a wide, large network)."""
    faults, _ = page_faults_around("from mobilenet.latency.backends import TorchBackend\nTorchBackend('fp32', 1)")
    assert_faulted_before_and_not_after(faults)


def test_kept_timings_of_pytorch_are_keyed_by_the_openmp_wait_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    """PASSIVE slows PyTorch's batch-1 calls 1.2-1.4x (docs/performance.md): a calibration or an
    ``auto`` decision timed under one policy is not reused under another. ONNX Runtime's pools are
    its own, so its calibrations do not move with the policy."""
    from mobilenet.deploy import auto

    keys = {}
    for policy in (None, "PASSIVE", "passive"):
        if policy is None:
            monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
        else:
            monkeypatch.setenv("OMP_WAIT_POLICY", policy)
        keys[policy] = (cache.calibration_key("torch", "fp32", 1, 1),
                        cache.calibration_key("onnxruntime", "fp32", 1, 1),
                        auto.decision_key(ArchConfig(), "fp32", 1, 2))
    default, passive, lower_case = keys[None], keys["PASSIVE"], keys["passive"]
    assert default[0] != passive[0] and passive == lower_case  # OpenMP reads the policy in any case
    assert default[1] == passive[1]
    assert default[2] != passive[2]
