"""Export to ONNX and OpenVINO IR, verified against PyTorch on real photos.

The exported graph is the folded model (conv with bias + Clip(0, 6) per layer, a mean, one Gemm),
with a dynamic batch dimension and the spatial size fixed at the configured resolution (TF 'SAME'
pads are computed from the input size, so they become constants of the graph).

Every export is checked before it is kept: the file is loaded by its runtime, run on real photos
at two batch sizes, and its logits compared with the unfolded PyTorch model's. A difference above
the tolerance raises ``ExportMismatchError`` and the file is not written. Files appear atomically
(written beside the target under a temporary name, then renamed).
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mobilenet.deploy.optional import require
from mobilenet.deploy.prepare import folded_copy
from mobilenet.errors import InputError, MobileNetError
from mobilenet.model import MobileNetV1

ONNX_OPSET = 18
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
# fp32 logits of a folded graph differ from the unfolded PyTorch model by rounding only (~1e-5 on
# logits of magnitude ~10); 1e-3 leaves room for other summation orders and still catches any
# real error (a wrong pad, a lost bias), which moves logits by 0.1 or more.
FP32_TOLERANCE = 1e-3
# bf16 keeps 8 bits of mantissa, so logits move by up to ~1% of their scale; 5% still catches a
# model that computes something else.
BF16_RELATIVE_TOLERANCE = 0.05


class ExportMismatchError(MobileNetError, RuntimeError):
    """The exported model does not compute what the PyTorch model computes."""


@dataclass(frozen=True)
class Verification:
    """How an exported model compared with PyTorch on real inputs."""

    runtime: str
    precision: str
    images: int
    batch_sizes: tuple[int, ...]
    max_abs_diff: float
    max_abs_logit: float
    top1_agreement: float
    tolerance: float | None  # None: int8, judged on top-1 agreement instead

    def summary(self) -> str:
        return (
            f"verified {self.runtime} {self.precision} on {self.images} real images at batch sizes "
            f"{', '.join(map(str, self.batch_sizes))}: max |logit difference| {self.max_abs_diff:.3g} "
            f"(logits up to {self.max_abs_logit:.3g}), top-1 agreement {self.top1_agreement:.0%}"
        )


def sample_photos() -> list[Path]:
    """Real photos that ship inside installed packages (matplotlib always; scikit-image if present)."""
    import matplotlib  # noqa: PLC0415 - a core dependency, but only needed here

    photos = [Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"]
    try:
        import skimage  # noqa: PLC0415

        data = Path(skimage.__file__).parent / "data"
        photos += [data / name for name in ("chelsea.png", "coffee.png", "astronaut.png")]
    except ImportError:
        pass
    return [p for p in photos if p.is_file()]


def photo_batch(model: MobileNetV1, paths: Sequence[Path] | None = None, preprocess: Any = None) -> torch.Tensor:
    """Real photos preprocessed for ``model`` (default: ``sample_photos()``, TF's [-1, 1] scaling)."""
    from mobilenet.preprocess import Preprocess, preprocess_images  # noqa: PLC0415

    paths = list(paths) if paths is not None else sample_photos()
    if not paths:
        raise InputError("no real images to verify the export with; pass some image files")
    pre = preprocess or Preprocess(resolution=model.cfg.resolution)
    if tuple(pre.resolution) != tuple(model.cfg.resolution):
        raise InputError(f"preprocessing resolution {pre.resolution} does not match the model's {model.cfg.resolution}")
    return preprocess_images(paths, pre)


def export_onnx(model: MobileNetV1, path: str | os.PathLike[str], *, opset: int = ONNX_OPSET) -> Path:
    """Write the folded model as ONNX with a dynamic batch dimension (unverified: see ``export``)."""
    require("onnx")
    require("onnxscript")
    path = Path(path)
    folded = folded_copy(model)
    example = torch.zeros(2, model.cfg.in_channels, *model.cfg.resolution)
    batch = torch.export.Dim("batch", min=1, max=4096)
    with _temporary_beside(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            folded, (example,), dynamo=True, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_shapes={"x": {0: batch}}, opset_version=opset, verbose=False,
        )
        program.save(str(tmp), external_data=False)
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    return path


def convert_to_openvino(onnx_path: str | os.PathLike[str]) -> Any:
    """An ``openvino.Model`` from an ONNX file (keeps the dynamic batch)."""
    ov = require("openvino")
    return ov.convert_model(str(onnx_path))


def save_openvino(ov_model: Any, path: str | os.PathLike[str]) -> Path:
    """Write ``path`` (.xml) and its .bin atomically, weights kept at full precision (OpenVINO's
    default would compress them to fp16)."""
    ov = require("openvino")
    path = Path(path)
    if path.suffix != ".xml":
        raise InputError(f"an OpenVINO model is an .xml file (with a .bin beside it), got {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.stem}.") as tmp:
        ov.save_model(ov_model, str(Path(tmp) / "model.xml"), compress_to_fp16=False)
        # The .xml finds its weights by name (model.bin -> <stem>.bin): move the .bin first, so a
        # reader never sees a new .xml beside an old .bin.
        os.replace(Path(tmp) / "model.bin", path.with_suffix(".bin"))
        os.replace(Path(tmp) / "model.xml", path)
    return path


def verify(
    model: MobileNetV1, predictor: Any, images: torch.Tensor, *, precision: str = "fp32",
    tolerance: float = FP32_TOLERANCE, min_top1_agreement: float = 0.5,
) -> Verification:
    """Compare a predictor's logits with the unfolded PyTorch model's, at batch 1 and at the
    full batch (the dynamic batch dimension). fp32: every logit within ``tolerance``; bf16: within
    ``BF16_RELATIVE_TOLERANCE`` of the largest logit; int8: top-1 agreement at least
    ``min_top1_agreement``; all: finite outputs. Raises ``ExportMismatchError`` otherwise."""
    with torch.no_grad():
        expected = model.eval()(images)
    single = torch.cat([predictor(images[i : i + 1]) for i in range(len(images))])
    batched = predictor(images)
    diff = max((single - expected).abs().max().item(), (batched - expected).abs().max().item())
    largest = expected.abs().max().item()
    agreement = (batched.argmax(1) == expected.argmax(1)).float().mean().item()
    check = Verification(
        runtime=getattr(predictor, "runtime", "?"), precision=precision, images=len(images),
        batch_sizes=(1, len(images)), max_abs_diff=diff, max_abs_logit=largest, top1_agreement=agreement,
        tolerance=None if precision == "int8" else tolerance,
    )
    if not (torch.isfinite(single).all() and torch.isfinite(batched).all()):
        raise ExportMismatchError(f"{check.runtime} {precision} produced non-finite logits")
    if precision == "int8":
        if agreement < min_top1_agreement:
            raise ExportMismatchError(f"int8 model disagrees with PyTorch: {check.summary()}")
    else:
        bound = BF16_RELATIVE_TOLERANCE * max(largest, 1.0) if precision == "bf16" else tolerance
        if diff > bound:
            raise ExportMismatchError(f"exported model differs from PyTorch by more than {bound:g}: {check.summary()}")
    return check


def export(
    model: MobileNetV1,
    path: str | os.PathLike[str],
    *,
    format: str = "onnx",
    precision: str = "fp32",
    verify_images: Sequence[Path] | None = None,
    calibration_images: Sequence[Path] | None = None,
    preprocess: Any = None,
) -> Verification:
    """Export ``model`` to ``path`` (.onnx, or .xml + .bin for OpenVINO), fp32 or int8, and verify
    the written file against PyTorch on real images. Returns the verification; raises
    ``ExportMismatchError`` (and leaves nothing at ``path``) if the file does not match."""
    from mobilenet.deploy import quantize  # noqa: PLC0415
    from mobilenet.deploy.runtime import OnnxRuntimePredictor, OpenVinoPredictor  # noqa: PLC0415

    if format not in ("onnx", "openvino"):
        raise InputError(f"format must be onnx or openvino, got {format!r}")
    if precision not in ("fp32", "int8"):
        raise InputError(f"export precision must be fp32 or int8 (bf16 is a runtime setting), got {precision!r}")
    if precision == "int8" and not calibration_images:
        raise InputError("int8 export needs calibration images: a folder of a few hundred real images")
    path = Path(path)
    expected_suffix = ".onnx" if format == "onnx" else ".xml"
    if path.suffix != expected_suffix:
        raise InputError(f"a {format} model is written to a {expected_suffix} file, got {path}")
    images = photo_batch(model, verify_images, preprocess)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.stem}.") as tmp:
        onnx_fp32 = export_onnx(model, Path(tmp) / "model.onnx")
        if format == "onnx":
            staged = onnx_fp32
            if precision == "int8":
                calibration = quantize.calibration_tensor(calibration_images, preprocess or _preprocess_for(model))
                staged = quantize.quantize_onnx(onnx_fp32, Path(tmp) / "model_int8.onnx", calibration)
            predictor = OnnxRuntimePredictor.from_file(staged, precision=precision)
            check = verify(model, predictor, images, precision=precision)
            os.replace(staged, path)
        else:
            ov_model = convert_to_openvino(onnx_fp32)
            if precision == "int8":
                calibration = quantize.calibration_tensor(calibration_images, preprocess or _preprocess_for(model))
                ov_model = quantize.quantize_openvino(ov_model, calibration)
            staged = save_openvino(ov_model, Path(tmp) / "model.xml")
            predictor = OpenVinoPredictor.from_file(staged, precision=precision)
            check = verify(model, predictor, images, precision=precision)
            os.replace(staged.with_suffix(".bin"), path.with_suffix(".bin"))
            os.replace(staged, path)
    return check


def _preprocess_for(model: MobileNetV1) -> Any:
    from mobilenet.preprocess import Preprocess  # noqa: PLC0415

    return Preprocess(resolution=model.cfg.resolution)


class _temporary_beside:
    """A temporary file name in the target's directory (so ``os.replace`` is a rename), removed on
    exit if it is still there (the export failed)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        os.close(fd)
        self.tmp = Path(name)
        return self.tmp

    def __exit__(self, *exc: object) -> None:
        self.tmp.unlink(missing_ok=True)


def default_file_mode() -> int:
    """The mode ``open()`` would give a new file (0o666 less the umask); ``mkstemp`` gives 0o600."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def onnx_input_shape(path: str | os.PathLike[str]) -> list[int | str]:
    """The declared input shape of an ONNX file (a name for a dynamic dimension)."""
    onnx = require("onnx")
    dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    return [d.dim_param or d.dim_value for d in dims]


def as_numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """A contiguous float32 numpy view of an NCHW input."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().float().numpy()
    return np.ascontiguousarray(x, dtype=np.float32)
