"""Face detection in scenes shaped like users' (issue 21): photos of 1-24 MP and live webcam frames.

Scenes come from ``photo_scenes.py`` (real faces pasted at known places into busy, face-free backgrounds):

1. **Photos** of 1, 2, 6, 12 and 24 MP (``--photos`` of each size, fixed seeds), 1-20 faces each, sides
   log-uniform in 24-1000 px (at most 0.45 of the photo's shorter side), tilted by up to +-30 degrees,
   "fer" faces (grey FER2013 crops, a third partly occluded) and "person" faces (the astronaut's colour head
   and shoulders); every 4th photo of a size converted to grey (a 2-D array).  Per detector: recall at
   IoU >= 0.5 (and >= 0.3) by face size and by photo size, for each kind and together; false positives a
   photo (detections matched to no face at that IoU); median ms a photo (detection only, on the decoded
   photo); median IoU of the faces matched at 0.5 and the share of those with IoU >= 0.7.
   Detectors: ferlab's ``blazeface`` with each search (``fast``, ``balanced``, ``thorough``); the previous
   implementation (``git show 16206f3:src/ferlab/inference/blazeface.py``, its default ``fast`` search and
   ``thorough``) when git has it; OpenCV's Haar cascade at full resolution (``HaarDetector(min_size=24)``:
   default frontal cascade, scale 1.1, 5 neighbours); MTCNN (facenet-pytorch 2.6.0, ``keep_all=True``,
   default 20 px minimum face) in a side virtualenv with the local torch and a ``torchvision`` shim (its
   ``batched_nms`` is a greedy NMS written here), run by a worker subprocess on the photos saved as .npy.
   The ground truth is ferlab's face frame (the FER2013 crop); Haar's box is smaller (and square) and MTCNN's
   tight (brows to chin, taller than wide: also scored grown to a square of its longer side, ``mtcnn
   (square)``), so recall at IoU >= 0.3 is given for every detector.
2. **The models' band**: recall of one pass of each BlazeFace model at scale 1 by face side in model-input px
   (16-128), "fer" and "person" faces, upright and tilted: what the photo search's pyramid can rely on.
3. **Live** (the webcam case, ``inference.live.LiveFaces``, used by ``StreamRecognizer(still=False)``):
   640x480 frames with one person whose face frame is 40-400 px, moving 3 px a frame over 30 frames: share
   of frames with the face found (IoU >= 0.5) by ``LiveFaces`` and by the former single short-range pass
   (``BlazeFaceAuto.detect_live``); a 1280x720 crowd of ten people (faces of 60-200 px) over 30 frames:
   faces found per frame; end-to-end frames/s of ``StreamRecognizer(Recognizer(threads=2), still=False)``
   for one face at 640x480 (median over ``--fps-frames`` frames after warm-up), with the default and the
   ``fast`` model; and frames until a face that enters is shown (first frame where ``process`` returns it).

CPU model and flags, library versions, load average at start and end, the command line and the date are
recorded with the numbers.

    python benchmarks/bench_photos.py [--photos 4] [--threads 2] [--no-anchors] [--no-old] [--no-band]
                                      [--no-live] [--quick]

Writes ``benchmarks/results/photos.json``.  The default run takes ~10 minutes on 2 cores (MTCNN's install
excluded: ``--mtcnn-venv``, default /tmp/mtcnn-venv, is created on first use); ``--quick`` ~1 minute.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
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
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_inference import install_venv  # noqa: E402
from photo_scenes import background, fer_faces, make_scene, match, paste_fer, paste_person  # noqa: E402

from ferlab.hardware import machine_info  # noqa: E402
from ferlab.inference.blazeface import MODELS_DIR, SEARCHES, BlazeFaceAuto, weighted_nms  # noqa: E402
from ferlab.inference.detect import HaarDetector  # noqa: E402
from ferlab.inference.live import LiveFaces  # noqa: E402
from ferlab.inference.recognizer import Recognizer  # noqa: E402
from ferlab.inference.video import StreamRecognizer  # noqa: E402
from ferlab.io import atomic_write  # noqa: E402

PHOTO_SIZES = {"1MP": (1152, 864), "2MP": (1632, 1224), "6MP": (3000, 2000), "12MP": (4000, 3000),
               "24MP": (6000, 4000)}
SIZE_BINS = [(24, 48), (48, 96), (96, 192), (192, 400), (400, 1000)]
LIVE_SIDES = [40, 48, 64, 80, 96, 128, 200, 300, 400]
#: the crowd of tests/test_photo_search.py (faces that do not cover each other's)
CROWD_SIDES = [60, 75, 90, 110, 130, 150, 170, 200, 64, 100]
OLD_COMMIT = "16206f3"
GREY_EVERY = 4  # every 4th photo of each size is grey
MTCNN_PIP = ["torch==2.13.0", "numpy", "pillow", "requests", "tqdm"]  # requests, tqdm: facenet_pytorch imports them
FACENET_PIP = ["facenet-pytorch==2.6.0", "--no-deps"]


# -- detectors --------------------------------------------------------------------------------------------------

def old_blazeface():
    """The BlazeFaceAuto class of the previous implementation (git show OLD_COMMIT), or None."""
    try:
        src = subprocess.run(["git", "show", f"{OLD_COMMIT}:src/ferlab/inference/blazeface.py"], cwd=ROOT,
                             capture_output=True, text=True, check=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    path = Path(tempfile.mkdtemp()) / "blazeface_old.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("ferlab.inference._blazeface_old", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)  # relative imports resolve in ferlab.inference
    mod.MODELS_DIR = MODELS_DIR  # the same bundled graphs (unchanged since)
    return mod.BlazeFaceAuto


def square(box):
    """(x, y, w, h) -> the square of side max(w, h) about the same centre."""
    x, y, w, h = box
    s = max(w, h)
    return (x + w / 2 - s / 2, y + h / 2 - s / 2, s, s)


# -- MTCNN in a side virtualenv ---------------------------------------------------------------------------------

TV_SHIM = {
    "__init__.py": '"""A shim for facenet-pytorch\'s MTCNN (bench_photos.py): torchvision is not installable here."""\n'
                   "__version__ = '0.0-shim'\n",
    "ops/__init__.py": "from . import boxes  # noqa: F401\n",
    "ops/boxes.py": textwrap.dedent('''
        import torch

        def nms(boxes, scores, iou_threshold):
            """Greedy NMS (torchvision.ops.nms's rule: drop boxes with IoU > threshold with a kept one)."""
            if boxes.numel() == 0:
                return torch.zeros(0, dtype=torch.long)
            b = boxes.double()
            x0, y0, x1, y1 = b.unbind(1)
            area = (x1 - x0).clamp(min=0) * (y1 - y0).clamp(min=0)
            order = torch.argsort(scores, descending=True, stable=True)
            keep = []
            while order.numel():
                i = order[0]
                keep.append(int(i))
                rest = order[1:]
                iw = (torch.minimum(x1[rest], x1[i]) - torch.maximum(x0[rest], x0[i])).clamp(min=0)
                ih = (torch.minimum(y1[rest], y1[i]) - torch.maximum(y0[rest], y0[i])).clamp(min=0)
                inter = iw * ih
                iou = inter / (area[rest] + area[i] - inter).clamp(min=1e-12)
                order = rest[iou <= iou_threshold]
            return torch.tensor(keep, dtype=torch.long)

        def batched_nms(boxes, scores, idxs, iou_threshold):
            """NMS within each category of idxs (torchvision's offset trick)."""
            if boxes.numel() == 0:
                return torch.zeros(0, dtype=torch.long)
            off = idxs.to(boxes) * (boxes.max() + 1)
            return nms(boxes + off[:, None], scores, iou_threshold)
    '''),
    "transforms/__init__.py": "from . import functional  # noqa: F401\n",
    "transforms/functional.py": "",
}

MTCNN_WORKER = textwrap.dedent('''
    import json, sys, time, warnings
    warnings.filterwarnings("ignore")
    import numpy as np, torch
    args = json.loads(sys.argv[1])
    torch.set_num_threads(args["threads"])
    from facenet_pytorch import MTCNN
    import facenet_pytorch
    m = MTCNN(keep_all=True, device="cpu")
    warm = np.zeros((480, 640, 3), np.uint8)
    m.detect(warm)
    print("MTCNNJSON" + json.dumps({"version": getattr(facenet_pytorch, "__version__", "2.6.0"),
                                     "torch": torch.__version__}), flush=True)
    for path in args["files"]:
        img = np.load(path)
        if img.ndim == 2:
            img = np.stack([img] * 3, -1)
        rgb = np.ascontiguousarray(img[:, :, ::-1])
        t0 = time.perf_counter()
        boxes, probs = m.detect(rgb)
        ms = 1000 * (time.perf_counter() - t0)
        out = [] if boxes is None else [[float(v) for v in b] + [float(p)] for b, p in zip(boxes, probs)]
        print("MTCNNJSON" + json.dumps({"file": path, "ms": ms, "boxes": out}), flush=True)
''')


def install_mtcnn(venv: Path, timeout: int) -> dict:
    """facenet-pytorch 2.6.0 (--no-deps) with torch 2.13.0 in ``venv``, and the torchvision shim."""
    info = {"venv": str(venv), "pip": [MTCNN_PIP, FACENET_PIP], "torchvision": "shim (bench_photos.TV_SHIM)"}
    if not install_venv(venv, "import torch, facenet_pytorch", [MTCNN_PIP, FACENET_PIP], timeout, info):
        return info
    try:
        site = subprocess.run([str(venv / "bin" / "python"), "-c",
                               "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              capture_output=True, text=True, check=True, timeout=60).stdout.strip()
        for rel, text in TV_SHIM.items():
            p = Path(site) / "torchvision" / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)
    except (OSError, subprocess.SubprocessError) as e:
        info["status"] = f"failed: torchvision shim: {e}"
    return info


def run_mtcnn(venv: Path, files: list[str], threads: int, timeout: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    with tempfile.TemporaryDirectory() as tmp:
        worker = Path(tmp) / "w.py"
        worker.write_text(MTCNN_WORKER)
        try:
            r = subprocess.run([str(venv / "bin" / "python"), str(worker),
                                json.dumps({"files": files, "threads": threads})],
                               capture_output=True, text=True, timeout=timeout, env=env, cwd=tmp)
            out, err = r.stdout, r.stderr
        except subprocess.TimeoutExpired as e:
            out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
            err = f"took longer than {timeout} s"
    rows = [json.loads(line[9:]) for line in out.splitlines() if line.startswith("MTCNNJSON")]
    if not rows:
        return {"status": "failed", "error": (err.strip().splitlines() or ["no output"])[-1][:300]}
    head, per = rows[0], {r["file"]: r for r in rows[1:]}
    status = "ok" if len(per) == len(files) else f"partial: {len(per)} of {len(files)} photos ({err[-200:]})"
    return {"status": status, "facenet_pytorch": head.get("version"), "torch": head.get("torch"), "per_file": per}


# -- photos -----------------------------------------------------------------------------------------------------

def make_photos(n_per_size: int, faces48: np.ndarray, sizes: dict):
    """Yield (size name, index, image, [Face]) with fixed seeds."""
    for si, (name, (w, h)) in enumerate(sizes.items()):
        for j in range(n_per_size):
            rng = np.random.default_rng(2100 + 100 * si + j)
            n = int(rng.integers(1, 21))
            img, faces = make_scene(rng, faces48, w, h, n, 24, 1000, max_rot=30.0, p_person=0.4,
                                    p_occlude=0.3, start=int(rng.integers(len(faces48))))
            if j % GREY_EVERY == GREY_EVERY - 1:
                img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
            yield name, j, img, faces


def score_photo(faces, boxes) -> tuple[list[dict], int, int]:
    """Per true face: kind, side, IoU of its match at 0.5 (None) and whether matched at 0.3; false positives
    at 0.5 and at 0.3."""
    truth = [f.box for f in faces]
    m5 = {gi: v for gi, _, v in match(truth, boxes, 0.5)}
    m3 = {gi for gi, _, _ in match(truth, boxes, 0.3)}
    rows = [{"kind": f.kind, "side": f.side, "iou": m5.get(i), "hit3": i in m3, "angle": f.angle,
             "occluded": f.occluded} for i, f in enumerate(faces)]
    return rows, len(boxes) - len(m5), len(boxes) - len(m3)


def size_bin(side: float) -> str | None:
    for a, b in SIZE_BINS:
        if a <= side < b or (b == SIZE_BINS[-1][1] and a <= side <= b):
            return f"{a}-{b}"
    return None


def _recall(rows, key="iou") -> dict:
    if not rows:
        return {"recall": None, "n": 0}
    hit = sum((r["iou"] is not None) if key == "iou" else r["hit3"] for r in rows)
    return {"recall": round(hit / len(rows), 4), "n": len(rows)}


def summarize(photos: list[dict], sizes: list[str]) -> dict:
    """photos: [{size, rows, fp5, fp3, ms}] of one detector -> the report."""
    rows = [dict(r, photo=p["size"]) for p in photos for r in p["rows"]]
    out = {}
    for key, label in (("iou", "recall_iou05"), ("hit3", "recall_iou03")):
        rep = {}
        for kind in ("all", "person", "fer"):
            rk = [r for r in rows if kind == "all" or r["kind"] == kind]
            rep[kind] = {"overall": _recall(rk, key),
                         "by_face_size": {f"{a}-{b}": _recall([r for r in rk if size_bin(r["side"]) == f"{a}-{b}"],
                                                              key) for a, b in SIZE_BINS},
                         "by_photo_size": {s: _recall([r for r in rk if r["photo"] == s], key) for s in sizes},
                         "faces_ge48": _recall([r for r in rk if r["side"] >= 48], key),
                         "faces_ge96": _recall([r for r in rk if r["side"] >= 96], key)}
        out[label] = rep
    out["recall_iou05_tilted_over_15deg"] = _recall([r for r in rows if abs(r["angle"]) > 15])
    out["recall_iou05_occluded"] = _recall([r for r in rows if r["occluded"]])
    ious = [r["iou"] for r in rows if r["iou"] is not None]
    out["median_iou_matched"] = round(statistics.median(ious), 3) if ious else None
    out["share_matched_iou_ge_0.7"] = round(sum(v >= 0.7 for v in ious) / len(ious), 3) if ious else None
    out["false_positives_per_photo"] = {"iou05": round(sum(p["fp5"] for p in photos) / len(photos), 3),
                                        "iou03": round(sum(p["fp3"] for p in photos) / len(photos), 3),
                                        "iou05_by_photo_size": {s: round(statistics.mean(
                                            [p["fp5"] for p in photos if p["size"] == s]), 3)
                                            for s in sizes if any(p["size"] == s for p in photos)}}
    out["ms_per_photo"] = {s: round(statistics.median([p["ms"] for p in photos if p["size"] == s]), 1)
                           for s in sizes if any(p["size"] == s for p in photos)}
    out["ms_per_photo"]["all"] = round(statistics.median([p["ms"] for p in photos]), 1)
    return out


def timed(fn, repeats: int, slow_ms: float = 1500.0):
    """(result of the first call, median ms of ``repeats`` calls after it; one call after it when the first
    took over ``slow_ms``: bounds the run's time on a loaded machine)."""
    t0 = time.perf_counter()
    res = fn()
    if 1000 * (time.perf_counter() - t0) > slow_ms:
        repeats = min(repeats, 1)
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(1000 * (time.perf_counter() - t0))
    return res, statistics.median(ts) if ts else None


def bench_photos(args, sizes: dict) -> dict:
    faces48 = fer_faces(400)
    dets: dict = {f"blazeface {s}": (lambda img, s=s, d=BlazeFaceAuto(threads=args.threads): d.detect(img, search=s))
                  for s in SEARCHES}
    notes = {}
    if not args.no_old:
        Old = old_blazeface()
        if Old is None:
            notes["old"] = f"skipped: git show {OLD_COMMIT} failed"
        else:
            for s in ("fast", "thorough"):
                d = Old(threads=args.threads, search=s)
                dets[f"blazeface {s} (before issue 21, {OLD_COMMIT})"] = lambda img, d=d: d.detect(img)
    haar = HaarDetector(min_size=24) if not args.no_anchors else None
    per_det: dict = {k: [] for k in dets}
    if haar is not None:
        per_det["haar (full resolution)"] = []
    tmpdir = Path(tempfile.mkdtemp(prefix="bench_photos_"))
    saved = []  # (file, size, faces)
    n_faces = n_grey = 0
    t_all = time.perf_counter()
    for name, j, img, faces in make_photos(args.photos, faces48, sizes):
        n_faces += len(faces)
        n_grey += img.ndim == 2
        line = [f"{name}#{j} {len(faces)} faces{' grey' if img.ndim == 2 else ''}:"]
        for dname, fn in dets.items():
            found, ms = timed(lambda fn=fn, img=img: fn(img), args.repeats)
            rows, fp5, fp3 = score_photo(faces, [d.box for d in found])
            per_det[dname].append({"size": name, "rows": rows, "fp5": fp5, "fp3": fp3, "ms": ms})
            line.append(f"{dname.split(' (')[0].replace('blazeface ', 'bf-')} {sum(r['iou'] is not None for r in rows)}"
                        f"/{fp5}fp/{ms:.0f}ms")
        if haar is not None:
            t0 = time.perf_counter()
            found = haar.detect(img)
            ms = 1000 * (time.perf_counter() - t0)
            rows, fp5, fp3 = score_photo(faces, [d.box for d in found])  # square already
            per_det["haar (full resolution)"].append({"size": name, "rows": rows, "fp5": fp5, "fp3": fp3, "ms": ms})
            line.append(f"haar {sum(r['iou'] is not None for r in per_det['haar (full resolution)'][-1]['rows'])}"
                        f"/{per_det['haar (full resolution)'][-1]['fp5']}fp/{ms:.0f}ms")
            f = tmpdir / f"{name}_{j}.npy"
            np.save(f, img)
            saved.append((str(f), name, faces))
        print(" ".join(line), flush=True)
    print(f"photos: {time.perf_counter() - t_all:.0f} s", flush=True)

    mt = {"status": "skipped (--no-anchors)"}
    if not args.no_anchors:
        inst = install_mtcnn(Path(args.mtcnn_venv), 1800)
        mt = {"install": inst}
        if inst.get("status") in ("installed", "already installed"):
            t0 = time.perf_counter()
            r = run_mtcnn(Path(args.mtcnn_venv), [f for f, _, _ in saved], args.threads, args.mtcnn_timeout)
            print(f"mtcnn: {time.perf_counter() - t0:.0f} s, {r['status']}", flush=True)
            per = r.pop("per_file", {})
            mt.update(r)
            if per:
                per_det["mtcnn (tight box)"], per_det["mtcnn (square)"] = [], []
                for f, name, faces in saved:
                    if f not in per:
                        continue
                    boxes = [(b[0], b[1], b[2] - b[0], b[3] - b[1]) for b in per[f]["boxes"]]
                    for dname, tf in (("mtcnn (tight box)", lambda b: b), ("mtcnn (square)", square)):
                        rows, fp5, fp3 = score_photo(faces, [tf(b) for b in boxes])
                        per_det[dname].append({"size": name, "rows": rows, "fp5": fp5, "fp3": fp3,
                                               "ms": per[f]["ms"]})
        for f, _, _ in saved:
            Path(f).unlink(missing_ok=True)
    tmpdir.rmdir() if not any(tmpdir.iterdir()) else None
    faces_by = {}
    for det_rows in list(per_det.values())[:1]:
        for kind in ("person", "fer"):
            faces_by[kind] = {f"{a}-{b}": sum(1 for p in det_rows for r in p["rows"] if r["kind"] == kind
                                              and size_bin(r["side"]) == f"{a}-{b}") for a, b in SIZE_BINS}
    return {"photos_per_size": args.photos, "photo_sizes": {k: list(v) for k, v in sizes.items()},
            "faces": n_faces, "faces_by_kind_and_size": faces_by,
            "grey_photos": n_grey,
            "detectors": {k: summarize(v, list(sizes)) for k, v in per_det.items() if v},
            "mtcnn": mt, "notes": notes}


# -- the models' band ------------------------------------------------------------------------------------------

BAND_SIDES = [16, 20, 24, 32, 48, 64, 96, 128]


def bench_band(args, faces48: np.ndarray) -> dict:
    """Recall of one pass of each BlazeFace model at scale 1 (``run_pass``: plausible detections, then weighted
    NMS) by face side in model-input pixels, in 640x480 frames (six "fer" faces or two "person" faces a
    frame), upright or tilted by +-20 degrees.  Where the photo search's pyramid (``FACE_IN_MIN``, ``PYRAMID_RANGE``) finds
    what it is built to find."""
    det = BlazeFaceAuto(threads=args.threads)
    n_frames = {"fer": args.band_frames, "person": args.band_frames}
    out = {}
    for kind in ("fer", "person"):
        for ang in (0, 20):
            rows = {}
            for side in BAND_SIDES:
                hit = {"full": [0, 0], "short": [0, 0]}
                n = 0
                for t in range(n_frames[kind]):
                    img = background(np.random.default_rng(500 + t), 640, 480)
                    truth = []
                    # fer: six faces, rows alternating (200 px apart in a row); person: two, whose head-and-
                    # shoulders patches (2.6 face sides wide) do not reach each other's face
                    spots = ([(70 + 100 * k, 110 + 240 * (k % 2)) for k in range(6)] if kind == "fer"
                             else [(160, 110), (480, 350)])
                    for k, (cx, cy) in enumerate(spots):
                        a = ang * (1 if k % 2 else -1)
                        if kind == "fer":
                            paste_fer(img, faces48[(t * 6 + k) % len(faces48)], cx, cy, side, a)
                        else:
                            paste_person(img, cx, cy, side, a)
                        truth.append((cx - side / 2, cy - side / 2, side, side))
                    n += len(truth)
                    for r, m in (("full", det.full), ("short", det.short)):
                        dec, sc = m.run_pass(img, 1.0)
                        fr, _ = weighted_nms(m.framed(dec), sc, m.nms_iou)
                        boxes = [(b[0], b[1], b[2] - b[0], b[3] - b[1]) for b in fr]
                        hit[r][0] += len(match(truth, boxes, 0.5))
                        hit[r][1] += len(match(truth, boxes, 0.3))
                rows[str(side)] = {f"{r}_iou05": round(h[0] / n, 3) for r, h in hit.items()}
                rows[str(side)].update({f"{r}_iou03": round(h[1] / n, 3) for r, h in hit.items()})
                rows[str(side)]["faces"] = n
            out[f"{kind}, tilt {ang}"] = rows
            print("band", kind, ang, {k: (v["full_iou05"], v["short_iou05"]) for k, v in rows.items()}, flush=True)
    return {"what": "recall of one pass of each model at scale 1 by face side in model-input px (full_/short_: "
                    "the full- and short-range model; iou05/iou03: the matching IoU)", "by_kind": out}


# -- live -------------------------------------------------------------------------------------------------------

def live_person_frames(side: int, n: int, seed: int = 3, dx: int = 3, dy: int = 1):
    """640x480 frames with one person whose face frame is ``side`` px, moving (dx, dy) px a frame."""
    bg = background(np.random.default_rng(seed), 640, 480)
    out = []
    for f in range(n):
        img = bg.copy()
        cx = 290 + dx * f
        cy = (140 if side < 300 else 240) + dy * ((f % 10) - 5)
        paste_person(img, cx, cy, side)
        out.append((img, (cx - side / 2, cy - side / 2, side, side)))
    return out


def crowd_frames(n: int, seed: int = 4):
    bg = background(np.random.default_rng(seed), 1280, 720)
    out = []
    for f in range(n):
        img = bg.copy()
        truth = []
        for i, s in enumerate(CROWD_SIDES):
            cx = 130 + 250 * (i % 5) + 2 * f  # all the same way: no one's patch covers another's face
            cy = 130 + 320 * (i // 5) + (f % 6)
            paste_person(img, cx, cy, s)
            truth.append((cx - s / 2, cy - s / 2, s, s))
        out.append((img, truth))
    return out


def bench_live(args) -> dict:
    det = BlazeFaceAuto(threads=args.threads)
    n = args.live_frames
    res = {"frames": n, "one_person_640x480": {}}
    for side in LIVE_SIDES:
        frames = live_person_frames(side, n)
        live = LiveFaces()
        hits_live = hits_one = 0
        ts = []
        for img, truth in frames:
            t0 = time.perf_counter()
            found = live(det, img)
            ts.append(1000 * (time.perf_counter() - t0))
            hits_live += bool(match([truth], [d.box for d in found], 0.5))
            hits_one += bool(match([truth], [d.box for d in det.detect_live(img)], 0.5))
        res["one_person_640x480"][str(side)] = {"live_faces": round(hits_live / n, 3),
                                                "single_short_pass": round(hits_one / n, 3),
                                                "live_faces_median_ms": round(statistics.median(ts), 2)}
        print("live", side, res["one_person_640x480"][str(side)], flush=True)
    frames = crowd_frames(n)
    live = LiveFaces()
    counts, one, ts = [], [], []
    for img, truth in frames:
        t0 = time.perf_counter()
        found = live(det, img)
        ts.append(1000 * (time.perf_counter() - t0))
        counts.append(len(match(truth, [d.box for d in found], 0.5)))
        one.append(len(match(truth, [d.box for d in det.detect_live(img)], 0.5)))
    res["crowd_1280x720_10_people"] = {
        "face_sides": CROWD_SIDES, "live_faces_per_frame": counts,
        "live_faces_median": statistics.median(counts), "live_faces_min_after_frame_2": min(counts[2:]),
        "single_short_pass_median": statistics.median(one), "live_faces_median_ms": round(statistics.median(ts), 2)}
    print("crowd", res["crowd_1280x720_10_people"], flush=True)

    # face-free webcam frames: false faces
    empty = {}
    rec = Recognizer(threads=args.threads)
    for seed in range(3, 11):
        bg = background(np.random.default_rng(seed), 640, 480)
        live, stream = LiveFaces(), StreamRecognizer(rec, still=False)
        boxes = [len(live(det, bg)) for _ in range(n)]
        shown = [len(stream.process(bg)) for _ in range(n)]
        empty[str(seed)] = {"frames_with_a_false_face_live_faces": round(sum(b > 0 for b in boxes) / n, 3),
                            "max_false_faces_a_frame": max(boxes),
                            "frames_showing_a_false_face_stream": round(sum(v > 0 for v in shown) / n, 3),
                            "photo_search_balanced": len(det.detect(bg))}
    res["empty_640x480_backgrounds"] = {
        "note": "the backgrounds of the live scenes (photo_scenes.background, seeds 3-10) with no face, the same "
                "frame n times: LiveFaces' boxes, what StreamRecognizer(still=False) shows, and the photo search",
        "by_seed": empty,
        "share_of_frames_with_a_false_face": round(statistics.mean(
            v["frames_with_a_false_face_live_faces"] for v in empty.values()), 3)}
    print("empty", empty, flush=True)

    # end to end
    cyc = live_person_frames(100, 60, seed=7, dx=2)  # a background with no false positive (see empty_frames)
    cyc = cyc + cyc[::-1]  # back and forth: no jump
    e2e = {}
    for model in ("default", "fast"):
        rec = Recognizer(model, threads=args.threads)
        stream = StreamRecognizer(rec, still=False)
        for img, _ in cyc[:30]:
            stream.process(img)
        ts, shown = [], 0
        for k in range(args.fps_frames):
            img = cyc[k % len(cyc)][0]
            t0 = time.perf_counter()
            faces = stream.process(img)
            ts.append(time.perf_counter() - t0)
            shown += len(faces) == 1
        med = statistics.median(ts)
        e2e[model] = {"model": rec.card.get("name", model), "frames": args.fps_frames, "median_ms": round(1000 * med, 2),
                      "frames_per_s_median": round(1 / med, 1), "frames_per_s_mean": round(len(ts) / sum(ts), 1),
                      "p90_ms": round(1000 * float(np.percentile(ts, 90)), 2),
                      "share_of_frames_with_the_one_face": round(shown / args.fps_frames, 3)}
        print("e2e", model, e2e[model], flush=True)
    res["end_to_end_640x480_one_face_100px"] = e2e

    # a face that enters
    rec = Recognizer(threads=args.threads)
    enter = {}
    for side in (48, 80, 160):
        frames = live_person_frames(side, 30, seed=6)
        per_k = {}
        for k in (8, 9, 10, 11):
            stream = StreamRecognizer(rec, still=False)
            empty = background(np.random.default_rng(6), 640, 480)
            first = None
            for f in range(k + 25):
                img = empty if f < k else frames[f - k][0]
                faces = stream.process(img)
                if f >= k and first is None and match([frames[f - k][1]], [fc.box for fc in faces], 0.3):
                    first = f
            per_k[str(k)] = None if first is None else first - k
        enter[str(side)] = {"frames_after_entry_by_entry_frame": per_k,
                            "max_frames": None if None in per_k.values() else max(per_k.values())}
    res["face_entering"] = {"note": "a person appears at frame k (k = 8-11: every phase of the 4-frame search); "
                                    "frames from k until StreamRecognizer(still=False, min_hits=3) returns the face "
                                    "(0 = shown in the frame it enters)", "by_face_side": enter}
    print("enter", enter, flush=True)
    return res


def versions() -> dict:
    import onnxruntime

    return {"python": platform.python_version(), "numpy": np.__version__, "opencv": cv2.__version__,
            "onnxruntime": onnxruntime.__version__}


def tables(d: dict) -> str:
    """The markdown tables of benchmarks/README.md's "Face detection in users' scenes" from a photos.json."""
    ph, out = d["photos"], []
    det = ph["detectors"]
    bins = ["24-48", "48-96", "96-192", "192-400", "400-1000"]
    for kind in ("person", "fer"):
        n = ph["faces_by_kind_and_size"][kind]
        out.append(f"| {kind} faces ({sum(n.values())}) | " + " | ".join(f"{b} px ({n[b]})" for b in bins)
                   + " | >= 48 px | >= 96 px |")
        out.append("| --- |" + " ---: |" * (len(bins) + 2))
        for name, v in det.items():
            r5, r3 = v["recall_iou05"][kind], v["recall_iou03"][kind]
            cells = [f"{r5['by_face_size'][b]['recall']:.0%} ({r3['by_face_size'][b]['recall']:.0%})" for b in bins]
            out.append(f"| {name} | " + " | ".join(cells) +
                       f" | {r5['faces_ge48']['recall']:.1%} | {r5['faces_ge96']['recall']:.1%} |")
        out.append("")
    sizes = list(next(iter(det.values()))["ms_per_photo"])
    sizes = [s for s in sizes if s != "all"]
    out.append("| all faces | false positives a photo @ 0.5 (@ 0.3) | median IoU | IoU >= 0.7 | "
               + " | ".join(f"ms, {s}" for s in sizes) + " |")
    out.append("| --- |" + " ---: |" * (3 + len(sizes)))
    for name, v in det.items():
        fp = v["false_positives_per_photo"]
        out.append(f"| {name} | {fp['iou05']:.2f} ({fp['iou03']:.2f}) | {v['median_iou_matched']:.3f} | "
                   f"{v['share_matched_iou_ge_0.7']:.0%} | " + " | ".join(f"{v['ms_per_photo'][s]:.0f}" for s in sizes)
                   + " |")
    live = d.get("live", {}).get("one_person_640x480")
    if live:
        out += ["", "| face frame (px) | " + " | ".join(live) + " |", "| --- |" + " ---: |" * len(live),
                "| `LiveFaces` (the live path) | " + " | ".join(f"{v['live_faces']:.0%}" for v in live.values()) + " |",
                "| one short-range pass (before) | " + " | ".join(f"{v['single_short_pass']:.0%}"
                                                           for v in live.values()) + " |",
                "| `LiveFaces` median ms a frame | " + " | ".join(f"{v['live_faces_median_ms']:.1f}"
                                                          for v in live.values()) + " |"]
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tables", metavar="JSON", help="print the README's markdown tables of a photos.json and exit")
    ap.add_argument("--photos", type=int, default=4, help="photos of each size (default 4)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3, help="timed detections a photo for ferlab (median)")
    ap.add_argument("--live-frames", type=int, default=30)
    ap.add_argument("--fps-frames", type=int, default=400)
    ap.add_argument("--no-anchors", action="store_true", help="skip Haar and MTCNN")
    ap.add_argument("--no-old", action="store_true", help=f"skip the previous implementation ({OLD_COMMIT})")
    ap.add_argument("--no-live", action="store_true")
    ap.add_argument("--no-band", action="store_true", help="skip the models' band by face side")
    ap.add_argument("--band-frames", type=int, default=12, help="640x480 frames a cell of the band")
    ap.add_argument("--quick", action="store_true", help="a 1-minute smoke run (1 photo of 1-6 MP, few frames)")
    ap.add_argument("--mtcnn-venv", default="/tmp/mtcnn-venv")
    ap.add_argument("--mtcnn-timeout", type=int, default=900)
    ap.add_argument("--note", default="")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "photos.json"))
    args = ap.parse_args(argv)
    if args.tables:
        print(tables(json.loads(Path(args.tables).read_text())))
        return 0
    sizes = PHOTO_SIZES
    if args.quick:
        sizes = {k: v for k, v in PHOTO_SIZES.items() if k in ("1MP", "2MP", "6MP")}
        args.photos, args.repeats, args.live_frames, args.fps_frames, args.band_frames = 1, 1, 8, 60, 3
        if args.out == ap.get_default("out"):
            args.out = str(Path(tempfile.gettempdir()) / "photos_quick.json")
    cv2.setNumThreads(args.threads)
    os.environ["FERLAB_THREADS"] = str(args.threads)
    t0 = time.perf_counter()
    res = {"what": "face detection in users' scenes (issue 21): photos of 1-24 MP with 1-20 faces of 24-1000 px, "
                   "live 640x480 / 1280x720 frames; ferlab's BlazeFace searches vs Haar and MTCNN, one run",
           "command": "python benchmarks/bench_photos.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "cpu": machine_info(args.threads), "versions": versions(), "threads": args.threads,
           "load_average_at_start": [round(v, 2) for v in os.getloadavg()], "note": args.note,
           "notes": [
               "ground truth: ferlab's face frame (the FER2013 crop, photo_scenes.py); a detection is a true "
               "positive when its box has IoU >= 0.5 with a face not yet matched (greedy, best pairs first); "
               "every other detection is a false positive",
               "Haar's box (the raw detectMultiScale box) and MTCNN's tight box frame the face differently from "
               "ferlab's FER framing (smaller; MTCNN's taller than wide): recall at IoU >= 0.3 is reported for "
               "every detector so the anchors are not penalised for framing, and both anchors are also scored "
               "with their box grown to a square of its longer side ('(square)')",
               "median_iou_matched and share_matched_iou_ge_0.7 are over the faces matched at IoU >= 0.5",
               "ms_per_photo: detection only, on the decoded photo (numpy array), median per photo size; ferlab: "
               "median of --repeats calls after a first one; Haar and MTCNN: one call a photo (MTCNN after a "
               "warm-up call in its worker); all with --threads threads (ONNX Runtime, OpenCV, torch)",
               "'fer' faces: FER2013 PrivateTest crops (grey, 48 px enlarged: blurry at large sides), a third "
               "occluded; 'person' faces: the astronaut's colour head and shoulders; every 4th photo of a size grey",
           ]}
    print(json.dumps(res["cpu"]), flush=True)
    res["photos"] = bench_photos(args, sizes)
    if not args.no_band:
        res["model_band"] = bench_band(args, fer_faces(200))
    if not args.no_live:
        res["live"] = bench_live(args)
    res["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    res["wall_s"] = round(time.perf_counter() - t0, 1)
    atomic_write(args.out, lambda tmp: Path(tmp).write_text(json.dumps(res, indent=2) + "\n"))
    print("wrote", args.out, f"in {res['wall_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
