"""The faults a user hits (issue 11), each with a one-line error or the right answer.

Nothing partial is written and no source is overwritten; a run killed with SIGKILL at any point
(during checkpoint writes too) resumes to exactly the results of an uninterrupted one; two OpenVINO
predictors survive Ctrl-C; bad arguments, bad images, full and read-only disks are one line each.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mobilenet.arch import ArchConfig
from mobilenet.cli import main
from mobilenet.errors import InputError, ResourceError
from mobilenet.factory import mobilenet_v1
from mobilenet.limits import check_memory
from mobilenet.model import MobileNetV1
from mobilenet.train import checkpoint, config_for_resume, loop, train
from mobilenet.train.runs import read_metrics
from test_train import fashion_mnist_root, tiny_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return fashion_mnist_root(tmp_path_factory.mktemp("fashion"))


@pytest.fixture(autouse=True)
def keep_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def tiny_cli(output: Path, data_root: str | None, *extra: str) -> list[str]:
    """`mobilenet train` on 128 Fashion-MNIST images, α 0.25 at 32 px, deterministic, one thread
    (the machine is small and shared: two contended threads are many times slower than one)."""
    threads = [] if "--threads" in extra else ["--threads", "1"]
    args = ["train", "--data", "fashion-mnist", "--alpha", "0.25", "--resolution", "32", "--in-channels", "1",
            "--classes", "10", "--dropout", "0", "--train-subset", "128", "--val-subset", "64", "--epochs", "1",
            "--batch-size", "32", "--lr", "0.02", "--deterministic", "--no-progress", "--output", str(output)]
    return args + (["--data-root", data_root] if data_root else []) + threads + list(extra)


def one_line_error(err: str, command: str) -> str:
    """The one error line of ``mobilenet COMMAND`` in ``err`` (beside warnings and progress), and
    no traceback anywhere."""
    lines = [line for line in err.splitlines() if line.startswith(f"mobilenet {command}: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def no_temporaries(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


def python(script: str, *args: str, env: dict[str, str] | None = None, timeout: int = 300,
           **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}, **kwargs)


# --------------------------------------------------------------------------------------------
# OpenVINO: two Cores released oldest-first leave a freed sigaltstack; the next signal crashed.

OPENVINO_RAW = textwrap.dedent("""
    import os, signal, time
    import numpy as np
    import openvino as ov
    from openvino import opset8 as ops
    # A background job (CI's, nohup's) may start with SIGINT ignored, and Python then installs no
    # handler of its own: install it, as an interactive Python has it.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    def core_and_model():
        p = ops.parameter([1, 4], np.float32)
        core = ov.Core()
        return core, core.compile_model(ov.Model([ops.relu(p)], [p]), "CPU")

    first, m1 = core_and_model()
    second, m2 = core_and_model()
    del m1, first   # the older Core first ...
    del m2, second  # ... then the newer one: the thread's alternate signal stack is now freed memory
    try:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)
    except KeyboardInterrupt:
        print("survived")
""")

OPENVINO_API = textwrap.dedent("""
    import gc, os, signal, time
    import torch
    from torch.utils.data import DataLoader, TensorDataset
    from mobilenet.deploy.openvino_core import openvino_core
    from mobilenet.deploy.runtime import make_predictor
    from mobilenet.model import MobileNetV1
    # A background job (CI's, nohup's) may start with SIGINT ignored, and Python then installs no
    # handler of its own: install it, as an interactive Python has it.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    def ctrl_c(label):
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
        except KeyboardInterrupt:
            print(label, flush=True)

    model = MobileNetV1(alpha=0.25, resolution=32, num_classes=10).eval()
    x = torch.zeros(2, 3, 32, 32)
    older = make_predictor(model, "openvino", "fp32")
    newer = make_predictor(model, "openvino", "fp32")
    assert torch.allclose(older(x), newer(x), atol=1e-4)
    del older; gc.collect()
    ctrl_c("older released")
    # torch's DataLoader with workers installs its SIGCHLD handler; the next SIGCHLD crashed too.
    for _ in DataLoader(TensorDataset(torch.zeros(4)), batch_size=2, num_workers=2):
        pass
    os.kill(os.getpid(), signal.SIGCHLD)
    # The project's API: one Core per process, however many compiled models come and go.
    core = openvino_core()
    assert core is openvino_core()
    del newer; gc.collect()
    os.kill(os.getpid(), signal.SIGCHLD)
    ctrl_c("both released")
""")


@pytest.mark.slow
def test_raw_pattern_of_two_openvino_cores_crashes_on_a_signal():
    """The control: released oldest-first, two Cores turn the next Ctrl-C into SIGSEGV. This is
    what the next test guards against through the project's API."""
    pytest.importorskip("openvino")
    done = python(OPENVINO_RAW, timeout=120)
    if done.returncode == 0 and "survived" in done.stdout:
        pytest.skip("this OpenVINO restores its signal stack safely; the guard below is moot but harmless")
    assert done.returncode in (-signal.SIGSEGV, 128 + signal.SIGSEGV), (done.returncode, done.stderr)


@pytest.mark.slow
def test_two_openvino_predictors_survive_ctrl_c_and_sigchld():
    pytest.importorskip("openvino")
    done = python(OPENVINO_API, timeout=300)
    assert done.returncode == 0, f"exit {done.returncode} (-11 is SIGSEGV)\n{done.stderr[-3000:]}"
    assert done.stdout.split() == ["older", "released", "both", "released"], done.stdout


# --------------------------------------------------------------------------------------------
# Checkpoints that cannot disagree


class Killed(BaseException):
    """Stands for SIGKILL inside the process: nothing after it runs, no handler sees it."""


def test_a_kill_between_the_best_and_last_writes_loses_no_best(tmp_path, data_root, monkeypatch):
    # Validation top-1 by epoch 0.1, 0.3, 0.2: epoch 2 is the best, and nothing after it improves,
    # so whatever best.pt holds after a kill at the end of epoch 2 is what the run ends with.
    steps: list[int] = []
    top1 = {0: 0.1, 1: 0.3, 2: 0.2}

    def scripted_validate(model, setup):
        return {"loss": 1.0, "top1": top1[(steps[-1] - 1) // 4], "top5": 1.0}

    monkeypatch.setattr(loop, "validate", scripted_validate)
    real_save = checkpoint.save_atomic
    written: dict[int, list[str]] = {}

    def save_then_die(obj, path):
        names = written.setdefault(obj["epoch"], [])
        if obj["epoch"] == 2 and len(names) == 1:  # the second checkpoint of the best epoch's end
            raise Killed
        real_save(obj, path)
        names.append(Path(path).name)

    cfg = tiny_config(tmp_path, data_root, epochs=3, threads=1)
    monkeypatch.setattr(checkpoint, "save_atomic", save_then_die)
    with pytest.raises(Killed):
        train(cfg, on_step=steps.append)
    monkeypatch.setattr(checkpoint, "save_atomic", real_save)

    summary = train(config_for_resume(cfg.output), resume=cfg.output, on_step=steps.append)
    assert summary.finished
    best = torch.load(Path(cfg.output) / "best.pt", weights_only=True)
    # The run names as best the epoch whose weights best.pt holds.
    assert (summary.best_top1, summary.best_epoch) == (0.3, 2)
    assert best["metrics"] == {"top1": 0.3, "epoch": 1} and best["epoch"] == 2
    assert checkpoint.load(cfg.output)["metrics"] == best["metrics"]


def test_resume_restores_the_thread_count_and_matches_an_uninterrupted_run(tmp_path, data_root):
    straight = tmp_path / "straight"
    assert main(tiny_cli(straight, data_root, "--threads", "1", "--epochs", "2")) == 0
    run = tmp_path / "run"
    assert main(tiny_cli(run, data_root, "--threads", "1")) == 0
    torch.set_num_threads(2)  # what a new process on this machine starts with
    assert main(["train", "--resume", str(run), "--epochs", "2", "--no-progress"]) == 0
    a = torch.load(straight / "last.pt", weights_only=True)
    b = torch.load(run / "last.pt", weights_only=True)
    assert b["config"]["threads"] == 1
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name


def test_resume_refuses_recipe_flags_instead_of_ignoring_them(tmp_path, data_root, capsys):
    run = tmp_path / "run"
    assert main(tiny_cli(run, data_root)) == 0
    before = (run / "last.pt").read_bytes()
    capsys.readouterr()
    for flag in (["--lr", "0.1"], ["--opt", "sgd"], ["--alpha", "0.5"], ["--threads", "2"], ["--seed", "1"]):
        assert main(["train", "--resume", str(run), "--epochs", "2", *flag]) == 2, flag
        line = one_line_error(capsys.readouterr().err, "train")
        assert f"{flag[0]} {flag[1]}" in line and "not applied" in line, line
    assert (run / "last.pt").read_bytes() == before  # nothing was trained
    # Repeating the recorded value is harmless; the documented overrides apply.
    assert main(["train", "--resume", str(run), "--epochs", "2", "--lr", "0.02", "--no-progress"]) == 0
    assert checkpoint.load(run)["epoch"] == 2


def test_a_new_run_never_overwrites_an_existing_runs_checkpoints(tmp_path, data_root, capsys):
    run = tmp_path / "run"
    assert main(tiny_cli(run, data_root)) == 0
    before = (run / "last.pt").read_bytes()
    capsys.readouterr()
    assert main(tiny_cli(run, data_root, "--lr", "0.1")) == 2
    assert "--resume" in one_line_error(capsys.readouterr().err, "train")
    assert (run / "last.pt").read_bytes() == before


def test_stale_temporaries_are_removed_when_the_run_continues(tmp_path, data_root):
    run = tmp_path / "run"
    assert main(tiny_cli(run, data_root)) == 0
    stale = run / ".last.pt.k1ll3d.tmp"
    stale.write_bytes(b"half a checkpoint")
    assert main(["train", "--resume", str(run), "--epochs", "2", "--no-progress"]) == 0
    assert not stale.exists() and no_temporaries(run)


KILL_DRIVER = textwrap.dedent("""
    import os, signal, sys
    import mobilenet.files as files

    # SIGKILL inside the n-th checkpoint write of this process: the data is written and fsynced,
    # the rename has not happened yet.
    n, count, fsync = int(os.environ.get("KILL_AT_CHECKPOINT", "0")), [0], files._fsync_file
    def fsync_then_die(path):
        fsync(path)
        if path.name.startswith((".last.pt.", ".best.pt.")):
            count[0] += 1
            if count[0] == n:
                os.kill(os.getpid(), signal.SIGKILL)
    files._fsync_file = fsync_then_die
    from mobilenet.cli import main
    sys.exit(main(sys.argv[1:]))
""")


@pytest.mark.slow
def test_sigkill_anywhere_resumes_to_the_results_of_an_uninterrupted_run(tmp_path, data_root):
    def command(out: Path) -> list[str]:
        if checkpoint.find(out) is not None:  # last.pt, or best.pt alone after a kill writing the first last.pt
            return ["train", "--resume", str(out), "--no-progress"]
        return tiny_cli(out, data_root, "--epochs", "3", "--threads", "1", "--ema-decay", "0.9")

    straight = tmp_path / "straight"
    started = time.perf_counter()
    done = python(KILL_DRIVER, *command(straight))
    assert done.returncode == 0, done.stderr
    whole_run = time.perf_counter() - started

    run = tmp_path / "run"
    rng = random.Random(0)
    landed = []
    # At random moments first, while the run has most of its work left: a kill after the process
    # had finished would test nothing (a resume of a finished run only confirms it). The moments
    # scale with how long the whole run takes here, so that each lands on a fast machine too.
    # (Three kills of at most 0.35 of it leave the run unfinished.) Then inside the 1st, 2nd and
    # 3rd checkpoint write of a process, while writes are left.
    plan = [None] * 3 + [{"KILL_AT_CHECKPOINT": str(n)} for n in (1, 2, 3)]
    for env in plan:
        # The machine's default thread count (no OMP_NUM_THREADS), which the resume must not take.
        default_threads = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
        process = subprocess.Popen([sys.executable, "-c", KILL_DRIVER, *command(run)], cwd=REPO,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                   env={**default_threads, **(env or {})})
        if env is None:
            time.sleep(rng.uniform(0.1, 0.35) * whole_run)
            process.send_signal(signal.SIGKILL)
        _, err = process.communicate(timeout=300)
        assert process.returncode in (0, -signal.SIGKILL), err
        landed.append(process.returncode == -signal.SIGKILL)
    assert all(landed[:3]), f"a kill at a random moment came after its process had finished: {landed}"
    assert landed[3], f"no process was killed inside a checkpoint write: {landed}"
    for _ in range(3):  # finish (a resume of a finished run only confirms it)
        done = python(KILL_DRIVER, *command(run))
        assert done.returncode == 0, done.stderr
    a, b = (torch.load(d / "last.pt", weights_only=True) for d in (straight, run))
    for part in ("model", "ema"):
        for name in a[part]:
            assert torch.equal(a[part][name], b[part][name]), (part, name)
    best_a, best_b = (torch.load(d / "best.pt", weights_only=True) for d in (straight, run))
    assert best_a["metrics"] == best_b["metrics"] == a["metrics"] == b["metrics"]
    for name in best_a["model"]:
        assert torch.equal(best_a["model"][name], best_b["model"][name]), name
    rows_a, rows_b = read_metrics(straight), read_metrics(run)
    assert [(r["epoch"], r["train_loss"], r["val_top1"]) for r in rows_a] == \
        [(r["epoch"], r["train_loss"], r["val_top1"]) for r in rows_b]
    assert no_temporaries(run)


# --------------------------------------------------------------------------------------------
# Limits from the cost model: refused at once, before allocating


@pytest.mark.parametrize("settings", [{"alpha": 40, "resolution": 32}, {"alpha": 1e9}, {"resolution": 100000}])
def test_models_that_cannot_fit_are_refused_before_allocating(settings, monkeypatch):
    def no_layer(*args, **kwargs):  # allocating the first layer already took minutes and gigabytes
        pytest.fail("a layer was built before the request was refused")

    monkeypatch.setattr(torch.nn.Conv2d, "__init__", no_layer)
    # The factory refuses; the nn.Module constructor itself only allocates (it does no I/O).
    with pytest.raises(ResourceError, match=r"needs at least .* but only .* is available"):
        mobilenet_v1(**settings)


def test_cli_requests_that_cannot_fit_are_one_line(tmp_path, data_root, capsys, monkeypatch):
    assert main(tiny_cli(tmp_path / "a", data_root, "--alpha", "40")) == 1
    assert "needs at least" in one_line_error(capsys.readouterr().err, "train")
    # A machine with 64 MiB to spare: the model fits, a training batch of 1024 images at 224 px does not.
    monkeypatch.setenv("MOBILENET_MEMORY_LIMIT", "64M")
    assert main(tiny_cli(tmp_path / "b", data_root, "--resolution", "224", "--batch-size", "1024",
                         "--train-subset", "1024")) == 1
    line = one_line_error(capsys.readouterr().err, "train")
    assert "(training, batch 1024)" in line and "64.0 MiB is available" in line and "MOBILENET_MEMORY_LIMIT" in line
    assert not (tmp_path / "b" / "last.pt").exists()


def test_evaluation_batches_that_cannot_fit_are_refused(monkeypatch):
    cfg = ArchConfig(alpha=0.25, resolution=224)
    check_memory(cfg, 8, mode="inference", available=2**30)
    with pytest.raises(ResourceError, match="inference, batch 100000"):
        check_memory(cfg, 100000, mode="inference", available=2**30)
    from mobilenet.accuracy import accuracy, torch_predictor

    predict = torch_predictor(MobileNetV1(cfg))
    monkeypatch.setenv("MOBILENET_MEMORY_LIMIT", "256M")
    with pytest.raises(ResourceError, match="batch 4096"):
        accuracy(predict, [(torch.zeros(3, 224, 224), 0)], batch_size=4096, progress=False)


# --------------------------------------------------------------------------------------------
# Evaluation: a right answer, or one line


def _weights(tmp_path: Path) -> Path:
    from mobilenet.preprocess import Preprocess
    from mobilenet.weights import PretrainedCfg, save_safetensors, weights_of

    torch.manual_seed(0)
    model = MobileNetV1(ArchConfig(alpha=0.25, resolution=32, num_classes=1001)).eval()
    path = tmp_path / "small.safetensors"
    cfg = PretrainedCfg(name="small", arch_cfg=model.arch_cfg, preprocess=Preprocess(resolution=32),
                        label_set="imagenet-1001")
    save_safetensors(weights_of(model, cfg), path)
    return path


def _evaluate(weights: Path, data: Path, *extra: str) -> list[str]:
    return ["evaluate", "--weights", str(weights), "--data", str(data), "--json", *extra]


def _photo(path: Path, value: int = 100) -> None:
    Image.fromarray(np.full((40, 40, 3), value, np.uint8)).save(path)


def bomb_png(path: Path, side: int = 13000) -> None:
    """A 1-bit greyscale PNG of ``side``×``side`` zeros: about 20 KB on disk, 169 megapixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    row = b"\0" * (1 + (side + 7) // 8)
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = side.to_bytes(4, "big") * 2 + bytes([1, 0, 0, 0, 0])
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def test_evaluate_with_no_readable_image_is_an_error_not_nan(tmp_path, capsys):
    weights = _weights(tmp_path)
    for i in range(3):
        (tmp_path / f"bad{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (tmp_path / "val.csv").write_text("".join(f"bad{i}.png,{i}\n" for i in range(3)))
    capsys.readouterr()
    assert main(_evaluate(weights, tmp_path / "val.csv", "--bad-files", "skip")) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # no {"top1": NaN}
    assert "none of the 3 images could be read" in one_line_error(captured.err, "evaluate")


def test_a_typo_in_the_first_row_of_a_headerless_csv_is_reported_not_dropped(tmp_path, capsys):
    weights = _weights(tmp_path)
    _photo(tmp_path / "a.png")
    _photo(tmp_path / "b.png")
    (tmp_path / "val.csv").write_text("a.png,O\nb.png,1\n")  # the letter O for 0
    capsys.readouterr()
    assert main(_evaluate(weights, tmp_path / "val.csv")) == 2
    assert "row 1: 'O' is neither a class index" in one_line_error(capsys.readouterr().err, "evaluate")
    (tmp_path / "header.csv").write_text("file,label\na.png,0\nb.png,1\n")  # a real header still is one
    assert main(_evaluate(weights, tmp_path / "header.csv")) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 2


def test_missing_files_and_folders_count_as_skipped(tmp_path, capsys):
    weights = _weights(tmp_path)
    _photo(tmp_path / "a.png")
    (tmp_path / "folder.png").mkdir()
    (tmp_path / "val.csv").write_text("a.png,0\ngone.png,1\nfolder.png,2\n")
    capsys.readouterr()
    assert main(_evaluate(weights, tmp_path / "val.csv", "--bad-files", "skip")) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["images"], result["skipped"]) == (1, 2)
    assert main(_evaluate(weights, tmp_path / "val.csv", "--bad-files", "stop")) == 2
    assert "gone.png: no such file" in one_line_error(capsys.readouterr().err, "evaluate")


def test_a_decompression_bomb_is_refused_without_being_decoded(tmp_path, capsys, monkeypatch):
    weights = _weights(tmp_path)
    bomb_png(tmp_path / "bomb.png")
    assert (tmp_path / "bomb.png").stat().st_size < 100_000
    _photo(tmp_path / "a.png")
    (tmp_path / "val.csv").write_text("bomb.png,0\na.png,1\n")
    capsys.readouterr()
    from PIL import ImageFile

    decoded = []
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load",
                        lambda img: decoded.append(str(getattr(img, "filename", ""))) or real_load(img))
    assert main(_evaluate(weights, tmp_path / "val.csv", "--bad-files", "stop")) == 2
    line = one_line_error(capsys.readouterr().err, "evaluate")
    assert "bomb.png: declares 13000×13000 pixels" in line and "not decoded" in line
    assert not any(name.endswith("bomb.png") for name in decoded)  # decoding it took 1.7 GB
    # classify reads images through the same loader.
    assert main(["classify", "--weights", str(weights), str(tmp_path / "bomb.png")]) != 0
    assert "declares 13000×13000 pixels" in capsys.readouterr().err
    assert main(_evaluate(weights, tmp_path / "val.csv", "--bad-files", "skip")) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["skipped"] == 1 and "DecompressionBombWarning" not in captured.err


# --------------------------------------------------------------------------------------------
# Arguments, devices and disks: one line each, nothing written


@pytest.mark.parametrize(("flags", "message"), [
    (["--device", "foo"], "device must be auto, cpu, cuda or cuda:N"),
    (["--device", "cuda"], "no CUDA GPU is available"),
    (["--threads", "-1"], "threads must be >= 1"),
    (["--threads", "0"], "threads must be >= 1"),
])
def test_bad_execution_flags_are_one_line(tmp_path, data_root, capsys, flags, message):
    if flags[-1] == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert main(tiny_cli(tmp_path / "run", data_root, *flags)) == 2
    assert message in one_line_error(capsys.readouterr().err, "train")
    assert not (tmp_path / "run" / "last.pt").exists()


@pytest.mark.parametrize(("device", "message"), [("foo", "device must be cpu, cuda or cuda:N"),
                                               ("cuda", "no CUDA GPU is available")])
def test_evaluate_on_a_device_that_is_not_there_is_one_line(tmp_path, capsys, device, message):
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    weights = _weights(tmp_path)
    _photo(tmp_path / "a.png")
    (tmp_path / "val.csv").write_text("a.png,0\n")
    capsys.readouterr()
    assert main(_evaluate(weights, tmp_path / "val.csv", "--device", device)) == 2
    assert message in one_line_error(capsys.readouterr().err, "evaluate")


def _read_only_folder(tmp_path: Path) -> Path:
    if os.geteuid() == 0:  # root writes through permission bits; /sys refuses even root
        return Path("/sys/mobilenet-reliability-test")
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o500)
    return folder / "out"


def test_writing_into_a_read_only_place_is_one_line(tmp_path, data_root, capsys):
    target = _read_only_folder(tmp_path)
    assert main(tiny_cli(target, data_root)) != 0
    assert str(target) in one_line_error(capsys.readouterr().err, "train")
    assert main(["cost", "--plot", str(target.parent / "costs.png")]) == 2
    assert "cannot write" in one_line_error(capsys.readouterr().err, "cost")


FULL_DISK = textwrap.dedent("""
    import resource, signal, sys
    # A disk that takes no file over 512 KB: writes fail as on a full disk (EFBIG instead of ENOSPC).
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (512 * 1024, 512 * 1024))
    from mobilenet.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def test_a_full_disk_during_a_checkpoint_is_one_line_and_leaves_nothing_partial(tmp_path, data_root):
    run = tmp_path / "run"
    done = python(FULL_DISK, *tiny_cli(run, data_root), timeout=300)
    assert done.returncode == 1, done.stderr
    line = one_line_error(done.stderr, "train")
    assert "cannot write" in line and ("last.pt" in line or "best.pt" in line), line
    assert not (run / "last.pt").exists() and not (run / "best.pt").exists() and no_temporaries(run)


DOUBLE_CTRL_C = textwrap.dedent("""
    import atexit, os, signal, sys
    import mobilenet.train

    real = mobilenet.train.train
    def train(config, **kwargs):
        def on_step(step):
            if step == 2:
                os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C: save after this step ...
                os.kill(os.getpid(), signal.SIGINT)  # ... and again: stop now
        return real(config, on_step=on_step, **kwargs)
    mobilenet.train.train = train
    # A third Ctrl-C while the exit hooks run (torch._dynamo's printed a KeyboardInterrupt traceback).
    atexit.register(lambda: os.kill(os.getpid(), signal.SIGINT))
    sys.argv = ["mobilenet", *sys.argv[1:]]
    from mobilenet.cli import main
    sys.exit(main())
""")


def test_repeated_ctrl_c_stops_with_one_line_and_no_traceback(tmp_path, data_root):
    done = python(DOUBLE_CTRL_C, *tiny_cli(tmp_path / "run", data_root), timeout=300)
    assert done.returncode == 130, done.stderr
    assert "Traceback" not in done.stderr and "KeyboardInterrupt" not in done.stderr, done.stderr
    assert "mobilenet train: interrupted" in done.stderr


CTRL_C_WHILE_PARSING = textwrap.dedent("""
    import signal, sys, time
    signal.signal(signal.SIGINT, signal.default_int_handler)  # (a background job may start with it ignored)
    from mobilenet.cli import common, main

    def slow_choices(self):  # checking --resize's value imports torch: seconds; here, until Ctrl-C
        print("parsing", flush=True)
        time.sleep(120)

    common.Choices.values = property(slow_choices)
    sys.argv = ["mobilenet", "classify", "--resize", "tf", "photo.jpg"]
    sys.exit(main())
""")


def test_ctrl_c_while_the_command_line_is_parsed_is_one_line(tmp_path):
    """Parsing was outside main's Ctrl-C handling: a Ctrl-C while a flag's value was checked (which
    imports torch) printed a KeyboardInterrupt traceback and the process died by SIGINT."""
    process = subprocess.Popen([sys.executable, "-c", CTRL_C_WHILE_PARSING], cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline() == "parsing\n"
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    # The command is not known until parsing ends: the program's own name says it.
    assert (process.returncode, out, err) == (130, "", "mobilenet: interrupted\n")


def test_runs_json_with_a_plot_prints_only_json_and_never_over_a_run(tmp_path, data_root, capsys):
    run = tmp_path / "run"
    assert main(tiny_cli(run, data_root)) == 0
    capsys.readouterr()
    assert main(["runs", str(run), "--json", "--plot", str(tmp_path / "curves.png")]) == 0
    assert json.loads(capsys.readouterr().out)[0]["run"] == str(run)
    before = (run / "last.pt").read_bytes()
    assert main(["runs", str(run), "--plot", str(run / "last.pt")]) == 2
    assert "also an input" in one_line_error(capsys.readouterr().err, "runs")
    assert (run / "last.pt").read_bytes() == before


def test_runs_on_a_damaged_run_directory_is_one_line(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text('{"data": "fashion-mn')  # cut short
    assert main(["runs", str(tmp_path / "run")]) == 2
    assert "config.json is not readable JSON" in one_line_error(capsys.readouterr().err, "runs")


def test_cost_plot_gets_the_modes_of_any_other_file(tmp_path):
    old = os.umask(0o022)
    try:
        assert main(["cost", "--alpha", "0.25", "--plot", str(tmp_path / "c.png")]) == 0
    finally:
        os.umask(old)
    assert (tmp_path / "c.png").stat().st_mode & 0o777 == 0o644


def test_input_errors_are_value_errors_and_mobilenet_errors():
    assert issubclass(InputError, ValueError) and InputError.exit_status == 2 and ResourceError.exit_status == 1
