"""What this CPU can do, asked once and used everywhere: predictors, ``auto``, ``bench``, the tests.

The project runs on CPUs that differ in what matters for MobileNet: AVX2-only machines (no
AVX-512, no VNNI, no bf16), AVX-512 machines with VNNI int8 dot products and AVX512-BF16, Intel
machines with AMX tiles, and Arm cores with dot-product and bf16 extensions. Nothing in the project
may assume the CPU it was written on; it asks ``cpu_info()``.

* ``int8_dot``: a native 8-bit dot product that accumulates in 32 bits (AVX-512 VNNI, AVX-VNNI,
  AMX-INT8, Arm's SDOT). Without it x86 runtimes multiply u8 × s8 with ``vpmaddubsw``, which adds
  pairs of products into *saturating 16-bit* lanes: 255·127·2 = 64,770 does not fit in 32,767, so
  int8 models need 7-bit weights there (ONNX Runtime's ``reduce_range``, NNCF's overflow fix).
* ``native_bf16``: bf16 arithmetic in hardware (AVX512-BF16, AMX-BF16, Arm BF16). Without it bf16
  is emulated and runs many times slower than fp32 (652 ms against 27.6 ms at batch 1, 1.0-224, on
  a Zen 3), so the project refuses it unless emulation is asked for explicitly.

The flags come from the operating system (``/proc/cpuinfo`` on Linux, ``sysctl`` on macOS),
checked against what the processor itself reports to numpy's run-time dispatch (cpuid): where the
two disagree (an emulator, a migrated VM) the processor wins, since it is what the runtimes'
kernels dispatch on. The runtimes' own views (torch's kernel level, OpenVINO's capabilities) are
in ``runtime_views()``. No torch at import.
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess
from dataclasses import dataclass
from typing import Any

# ISA levels from least to most capable, as the x86 runtimes dispatch on them.
X86_LEVELS: tuple[tuple[str, frozenset[str]], ...] = (
    ("avx2", frozenset({"avx2", "fma"})),
    ("avx512", frozenset({"avx512f", "avx512bw", "avx512vl"})),
    ("avx512_vnni", frozenset({"avx512_vnni"})),
    ("avx512_bf16", frozenset({"avx512_bf16"})),
    ("amx", frozenset({"amx_tile", "amx_int8", "amx_bf16"})),
)
INT8_DOT_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "dotprod"})
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


@dataclass(frozen=True)
class CpuInfo:
    """The CPU as the operating system describes it."""

    model: str
    machine: str  # platform.machine(): x86_64, aarch64, arm64
    flags: frozenset[str]
    logical_cores: int
    # The processor's numbers as the OS gives them ("family 26 model 2" on x86, "implementer 0x41
    # part 0xd0c" on Arm; "" where unknown). Virtual machines often name every AMD CPU "AMD EPYC":
    # a Zen 4 and a Zen 5 then differ only here and in a flag or two.
    signature: str = ""

    @property
    def is_x86(self) -> bool:
        return self.machine.lower() in ("x86_64", "amd64", "i686", "x86")

    @property
    def isa_level(self) -> str:
        """The highest x86 level whose flags are all present (``baseline`` below AVX2), or the
        machine name on other architectures."""
        if not self.is_x86:
            return self.machine
        level = "baseline"
        for name, needed in X86_LEVELS:
            if not needed <= self.flags:
                break
            level = name
        return level

    @property
    def fp32_lanes(self) -> int:
        """float32 values in one vector register as x86 kernels block channels: 16 with AVX-512,
        8 with AVX2, else 1 (no blocking assumed)."""
        return 16 if "avx512f" in self.flags else 8 if "avx2" in self.flags else 1

    @property
    def int8_dot(self) -> bool:
        """A native 8-bit dot product with 32-bit accumulation (VNNI, AMX-INT8, Arm SDOT)."""
        return bool(self.flags & INT8_DOT_FLAGS)

    @property
    def native_bf16(self) -> bool:
        """bf16 arithmetic in hardware (AVX512-BF16, AMX-BF16, Arm BF16)."""
        return bool(self.flags & BF16_FLAGS)

    @property
    def amx(self) -> bool:
        return {"amx_tile", "amx_int8"} <= self.flags

    def notable_flags(self) -> list[str]:
        """The flags that change which kernels run, in a fixed order (for reports and cache keys)."""
        wanted = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni", "avx512_bf16",
                  "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16", "asimd", "asimddp", "dotprod", "bf16", "i8mm")
        return [f for f in wanted if f in self.flags]

    def identity(self) -> dict[str, Any]:
        """What tells this CPU from another for a measured fact (a calibration, a runtime decision):
        its name, numbers, the flags that choose kernels, and its logical cores."""
        return {"cpu": self.model, "signature": self.signature, "flags": self.notable_flags(),
                "cores": self.logical_cores}

    def summary(self) -> str:
        """One line: model, ISA level, the two facts that change precision choices."""
        machine = f"{self.machine} {self.signature}" if self.signature else self.machine
        return (
            f"{self.model} ({machine}, {self.logical_cores} logical cores; ISA {self.isa_level}; "
            f"int8 dot product: {'yes' if self.int8_dot else 'no'}; native bf16: {'yes' if self.native_bf16 else 'no'})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "machine": self.machine, "signature": self.signature,
            "logical_cores": self.logical_cores,
            "isa_level": self.isa_level, "int8_dot": self.int8_dot, "native_bf16": self.native_bf16,
            "flags": self.notable_flags(),
        }


SIGNATURE_FIELDS = (("cpu family", "family"), ("model", "model"), ("cpu implementer", "implementer"),
                    ("cpu part", "part"))


def _linux_cpuinfo(path: str = "/proc/cpuinfo") -> tuple[str, set[str], str]:
    """(model name, flags, signature) of the first processor /proc/cpuinfo lists."""
    model, flags = "", set()
    numbers: dict[str, str] = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            key, _, value = line.partition(":")
            key = key.strip().lower()
            if key in ("model name", "hardware", "cpu model") and not model:
                model = value.strip()
            elif key in ("flags", "features") and not flags:
                flags = set(value.split())
            elif key in dict(SIGNATURE_FIELDS) and key not in numbers and value.strip():
                numbers[key] = value.strip()
    signature = " ".join(f"{label} {numbers[key]}" for key, label in SIGNATURE_FIELDS if key in numbers)
    return model, flags, signature


def _macos_cpuinfo() -> tuple[str, set[str]]:
    def sysctl(name: str) -> str:
        try:
            return subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=5).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    model = sysctl("machdep.cpu.brand_string")
    flags = {f.lower().replace(".", "_") for f in (sysctl("machdep.cpu.features") + " " +
                                                   sysctl("machdep.cpu.leaf7_features")).split()}
    if platform.machine() == "arm64":  # Apple silicon: every M-series core has SDOT; M2 and later BF16
        flags |= {"asimd", "asimddp"} | ({"bf16"} if sysctl("hw.optional.arm.FEAT_BF16") == "1" else set())
    return model, flags


# numpy's run-time CPU dispatch asks the processor itself (cpuid, and the OS for the register
# state): what the runtimes' own dispatchers see. Its names -> ours (the Linux flag names).
NUMPY_FEATURES = {
    "AVX2": "avx2", "FMA3": "fma", "AVX512F": "avx512f", "AVX512BW": "avx512bw", "AVX512VL": "avx512vl",
    "AVX512VNNI": "avx512_vnni", "AVX512BF16": "avx512_bf16", "AVX512FP16": "avx512_fp16",
    "ASIMD": "asimd", "ASIMDDP": "asimddp",
}


def _cpuid_features() -> set[str] | None:
    """The features numpy's dispatcher detected in this process, in our names (None: unknown)."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__  # noqa: PLC0415
    except ImportError:
        try:
            from numpy.core._multiarray_umath import __cpu_features__  # noqa: PLC0415  (numpy 1.x)
        except ImportError:
            return None
    return {ours for theirs, ours in NUMPY_FEATURES.items() if __cpu_features__.get(theirs)}


def _reconcile(os_flags: set[str], cpuid: set[str] | None) -> tuple[set[str], str]:
    """The OS's flag list, unless the processor this process runs on says otherwise: under an
    emulator (qemu -cpu EPYC-Milan) or after a live migration, /proc/cpuinfo describes another CPU
    than the one executing, and kernels are chosen by what executes."""
    if cpuid is None or not os_flags:
        return (os_flags or cpuid or set()), "os" if os_flags else "cpuid"
    known = set(NUMPY_FEATURES.values())
    if (os_flags & known) == cpuid:
        return os_flags, "os"
    # Keep only what cpuid confirms, plus the flags it cannot see if their prerequisites hold.
    flags = set(cpuid)
    if "avx512f" in cpuid:
        flags |= os_flags & {"amx_tile", "amx_int8", "amx_bf16"}
    if "avx512_vnni" in cpuid:
        flags |= os_flags & {"avx_vnni"}
    return flags, "cpuid (the OS describes another CPU)"


@functools.cache
def cpu_info() -> CpuInfo:
    """This machine's CPU (cached for the process)."""
    model, flags, signature = "", set(), ""
    try:
        if os.path.exists("/proc/cpuinfo"):
            model, flags, signature = _linux_cpuinfo()
        elif platform.system() == "Darwin":
            model, flags = _macos_cpuinfo()
    except OSError:
        pass
    flags, source = _reconcile(flags, _cpuid_features())
    model = model or platform.processor() or "unknown CPU"
    if source != "os":
        model += " [flags from cpuid: the OS describes another CPU]"
    return CpuInfo(
        model=model,
        machine=platform.machine() or "unknown",
        flags=frozenset(flags),
        logical_cores=os.cpu_count() or 1,
        signature=signature,
    )
