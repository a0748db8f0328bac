"""Speed of architectures before any training: int8 and fp32, native and on AVX2 kernels, in one run.

Speed does not depend on what the weights learned, so a design can be timed before it is trained: each
architecture is built with its initial weights, exported as ``ferlab export`` does (fp32, and int8 calibrated on
the export's 1,024 Training faces), and timed at batch 32 in a worker process, natively and with AVX-512 and
VNNI hidden from CPUID (``benchmarks/masked_cpu.py``), on 1 and 2 threads; the graphs of one configuration are
timed interleaved (median of ``--repeats`` rounds), with thread spinning off so that idle sessions leave the
cores to the timed one.  The JSON gives MACs, parameters and faces/s of each.

    python benchmarks/arch_speed.py                   # the fernet family and the depthwise designs
    python benchmarks/arch_speed.py --models fernet_micro 'fernet_micro:{"depth": [1, 2, 2, 2]}' --out /tmp/a.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import masked_cpu  # noqa: E402

DATA = ROOT.parent / "shared" / "datasets" / "fer2013" / "fer2013.csv.gz"
MODELS = ["fernet", "fernet_lite", "fernet_fast", 'fernet_micro:{"widths": [16, 32, 64, 128], "depth": [1, 2, 2, 2]}',
          "fernet_micro", "mini_xception", "xception_res", "efficientnet_b0"]

WORKER = r'''
import json, statistics, sys, time
import numpy as np
import onnxruntime as ort
paths, threads, repeats = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
x = np.random.default_rng(0).integers(0, 256, (32, 48, 48)).astype(np.float32)
sessions = {}
for p in paths:
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    # no spinning: the idle pools of the other interleaved sessions would spin on the cores the timed one needs
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    s = ort.InferenceSession(p, so, providers=["CPUExecutionProvider"])
    inp = s.get_inputs()[0]
    sessions[p] = (s, inp.name, x[:, None] if len(inp.shape) == 4 else x)
    for _ in range(10):
        s.run(None, {inp.name: sessions[p][2]})
times = {p: [] for p in paths}
for _ in range(repeats):  # interleaved: every graph sees the same moments of the machine
    for p, (s, name, xx) in sessions.items():
        t0 = time.perf_counter()
        for _ in range(5):
            s.run(None, {name: xx})
        times[p].append((time.perf_counter() - t0) / 5)
print("RESULT" + json.dumps({p: round(32 / statistics.median(t), 1) for p, t in times.items()}))
'''


def parse(spec: str) -> tuple[str, dict]:
    name, _, options = spec.partition(":")
    return name, json.loads(options) if options else {}


def export(spec: str, out: Path, calib) -> dict:
    """fp32 and int8 graphs of ``spec``'s initial weights, as the export writes them; MACs and parameters."""
    import ferlab.models  # noqa: F401  (registers the architectures)
    from ferlab.models.registry import count_macs, count_params, create_model
    from ferlab.training.export import export_onnx, quantize_int8

    name, options = parse(spec)
    model = create_model(name, num_classes=7, **options).eval()
    fp32, int8 = out / "fp32.onnx", out / "int8.onnx"
    export_onnx(model, fp32, crop=44)
    quantize_int8(fp32, int8, calib)
    return {"model": name, "options": options, "macs": count_macs(model, 44), "params": count_params(model),
            "graphs": {"fp32": str(fp32), "int8": str(int8)}}


def time_graphs(paths: list[str], threads: int, repeats: int, masked: bool) -> dict[str, float]:
    return masked_cpu.run_python(WORKER, [json.dumps(paths), threads, repeats], masked=masked)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=MODELS, help="NAME or NAME:{json model options}")
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "arch_speed.json"))
    a = ap.parse_args()
    from ferlab.data import load_dataset
    from ferlab.hardware import machine_info
    from ferlab.io import atomic_write
    from ferlab.training.export import calibration_faces

    modes = [False] + ([True] if masked_cpu.unavailable() is None else [])
    calib = calibration_faces(load_dataset(DATA).by_split("Training").images)
    res = {"what": __doc__.splitlines()[0], "command": "python benchmarks/arch_speed.py " + " ".join(sys.argv[1:]),
           "date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine_info(libraries=("onnx",)),
           "masked": masked_cpu.unavailable() or "AVX-512, VNNI, BF16, AMX hidden (benchmarks/masked_cpu.py)",
           "batch": 32, "models": []}
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for k, spec in enumerate(a.models):
            out = Path(tmp) / str(k)
            out.mkdir()
            rows.append(export(spec, out, calib))
        paths = [g for r in rows for g in r["graphs"].values()]
        speeds = {}
        for masked in modes:
            for t in a.threads:
                key = f"{'avx2_kernels' if masked else 'native'}_t{t}"
                speeds[key] = time_graphs(paths, t, a.repeats, masked)
                print(key, flush=True)
        for r in rows:
            graphs = r.pop("graphs")
            r["faces_per_s"] = {key: {prec: s[p] for prec, p in graphs.items()} for key, s in speeds.items()}
            res["models"].append(r)
            print(f"{r['model']} {r['options'] or ''} {r['macs'] / 1e6:.1f} M MACs: "
                  + ", ".join(f"{k} int8 {v['int8']:,.0f} fp32 {v['fp32']:,.0f}" for k, v in r["faces_per_s"].items()))
    res["machine"]["load_average_end"] = machine_info()["load_average"]
    atomic_write(a.out, lambda tmp: Path(tmp).write_text(json.dumps(res, indent=1) + "\n"))
    print("wrote", a.out)


if __name__ == "__main__":
    main()
