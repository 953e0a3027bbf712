"""The corpus of bad inputs (tests/data/bad_inputs, issue 18): each gets one error line and an exit
status, or the right answer — never a traceback, a hang, or a silently wrong result.

Each probe runs the command in this process through ``mobilenet.cli.main``: an exception that is
not the project's own error escapes it and fails the test with its traceback, which is the point.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from mobilenet.arch import ArchConfig
from mobilenet.cli import main

CORPUS = Path(__file__).parent / "data" / "bad_inputs"


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = main(argv)
    out, err = capsys.readouterr()
    return status, out, err


def assert_one_line(err: str, command: str, *words: str) -> None:
    lines = [line for line in err.strip().splitlines() if line.startswith(f"mobilenet {command}: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0], lines[0]


@pytest.mark.parametrize(("flag", "value"), [
    ("--decay-rate", "-1"), ("--decay-rate", "0"), ("--momentum", "1.5"), ("--momentum", "-0.1"),
    ("--rmsprop-eps", "0"), ("--min-lr-ratio", "2"), ("--clip-grad", "-1"), ("--lr", "nan"), ("--lr", "0"),
    ("--threads", "-1"), ("--workers", "-1"), ("--label-smoothing", "1"), ("--ema-decay", "1"),
])
def test_train_recipe_out_of_range_is_refused_before_training(flag: str, value: str, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["train", "--data", "fashion-mnist", "--alpha", "0.25", "--resolution", "32", "--in-channels", "1",
            "--epochs", "1", "--output", str(tmp_path / "run"), flag, value]
    status, _, err = run(argv, capsys)
    assert status == 2
    assert_one_line(err, "train", flag)
    assert not (tmp_path / "run").exists()  # refused before anything was written


@pytest.mark.parametrize(("argv", "words"), [
    (["bench", "--seconds", "nan"], ["--seconds"]),
    (["bench", "--seconds", "inf"], ["--seconds"]),
    (["bench", "--seconds", "-1"], ["--seconds"]),
    (["bench", "--threads", "-1"], ["--threads"]),
    (["bench", "--batch-size", "100000", "--runtime", "torch"], ["memory"]),
])
def test_bench_bad_arguments(argv: list[str], words: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(argv, capsys)
    assert status == 2 and not out.strip()
    assert_one_line(err, "bench", *words)


def test_export_of_a_huge_fixed_batch_is_refused_from_the_cost_model(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(["export", str(tmp_path / "m.onnx"), "--random-init", "--alpha", "0.25",
                          "--fixed-batch", "100000"], capsys)
    assert status == 2
    assert_one_line(err, "export", "memory")
    assert not (tmp_path / "m.onnx").exists()


def test_export_of_a_new_head_needs_random_init(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # 10 classes on ImageNet weights would be a random classifier exported as if trained.
    status, _, err = run(["export", str(tmp_path / "m.onnx"), "--classes", "10"], capsys)
    assert status == 2
    assert_one_line(err, "export", "--classes")
    assert not (tmp_path / "m.onnx").exists()


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small model saved as our safetensors file: evaluate needs weights, not a network."""
    from mobilenet.model import MobileNetV1
    from mobilenet.weights import save_safetensors, weights_of

    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_safetensors(weights_of(MobileNetV1(ArchConfig(alpha=0.25, resolution=32))), path)
    return path


@pytest.fixture
def csv_dir(tmp_path: Path) -> Path:
    for name in ("img0.png", "img1.png", "img2.png", "imgé.png"):
        Image.new("RGB", (40, 40), (120, 30, 200)).save(tmp_path / name)
    for path in CORPUS.glob("*.csv"):
        shutil.copy(path, tmp_path / path.name)
    return tmp_path


def test_utf16_csv_is_read(csv_dir: Path, tiny_weights: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(["evaluate", "--weights", str(tiny_weights), "--data", str(csv_dir / "utf16.csv"),
                            "--json"], capsys)
    assert status == 0, err
    assert json.loads(out)["images"] == 3


def test_latin1_csv_is_one_line(csv_dir: Path, tiny_weights: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(["evaluate", "--weights", str(tiny_weights), "--data", str(csv_dir / "latin1.csv")], capsys)
    assert status == 2
    assert_one_line(err, "evaluate", "UTF-8")


def test_bom_before_a_headerless_csv_keeps_its_first_row(csv_dir: Path, tiny_weights: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(["evaluate", "--weights", str(tiny_weights), "--data", str(csv_dir / "bom_no_header.csv"),
                            "--json"], capsys)
    assert status == 0, err
    assert json.loads(out)["images"] == 3


def test_broken_symlinks_in_an_image_folder_are_counted(tmp_path: Path, tiny_weights: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "val" / "0"
    folder.mkdir(parents=True)
    Image.new("RGB", (40, 40), (1, 2, 3)).save(folder / "a.png")
    (folder / "b.png").symlink_to(tmp_path / "nowhere.png")
    status, out, err = run(["evaluate", "--weights", str(tiny_weights), "--data", str(tmp_path / "val"), "--json"],
                           capsys)
    assert status == 0, err
    result = json.loads(out)
    assert (result["images"], result["skipped"]) == (1, 1)


def test_classify_not_an_image(tiny_weights: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(["classify", str(CORPUS / "not_an_image.jpg"), "--weights", str(tiny_weights)], capsys)
    assert status == 1  # one image failed; the others (none here) would still be classified
    assert_one_line(err, "classify", "not_an_image.jpg")


def test_a_corrupt_latency_calibration_cache_is_never_trusted(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from mobilenet.latency import cached_calibration
    from mobilenet.latency.cache import CACHE_FILE

    monkeypatch.setenv("MOBILENET_CACHE", str(tmp_path))
    shutil.copy(CORPUS / "calibration_cache_corrupt.json", tmp_path / CACHE_FILE)
    said: list[str] = []
    # Nothing usable is cached: the caller is told so (and `calibrated` would measure again).
    assert cached_calibration("onnxruntime", log=said.append) is None
    assert said and CACHE_FILE in " ".join(said)


# ------------------------------------------------------------------ a parameter named as the user spelled it

def test_option_names_a_parameter_in_the_callers_spelling() -> None:
    """The library's messages name parameters through ``errors.option``: keyword names from Python,
    the command line's flags while a command runs (its own flag where the name differs)."""
    from mobilenet.errors import Spelling, command_line_spelling, option, spelled

    assert [option("clip_grad"), option("clip_grad", 1), option("device", "cpu"), option("compile", False)] == [
        "clip_grad", "clip_grad=1", "device='cpu'", "compile=False"]
    flags = {"clip_grad": "--clip-grad", "num_classes": "--classes", "compile": "--compile",
             "progress": "--no-progress"}
    with command_line_spelling(flags):
        assert [option("clip_grad", 1), option("num_classes", 3), option("num_classes")] == [
            "--clip-grad 1", "--classes 3", "--classes"]
        assert [option("compile", True), option("compile", False)] == ["--compile", "--no-compile"]
        assert [option("progress", False), option("progress", True)] == ["--no-progress", "--progress"]
        assert option("std", 0) == "std=0", "no flag sets it (a setting read from a file): no flag is made up"
    assert option("num_classes", 3) == "num_classes=3", "the spelling ends with the command"
    with spelled(Spelling({"num_classes": "classes"})):  # the explorer's query names its controls
        assert (option("num_classes", 3), option("alpha")) == ("classes=3", "alpha")


def test_the_command_lines_flags_are_read_off_its_parser() -> None:
    """One owner of each flag: the parser. A flag whose parameter has another name (``--classes``
    sets ``num_classes``, ``--workers`` ``num_workers``) and a ``--no-`` switch are found."""
    from mobilenet.cli import build_parser, flags_of

    parser = build_parser()
    train, bench = flags_of(parser, "train"), flags_of(parser, "bench")
    assert (train["num_classes"], train["num_workers"], train["compile"], train["progress"]) == (
        "--classes", "--workers", "--compile", "--no-progress")
    assert (bench["runtimes"], bench["batch_sizes"], bench["peers"]) == ("--runtime", "--batch-size", "--peers")
    assert flags_of(parser, "choose")["remeasure"] == "--recalibrate"
    assert train["workers"] == "--workers", "a flag is found by its own name too"
    assert flags_of(parser, "classify")["allow_emulation"] == "--allow-emulated-bf16"


@pytest.mark.parametrize(("argv", "library", "said", "python"), [
    # `cost --classes 0` used to say "num_classes must be ...", a name the user never typed.
    (["cost", "--classes", "0"], lambda: ArchConfig(num_classes=0), "--classes must be", "num_classes must be"),
    (["cost", "--alpha", "0"], lambda: ArchConfig(alpha=0), "--alpha (the width multiplier)", "alpha (the width"),
])
def test_a_bad_setting_is_named_as_the_user_gave_it(argv: list[str], library: object, said: str, python: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(argv, capsys)
    assert status == 2
    assert_one_line(err, argv[0], said)
    with pytest.raises(ValueError) as refused:
        library()  # type: ignore[operator]
    assert str(refused.value).startswith(python) and "--" not in str(refused.value)
