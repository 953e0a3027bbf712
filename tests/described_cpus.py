"""CPUs the project has run on (shared/DESIGN.md §6), described rather than present, so that the
paths a CPU decides (no native bf16, no VNNI, AMX) are checked on whichever CPU runs the tests."""

from mobilenet.cpu import CpuInfo

# AVX2 only: no native bf16, no VNNI.
ZEN3 = CpuInfo(model="AMD EPYC 7B13 (described)", machine="x86_64", flags=frozenset({"avx2", "fma"}), logical_cores=2)
# AVX-512 with VNNI and BF16, and AMX.
SAPPHIRE_RAPIDS = CpuInfo(model="Intel Xeon (described)", machine="x86_64", logical_cores=2,
                          flags=frozenset({"avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
                                           "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16"}))
