"""Batch inference throughput: one process vs the local pool vs Ray (1 and 2 nodes on this machine).

    python benchmarks/bench_batch.py [--crops 2000] [--photos 300] [--video-seconds 12] [--repeats 3]

Three workloads, made here: 48x48 PNG crops (FER2013 sample rows: decode + classify, no detection),
640x480 JPEG photos with one face each (decode + detect + crop + classify) and one 640x480 25 fps video
(frames/s; split into 2 s segments so that every worker gets a share).  Each is run by ``ferlab batch``
(a fresh process and a fresh output folder every time) with

- ``one process``: ``--workers 1`` (today's ``ferlab predict`` path: ONNX Runtime's own threads);
- ``local pool``: ``--workers 2`` (a process each, one ONNX Runtime thread each);
- ``ray 1 node``: one ``ray start --head --num-cpus 3`` node, 2 actors (one logical CPU stays free for
  Ray Data's own tasks);
- ``ray 2 nodes``: head + second node, ``--num-cpus 2`` each, 2 actors (one per node).

The Ray nodes run in their own network namespace (``unshare -n``), on 127.0.0.1 only.  The time is the
job's own ``seconds`` (planning, worker or actor start-up, model loading, inference and commits: what a
user waits for), the median of ``--repeats`` runs.  Memory per worker: the peak resident set of each pool
worker or Ray actor process, sampled every 0.2 s.  Writes benchmarks/results/batch.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FERLAB_SHARED", ROOT.parent / "shared" / "datasets"))
RAY = str(Path(sys.executable).with_name("ray"))
PORT = 6391


# -- data ----------------------------------------------------------------------------------------------------

def make_data(root: Path, n_crops: int, n_photos: int, video_seconds: float) -> dict:
    import csv

    import cv2

    crops = root / "crops"
    crops.mkdir(parents=True)
    with open(SHARED / "fer2013" / "fer2013_sample.csv") as f:
        rows = [np.array(r["pixels"].split(), np.uint8).reshape(48, 48) for r in csv.DictReader(f)]
    for i in range(n_crops):
        img = rows[i % len(rows)]
        img = img[:, ::-1] if (i // len(rows)) % 2 else img
        cv2.imwrite(str(crops / f"c{i:05d}.png"), np.ascontiguousarray(np.roll(img, i // (2 * len(rows)), 1)))
    photos = root / "photos"
    photos.mkdir()
    face = cv2.imread(str(ROOT / "examples" / "astronaut.jpg"))
    rng = np.random.default_rng(0)
    for i in range(n_photos):  # the astronaut photo at several scales and places on a textured background
        bg = cv2.GaussianBlur(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8), (0, 0), 6)
        s = float(rng.uniform(0.45, 0.9))
        f = cv2.resize(face, None, fx=s, fy=s)
        h, w = f.shape[:2]
        h, w = min(h, 480), min(w, 640)
        y, x = int(rng.integers(0, 481 - h)), int(rng.integers(0, 641 - w))
        bg[y:y + h, x:x + w] = f[:h, :w]
        cv2.imwrite(str(photos / f"p{i:04d}.jpg"), bg, [cv2.IMWRITE_JPEG_QUALITY, 90])
    video = root / "video" / "talk.mp4"
    video.parent.mkdir()
    vw = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (640, 480))
    base = cv2.resize(face, (640, 480))
    n_frames = int(round(video_seconds * 25))
    for i in range(n_frames):
        vw.write(np.roll(base, 3 * i, axis=1))
    vw.release()
    return {"crops": crops, "photos": photos, "video": video.parent, "video_frames": n_frames}


def load_or_make_data(root: Path, n_crops: int, n_photos: int, video_seconds: float) -> dict:
    """``make_data`` into ``root``, or the data already there when it was made with the same sizes."""
    spec = {"crops": n_crops, "photos": n_photos, "video_seconds": video_seconds}
    stamp = root / "spec.json"
    if stamp.exists() and json.loads(stamp.read_text()).get("spec") == spec:
        return {**{k: Path(v) for k, v in json.loads(stamp.read_text())["paths"].items()},
                "video_frames": int(round(video_seconds * 25))}
    shutil.rmtree(root, ignore_errors=True)
    data = make_data(root, n_crops, n_photos, video_seconds)
    stamp.write_text(json.dumps({"spec": spec, "paths": {k: str(v) for k, v in data.items() if k != "video_frames"}}))
    return data


# -- machine ---------------------------------------------------------------------------------------------------

def cpu_info() -> dict:
    from ferlab.hardware import machine_info

    return machine_info(libraries=("pyarrow", "ray", "Pillow"))


def git_state() -> dict:
    """The commit measured, and the files that differed from it (work in progress of this checkout)."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"commit": git("rev-parse", "HEAD").strip() or None,
            "uncommitted": [ln[3:] for ln in git("status", "--porcelain", "--untracked-files=no").splitlines()]}


def versions() -> dict:
    out = {"python": platform.python_version()}
    for mod in ("ferlab", "onnxruntime", "cv2", "numpy", "PIL", "pyarrow", "ray"):
        try:
            m = __import__(mod)
            out[mod] = getattr(m, "__version__", "?")
        except ImportError:
            out[mod] = None
    return out


# -- memory sampling -------------------------------------------------------------------------------------------

def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(d.name))
            except (OSError, IndexError, ValueError):
                pass
    return out


class PeakRSS(threading.Thread):
    """Samples the resident memory of the processes ``find()`` returns; keeps each one's peak."""

    def __init__(self, find):
        super().__init__(daemon=True)
        self.find, self.peak, self.stop_evt = find, {}, threading.Event()

    def run(self) -> None:
        while not self.stop_evt.is_set():
            for pid in self.find():
                self.peak[pid] = max(self.peak.get(pid, 0.0), _rss_mb(pid))
            time.sleep(0.2)

    def result(self) -> list[float]:
        self.stop_evt.set()
        self.join(timeout=5)
        return sorted(round(v, 1) for v in self.peak.values() if v > 0)


# -- a Ray cluster in its own network namespace -----------------------------------------------------------------

class Cluster:
    def __init__(self, cpus_per_node: list[int]):
        self.cpus = cpus_per_node
        # Ray starts its worker processes (the actors) at nice 15 (RAY_worker_niceness); the pool's workers run
        # at nice 0.  On a machine shared with other work nice 15 starves the actors (a 2,000-crop job took
        # 30-36 s instead of 7 s here beside two nice-5/8 training runs): compare the engines at one priority.
        self.env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_BACKEND_LOG_LEVEL": "error",
                    "RAY_worker_niceness": "0",
                    # a ~/.ray/auth_token on this machine (a private ray.init() writes one) turns on token
                    # authentication for every `ray start`: this cluster lives on a loopback of its own
                    "RAY_AUTH_MODE": "disabled"}
        self.temp = f"/tmp/ferlab-bench-ray-{os.getpid()}"

    def __enter__(self):
        self.holder = subprocess.Popen(["unshare", "-n", "sh", "-c", "ip link set lo up && exec sleep 100000"])
        net = f"/proc/{self.holder.pid}/ns/net"
        for _ in range(300):
            if os.readlink(net) != os.readlink("/proc/self/ns/net") and "UP" in subprocess.run(
                    ["nsenter", f"--net={net}", "--", "ip", "-o", "link", "show", "lo"], capture_output=True,
                    text=True).stdout:
                break
            time.sleep(0.1)
        self.ns, self.prefix = os.readlink(net), ["nsenter", f"--net={net}", "--"]
        common = ["--node-ip-address", "127.0.0.1", "--object-store-memory", str(100 * 2**20), "--disable-usage-stats"]
        try:
            for i, n in enumerate(self.cpus):
                args = (["--head", "--port", str(PORT), "--include-dashboard", "false", "--temp-dir", self.temp]
                        if i == 0 else ["--address", f"127.0.0.1:{PORT}"])
                # `ray start` gives up after a fixed 30 s wait for its node to register, which a loaded
                # machine can exceed although the node comes up: its exit code is not trusted, the cluster is
                subprocess.run([*self.prefix, RAY, "start", *args, "--num-cpus", str(n), *common],
                               capture_output=True, env=self.env, timeout=900)
                self.wait_nodes(i + 1)
        except BaseException:
            self.__exit__()
            raise
        return self

    def wait_nodes(self, n: int, timeout: float = 600) -> None:
        code = (f"import time, ray; ray.init(address='127.0.0.1:{PORT}', logging_level='ERROR'); "
                f"t = time.time() + {timeout}\n"
                f"while sum(x['Alive'] for x in ray.nodes()) < {n} and time.time() < t: time.sleep(1)\n"
                "print('NODES', sum(x['Alive'] for x in ray.nodes()))")
        r = subprocess.run([*self.prefix, sys.executable, "-c", code], capture_output=True, text=True,
                           env=self.env, timeout=timeout + 600)
        if f"NODES {n}" not in r.stdout:
            raise RuntimeError(f"the Ray cluster did not reach {n} node(s): {r.stdout[-300:]} {r.stderr[-800:]}")

    def pids(self, needle: str = "") -> list[int]:
        out = []
        for d in Path("/proc").iterdir():
            if d.name.isdigit() and int(d.name) != self.holder.pid:
                try:
                    if os.readlink(d / "ns" / "net") == self.ns and needle in (d / "cmdline").read_bytes().decode(
                            errors="replace"):
                        out.append(int(d.name))
                except OSError:
                    pass
        return out

    def __exit__(self, *exc):
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in self.pids():
                try:
                    os.kill(pid, sig)
                except OSError:
                    pass
            for _ in range(75):
                if not self.pids():
                    break
                time.sleep(0.2)
        self.holder.kill()
        self.holder.wait()
        shutil.rmtree(self.temp, ignore_errors=True)


# -- runs ------------------------------------------------------------------------------------------------------

def run_job(inputs: Path, workdir: Path, extra: list[str], prefix: list[str] = (), env=None, find_workers=None) -> dict:
    out = Path(tempfile.mkdtemp(dir=workdir)) / "out"
    cmd = [*prefix, sys.executable, "-m", "ferlab.cli", "batch", str(inputs), "--out", str(out), "--model", MODEL,
           "-q", "--segment-seconds", "2", *extra]
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    mon = PeakRSS(find_workers(p.pid) if find_workers else (lambda: _children(p.pid)))
    mon.start()
    stdout, stderr = p.communicate(timeout=1800)
    mem = mon.result()
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {stderr[-2000:]}")
    s = json.loads((out / "_summary.json").read_text())
    shutil.rmtree(out.parent, ignore_errors=True)
    return {"seconds": s["seconds"], "units": s["processed"], "faces": s["faces"], "errors": s["errors"],
            "first_result_s": s.get("first_result_s"), "steady_units_per_s": s.get("steady_units_per_s"),
            "steady_frames_per_s": s.get("steady_frames_per_s"), "worker_peak_rss_mb": mem,
            "ray_connect_s": s.get("ray_connect_s"), "ray_probe_wait_s": s.get("ray_probe_wait_s")}


def _median(values):
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 2) if values else None


def measure(name: str, data: dict, workdir: Path, repeats: int, extra: list[str], kinds=("crops", "photos", "video"),
            **kw) -> dict:
    """End to end: items / the job's seconds (median of the repeats).  Steady state: the rate from the
    job's first result to its last (``steady_*_per_s`` of the summary), after start-up (``first_result_s``:
    connecting, planning, starting the workers, loading the model, the first task)."""
    res = {}
    for kind in kinds:
        runs = [run_job(data[kind], workdir, extra, **kw) for _ in range(repeats)]
        secs = [r["seconds"] for r in runs]
        med = statistics.median(secs)
        n = data["video_frames"] if kind == "video" else runs[0]["units"]
        mems = [m for r in runs for m in r["worker_peak_rss_mb"]]
        steady = [r["steady_frames_per_s" if kind == "video" else "steady_units_per_s"] for r in runs]
        res[kind] = {"per_s": round(n / med, 1), "unit": "frames/s" if kind == "video" else "inputs/s",
                     "median_seconds": round(med, 2), "seconds": secs, "items": n, "faces": runs[0]["faces"],
                     "errors": runs[0]["errors"],
                     "first_result_s": [r["first_result_s"] for r in runs],
                     "first_result_s_median": _median([r["first_result_s"] for r in runs]),
                     "steady_per_s": steady, "steady_per_s_median": _median(steady),
                     "steady_note": "from 20% to 90% of the units",
                     **({"ray_connect_s_median": _median([r["ray_connect_s"] for r in runs]),
                         "ray_probe_wait_s_median": _median([r["ray_probe_wait_s"] for r in runs])}
                        if runs[0]["ray_connect_s"] is not None else {}),
                     "worker_peak_rss_mb_median": round(statistics.median(mems), 1) if mems else None,
                     "workers_seen": len(runs[-1]["worker_peak_rss_mb"])}
        r = res[kind]
        r["fixed_seconds"] = fixed_seconds(r)
        print(f"{name:>12} {kind:>6}: {r['per_s']:8.1f} {r['unit']} end to end (median of {secs} s); "
              f"first result {r['first_result_s_median']} s, steady {r['steady_per_s_median']} {r['unit']}, fixed "
              f"{r['fixed_seconds']} s; "
              f"worker RSS {r['worker_peak_rss_mb_median']} MB", flush=True)
    return res


def stage_times(data: dict, n: int = 40) -> dict:
    """Milliseconds per item of each step, one thread, in this process: decode, detect, crop + classify,
    and the commit of the rows (Parquet write + manifest record)."""
    import cv2

    from ferlab.batch.inputs import gather_paths, plan_units
    from ferlab.batch.store import OutputStore, describe_model
    from ferlab.batch.work import BatchOptions, UnitWorker

    cv2.setNumThreads(1)
    w = UnitWorker(BatchOptions(model=MODEL, threads=1))
    rec = w.rec
    out = {}
    for kind in ("crops", "photos"):
        paths = sorted(data[kind].iterdir())[:n]
        t = {"decode": 0.0, "detect": 0.0, "crop_classify": 0.0}
        for p in paths:
            t0 = time.perf_counter()
            img = rec.load(str(p))
            t1 = time.perf_counter()
            dets = [] if max(img.shape[:2]) <= 64 else rec.detect(img)
            t2 = time.perf_counter()
            w.predict_batch([img], whole=False)  # includes its own detection: subtract the detect time
            t3 = time.perf_counter()
            t["decode"] += t1 - t0
            t["detect"] += t2 - t1
            t["crop_classify"] += max(0.0, (t3 - t2) - (t2 - t1))
            del dets
        out[kind] = {k: round(1000 * v / len(paths), 2) for k, v in t.items()}
    files, _ = gather_paths([str(data["crops"])])
    units = plan_units(files)[:1100]
    results = w.process(units)
    name, sha, classes = describe_model(MODEL)
    with tempfile.TemporaryDirectory() as tmp:
        header = {"ferlab_version": "bench", "schema_version": 1, "format": "parquet", "model_name": name,
                  "model_sha256": sha, "classes": classes, "options": {}}
        import pyarrow.parquet  # noqa: F401 - imported before the clock starts

        store = OutputStore(Path(tmp) / "o", header).open()
        items = list(zip(units, results))
        t0 = time.perf_counter()
        store.commit(items[1000:])  # the first Parquet write of a process initialises Arrow: timed apart
        out["commit_ms_first_part_of_100_rows"] = round(1000 * (time.perf_counter() - t0), 1)
        t0 = time.perf_counter()
        store.commit(items[:1000])
        out["commit_ms_per_1000_rows"] = round(1000 * (time.perf_counter() - t0), 1)
        store.close()
    return out


MODEL = "default"
#: the engines compared: None = this machine's processes; a list = Ray nodes and their --num-cpus
CONFIGS = {"one_process": None, "local_pool": None, "ray_1_node": [3], "ray_2_nodes": [2, 2]}


def fixed_seconds(r: dict) -> float | None:
    """A job's time that its steady rate does not explain: start-up (connecting, planning, starting the
    workers, loading the model) and the tail.  T = fixed + items / steady."""
    if not r.get("steady_per_s_median"):
        return None
    return round(r["median_seconds"] - r["items"] / r["steady_per_s_median"], 2)


def within_20pct_from(pool: dict, ray: dict) -> dict | None:
    """The job size from which Ray's end-to-end rate is >= 0.8x the pool's, when each engine's time is its
    fixed seconds plus the items at its steady rate: (0.8 F_ray - F_pool) / (1 / r_pool - 0.8 / r_ray)."""
    f_p, f_r = fixed_seconds(pool), fixed_seconds(ray)
    r_p, r_r = pool["steady_per_s_median"], ray["steady_per_s_median"]
    if None in (f_p, f_r, r_p, r_r) or r_r <= 0.8 * r_p:
        return None
    n = max(0.0, (0.8 * f_r - f_p) / (1 / r_p - 0.8 / r_r))
    return {"items": int(round(n)), "pool_seconds": round(f_p + n / r_p, 1)}


def main() -> None:
    global MODEL
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--crops", type=int, default=2000)
    ap.add_argument("--photos", type=int, default=300)
    ap.add_argument("--video-seconds", type=float, default=12.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--model", default="default")
    ap.add_argument("--no-ray", action="store_true")
    ap.add_argument("--configs", default=",".join(CONFIGS), help=f"comma list of {', '.join(CONFIGS)}")
    ap.add_argument("--data", default=None, metavar="DIR",
                    help="keep the made inputs in DIR and reuse them when they match (make them before a quiet run)")
    ap.add_argument("--no-stages", action="store_true", help="skip the one-thread stage times")
    ap.add_argument("--kinds", default="crops,photos,video", help="comma list of crops, photos, video")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "batch.json"))
    a = ap.parse_args()
    MODEL = a.model
    configs = [c for c in a.configs.split(",") if c and not (a.no_ray and c.startswith("ray"))]
    kinds = tuple(k for k in a.kinds.split(",") if k)
    bad = sorted(set(configs) - set(CONFIGS)) + sorted(set(kinds) - {"crops", "photos", "video"})
    if bad:
        ap.error(f"unknown --configs/--kinds: {', '.join(bad)}")
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    git_at_start = git_state()
    cpu = cpu_info()
    print(f"CPU: {cpu['cpu']} x{cpu['cpus']}, flags {cpu['features']}, load {cpu['load_average']}")
    failures: dict = {}
    results: dict = {}
    stages: dict = {}

    def write(final: bool) -> None:
        ratios = {}
        for kind in kinds:
            pool = results.get("local_pool", {}).get(kind)
            if pool is None:
                continue
            one = results.get("one_process", {}).get(kind)
            ratios[kind] = {"pool_vs_one_process": round(pool["per_s"] / one["per_s"], 2)} if one else {}
            if one and one["steady_per_s_median"] and pool["steady_per_s_median"]:
                ratios[kind]["pool_vs_one_process_steady"] = round(pool["steady_per_s_median"]
                                                                   / one["steady_per_s_median"], 2)
            for name in ("ray_1_node", "ray_2_nodes"):
                ray = results.get(name, {}).get(kind)
                if ray is None:
                    continue
                ratios[kind][f"{name}_vs_pool"] = round(ray["per_s"] / pool["per_s"], 2)
                if ray["steady_per_s_median"] and pool["steady_per_s_median"]:
                    ratios[kind][f"{name}_vs_pool_steady"] = round(ray["steady_per_s_median"]
                                                                   / pool["steady_per_s_median"], 2)
                ratios[kind][f"{name}_within_20pct_from"] = within_20pct_from(pool, ray)
        doc = {"benchmark": "batch inference throughput (ferlab batch)",
               "command": "python benchmarks/bench_batch.py " + " ".join(sys.argv[1:]), "started": started,
               "complete": final, "model": MODEL, "cpu": cpu, "git": git_at_start,
               "load_average_now": [round(x, 2) for x in os.getloadavg()], "versions": versions(),
               "workloads": {"crops": f"{a.crops} 48x48 PNG crops from the FER2013 sample (decode + classify)",
                             "photos": f"{a.photos} 640x480 JPEG photos, one face each (decode + detect + classify)",
                             "video": f"one 640x480 25 fps mp4v video of {a.video_seconds:g} s, 2 s segments (frames/s)"},
               "goals": {"pool_vs_one_process": ">= 1.8 on 2 cores", "ray_vs_pool": ">= 0.8 on one machine"},
               "ray_worker_niceness": 0,
               "results": results, "ratios": ratios, "stages_ms_one_thread": stages, "failures": failures,
               "notes": "per_s = items / the job's own seconds (end to end: start-up, model loading, inference, "
                        "commits), median of "
                        f"{a.repeats} run(s); first_result_s = start-up until the first result; steady_per_s = "
                        "the rate from 20% to 90% of the job's units; fixed_seconds = median_seconds - items / "
                        "steady (start-up and tail); *_within_20pct_from = the job size (items, "
                        "and seconds on the pool) from which Ray's end-to-end rate is >= 0.8x the pool's, by "
                        "T = fixed_seconds + items / steady_per_s for each engine (null: Ray's steady rate is "
                        "below 0.8x the pool's, no job size reaches it); memory = peak RSS of each pool worker "
                        "/ Ray actor process"}
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(doc, indent=2) + "\n")
        if final:
            print(json.dumps(ratios, indent=1))

    with tempfile.TemporaryDirectory(prefix="ferlab-bench-batch-") as tmp:
        work = Path(tmp)
        data = load_or_make_data(Path(a.data) if a.data else work / "data", a.crops, a.photos, a.video_seconds)
        for name in configs:
            if name == "one_process":
                results[name] = measure("one process", data, work, a.repeats, ["--workers", "1"], kinds)
            elif name == "local_pool":
                results[name] = measure("local pool", data, work, a.repeats, ["--workers", "2"], kinds)
            else:
                try:
                    with Cluster(CONFIGS[name]) as c:
                        results[name] = measure(name.replace("_", " "), data, work, a.repeats,
                                                ["--engine", "ray", "--address", f"127.0.0.1:{PORT}", "--workers",
                                                 "2"], kinds, prefix=c.prefix, env=c.env,
                                                find_workers=lambda _pid, c=c: (lambda: c.pids("MapWorker")))
                except (RuntimeError, subprocess.SubprocessError, OSError) as e:
                    print(f"{name}: failed: {e}", flush=True)
                    failures[name] = str(e)[-1500:]
            write(False)
        if not a.no_stages:
            stages.update(stage_times(data))
            print("stages (ms per item, 1 thread):", stages, flush=True)
    write(True)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
