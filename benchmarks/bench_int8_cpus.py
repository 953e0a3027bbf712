"""int8 accuracy on other CPUs than this one: the same int8 files run natively and under qemu's
user-mode emulation of another CPU model (default EPYC-Milan: a Zen 3, AVX2/FMA only, no AVX-512,
no VNNI, no bf16), so the runtimes' own dispatch picks that CPU's kernels.

Why: int8 kernels on x86 CPUs without VNNI add pairs of u8 x s8 products in saturating 16-bit
lanes; 8-bit weights overflow there (see mobilenet.deploy.quantize). This measures it, per file:
ONNX Runtime (QDQ) and OpenVINO (NNCF) int8 with 8-bit weights and with portable 7-bit weights,
against the fp32 model, on the 1,000 evaluation images of ../shared/assets/imagenet-val1300
(calibrated on the 300 others). Emulation is slow (about 1 s an image at 1.0-224 under qemu 7.2
on 2 cores): --images cuts the evaluation set for the emulated runs.

    apt-get install qemu-user     # Debian's qemu-x86_64
    .venv/bin/python benchmarks/bench_int8_cpus.py [--cpu EPYC-Milan] [--images 1000] [--json FILE]
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ASSETS = Path(__file__).resolve().parents[2] / "shared" / "assets" / "imagenet-val1300"
CALIBRATION_FILES = 300
FILES = [  # (name, format, portable 7-bit weights)
    ("onnxruntime int8, 8-bit weights", "model_8bit.onnx", False),
    ("onnxruntime int8, portable 7-bit weights", "model_7bit.onnx", True),
    ("openvino int8, 8-bit weights", "model_8bit.xml", False),
    ("openvino int8, portable 7-bit weights", "model_7bit.xml", True),
]


def prepare(work: Path, data: Path) -> None:
    """Natively: preprocess, the fp32 reference logits, and the four int8 files."""
    import torch

    from mobilenet.deploy.formats import onnx as onnx_format
    from mobilenet.deploy.formats import openvino as openvino_format
    from mobilenet.preprocess import preprocess_images
    from mobilenet.weights import load_pretrained

    model = load_pretrained()
    pre = model.pretrained_cfg.preprocess
    with (data / "labels.csv").open() as f:
        labels = {row["file"]: int(row["label"]) for row in csv.DictReader(f)}
    files = sorted(labels)
    calibration = preprocess_images([data / "images" / n for n in files[:CALIBRATION_FILES]], pre)
    evaluation = files[CALIBRATION_FILES:]
    images = preprocess_images([data / "images" / n for n in evaluation], pre)
    with torch.no_grad():
        reference = torch.cat([model(images[i : i + 50]) for i in range(0, len(images), 50)])
    np.savez(work / "data.npz", images=images.numpy(), labels=np.array([labels[n] for n in evaluation]),
             reference=reference.numpy())
    for _, name, portable in FILES:
        writer = onnx_format if name.endswith(".onnx") else openvino_format
        writer.write(model, work / name, precision="int8", calibration=calibration, portable_int8=portable)


def worker(path: Path, images: int) -> dict:
    """In the (possibly emulated) process: run one file on the evaluation images."""
    from mobilenet.cpu import cpu_info
    from mobilenet.deploy.runtime import predictor_from_file

    data = np.load(path.parent / "data.npz")
    x, y, ref = data["images"][:images], data["labels"][:images], data["reference"][:images]
    predictor = predictor_from_file(path, threads=2)
    out = np.concatenate([predictor(x[i : i + 25]).numpy() for i in range(0, len(x), 25)])
    return {
        "cpu": cpu_info().summary(), "path": path.name, "images": len(x), "description": predictor.description,
        "top1": float((out.argmax(1) == y).mean() * 100), "fp32_top1": float((ref.argmax(1) == y).mean() * 100),
        "agreement": float((out.argmax(1) == ref.argmax(1)).mean() * 100),
    }


def run_worker(path: Path, images: int, qemu_cpu: str | None) -> dict:
    command = [sys.executable, __file__, "--worker", str(path), "--images", str(images)]
    if qemu_cpu:
        command = ["qemu-x86_64", "-cpu", qemu_cpu, *command]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr.strip().splitlines()[-3:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu", default="EPYC-Milan", help="qemu CPU model to emulate (default EPYC-Milan)")
    parser.add_argument("--images", type=int, default=1000, help="evaluation images for the emulated runs")
    parser.add_argument("--data", type=Path, default=ASSETS)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.images)))
        return 0
    if not (args.data / "labels.csv").is_file():
        print(f"{args.data}: not found (needs ../shared/assets/imagenet-val1300)", file=sys.stderr)
        return 2
    if shutil.which("qemu-x86_64") is None:
        print("qemu-x86_64 not found: apt-get install qemu-user", file=sys.stderr)
        return 2
    results = []
    with tempfile.TemporaryDirectory(prefix="mobilenet-int8-cpus-") as tmp:
        work = Path(tmp)
        print("quantizing (natively)", file=sys.stderr)
        prepare(work, args.data)
        for label, name, _ in FILES:
            for qemu_cpu in (None, args.cpu):
                where = f"qemu -cpu {qemu_cpu}" if qemu_cpu else "native"
                print(f"{label}: {where}", file=sys.stderr, flush=True)
                images = args.images if qemu_cpu else 1000
                results.append({"file": label, "where": where, **run_worker(work / name, images, qemu_cpu)})
    print("| int8 file | run on | CPU as the process sees it | images | top-1 % | fp32 top-1 % | top-1 agreement % |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(f"| {r['file']} | {r['where']} | {r['cpu']} | {r['images']} | {r['top1']:.1f} | {r['fp32_top1']:.1f} "
              f"| {r['agreement']:.1f} |")
    if args.json:
        from mobilenet.files import write_text

        write_text(args.json, json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
