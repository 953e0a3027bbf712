"""``mobilenet.cpu``: what the CPU is, as the keys of measured facts need it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from mobilenet import cpu
from mobilenet.arch import ArchConfig
from mobilenet.deploy import auto
from mobilenet.latency import cache

# The first processor of /proc/cpuinfo as two virtual machines of this project describe it (trimmed).
ZEN5 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 26
model\t\t: 2
model name\t: AMD EPYC
flags\t\t: fpu avx2 fma avx512f avx512bw avx512vl avx512_vnni avx_vnni avx512_bf16

processor\t: 1
cpu family\t: 26
model\t\t: 2
"""
NEOVERSE = """processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd asimddp bf16 i8mm
CPU implementer\t: 0x41
CPU architecture: 8
CPU part\t: 0xd40
"""


@pytest.mark.parametrize(("text", "model", "signature", "flag"), [
    (ZEN5, "AMD EPYC", "family 26 model 2", "avx512_bf16"),
    (NEOVERSE, "", "implementer 0x41 part 0xd40", "asimddp"),
])
def test_cpuinfo_gives_the_processors_numbers(tmp_path: Path, text: str, model: str, signature: str, flag: str) -> None:
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    found_model, flags, found_signature = cpu._linux_cpuinfo(str(path))
    assert (found_model, found_signature) == (model, signature)
    assert flag in flags


def test_cpus_of_one_name_and_flags_keep_their_measured_facts_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    # Both "AMD EPYC" with the same flags (a Zen 4 and a Zen 4c, say): one's calibration or runtime
    # decision must not be served to the other.
    here = cpu.cpu_info()
    keys = {}
    for signature in ("family 25 model 17", "family 25 model 160"):
        described = dataclasses.replace(here, model="AMD EPYC", signature=signature)
        monkeypatch.setattr(cache, "cpu_info", lambda d=described: d)
        monkeypatch.setattr(auto, "cpu_info", lambda d=described: d)
        keys[signature] = (cache.calibration_key("onnxruntime", "fp32"),
                           auto.decision_key(ArchConfig(), "fp32", 1, 2))
        assert signature in described.summary()
    first, second = keys.values()
    assert first[0] != second[0] and first[1] != second[1]


@pytest.mark.parametrize(("flags", "machine", "lanes"), [
    ({"avx2", "fma", "avx512f", "avx512_bf16"}, "x86_64", 16),  # a Zen 4 or 5, an AMX Xeon
    ({"avx2", "fma"}, "x86_64", 8),  # a Zen 3
    (set(), "x86_64", 1),
    ({"asimd", "asimddp"}, "aarch64", 1),  # (no x86 blocking assumed)
])
def test_fp32_lanes_follow_the_widest_vector_registers(flags: set[str], machine: str, lanes: int) -> None:
    """The channel block that the latency model's ONNX Runtime and oneDNN Graph probes assume."""
    assert cpu.CpuInfo("any", machine, frozenset(flags), 2).fp32_lanes == lanes
