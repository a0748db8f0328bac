"""The bundled int8 models' accuracy on an emulated CPU without AVX-512 or VNNI (issue 24: "on every CPU").

ONNX Runtime chooses its int8 kernels by CPUID, so a VNNI machine never runs the AVX2 kernels that saturate
when weights use all 8 bits.  ``qemu-x86_64 -cpu MODEL`` (Debian's qemu-user, user-mode emulation) runs this
Python with the CPUID of another CPU; ``EPYC-Milan`` (AMD Zen 3: AVX2 and FMA, no AVX-512, no VNNI) is the
class of the AVX2 machines of issues 16 and 24.  Each model classifies the split natively and emulated; the
JSON gives both accuracies, the card's, their top-1 agreement and the largest logit difference.  Emulation
says nothing about speed (every instruction is translated); only predictions are compared.

    python benchmarks/emulated_cpu.py                          # all of PrivateTest: about 2 hours of one core
    python benchmarks/emulated_cpu.py --models ferplus --out benchmarks/results/emulated_cpu_ferplus.json
    python benchmarks/emulated_cpu.py --faces 500 --models fast --out /tmp/e.json      # quick

tests/test_avx2_emulated.py runs the same worker on a few hundred faces in every test run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import masked_cpu
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets" / "fer2013" / "fer2013.csv.gz"
CPU_MODEL = "EPYC-Milan"
FEATURES = ("AVX2", "FMA3", "AVX512F", "AVX512VNNI", "AVXVNNI")

WORKER = r'''
import json, sys
import numpy as np
import onnxruntime as ort
from numpy._core._multiarray_umath import __cpu_features__ as cpu

faces = np.load(sys.argv[1])
out = {}
for spec in sys.argv[4:]:
    name, path, n = spec.split("=")
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    x = faces[: int(n), None].astype(np.float32)
    out[name] = np.concatenate([s.run(None, {s.get_inputs()[0].name: x[i:i + 64]})[0] for i in range(0, len(x), 64)])
np.savez(sys.argv[2], **out)
print("RESULT" + json.dumps({k: bool(cpu.get(k)) for k in sys.argv[3].split(",")}))
'''


def qemu() -> str | None:
    return shutil.which("qemu-x86_64")


def run_graphs(faces: Path, graphs: dict[str, tuple[Path, int]], cpu_model: str | None,
               timeout: float = 7200) -> tuple[dict[str, np.ndarray], dict[str, bool]]:
    """Logits of each graph (name -> (onnx path, first n faces of the ``faces`` .npy)), natively
    (``cpu_model`` None), under ``qemu-x86_64 -cpu cpu_model``, or with AVX-512 and VNNI hidden from CPUID at
    native speed (``cpu_model`` "masked": ``benchmarks/masked_cpu.py``); and the CPU features numpy saw there."""
    prefix = [qemu(), "-cpu", cpu_model] if cpu_model not in (None, "masked") else None
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "logits.npz"
        args = [faces, out, ",".join(FEATURES), *(f"{k}={p}={n}" for k, (p, n) in graphs.items())]
        feats = masked_cpu.run_python(WORKER, args, masked=cpu_model == "masked", prefix=prefix,
                                      env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=timeout)
        with np.load(out) as z:
            return {k: z[k] for k in z.files}, feats


def controls(tmp: Path, train) -> list[tuple[str, Path, dict]]:
    """The bundled fast's committed fp32 weights as u8s8 graphs (8-bit weights), with an int8 and an fp32 stem,
    calibrated as the export calibrates (``export.calibration_faces``)."""
    from ferlab.training.build import load_run
    from ferlab.training.export import calibration_faces, export_onnx, quantize_int8

    model, _, cfg = load_run(ROOT / "benchmarks" / "results" / "micro" / "run_1222_online")
    export_onnx(model, tmp / "fp32.onnx", crop=cfg.input_size)
    calib = calibration_faces(train.images)
    out = []
    for stem in ("int8", "fp32"):
        path = tmp / f"u8s8_{stem}_stem.onnx"
        quantize_int8(tmp / "fp32.onnx", path, calib, scheme="u8s8", fp32_stem=stem == "fp32")
        out.append((f"fast weights, u8s8, {stem} stem", path, {"classes": list(range(7))}))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["fast", "default", "ferplus"])
    ap.add_argument("--cpu", default=CPU_MODEL, help=f"qemu CPU model (default {CPU_MODEL}), or 'masked': this CPU "
                                                     "with AVX-512 and VNNI hidden (benchmarks/masked_cpu.py)")
    ap.add_argument("--split", default="PrivateTest")
    ap.add_argument("--faces", type=int, default=0, help="first N faces of the split (default: all)")
    ap.add_argument("--controls", action="store_true",
                    help="also the bundled fast's fp32 weights quantised with 8-bit weights (u8s8, the scheme that "
                         "saturates without VNNI), once with an int8 stem and once with the fp32 stem (needs torch)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "emulated_cpu.json"))
    a = ap.parse_args()
    if a.cpu != "masked" and qemu() is None:
        raise SystemExit("qemu-x86_64 missing: apt-get install qemu-user (make system)")
    sys.path.insert(0, str(ROOT / "src"))
    from ferlab.data import load_dataset
    from ferlab.hardware import machine_info
    from ferlab.io import atomic_write
    from ferlab.zoo import resolve

    result = {"what": __doc__.splitlines()[0], "command": "python benchmarks/emulated_cpu.py " + " ".join(sys.argv[1:]),
              "date": time.strftime("%Y-%m-%d %H:%M"), "host": machine_info(libraries=("onnxruntime",)),
              "qemu": None if a.cpu == "masked" else
              subprocess.run([qemu(), "--version"], capture_output=True, text=True).stdout.splitlines()[0],
              "emulated_cpu": a.cpu, "split": a.split, "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        graphs = [(name, *resolve(name)) for name in a.models]
        if a.controls:
            graphs += controls(Path(tmp), load_dataset(DATA).by_split("Training"))
        for name, path, card in graphs:
            # the labels the card's numbers are scored on (ferplus: the FER+ paper's majority-vote protocol)
            labels = "ferplus-majority" if len(card["classes"]) == 8 else "fer2013"
            ds = load_dataset(DATA, labels=labels).by_split(a.split)
            n = a.faces or len(ds)
            faces = Path(tmp) / f"{name}.npy"
            np.save(faces, ds.images[:n])
            t0 = time.perf_counter()
            native, _ = run_graphs(faces, {name: (path, n)}, None)
            t1 = time.perf_counter()
            emulated, feats = run_graphs(faces, {name: (path, n)}, a.cpu)
            t2 = time.perf_counter()
            y = ds.labels[:n]
            nat, emu = native[name], emulated[name]
            row = {"faces": n, "emulated_features": feats,
                   "accuracy_native": round(float((nat.argmax(1) == y).mean()), 4),
                   "accuracy_emulated": round(float((emu.argmax(1) == y).mean()), 4),
                   "card_accuracy": (card.get("metrics", {}).get(f"{a.split}_none") or {}).get("accuracy"),
                   "top1_agreement": round(float((nat.argmax(1) == emu.argmax(1)).mean()), 5),
                   "max_abs_logit_diff": float(np.abs(nat - emu).max()),
                   "seconds_native": round(t1 - t0, 1), "seconds_emulated": round(t2 - t1, 1)}
            result["models"][name] = row
            print(name, json.dumps(row), flush=True)
            # after each model: a run stopped part-way keeps what it measured
            atomic_write(a.out, lambda tmp: Path(tmp).write_text(json.dumps(result, indent=1) + "\n"))
    print("wrote", a.out)


if __name__ == "__main__":
    main()
