"""Training on real data in one process: the loss goes down, checkpoints have the documented
format, an interrupted run resumes to exactly the parameters of an uninterrupted one, depthwise
filters get no weight decay, bad data gives clear errors. Behaviour is tested through the library
(``mobilenet.train``); the command line's tests check its parsing, output and exit status."""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import signal
import struct
from pathlib import Path

import pytest
import torch
from PIL import Image

from mobilenet.arch import ArchConfig
from mobilenet.cli import main
from mobilenet.model import MobileNetV1
from mobilenet.preprocess import Preprocess
from mobilenet.train import TrainConfig, checkpoint, config_for_resume, model_to_train, param_groups, train
from mobilenet.train.config import OPTIMIZERS
from mobilenet.train.data import (
    FASHION_MNIST_DIR,
    FASHION_MNIST_FILES,
    GlobalBatchSampler,
    TrainingAugment,
    default_workers,
    evaluation_preprocess,
    evaluation_tensor,
    read_idx,
)
from mobilenet.train.optim import build_optimizer, is_depthwise, lr_factor
from mobilenet.train.runs import read_metrics

# Helpers shared with test_ddp.py: a small slice of real Fashion-MNIST (from the Debian package
# `dataset-fashion-mnist` where installed, else IDX files generated here) and tiny configs.

TINY_ARCH = ArchConfig(alpha=0.25, resolution=32, num_classes=10, in_channels=1, dropout=0.0)


def write_idx(path: Path, array: torch.Tensor) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.to(torch.uint8).numpy().tobytes())


def fashion_mnist_root(tmp_dir: Path) -> str | None:
    """None when the real files are installed; otherwise a folder of generated IDX files in the
    same format, whose classes are learnable (a bright bar at a class-dependent row)."""
    if all((FASHION_MNIST_DIR / name).is_file() for pair in FASHION_MNIST_FILES.values() for name in pair):
        return None
    g = torch.Generator().manual_seed(0)
    for split, (images_name, labels_name) in FASHION_MNIST_FILES.items():
        n = 512 if split == "train" else 256
        labels = torch.arange(n) % 10
        images = torch.randint(0, 60, (n, 28, 28), generator=g)
        for i, label in enumerate(labels.tolist()):
            images[i, 2 + 2 * label: 4 + 2 * label, 4:24] = 255
        write_idx(tmp_dir / images_name, images)
        write_idx(tmp_dir / labels_name, labels)
    return str(tmp_dir)


def tiny_config(tmp_dir: Path, data_root: str | None, **changes) -> TrainConfig:
    settings = {
        "data": "fashion-mnist", "data_root": data_root, "arch": TINY_ARCH, "train_subset": 128,
        "val_subset": 64, "epochs": 2, "batch_size": 32, "lr": 0.02, "output": str(tmp_dir / "run"),
        "progress": False, "deterministic": True,
    }
    settings.update(changes)
    return TrainConfig(**settings)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # The machine is shared: one intra-op thread is faster than two contended ones, and the same.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return fashion_mnist_root(tmp_path_factory.mktemp("fashion"))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, data_root):
    """Three epochs on 256 real images: the run the format tests look at."""
    out = tmp_path_factory.mktemp("finished")
    cfg = tiny_config(out, data_root, train_subset=256, epochs=3, ema_decay=0.9)
    summary = train(cfg)
    return cfg, summary


def test_loss_goes_down_on_real_data(finished_run):
    cfg, result = finished_run
    rows = read_metrics(cfg.output)
    assert result.finished and len(rows) == 3
    assert rows[-1]["train_loss"] < rows[0]["train_loss"] - 0.1, [r["train_loss"] for r in rows]
    assert all(0 <= r["val_top1"] <= r["val_top5"] <= 1 for r in rows)


def test_checkpoint_format(finished_run):
    cfg, _ = finished_run
    for name in ("last.pt", "best.pt"):
        ckpt = torch.load(f"{cfg.output}/{name}", weights_only=True)  # plain data only
        for key in ("model", "arch", "preprocess", "ema", "optimizer", "scheduler", "epoch", "step", "rng", "config"):
            assert key in ckpt, key
        assert not any(k.startswith("module.") for k in ckpt["model"])
        # The evaluation recipe training validated with, as `mobilenet evaluate` will read it.
        assert Preprocess.from_dict(ckpt["preprocess"]) == Preprocess(resolution=32, mean=(0.5,), std=(0.5,),
                                                                        crop_fraction=1.0)
        # The architecture is stored once, beside the other settings.
        assert "arch" not in ckpt["config"] and checkpoint.read_config(ckpt) == dataclasses.replace(
            cfg, threads=1, micro_batch=32, num_workers=default_workers())  # what "auto" chose, recorded
        model = MobileNetV1(ArchConfig.from_dict(ckpt["arch"]))
        model.load_state_dict(ckpt["model"])
    # What `mobilenet evaluate` and fine-tuning read: the weights helper's loader takes it as it is.
    from mobilenet.weights import load_pretrained

    loaded = load_pretrained(f"{cfg.output}/best.pt").state_dict()
    best = torch.load(f"{cfg.output}/best.pt", weights_only=True)["model"]
    assert all(torch.equal(loaded[k], best[k]) for k in best)
    last = torch.load(f"{cfg.output}/last.pt", weights_only=True)
    assert last["epoch"] == 3 and last["step"] == 3 * (256 // 32)
    for name in ("curves.png", "metrics.jsonl", "config.json", "summary.json"):
        assert os.path.isfile(f"{cfg.output}/{name}"), name
    assert not [f for f in os.listdir(cfg.output) if f.endswith(".tmp")]


def test_runs_lists_and_plots(finished_run, tmp_path, capsys):
    cfg, _ = finished_run
    png = tmp_path / "compare.png"
    assert main(["runs", os.path.dirname(cfg.output), "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "fashion-mnist" in out and "separable α0.25 32px" in out and "3/3" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_interrupted_run_resumes_to_identical_parameters(tmp_path, data_root):
    # Dropout and EMA on, so the restored RNG state and EMA state matter too.
    arch = TINY_ARCH.replace(dropout=0.2)
    common = {"arch": arch, "epochs": 2, "ema_decay": 0.9, "min_crop": 0.5}
    straight = train(tiny_config(tmp_path / "a", data_root, **common))
    assert straight.finished

    def interrupt(step: int) -> None:
        if step == 5:  # the second epoch's first step: a mid-epoch stop
            os.kill(os.getpid(), signal.SIGTERM)

    cfg = tiny_config(tmp_path / "b", data_root, **common)
    stopped = train(cfg, on_step=interrupt)
    assert stopped.status == "interrupted" and stopped.step == 5
    saved = checkpoint.load(cfg.output)
    assert (saved["epoch"], saved["step_in_epoch"]) == (1, 1)

    resumed = train(config_for_resume(cfg.output), resume=cfg.output)
    assert resumed.finished and resumed.step == straight.step == 8
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    ema_a = torch.load(tmp_path / "a" / "run" / "last.pt", weights_only=True)["ema"]
    ema_b = torch.load(tmp_path / "b" / "run" / "last.pt", weights_only=True)["ema"]
    for name in ema_a:
        assert torch.equal(ema_a[name], ema_b[name]), name
    assert read_metrics(tmp_path / "b" / "run")[-1]["val_top1"] == read_metrics(tmp_path / "a" / "run")[-1]["val_top1"]


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_depthwise_filters_get_no_weight_decay(optimizer):
    model = MobileNetV1(alpha=0.25, resolution=32, num_classes=10)
    groups = param_groups(model, 4e-5)
    decayed, spared = set(groups[0]["names"]), set(groups[1]["names"])
    depthwise = {f"{n}.weight" for n, m in model.named_modules() if is_depthwise(m)}
    assert len(depthwise) == 13 and depthwise <= spared
    assert {f"blocks.{i}.pw.conv.weight" for i in range(13)} | {"stem.conv.weight", "classifier.weight"} == decayed

    # The real optimizer: with zero gradients, only weight decay can move a weight.
    cfg = TrainConfig(optimizer=optimizer, lr=0.1, weight_decay=0.5)
    opt = build_optimizer(model, cfg)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    after = dict(model.named_parameters())
    for name in depthwise:
        assert torch.equal(before[name], after[name]), name
    assert not torch.equal(before["blocks.3.pw.conv.weight"], after["blocks.3.pw.conv.weight"])
    assert torch.equal(before["blocks.3.pw.bn.weight"], after["blocks.3.pw.bn.weight"])


@pytest.mark.parametrize(("world", "accumulation"), [(1, 1), (1, 4), (2, 1), (2, 2), (4, 1)])
def test_sampler_splits_each_global_batch_and_resumes(world, accumulation):
    n, batch = 100, 16
    single = list(GlobalBatchSampler(n, batch, seed=3))
    per_rank = [GlobalBatchSampler(n, batch, rank=r, world_size=world, accumulation=accumulation, seed=3)
                for r in range(world)]
    micro = [list(s) for s in per_rank]
    assert all(len(m) == (n // batch) * accumulation for m in micro)
    for step, expected in enumerate(single):
        together = [k for r in range(world) for m in micro[r][step * accumulation:(step + 1) * accumulation] for k in m]
        assert together == expected  # the same samples, in the same global batch
    for s in per_rank:
        s.set_epoch(0, start_step=2)
    assert list(per_rank[0]) == micro[0][2 * accumulation:]
    per_rank[0].set_epoch(1)
    assert list(per_rank[0]) != micro[0]  # a new epoch, a new order


def test_schedules():
    cfg = TrainConfig(schedule="exponential", decay_rate=0.94, decay_epochs=2.5)
    f = lambda s: lr_factor(s, steps_per_epoch=10, total_steps=100, config=cfg)  # noqa: E731
    assert f(0) == 1.0 and f(24) == 1.0 and f(25) == pytest.approx(0.94) and f(50) == pytest.approx(0.94**2)
    cfg = TrainConfig(schedule="cosine", warmup_epochs=1, min_lr_ratio=0.1)
    f = lambda s: lr_factor(s, steps_per_epoch=10, total_steps=100, config=cfg)  # noqa: E731
    assert f(0) == pytest.approx(0.1) and f(9) == 1.0 and f(10) == 1.0
    assert f(55) == pytest.approx(0.55) and f(100) == pytest.approx(0.1)


def test_idx_reader_rejects_corrupt_files(tmp_path):
    bad = tmp_path / "x-idx3-ubyte"
    bad.write_bytes(b"\0\0\x08\x03" + (2).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + b"\0" * 100)
    with pytest.raises(ValueError, match="truncated or corrupt"):
        read_idx(bad)
    bad.write_bytes(b"PK\x03\x04 not idx")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(bad)


def _image_tree(root, classes=("cat", "dog"), per_class=8):
    g = torch.Generator().manual_seed(0)
    for split in ("train", "val"):
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = torch.randint(0, 255, (40, 48, 3), generator=g, dtype=torch.uint8)
                pixels[:, :, c] = 255
                Image.fromarray(pixels.numpy()).save(folder / f"{i}.png")
    return root


def _train_cli(tmp_path, data, *extra):
    return main(["train", "--data", str(data), "--alpha", "0.25", "--resolution", "32", "--epochs", "1",
                 "--batch-size", "4", "--lr", "0.01", "--no-progress", "--output", str(tmp_path / "run"), *extra])


def test_every_train_flag_defaults_to_none_so_the_recipe_is_trainconfigs(capsys):
    from mobilenet.cli import build_parser
    from mobilenet.cli.train import given_settings, new_run

    args = build_parser().parse_args(["train"])
    flags = {k: v for k, v in vars(args).items() if k not in ("command", "func", "flag_names")}
    assert len(flags) > 40 and all(v is None for v in flags.values()), flags
    config, weights = new_run(given_settings(args), output=None)
    assert weights is None and config.arch == ArchConfig(num_classes=10, in_channels=1)  # the data's
    assert dataclasses.replace(config, arch=ArchConfig(), output="runs") == TrainConfig()
    assert config.output.startswith("runs/mobilenet_v1_1.0_224-fashion-mnist-")
    # The help quotes the recipe's own defaults.
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    assert f"peak learning rate ({TrainConfig().lr})" in capsys.readouterr().out


def test_bad_data_gives_clear_one_line_errors(tmp_path, capsys):
    assert _train_cli(tmp_path, tmp_path / "missing") == 2
    assert "no such file or directory" in capsys.readouterr().err

    (tmp_path / "no_val" / "train" / "a").mkdir(parents=True)
    assert _train_cli(tmp_path, tmp_path / "no_val") == 2
    assert "has no val/ folder" in capsys.readouterr().err

    tree = _image_tree(tmp_path / "tree")
    (tree / "train" / "empty_class").mkdir()
    assert _train_cli(tmp_path, tree) == 2
    assert "empty_class has no images" in capsys.readouterr().err

    csv = tmp_path / "train.csv"
    csv.write_text("file,label\n")
    assert _train_cli(tmp_path, csv) == 2
    assert "--val-data" in capsys.readouterr().err

    assert main(["train", "--resume", str(tmp_path / "nowhere")]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_unreadable_images_stop_or_are_skipped_and_counted(tmp_path, capsys):
    tree = _image_tree(tmp_path / "tree")
    (tree / "train" / "cat" / "3.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    assert _train_cli(tmp_path, tree, "--bad-files", "stop") == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if not line.startswith("train: ")]  # (beside what runs)
    assert "3.png" in err and len(errors) == 1 and "Traceback" not in err  # one line naming the file

    assert _train_cli(tmp_path, tree, "--bad-files", "skip", "--output", str(tmp_path / "skip")) == 0
    rows = read_metrics(tmp_path / "skip")
    assert rows[0]["skipped_images"] == 1 and rows[0]["epoch"] == 0


def test_corrupt_or_foreign_checkpoints_are_refused(tmp_path):
    (tmp_path / "last.pt").write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        checkpoint.load(tmp_path)
    torch.save({"state_dict": {}}, tmp_path / "last.pt")
    with pytest.raises(ValueError, match="not a `mobilenet train` checkpoint"):
        checkpoint.load(tmp_path / "last.pt")
    checkpoint.save_atomic({"x": torch.ones(2)}, tmp_path / "ok.pt")
    assert sorted(os.listdir(tmp_path)) == ["last.pt", "ok.pt"]


def test_resume_refuses_changes_to_the_recipe(finished_run):
    cfg, _ = finished_run
    with pytest.raises(ValueError, match="keeps its configuration") as refused:
        config_for_resume(cfg.output, lr=1.0, alpha=0.5, seed=0)
    assert refused.value.changes == {"lr": (1.0, cfg.lr), "alpha": (0.5, 0.25)}  # seed 0 repeats the run's
    # Settings compare as the dataclasses hold them: resolution 32 is the run's (32, 32).
    resumed = config_for_resume(cfg.output, epochs=5, resolution=32, lr=cfg.lr, output=cfg.output)
    assert resumed.epochs == 5 and resumed.arch == cfg.arch


def test_the_model_to_train_comes_from_the_data_and_the_weights(finished_run):
    source, _ = finished_run
    # From scratch: the data's classes and channels (Fashion-MNIST's grey fed as one channel).
    arch, weights = model_to_train("fashion-mnist", alpha=0.5, resolution=32)
    assert weights is None and (arch.num_classes, arch.in_channels, arch.alpha) == (10, 1, 0.5)
    # Fine-tuning: the weights fix the layers, the data the classes, the recipe the dropout.
    arch, weights = model_to_train("cifar10", weights=f"{source.output}/best.pt", num_classes=12)
    assert arch == TINY_ARCH.replace(num_classes=12, dropout=ArchConfig().dropout) == weights.arch_cfg
    from mobilenet.weights import WeightsMismatch

    with pytest.raises(WeightsMismatch):
        model_to_train("fashion-mnist", weights=f"{source.output}/best.pt", alpha=0.5)


def test_fine_tune_replaces_classifier_and_freezes_body(finished_run, tmp_path, data_root, monkeypatch, capsys):
    import mobilenet.weights

    source, _ = finished_run
    weights = f"{source.output}/best.pt"
    loads = []
    real_load = mobilenet.weights.load_weights
    monkeypatch.setattr(mobilenet.weights, "load_weights", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    run = tmp_path / "run"
    assert main(["train", "--weights", weights, "--freeze-body", "--classes", "12", "--train-subset", "64",
                 "--val-subset", "64", "--epochs", "1", "--batch-size", "32", "--no-progress", "--output", str(run)]
                + (["--data-root", data_root] if data_root else [])) == 0
    assert len(loads) == 1  # the pretrained weights are read once, and the model built once from them
    model = MobileNetV1(ArchConfig.from_dict(torch.load(run / "last.pt", weights_only=True)["arch"]))
    model.load_state_dict(torch.load(run / "last.pt", weights_only=True)["model"])
    assert model.classifier.out_features == 12
    start = torch.load(weights, weights_only=True)["model"]
    for name, value in model.state_dict().items():
        if not name.startswith("classifier."):  # weights and BatchNorm statistics of the body
            assert torch.equal(value, start[name]), name


def test_fine_tuning_refuses_model_flags_that_contradict_the_weights(finished_run, tmp_path, capsys):
    source, _ = finished_run
    weights = f"{source.output}/best.pt"  # α 0.25
    assert _train_cli(tmp_path, "fashion-mnist", "--weights", weights, "--alpha", "0.5") == 2
    err = capsys.readouterr().err
    assert "--alpha 0.5 contradicts --weights" in err and err.count("\n") == 1, err
    assert not (tmp_path / "run").exists()


@pytest.mark.assets
def test_fine_tuning_starts_from_the_published_weights(assets_dir, tmp_path, monkeypatch):
    # The real TFLite 0.25-224 file, converted by the weights package; its 1001 TF classes become
    # the 1000 ImageNet ones, so before any learning the model already knows the validation photos.
    monkeypatch.setenv("MOBILENET_WEIGHTS_PATH", str(assets_dir / "tflite"))
    monkeypatch.setenv("MOBILENET_CACHE", str(tmp_path / "cache"))
    labels = assets_dir / "imagenet-val1300" / "labels.csv"
    status = main(["train", "--data", str(labels), "--val-data", str(labels), "--classes", "1000",
                   "--weights", "tflite_mobilenet_v1_0.25_224", "--freeze-body", "--resolution", "224",
                   "--train-subset", "16", "--val-subset", "100", "--epochs", "1", "--batch-size", "16",
                   "--lr", "1e-6", "--no-progress", "--output", str(tmp_path / "run")])
    assert status == 0
    row = read_metrics(tmp_path / "run")[0]
    assert row["val_top1"] > 0.4, row  # chance is 0.1%; the published model gets about 60% here


def test_grayscale_is_fed_natively_or_replicated_to_rgb():
    image = torch.randint(0, 256, (1, 28, 28), dtype=torch.uint8)
    one = evaluation_tensor(evaluation_preprocess((32, 32), 1, crop_fraction=1.0), image)
    three = evaluation_tensor(evaluation_preprocess((32, 32), 3, crop_fraction=1.0), image)
    assert one.shape == (1, 32, 32) and three.shape == (3, 32, 32)
    assert torch.equal(three[0], one[0]) and torch.equal(three[1], one[0]) and torch.equal(three[2], one[0])
    assert one.min() >= -1 and one.max() <= 1  # TF's scaling, (x - 127.5) / 127.5
    crop = TrainingAugment((32, 32), channels=1, min_crop=0.5)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        a = crop(image)
        torch.manual_seed(0)
        assert torch.equal(a, crop(image))  # random crops are a function of the generator state


def test_validation_during_training_is_mobilenet_evaluate_on_the_checkpoint(tmp_path, capsys):
    # Photos of odd sizes, so that a crop rounded differently (or another resize) would show.
    tree = _image_tree(tmp_path / "tree", classes=("a", "b", "c"), per_class=6)
    val_csv = tree / "val.csv"
    val_csv.write_text("".join(f"{p.relative_to(tree)},{'abc'.index(p.parent.name)}\n"
                               for p in sorted((tree / "val").rglob("*.png"))))
    assert _train_cli(tmp_path, tree, "--classes", "3") == 0
    run = tmp_path / "run"
    ckpt = torch.load(run / "last.pt", weights_only=True)
    recipe = Preprocess.from_dict(ckpt["preprocess"])
    assert recipe.crop_fraction == 0.875 and recipe.mean == (0.5, 0.5, 0.5)

    # The tensors training validated on are the recipe's own, bit for bit.
    from mobilenet.preprocess import load_image
    from mobilenet.train.files import build_splits

    val = build_splits(checkpoint.read_config(ckpt)).val
    for (path, _), (x, _) in zip(val.samples, val):
        assert torch.equal(x, recipe.eval_transform()(load_image(path))), path

    # And so the top-1 it logged is what `mobilenet evaluate` reports on the same checkpoint.
    capsys.readouterr()
    assert main(["evaluate", "--weights", str(run / "last.pt"), "--data", str(val_csv), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["images"] == 18
    assert result["top1"] == pytest.approx(100 * read_metrics(run)[-1]["val_top1"])


def test_bf16_autocast_follows_the_cpus_native_bf16(monkeypatch):
    # oneDNN reports bf16 "supported" wherever it can emulate it; emulation is many times slower.
    from described_cpus import ZEN3
    from mobilenet.cpu import cpu_info
    from mobilenet.errors import InputError
    from mobilenet.train.execution import autocast_dtype

    cpu = torch.device("cpu")
    expected = torch.bfloat16 if cpu_info().native_bf16 and torch.backends.mkldnn.is_available() else None
    assert autocast_dtype("auto", cpu) == expected
    monkeypatch.setattr("mobilenet.train.execution.cpu_info", lambda: ZEN3)
    assert autocast_dtype("auto", cpu) is None
    with pytest.raises(InputError, match="needs native bf16"):
        autocast_dtype("bf16", cpu)


def test_a_model_with_fewer_outputs_than_a_named_datasets_classes_is_refused_before_training(tmp_path, data_root):
    from mobilenet.train.files import build_splits

    config = tiny_config(tmp_path, data_root, arch=TINY_ARCH.replace(num_classes=5))
    with pytest.raises(ValueError, match=r"^fashion-mnist has 10 classes but the model has 5 outputs; pass "):
        build_splits(config)


def test_validation_data_beside_a_named_dataset_is_refused_not_ignored(tmp_path, data_root, capsys):
    from mobilenet.train.files import build_splits

    (tmp_path / "val.csv").write_text("a.png,0\n")
    with pytest.raises(ValueError, match="fashion-mnist has its own validation split"):
        build_splits(tiny_config(tmp_path, data_root, val_data=str(tmp_path / "val.csv")))
    assert _train_cli(tmp_path, "fashion-mnist", "--val-data", str(tmp_path / "val.csv")) == 2
    err = capsys.readouterr().err.strip()
    assert "--val-data" in err and "has its own validation split" in err and len(err.splitlines()) == 1


GOOD_ROW = {"epoch": 0, "step": 10, "lr": 0.1, "train_loss": 2.0, "val_loss": 1.9, "val_top1": 0.3, "val_top5": 0.8,
            "ema_top1": None, "ema_top5": None, "best_metric": 0.3, "epoch_time_s": 6.0, "images_per_s": 100.0,
            "world_size": 1, "skipped_images": 0}


def _fake_run(run_dir: Path, rows: list, summary: str | None = None, arch: ArchConfig = TINY_ARCH) -> Path:
    """A run directory as `mobilenet train` leaves it (without checkpoints); rows are JSON lines."""
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps(TrainConfig(arch=arch, epochs=3).to_dict()))
    (run_dir / "metrics.jsonl").write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    if summary is not None:
        (run_dir / "summary.json").write_text(summary)
    return run_dir


def _runs_table(capsys, *args, status: int = 0) -> dict[str, str]:
    """`mobilenet runs` ARGS: the header and each run's line by run name, spaces collapsed."""
    assert main(["runs", *map(str, args)]) == status
    lines = [" ".join(line.split()) for line in capsys.readouterr().out.splitlines()]
    rows = [line for line in lines[1:] if not line.startswith("learning curves: ")]
    return {"header": lines[0]} | {line.split()[0].rsplit("/", 1)[-1]: line for line in rows}


def test_runs_lists_damaged_runs_beside_the_others(tmp_path, capsys):
    _fake_run(tmp_path / "a_good", [GOOD_ROW, GOOD_ROW | {"epoch": 1, "val_top1": 0.4, "best_metric": 0.4}],
              json.dumps({"status": "finished"}))
    _fake_run(tmp_path / "b_cut_short", [GOOD_ROW, json.dumps(GOOD_ROW | {"epoch": 1})[:30]])
    _fake_run(tmp_path / "c_no_val_top1", [{k: v for k, v in GOOD_ROW.items() if k != "val_top1"}])
    _fake_run(tmp_path / "d_null_time", [GOOD_ROW, GOOD_ROW | {"epoch": 1, "epoch_time_s": None}])
    _fake_run(tmp_path / "e_bool_epoch", [GOOD_ROW | {"epoch": True}])
    _fake_run(tmp_path / "f_no_train_loss", [{k: v for k, v in GOOD_ROW.items() if k != "train_loss"}])
    _fake_run(tmp_path / "g_cut_summary", [GOOD_ROW], '{"status": "fini')
    _fake_run(tmp_path / "h_null_status", [GOOD_ROW], json.dumps({"status": None}))
    png = tmp_path / "curves.png"
    table = _runs_table(capsys, tmp_path, "--plot", png, status=2)  # every run listed, then the damage said
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(table) == 9 and "2/3 40.00% 40.00% 0.2 min 100 finished" in table["a_good"]
    for name in ("b_cut_short", "d_null_time"):  # the whole rows are kept, the damaged one left out
        assert "1/3 30.00% 30.00% 0.1 min" in table[name], table[name]
        assert table[name].endswith("running or stopped; 1 damaged line of metrics.jsonl left out")
    for name in ("c_no_val_top1", "e_bool_epoch", "f_no_train_loss"):
        assert "0/3 - - 0.0 min - running or stopped; 1 damaged line" in table[name], table[name]
    for name in ("g_cut_summary", "h_null_status"):
        assert table[name].endswith("1/3 30.00% 30.00% 0.1 min 100 summary.json damaged"), table[name]
    assert [r["epoch"] for r in read_metrics(tmp_path / "d_null_time")] == [0]


def test_runs_shows_best_and_last_top1_of_the_weights_best_pt_is_chosen_by(tmp_path, capsys):
    ema = [GOOD_ROW | {"epoch": e, "val_top1": plain, "ema_top1": averaged, "ema_top5": 0.8, "best_metric": averaged}
           for e, plain, averaged in [(0, 0.4, 0.1), (1, 0.55, 0.3), (2, 0.6, 0.45)]]
    _fake_run(tmp_path / "ema", ema)
    table = _runs_table(capsys, tmp_path / "ema")
    assert "best EMA top-1 last EMA top-1" in table["header"]
    assert "3/3 45.00% 45.00%" in table["ema"], table["ema"]  # not the plain model's 60%
    _fake_run(tmp_path / "plain", [GOOD_ROW, GOOD_ROW | {"epoch": 1, "val_top1": 0.2}])
    table = _runs_table(capsys, tmp_path)
    assert "best top-1 last top-1" in table["header"]
    assert "45.00% EMA 45.00% EMA" in table["ema"] and "30.00% 20.00%" in table["plain"]


def test_runs_shows_a_non_square_input_as_height_x_width(tmp_path, capsys):
    _fake_run(tmp_path / "wide", [GOOD_ROW], arch=TINY_ARCH.replace(resolution=(32, 48)))
    _fake_run(tmp_path / "square", [GOOD_ROW])
    table = _runs_table(capsys, tmp_path)
    assert "separable α0.25 32x48px" in table["wide"] and "separable α0.25 32px " in table["square"]
