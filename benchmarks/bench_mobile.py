"""Mobile formats measured: size on disk, batch-1 latency beside TF's own .tflite files, top-1.

For TF-slim's float 1.0-224 (the project's default weights, ``load_pretrained()``) and TF's float
0.25-224 .tflite (converted with ``mobilenet convert``), write our .tflite (fp32, fp16, int8) and
.pte (fp32, int8), then:

* size on disk;
* top-1 on the 1,000 evaluation images of imagenet-val1300 (file names sorted: the first 300
  calibrate int8, the remaining 1,000 evaluate; never calibrate on what you evaluate), each file
  run in its own runtime (LiteRT interpreter with XNNPACK, ExecuTorch with XNNPACK);
* batch-1 latency, interleaved round by round with TF's published .tflite files for the same
  network in the same interpreter and the same threads (float and uint8 0.25-224; the uint8
  1.0-224 body + head pair); only the runtime call is timed (input already set);
* the fp32 .tflite of TF's float 0.25-224 against TFLite's own outputs on its golden photos.

    .venv/bin/python benchmarks/bench_mobile.py --out docs/bench/mobile.json

The machine may be shared: latency medians of one interleaved run compare files with each other;
absolute figures are provisional.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mobilenet.cpu import cpu_info
from mobilenet.files import atomic_write
from mobilenet.preprocess import preprocess_images

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT.parent / "shared" / "assets"
CALIBRATION, EVALUATION = 300, 1000


def split(assets: Path) -> tuple[list[Path], list[Path], dict[str, int]]:
    folder = assets / "imagenet-val1300"
    names = sorted(p.name for p in (folder / "images").iterdir())
    rows = (folder / "labels.csv").read_text().splitlines()[1:]
    labels = {row.split(",")[0]: int(row.split(",")[1]) for row in rows}
    paths = [folder / "images" / n for n in names]
    return paths[:CALIBRATION], paths[CALIBRATION : CALIBRATION + EVALUATION], labels


def top1(logits: torch.Tensor, paths: list[Path], labels: dict[str, int]) -> float:
    offset = 1 if logits.shape[1] == 1001 else 0  # TF's background class first
    truth = torch.tensor([labels[p.name] for p in paths])
    return (logits.argmax(1) - offset == truth).float().mean().item()


def run_all(predictor: Any, x: torch.Tensor, chunk: int = 50) -> torch.Tensor:
    return torch.cat([predictor(x[i : i + chunk]) for i in range(0, len(x), chunk)])


def size_of(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def timer(predictor: Any, image: torch.Tensor) -> Any:
    """A function timing one predictor call at batch 1, fed the file's own layout and dtype
    (``predictor.native_input``, converted once, outside the timing): what runs is the runtime and
    the predictor's own dispatch, as a caller that preprocesses straight to that input gets."""
    x = predictor.native_input(image)

    def call() -> float:
        start = time.perf_counter()
        predictor(x)
        return time.perf_counter() - start

    return call


def interleaved_latency(predictors: dict[str, Any], image: torch.Tensor, rounds: int) -> dict[str, dict[str, float]]:
    calls = {name: timer(p, image) for name, p in predictors.items()}
    for call in calls.values():  # warm up: XNNPACK packs weights on the first calls
        for _ in range(5):
            call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            times[name].append(call())
    return {
        name: {"median_ms": 1e3 * statistics.median(t), "p10_ms": 1e3 * float(np.percentile(t, 10))}
        for name, t in times.items()
    }


def bench_model(
    label: str, model: Any, peers: dict[str, list[Path]], assets: Path, folder: Path, threads: int, rounds: int,
) -> dict[str, Any]:
    from mobilenet.deploy.formats import executorch, litert  # noqa: PLC0415
    from mobilenet.deploy.runtimes.executorch import ExecuTorchPredictor  # noqa: PLC0415
    from mobilenet.deploy.runtimes.litert import LiteRtPredictor  # noqa: PLC0415

    cal_paths, eval_paths, labels = split(assets)
    pre = model.pretrained_cfg.preprocess
    calibration = preprocess_images(cal_paths, pre)
    evaluation = preprocess_images(eval_paths, pre)
    with torch.no_grad():
        reference = run_all(model.eval(), evaluation)
    result: dict[str, Any] = {"model": label, "torch_fp32_top1": top1(reference, eval_paths, labels), "files": {}}
    print(f"{label}: PyTorch fp32 top-1 {result['torch_fp32_top1']:.1%}", flush=True)
    predictors: dict[str, Any] = {}
    jobs = [(litert, "tflite", p) for p in litert.PRECISIONS] + [(executorch, "pte", p) for p in executorch.PRECISIONS]
    for writer, suffix, precision in jobs:
        path = folder / f"{label}_{precision}.{suffix}"
        start = time.perf_counter()
        writer.write(model, path, precision=precision, calibration=calibration if precision == "int8" else None)
        seconds = time.perf_counter() - start
        runner = LiteRtPredictor if suffix == "tflite" else ExecuTorchPredictor
        predictor = runner.from_file(path, precision=precision, threads=threads)
        logits = run_all(predictor, evaluation)
        name = f"ours {suffix} {precision}"
        predictors[name] = predictor
        agreement = (logits.argmax(1) == reference.argmax(1)).float().mean().item()
        result["files"][name] = {
            "bytes": size_of(path), "top1": top1(logits, eval_paths, labels), "top1_agreement_with_fp32": agreement,
            "write_seconds": seconds, "description": predictor.description,
        }
        print(f"  {name}: {size_of(path) / 1e6:.2f} MB, top-1 {result['files'][name]['top1']:.1%} "
              f"(agreement {agreement:.1%}), written in {seconds:.0f} s", flush=True)
    for name, paths in peers.items():
        predictor = LiteRtPredictor.from_file(paths, threads=threads)
        predictors[name] = predictor
        logits = run_all(predictor, evaluation)
        result["files"][name] = {"bytes": sum(size_of(p) for p in paths), "top1": top1(logits, eval_paths, labels),
                                 "description": predictor.description}
        print(f"  {name}: top-1 {result['files'][name]['top1']:.1%}", flush=True)
    latency = interleaved_latency(predictors, evaluation[:1], rounds)
    for name, figures in latency.items():
        result["files"][name]["latency_batch1"] = figures
        print(f"  {name}: batch 1 median {figures['median_ms']:.2f} ms (p10 {figures['p10_ms']:.2f})", flush=True)
    return result


def golden_check(assets: Path, folder: Path) -> dict[str, Any]:
    """Our fp32 .tflite of TF's float 0.25-224 against TFLite's own outputs on its golden photos."""
    from mobilenet.deploy.formats import litert  # noqa: PLC0415
    from mobilenet.deploy.runtimes.litert import LiteRtPredictor  # noqa: PLC0415
    from mobilenet.weights import convert  # noqa: PLC0415

    golden = np.load(assets / "tflite" / "golden" / "mobilenet_v1_0.25_224_float_tflite_golden.npz")
    model, cfg = convert(assets / "tflite" / "mobilenet_v1_0.25_224.tflite")
    model.pretrained_cfg = cfg
    path = litert.write(model, folder / "golden_fp32.tflite", precision="fp32")[0]
    x = torch.from_numpy((golden["inputs_uint8_nhwc"].astype(np.float32) - 127.5) / 127.5).permute(0, 3, 1, 2)
    probs = LiteRtPredictor.from_file(path, threads=2)(x).softmax(1).numpy()
    diff = float(np.abs(probs - golden["probs_1001"]).max())
    print(f"golden: our fp32 .tflite of TF's float 0.25-224 vs TFLite's own probabilities: max |diff| {diff:.2e}")
    return {"max_abs_prob_diff": diff, "images": len(x), "target": 1e-4}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--assets", type=Path, default=ASSETS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=200, help="interleaved timing rounds at batch 1")
    parser.add_argument("--models", nargs="+", default=["1.0-224", "0.25-224"], choices=["1.0-224", "0.25-224"])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "bench" / "mobile.json")
    args = parser.parse_args()
    from mobilenet.weights import convert, load_pretrained  # noqa: PLC0415

    tflite = args.assets / "tflite"
    report: dict[str, Any] = {
        "command": "benchmarks/bench_mobile.py " + " ".join(f"--models {' '.join(args.models)}".split()),
        "cpu": cpu_info().summary(), "threads": args.threads, "rounds": args.rounds, "results": [],
    }
    print(report["cpu"], flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-mobile-") as tmp:
        folder = Path(tmp)
        report["golden"] = golden_check(args.assets, folder)
        for label in args.models:
            if label == "1.0-224":
                model = load_pretrained()
                peers = {"TF tflite uint8 (body+head)": [tflite / "mobilenet_v1_1.0_224_quant_body.tflite",
                                                         tflite / "mobilenet_v1_1.0_224_quant_head.tflite"]}
            else:
                model, cfg = convert(tflite / "mobilenet_v1_0.25_224.tflite")
                model.pretrained_cfg = cfg
                peers = {"TF tflite fp32": [tflite / "mobilenet_v1_0.25_224.tflite"],
                         "TF tflite uint8": [tflite / "mobilenet_v1_0.25_224_quant.tflite"]}
            report["results"].append(bench_model(label, model, peers, args.assets, folder, args.threads, args.rounds))
    with atomic_write(args.out) as out:
        out.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
