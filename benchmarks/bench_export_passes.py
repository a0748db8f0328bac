"""What the int8 export's fp32 stem buys, per model, on this machine's CPU (issue 24, item 3).

For each committed fp32 run this exports the network (``training.export.export_onnx``) and quantises it twice
with the export's own ``quantize_int8``, calibrated on the same 1,024 Training faces: once as the export does
now (the stem convolution left in fp32, weights and input, a one-convolution stage pooled in float:
``training.qdq``) and once with the stem quantised too (what every bundled file had before).
Both graphs are timed interleaved (faces/s at batch 1 and 32, 1 and 2 intra-op threads, the sessions as
``profile_int8.session`` opens them: ferlab's options), and their predictions are compared with each other and
with the fp32 graph on the 3,589 PublicTest faces (top-1 agreement, largest logit difference, accuracy).

    python benchmarks/bench_export_passes.py                 # writes results/export_passes.json
    python benchmarks/bench_export_passes.py --repeats 3 --out /tmp/x.json   # quick
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
sys.path.insert(0, str(ROOT / "benchmarks"))

from profile_int8 import DATA, session  # noqa: E402

from ferlab.data.fer2013 import load_fer2013_csv  # noqa: E402
from ferlab.hardware import machine_info  # noqa: E402
from ferlab.io import atomic_write  # noqa: E402
from ferlab.training import export  # noqa: E402
from ferlab.training.build import load_run  # noqa: E402

RUNS = {  # the committed fp32 weights of each bundled model and candidate
    "default": "benchmarks/results/default/run_kd3b",
    "fernet_fast": "benchmarks/results/fast/run_kd",
    "lite (fernet_lite)": "benchmarks/results/lite/run_prune2",
    "micro (fernet_micro)": "benchmarks/results/micro/run_online3",
    "micro 1-2-2-2": "benchmarks/results/micro/run_1222_online",
}


def build(run: str, calib: np.ndarray, tmp: Path) -> tuple[dict[str, Path], Path]:
    """The two int8 graphs of ``run``, and its fp32 graph."""
    model, _, cfg = load_run(ROOT / run)
    fp32 = tmp / f"{Path(run).name}.onnx"
    export.export_onnx(model, fp32, crop=cfg.input_size)
    paths = {"fp32_stem": tmp / f"{Path(run).name}_stem.onnx", "int8_stem": tmp / f"{Path(run).name}_int8.onnx"}
    export.quantize_int8(fp32, paths["fp32_stem"], calib)
    export.quantize_int8(fp32, paths["int8_stem"], calib, fp32_stem=False)
    return paths, fp32


def timing(paths: dict[str, Path], x_all: np.ndarray, repeats: int) -> dict:
    out = {}
    for threads in (1, 2):
        sess = {k: session(p, threads) for k, p in paths.items()}
        for batch in (1, 32):
            x = x_all[:batch]
            inner, reps = (40, 4 * repeats) if batch == 1 else (10, repeats)
            per = {k: [] for k in sess}
            for _ in range(reps):  # interleaved: machine noise hits both alike
                for k, s in sess.items():
                    s.run(None, {"image": x})
                    t0 = time.perf_counter()
                    for _ in range(inner):
                        s.run(None, {"image": x})
                    per[k].append(batch * inner / (time.perf_counter() - t0))
            ratios = [a / b for a, b in zip(per["fp32_stem"], per["int8_stem"])]
            out[f"batch{batch}_threads{threads}"] = {
                **{f"{k}_faces_per_s": round(statistics.median(v)) for k, v in per.items()},
                "speedup_median": round(statistics.median(ratios), 3),
                "speedup_quartiles": [round(q, 3) for q in statistics.quantiles(ratios, n=4)], "repeats": reps}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--run", action="append", help="NAME=RUN_DIR (repeatable; default: the committed runs)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "export_passes.json"))
    a = ap.parse_args()
    runs = dict(r.split("=", 1) for r in a.run) if a.run else RUNS
    ds = load_fer2013_csv(DATA)
    train, public = ds.by_split("Training"), ds.by_split("PublicTest")
    calib = export.calibration_faces(train.images)
    x_all = public.images[:, None].astype(np.float32)
    result = {"what": __doc__.splitlines()[0], "command": "python benchmarks/bench_export_passes.py " + " ".join(sys.argv[1:]),
              "date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine_info(libraries=("onnx",)), "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, run in runs.items():
            paths, fp32 = build(run, calib, Path(tmp))
            logits = {k: session(p, 2).run(None, {"image": x_all})[0] for k, p in {**paths, "fp32": fp32}.items()}
            a8, s8, ref = logits["int8_stem"], logits["fp32_stem"], logits["fp32"].argmax(1)
            row = {"run": run, "predictions": {
                "top1_agreement": round(float((a8.argmax(1) == s8.argmax(1)).mean()), 5),
                "max_abs_logit_diff": round(float(np.abs(a8 - s8).max()), 5),
                "PublicTest_accuracy_fp32": round(float((ref == public.labels).mean()), 4),
                "PublicTest_accuracy_int8_stem": round(float((a8.argmax(1) == public.labels).mean()), 4),
                "PublicTest_accuracy_fp32_stem": round(float((s8.argmax(1) == public.labels).mean()), 4),
                "agreement_with_fp32_int8_stem": round(float((a8.argmax(1) == ref).mean()), 5),
                "agreement_with_fp32_fp32_stem": round(float((s8.argmax(1) == ref).mean()), 5)},
                "timing": timing(paths, x_all, a.repeats)}
            result["models"][name] = row
            print(name, json.dumps(row["predictions"]), {k: v["speedup_median"] for k, v in row["timing"].items()})
    result["machine"]["load_average_at_end"] = machine_info()["load_average"]
    atomic_write(a.out, lambda tmp: Path(tmp).write_text(json.dumps(result, indent=1) + "\n"))
    print("wrote", a.out)


if __name__ == "__main__":
    main()
