"""Core ML predictions through coremltools: **macOS only**.

Core ML is Apple's runtime; coremltools can write and inspect packages anywhere but runs them only
on macOS (its native ``libcoremlpython`` exists only there). Elsewhere ``CoreMlPredictor`` raises
``CoreMlUnavailableError`` saying so, and exports are checked structurally instead
(``mobilenet.deploy.formats.coreml.check_structure``).
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import numpy as np
import torch

from mobilenet.deploy.integrity import verify_checksums
from mobilenet.deploy.optional import require
from mobilenet.errors import InputError
from mobilenet.predictor import PlatformUnsupportedError, PrecisionUnavailableError, Predictor, as_numpy

PRECISIONS = ("fp32", "fp16")


class CoreMlUnavailableError(PlatformUnsupportedError):
    """Core ML predictions need macOS; this is another platform."""


def predictions_supported() -> bool:
    """Whether this machine can run Core ML predictions (macOS with coremltools' native part)."""
    return platform.system() == "Darwin"


class CoreMlPredictor(Predictor):
    runtime = "coreml"

    def __init__(self, path: str | os.PathLike[str], precision: str | None = None, threads: int | None = None) -> None:
        """``threads`` is not a Core ML setting (it schedules its own work) and is ignored."""
        del threads
        if not predictions_supported():
            raise CoreMlUnavailableError(
                f"Core ML predictions run only on Apple platforms (macOS, iOS); this is {platform.system()}. "
                "The package can still be written and checked structurally here"
            )
        from mobilenet.deploy.formats.coreml import INPUT_NAME, OUTPUT_NAME, read_metadata  # noqa: PLC0415

        ct = require("coremltools")
        path = Path(path)
        if not path.is_dir():
            raise InputError(f"{path}: no such .mlpackage directory")
        verify_checksums(path)
        meta = read_metadata(path)
        self.layout = meta.get("layout", "nchw")
        self.precision = meta.get("precision", "fp32")
        if precision is not None and precision != self.precision:
            raise PrecisionUnavailableError(f"asked for {precision}, but {path.name} is {self.precision}")
        self.model = ct.models.MLModel(str(path), compute_units=ct.ComputeUnit.CPU_ONLY)
        self.input_name, self.output_name = INPUT_NAME, OUTPUT_NAME
        self.description = f"Core ML (coremltools {ct.__version__}) {path.name}: {self.precision}, CPU only, batch 1"

    @classmethod
    def from_file(
        cls, path: str | os.PathLike[str], precision: str | None = None, threads: int | None = None
    ) -> CoreMlPredictor:
        return cls(path, precision, threads)

    def _run(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        batch = as_numpy(x)
        if self.layout == "nhwc":
            batch = np.ascontiguousarray(batch.transpose(0, 2, 3, 1))
        outputs = [self.model.predict({self.input_name: batch[i : i + 1]})[self.output_name] for i in range(len(batch))]
        return torch.from_numpy(np.concatenate([np.asarray(o, np.float32).reshape(1, -1) for o in outputs]))
