"""ExecuTorch's own runtime (``executorch.runtime``) running a ``.pte`` program on the CPU, its
layers delegated to XNNPACK as the program was lowered.

Takes the standard NCHW float32 batch and hands the program its declared layout (our programs say
NHWC or NCHW in their metadata). Programs have a fixed batch (1 in ours): a larger batch runs as
that many executions. ``threads`` sizes ExecuTorch's thread pool, which is process-wide: the last
predictor built decides it for all.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mobilenet.deploy.optional import package_version, require
from mobilenet.errors import InputError
from mobilenet.predictor import PrecisionUnavailableError, Predictor, as_numpy

PRECISIONS = ("fp32", "int8")


class ExecuTorchPredictor(Predictor):
    runtime = "executorch"

    def __init__(self, path: str | os.PathLike[str], precision: str | None = None, threads: int | None = None) -> None:
        from mobilenet.deploy.formats.executorch import read_metadata  # noqa: PLC0415 - runtimes may use writers

        runtime_module = require("executorch.runtime")
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: no such file")
        if threads is not None and threads < 1:
            raise InputError(f"threads must be >= 1, got {threads}")
        if threads:
            require("executorch.extension.pybindings.portable_lib")._unsafe_reset_threadpool(threads)
        self.path = path
        self.program = runtime_module.Runtime.get().load_program(path)
        self.method = self.program.load_method("forward")
        self.metadata: dict[str, Any] | None = read_metadata(path)
        sizes = tuple(int(s) for s in self.program.metadata("forward").input_tensor_meta(0).sizes())
        if len(sizes) != 4:
            raise InputError(f"{path.name}: expected a 4-D image input, the program declares {sizes}")
        self.shape = sizes
        self.batch = sizes[0]
        self.fixed_batch = self.batch  # a larger batch runs as several executions
        if self.metadata:
            self.layout = self.metadata["layout"]
            self.precision = self.metadata["precision"]
        else:
            self.layout = "nchw" if sizes[1] in (1, 3) and sizes[3] not in (1, 3) else "nhwc"
            self.precision = precision or "fp32"
        if precision is not None and precision != self.precision:
            raise PrecisionUnavailableError(f"asked for {precision}, but {path.name} is {self.precision}")
        pool = require("executorch.extension.pybindings.portable_lib")._threadpool_get_thread_count()
        kind = "int8 (PT2E, per-channel weights)" if self.precision == "int8" else self.precision
        version = package_version("executorch") or "?"
        self.description = (
            f"ExecuTorch {version} runtime, XNNPACK delegate, {path.name}: {kind}, input float32 "
            f"{self.layout.upper()} {sizes}, {pool} threads in its pool, batch {self.batch} per execution"
        )

    @classmethod
    def from_file(
        cls, path: str | os.PathLike[str], precision: str | None = None, threads: int | None = None
    ) -> ExecuTorchPredictor:
        return cls(path, precision, threads)

    def _run(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        batch = torch.from_numpy(as_numpy(x))
        if batch.dim() != 4:
            raise InputError(f"expected an NCHW batch, got shape {tuple(batch.shape)}")
        if self.layout == "nhwc":
            batch = batch.permute(0, 2, 3, 1)
        if tuple(batch.shape[1:]) != self.shape[1:]:
            raise InputError(f"input of shape {tuple(x.shape)} does not fit the program's input {self.shape}")
        outputs = []
        for start in range(0, len(batch), self.batch):
            part = batch[start : start + self.batch]
            count = len(part)
            if count < self.batch:
                part = torch.cat([part, part.new_zeros((self.batch - count, *part.shape[1:]))])
            out = self.method.execute([part.contiguous()])[0]
            outputs.append(out.reshape(self.batch, -1)[:count].float().clone())
        return torch.cat(outputs)
