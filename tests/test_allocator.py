"""Keeping freed memory (``mobilenet.allocator``), checked by counting page faults in a fresh
process: glibc hands each freed buffer above 32 MiB back to the OS, and the next allocation of
that size faults all its pages in again; kept, it faults none. Those who must keep it (``optimize``,
``mobilenet train``, the PyTorch latency backend) are checked with ``page_faults_around``."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap

import pytest

from mobilenet.allocator import GLIBC_TUNABLES_KEEP, glibc_malloc, timing_environment

only_glibc = pytest.mark.skipif(not glibc_malloc(), reason="glibc's malloc only")

_AROUND = """
import json, resource, sys
from pathlib import Path
import torch

def faults_of_a_buffer_allocated_again():
    # glibc places each 64-byte-aligned request a little past the last one freed, so a kept heap
    # grows for the first few (about seven here) before it reuses what was freed: settle first.
    for _ in range(12):
        torch.empty(16 * 2**20).fill_(1.0)  # 64 MiB, freed at once
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.empty(16 * 2**20).fill_(1.0)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

before = faults_of_a_buffer_allocated_again()
{setup}
print(json.dumps({{"before": before, "after": faults_of_a_buffer_allocated_again()}}))
"""


def page_faults_around(setup: str, *args: str) -> tuple[dict[str, int], str]:
    """The page faults of a 64 MiB buffer allocated again after its frees, before and after
    ``setup`` (Python, run with ``args`` as ``sys.argv[1:]``), in a fresh process started without
    GLIBC_TUNABLES and with the tests on its path; and what it wrote on stderr."""
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (os.path.dirname(__file__), env.get("PYTHONPATH"))))
    code = _AROUND.format(setup=textwrap.dedent(setup))
    done = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1]), done.stderr


def assert_faulted_before_and_not_after(faults: dict[str, int]) -> None:
    """In pages of whatever size the kernel hands out: 16,385 of 4 KiB here, a few dozen where
    transparent huge pages are always on; kept, next to none."""
    assert faults["before"] >= 20 and faults["after"] * 20 <= faults["before"], faults


@only_glibc
def test_kept_freed_memory_is_not_faulted_in_again():
    faults, _ = page_faults_around("from mobilenet.allocator import keep_freed_memory\nassert keep_freed_memory()")
    assert_faulted_before_and_not_after(faults)


@only_glibc
def test_the_tunables_keep_it_from_the_start():
    env = os.environ | {"GLIBC_TUNABLES": GLIBC_TUNABLES_KEEP}
    code = _AROUND.format(setup="")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    faults = json.loads(done.stdout.splitlines()[-1])
    assert faults["before"] < 100 and faults["after"] < 100, faults  # (as kept as the mallopt form, above)


def test_a_timing_environment_adds_the_tunables_to_the_callers_and_leaves_a_set_policy(monkeypatch):
    """What ``mobilenet bench`` and the benchmark scripts restart under: the caller's own glibc
    tunables kept, ours added once, and an OMP_WAIT_POLICY the caller chose left as it is."""
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=2")
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    env = timing_environment()
    assert env["GLIBC_TUNABLES"] == f"glibc.malloc.arena_max=2:{GLIBC_TUNABLES_KEEP}"
    assert env["OMP_WAIT_POLICY"] == "ACTIVE"
    monkeypatch.setenv("GLIBC_TUNABLES", env["GLIBC_TUNABLES"])  # as after the restart: not added twice
    assert timing_environment()["GLIBC_TUNABLES"] == env["GLIBC_TUNABLES"]

    monkeypatch.delenv("GLIBC_TUNABLES")
    monkeypatch.delenv("OMP_WAIT_POLICY")
    assert timing_environment()["OMP_WAIT_POLICY"] == "PASSIVE"
    untuned = timing_environment(keep_memory=False, passive_omp=False)  # bench --no-malloc-tuning, say
    assert "GLIBC_TUNABLES" not in untuned and "OMP_WAIT_POLICY" not in untuned


def test_bench_times_runtimes_under_a_passive_policy_and_pytorch_alone_under_the_users(monkeypatch):
    """``mobilenet bench`` interleaving PyTorch with other runtimes' pools restarts with PASSIVE
    (their pools share the cores); PyTorch alone and ``bench --train`` keep the policy a user runs
    under (here unset)."""
    from mobilenet.cli.deploy import fair_timing_environment  # noqa: PLC0415

    def environment(runtimes: list[str] | None, *, train: bool = False, tflite_dir: str | None = None,
                    no_peers: bool = False) -> dict[str, str]:
        return fair_timing_environment(argparse.Namespace(no_malloc_tuning=False, train=train, runtimes=runtimes,
                                                          tflite_dir=tflite_dir, no_peers=no_peers))

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert environment(None)["OMP_WAIT_POLICY"] == "PASSIVE"  # the default runtimes
    assert environment(["torch", "onnxruntime"])["OMP_WAIT_POLICY"] == "PASSIVE"
    assert environment(["auto"])["OMP_WAIT_POLICY"] == "PASSIVE"
    assert environment(["torch"], tflite_dir="tflite")["OMP_WAIT_POLICY"] == "PASSIVE"  # LiteRT runs TF's files
    for alone in (environment(["torch"]), environment(["torch"], tflite_dir="tflite", no_peers=True),
                  environment(None, train=True)):
        assert "OMP_WAIT_POLICY" not in alone and GLIBC_TUNABLES_KEEP in alone["GLIBC_TUNABLES"]
