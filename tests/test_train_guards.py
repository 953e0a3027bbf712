"""What keeps a training run's results whole and its errors true (issue 18): settings out of range
are refused before anything is written, one writer per run directory, a kill during the very first
``last.pt`` write resumes from ``best.pt``, a restarted torchrun group continues only its own run,
and a loss that stops being a number names its likely cause. Two-process runs (every rank's
random state, torchrun's restarts) are in test_ddp.py."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from mobilenet.cli import main
from mobilenet.errors import InputError
from mobilenet.model import MobileNetV1
from mobilenet.train import TrainConfig, checkpoint, config_for_resume, train
from mobilenet.train.config import RANGES, SettingError
from mobilenet.train.execution import Diverged, non_finite_loss
from mobilenet.train.lock import RunLock
from test_train import TINY_ARCH, fashion_mnist_root, tiny_config


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return fashion_mnist_root(tmp_path_factory.mktemp("fashion"))


def one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("mobilenet train: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def models_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)


class Killed(BaseException):
    """Stands for SIGKILL inside the process: nothing after it runs, no handler sees it."""


# --------------------------------------------------------------------------------------------
# Ranges (the command line's own test is tests/test_bad_inputs.py)


@pytest.mark.parametrize(("setting", "value"), [
    ("decay_rate", -1.0), ("decay_rate", 1.5), ("momentum", 1.0), ("rmsprop_eps", 0.0), ("min_lr_ratio", 2.0),
    ("clip_grad", -1.0), ("lr", float("nan")), ("lr", float("inf")), ("weight_decay", float("inf")),
    ("epochs", 0), ("epochs", 2.5), ("log_every", 0), ("threads", 0), ("num_workers", -1), ("ema_decay", 1.0),
    ("adam_betas", (0.9, 1.0)), ("optimizer", "adam"),
])
def test_settings_out_of_range_are_refused_by_trainconfig(setting, value):
    with pytest.raises(SettingError) as refused:
        TrainConfig(**{setting: value})
    assert refused.value.setting == setting and str(refused.value).startswith(f"{setting} must be ")
    assert set(RANGES) <= {f.name for f in dataclasses.fields(TrainConfig)}


# --------------------------------------------------------------------------------------------
# A loss that stops being a number


def test_a_diverging_loss_is_one_line_that_names_the_learning_rate(tmp_path, data_root, capsys):
    args = ["train", "--data", "fashion-mnist", "--alpha", "0.25", "--resolution", "32", "--in-channels", "1",
            "--train-subset", "64", "--val-subset", "32", "--batch-size", "16", "--epochs", "1", "--opt", "sgd",
            "--lr", "1e30", "--no-progress", "--output", str(tmp_path / "run"),
            *(["--data-root", data_root] if data_root else [])]
    assert main(args) == 1
    line = one_line_error(capsys.readouterr().err)
    assert "training diverged; lower --lr (the schedule was at 1e+30" in line and "--clip-grad" in line, line


def test_a_loss_that_was_never_finite_blames_the_weights_or_the_images_not_the_learning_rate():
    config = TrainConfig(arch=TINY_ARCH, weights="broken.safetensors")
    images, model = torch.zeros(2, 1, 32, 32), MobileNetV1(TINY_ARCH)
    with torch.no_grad():
        model.classifier.weight[0, 0] = float("nan")
    error = non_finite_loss(float("nan"), 0, model, images, config, lr=0.045, autocast=False)
    assert isinstance(error, InputError) and "weights='broken.safetensors'" in str(error)
    assert "--lr" not in str(error)

    error = non_finite_loss(float("nan"), 3, MobileNetV1(TINY_ARCH), images.fill_(float("inf")), config, lr=0.045,
                            autocast=False)
    assert isinstance(error, InputError) and "images" in str(error) and "--lr" not in str(error)

    # The weights went bad through the updates: the learning rate in effect, and what else helps.
    error = non_finite_loss(float("inf"), 3, model, images.zero_(), dataclasses.replace(config, clip_grad=1.0),
                            lr=0.0123, autocast=False)
    assert isinstance(error, Diverged) and "at step 4" in str(error) and "0.0123" in str(error)
    assert "--clip-grad" not in str(error)  # already clipping


# --------------------------------------------------------------------------------------------
# One writer per run directory


def test_a_second_writer_of_a_run_is_refused_with_the_pid_that_holds_it(tmp_path, data_root, capsys):
    cfg = tiny_config(tmp_path, data_root, epochs=1)
    train(cfg)
    refusals = []

    def second_writer(step: int) -> None:
        if step == 5:  # while the resumed run trains, the same run is resumed again
            refusals.append(main(["train", "--resume", cfg.output, "--epochs", "3", "--no-progress"]))

    resumed = train(config_for_resume(cfg.output, epochs=2), resume=cfg.output, on_step=second_writer)
    assert resumed.finished and resumed.step == 8 and refusals == [2]
    assert f"in use by process {os.getpid()}" in one_line_error(capsys.readouterr().err)
    assert checkpoint.load(cfg.output)["epoch"] == 2  # the first writer's run, whole
    RunLock(cfg.output).acquire().release()  # and released when it ended


HOLD_THE_LOCK = textwrap.dedent("""
    import sys, time
    from mobilenet.train.lock import RunLock
    RunLock(sys.argv[1]).acquire()
    print("held", flush=True)
    time.sleep(600)
""")


def test_a_writer_left_running_is_named_and_one_killed_is_noted(tmp_path, capsys):
    """As the workers of a torchrun killed with -9 go on training into the run directory."""
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_THE_LOCK, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        assert main(["train", "--alpha", "0.25", "--resolution", "32", "--output", str(run)]) == 2
        line = one_line_error(capsys.readouterr().err)
        assert f"in use by process {holder.pid} (`-c {run}`" in line and f"kill {holder.pid}" in line, line
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # The kernel let go of the lock with the process; its note tells the next writer what happened.
    lock = RunLock(run).acquire()
    assert lock.previous is not None and lock.previous["pid"] == holder.pid
    lock.release()
    assert RunLock(run).acquire().previous is None  # a clean release leaves no note


# A writer whose data-loader worker (a forked child, as validation's are) is still alive when
# the writer is killed: the child must not keep the writer's lock.
KILLED_WITH_A_FORKED_CHILD = textwrap.dedent("""
    import multiprocessing, os, signal, sys, time
    from mobilenet.train.lock import RunLock
    RunLock(sys.argv[1]).acquire()
    child = multiprocessing.get_context("fork").Process(target=time.sleep, args=(600,), daemon=True)
    child.start()
    print(child.pid, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_a_killed_writers_forked_children_do_not_keep_its_lock(tmp_path):
    run = tmp_path / "run"
    writer = subprocess.Popen([sys.executable, "-c", KILLED_WITH_A_FORKED_CHILD, str(run)], stdout=subprocess.PIPE,
                              text=True)
    child = int(writer.stdout.readline())  # (the child keeps the pipe open: no waiting for its end)
    try:
        assert writer.wait(timeout=120) == -signal.SIGKILL
        os.kill(child, 0)  # still alive, as a worker is until it notices its parent is gone
        lock = RunLock(run).acquire()  # used to be refused: "locked by a process that process N started"
        assert lock.previous is not None
        lock.release()
    finally:
        os.kill(child, signal.SIGKILL)
        writer.stdout.close()


def test_a_signal_is_announced_by_the_trainer_alone_not_by_its_forked_workers(capfd):
    from mobilenet.train.execution import StopRequest

    with StopRequest() as stop:
        pid = os.fork()
        if pid == 0:  # as a data-loader worker that the terminal's Ctrl-C reaches too
            os.kill(os.getpid(), signal.SIGINT)
            os._exit(0)
        os.waitpid(pid, 0)
        assert "saving a checkpoint" not in capfd.readouterr().err  # three processes used to say it
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested
    assert "SIGINT: saving a checkpoint after this step" in capfd.readouterr().err


# --------------------------------------------------------------------------------------------
# Where a run continues from


def test_a_kill_during_the_first_last_pt_write_resumes_from_best_pt(tmp_path, data_root, monkeypatch):
    straight = train(tiny_config(tmp_path / "straight", data_root))

    real_save = checkpoint.save_atomic

    def killed_writing_last_pt(obj, path):
        if Path(path).name == "last.pt":
            raise Killed
        real_save(obj, path)

    cfg = tiny_config(tmp_path / "killed", data_root)
    monkeypatch.setattr(checkpoint, "save_atomic", killed_writing_last_pt)
    with pytest.raises(Killed):
        train(cfg)
    monkeypatch.setattr(checkpoint, "save_atomic", real_save)
    run = Path(cfg.output)
    assert (run / "best.pt").is_file() and not (run / "last.pt").exists()

    with pytest.raises(InputError, match=r"already holds a run \(best.pt\)"):  # a new run would write over it
        train(cfg)
    resumed = train(config_for_resume(run), resume=run)
    assert resumed.finished and resumed.step == straight.step == 8
    assert models_equal(straight.model.state_dict(), resumed.model.state_dict())


def test_a_restarted_torchrun_group_continues_its_own_run_and_no_other(tmp_path, data_root, monkeypatch):
    # As torchrun sets them: the launch's id, and how often it has started the group again.
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "first-launch")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "0")
    cfg = tiny_config(tmp_path, data_root, epochs=1)
    train(cfg)
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")  # the same command, started again
    again = train(dataclasses.replace(cfg, lr=0.5))  # (the run's own recipe is what continues)
    assert again.finished and again.step == 4 and checkpoint.load(cfg.output)["config"]["lr"] == cfg.lr

    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "another-launch")
    with pytest.raises(InputError, match=r"already holds a run \(last.pt\)"):
        train(cfg)


def test_a_run_continues_from_a_checkpoint_file_named_in_its_directory(tmp_path, data_root, capsys):
    cfg = tiny_config(tmp_path, data_root, epochs=1)
    train(cfg)
    best = Path(cfg.output) / "best.pt"
    resumed = train(config_for_resume(best, epochs=2), resume=best)  # used to take best.pt for the run directory
    assert resumed.finished and resumed.step == 8 and resumed.run_dir == cfg.output
    assert checkpoint.load(cfg.output)["epoch"] == 2
    assert main(["train", "--resume", str(best), "--lr", "0.5", "--no-progress"]) == 2
    assert f"--weights {cfg.output}/best.pt" in one_line_error(capsys.readouterr().err)


def test_every_process_of_a_torchrun_launch_names_the_same_default_run_directory(monkeypatch):
    import torch.distributed as dist

    from mobilenet.train import runs

    agent = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)  # as torchrun's agent holds
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "True")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(agent.port))
    first = runs.new_run_dir(TINY_ARCH, "fashion-mnist")
    monkeypatch.setattr(runs.time, "strftime", lambda _format: "20991231-235959")  # a rank, or a restart, later
    assert runs.new_run_dir(TINY_ARCH, "fashion-mnist") == first and not first.endswith("-20991231-235959")
    monkeypatch.delenv("TORCHELASTIC_USE_AGENT_STORE")  # outside torchrun: the clock
    assert runs.new_run_dir(TINY_ARCH, "fashion-mnist").endswith("-20991231-235959")


def test_what_makes_a_resume_inexact_is_announced():
    facts = {"world_size": 1, "train_samples": 128, "device": "cpu", "amp": "None"}
    config = TrainConfig(arch=TINY_ARCH.replace(dropout=0.2), micro_batch=16)
    exact = {"world_size": 1, "train_samples": 128, "rng": [{}], "config": {"micro_batch": 16}}
    assert checkpoint.resume_notes(exact, config, facts) == []
    # Saved by two processes, continued by one; then by three, of which the third has no stream.
    notes = checkpoint.resume_notes(exact | {"world_size": 2, "rng": [{}, {}]}, config, facts)
    assert notes == ["the run was saved by 2 process(es) and continues on 1: gradients are summed in another order"]
    notes = checkpoint.resume_notes(exact | {"world_size": 2, "rng": [{}, {}]}, config, facts | {"world_size": 3})
    assert len(notes) == 2 and "dropout on process(es) 2..2 draws from new streams" in notes[1]
    # Other training data: the sampler's position means other batches.
    notes = checkpoint.resume_notes(exact | {"train_samples": 100}, config, facts)
    assert notes == ["the training set had 100 images and now has 128: the epoch's order and batches differ"]
