"""Real DistributedDataParallel: two processes started by torchrun, gloo on CPU.

BatchNorm normalises each process's slice of the global batch (PyTorch's SyncBatchNorm needs
GPUs), so the single-process run that must match takes the same slices as micro-batches with
gradient accumulation (``micro_batch`` 16 of a global batch of 32). The parameters then agree up
to the order of floating-point sums; BatchNorm running statistics do not (DDP keeps rank 0's),
so only parameters are compared.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from mobilenet.train import checkpoint, config_for_resume, train
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


def test_two_process_ddp_matches_one_process_and_resumes_alone(tmp_path, one_thread):
    data_root = fashion_mnist_root(tmp_path)
    ddp_dir = tmp_path / "ddp"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "mobilenet", "train", "--data", "fashion-mnist", "--alpha", "0.25", "--resolution", "32",
        "--in-channels", "1", "--classes", "10", "--dropout", "0", "--train-subset", "128", "--val-subset", "64",
        "--epochs", "1", "--batch-size", "32", "--lr", "0.02", "--deterministic", "--no-progress",
        "--output", str(ddp_dir),
    ] + (["--data-root", data_root] if data_root else [])
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 process(es)" in done.stdout and done.stdout.count("epoch 1/1") == 1  # rank 0 alone prints

    ddp = checkpoint.load(ddp_dir)
    assert ddp["world_size"] == 2 and ddp["step"] == 4
    assert not any(k.startswith("module.") for k in ddp["model"])

    # One process, the same global batches cut into the same BatchNorm slices.
    reference = train(tiny_config(tmp_path / "single", data_root, epochs=1, micro_batch=16))
    model = reference.model
    _assert_close(_parameters(ddp["model"], model), _parameters(model.state_dict(), model))

    # The DDP checkpoint continues in one process, as the single-process run continues.
    resumed = train(config_for_resume(ddp_dir, epochs=2), resume=ddp_dir)
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
