"""Real DistributedDataParallel: two processes started by torchrun, gloo on CPU.

BatchNorm normalises each process's slice of the global batch (PyTorch's SyncBatchNorm needs
GPUs), so the single-process run that must match takes the same slices as micro-batches with
gradient accumulation (``micro_batch`` 16 of a global batch of 32). The parameters then agree up
to the order of floating-point sums; BatchNorm running statistics do not (DDP keeps rank 0's),
so only parameters are compared. A two-process run killed and continued under two processes,
though, must end bit for bit where an uninterrupted one does, dropout included.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from mobilenet.train import checkpoint, config_for_resume, train
from mobilenet.train.runs import read_metrics
from test_train import fashion_mnist_root, tiny_config

pytestmark = pytest.mark.slow


def _parameters(state: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: state[name] for name, _ in model.named_parameters()}


def _assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5, msg=name)


@pytest.fixture
def one_thread():
    # As each torchrun worker (OMP_NUM_THREADS=1): the machine is small and shared.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def torchrun(*args: str, timeout: int = 300, env: dict[str, str] | None = None,
             cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc-per-node 2 ARGS``, one intra-op thread per worker. Past the
    timeout torchrun gets SIGTERM, so that it stops its workers (each in a session of its own,
    which a SIGKILL of torchrun would leave running), and the test fails."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd,
                          env=os.environ | {"OMP_NUM_THREADS": "1"} | (env or {})) as process:
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.terminate()
            out, err = process.communicate(timeout=120)
            pytest.fail(f"torchrun ran over {timeout} s:\n{out[-2000:]}\n{err[-3000:]}")
    return subprocess.CompletedProcess(command, process.returncode, out, err)


def tiny_train(output: Path | None, data_root: str | None, *extra: str) -> list[str]:
    """The arguments of a tiny deterministic `mobilenet train` (α 0.25 at 32 px, 4 steps an epoch);
    ``output`` None: the default run directory, under the working directory's runs/."""
    return ["train", "--data", "fashion-mnist", "--alpha", "0.25", "--resolution", "32", "--in-channels", "1",
            "--classes", "10", "--train-subset", "128", "--val-subset", "64", "--batch-size", "32", "--lr", "0.02",
            "--deterministic", "--threads", "1", "--no-progress", *(["--output", str(output)] if output else []),
            *(["--data-root", data_root] if data_root else []), *extra]


def test_two_process_ddp_matches_one_process_and_resumes_alone(tmp_path, one_thread, capsys):
    data_root = fashion_mnist_root(tmp_path)
    ddp_dir = tmp_path / "ddp"
    done = torchrun("-m", "mobilenet", *tiny_train(ddp_dir, data_root, "--dropout", "0", "--epochs", "1"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 process(es)" in done.stdout and done.stdout.count("epoch 1/1") == 1  # rank 0 alone prints

    ddp = checkpoint.load(ddp_dir)
    assert ddp["world_size"] == 2 and ddp["step"] == 4
    assert not any(k.startswith("module.") for k in ddp["model"])

    # One process, the same global batches cut into the same BatchNorm slices.
    reference = train(tiny_config(tmp_path / "single", data_root, epochs=1, micro_batch=16))
    model = reference.model
    _assert_close(_parameters(ddp["model"], model), _parameters(model.state_dict(), model))

    # The DDP checkpoint continues in one process, as the single-process run continues, and says
    # that the sums now run in another order.
    capsys.readouterr()
    resumed = train(config_for_resume(ddp_dir, epochs=2), resume=ddp_dir)
    assert "saved by 2 process(es) and continues on 1" in capsys.readouterr().err
    single_dir = tmp_path / "single" / "run"
    continued = train(config_for_resume(single_dir, epochs=2), resume=single_dir)
    assert resumed.finished and continued.finished and resumed.step == 8
    _assert_close(_parameters(resumed.model.state_dict(), model), _parameters(continued.model.state_dict(), model))
    assert checkpoint.load(ddp_dir)["world_size"] == 1


def test_a_rank_with_an_unreadable_micro_batch_stops_every_rank_at_once(tmp_path):
    """Under DDP every process joins every gradient all-reduce: a process whose whole micro-batch
    is unreadable used to raise alone while the others waited in the collective until its timeout
    (30 minutes). Now all stop at the first step, each with one line."""
    from mobilenet.train.data import GlobalBatchSampler
    from test_train import _image_tree

    tree = _image_tree(tmp_path / "tree")
    files = sorted((tree / "train").rglob("*.png"))  # the dataset's order: class folders, then files
    first = next(iter(GlobalBatchSampler(len(files), 4, rank=1, world_size=2, seed=0)))
    for _, index in first:  # process 1's first micro-batch, and only it, is unreadable
        files[index].write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "mobilenet", "train", "--data", str(tree), "--alpha", "0.25", "--resolution", "32",
        "--epochs", "1", "--batch-size", "4", "--bad-files", "skip", "--no-progress",
        "--output", str(tmp_path / "run"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240,
                          env=os.environ | {"OMP_NUM_THREADS": "1"})
    assert done.returncode != 0
    assert "micro-batch of process 1 was unreadable" in done.stderr, done.stderr[-3000:]
    assert "process 0 stops with the others" in done.stderr, done.stderr[-3000:]
    ours = done.stderr.split("torch/distributed/elastic")[0]  # (torchrun itself then reports the failure)
    assert "Traceback" not in ours, ours


# Both workers of the first start of the group kill themselves after optimizer step KILL_AT_STEP,
# as a lost machine would; torchrun --max-restarts then starts the group again with the same
# command, and the new group must continue the run by itself.
KILLED_AT_A_STEP = textwrap.dedent("""
    import os, signal, sys
    import mobilenet.train.loop as loop

    first_start = os.environ.get("TORCHELASTIC_RESTART_COUNT") == "0"
    kill_at = int(os.environ["KILL_AT_STEP"]) if first_start else -1
    real_train = loop.train

    def train(config, **kwargs):
        def on_step(step):
            if step == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
        return real_train(config, on_step=on_step, **kwargs)

    loop.train = train
    from mobilenet.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def test_a_killed_two_process_run_restarts_by_itself_and_ends_bit_identical(tmp_path):
    """Dropout on, so every rank's random stream matters: the checkpoint holds all of them (only
    rank 0's used to be saved, and the resumed run ended 8 points from an uninterrupted one).
    torchrun --max-restarts used to be refused ("already holds a run"). No --output: the default
    directory is named after the clock, and the restarted group used to name another one, where
    it started the run over from its first step."""
    data_root = fashion_mnist_root(tmp_path)
    recipe = ("--dropout", "0.2", "--epochs", "2")
    straight = tmp_path / "straight"
    done = torchrun("-m", "mobilenet", *tiny_train(straight, data_root, *recipe))
    assert done.returncode == 0, done.stdout + done.stderr

    driver = tmp_path / "killed_at_a_step.py"
    driver.write_text(KILLED_AT_A_STEP)
    launch = tmp_path / "launch"
    launch.mkdir()
    # Killed at the second epoch's second step: last.pt holds the first epoch.
    done = torchrun("--max-restarts", "1", "--monitor-interval", "0.5", str(driver),
                    *tiny_train(None, data_root, *recipe), env={"KILL_AT_STEP": "6"}, cwd=launch)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    runs = list((launch / "runs").iterdir())
    assert len(runs) == 1, runs  # one directory for both ranks and both starts of the group
    run = runs[0]
    assert f"resuming {run.relative_to(launch)} from last.pt at epoch 2, step 0/4 (saved by 2 process(es), now 2)" \
        in done.stdout
    assert "ended without releasing this run's lock" in done.stderr  # the killed rank 0's
    assert "will not reproduce" not in done.stderr  # nothing was announced that breaks exactness

    a, b = (checkpoint.load(d) for d in (straight, run))
    assert (a["step"], b["step"]) == (8, 8) and len(b["rng"]) == 2
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    rows_a, rows_b = read_metrics(straight), read_metrics(run)
    assert [(r["train_loss"], r["val_loss"], r["val_top1"]) for r in rows_a] == \
        [(r["train_loss"], r["val_loss"], r["val_top1"]) for r in rows_b]


def test_a_run_directory_in_use_stops_every_process_with_the_holders_pid(tmp_path):
    from mobilenet.train.lock import RunLock

    run = tmp_path / "run"
    with RunLock(run):  # this test's process, as a leftover worker of a torchrun killed with -9 would
        done = torchrun("-m", "mobilenet", *tiny_train(run, fashion_mnist_root(tmp_path), "--epochs", "1"),
                        timeout=240)
    assert done.returncode != 0
    assert f"is in use by process {os.getpid()}" in done.stderr, done.stderr[-3000:]
    assert "process 1 stops with process 0" in done.stderr, done.stderr[-3000:]
    assert sorted(p.name for p in run.iterdir()) == [".lock"]  # nothing written
