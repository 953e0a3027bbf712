"""`mobilenet cost`, `compare` and `paper` from the command line, as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mobilenet.cli import main


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mobilenet", *args], capture_output=True, text=True)


def test_cost_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cost"]) == 0
    out = capsys.readouterr().out
    assert "568,740,352" in out and "4,231,976" in out and "4,253,864" in out
    assert "multiply-accumulates" in out  # the unit is impossible to miss
    assert "Conv 1×1" in out and "94.86%" in out


def test_cost_json_has_the_documented_totals(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cost", "--alpha", "0.5", "--height", "160", "--width", "128", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    for key in ("mult_adds", "conv_mult_adds", "fc_mult_adds", "weights", "trainable_params", "all_params",
                "peak_activation_bytes"):
        assert isinstance(data["total"][key], int), key
    assert data["config"]["resolution"] == [160, 128]
    assert len(data["layers"]) == 29
    assert data["total"]["mult_adds"] == sum(layer["mult_adds"] for layer in data["layers"])


def test_cost_variants_and_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cost", "--variant", "conv", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["total"]["conv_mult_adds"] == 4_866_269_184
    assert main(["cost", "--variant", "shallow", "--classes", "1001", "--depth-multiplier", "2",
                 "--bytes-per-element", "1", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["bytes_per_element"] == 1 and data["config"]["num_classes"] == 1001


def test_compare(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["blocks"]) == 13
    for block in data["blocks"]:
        assert block["mult_adds_ratio"] == pytest.approx(block["formula_ratio"])
    assert data["total"]["standard"]["mult_adds"] == 4_867_293_184
    assert round(1 / data["total"]["mult_adds_ratio"], 2) == 8.56
    assert main(["compare"]) == 0
    assert "1/N+1/K²" in capsys.readouterr().out


def test_plot_writes_a_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "plots" / "costs.png"
    assert main(["compare", "--alpha", "0.75", "--plot", str(target)]) == 0
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert target.stat().st_size > 20_000


def test_paper_without_peers(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["paper", "--no-peers", "--json"]) == 0
    tables = json.loads(capsys.readouterr().out)
    assert [t["table"] for t in tables] == list(range(1, 10))
    typo = next(r for r in tables[1]["rows"] if r["label"] == "Conv 3×3: mult-adds")
    assert not typo["agrees"] and "1.91" in typo["flag"]


@pytest.mark.slow
def test_paper_counts_peers_from_torchvision(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["paper"]) == 0
    out = capsys.readouterr().out
    assert "torchvision vgg16" in out and "Table 9" in out
    assert "1.19% should read 1.91%" in out


@pytest.mark.parametrize(("args", "message"), [
    (["cost", "--alpha", "-1"], "--alpha (the width multiplier) must be"),
    (["cost", "--resolution", "16"], "--resolution must be"),
    (["cost", "--resolution", "224", "--height", "200", "--width", "200"], "either --resolution"),
    (["cost", "--height", "200"], "go together"),
    (["cost", "--variant", "deep"], "invalid choice"),
    (["cost", "--bytes-per-element", "0"], "--bytes-per-element must be"),
    (["layer", "-m", "512", "-n", "512", "--size", "14", "--bytes-per-element", "-4"],
     "--bytes-per-element must be an int >= 1 (4 for fp32, 2 for fp16/bf16, 1 for int8), got -4"),
    (["cost", "--alpha", "wide"], "invalid float"),
    (["compare", "--variant", "conv"], "separable"),
    (["cost", "--plot", "out.jpg"], ".png"),
    (["nonsense"], "invalid choice"),
])
def test_bad_arguments_exit_2_with_one_line(args: list[str], message: str) -> None:
    result = run(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_module_entry_point() -> None:
    result = run("cost", "--alpha", "0.25", "--resolution", "128")
    assert result.returncode == 0 and "mobilenet_v1_0.25_128" in result.stdout


def test_single_layer(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["layer", "-k", "3", "-m", "512", "-n", "512", "--size", "14", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["standard"]["mult_adds"] == 462_422_016
    assert data["separable"]["mult_adds"] == 52_283_392
    assert data["mult_adds_ratio"] == pytest.approx(1 / 512 + 1 / 9)
    assert main(["layer", "-m", "512", "-n", "512", "--size", "14", "--stride", "2", "--padding", "symmetric"]) == 0
    assert "7×7×512" in capsys.readouterr().out


def test_project_runtime_errors_are_one_line(monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from mobilenet.cli import costs
    from mobilenet.weights.fetch import FetchError

    def unreachable(args: object) -> int:
        raise FetchError("cannot fetch weights: no network")

    monkeypatch.setattr(costs, "run_cost", unreachable)
    assert main(["cost"]) == 1
    assert capsys.readouterr().err.strip() == "mobilenet cost: error: cannot fetch weights: no network"
