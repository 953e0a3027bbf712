"""Top-1/top-5 counting, skipped files, ``evaluate()`` and the CLI, and sharded evaluation under a
real torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mobilenet import evaluate
from mobilenet.accuracy import accuracy, drop_background, torch_predictor
from mobilenet.arch import ArchConfig
from mobilenet.cli import main
from mobilenet.datasets import CsvDataset
from mobilenet.model import MobileNetV1
from mobilenet.predictor import Predictor
from mobilenet.preprocess import Preprocess
from mobilenet.weights import PretrainedCfg, save_safetensors, weights_of

# Image i is a flat gray of value 10 * i; the test predictor reads i back and looks up its logits.
LOGITS = torch.tensor([
    [9.0, 1, 2, 3, 4, 5, 6],  # label 0: top-1
    [1.0, 9, 8, 7, 6, 5, 4],  # label 2: top-5, not top-1
    [0.0, 1, 2, 3, 4, 5, 9],  # label 0: neither (rank 7)
    [5.0, 4, 3, 2, 1, 0, 9],  # label 6: top-1
    [1.0, 2, 3, 4, 5, 6, 7],  # label 2: top-5 (rank 5)
])
LABELS = [0, 2, 0, 6, 2]


def _flat_images(folder: Path, count: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(count):
        name = f"img{i}.png"
        Image.fromarray(np.full((8, 8, 3), 10 * i, np.uint8)).save(folder / name)
        names.append(name)
    return names


def _lookup_predictor(batch: torch.Tensor) -> torch.Tensor:
    index = ((batch.mean(dim=(1, 2, 3)) * 0.5 + 0.5) * 255 / 10).round().long()
    return LOGITS[index]


@pytest.fixture
def csv_dataset(tmp_path) -> CsvDataset:
    names = _flat_images(tmp_path, len(LABELS))
    (tmp_path / "labels.csv").write_text("file,label\n" + "".join(f"{n},{y}\n" for n, y in zip(names, LABELS)))
    return CsvDataset(tmp_path / "labels.csv", Preprocess(resolution=8, crop_fraction=1.0).eval_transform(),
                      num_classes=7)


def test_counts_top1_and_top5_exactly(csv_dataset):
    result = accuracy(_lookup_predictor, csv_dataset, batch_size=2, progress=False)
    assert result == {"top1": 40.0, "top5": 80.0, "images": 5, "skipped": 0}


def test_unreadable_images_are_skipped_and_counted(csv_dataset, capsys):
    Path(csv_dataset.samples[1][0]).write_bytes(b"broken")
    result = accuracy(_lookup_predictor, csv_dataset, batch_size=2, progress=False)
    assert result == {"top1": 50.0, "top5": 75.0, "images": 4, "skipped": 1}
    assert "img1.png" in capsys.readouterr().err


def test_drop_background_maps_tf_logits_to_imagenet_order():
    logits = torch.zeros(1, 1001)
    logits[0, 935] = 5  # TF index 935 = ImageNet class 934
    assert drop_background(lambda x: logits)(torch.zeros(1))[0].argmax().item() == 934
    assert drop_background(lambda x: logits[:, 1:])(torch.zeros(1))[0].argmax().item() == 934  # already 1000
    with pytest.raises(ValueError, match=r"expected 1000 logits \(or 1001, TF's background first\), got 10"):
        drop_background(lambda x: torch.zeros(1, 10))(torch.zeros(1))
    with pytest.raises(ValueError, match="expected 5 logits, got 6"):  # only ImageNet has TF's background
        drop_background(lambda x: torch.zeros(1, 6), classes=5)(torch.zeros(1))


def test_torch_predictor_is_a_predictor_that_says_what_runs():
    model = MobileNetV1(ArchConfig(alpha=0.25, resolution=32, num_classes=7))
    predict = torch_predictor(model)
    assert isinstance(predict, Predictor) and predict.description == "torch fp32 on cpu"
    assert predict.arch == model.arch_cfg and model.training  # (the caller's model keeps its mode)
    assert predict(np.zeros((2, 3, 32, 32), np.float32)).shape == (2, 7)
    assert isinstance(drop_background(predict, classes=7), Predictor)


def _small_weights(path: Path) -> MobileNetV1:
    torch.manual_seed(0)
    model = MobileNetV1(ArchConfig(alpha=0.25, resolution=32, num_classes=1001)).eval()
    cfg = PretrainedCfg(name="small", arch_cfg=model.arch_cfg, preprocess=Preprocess(resolution=32),
                        label_set="imagenet-1001")
    save_safetensors(weights_of(model, cfg), path)
    return model


def test_cli_evaluate_json_matches_the_model(tmp_path, capsys):
    model = _small_weights(tmp_path / "small.safetensors")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(tmp_path / f"r{i}.png")
        rows.append(f"r{i}.png,{rng.integers(0, 1000)}")
    (tmp_path / "val.csv").write_text("\n".join(rows) + "\n")
    code = main(["evaluate", "--weights", str(tmp_path / "small.safetensors"), "--data", str(tmp_path / "val.csv"),
                 "--json", "--batch-size", "4"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    dataset = CsvDataset(tmp_path / "val.csv", Preprocess(resolution=32).eval_transform(), num_classes=1000)
    expected = accuracy(drop_background(torch_predictor(model)), dataset, progress=False)
    assert result == expected and result["images"] == 6
    # The library call the command wraps: the same dict, and what ran.
    evaluation = evaluate(tmp_path / "val.csv", weights=tmp_path / "small.safetensors", progress=False)
    assert evaluation == expected and dict(evaluation) == expected and evaluation.weights == "small"
    [run] = evaluation.runs
    assert (run.precision, run.runtime) == ("fp32", "torch")
    assert run.description.startswith("PyTorch") and "BatchNorm folded" in run.description  # optimize's path
    with pytest.raises(ValueError, match="limit must be >= 1"):
        evaluate(tmp_path / "val.csv", weights=tmp_path / "small.safetensors", limit=0, progress=False)


def test_cli_evaluate_int8_reports_fp32_beside_it(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    _small_weights(tmp_path / "small.safetensors")
    _flat_images(tmp_path / "val" / "n01440764", 3)
    _flat_images(tmp_path / "calib", 4)
    code = main(["evaluate", "--weights", str(tmp_path / "small.safetensors"), "--data", str(tmp_path / "val"),
                 "--json", "--runtime", "onnxruntime", "--precision", "int8", "--calibration", str(tmp_path / "calib")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = json.loads(captured.out)
    assert result["images"] == 3 and result["fp32"]["images"] == 3 and set(result) >= {"top1", "top5", "fp32"}
    assert main(["evaluate", "--weights", str(tmp_path / "small.safetensors"), "--data", str(tmp_path / "val"),
                 "--runtime", "onnxruntime", "--precision", "int8", "--calibration", str(tmp_path / "calib")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["small onnxruntime int8", "small torch fp32"]


SHARD_SCRIPT = textwrap.dedent("""
    import json, os, sys
    import torch
    from mobilenet.datasets import CsvDataset
    from mobilenet.accuracy import accuracy
    from mobilenet.preprocess import Preprocess
    sys.path.insert(0, sys.argv[2])
    from test_accuracy import _lookup_predictor

    seen = []
    def predict(batch):
        seen.extend(((batch.mean(dim=(1, 2, 3)) * 0.5 + 0.5) * 255 / 10).round().long().tolist())
        return _lookup_predictor(batch)

    ds = CsvDataset(sys.argv[1], Preprocess(resolution=8, crop_fraction=1.0).eval_transform(), num_classes=7)
    result = accuracy(predict, ds, batch_size=2, progress=False)
    out = os.path.join(os.path.dirname(sys.argv[1]), f"rank{os.environ['RANK']}.json")
    json.dump({"result": result, "seen": seen}, open(out, "w"))
""")


@pytest.mark.slow
def test_torchrun_shards_are_disjoint_and_counts_all_reduced(csv_dataset, tmp_path):
    script = tmp_path / "shard.py"
    script.write_text(SHARD_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(script),
         str(csv_dataset.csv_path), str(Path(__file__).parent)],
        check=True, env=env, timeout=300, capture_output=True,
    )
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    single = accuracy(_lookup_predictor, csv_dataset, progress=False)
    assert all(r["result"] == single for r in ranks)
    assert sorted(ranks[0]["seen"] + ranks[1]["seen"]) == [0, 1, 2, 3, 4]  # each image once, in one rank


def test_torch_predictor_runs_the_model_in_eval_mode_and_leaves_it_as_it_was():
    """Evaluating mid-training: each call runs eval mode (running statistics, no dropout), then
    every module has its own mode back and the caller's tensors stay where they were; the thread
    count asked for holds during the call only."""
    torch.manual_seed(0)
    model = MobileNetV1(ArchConfig(alpha=0.25, resolution=32, num_classes=7, dropout=0.5)).train()
    model.blocks[1].eval()  # frozen BatchNorms of a fine-tuning run stay frozen
    modes = [m.training for m in model.modules()]
    params = [(p, p.data_ptr()) for p in model.parameters()]
    x = torch.randn(2, 3, 32, 32)
    logits = torch_predictor(model)(x)
    assert [m.training for m in model.modules()] == modes
    assert all(p is q and p.data_ptr() == ptr and p.device.type == "cpu"
               for p, (q, ptr) in zip(model.parameters(), params, strict=True))
    seen = []
    model.classifier.register_forward_hook(lambda *_: seen.append(torch.get_num_threads()))
    torch.set_num_threads(2)  # (conftest's fixture puts the test process's count back)
    torch.testing.assert_close(torch_predictor(model, threads=1)(x), logits)
    assert seen == [1] and torch.get_num_threads() == 2
    with torch.no_grad():
        expected = model.eval()(x)
    torch.testing.assert_close(logits, expected)


def test_a_kept_torch_predictor_sets_its_threads_for_each_call_only():
    from mobilenet.deploy.runtimes.pytorch import TorchPredictor

    torch.set_num_threads(2)
    predict = TorchPredictor(MobileNetV1(ArchConfig(alpha=0.25, resolution=32)), threads=1)
    assert torch.get_num_threads() == 2  # built: the caller's count is back
    seen = []
    module = predict.module
    predict.module = lambda x: seen.append(torch.get_num_threads()) or module(x)
    assert predict(torch.zeros(1, 3, 32, 32)).shape == (1, 1000)
    assert seen == [1] and torch.get_num_threads() == 2


def test_evaluate_leaves_the_callers_model_and_thread_count_as_they_were(tmp_path):
    _flat_images(tmp_path / "val" / "n01440764", 2)
    model = MobileNetV1(ArchConfig(alpha=0.25, resolution=32)).train()
    torch.set_num_threads(2)
    result = evaluate(tmp_path / "val", weights=model, threads=1, progress=False)
    assert result["images"] == 2
    assert model.training and all(m.training for m in model.modules())
    assert torch.get_num_threads() == 2


def test_negative_workers_are_refused_in_one_line_before_the_weights_load(tmp_path, capsys, monkeypatch):
    from weights_helpers import models_built

    _small_weights(tmp_path / "small.safetensors")
    _flat_images(tmp_path / "val" / "n01440764", 2)
    built = models_built(monkeypatch)
    with pytest.raises(ValueError, match=r"^workers must be an int >= 0 .*, got -1$"):
        evaluate(tmp_path / "val", weights=tmp_path / "small.safetensors", workers=-1, progress=False)
    with pytest.raises(ValueError, match=r"^num_workers must be an int >= 0 .*, got -1$"):
        accuracy(_lookup_predictor, [], num_workers=-1, progress=False)
    code = main(["evaluate", "--weights", str(tmp_path / "small.safetensors"), "--data", str(tmp_path / "val"),
                 "--workers", "-1"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("mobilenet evaluate: error: --workers must be an int >= 0")
    assert not built  # nothing loaded before the refusal
