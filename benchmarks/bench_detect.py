"""Face-detection and end-to-end speed: BlazeFace vs Haar vs the `fer` package, one run, same frames.

Measures on this machine, in one run (medians of ``--repeats``, ``--threads`` ONNX Runtime / OpenCV threads):

1. detection only on a 640x480 frame with one face (``bench_inference.make_frame``): BlazeFace short range
   (one pass: ferlab's live path), full range (one pass), the still-image default (the photo search:
   ``fast``, the short-range model on the frame and on the frame enlarged; and ``thorough``, the full-range
   model's search too), and Haar (ferlab's former default: min face 40, scale 1.1); ratios to Haar;
2. end to end, from a BGR frame to faces with expressions, detecting on every frame
   (``StreamRecognizer.process``, every=1: the live path of ``ferlab webcam`` and the web page) and
   ``Recognizer.predict`` (the photo path): frames/s with one face at 640x480 and 1280x720 and with ten
   faces at 1280x720;
3. the `fer` package's whole pipeline (``FER().detect_emotions(frame)``, its defaults: Haar + TFLite
   classifier) on the same frames, in its own virtualenv (``bench_inference.install_fer``), and the ratio.

The CPU model and its flags (avx2, avx512f, avx512_vnni / avx_vnni, avx512_bf16, amx) and the library
versions are recorded with the numbers.

    python benchmarks/bench_detect.py [--threads 2] [--repeats 50] [--no-fer]

Writes ``benchmarks/results/detect_speed.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_inference import install_fer, make_frame, median_time  # noqa: E402

from ferlab.hardware import machine_info  # noqa: E402
from ferlab.inference.detect import HaarDetector, make_detector  # noqa: E402
from ferlab.inference.recognizer import Recognizer  # noqa: E402
from ferlab.inference.video import StreamRecognizer  # noqa: E402
from ferlab.io import atomic_write  # noqa: E402


def cpu_info() -> dict:
    return machine_info()


def versions() -> dict:
    import onnxruntime

    return {"python": platform.python_version(), "numpy": np.__version__, "opencv": cv2.__version__,
            "onnxruntime": onnxruntime.__version__}


def med_ms(fn, repeats: int, warmup: int = 3) -> float:
    return round(1000 * median_time(fn, repeats, warmup), 3)


def frames() -> dict[str, np.ndarray]:
    """640x480 one face; 1280x720 one face (the 640x480 frame scaled up); 1280x720 with ten faces."""
    f640 = make_frame()
    f720 = cv2.resize(f640, (960, 720), interpolation=cv2.INTER_LINEAR)
    f720 = cv2.copyMakeBorder(f720, 0, 0, 160, 160, cv2.BORDER_REFLECT)
    astro = cv2.imread(str(ROOT / "examples" / "astronaut.jpg"))
    head = cv2.resize(astro[30:270, 110:350], (200, 200), interpolation=cv2.INTER_AREA)
    ten = cv2.GaussianBlur(cv2.resize(astro, (1280, 720)), (0, 0), 20)
    for i in range(10):
        x, y = 40 + (i % 5) * 245, 60 + (i // 5) * 330
        ten[y:y + 200, x:x + 200] = head
    return {"640x480_1face": f640, "1280x720_1face": f720, "1280x720_10faces": ten}


FER_WORKER = textwrap.dedent('''
    import json, statistics, sys, time, warnings
    warnings.filterwarnings("ignore")
    import numpy as np
    from fer.fer import FER
    args = json.loads(sys.argv[1])
    d = np.load(args["data"])
    det = FER()
    res = {"fer_version": __import__("fer").__version__}
    for name in d.files:
        fr = d[name]
        det.detect_emotions(fr)
        ts = []
        for _ in range(args["repeats"]):
            t0 = time.perf_counter(); out = det.detect_emotions(fr); ts.append(time.perf_counter() - t0)
        med = statistics.median(ts)
        res[name] = {"ms_per_frame": round(1000 * med, 2), "frames_per_s": round(1 / med, 1), "faces_found": len(out)}
    print("FERJSON" + json.dumps(res))
''')


def run_fer(venv: Path, fr: dict, repeats: int, threads: int, timeout: int = 900) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "frames.npz"
        np.savez(data, **fr)
        worker = Path(tmp) / "w.py"
        worker.write_text(FER_WORKER)
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_NUM_INTRAOP_THREADS": str(threads),
               "TF_NUM_INTEROP_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": str(threads)}
        try:
            r = subprocess.run([str(venv / "bin" / "python"), str(worker), json.dumps({"data": str(data),
                                                                                      "repeats": repeats})],
                               capture_output=True, text=True, timeout=timeout, env=env, cwd=tmp)
        except subprocess.TimeoutExpired:
            return {"status": f"failed: took longer than {timeout} s"}
    for line in r.stdout.splitlines():
        if line.startswith("FERJSON"):
            return {"status": "ok", **json.loads(line[7:])}
    return {"status": "failed", "error": (r.stderr.strip().splitlines() or ["no output"])[-1][:300]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--model", default="default")
    ap.add_argument("--no-fer", action="store_true")
    ap.add_argument("--fer-venv", default="/tmp/fer-venv")
    ap.add_argument("--note", default="")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "detect_speed.json"))
    args = ap.parse_args(argv)
    cv2.setNumThreads(args.threads)
    os.environ["FERLAB_THREADS"] = str(args.threads)
    fr = frames()
    res = {"what": "face detection and end-to-end speed, BlazeFace vs Haar vs the fer package: one run, same frames",
           "command": "python benchmarks/bench_detect.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu": cpu_info(), "versions": versions(),
           "threads": args.threads, "repeats": args.repeats, "note": args.note, "model": args.model}

    # 1. detection only, 640x480
    f = fr["640x480_1face"]
    dets = {"blazeface-short (one pass: the live path)": make_detector("blazeface-short", threads=args.threads),
            "blazeface-full (one pass)": make_detector("blazeface-full", threads=args.threads),
            "blazeface (still images: the photo search, fast)": make_detector("blazeface", threads=args.threads),
            "blazeface --search thorough (still images: + the full-range model's search)":
                make_detector("blazeface", threads=args.threads, search="thorough"),
            "haar (min face 40, scale 1.1: the former default)": HaarDetector()}
    det_ms = {}
    for name, d in dets.items():
        live = getattr(d, "detect_live", d.detect) if "one pass" in name else d.detect
        det_ms[name] = {"ms": med_ms(lambda d=d, live=live: live(f), args.repeats if "haar" not in name
                                     else max(5, args.repeats // 5)),
                        "faces": len(live(f))}
        print("detect", name, det_ms[name], flush=True)
    haar = det_ms["haar (min face 40, scale 1.1: the former default)"]["ms"]
    for v in det_ms.values():
        v["haar_over_this"] = round(haar / v["ms"], 1)
    res["detection_640x480"] = det_ms

    # 2. end to end
    rec = Recognizer(model=args.model, threads=args.threads)
    e2e = {}
    for name, frame in fr.items():
        stream = StreamRecognizer(rec, every=1, min_hits=1)
        live_ms = med_ms(lambda frame=frame, stream=stream: stream.process(frame), args.repeats)
        n_live = len(stream.process(frame))
        still_ms = med_ms(lambda frame=frame: rec.predict(frame), max(5, args.repeats // 5))
        e2e[name] = {"live_ms_per_frame": live_ms, "live_frames_per_s": round(1000 / live_ms, 1),
                     "live_faces": n_live, "photo_ms": still_ms, "photo_frames_per_s": round(1000 / still_ms, 1),
                     "photo_faces": len(rec.predict(frame))}
        print("e2e", name, e2e[name], flush=True)
    haar_rec = Recognizer(model=args.model, threads=args.threads, detector="haar")
    ms = med_ms(lambda: haar_rec.predict(fr["640x480_1face"]), max(5, args.repeats // 5))
    e2e["640x480_1face"]["haar_pipeline_ms (the former default)"] = ms
    res["end_to_end"] = e2e

    # 3. the fer package
    if args.no_fer:
        res["fer_package"] = {"status": "skipped (--no-fer)"}
    else:
        inst = install_fer(Path(args.fer_venv), 1800)
        res["fer_package"] = {"install": inst}
        if inst.get("status") in ("installed", "already installed"):
            res["fer_package"].update(run_fer(Path(args.fer_venv), fr, max(5, args.repeats // 5), args.threads))
        if res["fer_package"].get("status") == "ok":
            for name in fr:
                if name in res["fer_package"]:
                    e2e[name]["fer_ms_per_frame"] = res["fer_package"][name]["ms_per_frame"]
                    e2e[name]["live_speedup_over_fer"] = round(
                        res["fer_package"][name]["ms_per_frame"] / e2e[name]["live_ms_per_frame"], 1)
        print("fer", res["fer_package"], flush=True)
    res["cpu"]["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    atomic_write(args.out, lambda tmp: Path(tmp).write_text(json.dumps(res, indent=2) + "\n"))
    print("wrote", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
