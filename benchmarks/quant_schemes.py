"""Choose the int8 scheme by measurement on this machine: accuracy, top-1 agreement with fp32, faces/s.

For each run, the fp32 ONNX export and one int8 export per scheme of ``ferlab.training.export.INT8_SCHEMES``
(same 1,024 Training calibration images) are scored on PublicTest (where the scheme is chosen) and PrivateTest
(reported only), with their top-1 agreement with the fp32 graph, and timed at batch 32 on ``--threads``
threads (median of repeats, all schemes interleaved in one run).  The CPU and its features are recorded:
ONNX Runtime's uint8 x int8 kernels saturate on CPUs without VNNI, so the answer depends on the machine.

    python benchmarks/quant_schemes.py                      # writes benchmarks/results/quant_schemes.json
    python benchmarks/quant_schemes.py RUN [RUN...] --out /tmp/q.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from ferlab.data.fer2013 import load_fer2013_csv  # noqa: E402
from ferlab.hardware import machine_info  # noqa: E402
from ferlab.inference.classifier import OnnxClassifier  # noqa: E402
from ferlab.io import atomic_write  # noqa: E402
from ferlab.training.build import load_run  # noqa: E402
from ferlab.training.export import INT8_SCHEMES, calibration_faces, export_onnx, finish_card, quantize_int8  # noqa: E402

DATA = ROOT.parent / "shared" / "datasets" / "fer2013" / "fer2013.csv.gz"
RUNS = ["benchmarks/results/default/run", "benchmarks/results/default/run_seed2", "benchmarks/results/fast/run"]


def faces_per_s(clf: OnnxClassifier, crops: np.ndarray, batch: int = 32) -> float:
    t0 = time.perf_counter()
    for i in range(0, len(crops), batch):
        clf.logits(crops[i:i + batch], batch_size=batch)
    return len(crops) / (time.perf_counter() - t0)


def study(run: str, ds, threads: int, repeats: int) -> dict:
    model, summary, cfg = load_run(ROOT / run if not Path(run).is_absolute() else run)
    train = ds.by_split("Training")
    calib = calibration_faces(train.images)
    splits = {s: ds.by_split(s) for s in ("PublicTest", "PrivateTest")}
    with tempfile.TemporaryDirectory() as tmp:
        paths = {"fp32": Path(tmp) / "fp32.onnx"}
        export_onnx(model, paths["fp32"], crop=cfg.input_size)
        for scheme in INT8_SCHEMES:
            paths[scheme] = Path(tmp) / f"{scheme}.onnx"
            quantize_int8(paths["fp32"], paths[scheme], calib, scheme=scheme)
        for k, p in paths.items():
            finish_card({"name": k, "classes": summary["classes"], "input_size": 48, "channels": 1,
                         "temperature": 1.0, "quantization": k}, p)
        clfs = {k: OnnxClassifier(p, threads=threads, calibrated=False) for k, p in paths.items()}
        preds = {k: {s: c.logits(d.images).argmax(1) for s, d in splits.items()} for k, c in clfs.items()}
        crops = splits["PublicTest"].images[:2048]
        speed = {k: [] for k in clfs}
        for _ in range(repeats):  # interleaved so that machine noise hits every scheme alike
            for k, c in clfs.items():
                speed[k].append(faces_per_s(c, crops))
        out = {}
        for k in clfs:
            row = {"onnx_bytes": paths[k].stat().st_size,
                   "faces_per_s_batch32": round(statistics.median(speed[k]))}
            for s, d in splits.items():
                row[f"{s}_accuracy"] = round(float((preds[k][s] == d.labels).mean()), 4)
                row[f"{s}_agreement_with_fp32"] = round(float((preds[k][s] == preds["fp32"][s]).mean()), 4)
            out[k] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="*", default=RUNS)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "quant_schemes.json"))
    args = ap.parse_args()
    ds = load_fer2013_csv(DATA)
    result = {"command": "python benchmarks/quant_schemes.py " + " ".join(sys.argv[1:]),
              "machine": machine_info(args.threads), "schemes": {k: list(v) for k, v in INT8_SCHEMES.items()},
              "runs": {}}
    for run in args.runs:
        result["runs"][run] = study(run, ds, args.threads, args.repeats)
        print(run, json.dumps(result["runs"][run], indent=1), flush=True)
    atomic_write(args.out, lambda tmp: Path(tmp).write_text(json.dumps(result, indent=2) + "\n"))
    print("wrote", args.out)


if __name__ == "__main__":
    main()
