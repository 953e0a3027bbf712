"""The fast PyTorch path: ``optimize(model, precision, batch_size, device)`` returns a module you keep
calling, NCHW float32 images in, float32 logits out, with a ``description`` of what really runs.

What it builds, in order of preference (the first that works here runs, and says so):

1. **onednn-graph** (CPUs with AVX-512, where it was measured faster: ``onednn_graph.measured_faster``):
   the same form as inductor's below (BatchNorm folded, the pads constants, the pointwise convs as
   matrix products, channels_last), traced and frozen as TorchScript and run with oneDNN Graph's
   fusion: each conv with its bias and ReLU6 one partition, compiled once for the batch size and
   then only executed (``mobilenet.onednn_graph``). It builds in about a second in every process,
   with no C++ compiler and nothing cached.
2. **inductor**: BatchNorm folded, the TF 'SAME' pads constants for the model's resolution
   (from ``mobilenet.arch``), channels_last, compiled ahead of time by AOTInductor with
   *freezing*: weights become constants, so every conv runs as one oneDNN primitive with bias and
   ReLU6 fused on weights reordered once. On CUDA the same graph goes through ``torch.compile``
   in the process instead (cuDNN convolutions, Triton kernels around them): AOTInductor's CUDA
   packages crashed the process as they loaded (``_compile_in_process``). Both compiled programs
   are built for one batch size; other batches run in slices of it (the last one zero-padded),
   never recompiling.
3. **torchscript** (CPU): traced, frozen and ``optimize_for_inference``'d: where no C++ compiler
   is found, compiling is switched off (``TORCH_COMPILE_DISABLE``) or it fails.
4. **eager**: the folded channels_last model as it is.

Why AOTInductor and not ``torch.compile``: with freezing, inductor's FX-graph cache refuses the
graph ("mkldnn tensors unpickleable": the prepacked weights), so every process would trace and
lower the model again (about 10 s here); an AOTInductor package holds the compiled code *and* the
prepacked weights, and a second process loads it in about a second. The packages live in
``<mobilenet cache>/compiled``, keyed by the model's structure and weights, the precision, the
batch size, the CPU's features, the torch version and the project's own code it traces; inductor's
own caches (compiled kernels, autotuning) in ``<mobilenet cache>/inductor`` unless
``TORCHINDUCTOR_CACHE_DIR`` is set. A compile or a load is said once on stderr with its cost.
docs/pytorch.md has the measurements.

bf16 runs only where the CPU has it natively (``mobilenet.cpu``), as everywhere in the project;
``allow_emulation`` insists.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import re
import sys
import tempfile
import time
import warnings
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn

from mobilenet import onednn_graph
from mobilenet.accuracy import check_device
from mobilenet.allocator import MEMORY_POLICIES, keep_freed_memory
from mobilenet.cpu import CpuInfo, cpu_info
from mobilenet.errors import InputError, option
from mobilenet.model import MobileNetV1
from mobilenet.predictor import PrecisionUnavailableError
from mobilenet.prepare import InferenceAdapter, frozen_torchscript, inference_copy

PRECISIONS: dict[str, tuple[str, ...]] = {"cpu": ("fp32", "bf16"), "cuda": ("fp32", "fp16", "bf16")}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
BACKENDS = ("inductor", "onednn-graph", "torchscript", "eager")
# Tried in turn where none is named: oneDNN Graph only on CPUs where it was measured faster than
# inductor's program (``onednn_graph.measured_faster``), TorchScript only on CPU.
DEFAULT_BACKENDS = ("onednn-graph", "inductor", "torchscript", "eager")
FIXED_BATCH_BACKENDS = ("inductor", "onednn-graph")  # compiled for one batch size: others run in slices of it
BACKEND_ENV = "MOBILENET_TORCH_BACKEND"  # insists on one of BACKENDS for every optimize() that names none
EMULATED_BF16_COST = "measured 24x slower than fp32 on an AVX2 Zen 3 (652 ms against 27.6 ms at batch 1, 1.0-224)"
INDUCTOR_CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"


class CompileUnavailable(RuntimeError):
    """Compiling is not possible here; the message says why."""


def not_native(precision: str, device: str | torch.device = "cpu", cpu: CpuInfo | None = None) -> str | None:
    """Why PyTorch would not run ``precision`` natively on ``device`` (None: it would). ``cpu``:
    the CPU to decide for (default: this one)."""
    device = torch.device(device)
    cpu = cpu or cpu_info()
    if precision == "bf16" and device.type == "cpu" and not cpu.native_bf16:
        return f"this CPU has no native bf16 ({cpu.summary()}): PyTorch would emulate it, {EMULATED_BF16_COST}"
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported(including_emulation=False):
        return f"{torch.cuda.get_device_name(device)} has no native bf16: use fp16"
    return None


def compile_unavailable(device: torch.device) -> str | None:
    """Why AOTInductor cannot compile for ``device`` here (None: it can)."""
    import torch._dynamo  # noqa: PLC0415

    if torch._dynamo.config.disable:
        return "compiling is switched off in this process (TORCH_COMPILE_DISABLE)"
    if device.type == "cuda":
        from torch.utils._triton import has_triton  # noqa: PLC0415

        return None if has_triton() else "Triton is not installed (pip install triton)"
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler  # noqa: PLC0415

        get_cpp_compiler()
    except Exception as err:  # noqa: BLE001 - any failure to find one means no compiling
        return f"no C++ compiler found for inductor ({type(err).__name__}; install g++ or set CXX)"
    return None


def default_backends(device: torch.device, cpu: CpuInfo | None = None) -> tuple[str, ...]:
    """What ``optimize`` tries in turn on ``device`` where no backend is named."""
    def tried(name: str) -> bool:
        if name == "onednn-graph":
            return device.type == "cpu" and onednn_graph.measured_faster(cpu) is None
        return device.type == "cpu" or name != "torchscript"
    return tuple(name for name in DEFAULT_BACKENDS if tried(name))


def cpu_backend() -> str:
    """The backend ``optimize`` (backend None) runs on this CPU, as far as it is known before
    building: the one ``$MOBILENET_TORCH_BACKEND`` insists on, else oneDNN Graph where it was
    measured faster, else AOTInductor where a C++ compiler is found, else TorchScript."""
    if insisted := os.environ.get(BACKEND_ENV):
        return insisted
    if onednn_graph.measured_faster() is None:
        return "onednn-graph"
    return "inductor" if compile_unavailable(torch.device("cpu")) is None else "torchscript"


def compiled_cache_dir() -> Path:
    """Where compiled packages are kept: ``<mobilenet cache>/compiled``. Also points inductor's own
    caches at ``<mobilenet cache>/inductor`` for this process, unless ``TORCHINDUCTOR_CACHE_DIR``
    is set."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir  # noqa: PLC0415

    from mobilenet.weights.fetch import cache_dir  # noqa: PLC0415

    current = os.environ.get(INDUCTOR_CACHE_ENV)
    if not current or current == default_cache_dir():  # inductor writes its default there itself once used
        os.environ[INDUCTOR_CACHE_ENV] = str(cache_dir() / "inductor")
    return cache_dir() / "compiled"


class OptimizedModel(nn.Module):
    """What ``optimize`` returns: call it with an NCHW float32 batch (any size, the model's
    resolution) on any device; it returns float32 logits on its own device, as ordinary tensors.

    ``backend`` (one of ``BACKENDS``), ``precision``, ``device``, ``batch_size`` (what
    the graph is compiled for, or None where any batch runs whole), ``compile_seconds`` (to compile
    or load it) and ``description`` say what runs; ``generated_code`` is the compiled graph's C++
    source where inductor built it (what the tests read for fusion), ``fallbacks`` why better
    backends did not run.
    """

    def __init__(
        self, net: Callable[[torch.Tensor], torch.Tensor], *, backend: str, precision: str, device: torch.device,
        input_shape: tuple[int, int, int], batch_size: int | None,
    ) -> None:
        super().__init__()
        self.net = net
        self._call = _direct_call(net)
        self.backend, self.precision, self.device = backend, precision, device
        self.input_shape, self.batch_size = input_shape, batch_size
        self.description = ""
        self.compile_seconds = 0.0
        self.generated_code: str | None = None
        self.fallbacks: list[str] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or tuple(x.shape[1:]) != self.input_shape:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise InputError(f"the optimized model takes (N, {', '.join(map(str, self.input_shape))}) batches, got "
                             f"{shape}: resize to the model's resolution, or optimize a model built for this one")
        x = x.to(self.device, torch.float32, non_blocking=True).contiguous()
        # Copied outside inference mode: ordinary tensors for the caller (inference tensors refuse
        # in-place updates), and never memory the compiled graph reuses on its next call.
        if self.batch_size is None or len(x) == self.batch_size:  # (the common call, kept lean)
            return self._run(x).clone()
        logits = [self._run(part).clone() for part in x.split(self.batch_size)]
        return logits[0] if len(logits) == 1 else torch.cat(logits)

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        n = len(x)
        if self.batch_size is not None and n < self.batch_size:
            x = torch.cat([x, x.new_zeros(self.batch_size - n, *self.input_shape)])
        with torch.inference_mode(), cudnn_benchmark(self.device):
            out = self._call(x)
        return out if self.batch_size is None or n == self.batch_size else out[:n]

    def extra_repr(self) -> str:
        # repr(model) then says what really runs (backend, precision, batch), not only the wrapped net.
        return self.description


@contextlib.contextmanager
def cudnn_benchmark(device: torch.device) -> Iterator[None]:
    """On CUDA, cuDNN times its algorithms for each new shape (the optimized graph has one) and keeps
    the fastest, for the calls made inside; the process's own setting is put back after, so that a
    user's other models (other shapes, or deterministic runs) do not inherit it."""
    if device.type != "cuda":
        yield
        return
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


def _direct_call(net: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """``net``, or for an AOTInductor program its loader's own run, which skips flattening the
    arguments and outputs through pytree on every call: 0.2 ms of a 7 ms bf16 batch-1 call here.
    A torch without that loader runs ``net`` as it is."""
    run = getattr(getattr(net, "loader", None), "run", None)
    if run is None or not callable(run):
        return net
    return lambda x: run([x])[0]


def optimize(
    model: MobileNetV1,
    precision: str = "fp32",
    batch_size: int = 1,
    device: str | torch.device = "cpu",
    *,
    backend: str | None = None,
    max_autotune: bool = False,
    allow_emulation: bool = False,
    memory: str = "keep",
    log: Callable[[str], None] | None = None,
    cpu: CpuInfo | None = None,
) -> OptimizedModel:
    """``model`` for fast inference on ``device`` at ``precision`` (cpu: fp32, bf16; cuda: fp32,
    fp16, bf16), compiled for ``batch_size`` images a call; ``model`` itself is not modified.

    ``backend``: None for the best that works here (``default_backends``: oneDNN Graph on CPUs
    where it was measured faster, then inductor, then TorchScript on CPU, then eager), or one of
    ``BACKENDS`` to insist; where None, ``$MOBILENET_TORCH_BACKEND`` may insist instead
    (e.g. ``eager`` while iterating on many models, where each first compile costs tens of
    seconds). ``max_autotune``: inductor's autotuning (on CPU it times oneDNN against its C++
    template for the matrix products, the pointwise convs and the classifier: about 5% faster at
    batch 1 here for three times the compile, docs/pytorch.md; on CUDA it tunes the convolutions
    too, at minutes of compile). ``allow_emulation``: run bf16 on a CPU without it anyway (many
    times slower). ``memory``: ``"keep"`` asks glibc to keep freed memory (``mobilenet.allocator``),
    ``"default"`` leaves the allocator alone. ``log``: where the line about compiling goes
    (default: stderr). ``cpu``: the CPU whose precision facts apply (default: this one; the
    deploy runtime passes its own view, which its tests describe).
    """
    device = check_device(device)
    native = _check_precision(precision, device, allow_emulation, cpu)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise InputError(f"{option('batch_size')} must be an int >= 1, got {batch_size!r}")
    backend = backend or os.environ.get(BACKEND_ENV) or None
    if backend is not None and backend not in BACKENDS:
        raise InputError(f"backend must be one of {BACKENDS} (or None: the best that works), got {backend!r} "
                         f"(${BACKEND_ENV} may name one too)")
    if memory not in MEMORY_POLICIES:
        raise InputError(f"{option('memory')} must be one of {', '.join(MEMORY_POLICIES)}, got {memory!r}")
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    kept = device.type == "cpu" and memory == "keep" and keep_freed_memory()
    cfg = model.arch_cfg
    def net_for(backend: str) -> nn.Module:
        prepared = inference_copy(model, compiled=pointwise_as_matmuls(backend, device)).to(device)
        return InferenceAdapter(prepared, channels_last=True, dtype=DTYPES[precision])
    example = torch.zeros(batch_size, cfg.in_channels, *cfg.resolution, device=device)
    with cudnn_benchmark(device):
        candidates = (backend,) if backend else default_backends(device, cpu)
        name, (graph, seconds, code, how), fallbacks = _build_best(net_for, example, candidates, backend is not None,
                                                                   log, max_autotune)
    if fallbacks:
        log(f"optimize: running {name}, because " + "; ".join(fallbacks))
    optimized = OptimizedModel(
        graph, backend=name, precision=precision, device=device, input_shape=(cfg.in_channels, *cfg.resolution),
        batch_size=batch_size if name in FIXED_BATCH_BACKENDS else None,
    )
    optimized.compile_seconds, optimized.generated_code, optimized.fallbacks = seconds, code, fallbacks
    optimized.description = _describe(optimized, model, how, kept, native)
    return optimized


def _check_precision(precision: str, device: torch.device, allow_emulation: bool, cpu: CpuInfo | None) -> bool:
    """Whether ``precision`` runs natively; refuses what is not offered, or not native unless
    emulation is allowed (then warns)."""
    offered = PRECISIONS[device.type]
    if precision not in offered:
        raise InputError(f"PyTorch on {device.type} runs {' or '.join(offered)}, not {precision!r}; "
                         "for int8 use onnxruntime or openvino (mobilenet.deploy)")
    reason = not_native(precision, device, cpu)
    if reason is None:
        return True
    if not allow_emulation or device.type != "cpu":
        insist = ", or allow_emulation=True to run it emulated anyway" if device.type == "cpu" else ""
        raise PrecisionUnavailableError(f"{reason}. Use fp32{insist}")
    warnings.warn(f"running bf16 emulated, as asked: {reason}", stacklevel=3)
    return False


# What a backend builder returns: the graph, the seconds to build it, its C++ source (inductor), how it runs.
Built = tuple[Callable[[torch.Tensor], torch.Tensor], float, "str | None", str]


def _build_best(net_for: Callable[[str], nn.Module], example: torch.Tensor, candidates: tuple[str, ...],
                named: bool, log: Callable[[str], None], max_autotune: bool) -> tuple[str, Built, list[str]]:
    """The first of ``candidates`` that builds the module ``net_for(candidate)`` (one, ``named``
    by the caller, must), and why each one before it did not."""
    fallbacks: list[str] = []
    for name in candidates:
        try:
            net = net_for(name)
            if name == "inductor":
                return name, _build_inductor(net, example, log=log, max_autotune=max_autotune), fallbacks
            if name == "onednn-graph":
                return name, _build_onednn_graph(net, example, log=log), fallbacks
            build = _build_torchscript if name == "torchscript" else _build_eager
            return name, build(net, example), fallbacks
        except Exception as err:  # noqa: BLE001 - a backend that cannot build here: try the next
            if named and isinstance(err, CompileUnavailable):
                raise InputError(f"backend {name!r} cannot run here: {err}") from err
            if named:
                raise
            message = str(err).strip()
            fallbacks.append(f"{name}: {message.splitlines()[0] if message else type(err).__name__}")
    raise AssertionError("the eager backend always builds")


def pointwise_as_matmuls(backend: str, device: torch.device) -> bool:
    """Whether the program runs its pointwise convs as matrix products (``prepare.pointwise_as_matmul``):
    the compiled CPU programs only (inductor's, oneDNN Graph's: 28 fused partitions, every layer but the pool, and
    about 1.7 ms at bf16 batch 1 on the Zen 5, against 20 and 1.9 ms with the convs, in ad hoc back-to-back
    loops), where oneDNN fuses bias and
    ReLU6 into the product. On CUDA they
    stay convolutions: cuDNN runs fp32 ones on TF32 tensor cores, as eager PyTorch does, where an
    fp32 matmul would not use them (PyTorch's default matmul precision)."""
    return backend in FIXED_BATCH_BACKENDS and device.type == "cpu"


def _build_inductor(net: nn.Module, example: torch.Tensor, *, log: Callable[[str], None], max_autotune: bool) -> Built:
    if example.device.type == "cuda":
        return _compile_in_process(net, example, log=log, max_autotune=max_autotune)
    # (loading a package picks the ISA too: a process that only loads would otherwise check them all)
    with only_the_best_vector_isa_checked():
        return _load_or_compile(net, example, log=log, max_autotune=max_autotune)


def _load_or_compile(net: nn.Module, example: torch.Tensor, *, log: Callable[[str], None], max_autotune: bool) -> Built:
    package = compiled_cache_dir() / f"mobilenet-{_package_key(net, example, max_autotune)}.pt2"
    device_index = example.device.index if example.device.index is not None else -1
    start = time.perf_counter()
    cached = package.is_file()
    try:
        compiled = torch._inductor.aoti_load_package(str(package), device_index=device_index) if cached else None
    except Exception as err:  # noqa: BLE001 - an unreadable package is compiled again, not trusted
        log(f"optimize: compiling again: could not load {package} ({type(err).__name__})")
        cached, compiled = False, None
    if compiled is None:
        reason = compile_unavailable(example.device)
        if reason:
            raise CompileUnavailable(reason)
        _compile_package(net, example, package, max_autotune)
        compiled = torch._inductor.aoti_load_package(str(package), device_index=device_index)
    seconds = time.perf_counter() - start
    log(f"optimize: {'loaded' if cached else 'compiled'} the graph for batch {len(example)} in {seconds:.1f} s "
        f"({package}{'' if cached else '; a second process loads it from there'})")
    how = "AOTInductor (freezing" + (", max-autotune)" if max_autotune else ")")
    return compiled, seconds, _wrapper_source(package), how


def _compile_in_process(
    net: nn.Module, example: torch.Tensor, *, log: Callable[[str], None], max_autotune: bool,
) -> Built:
    """``net`` through ``torch.compile`` (inductor with freezing, the whole graph, static shapes),
    compiled here by a first call at ``example``'s shape, in inference mode as ``OptimizedModel``
    calls it (another grad mode would compile again). The CUDA path: AOTInductor's CUDA packages
    crashed the process as they loaded (SIGSEGV; torch 2.11+cu130 on an H200, even a package of
    one convolution, docs/pytorch.md), and a crash cannot be caught and fallen back from. Inductor's
    caches under ``<mobilenet cache>/inductor`` (FX graphs, Triton kernels) serve a second process;
    how much of the compile they spare it there has not been measured on a GPU."""
    from torch._inductor.utils import run_and_get_code  # noqa: PLC0415

    reason = compile_unavailable(example.device)
    if reason:
        raise CompileUnavailable(reason)
    compiled_cache_dir()  # inductor's caches under the project's cache directory
    compiled = torch.compile(net, fullgraph=True, dynamic=False,
                             options={"freezing": True, "max_autotune": max_autotune})
    start = time.perf_counter()
    with torch.inference_mode():
        _, sources = run_and_get_code(compiled, example)
    seconds = time.perf_counter() - start
    log(f"optimize: compiled the graph for batch {len(example)} on {example.device} in {seconds:.1f} s "
        f"(torch.compile; inductor's caches in {os.environ[INDUCTOR_CACHE_ENV]} serve a second process)")
    how = "torch.compile (inductor, freezing" + (", max-autotune)" if max_autotune else ")")
    return compiled, seconds, "\n".join(sources) or None, how


def _compile_package(net: nn.Module, example: torch.Tensor, package: Path, max_autotune: bool) -> None:
    """Export ``net`` at ``example``'s shape and compile it into ``package``, atomically: a
    process that finds the file finds it whole."""
    package.parent.mkdir(parents=True, exist_ok=True)
    # Inductor freezes only with gradients off: with them on, the same call silently compiles an
    # unfrozen graph (convolutions unfused, weights not prepacked).
    with torch.no_grad(), tempfile.TemporaryDirectory(dir=package.parent, prefix=".compiling-") as tmp:
        exported = torch.export.export(net, (example,))
        staged = Path(tmp) / package.name  # AOTInductor insists on the .pt2 suffix
        torch._inductor.aoti_compile_and_package(
            exported, package_path=str(staged), inductor_configs={"freezing": True, "max_autotune": max_autotune},
        )
        os.replace(staged, package)


def only_the_best_vector_isa_checked() -> contextlib.AbstractContextManager[object]:
    """Inductor checks every vector ISA the CPU has (AMX, AVX512-VNNI, AVX512, AVX2) by compiling
    and loading a test program with each, then uses the best that passed: on a machine's first
    compile that took 21 s of 48 here (AMX Xeon, cProfile), more than the network itself, and
    loading a package in a new process checks them again. Check only the best one (inductor's own
    test, cached like its others) and trust it while loading or compiling (inductor keeps its pick
    for the process); where it fails, or inductor's internals are not as expected, inductor checks
    them all as before. The training step's first compile runs under it too (``CompileClock``)."""
    try:
        from torch._inductor import config, cpu_vec_isa  # noqa: PLC0415

        if platform.machine() not in ("x86_64", "AMD64"):
            return contextlib.nullcontext()
        flags = cpu_vec_isa.x86_isa_checker()
        offered = [isa for isa in cpu_vec_isa.supported_vec_isa_list if all(f in flags for f in str(isa).split())]
        if not offered or not offered[0]:  # (truth runs inductor's check: build and load)
            return contextlib.nullcontext()
        return config.patch({"cpp.vec_isa_ok": True})
    except Exception:  # noqa: BLE001 - an inductor without these internals: its own checks
        return contextlib.nullcontext()


def _package_key(net: nn.Module, example: torch.Tensor, max_autotune: bool) -> str:
    """What the compiled code depends on: the module's structure and weights, the input's shape,
    dtype and device, the machine's instruction set (kernels are compiled for it), the number of
    threads, torch, this project's code and version (``_project_code_digest``), and inductor's
    settings where the caller changed them. Inductor writes its
    kernels for the thread count it compiles under (for one thread, serial loops with no OpenMP
    region): a package compiled by a one-thread process (a latency calibration at ``--threads 1``)
    ran 7.5x slower in a two-thread one. A caller who compiles under
    ``torch._inductor.config.patch(...)`` (another SIMD width, other fusions) gets its own package,
    not one compiled without the patch."""
    from torch._inductor import config  # noqa: PLC0415 - inductor loads only where it is used

    digest = hashlib.sha256()
    digest.update(repr(net).encode())
    digest.update(_project_code_digest(net).encode())
    for name, tensor in net.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    device = example.device
    machine = (torch.cuda.get_device_name(device), torch.cuda.get_device_capability(device)) \
        if device.type == "cuda" else (cpu_info().model, cpu_info().notable_flags(), torch.get_num_threads())
    digest.update(repr((tuple(example.shape), example.dtype, device.type, machine, torch.__version__,
                        max_autotune)).encode())
    # Every setting's value (so a patch undone leaves the key as it was; codegen_config() would still
    # list the restored settings), less the one inductor fills in itself while compiling: AOTInductor's
    # machine metadata, a dict it updates in place, which would give a second compile in a process
    # another key than the first. (config.get_hash() includes that dict too.)
    settings = config.save_config_portable()
    settings.pop("aot_inductor.metadata", None)
    digest.update(repr(sorted(settings.items())).encode())
    return digest.hexdigest()[:32]


def _project_code_digest(net: nn.Module) -> str:
    """A digest of this project's code that the compiled graph traces: the source files of the
    project's modules whose classes make up ``net`` (each one's ``forward``, and the helpers beside
    it), and the project's version. repr(net) and the weights do not change when a ``forward``
    does, so without it an upgrade that changed one would silently load the package compiled from
    the old code. Torch's own modules are covered by its version in the key."""
    from mobilenet.version import __version__  # noqa: PLC0415 - a leaf module, read at call time

    names = sorted({type(m).__module__ for m in net.modules()
                    if type(m).__module__ == "mobilenet" or type(m).__module__.startswith("mobilenet.")})
    digest = hashlib.sha256(__version__.encode())
    for name in names:
        module = sys.modules.get(name)
        file = getattr(module, "__file__", None)
        digest.update(name.encode())
        try:
            digest.update(Path(file).read_bytes() if file else b"")
        except OSError:  # a module with no readable source (a zipped install): its name and the version
            digest.update(b"(no source)")
    return digest.hexdigest()


def _wrapper_source(package: Path) -> str | None:
    """The C++ wrapper AOTInductor generated (every kernel call, in order), read from the package."""
    try:
        with zipfile.ZipFile(package) as archive:
            names = [n for n in archive.namelist() if n.endswith(".wrapper.cpp")]
            return "\n".join(archive.read(n).decode("utf-8", "replace") for n in names) or None
    except (OSError, zipfile.BadZipFile):
        return None


def _build_torchscript(net: nn.Module, example: torch.Tensor) -> Built:
    start = time.perf_counter()
    frozen = frozen_torchscript(net, example[:1])
    return frozen, time.perf_counter() - start, None, "TorchScript (traced, frozen, optimize_for_inference)"


def _build_onednn_graph(net: nn.Module, example: torch.Tensor, *, log: Callable[[str], None]) -> Built:
    try:
        program, partitions, seconds = onednn_graph.build(net, example)
    except onednn_graph.Unavailable as err:
        raise CompileUnavailable(str(err)) from err
    log(f"optimize: built oneDNN Graph's program for batch {len(example)} in {seconds:.1f} s "
        "(in every process: its partitions are compiled as it is built, nothing is cached)")
    return program, seconds, None, f"TorchScript (traced, frozen) with oneDNN Graph, {partitions} fused partitions"


def _build_eager(net: nn.Module, example: torch.Tensor) -> Built:
    return net.eval(), 0.0, None, "eager"


# A oneDNN convolution with its activation fused, and a convolution run on its own (CPU or CUDA).
# (a pointwise conv runs as a matrix product: prepare.pointwise_as_matmul)
FUSED_CONV = re.compile(r"(?:mkldnn__convolution|_linear)_pointwise\((?:(?!\n).)*?\"hardtanh\"")
PLAIN_CONV = re.compile(r"aoti_torch_(?:cpu|cuda)_convolution\(|extern_kernels\.convolution\(")


def fusion_summary(code: str, convs: int) -> str:
    """What the generated code says about the convolutions: how many run fused with ReLU6."""
    fused, plain = len(FUSED_CONV.findall(code)), len(PLAIN_CONV.findall(code))
    if fused:
        return f"{fused} of {convs} convs fused with bias and ReLU6 in oneDNN"
    return f"{plain} of {convs} convs as library calls, bias and ReLU6 in generated kernels"


def _describe(optimized: OptimizedModel, model: MobileNetV1, how: str, kept: bool, native: bool) -> str:
    convs = sum(1 for _ in model.conv_layers())
    kind = optimized.precision if native else f"{optimized.precision} EMULATED (no native bf16 on this CPU)"
    parts = [f"PyTorch {torch.__version__} {kind} on {optimized.device}", how]
    if optimized.generated_code:
        parts.append(fusion_summary(optimized.generated_code, convs))
    matmuls = " pointwise convs as matmuls," if pointwise_as_matmuls(optimized.backend, optimized.device) else ""
    parts.append(f"BatchNorm folded, TF pads in the depthwise kernels,{matmuls} channels_last")
    if optimized.batch_size is not None:
        parts.append(f"batch {optimized.batch_size} (other sizes in slices of it)")
    if optimized.device.type == "cpu":
        parts.append(f"{torch.get_num_threads()} threads")
    if kept:
        parts.append("glibc keeps freed memory")
    return ", ".join(parts)
