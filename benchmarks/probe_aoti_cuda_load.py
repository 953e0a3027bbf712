"""Whether AOTInductor's CUDA packages load on this machine: each case compiles a package and loads
it in its own process, so that a crash is a result (rc -11: SIGSEGV) rather than the end of the run.

    PYTHONPATH=src python benchmarks/probe_aoti_cuda_load.py    # on a machine with a CUDA GPU

On an H200 (torch 2.11.0+cu130, 2026-12-04; docs/bench/aoti_cuda_load_h200.txt) both one-conv cases
compiled and then crashed as they loaded; the run's time ended before the MobileNet cases. That is
why ``mobilenet.optimize`` compiles in the process on CUDA (docs/pytorch.md).
"""
import subprocess
import sys

TINY = r'''
import sys, torch
from torch import nn
import torch.nn.functional as F
freezing = sys.argv[1] == "1"
class Net(nn.Module):
    def __init__(s):
        super().__init__(); s.c = nn.Conv2d(3, 8, 3, padding=1); s.l = nn.Linear(8, 4)
    def forward(s, x):
        return s.l(F.relu6(s.c(x)).mean((2, 3)))
net = Net().cuda().eval(); x = torch.randn(2, 3, 16, 16, device="cuda")
with torch.no_grad():
    ep = torch.export.export(net, (x,))
    p = torch._inductor.aoti_compile_and_package(ep, package_path=f"/tmp/diag_tiny{int(freezing)}.pt2",
                                                 inductor_configs={"freezing": freezing})
print("compiled", flush=True)
m = torch._inductor.aoti_load_package(p)
print("loaded", flush=True)
with torch.no_grad():
    print("max diff", (m(x) - net(x)).abs().max().item(), flush=True)
'''
OURS = r'''
import sys, torch
from pathlib import Path
from mobilenet.factory import mobilenet_v1
from mobilenet.optimized import _compile_package
from mobilenet.prepare import InferenceAdapter, inference_copy
freezing, compiled_form, fresh = (a == "1" for a in sys.argv[1:4])
m = mobilenet_v1(0.25, 64).eval()
x = torch.randn(2, 3, 64, 64, device="cuda")
path = Path(f"/tmp/diag_ours{int(compiled_form)}.pt2")
if not fresh:
    net = InferenceAdapter(inference_copy(m, compiled=compiled_form).cuda(), channels_last=True, dtype=torch.float32)
    if freezing:
        _compile_package(net, x, path, False)
    else:
        with torch.no_grad():
            torch._inductor.aoti_compile_and_package(torch.export.export(net, (x,)), package_path=str(path))
    print("compiled", flush=True)
g = torch._inductor.aoti_load_package(str(path))
print("loaded", flush=True)
with torch.no_grad():
    print("ran", g(x).shape, flush=True)
'''
CASES = [("tiny, no freezing", TINY, ["0"]), ("tiny, freezing", TINY, ["1"]),
         ("ours 0.25-64, freezing, matmul form", OURS, ["1", "1", "0"]),
         ("ours, loaded in a fresh process", OURS, ["1", "1", "1"]),
         ("ours, no freezing, conv form", OURS, ["0", "0", "0"])]
for name, code, argv in CASES:
    try:
        done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=75)
        print(f"## {name}: rc {done.returncode}\n{done.stdout[-600:]}{done.stderr[-1500:]}", flush=True)
    except subprocess.TimeoutExpired:
        print(f"## {name}: timed out", flush=True)
