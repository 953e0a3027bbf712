"""The cost model against the exact figures of the paper (shared/DESIGN.md section 3)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from mobilenet import cost, paper
from mobilenet.arch import ArchConfig
from mobilenet.errors import InputError


def test_exact_integers_for_1_0_224() -> None:
    net = cost.network_cost()
    t = net.total
    assert t.mult_adds == 568_740_352
    assert t.conv_mult_adds == 567_716_352
    assert t.fc_mult_adds == 1_024_000
    assert net.layer("stem").mult_adds == 10_838_016
    assert sum(x.mult_adds for x in net.layers if x.kind == "depthwise") == 17_385_984
    assert sum(x.mult_adds for x in net.layers if x.kind == "pointwise") == 539_492_352
    assert t.conv_weights == 3_185_088
    assert net.layer("stem").weights == 864
    assert sum(x.weights for x in net.layers if x.kind == "depthwise") == 44_640
    assert sum(x.weights for x in net.layers if x.kind == "pointwise") == 3_139_584
    assert (t.fc_weights, t.biases) == (1_024_000, 1_000)
    assert t.bn_params == 2 * 10_944
    assert t.trainable_params == 4_231_976  # what PyTorch counts
    assert t.all_params == 4_253_864  # what Keras' count_params prints
    assert t.flops == 2 * t.mult_adds


def test_table2_shares() -> None:
    shares = {s.kind: s for s in cost.network_cost().shares()}
    assert round(100 * shares["pointwise"].mult_adds_fraction, 2) == 94.86
    assert round(100 * shares["pointwise"].weights_fraction, 2) == 74.59
    assert round(100 * shares["depthwise"].mult_adds_fraction, 2) == 3.06
    assert round(100 * shares["conv"].mult_adds_fraction, 2) == 1.91  # the paper's 1.19 is a typo
    assert round(100 * shares["fc"].weights_fraction, 2) == 24.33
    assert sum(s.mult_adds_fraction for s in shares.values()) == pytest.approx(1.0)


def test_table3_single_layer() -> None:
    layer = cost.layer_comparison(3, 512, 512, 14)
    assert layer.standard.mult_adds == 462_422_016 and layer.standard.weights == 2_359_296
    assert layer.separable_mult_adds == 52_283_392 and layer.separable_weights == 266_752
    narrow = cost.layer_comparison(3, 384, 384, 14)
    assert round(narrow.separable_mult_adds / 1e6, 1) == 29.6
    assert round(cost.layer_comparison(3, 384, 384, 10).separable_mult_adds / 1e6, 1) == 15.1


@pytest.mark.parametrize(("k", "m", "n", "size", "stride", "d"), [
    (3, 32, 64, 112, 1, 1), (3, 64, 128, 112, 2, 1), (5, 16, 40, 31, 2, 1), (3, 8, 24, 9, 1, 3), (7, 3, 9, 50, 3, 2),
])
def test_separable_ratio_is_one_over_n_plus_one_over_k_squared(k: int, m: int, n: int, size: int, stride: int,
                                                               d: int) -> None:
    layer = cost.layer_comparison(k, m, n, size, stride, depth_multiplier=d)
    assert layer.mult_adds_ratio == pytest.approx(d / n + d / k**2)
    assert layer.weights_ratio == pytest.approx(d / n + d / k**2)
    assert layer.savings == pytest.approx(1 / layer.mult_adds_ratio)  # the same fact, the other way up


def test_block_comparisons_sum_to_the_conv_variant() -> None:
    sep = cost.network_cost(ArchConfig())
    conv = cost.network_cost(ArchConfig(variant="conv")).total
    standard = sum(c.standard.mult_adds for c in sep.block_comparisons())
    assert standard + sep.layer("stem").mult_adds + sep.total.fc_mult_adds == conv.mult_adds == 4_867_293_184
    assert conv.conv_mult_adds == 4_866_269_184  # Table 4's 4866M counts the conv layers only


def test_compare_sets_the_network_against_its_full_convolution_twin() -> None:
    comparison = cost.compare(ArchConfig())
    conv = cost.network_cost(ArchConfig(variant="conv")).total
    assert comparison.standard.mult_adds == conv.mult_adds  # every block replaced: Table 4's network
    assert comparison.standard.weights == conv.weights
    assert comparison.separable.mult_adds == 568_740_352
    assert round(comparison.savings, 2) == 8.56
    assert len(comparison.blocks) == 13
    with pytest.raises(InputError, match="separable"):
        cost.compare(ArchConfig(variant="conv"))


def test_peak_activation_memory() -> None:
    net = cost.network_cost(bytes_per_element=4)
    # The first pointwise conv holds 112x112x32 in and 112x112x64 out.
    assert net.total.peak_activation_bytes == (112 * 112 * 32 + 112 * 112 * 64) * 4
    assert net.total.peak_layer == "blocks.0.pw"
    assert cost.network_cost(bytes_per_element=1, batch_size=8).total.peak_activation_bytes == 8 * 112 * 112 * 96


def test_published_tables_within_rounding_or_explained() -> None:
    # Every figure either agrees with the paper after rounding or carries the reason it differs.
    for table in paper.all_tables(count_peers=False):
        for row in table.rows:
            assert row.agrees or row.note, f"Table {table.number}: {row.label} differs without a reason"
    flags = {row.label: row for row in paper.table2().rows}
    assert not flags["Conv 3×3: mult-adds"].agrees  # 1.19% vs 1.91%


@pytest.mark.parametrize(("args", "message"), [
    ((0, 3, 3, 10), "kernel"), ((3, 3, 3, 0), "in_size"), ((3, 3, 3, 10, 1, "valid"), "padding"),
])
def test_layer_comparison_rejects_bad_input(args: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        cost.layer_comparison(*args)


def test_network_cost_rejects_bad_bytes_per_element() -> None:
    with pytest.raises(ValueError, match="bytes_per_element"):
        cost.network_cost(bytes_per_element=0)


@pytest.mark.parametrize(("changes", "name"), [({"bytes_per_element": -4}, "bytes_per_element"),
                                               ({"bytes_per_element": 0}, "bytes_per_element"),
                                               ({"batch_size": -1}, "batch_size")])
def test_layer_comparison_rejects_what_network_cost_rejects(changes: dict[str, int], name: str) -> None:
    # One check for both entry points: a negative size used to print negative peak memory here.
    with pytest.raises(ValueError) as network_error:
        cost.network_cost(**changes)
    with pytest.raises(ValueError) as layer_error:
        cost.layer_comparison(3, 512, 512, 14, **changes)
    assert str(layer_error.value) == str(network_error.value)
    assert str(layer_error.value).startswith(f"{name} must be an int >= 1")


def test_cost_does_not_import_torch() -> None:
    code = "import sys, mobilenet.cost, mobilenet.paper, mobilenet.cli.costs; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_readmes_python_calls_are_reached_from_import_mobilenet_alone() -> None:
    """README's table gives each command's call as ``mobilenet.latency.predict(...)``; after a bare
    ``import mobilenet`` the subpackages were not there (AttributeError). They are imported when
    first named, and ``import mobilenet`` itself still loads no torch."""
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    calls = sorted(set(re.findall(r"`(?:fast = |for \w+ in )?(mobilenet(?:\.\w+)+)\(", readme)))
    assert "mobilenet.latency.predict" in calls and "mobilenet.deploy.export.export" in calls, calls
    code = ("import sys, mobilenet, functools\n"
            "print('torch' in sys.modules)\n"
            f"for name in {calls!r}:\n"
            "    functools.reduce(getattr, name.split('.')[1:], mobilenet)\n"
            "print('resolved')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.stdout.split() == ["False", "resolved"], out.stderr


def test_cost_follows_keras_padding():
    """The cost model reads arch, so Keras' smaller maps at 200 px cost fewer mult-adds than 'SAME'."""
    keras = cost.network_cost(ArchConfig(resolution=200, padding="keras"))
    same = cost.network_cost(ArchConfig(resolution=200))
    assert keras.total.mult_adds < same.total.mult_adds
    assert cost.network_cost(ArchConfig(padding="keras")).total.mult_adds == 568_740_352
